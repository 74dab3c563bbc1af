"""API keys in the admin: created and revoked through access.services; the raw key is shown once."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from access import services
from access.models import ALL_SCOPES, APIKey, Scope

# The library registers its own concrete APIKey model, which ModelForge does not use.
if admin.site.is_registered(LibraryAPIKey):
    admin.site.unregister(LibraryAPIKey)


class APIKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="read: registry reads; predict: inference; manage: registry writes.",
    )

    class Meta:
        model = APIKey
        fields = ("name", "scopes", "expiry_date")

    def clean_scopes(self) -> list[str]:
        chosen = set(self.cleaned_data["scopes"])
        return [scope for scope in ALL_SCOPES if scope in chosen]


@admin.register(APIKey)
class ScopedAPIKeyAdmin(APIKeyModelAdmin):
    form = APIKeyForm
    list_display = ("name", "prefix", "scope_list", "state", "created", "expiry_date", "last_used_at")
    list_filter = ("revoked", "created", "expiry_date")
    search_fields = ("name", "prefix")
    actions = ("revoke_selected",)
    change_form_template = "admin/access/apikey/key_page.html"

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return ((None, {"fields": ("name", "scopes", "expiry_date")}),)
        editable = ("name", "scopes", "expiry_date") if not obj.revoked else ("name", "scope_list", "expiry_date")
        return ((None, {"fields": ("prefix", *editable, "revoked", "created", "last_used_at")}),)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        # `revoked` changes only through the revoke action, so it always goes through the service.
        fields = ("prefix", "revoked", "created", "last_used_at")
        if obj.revoked:
            fields += ("name", "scope_list", "expiry_date")
        return fields

    def has_change_permission(self, request, obj=None) -> bool:
        # A revoked key is history: viewable, never edited (and never un-revoked).
        if obj is not None and obj.revoked:
            return False
        return super().has_change_permission(request, obj)

    @admin.display(description="state")
    def state(self, obj: APIKey) -> str:
        """In words: active, expired or revoked (revocation wins: it cannot be undone)."""
        if obj.revoked:
            return "Revoked"
        if obj.expiry_date is not None and obj.expiry_date < timezone.now():
            return "Expired"
        return "Active"

    @admin.display(description="scopes")
    def scope_list(self, obj: APIKey) -> str:
        return ", ".join(obj.scopes)

    def save_model(self, request, obj: APIKey, form, change: bool) -> None:
        if change:
            # No service edits a live key's name, scopes or expiry yet; the ModelForm validated them.
            obj.save()
            return
        data = form.cleaned_data
        api_key, raw_key = services.api_key_create(
            name=data["name"], scopes=data["scopes"], expiry_date=data.get("expiry_date")
        )
        # The admin goes on with the form's instance (change message): make it the row the
        # service created.
        obj.pk = api_key.pk
        obj.refresh_from_db()
        request._mf_raw_key = raw_key  # for response_add only; never stored

    def response_add(self, request, obj: APIKey, post_url_continue=None):
        """The raw key on a page of its own, answered to the POST that created it: it is never
        put in a message (a cookie or the session) nor cached by the browser."""
        raw_key = getattr(request, "_mf_raw_key", None)
        if raw_key is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"API key “{obj.name}” created",
            "api_key": obj,
            "raw_key": raw_key,
            "scopes": ", ".join(obj.scopes),
            "change_url": reverse("admin:access_apikey_change", args=[quote(obj.pk)]),
            "changelist_url": reverse("admin:access_apikey_changelist"),
        }
        response = TemplateResponse(request, "admin/access/apikey/created.html", context)
        patch_cache_control(response, no_store=True, no_cache=True, private=True)
        return response

    # --- revoke from the key's page ---------------------------------------------------------------

    def get_urls(self):
        revoke = path(
            "<path:object_id>/revoke/", self.admin_site.admin_view(self.revoke_view), name="access_apikey_revoke"
        )
        return [revoke, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        api_key = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if api_key is not None:
            context["mf_state"] = self.state(api_key)
            if not api_key.revoked and self.has_change_permission(request, api_key):
                context["mf_revoke_url"] = reverse("admin:access_apikey_revoke", args=[quote(api_key.pk)])
        return super().change_view(request, object_id, form_url, extra_context=context)

    def revoke_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        api_key = self.get_object(request, unquote(object_id))
        if api_key is None:
            raise Http404("No API key with this id.")
        if not self.has_change_permission(request, api_key):
            raise PermissionDenied
        services.api_key_revoke(api_key=api_key)
        self.log_change(request, api_key, "Revoked")
        self.message_user(request, f"Revoked “{api_key.name}”; revocation cannot be undone.")
        return HttpResponseRedirect(reverse("admin:access_apikey_change", args=[quote(api_key.pk)]))

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request, queryset) -> None:
        revoked = 0
        for api_key in queryset.filter(revoked=False):
            services.api_key_revoke(api_key=api_key)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key{'s' * (revoked != 1)}; revocation cannot be undone.")
