"""The Celery wiring for `celery -A modelforge_site` (worker and beat): the app itself is
core.celery_app, where the apps bind their tasks; this module makes sure the settings module is
known before it is created, and adds the worker processes' start-up hook."""

import gc
import os

from celery.signals import worker_process_init

# Before the app is created: Celery installs its Django fix-up only when this is set.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelforge_site.settings")

from core.celery_app import app  # noqa: E402

__all__ = ("app",)


@worker_process_init.connect
def freeze_startup_objects(**kwargs) -> None:
    """Keep the start-up heap (Django, NumPy, ONNX Runtime: hundreds of thousands of objects)
    out of the garbage collector's way in each pool process. Batch jobs allocate rows by the
    million; without this every collection walks that heap too (measured: a 100,000-row JSON
    Lines job took 0.72 s instead of 0.40 s). Nothing frozen here is ever garbage."""
    gc.collect()
    gc.freeze()
