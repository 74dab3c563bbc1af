from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"

    def ready(self) -> None:
        from core import request_log
        from inference.metrics import request_finished
        from inference.sessions import check_warmup_sample
        from registry import services

        request_log.on_inference_finished(request_finished)
        # The registry checks a model's warm-up sample with the decoder predict uses.
        services.warmup_sample_check = check_warmup_sample
