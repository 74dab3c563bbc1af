"""WSGI entry point: Django behind the body gate (modelforge_site.body_gate), with the serving
fast path in front of both (inference.fastpath), which reads its bodies only once the exchange
admitted the caller."""

import gc
import os
import threading

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelforge_site.settings")
django_application = get_wsgi_application()

from core import shutdown  # noqa: E402
from core.embedded_runner import start_for_server  # noqa: E402
from inference.fastpath import PredictFastPath  # noqa: E402  (needs Django set up)
from inference.sessions import preload_flagged  # noqa: E402
from modelforge_site.body_gate import BodyGate  # noqa: E402

application = PredictFastPath(BodyGate(django_application))
shutdown.install()  # readiness turns 503 on SIGTERM (core/shutdown.py)

# Without a broker (the `make run` default) the embedded runner's maintenance thread runs the
# periodic work (drift, the threshold watch, the sweepers) in this process: from now on, not
# from the first job request (core.embedded_runner).
start_for_server()

# Each server process imports this module once: load the sessions of models flagged `preload`
# in the background, so start-up is not delayed and the first requests find them warm.
threading.Thread(target=preload_flagged, name="preload-sessions", daemon=True).start()

# Keep the start-up heap (Django, DRF, NumPy, ONNX Runtime: hundreds of thousands of objects)
# out of the cyclic garbage collector's way: every full collection would walk it again, with
# the GIL held, stalling every request thread of the process (the same freeze as the Celery
# pool processes, modelforge_site.celery). Nothing frozen here is ever garbage.
gc.collect()
gc.freeze()
