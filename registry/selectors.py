"""Shared reads of the registry."""

from __future__ import annotations

from django.db.models import QuerySet

from registry.errors import AliasNotFound, ConflictingParameters, InvalidAlias, ModelNotFound
from registry.models import DEFAULT_ALIAS, AliasEvent, MLModel, ModelAlias, Rollout, alias_validator
from registry.versioning import parse_version


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
        raise version_not_found(name=name, version=version)
    return model


def version_not_found(*, name: str, version: str) -> ModelNotFound:
    """The 404 for a version that does not exist, naming the name's versions when it has some."""
    known = list(MLModel.objects.named(name).newest_first().values_list("version", flat=True)[:20])
    if not known:
        return ModelNotFound(f"No model named '{name}'. List models with GET /api/v1/models.")
    return ModelNotFound(f"No model '{name}' with version '{version}'. Its versions: {', '.join(known)}.")


def alias_not_found(*, name: str, alias: str) -> ModelNotFound | AliasNotFound:
    """The 404 for an alias that does not exist (or for a name that does not)."""
    aliases = list(ModelAlias.objects.named(name).values_list("alias", flat=True))
    if not aliases and not MLModel.objects.named(name).exists():
        return ModelNotFound(f"No model named '{name}'. List models with GET /api/v1/models.")
    listed = ", ".join(aliases) if aliases else "none yet"
    return AliasNotFound(
        f"Model '{name}' has no alias '{alias}' (its aliases: {listed}). "
        f"Set one with PUT /api/v1/models/by-name/{name}/aliases/{alias}."
    )


def is_alias_like(value: str) -> bool:
    """Whether a version string names an alias instead (a label, never a semantic version)."""
    return alias_validator.regex.match(value) is not None


def model_resolve(
    *, name: str, version: str | None = None, alias: str | None = None, fields: tuple[str, ...] | None = None
) -> MLModel:
    """The version a request means by "name [+ version or alias]"; the one rule for all callers.

    - `version` that is a semantic version: that version.
    - `version` that is an alias name (`/v2/models/m/versions/production`), or `alias`: the
      version the alias points at (404 `alias_not_found` if there is no such alias).
    - neither: the version of the `production` alias when the name has one, else the highest
      ready version.

    The model is returned whatever its status: callers check it is servable, so an alias to a
    version archived later answers as that version does. `fields` limits the loaded columns.
    """
    if version and alias:
        raise ConflictingParameters(
            "Send either a version or an alias, not both: ?version=1.2.0 or ?alias=production.",
        )
    if version and is_alias_like(version):
        version, alias = None, version
    if version:
        return model_by_name_version(name=name, version=version, fields=fields)
    queryset = MLModel.objects.only(*fields) if fields else MLModel.objects.with_relations()
    if alias:
        if not is_alias_like(alias):
            raise _bad_alias(alias)
        model = queryset.filter(aliases__name=name, aliases__alias=alias).first()
        if model is None:
            raise alias_not_found(name=name, alias=alias)
        return model
    model = queryset.filter(aliases__name=name, aliases__alias=DEFAULT_ALIAS).first()
    if model is not None:
        return model
    model = queryset.named(name).ready().newest_first().first()
    if model is None:
        raise ModelNotFound(f"No ready version of a model named '{name}'. List models with GET /api/v1/models.")
    return model


def _bad_alias(alias: str) -> InvalidAlias:
    try:
        parse_version(alias)
    except ValueError:
        return InvalidAlias(f"'{alias}' cannot be an alias name. {alias_validator.message}")
    return InvalidAlias(f"'{alias}' is a version: send ?version={alias} instead of ?alias=.", code="alias_is_version")


def alias_list(*, name: str) -> QuerySet[ModelAlias]:
    return ModelAlias.objects.named(name).with_target().order_by("alias")


def alias_events(*, name: str) -> QuerySet[AliasEvent]:
    """The audit trail of a name's aliases, newest first."""
    return AliasEvent.objects.named(name).select_related("actor_user", "actor_key").newest_first()


def alias_of_reference(*, name: str, version: str | None = None, alias: str | None = None) -> str | None:
    """The alias a "name [+ version or alias]" reference goes through (model_resolve's rule):
    the alias named, the one a version that is an alias name means, `production` for neither
    (when the name has it), None for a semantic version."""
    if alias:
        return alias
    if version:
        return version if is_alias_like(version) else None
    return DEFAULT_ALIAS


def rollout_of_reference(*, name: str, version: str | None = None, alias: str | None = None) -> Rollout | None:
    """The rollout of the alias a reference goes through, with its candidate and shadow (whole
    rows: a shadow version is loaded on another thread, which must not go back to the
    database); None when the reference goes through no alias or the alias has no rollout."""
    which = alias_of_reference(name=name, version=version, alias=alias)
    if which is None:
        return None
    rollouts = Rollout.objects.select_related("alias", "candidate", "shadow")
    return rollouts.filter(alias__name=name, alias__alias=which).first()
