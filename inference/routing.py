"""Which version answers a request through an alias with a rollout (registry.rollouts).

The serving exchange resolves a reference to the alias's version (the primary); when the alias
has a rollout, the serving cache (inference.serving) hands its `Plan` along with that row, and
`choose` picks the primary or the candidate, so every door (/api/v1, /v2 REST, gRPC, the
admin's Try it) and jobs by alias route the same way.

Sticky routing: a request with a routing key (the ``X-Routing-Key`` header, gRPC metadata
``x-routing-key``, else the caller's API key) gets ``u = blake2b(alias id, key)`` as a number in
[0, 1) and goes to the candidate iff ``u < weight``. The same key lands on the same version
while the weight is unchanged, and raising the weight only moves keys from the primary to the
candidate (those with ``old <= u < new``), never back. A request with neither (a staff user in
the admin) is routed at random (`rng`, which tests seed).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass

from registry import selectors
from registry.models import MLModel

ROUTING_HEADER = "X-Routing-Key"
ROUTING_METADATA = ROUTING_HEADER.lower()  # the Incoming.headers name and gRPC's metadata key
VERSION_HEADER = "X-Model-Version"  # which version answered, on every door's replies
VERSION_METADATA = "model-version"  # gRPC's trailing metadata
MAX_KEY_LENGTH = 200
_SCALE = float(2**64)

rng = random.Random()  # noqa: S311 - a traffic split, not a secret


@dataclass(frozen=True, slots=True)
class Plan:
    """An alias's rollout as the hot path needs it (cached with the alias's resolution)."""

    rollout_id: int
    alias_id: int
    label: str  # name@alias
    primary: MLModel
    candidate: MLModel | None
    weight: float  # the candidate's share, 0..1
    shadow: MLModel | None
    shadow_fraction: float  # 0..1

    @classmethod
    def of(cls, rollout, primary: MLModel) -> Plan:
        return cls(
            rollout_id=rollout.pk,
            alias_id=rollout.alias.pk,
            label=str(rollout.alias),
            primary=primary,
            candidate=rollout.candidate,
            weight=rollout.weight / 100.0,
            shadow=rollout.shadow,
            shadow_fraction=rollout.shadow_percent / 100.0,
        )


def share(key: str, alias_id: int) -> float:
    """Where `key` falls in [0, 1) for this alias: uniform over keys, fixed per (alias, key)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=str(alias_id).encode()).digest()
    return int.from_bytes(digest, "big") / _SCALE


def choose(plan: Plan, key: str | None) -> MLModel:
    """The version that answers: the candidate with probability `plan.weight` (by the key's
    share when there is a key), else the primary; the primary whenever the candidate is not
    ready (the registry refuses archiving a candidate; this covers a row changed under the cache)."""
    candidate = plan.candidate
    if candidate is None or plan.weight <= 0.0 or candidate.status != MLModel.Status.READY:
        return plan.primary
    u = rng.random() if key is None else share(key, plan.alias_id)
    return candidate if u < plan.weight else plan.primary


def routing_key(headers: Mapping[str, str | None], api_key=None) -> str | None:
    """The request's routing key: its header, else its API key (by id), else None."""
    sent = headers.get(ROUTING_METADATA)
    if sent:
        return sent[:MAX_KEY_LENGTH]
    if api_key is not None:
        return f"key:{api_key.pk}"
    return None


def route_named(*, name: str, version: str | None = None, alias: str | None = None, api_key=None) -> MLModel:
    """The version a named reference is served by, routed as the exchange routes (jobs by alias:
    the routing key is the job's API key). The row is whatever its status: callers check it."""
    model = selectors.model_resolve(name=name, version=version, alias=alias)
    rollout = selectors.rollout_of_reference(name=name, version=version, alias=alias)
    if rollout is None or rollout.alias.model_id != model.pk:
        return model
    return choose(Plan.of(rollout, model), routing_key({}, api_key))
