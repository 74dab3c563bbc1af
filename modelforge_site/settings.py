"""ModelForge settings: one module, driven by environment variables (django-environ).

With nothing set, ModelForge runs on embedded development defaults: SQLite under ``var/``,
the local-memory cache, jobs in background threads, DEBUG on and a generated secret.
Production is the same module with variables set; there is no settings fork. With DEBUG off,
every secret must come from the environment and start-up fails naming what is missing.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

DEBUG = env.bool("DEBUG", default=True)


def _required(name: str) -> str:
    value = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(f"{name} must be set when DEBUG is off (see the configuration table in README.md).")
    return value


def _development_secret() -> str:
    """A per-checkout secret kept in var/, so dev sessions survive restarts."""
    path = VAR_DIR / "dev-secret-key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


if DEBUG:
    SECRET_KEY = env.str("SECRET_KEY", default="") or _development_secret()
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
else:
    SECRET_KEY = _required("SECRET_KEY")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            "ALLOWED_HOSTS must be set when DEBUG is off, e.g. ALLOWED_HOSTS=models.example.com."
        )

CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

MODELFORGE_VERSION = "0.1.0"

INSTALLED_APPS = [
    "console.sites.OpsAdminConfig",  # django.contrib.admin with the dashboard in its app list
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "access",
    "registry",
    "inference",
    "jobs",
    "monitoring",  # health thresholds per model name, drift
    "webhooks",  # signed webhooks on core.events
    "console",  # the ops console in the admin (dashboard, shared admin styles)
    "axes",  # admin login lockout (see "Admin login lockout" below)
]

MIDDLEWARE = [
    "core.request_log.RequestLogMiddleware",  # first: every response gets an id and a log line
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "core.exceptions.DomainErrorMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires: turns a lockout into its page
]

ROOT_URLCONF = "modelforge_site.urls"
WSGI_APPLICATION = "modelforge_site.wsgi.application"
ASGI_APPLICATION = "modelforge_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'modelforge.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # Concurrent writers (threaded dev server, in-process jobs) wait instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
    # A file, not SQLite's in-memory default, so tests that race threads get real connections.
    # The process id keeps concurrent test runs in one checkout apart.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ----------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="modelforge"),
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery ---------------------------------------------------------------------------------
# Without a broker, jobs run in background threads of the server process (the embedded default).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_RESULT_BACKEND = "django-db"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_SOFT_TIME_LIMIT = env.int("JOB_SOFT_TIME_LIMIT_SECONDS", default=3300)
CELERY_TASK_TIME_LIMIT = env.int("JOB_TIME_LIMIT_SECONDS", default=3600)
# Redis redelivers unacknowledged tasks after the visibility timeout: keep it above the hard limit.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 600}

# --- Auth, i18n, static ---------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Admin login lockout (django-axes; access/lockout.py) ------------------------------------
# Failed logins are counted in the database per client address and per username; at the limit
# further attempts are refused (429 and a page saying why) until the cool-off has passed
# without a failure, or `manage.py axes_reset`. A cool-off of 0 locks until that reset.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
if AXES_FAILURE_LIMIT <= 0:
    raise ImproperlyConfigured("AXES_FAILURE_LIMIT must be a positive number of failed logins.")
AXES_COOLOFF_MINUTES = env.float("AXES_COOLOFF_MINUTES", default=15.0)
if AXES_COOLOFF_MINUTES < 0:
    raise ImproperlyConfigured("AXES_COOLOFF_MINUTES must be 0 (locked until axes_reset) or more.")
AXES_COOLOFF_TIME = timedelta(minutes=AXES_COOLOFF_MINUTES) if AXES_COOLOFF_MINUTES else None
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "access.lockout.client_address"
AXES_LOCKOUT_TEMPLATE = "admin/access/lockout.html"
AXES_HTTP_RESPONSE_CODE = 429

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# One timestamp format in the admin, with seconds and the time zone (console/formats/en/formats.py).
FORMAT_MODULE_PATH = ["console.formats"]

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=VAR_DIR / "static")
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing root
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Serve static files from the app folders without collectstatic in development.
WHITENOISE_USE_FINDERS = DEBUG

# --- Model storage and validation -----------------------------------------------------------
MODEL_STORAGE_PATH = env.path("MODEL_STORAGE_PATH", default=VAR_DIR / "models")
MAX_MODEL_SIZE_MB = env.int("MAX_MODEL_SIZE_MB", default=500)
if MAX_MODEL_SIZE_MB <= 0:
    raise ImproperlyConfigured("MAX_MODEL_SIZE_MB must be a positive number of megabytes.")
MAX_MODEL_SIZE_BYTES = MAX_MODEL_SIZE_MB * 1024 * 1024
VALIDATION_MEMORY_MB = env.int("VALIDATION_MEMORY_MB", default=2048)
VALIDATION_TIMEOUT_SECONDS = env.float("VALIDATION_TIMEOUT_SECONDS", default=60.0)
VALIDATION_MAX_DIMENSION = env.int("VALIDATION_MAX_DIMENSION", default=2**31 - 1)
# Validation runs in the background (a Celery task, or the embedded runner's threads without a
# broker), never in a request thread. A validation taken this long ago and still unfinished
# lost its worker: the sweeper hands it over again (at most JOB_MAX_ATTEMPTS takes).
VALIDATION_STUCK_AFTER_SECONDS = env.int(
    "VALIDATION_STUCK_AFTER_SECONDS", default=int(VALIDATION_TIMEOUT_SECONDS) + 120
)
if VALIDATION_STUCK_AFTER_SECONDS <= VALIDATION_TIMEOUT_SECONDS:
    raise ImproperlyConfigured("VALIDATION_STUCK_AFTER_SECONDS must be above VALIDATION_TIMEOUT_SECONDS.")
# Tests only (like Celery's task_always_eager): run a requested validation at once in the
# caller's thread and transaction, which a test's rolled-back transaction can see.
VALIDATION_EAGER = False

# Uploads stream to a temporary file next to the store, hashed and size-capped as they arrive,
# so the final rename is atomic and an over-size body leaves nothing behind.
FILE_UPLOAD_HANDLERS = ["registry.uploads.HashingUploadHandler"]
FILE_UPLOAD_TEMP_DIR = str(Path(MODEL_STORAGE_PATH) / "tmp")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)

# --- Model storage backend (docs/operations.md, "Scaling out") -------------------------------
# The filesystem under MODEL_STORAGE_PATH by default; an S3-compatible bucket (django-storages)
# with MODEL_STORAGE_BACKEND=s3. Every node then reads models through its own verified local
# cache (MODEL_CACHE_PATH), and uploads are staged next to that cache.
MODEL_STORAGE_BACKEND = env.str(
    "MODEL_STORAGE_BACKEND", default="s3" if env.str("S3_BUCKET", default="") else "filesystem"
)
MODEL_CACHE_PATH = env.path("MODEL_CACHE_PATH", default=VAR_DIR / "model-cache")
MODEL_CACHE_MAX_MB = env.float("MODEL_CACHE_MAX_MB", default=10240.0)
if MODEL_STORAGE_BACKEND == "filesystem":
    STORAGES["models"] = {"BACKEND": "registry.storage.ModelFileStorage"}
elif MODEL_STORAGE_BACKEND == "s3":
    from botocore.config import Config as _BotoConfig

    if not env.str("S3_BUCKET", default=""):
        raise ImproperlyConfigured("S3_BUCKET must be set when MODEL_STORAGE_BACKEND=s3.")
    STORAGES["models"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("S3_BUCKET"),
            "location": env.str("S3_PREFIX", default="models"),
            # Empty means boto3's own chain: AWS_* variables, a profile, an instance or pod role.
            "endpoint_url": env.str("S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("S3_REGION", default="") or None,
            "access_key": env.str("S3_ACCESS_KEY_ID", default="") or None,
            "secret_key": env.str("S3_SECRET_ACCESS_KEY", default="") or None,
            "addressing_style": env.str("S3_ADDRESSING_STYLE", default="") or None,
            "file_overwrite": True,  # names are content hashes: the same name is the same bytes
            # A download spools to disk past this instead of holding a whole model in memory.
            "max_memory_size": 16 * 1024 * 1024,
            "default_acl": None,
            "client_config": _BotoConfig(
                connect_timeout=env.float("S3_CONNECT_TIMEOUT_SECONDS", default=2.0),
                read_timeout=env.float("S3_READ_TIMEOUT_SECONDS", default=30.0),
                retries={"max_attempts": env.int("S3_MAX_ATTEMPTS", default=3), "mode": "standard"},
            ),
        },
    }
    FILE_UPLOAD_TEMP_DIR = str(Path(MODEL_CACHE_PATH) / "tmp")
    Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
else:
    raise ImproperlyConfigured("MODEL_STORAGE_BACKEND must be filesystem or s3.")
if MODEL_CACHE_MAX_MB <= 0:
    raise ImproperlyConfigured("MODEL_CACHE_MAX_MB must be a positive number of megabytes.")
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=10 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
# Request bodies (modelforge_site/body_gate.py): a body must arrive within BODY_READ_TIMEOUT_SECONDS
# plus one second per BODY_MIN_RATE_BYTES_PER_SECOND bytes of its length, else 408; at most
# BODY_READ_SLOTS threads per process wait on bodies at once (keep it below the server's threads,
# so probes and bodiless requests always find one), the others get 503 at once; and at most
# BODY_READERS_MAX reader threads per process wait on clients.
BODY_READ_TIMEOUT_SECONDS = env.float("BODY_READ_TIMEOUT_SECONDS", default=10.0)
BODY_MIN_RATE_BYTES_PER_SECOND = env.int("BODY_MIN_RATE_BYTES_PER_SECOND", default=64 * 1024)
BODY_READ_SLOTS = env.int("BODY_READ_SLOTS", default=2)
BODY_READERS_MAX = env.int("BODY_READERS_MAX", default=32)
if BODY_READ_TIMEOUT_SECONDS <= 0 or min(BODY_MIN_RATE_BYTES_PER_SECOND, BODY_READ_SLOTS, BODY_READERS_MAX) <= 0:
    raise ImproperlyConfigured(
        "BODY_READ_TIMEOUT_SECONDS, BODY_MIN_RATE_BYTES_PER_SECOND, BODY_READ_SLOTS and BODY_READERS_MAX "
        "must be positive."
    )

# Verified API keys and servable models are cached per process for this long at most; writes
# invalidate them everywhere at once (see core/invalidation.py).
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=5.0)
SERVING_CACHE_SECONDS = env.float("SERVING_CACHE_SECONDS", default=5.0)

# --- Inference ------------------------------------------------------------------------------
SESSION_POOL_MAX_SESSIONS = env.int("SESSION_POOL_MAX_SESSIONS", default=16)
SESSION_POOL_MAX_MEMORY_MB = env.int("SESSION_POOL_MAX_MEMORY_MB", default=4096)
SESSION_RECHECK_SECONDS = env.float("SESSION_RECHECK_SECONDS", default=2.0)
ORT_INTRA_OP_THREADS = env.int("ORT_INTRA_OP_THREADS", default=1)
ORT_INTER_OP_THREADS = env.int("ORT_INTER_OP_THREADS", default=1)
ORT_GRAPH_OPTIMIZATION = env.str("ORT_GRAPH_OPTIMIZATION", default="all")
if ORT_GRAPH_OPTIMIZATION not in {"disabled", "basic", "extended", "all"}:
    raise ImproperlyConfigured("ORT_GRAPH_OPTIMIZATION must be one of disabled, basic, extended, all.")
MAX_INPUT_ELEMENTS = env.int("MAX_INPUT_ELEMENTS", default=1_000_000)
MAX_JSON_DEPTH = env.int("MAX_JSON_DEPTH", default=32)
# Hardening (inference/limits.py, inference/deadlines.py): rows per request, runs in flight per
# model and process, and the deadline of every session run (0 turns each off).
MAX_BATCH_ROWS = env.int("MAX_BATCH_ROWS", default=100_000)
MAX_INFLIGHT_PER_MODEL = env.int("MAX_INFLIGHT_PER_MODEL", default=64)
INFERENCE_TIMEOUT_SECONDS = env.float("INFERENCE_TIMEOUT_SECONDS", default=30.0)
# Models whose memory use is set by input values (flagged at validation) run only in a child
# process capped at MODEL_MEMORY_LIMIT_MB (inference/isolation.py); a request needing more is a
# 422 resource_limit_exceeded. MODEL_ISOLATION=all runs every model so, at a cost per request
# (a pipe round trip; measured in inference/isolation.py's docstring).
MODEL_MEMORY_LIMIT_MB = env.int("MODEL_MEMORY_LIMIT_MB", default=1024)
MODEL_ISOLATION = env.str("MODEL_ISOLATION", default="flagged")
if MODEL_ISOLATION not in {"flagged", "all"}:
    raise ImproperlyConfigured("MODEL_ISOLATION must be flagged or all.")
if MODEL_MEMORY_LIMIT_MB < 128:
    raise ImproperlyConfigured("MODEL_MEMORY_LIMIT_MB must be at least 128 (ONNX Runtime itself needs about 60 MB).")
# After SIGTERM, serve this long (readiness 503) before the server stops (core/shutdown.py).
SHUTDOWN_DRAIN_SECONDS = env.float("SHUTDOWN_DRAIN_SECONDS", default=0.0)
# The gRPC server (`manage.py serve_grpc`, inference/grpc/server.py): its address, processes
# (one per core by default, as the web server) and threads per process; after SIGTERM (and the
# drain above) calls in flight get GRPC_SHUTDOWN_GRACE_SECONDS to finish.
GRPC_HOST = env.str("GRPC_HOST", default="127.0.0.1")
GRPC_PORT = env.int("GRPC_PORT", default=8001)
GRPC_WORKERS = env.int("GRPC_WORKERS", default=os.cpu_count() or 1)
GRPC_THREADS = env.int("GRPC_THREADS", default=4)
GRPC_SHUTDOWN_GRACE_SECONDS = env.float("GRPC_SHUTDOWN_GRACE_SECONDS", default=30.0)
if GRPC_WORKERS < 1 or GRPC_THREADS < 1:
    raise ImproperlyConfigured("GRPC_WORKERS and GRPC_THREADS must be at least 1.")
PREDICTION_CACHE_TTL_SECONDS = env.int("PREDICTION_CACHE_TTL_SECONDS", default=3600)
PREDICTION_CACHE_LOCAL_MB = env.int("PREDICTION_CACHE_LOCAL_MB", default=64)
PREDICTION_CACHE_RETRY_SECONDS = env.float("PREDICTION_CACHE_RETRY_SECONDS", default=5.0)
# Health thresholds (monitoring.Thresholds overrides them per model name): a version is amber or
# red when its server-error rate or p95 reaches these, judged only from MONITOR_MIN_REQUESTS up.
MONITOR_ERROR_RATE_AMBER = env.float("MONITOR_ERROR_RATE_AMBER", default=0.01)
MONITOR_ERROR_RATE_RED = env.float("MONITOR_ERROR_RATE_RED", default=0.05)
MONITOR_P95_AMBER_MS = env.float("MONITOR_P95_AMBER_MS", default=250.0)
MONITOR_P95_RED_MS = env.float("MONITOR_P95_RED_MS", default=1000.0)
MONITOR_MIN_REQUESTS = env.int("MONITOR_MIN_REQUESTS", default=20)
# The threshold watch (monitoring/threshold_watch.py) judges each version on the last
# MONITOR_THRESHOLD_WINDOW_SECONDS of traffic, every MONITOR_THRESHOLD_INTERVAL_SECONDS, and raises
# `threshold.crossed` when its level changes.
MONITOR_THRESHOLD_WINDOW_SECONDS = env.int("MONITOR_THRESHOLD_WINDOW_SECONDS", default=300)
MONITOR_THRESHOLD_INTERVAL_SECONDS = env.int("MONITOR_THRESHOLD_INTERVAL_SECONDS", default=60)
if MONITOR_THRESHOLD_WINDOW_SECONDS < 60 or MONITOR_THRESHOLD_INTERVAL_SECONDS <= 0:
    raise ImproperlyConfigured(
        "MONITOR_THRESHOLD_WINDOW_SECONDS must be at least 60 and MONITOR_THRESHOLD_INTERVAL_SECONDS positive."
    )

# --- Webhooks (webhooks/) ---------------------------------------------------------------------
# Receivers' URLs must resolve to public addresses; WEBHOOK_ALLOW_PRIVATE_NETWORKS lets some
# through: a comma-separated list of networks (127.0.0.0/8,10.1.0.0/16), or true for any.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=6)
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=30.0)
WEBHOOK_RETRY_MAX_SECONDS = env.float("WEBHOOK_RETRY_MAX_SECONDS", default=3600.0)
WEBHOOK_SWEEP_GRACE_SECONDS = env.int("WEBHOOK_SWEEP_GRACE_SECONDS", default=60)
WEBHOOK_RETENTION_DAYS = env.int("WEBHOOK_RETENTION_DAYS", default=30)
_allow = env.str("WEBHOOK_ALLOW_PRIVATE_NETWORKS", default="").strip()
if _allow.lower() in {"true", "yes", "1", "on"}:
    WEBHOOK_ALLOW_PRIVATE_NETWORKS: bool | list[str] = True
elif _allow.lower() in {"", "false", "no", "0", "off"}:
    WEBHOOK_ALLOW_PRIVATE_NETWORKS = []
else:
    WEBHOOK_ALLOW_PRIVATE_NETWORKS = [item.strip() for item in _allow.split(",") if item.strip()]
    for _network in WEBHOOK_ALLOW_PRIVATE_NETWORKS:
        try:
            ipaddress.ip_network(_network, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"WEBHOOK_ALLOW_PRIVATE_NETWORKS: {_network!r} is not a network (e.g. 10.0.0.0/8), nor true/false."
            ) from None
if not 0 < WEBHOOK_TIMEOUT_SECONDS <= 30:
    raise ImproperlyConfigured("WEBHOOK_TIMEOUT_SECONDS must be above 0 and at most 30.")
if (
    min(WEBHOOK_MAX_ATTEMPTS, WEBHOOK_RETENTION_DAYS) <= 0
    or min(WEBHOOK_RETRY_BASE_SECONDS, WEBHOOK_RETRY_MAX_SECONDS) < 0
):
    raise ImproperlyConfigured(
        "WEBHOOK_MAX_ATTEMPTS and WEBHOOK_RETENTION_DAYS must be positive, the retry delays not negative."
    )
# Drift (monitoring.drift): each version's recorded inputs and outputs over these windows
# (durations such as 30m, 1h, 1d), against its reference: a reference file, else its first
# DRIFT_REFERENCE_PREDICTIONS recorded predictions. Computed every DRIFT_INTERVAL_SECONDS; a
# window holding more than DRIFT_SAMPLE_ROWS predictions is read as a random sample of about that
# many (0: read every one). At most DRIFT_MAX_FEATURES features per version (outputs first).
# A feature is amber (red) when its PSI reaches DRIFT_PSI_AMBER (DRIFT_PSI_RED) and its
# two-sample test's p-value is below DRIFT_P_VALUE; windows of fewer than DRIFT_MIN_ROWS
# samples are not judged. monitoring.Thresholds overrides the last four per model name.
DRIFT_WINDOWS = env.list("DRIFT_WINDOWS", default=["1h", "1d"])
DRIFT_REFERENCE_PREDICTIONS = env.int("DRIFT_REFERENCE_PREDICTIONS", default=1000)
DRIFT_INTERVAL_SECONDS = env.int("DRIFT_INTERVAL_SECONDS", default=300)
DRIFT_SAMPLE_ROWS = env.int("DRIFT_SAMPLE_ROWS", default=100_000)
DRIFT_MAX_FEATURES = env.int("DRIFT_MAX_FEATURES", default=20)
DRIFT_PSI_AMBER = env.float("DRIFT_PSI_AMBER", default=0.1)
DRIFT_PSI_RED = env.float("DRIFT_PSI_RED", default=0.25)
DRIFT_P_VALUE = env.float("DRIFT_P_VALUE", default=0.01)
DRIFT_MIN_ROWS = env.int("DRIFT_MIN_ROWS", default=100)
for _name in ("DRIFT_REFERENCE_PREDICTIONS", "DRIFT_INTERVAL_SECONDS", "DRIFT_MAX_FEATURES", "DRIFT_MIN_ROWS"):
    if globals()[_name] <= 0:
        raise ImproperlyConfigured(f"{_name} must be a positive number.")
if not DRIFT_WINDOWS or not all(re.fullmatch(r"[1-9][0-9]*[mhd]", window) for window in DRIFT_WINDOWS):
    raise ImproperlyConfigured("DRIFT_WINDOWS must list durations such as 30m, 1h, 1d (comma-separated).")
if DRIFT_SAMPLE_ROWS < 0:
    raise ImproperlyConfigured("DRIFT_SAMPLE_ROWS must be 0 (read every row) or a positive number.")
if not 0 < DRIFT_PSI_AMBER <= DRIFT_PSI_RED:
    raise ImproperlyConfigured("DRIFT_PSI_AMBER must be positive and at most DRIFT_PSI_RED.")
if not 0 < DRIFT_P_VALUE < 1:
    raise ImproperlyConfigured("DRIFT_P_VALUE must be between 0 and 1.")

HISTORY_SAMPLE_RATE = env.float("HISTORY_SAMPLE_RATE", default=1.0)
if not 0 <= HISTORY_SAMPLE_RATE <= 1:
    raise ImproperlyConfigured("HISTORY_SAMPLE_RATE must be between 0 and 1.")
HISTORY_MAX_INPUT_BYTES = env.int("HISTORY_MAX_INPUT_BYTES", default=64 * 1024)
HISTORY_FLUSH_INTERVAL_SECONDS = env.float("HISTORY_FLUSH_INTERVAL_SECONDS", default=0.5)
HISTORY_BATCH_SIZE = env.int("HISTORY_BATCH_SIZE", default=500)
HISTORY_BUFFER_MAX = env.int("HISTORY_BUFFER_MAX", default=100_000)
HISTORY_RETENTION_DAYS = env.int("HISTORY_RETENTION_DAYS", default=30)

# --- Observability (inference.metrics, inference.serving_stats, core.request_log) ---
# Per-minute serving statistics: how often each process adds its counters to the database,
# and how long the rows are kept (deleted by the hourly cleanup with the history).
SERVING_STATS_FLUSH_SECONDS = env.float("SERVING_STATS_FLUSH_SECONDS", default=5.0)
SERVING_STATS_RETENTION_DAYS = env.int("SERVING_STATS_RETENTION_DAYS", default=30)
if SERVING_STATS_RETENTION_DAYS <= 0:
    raise ImproperlyConfigured("SERVING_STATS_RETENTION_DAYS must be a positive number of days.")

# --- Rollouts (registry.rollouts, inference.routing, inference.shadow, inference.rollout_guard) ---
# Shadow copies: the threads per process that run them, the copies waiting at most (more are
# dropped and counted: a shadow never slows a client) and the deadline of one shadow run.
SHADOW_THREADS = env.int("SHADOW_THREADS", default=1)
SHADOW_QUEUE_SIZE = env.int("SHADOW_QUEUE_SIZE", default=100)
SHADOW_TIMEOUT_SECONDS = env.float("SHADOW_TIMEOUT_SECONDS", default=5.0)
# Shadow copies run on idle time only: when no client request is answered in the process and
# none started for SHADOW_IDLE_MS; a copy that finds no such gap in SHADOW_MAX_WAIT_SECONDS is
# dropped (counted), so a shadow never slows a client (inference.shadow).
SHADOW_IDLE_MS = env.float("SHADOW_IDLE_MS", default=1.0)
SHADOW_MAX_WAIT_SECONDS = env.float("SHADOW_MAX_WAIT_SECONDS", default=2.0)
if SHADOW_IDLE_MS < 0 or SHADOW_MAX_WAIT_SECONDS <= 0:
    raise ImproperlyConfigured("SHADOW_IDLE_MS must not be negative and SHADOW_MAX_WAIT_SECONDS must be positive.")
if SHADOW_THREADS < 1 or SHADOW_QUEUE_SIZE < 1 or SHADOW_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured("SHADOW_THREADS, SHADOW_QUEUE_SIZE and SHADOW_TIMEOUT_SECONDS must be positive.")
# How often the rollout guard compares candidates with their primaries (Celery beat, or the
# embedded runner without a broker).
ROLLOUT_GUARD_INTERVAL_SECONDS = env.int("ROLLOUT_GUARD_INTERVAL_SECONDS", default=30)
if ROLLOUT_GUARD_INTERVAL_SECONDS <= 0:
    raise ImproperlyConfigured("ROLLOUT_GUARD_INTERVAL_SECONDS must be a positive number of seconds.")

# --- Jobs -----------------------------------------------------------------------------------
# Asynchronous inference (jobs/): on Celery workers with a broker, else in background threads.
JOB_STORAGE_PATH = env.path("JOB_STORAGE_PATH", default=VAR_DIR / "jobs")
# Job input and output files (jobs/storage.py): a folder per job under JOB_STORAGE_PATH, or
# objects under S3_JOBS_PREFIX in the model storage's bucket (its credentials and endpoint too),
# so that no node needs a shared filesystem. JOB_STORAGE_PATH then holds node-local scratch
# only (uploads being checked, an output part being written).
JOB_STORAGE_BACKEND = env.str("JOB_STORAGE_BACKEND", default="s3" if MODEL_STORAGE_BACKEND == "s3" else "local")
S3_JOBS_PREFIX = env.str("S3_JOBS_PREFIX", default="jobs").strip("/")
if JOB_STORAGE_BACKEND not in {"local", "s3"}:
    raise ImproperlyConfigured("JOB_STORAGE_BACKEND must be local or s3.")
if JOB_STORAGE_BACKEND == "s3" and MODEL_STORAGE_BACKEND != "s3":
    raise ImproperlyConfigured("JOB_STORAGE_BACKEND=s3 uses the model storage's bucket: set MODEL_STORAGE_BACKEND=s3.")
if JOB_STORAGE_BACKEND == "s3" and S3_JOBS_PREFIX in {"", env.str("S3_PREFIX", default="models").strip("/")}:
    raise ImproperlyConfigured("S3_JOBS_PREFIX must be set and differ from S3_PREFIX (the models' prefix).")
JOB_MAX_INPUT_FILE_MB = env.int("JOB_MAX_INPUT_FILE_MB", default=100)
JOB_CHUNK_ROWS = env.int("JOB_CHUNK_ROWS", default=10_000)
JOB_MAX_ATTEMPTS = env.int("JOB_MAX_ATTEMPTS", default=3)
JOB_RETRY_BACKOFF_SECONDS = env.float("JOB_RETRY_BACKOFF_SECONDS", default=2.0)
JOB_RETRY_BACKOFF_MAX_SECONDS = env.float("JOB_RETRY_BACKOFF_MAX_SECONDS", default=300.0)
JOB_EMBEDDED_THREADS = env.int("JOB_EMBEDDED_THREADS", default=2)
JOB_RETENTION_DAYS = env.int("JOB_RETENTION_DAYS", default=7)
JOB_SWEEP_INTERVAL_SECONDS = env.int("JOB_SWEEP_INTERVAL_SECONDS", default=60)
JOB_ENQUEUE_GRACE_SECONDS = env.int("JOB_ENQUEUE_GRACE_SECONDS", default=30)
JOB_VISIBILITY_TIMEOUT_SECONDS = env.int("JOB_VISIBILITY_TIMEOUT_SECONDS", default=CELERY_TASK_TIME_LIMIT + 600)
# A queued job whose message is this old without starting is published again (the broker lost
# it); a running job this old cannot be alive, nor will the broker redeliver it any more.
JOB_REQUEUE_AFTER_SECONDS = env.int("JOB_REQUEUE_AFTER_SECONDS", default=JOB_VISIBILITY_TIMEOUT_SECONDS)
JOB_STUCK_AFTER_SECONDS = env.int("JOB_STUCK_AFTER_SECONDS", default=JOB_VISIBILITY_TIMEOUT_SECONDS + 600)
for _name in (
    "JOB_MAX_INPUT_FILE_MB",
    "JOB_CHUNK_ROWS",
    "JOB_MAX_ATTEMPTS",
    "JOB_EMBEDDED_THREADS",
    "JOB_RETENTION_DAYS",
    "JOB_SWEEP_INTERVAL_SECONDS",
):
    if globals()[_name] <= 0:
        raise ImproperlyConfigured(f"{_name} must be a positive number.")
if not 0 < CELERY_TASK_SOFT_TIME_LIMIT < CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("JOB_SOFT_TIME_LIMIT_SECONDS must be positive and below JOB_TIME_LIMIT_SECONDS.")
if JOB_VISIBILITY_TIMEOUT_SECONDS <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        "JOB_VISIBILITY_TIMEOUT_SECONDS must be above JOB_TIME_LIMIT_SECONDS, or Redis redelivers running jobs."
    )
if JOB_STUCK_AFTER_SECONDS <= JOB_VISIBILITY_TIMEOUT_SECONDS:
    raise ImproperlyConfigured("JOB_STUCK_AFTER_SECONDS must be above JOB_VISIBILITY_TIMEOUT_SECONDS.")
JOB_MAX_INPUT_FILE_BYTES = JOB_MAX_INPUT_FILE_MB * 1024 * 1024
# Job input files are claimed by their own capped handler; every other upload goes on as before.
FILE_UPLOAD_HANDLERS = ["jobs.uploads.JobInputUploadHandler", *FILE_UPLOAD_HANDLERS]

# Queues by priority. Workers list them in order (-Q high,normal,low); the Redis transport
# rotates that list after every fetch unless the order strategy is "priority", which makes it
# always take from the first non-empty queue.
CELERY_TASK_DEFAULT_QUEUE = "normal"
CELERY_TASK_ROUTES = {
    "jobs.sweep": {"queue": "high"},
    # Someone waits for a validation (the admin page, a client polling): it goes first.
    "registry.validate": {"queue": "high"},
    "registry.sweep_validations": {"queue": "high"},
    "jobs.cleanup": {"queue": "low"},
    "inference.cleanup_history": {"queue": "low"},
    "monitoring.drift": {"queue": "low"},
}
CELERY_BROKER_TRANSPORT_OPTIONS.update(
    visibility_timeout=JOB_VISIBILITY_TIMEOUT_SECONDS,
    queue_order_strategy="priority",
    socket_connect_timeout=2,  # a broker that does not answer must not hold a create request long
)
# Lets deployments (or test runs) share one Redis database without sharing queues.
if env.str("CELERY_BROKER_KEY_PREFIX", default=""):
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = env.str("CELERY_BROKER_KEY_PREFIX")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A job is created even when the broker is down (the sweeper hands it over later): do not hold
# the request for long trying to publish.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = JOB_RETENTION_DAYS * 24 * 3600
CELERY_BEAT_SCHEDULE = {
    "jobs-sweep": {
        "task": "jobs.sweep",
        "schedule": float(JOB_SWEEP_INTERVAL_SECONDS),
        "options": {"expires": JOB_SWEEP_INTERVAL_SECONDS},
    },
    "validations-sweep": {
        "task": "registry.sweep_validations",
        "schedule": float(JOB_SWEEP_INTERVAL_SECONDS),
        "options": {"expires": JOB_SWEEP_INTERVAL_SECONDS},
    },
    "jobs-cleanup": {"task": "jobs.cleanup", "schedule": 3600.0, "options": {"expires": 3600}},
    "history-cleanup": {"task": "inference.cleanup_history", "schedule": 3600.0, "options": {"expires": 3600}},
    "webhooks-sweep": {
        "task": "webhooks.sweep",
        "schedule": float(JOB_SWEEP_INTERVAL_SECONDS),
        "options": {"expires": JOB_SWEEP_INTERVAL_SECONDS},
    },
    "threshold-watch": {
        "task": "monitoring.threshold_watch",
        "schedule": float(MONITOR_THRESHOLD_INTERVAL_SECONDS),
        "options": {"expires": MONITOR_THRESHOLD_INTERVAL_SECONDS},
    },
    "drift": {
        "task": "monitoring.drift",
        "schedule": float(DRIFT_INTERVAL_SECONDS),
        "options": {"expires": DRIFT_INTERVAL_SECONDS},
    },
    "rollout-guard": {
        "task": "inference.rollout_guard",
        "schedule": float(ROLLOUT_GUARD_INTERVAL_SECONDS),
        "options": {"expires": ROLLOUT_GUARD_INTERVAL_SECONDS},
    },
}

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.authentication.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["access.permissions.HasScope"],
    "DEFAULT_PAGINATION_CLASS": "core.list_filters.StrictPageNumberPagination",
    "PAGE_SIZE": env.int("API_PAGE_SIZE", default=50),
    "DEFAULT_FILTER_BACKENDS": [
        # Lists refuse parameters they do not take and values they cannot use (400).
        "core.list_filters.StrictFilterBackend",
        "rest_framework.filters.SearchFilter",
        "core.list_filters.StrictOrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.exceptions.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # X-Forwarded-For is trusted (for throttling by address) only behind this many proxies.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}

# Throttles per API key (access/throttling.py), counted in Redis; an empty rate is no limit.
THROTTLE_RATES = {
    "predict": env.str("THROTTLE_RATE_PREDICT", default=""),
    # Each upload costs a validation (a sandboxed child for up to VALIDATION_TIMEOUT_SECONDS).
    "upload": env.str("THROTTLE_RATE_UPLOAD", default="30/min"),
    "jobs": env.str("THROTTLE_RATE_JOBS", default=""),
}
for _scope, _rate in THROTTLE_RATES.items():
    if _rate and not re.fullmatch(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)", _rate.strip()):
        raise ImproperlyConfigured(f"THROTTLE_RATE_{_scope.upper()} must look like 6000/min (or /s, /hour, /day).")

SPECTACULAR_SETTINGS = {
    "TITLE": "ModelForge API",
    "DESCRIPTION": "Serve ONNX models over HTTP: registry, inference and jobs.",
    "VERSION": MODELFORGE_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The schema and the docs pages are API routes too: a key with `read`, or a staff session.
    "SERVE_PERMISSIONS": ["access.permissions.HasScope"],
    # A batch job's input formats: a job's and a reference's `input_format`, an upload's `reference_format`.
    "ENUM_NAME_OVERRIDES": {"InputFormatEnum": "registry.reference_files.FORMATS"},
}

# --- Security (production) ------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Health probes are plain HTTP from the orchestrator: never redirect them to HTTPS.
SECURE_REDIRECT_EXEMPT = [r"^api/v1/(health|ready|live)$", r"^v2/health/(live|ready)$"]

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# One JSON object per line in production, plain text in development; every line carries the
# id of the request being handled (core.request_log), "-" outside requests.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain" if DEBUG else "json")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "core.request_log.RequestIdFilter"},
        "redact": {"()": "core.request_log.RedactCredentialsFilter"},  # never log a credential
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.orjson.OrjsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s %(request_id)s",
            "timestamp": True,
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id", "redact"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # axes.apps logs its version at INFO on every start (each manage.py command): only its warnings.
    "loggers": {"django.db.backends": {"level": "INFO"}, "axes.apps": {"level": "WARNING"}},
}
