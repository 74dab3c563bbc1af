"""/v2 infer on the WSGI fast path (inference.fastpath): the route and the call into the same
exchange the Django view runs (`inference.v2.views.infer_reply`)."""

from __future__ import annotations

import re

from inference.v2.views import Reply, infer_reply
from modelforge_site.body_gate import read_body

INFER_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer/?$")


def infer_from_environ(environ, params: dict) -> Reply:
    """Answer a POST whose PATH_INFO matched INFER_PATH; Content-Length is known to be digits."""
    length = int(environ["CONTENT_LENGTH"])
    return infer_reply(
        authorization=environ.get("HTTP_AUTHORIZATION"),
        name=params["name"],
        version=params.get("version"),
        content_length=length,
        read_body=lambda: read_body(environ, length),
        header_length=environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"),
        content_encoding=environ.get("HTTP_CONTENT_ENCODING"),
    )
