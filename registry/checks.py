"""`manage.py check --deploy`: the model storage these settings point at holds this
deployment's files (registry.sentinel), so a node started with them would be ready."""

from __future__ import annotations

from django.core import checks
from django.db import DatabaseError

from registry import sentinel


@checks.register("storage", deploy=True)
def check_model_storage(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if app_configs is not None and not any(config.name == "registry" for config in app_configs):
        return []
    try:
        verdict = sentinel.verify()
    except DatabaseError as exc:
        # Deploy checks also run where no database is migrated yet (CI, an image build).
        return [
            checks.Info(
                f"The model storage was not checked: the database cannot say what it should hold "
                f"({exc.__class__.__name__}). Run the check again once the database is migrated.",
                id="registry.I001",
            )
        ]
    if verdict.ok:
        return []
    if verdict.state == sentinel.UNREACHABLE:
        return [
            checks.Error(
                f"The model storage cannot be read: {verdict.detail}",
                hint="Check S3_ENDPOINT_URL, the credentials and the network (or MODEL_STORAGE_PATH).",
                id="registry.E002",
            )
        ]
    return [checks.Error(verdict.detail, id="registry.E001")]
