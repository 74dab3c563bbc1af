"""API keys in the admin: created and revoked through access.services; the raw key is shown once."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
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
    list_display = ("name", "prefix", "scope_list", "created", "expiry_date", "_has_expired", "revoked")
    list_filter = ("revoked", "created", "expiry_date")
    search_fields = ("name", "prefix")
    actions = ("revoke_selected",)

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
        # The admin goes on with the form's instance (change message, redirect): make it the
        # row the service created.
        obj.pk = api_key.pk
        obj.refresh_from_db()
        messages.warning(
            request,
            f"The new API key for “{api_key.name}” is shown only this once and is not stored; copy it now: {raw_key}",
        )

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request, queryset) -> None:
        revoked = 0
        for api_key in queryset.filter(revoked=False):
            services.api_key_revoke(api_key=api_key)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key{'s' * (revoked != 1)}; revocation cannot be undone.")
