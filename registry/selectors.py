"""Shared reads of the registry."""

from __future__ import annotations

from django.db.models import QuerySet

from registry.errors import ModelNotFound
from registry.models import MLModel


def model_versions(*, name: str) -> QuerySet[MLModel]:
    """All versions of a name, newest semver first."""
    return MLModel.objects.named(name).with_relations().newest_first()


def model_latest(*, name: str, ready_only: bool = True) -> MLModel:
    """The highest semver version of a name (the highest ready one by default)."""
    versions = model_versions(name=name)
    if ready_only:
        versions = versions.ready()
    model = versions.first()
    if model is None:
        which = "ready version" if ready_only else "version"
        raise ModelNotFound(f"No {which} of a model named '{name}'. List models with GET /api/v1/models.")
    return model


def model_latest_ready(*, name: str, fields: tuple[str, ...]) -> MLModel:
    """The highest ready version of a name, loading only `fields` (the serving hot path)."""
    model = MLModel.objects.named(name).ready().newest_first().only(*fields).first()
    if model is None:
        raise ModelNotFound(f"No ready version of a model named '{name}'. List models with GET /api/v1/models.")
    return model


def model_by_name_version(*, name: str, version: str, fields: tuple[str, ...] | None = None) -> MLModel:
    queryset = MLModel.objects.only(*fields) if fields else MLModel.objects.with_relations()
    model = queryset.filter(name=name, version=version).first()
    if model is None:
        raise ModelNotFound(f"No model '{name}' with version '{version}'.")
    return model
