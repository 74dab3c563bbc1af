"""The ground every app stands on: exceptions and their error tables, ids, the request log,
pub/sub and cache invalidation, strict input, list filters, CSV cells, shutdown, the readiness
probes, the Celery app and the embedded runner (background threads without a broker).

Nothing here imports an app (access, registry, inference, jobs, console) or the wiring
(modelforge_site): the layering contract in .importlinter fails CI when something does.
"""
