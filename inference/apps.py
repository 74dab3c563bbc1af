from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"

    def ready(self) -> None:
        from core import request_log
        from inference.metrics import request_finished

        request_log.on_inference_finished(request_finished)
