"""The hot path's per-process caches answer past their TTL while they reload off the request
path (core.refresh): an API key and a served model row, changed in the database without the
notification that would have cleared them (a lost message), are answered as cached for at most
twice the TTL, then as they are now; older than that they are loaded on the request's thread."""

from __future__ import annotations

import time

import pytest
from rest_framework.exceptions import AuthenticationFailed

from access.keys import authenticate_key, key_cache
from access.models import APIKey
from inference.serving import serving_cache
from registry.models import MLModel
from tests.registry.onnx_factories import make_iris_model

# The refresher thread reads the rows through its own connection: they must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def undisturbed(cache, scenario) -> None:
    """Run ``scenario()``, again if ``cache`` was cleared meanwhile: every registry or key write
    (this test's own, other test processes') clears every process's cache, once at once and once
    more when its notification comes back (core.invalidation), as in production, and a step of
    the scenario would then meet a cold cache. Each scenario starts by putting its rows back."""
    for _ in range(5):
        generation = cache._generation
        try:
            scenario()
        except (KeyError, AssertionError, AuthenticationFailed):
            if cache._generation != generation:
                continue
            raise
        return
    pytest.fail("the cache was cleared during every attempt")


def cache_key(api_key: APIKey, raw: str) -> str:
    """Check the key (so it is cached); its cache digest."""
    assert authenticate_key(raw).pk == api_key.pk
    (digest,) = [d for d, (cached, _) in key_cache._entries.items() if cached.pk == api_key.pk]
    return digest


def age(cache, key, seconds: float) -> None:
    """Make the cached entry ``seconds`` old (rather than wait for the clock)."""
    value, _stored = cache._entries[key]
    cache._entries[key] = (value, time.monotonic() - seconds)


def test_a_key_past_its_ttl_is_answered_then_reloaded_off_the_request_path(make_key, settings):
    settings.API_KEY_CACHE_SECONDS = 60
    api_key, raw = make_key("predict")

    def scenario():
        APIKey.objects.filter(pk=api_key.pk).update(revoked=False)
        digest = cache_key(api_key, raw)
        APIKey.objects.filter(pk=api_key.pk).update(revoked=True)  # no notification: as if it were lost
        age(key_cache, digest, 90)  # past the TTL, within twice it
        assert authenticate_key(raw).pk == api_key.pk  # answered from memory, the reload handed off
        wait_for(lambda: key_cache._entries[digest][0].revoked, "the reload kept the key as it is now")
        with pytest.raises(AuthenticationFailed) as refused:
            authenticate_key(raw)
        assert refused.value.get_codes() == "api_key_revoked"

    undisturbed(key_cache, scenario)


def test_a_key_that_no_longer_matches_is_forgotten_by_its_reload(make_key, settings):
    settings.API_KEY_CACHE_SECONDS = 60
    api_key, raw = make_key("predict")
    stored = APIKey.objects.get(pk=api_key.pk).hashed_key

    def scenario():
        APIKey.objects.filter(pk=api_key.pk).update(hashed_key=stored)
        digest = cache_key(api_key, raw)
        APIKey.objects.filter(pk=api_key.pk).update(hashed_key="sha512$$0")  # replaced, unnotified
        age(key_cache, digest, 90)
        authenticate_key(raw)
        wait_for(lambda: digest not in key_cache._entries, "the reload dropped the key")
        with pytest.raises(AuthenticationFailed) as refused:
            authenticate_key(raw)
        assert refused.value.get_codes() == "invalid_api_key"

    undisturbed(key_cache, scenario)


def test_a_key_older_than_twice_the_ttl_is_loaded_by_the_request(make_key, settings):
    settings.API_KEY_CACHE_SECONDS = 60
    api_key, raw = make_key("predict")

    def scenario():
        APIKey.objects.filter(pk=api_key.pk).update(revoked=False)
        digest = cache_key(api_key, raw)
        APIKey.objects.filter(pk=api_key.pk).update(revoked=True)
        age(key_cache, digest, 121)
        with pytest.raises(AuthenticationFailed) as refused:  # at once: no stale answer
            authenticate_key(raw)
        assert refused.value.get_codes() == "api_key_revoked"

    undisturbed(key_cache, scenario)


def test_a_served_model_past_its_ttl_is_answered_then_reloaded(settings, ready_model):
    settings.SERVING_CACHE_SECONDS = 60
    model = MLModel.objects.get(pk=ready_model(make_iris_model(), name="swr")["id"])
    key = ("id", str(model.pk))

    def scenario():
        MLModel.objects.filter(pk=model.pk).update(status=MLModel.Status.READY)
        serving_cache.clear()
        assert serving_cache.by_id(model.pk).status == MLModel.Status.READY
        MLModel.objects.filter(pk=model.pk).update(status=MLModel.Status.ARCHIVED)  # no notification
        age(serving_cache, key, 90)
        assert serving_cache.by_id(model.pk).status == MLModel.Status.READY  # as cached, reload handed off
        wait_for(
            lambda: serving_cache._entries[key][0].status == MLModel.Status.ARCHIVED,
            "the reload kept the row as it is now",
        )
        age(serving_cache, key, 121)
        MLModel.objects.filter(pk=model.pk).update(status=MLModel.Status.READY)
        assert serving_cache.by_id(model.pk).status == MLModel.Status.READY  # too old: loaded at once

    undisturbed(serving_cache, scenario)


def test_the_periodic_look_for_stale_sessions_runs_off_the_request_path(ready_model, predict_client):
    from inference.sessions import get_pool
    from tests.inference.api import predict_ok

    model = ready_model(make_iris_model(), name="swept")
    pool = get_pool()
    for _ in range(20):
        MLModel.objects.filter(pk=model["id"]).update(status=MLModel.Status.READY)
        predict_ok(predict_client, model["id"], {"X": [[5.1, 3.5, 1.4, 0.2]]}, skip_cache=True)
        assert model["file_sha256"] in pool.loaded()
        MLModel.objects.filter(pk=model["id"]).update(status=MLModel.Status.ARCHIVED)  # no notification
        pool._last_sweep = time.monotonic() - pool.recheck_seconds - 1  # the look is due
        if pool.sweep_stale() == []:  # the request goes on: the sweeper thread looks
            break
        # A registry write elsewhere made this look the one after a write, on the caller: again.
    else:
        pytest.fail("every look was one after a registry write")
    wait_for(lambda: model["file_sha256"] not in pool.loaded(), "the sweeper evicted the archived model's session")
