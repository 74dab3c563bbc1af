from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"

    def ready(self) -> None:
        from core.embedded_runner import runner
        from registry import services

        # Without a broker, the embedded runner's maintenance thread sweeps validations, as
        # Celery beat does otherwise (registry.sweep_validations).
        runner.every(services.validations_sweep)
