from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"

    def ready(self) -> None:
        from django.conf import settings

        from core import request_log
        from core.embedded_runner import runner
        from inference import rollout_guard
        from inference.metrics import request_finished
        from inference.sessions import check_warmup_sample
        from registry import services

        request_log.on_inference_finished(request_finished)
        # The registry checks a model's warm-up sample with the decoder predict uses.
        services.warmup_sample_check = check_warmup_sample
        # Without a broker the embedded runner checks the rollouts (Celery beat's rollout-guard otherwise).
        runner.every(rollout_guard.rollouts_guard, seconds=settings.ROLLOUT_GUARD_INTERVAL_SECONDS)
