from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Signed webhooks: subscriptions to core.events, deliveries and their attempts."""

    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"
