"""Hypothesis over version strings shaped like semantic versions, numbers of any length
included (a 21-digit number was a 500): the sort key of every version that parses fits its
column and orders as semver does, and every route that takes a version (create, the alias
PUT, the by-name reads and predict on both paths) answers it with a 2xx or a 4xx whose code
says what is wrong, never a 500. Bounded and derandomized, like the rest of tests/fuzz."""

from __future__ import annotations

import functools
from urllib.parse import urlencode

import pytest
import semver
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.models import MLModel
from registry.versioning import MAX_SORT_KEY_LENGTH, MAX_VERSION_LENGTH, parse_version, version_sort_key
from tests.jobs.factories import iris_model
from tests.security.battery import via_django, via_fastpath

MODELS = "/api/v1/models"
BOUNDED = settings(max_examples=60, derandomize=True, deadline=None, database=None)

# Numbers from 0 to far past 20 digits, weighted to the edges where keys break.
numbers = st.one_of(
    st.integers(0, 20),
    st.integers(10**19 - 3, 10**20 + 3),
    st.integers(0, 10**40),
).map(str)
alphanumeric = st.text("abcxyzABC-0123456789", min_size=1, max_size=8).filter(lambda text: not text.isdigit())
identifiers = st.one_of(numbers, alphanumeric)
versions = st.builds(
    lambda core, pre, build: ".".join(core) + (f"-{'.'.join(pre)}" if pre else "") + (f"+{build}" if build else ""),
    st.lists(numbers, min_size=3, max_size=3),
    st.lists(identifiers, max_size=30),
    st.one_of(st.none(), st.text("abc0123456789", min_size=1, max_size=6)),
)


@BOUNDED
@given(versions, versions)
def test_every_version_that_parses_has_a_key_that_fits_and_orders_as_semver(first, second):
    keys = []
    for value in (first, second):
        try:
            parsed = parse_version(value)
        except ValueError as exc:
            assert str(exc)  # says what to fix
            return
        assert len(value) <= MAX_VERSION_LENGTH
        key = version_sort_key(value)
        assert key.isdigit() and len(key) <= MAX_SORT_KEY_LENGTH
        keys.append((key, parsed))
    (key_a, a), (key_b, b) = keys
    assert (key_a > key_b) - (key_a < key_b) == semver.compare(str(a.replace(build=None)), str(b.replace(build=None)))


@pytest.fixture
def fuzz_clients(make_key, settings, make_model):
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "upload": ""}  # many creates from one key
    make_model(iris_model(), name="iris")
    _, raw = make_key("read", "predict", "manage", name="fuzzer")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client, raw


@functools.cache
def _is_version(value: str) -> bool:
    try:
        parse_version(value)
    except ValueError:
        return False
    return True


@pytest.mark.django_db
@settings(BOUNDED, suppress_health_check=list(HealthCheck))
@given(version=versions)
def test_routes_taking_a_version_never_answer_500(fuzz_clients, version):
    client, key = fuzz_clients

    created = client.post(MODELS, {"name": "fuzzed", "version": version}, content_type="application/json")
    if _is_version(version):
        assert created.status_code in (201, 409), created.content[:300]
    else:
        assert created.status_code == 400, created.content[:300]
        assert created.json()["code"] == "invalid_version"

    alias = client.put(
        f"{MODELS}/by-name/iris/aliases/production", {"version": version}, content_type="application/json"
    )
    assert alias.status_code in (200, 201, 400, 404, 409), alias.content[:300]
    if alias.status_code == 400:
        assert alias.json()["code"] == "invalid_version"

    for path in (f"{MODELS}/by-name/fuzzed/versions", f"{MODELS}/by-name/fuzzed/latest?ready_only=false"):
        assert client.get(path).status_code == 200
    for send in (via_django, via_fastpath):
        query = urlencode({"version": version})
        reply = send(f"{MODELS}/by-name/iris/predict", b'{"input_data": {"X": [[1, 2, 3, 4]]}}', key=key, query=query)
        assert reply.status in (404, 400), reply.content[:300]
    assert MLModel.objects.filter(name="iris").count() == 1
