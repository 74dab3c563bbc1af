from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Signed webhooks: subscriptions to core.events, deliveries and their attempts."""

    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core import events
        from core.embedded_runner import runner
        from webhooks import services

        # Every domain event, once its transaction committed: a delivery per listening subscription.
        events.raised.connect(services.on_event, dispatch_uid="webhooks.on_event")
        # Without a broker, the embedded runner's maintenance thread sweeps, as beat does otherwise.
        runner.every(services.deliveries_sweep)
