from django.apps import AppConfig
from django.db.models.signals import post_migrate


class RegistryConfig(AppConfig):
    name = "registry"

    def ready(self) -> None:
        from core import probes
        from core.embedded_runner import runner
        from registry import sentinel, services

        # Without a broker, the embedded runner's maintenance thread sweeps validations, as
        # Celery beat does otherwise (registry.sweep_validations).
        runner.every(services.validations_sweep)
        # A node whose storage settings cannot see this deployment's files is not ready.
        probes.add_readiness_check("model storage", sentinel.verdicts.ready)
        # migrate writes the storage's sentinel (a deployment migrated before sentinels gets
        # one at its next migrate; the command runs with the deployment's own settings).
        post_migrate.connect(sentinel.after_migrate, sender=self, dispatch_uid="registry.sentinel")
        from registry import checks  # noqa: F401  (registers the deploy check)
