# ModelForge: `make run` starts a development server on embedded defaults; `make test` runs the suite.
# Both create (or update) the virtual environment in .venv first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: venv run test lint migrate serve worker beat clean

$(STAMP): requirements/base.txt requirements/dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	@touch $(STAMP)

venv: $(STAMP)

migrate: venv
	$(BIN)/python manage.py migrate --noinput

# The gRPC server (Open Inference Protocol, tritonclient.grpc) runs beside the HTTP server, on
# GRPC_PORT, in `make run` and `make serve` alike; it stops with it.
GRPC_PORT ?= 8001
run: migrate
	$(BIN)/python manage.py bootstrap_dev --url http://$(HOST):$(PORT)
	$(BIN)/python manage.py serve_grpc --host $(HOST) --port $(GRPC_PORT) --workers 1 & grpc=$$!; \
		trap 'kill -TERM $$grpc 2>/dev/null; wait $$grpc' EXIT INT TERM; \
		$(BIN)/python manage.py runserver $(HOST):$(PORT)

# The production server configuration, chosen by measurement (docs/performance.md): granian
# serving the WSGI app, one worker per core. WEB_WORKERS and WEB_THREADS override.
# --respawn-failed-workers: a worker that dies (SIGKILL, out of memory, a crash in a native
# library) is replaced while the others serve on; without it granian stops them all and exits
# (docs/operations.md, "A process dies"). Any other granian option can be set by its GRANIAN_*
# environment variable.
WEB_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
WEB_THREADS ?= 4
# Prometheus multiprocess mode: every worker writes its metrics here, /metrics adds them up;
# emptied at each start (prometheus_client's rule), so counters start from zero with the server.
PROMETHEUS_MULTIPROC_DIR ?= var/prometheus
GRPC_WORKERS ?= $(WEB_WORKERS)
serve: migrate
	mkdir -p $(PROMETHEUS_MULTIPROC_DIR) && rm -f $(PROMETHEUS_MULTIPROC_DIR)/*.db
	export PROMETHEUS_MULTIPROC_DIR=$(abspath $(PROMETHEUS_MULTIPROC_DIR)); \
	$(BIN)/python manage.py serve_grpc --host $(HOST) --port $(GRPC_PORT) --workers $(GRPC_WORKERS) & grpc=$$!; \
	trap 'kill -TERM $$grpc 2>/dev/null; wait $$grpc' EXIT INT TERM; \
	$(BIN)/granian --interface wsgi --host $(HOST) --port $(PORT) --workers $(WEB_WORKERS) \
		--blocking-threads $(WEB_THREADS) --respawn-failed-workers --no-access-log modelforge_site.wsgi:application

# Asynchronous jobs on Celery (set CELERY_BROKER_URL; without it `make run` runs jobs in-process).
# A worker takes the high queue first, then normal, then low (docs/jobs.md). Run one beat only.
WORKER_CONCURRENCY ?= $(shell nproc 2>/dev/null || echo 2)
worker: migrate
	$(BIN)/celery -A modelforge_site worker -Q high,normal,low --concurrency $(WORKER_CONCURRENCY) --loglevel INFO

beat: migrate
	$(BIN)/celery -A modelforge_site beat --loglevel INFO --schedule var/celerybeat-schedule

test: venv
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .grimp_cache .import_linter_cache
