"""API keys: every /api/v1 route but the probes needs one, with the right scope."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from access.models import APIKey

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models"


def client_with(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_no_key_is_401_with_a_bearer_challenge(api_client):
    response = api_client.get(MODELS)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer nonsense", "Bearer abc.def", "Bearer ", "Api-Key whatever", "Bearer " + "x" * 500, "Basic dXNlcjpwYXNz"],
)
def test_wrong_keys_are_401(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(MODELS)
    assert response.status_code == 401
    assert response.json()["code"] in {"invalid_api_key", "not_authenticated"}


def test_a_tampered_key_with_a_real_prefix_is_401(make_key):
    _, raw = make_key("read")
    prefix, _, secret = raw.partition(".")
    response = client_with(f"{prefix}.{'A' * len(secret)}").get(MODELS)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"


def test_revoked_key_is_401(make_key):
    _, raw = make_key("read", revoked=True)
    response = client_with(raw).get(MODELS)
    assert response.status_code == 401
    assert response.json()["code"] == "api_key_revoked"


def test_expired_key_is_401(make_key):
    _, raw = make_key("read", expiry_date=timezone.now() - timedelta(minutes=1))
    response = client_with(raw).get(MODELS)
    assert response.status_code == 401
    assert response.json()["code"] == "api_key_expired"


def test_key_not_yet_expired_works(make_key):
    _, raw = make_key("read", expiry_date=timezone.now() + timedelta(days=1))
    assert client_with(raw).get(MODELS).status_code == 200


def test_scopes_gate_reads_and_writes(client_for):
    predict_only = client_for("predict")
    response = predict_only.get(MODELS)
    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"
    assert "read" in response.json()["detail"]

    reader = client_for("read")
    assert reader.get(MODELS).status_code == 200
    response = reader.post(MODELS, {"name": "m", "version": "1.0.0"}, format="json")
    assert response.status_code == 403
    assert "manage" in response.json()["detail"]

    manager = client_for("manage")
    assert manager.post(MODELS, {"name": "m", "version": "1.0.0"}, format="json").status_code == 201


def test_staff_session_may_use_the_api_but_not_plain_users(client, ops_user, django_user_model):
    client.force_login(ops_user)
    assert client.get(MODELS).status_code == 200
    plain = django_user_model.objects.create_user("plain", password="pw-123456789")
    client.force_login(plain)
    assert client.get(MODELS).status_code == 403


def test_probes_need_no_key(api_client):
    assert api_client.get("/api/v1/live").status_code == 200
    assert api_client.get("/api/v1/ready").status_code == 200
    assert api_client.get("/api/v1/health").status_code == 200


def test_schema_and_docs_need_a_key(api_client, read_client):
    assert api_client.get("/api/v1/schema").status_code == 401
    assert read_client.get("/api/v1/schema").status_code == 200


def test_keys_are_stored_hashed(make_key):
    api_key, raw = make_key("read")
    stored = APIKey.objects.get(pk=api_key.pk)
    assert raw not in stored.hashed_key
    assert raw.partition(".")[2] not in stored.id


def test_create_api_key_command_prints_a_working_key(capsys):
    call_command("create_api_key", "--name", "ci", "--scopes", "read,predict", "--expires-days", "3")
    raw = capsys.readouterr().out.strip()
    api_key = APIKey.objects.get(prefix=raw.partition(".")[0])
    assert api_key.scopes == ["read", "predict"]
    assert timedelta(days=2, hours=23) < api_key.expiry_date - timezone.now() <= timedelta(days=3)
    assert client_with(raw).get(MODELS).status_code == 200


@pytest.mark.parametrize(
    "args",
    [["--name", "x", "--scopes", "admin"], ["--name", "x", "--scopes", ""], ["--name", "x", "--expires-days", "0"]],
)
def test_create_api_key_command_rejects_bad_arguments(args):
    with pytest.raises(CommandError):
        call_command("create_api_key", *args)
    assert APIKey.objects.count() == 0
