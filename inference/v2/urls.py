"""The /v2 routes, included at the site root by modelforge_site.urls, after infer (a serving
route: inference.routes).

Names and versions are matched loosely here (any segment without "/") and looked up as given:
an unknown one is a 404 from the view. Trailing slashes are optional. Anything else under /v2
is a 404 in the protocol's error format, so a client always gets ``{"error": ...}``.
"""

from django.urls import path, re_path

from inference.v2 import views

_MODEL = r"^v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"

urlpatterns = [
    re_path(r"^v2/?$", views.ServerMetadataView.as_view(), name="v2-server-metadata"),
    path("v2/health/live", views.ServerLiveView.as_view(), name="v2-live"),
    path("v2/health/ready", views.ServerReadyView.as_view(), name="v2-ready"),
    re_path(_MODEL + r"/?$", views.ModelMetadataView.as_view(), name="v2-model-metadata"),
    re_path(_MODEL + r"/ready/?$", views.ModelReadyView.as_view(), name="v2-model-ready"),
    re_path(_MODEL + r"/config/?$", views.ModelConfigView.as_view(), name="v2-model-config"),
    path("v2/repository/index", views.RepositoryIndexView.as_view(), name="v2-repository-index"),
    re_path(r"^v2/repository/models/(?P<name>[^/]+)/load/?$", views.RepositoryLoadView.as_view(), name="v2-load"),
    re_path(r"^v2/repository/models/(?P<name>[^/]+)/unload/?$", views.RepositoryUnloadView.as_view(), name="v2-unload"),
    re_path(r"^v2/", views.unknown_route, name="v2-unknown"),
]
