"""Webhooks in the admin: subscriptions (the secret shown once, at creation), "send test
event", and the deliveries with every attempt, redelivered by hand. A client of webhooks.services.

Creating a subscription answers with a redirect to a page that shows its secret once: the
secret waits in the session (server-side) for that page, which takes it out. Deliveries and
attempts are the system's records: read-only here.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.cache import patch_cache_control
from django.utils.html import format_html

from core.events import EVENT_TYPES
from webhooks import services, url_safety
from webhooks.errors import DeliveryInProgress, UrlRefused
from webhooks.models import Attempt, Delivery, Subscription

NEW_SECRET_SESSION = "mf_new_webhook_secret"  # noqa: S105 (a session key name)


class SubscriptionForm(forms.ModelForm):
    # A plain field: url_safety says what is wrong with a URL (a scheme, an address) in one voice.
    url = forms.CharField(max_length=2000, help_text="http(s) URL on a public address; redirects are not followed.")
    event_types = forms.MultipleChoiceField(
        choices=[(name, f"{name}: {text}") for name, text in EVENT_TYPES.items()],
        widget=forms.CheckboxSelectMultiple,
    )
    new_secret = forms.CharField(
        required=False,
        min_length=24,
        max_length=200,
        label="Secret",
        widget=forms.PasswordInput(render_value=False),
        help_text="Empty: a new subscription gets a generated secret (shown once); an existing one keeps its own.",
    )

    class Meta:
        model = Subscription
        fields = ("name", "url", "event_types", "active")

    def clean_url(self) -> str:
        url = self.cleaned_data["url"].strip()
        try:
            url_safety.check(url)
        except UrlRefused as exc:
            raise ValidationError(exc.detail, code=exc.code) from None
        return url

    def clean_event_types(self) -> list[str]:
        chosen = set(self.cleaned_data["event_types"])
        return [name for name in EVENT_TYPES if name in chosen]


class AttemptInline(admin.TabularInline):
    model = Attempt
    fields = ("number", "at", "status_code", "outcome", "error", "duration_ms", "response_prefix")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    form = SubscriptionForm
    list_display = ("name", "url", "types", "active", "created_by", "created_at")
    list_filter = ("active",)
    search_fields = ("name", "url")
    actions = ("send_test_event",)
    change_form_template = "admin/webhooks/subscription/change_form.html"

    @admin.display(description="event types")
    def types(self, obj: Subscription) -> str:
        return ", ".join(obj.event_types)

    def save_model(self, request, obj: Subscription, form, change: bool) -> None:
        data = form.cleaned_data
        if change:
            changes = {field: data[field] for field in ("name", "url", "event_types", "active")}
            if data.get("new_secret"):
                changes["secret"] = data["new_secret"]
            updated = services.subscription_update(subscription=obj, **changes)
            obj.__dict__.update(updated.__dict__)
            return
        created = services.subscription_create(
            name=data["name"],
            url=data["url"],
            event_types=data["event_types"],
            active=data["active"],
            secret=data.get("new_secret") or "",
            actor=request.user,
        )
        obj.pk = created.pk
        obj.refresh_from_db()
        request._mf_new_secret = None if data.get("new_secret") else created.secret

    def response_add(self, request, obj: Subscription, post_url_continue=None):
        secret = getattr(request, "_mf_new_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        request.session[NEW_SECRET_SESSION] = {"pk": str(obj.pk), "secret": secret}
        return HttpResponseRedirect(reverse("admin:webhooks_subscription_created", args=[quote(obj.pk)]))

    def get_urls(self):
        own = [
            path(
                "<path:object_id>/created/",
                self.admin_site.admin_view(self.created_view),
                name="webhooks_subscription_created",
            ),
            path(
                "<path:object_id>/send-test/",
                self.admin_site.admin_view(self.send_test_view),
                name="webhooks_subscription_send_test",
            ),
        ]
        return own + super().get_urls()

    def created_view(self, request, object_id):
        """The generated secret, taken out of the session as it is shown (a second visit finds it gone)."""
        subscription = self.get_object(request, unquote(object_id))
        if subscription is None:
            raise Http404("No webhook subscription with this id.")
        if not self.has_view_or_change_permission(request, subscription):
            raise PermissionDenied
        pending = request.session.get(NEW_SECRET_SESSION)
        secret = None
        if pending and pending.get("pk") == str(subscription.pk):
            secret = request.session.pop(NEW_SECRET_SESSION)["secret"]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Webhook “{subscription.name}” created",
            "subscription": subscription,
            "secret": secret,
            "change_url": reverse("admin:webhooks_subscription_change", args=[quote(subscription.pk)]),
            "changelist_url": reverse("admin:webhooks_subscription_changelist"),
        }
        response = TemplateResponse(request, "admin/webhooks/subscription/created.html", context)
        patch_cache_control(response, no_store=True, no_cache=True, private=True)
        return response

    def send_test_view(self, request, object_id):
        """The change page's "Send test event" button (a POST)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        subscription = self.get_object(request, unquote(object_id))
        if subscription is None:
            raise Http404("No webhook subscription with this id.")
        if not self.has_change_permission(request, subscription):
            raise PermissionDenied
        self._send_test(request, subscription)
        return HttpResponseRedirect(
            reverse("admin:webhooks_delivery_changelist") + f"?subscription__id__exact={quote(subscription.pk)}"
        )

    def _send_test(self, request, subscription: Subscription) -> None:
        delivery = services.subscription_test(subscription=subscription)
        url = reverse("admin:webhooks_delivery_change", args=[quote(delivery.pk)])
        self.message_user(
            request,
            format_html(
                'A test event is on its way to “{}”: <a href="{}">its delivery</a> shows each attempt.',
                subscription.name,
                url,
            ),
        )

    @admin.action(description="Send a test event", permissions=["change"])
    def send_test_event(self, request, queryset):
        for subscription in queryset:
            self._send_test(request, subscription)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("event_type", "subscription", "status", "tries", "last_status_code", "created_at", "delivered_at")
    list_filter = ("status", "event_type", "subscription")
    list_select_related = ("subscription",)
    search_fields = ("event_id", "subscription__name")
    readonly_fields = (
        "subscription",
        "event_id",
        "event_type",
        "status",
        "tries",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
        "body",
    )
    fields = readonly_fields
    inlines = (AttemptInline,)
    actions = ("redeliver",)
    change_form_template = "admin/webhooks/delivery/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("subscription")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # the system's records; `change` permission is what redelivering needs

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        own = [
            path(
                "<path:object_id>/redeliver/",
                self.admin_site.admin_view(self.redeliver_view),
                name="webhooks_delivery_redeliver",
            ),
        ]
        return own + super().get_urls()

    def _redeliver(self, request, delivery: Delivery) -> None:
        try:
            services.delivery_redeliver(delivery=delivery)
        except DeliveryInProgress as exc:
            self.message_user(request, f"{delivery}: {exc.detail}", messages.WARNING)
        else:
            self.message_user(request, f"{delivery}: sent again (a new round of attempts).")

    def redeliver_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        delivery = self.get_object(request, unquote(object_id))
        if delivery is None:
            raise Http404("No webhook delivery with this id.")
        if not self.has_redeliver_permission(request):
            raise PermissionDenied
        self._redeliver(request, delivery)
        return HttpResponseRedirect(reverse("admin:webhooks_delivery_change", args=[quote(delivery.pk)]))

    @admin.action(description="Redeliver (delivered or failed ones)", permissions=["redeliver"])
    def redeliver(self, request, queryset):
        for delivery in queryset.select_related("subscription"):
            self._redeliver(request, delivery)

    def has_redeliver_permission(self, request) -> bool:
        return request.user.has_perm("webhooks.change_delivery")
