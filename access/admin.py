"""API keys in the admin: created and revoked through access.services; the raw key is shown once.

Creating a key answers with a redirect (post/redirect/get): the raw key waits in the session
for the one page that shows it, which takes it out, so reloading that page neither creates a
second key nor shows the key again. Revoking (from the key's page or the list's action) first
shows what will change, the key's recent use included; only the confirming POST revokes.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from access import services
from access.models import ALL_SCOPES, APIKey, Scope

# The session entry holding a new key's raw value until its one display.
NEW_KEY_SESSION = "mf_new_api_key"
RECENT_USE = timedelta(hours=24)

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
        request._mf_raw_key = raw_key  # for response_add, which keeps it for its one display

    def response_add(self, request, obj: APIKey, post_url_continue=None):
        """Redirect to the page that shows the raw key once. A reload of that page (or of the
        answer to the POST, which is now a redirect) cannot create a second key. The raw key waits
        in the session (server-side, not in a cookie or a message) only until that page is shown."""
        raw_key = getattr(request, "_mf_raw_key", None)
        if raw_key is None:
            return super().response_add(request, obj, post_url_continue)
        request.session[NEW_KEY_SESSION] = {"pk": obj.pk, "raw": raw_key}
        return HttpResponseRedirect(reverse("admin:access_apikey_created", args=[quote(obj.pk)]))

    def created_view(self, request, object_id):
        """The new key's raw value, taken out of the session as it is shown: a second visit finds
        it gone. Never cached by the browser."""
        api_key = self.get_object(request, unquote(object_id))
        if api_key is None:
            raise Http404("No API key with this id.")
        if not self.has_view_or_change_permission(request, api_key):
            raise PermissionDenied
        pending = request.session.get(NEW_KEY_SESSION)
        raw_key = None
        if pending and pending.get("pk") == api_key.pk:
            raw_key = request.session.pop(NEW_KEY_SESSION)["raw"]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"API key “{api_key.name}” created",
            "api_key": api_key,
            "raw_key": raw_key,
            "scopes": ", ".join(api_key.scopes),
            "change_url": reverse("admin:access_apikey_change", args=[quote(api_key.pk)]),
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
        created = path(
            "<path:object_id>/created/", self.admin_site.admin_view(self.created_view), name="access_apikey_created"
        )
        return [revoke, created, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        api_key = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if api_key is not None:
            context["mf_state"] = self.state(api_key)
            if not api_key.revoked and self.has_change_permission(request, api_key):
                context["mf_revoke_url"] = reverse("admin:access_apikey_revoke", args=[quote(api_key.pk)])
        return super().change_view(request, object_id, form_url, extra_context=context)

    def revoke_view(self, request, object_id):
        """GET (or a POST without ``confirm=yes``): what revoking will change. The confirming POST
        revokes."""
        if request.method not in ("GET", "POST"):
            return HttpResponseNotAllowed(["GET", "POST"])
        api_key = self.get_object(request, unquote(object_id))
        if api_key is None:
            raise Http404("No API key with this id.")
        if not self.has_change_permission(request):
            raise PermissionDenied
        key_url = reverse("admin:access_apikey_change", args=[quote(api_key.pk)])
        if api_key.revoked:
            self.message_user(request, f"“{api_key.name}” is already revoked.", level=messages.WARNING)
            return HttpResponseRedirect(key_url)
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            services.api_key_revoke(api_key=api_key)
            self.log_change(request, api_key, "Revoked")
            self.message_user(request, f"Revoked “{api_key.name}”; revocation cannot be undone.")
            return HttpResponseRedirect(key_url)
        return self._revoke_confirmation(
            request, [api_key], form_action=request.path, hidden=[("confirm", "yes")], back_url=key_url
        )

    @admin.action(description="Revoke selected keys…", permissions=["change"])
    def revoke_selected(self, request, queryset):
        """First a page saying what will change; the confirming POST (``post=yes``) revokes."""
        active = list(queryset.filter(revoked=False).order_by("name"))
        if not active:
            self.message_user(request, "None of the selected keys is active; nothing to revoke.", messages.WARNING)
            return None
        if request.POST.get("post") == "yes":
            for api_key in active:
                services.api_key_revoke(api_key=api_key)
                self.log_change(request, api_key, "Revoked")
            revoked = len(active)
            self.message_user(request, f"Revoked {revoked} key{'s' * (revoked != 1)}; revocation cannot be undone.")
            return None
        hidden = [("action", "revoke_selected"), ("post", "yes")]
        hidden += [(helpers.ACTION_CHECKBOX_NAME, api_key.pk) for api_key in active]
        return self._revoke_confirmation(
            request,
            active,
            form_action=reverse("admin:access_apikey_changelist"),
            hidden=hidden,
            back_url=reverse("admin:access_apikey_changelist"),
            skipped=queryset.filter(revoked=True).count(),
        )

    def _revoke_confirmation(self, request, api_keys, *, form_action, hidden, back_url, skipped=0):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Revoke API key?" if len(api_keys) == 1 else f"Revoke {len(api_keys)} API keys?",
            "rows": key_recent_use(api_keys),
            "recent_hours": int(RECENT_USE.total_seconds() // 3600),
            "sampled": settings.HISTORY_SAMPLE_RATE < 1,
            "sample_percent": round(settings.HISTORY_SAMPLE_RATE * 100, 1),
            "skipped": skipped,
            "form_action": form_action,
            "hidden": hidden,
            "back_url": back_url,
        }
        return TemplateResponse(request, "admin/access/apikey/revoke_confirmation.html", context)


def key_recent_use(api_keys: list[APIKey]) -> list[dict]:
    """Each key with what it did lately: its last use, and the predictions recorded and jobs
    created with it in the last RECENT_USE (two grouped queries, whatever the number of keys).

    Read through the key's reverse relations (Prediction.api_key, Job.api_key): the inference
    and jobs apps, above this one, declare them; access does not import those apps."""
    since = timezone.now() - RECENT_USE
    pks = [api_key.pk for api_key in api_keys]

    def counts(relation: str) -> dict:
        rows = (
            APIKey.objects.filter(pk__in=pks, **{f"{relation}__created_at__gte": since})
            .order_by()
            .values("pk")
            .annotate(count=Count(relation))
        )
        return {row["pk"]: row["count"] for row in rows}

    predictions, jobs = counts("predictions"), counts("jobs")
    return [
        {
            "key": api_key,
            "scopes": ", ".join(api_key.scopes) or "none",
            "predictions": predictions.get(api_key.pk, 0),
            "jobs": jobs.get(api_key.pk, 0),
        }
        for api_key in api_keys
    ]
