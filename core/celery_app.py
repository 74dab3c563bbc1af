"""The project's Celery app, configured from Django settings (the CELERY_* names).

Every task is bound to this one object (`@app.task`), not declared with `@shared_task`: a
shared task resolves Celery's "current app" on every call, and that is per thread; a thread
where another app is current (or none is) would send to an app that has never heard of the
task (NotRegistered). It lives here, below the apps, so that they can bind their tasks and send
messages without importing the wiring; modelforge_site.celery wires it for
`celery -A modelforge_site` and installs the worker's start-up hooks.

Celery installs its Django fix-up (task discovery in INSTALLED_APPS, database connections
closed around tasks) only if DJANGO_SETTINGS_MODULE is set when the app is created: every
process sets it before anything imports this module (manage.py, the wsgi module, and
modelforge_site.celery for the worker and beat).
"""

from celery import Celery
from django.conf import settings

app = Celery("modelforge_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def broker_configured() -> bool:
    """Background work goes to Celery (a broker is configured) rather than the embedded runner's
    threads (core.embedded_runner)."""
    return bool(settings.CELERY_BROKER_URL)
