"""The serving routes, written once: the URL patterns Django resolves and the WSGI fast path
(inference.fastpath) matches are the same objects, with the protocol each speaks and how its
path and query name a model.

modelforge_site.urls includes the /api/v1 ones under ``api/v1/``, inference.v2.urls the /v2 one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from django.urls import URLPattern, re_path

from inference import views
from inference.exchange import ModelRef, Protocol
from inference.protocols import JSON_PREDICT
from inference.v2 import views as v2_views
from inference.v2.protocol import V2_INFER

# A model id as Django's uuid converter has it, in either case.
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


@dataclass(frozen=True)
class ServingRoute:
    prefix: str  # where its URLconf is included: "api/v1/", or "" (the site root)
    pattern: str  # a regex, relative to the prefix
    name: str  # the URL name (reverse(), access.permissions.SESSION_PERMISSIONS)
    view: type  # the Django door; it gets the protocol and ref below
    protocol: Protocol
    ref: Callable[[Mapping[str, str], Mapping[str, str]], ModelRef]  # (path kwargs, query) -> the model
    url: URLPattern = field(init=False)
    root: str = field(init=False)  # the path's start: "/" and the prefix

    def __post_init__(self) -> None:
        view = self.view.as_view(protocol=self.protocol, ref=self.ref)
        object.__setattr__(self, "url", re_path(self.pattern, view, name=self.name))
        object.__setattr__(self, "root", "/" + self.prefix)

    def match(self, path: str) -> dict[str, str] | None:
        """The path's keyword arguments if ``path`` (a PATH_INFO) is this route, else None: what
        Django's resolver finds, with the same compiled pattern (RegexPattern.match, inlined)."""
        if not path.startswith(self.root):
            return None
        found = self.url.pattern.regex.fullmatch(path[len(self.root) :])
        if found is None:
            return None
        return {name: value for name, value in found.groupdict().items() if value is not None}


ROUTES = (
    ServingRoute(
        "api/v1/",
        rf"^models/(?P<model_id>{_UUID})/predict/?$",
        "model-predict",
        views.ModelPredictView,
        JSON_PREDICT,
        lambda kwargs, query: ModelRef(model_id=kwargs["model_id"]),
    ),
    ServingRoute(
        "api/v1/",
        r"^models/by-name/(?P<name>[^/]+)/predict/?$",
        "model-by-name-predict",
        views.NamedPredictView,
        JSON_PREDICT,
        lambda kwargs, query: ModelRef(
            name=kwargs["name"], version=query.get("version") or None, alias=query.get("alias") or None
        ),
    ),
    ServingRoute(
        "",
        r"^v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer/?$",
        "v2-infer",
        v2_views.InferView,
        V2_INFER,
        lambda kwargs, query: ModelRef(name=kwargs["name"], version=kwargs.get("version")),
    ),
)


def urlpatterns(prefix: str) -> list[URLPattern]:
    """The Django URL patterns of the routes included under ``prefix``."""
    return [route.url for route in ROUTES if route.prefix == prefix]
