"""API keys in the admin: created, expired and revoked through access.services; the raw key is
shown once.

Creating a key answers with a redirect (post/redirect/get): the raw key waits in the session
for the one page that shows it, which takes it out, so reloading that page neither creates a
second key nor shows the key again. Names are unique (letter case aside): a taken one is an
error on the form's name field. Expiring now and revoking (from the key's page or the list's
actions) first show what will change, each key's recent use included; only the confirming POST
acts. Expiring can be undone (give the key a later expiry); revoking cannot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.html import format_html
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from access import services
from access.models import ALL_SCOPES, APIKey, Scope
from core.exceptions import DomainError

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

    def clean_name(self) -> str:
        # Checked here to put the refusal on the field, naming the key that has the name; the
        # unique constraint (and access.services) still decides a race.
        name = self.cleaned_data["name"].strip()
        if APIKey.objects.filter(name__iexact=name).exclude(pk=self.instance.pk).exists():
            raise ValidationError(services.name_taken_error(name).detail, code="api_key_name_taken")
        return name


@dataclass(frozen=True)
class KeyAct:
    """Expiring now or revoking: what the confirmation page and the messages say, which keys it
    applies to, and the service that does it."""

    name: str  # the URL and action name: admin:access_apikey_<name>
    verb: str  # "expire", "revoke"
    to_state: str  # what the keys become
    consequence: str  # the page's warning, HTML
    done: str  # the message once done: .format(keys="“name”" or "2 keys", them="it" or "them")
    applies: Callable[[APIKey], bool]
    service: Callable[..., APIKey]


def _is_active(api_key: APIKey) -> bool:
    return not api_key.revoked and not api_key.has_expired


ACTS = {
    "expire": KeyAct(
        name="expire",
        verb="expire",
        to_state="expired",
        consequence=(
            "After expiring, every request with {these} is refused with 401 (<code>api_key_expired</code>) at "
            "once, in every server process. Jobs already created go on. This can be undone: give the key a "
            "later expiry on its page."
        ),
        done="Expired {keys} now; requests with {them} are refused. A later expiry on the key's page undoes it.",
        applies=_is_active,
        service=services.api_key_expire,
    ),
    "revoke": KeyAct(
        name="revoke",
        verb="revoke",
        to_state="revoked",
        consequence=(
            "After revoking, every request with {these} is refused with 401 (<code>api_key_revoked</code>) at "
            "once, in every server process. Jobs already created go on. <strong>Revocation cannot be "
            "undone:</strong> a client needs a new key."
        ),
        done="Revoked {keys}; revocation cannot be undone.",
        applies=lambda api_key: not api_key.revoked,
        service=services.api_key_revoke,
    ),
}


@admin.register(APIKey)
class ScopedAPIKeyAdmin(APIKeyModelAdmin):
    form = APIKeyForm
    list_display = ("name", "prefix", "scope_list", "state", "created", "expiry_date", "last_used_at")
    list_filter = ("revoked", "created", "expiry_date")
    search_fields = ("name", "prefix")
    actions = ("expire_selected", "revoke_selected")
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

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as exc:
            # The name was taken between the form's check and the save (the constraint decided):
            # nothing was saved (the admin's transaction rolled back); say why on the same page.
            self.message_user(request, f"Not saved: {exc.detail}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request, obj: APIKey, form, change: bool) -> None:
        if change:
            # No service edits a live key's name, scopes or expiry yet; the ModelForm validated them.
            try:
                with transaction.atomic():  # a savepoint, so the refusal can still read the other key
                    obj.save()
            except IntegrityError as exc:
                raise services.name_taken_error(obj.name) from exc
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

    # --- expire now and revoke: from the key's page or the list, after a confirmation ----------

    def get_urls(self):
        own = [
            path(
                f"<path:object_id>/{act.name}/",
                self.admin_site.admin_view(self.act_view),
                {"act": act.name},
                name=f"access_apikey_{act.name}",
            )
            for act in ACTS.values()
        ]
        created = path(
            "<path:object_id>/created/", self.admin_site.admin_view(self.created_view), name="access_apikey_created"
        )
        return [*own, created, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        api_key = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if api_key is not None:
            context["mf_state"] = self.state(api_key)
            if self.has_change_permission(request, api_key):
                for act in ACTS.values():
                    if act.applies(api_key):
                        context[f"mf_{act.name}_url"] = reverse(
                            f"admin:access_apikey_{act.name}", args=[quote(api_key.pk)]
                        )
        return super().change_view(request, object_id, form_url, extra_context=context)

    def act_view(self, request, object_id, act: str):
        """GET (or a POST without ``confirm=yes``): what expiring or revoking will change. The
        confirming POST acts."""
        act = ACTS[act]
        if request.method not in ("GET", "POST"):
            return HttpResponseNotAllowed(["GET", "POST"])
        api_key = self.get_object(request, unquote(object_id))
        if api_key is None:
            raise Http404("No API key with this id.")
        if not self.has_change_permission(request):
            raise PermissionDenied
        key_url = reverse("admin:access_apikey_change", args=[quote(api_key.pk)])
        if not act.applies(api_key):
            self.message_user(request, f"“{api_key.name}” is already {self.state(api_key).lower()}.", messages.WARNING)
            return HttpResponseRedirect(key_url)
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            act.service(api_key=api_key)
            self.log_change(request, api_key, act.to_state.capitalize())
            self.message_user(request, act.done.format(keys=f"“{api_key.name}”", them="it"))
            return HttpResponseRedirect(key_url)
        return self._confirmation(
            request, act, [api_key], form_action=request.path, hidden=[("confirm", "yes")], back_url=key_url
        )

    @admin.action(description="Expire selected keys now…", permissions=["change"])
    def expire_selected(self, request, queryset):
        """First a page saying what will change; the confirming POST (``post=yes``) expires."""
        return self._act_selected(request, queryset, ACTS["expire"])

    @admin.action(description="Revoke selected keys…", permissions=["change"])
    def revoke_selected(self, request, queryset):
        """First a page saying what will change; the confirming POST (``post=yes``) revokes."""
        return self._act_selected(request, queryset, ACTS["revoke"])

    def _act_selected(self, request, queryset, act: KeyAct):
        selected = list(queryset.order_by("name"))
        keys = [api_key for api_key in selected if act.applies(api_key)]
        if not keys:
            self.message_user(request, f"None of the selected keys is active; nothing to {act.verb}.", messages.WARNING)
            return None
        if request.POST.get("post") == "yes":
            for api_key in keys:
                act.service(api_key=api_key)
                self.log_change(request, api_key, act.to_state.capitalize())
            count = len(keys)
            self.message_user(
                request, act.done.format(keys=f"{count} key{'s' * (count != 1)}", them="them" if count > 1 else "it")
            )
            return None
        hidden = [("action", f"{act.name}_selected"), ("post", "yes")]
        hidden += [(helpers.ACTION_CHECKBOX_NAME, api_key.pk) for api_key in keys]
        changelist = reverse("admin:access_apikey_changelist")
        return self._confirmation(
            request,
            act,
            keys,
            form_action=changelist,
            hidden=hidden,
            back_url=changelist,
            skipped=[api_key for api_key in selected if not act.applies(api_key)],
        )

    def _confirmation(self, request, act: KeyAct, api_keys, *, form_action, hidden, back_url, skipped=()):
        one = len(api_keys) == 1
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{act.verb.capitalize()} {'API key' if one else f'{len(api_keys)} API keys'}"
            f"{' now' if act.name == 'expire' else ''}?",
            "act": act,
            "consequence": format_html(act.consequence, these="this key" if one else "these keys"),
            "rows": key_recent_use(api_keys),
            "recent_hours": int(RECENT_USE.total_seconds() // 3600),
            "sampled": settings.HISTORY_SAMPLE_RATE < 1,
            "sample_percent": round(settings.HISTORY_SAMPLE_RATE * 100, 1),
            "skipped": [(api_key, self.state(api_key).lower()) for api_key in skipped],
            "form_action": form_action,
            "hidden": hidden,
            "back_url": back_url,
        }
        return TemplateResponse(request, "admin/access/apikey/act_confirmation.html", context)


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
