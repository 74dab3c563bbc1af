"""ASGI entry point (Django's own; production serves the WSGI application, modelforge_site.wsgi)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelforge_site.settings")
application = get_asgi_application()

from core.embedded_runner import start_for_server  # noqa: E402  (needs Django set up)

# Without a broker, the embedded runner's maintenance (drift, the threshold watch, the
# sweepers) runs in this server process from its start (core.embedded_runner).
start_for_server()
