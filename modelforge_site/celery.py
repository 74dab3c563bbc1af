"""The Celery app. Configuration comes from Django settings (CELERY_* names)."""

import gc
import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelforge_site.settings")

app = Celery("modelforge_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def freeze_startup_objects(**kwargs) -> None:
    """Keep the start-up heap (Django, NumPy, ONNX Runtime: hundreds of thousands of objects)
    out of the garbage collector's way in each pool process. Batch jobs allocate rows by the
    million; without this every collection walks that heap too (measured: a 100,000-row JSON
    Lines job took 0.72 s instead of 0.40 s). Nothing frozen here is ever garbage."""
    gc.collect()
    gc.freeze()
