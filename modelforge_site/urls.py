from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from console.views import dashboard_view
from inference import rollout_views, routes
from inference import views as inference_views
from jobs.views import CeleryHealthView, JobViewSet
from modelforge_site import health
from modelforge_site.metrics import MetricsView
from monitoring import views as monitoring_views
from registry.views import ModelNameViewSet, ModelViewSet
from webhooks.views import WebhookDeliveryViewSet, WebhookViewSet

# One API router. Trailing slashes are optional: the constructor only knows "/" or "", so the
# regex fragment is set afterwards (documented DRF behaviour for optional slashes).
router = SimpleRouter()
router.trailing_slash = "/?"
router.register("models/by-name", ModelNameViewSet, basename="model-by-name")
router.register("models", ModelViewSet, basename="model")
router.register("jobs", JobViewSet, basename="job")
router.register("webhooks", WebhookViewSet, basename="webhook")
router.register("webhook-deliveries", WebhookDeliveryViewSet, basename="webhook-delivery")

api_v1 = [
    path("health", health.HealthView.as_view(), name="health"),
    path("health/celery", CeleryHealthView.as_view(), name="health-celery"),
    path("ready", health.ReadyView.as_view(), name="ready"),
    path("live", health.LiveView.as_view(), name="live"),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    *routes.urlpatterns("api/v1/"),  # predict: the serving route table (inference.routes)
    path(
        "models/<uuid:model_id>/predictions", inference_views.ModelPredictionsView.as_view(), name="model-predictions"
    ),
    # Drift (monitoring): a version's drift, its name's drift thresholds, its reference.
    path("models/<uuid:model_id>/drift", monitoring_views.DriftView.as_view(), name="model-drift"),
    path(
        "models/<uuid:model_id>/drift/thresholds",
        monitoring_views.DriftThresholdsView.as_view(),
        name="model-drift-thresholds",
    ),
    path("models/<uuid:model_id>/reference", monitoring_views.ReferenceView.as_view(), name="model-reference"),
    path("predictions/<uuid:prediction_id>", inference_views.PredictionDetailView.as_view(), name="prediction-detail"),
    path("cache/metrics", inference_views.CacheMetricsView.as_view(), name="cache-metrics"),
    path("cache/metrics/reset", inference_views.CacheMetricsResetView.as_view(), name="cache-metrics-reset"),
    path(
        "models/by-name/<str:name>/aliases/<str:alias>/rollout",
        rollout_views.RolloutView.as_view(),
        name="alias-rollout",
    ),
    path(
        "models/by-name/<str:name>/aliases/<str:alias>/rollout/promote",
        rollout_views.RolloutPromoteView.as_view(),
        name="alias-rollout-promote",
    ),
    *router.urls,
]

urlpatterns = [
    # The ops console's dashboard (staff only), before the admin's own catch-all routes.
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="console-dashboard"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    # Prometheus scrapes (a key with `read`); not under /api/v1, where scrapers do not look.
    path("metrics", MetricsView.as_view(), name="metrics"),
    # Open Inference Protocol v2 (KServe / Triton clients); plain Django views, not in the OpenAPI
    # schema. Infer is a serving route (inference.routes), before the /v2 catch-all.
    *routes.urlpatterns(""),
    path("", include("inference.v2.urls")),
]

handler404 = "modelforge_site.error_views.not_found"
handler500 = "modelforge_site.error_views.server_error"
