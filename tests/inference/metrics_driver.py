"""A server process of its own for test_metrics' multiprocess test, run as
``python -c ... setup | predict KEY N | scrape KEY | minutes`` with the test's environment.

`predict` answers N requests through the production WSGI application (the fast path) and
exits, as a granian worker would; `scrape` answers one GET /metrics the same way.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import orjson


def _call(application, method: str, path: str, body: bytes = b"", key: str = "") -> tuple[int, bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    status = []
    content = b"".join(application(environ, lambda line, headers, exc_info=None: status.append(int(line[:3]))))
    return status[0], content


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "setup":
        import django

        django.setup()
        from django.core.management import call_command

        from access.models import APIKey
        from registry.demo import build_iris_onnx

        call_command("migrate", verbosity=0)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "iris-1.0.0.onnx").write_bytes(build_iris_onnx())
            call_command("import_models", folder, stdout=io.StringIO())
        keys = {
            "predict": APIKey.objects.create_key(name="driver", scopes=["predict"])[1],
            "read": APIKey.objects.create_key(name="scraper", scopes=["read"])[1],
        }
        sys.stdout.write(orjson.dumps(keys).decode())
        return
    from modelforge_site.wsgi import application

    if command == "predict":
        body = orjson.dumps({"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}, "skip_cache": True})
        for _ in range(int(argv[2])):
            status, content = _call(application, "POST", "/api/v1/models/by-name/iris/predict", body, argv[1])
            assert status == 200, content
    elif command == "scrape":
        status, content = _call(application, "GET", "/metrics", key=argv[1])
        assert status == 200, content
        sys.stdout.write(content.decode())
    elif command == "minutes":
        from django.db.models import Sum

        from inference.models import ServingMinute

        totals = ServingMinute.objects.aggregate(requests=Sum("requests"), inferences=Sum("inferences"))
        sys.stdout.write(orjson.dumps(totals).decode())
