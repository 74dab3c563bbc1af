"""API keys in the admin: created with scopes through the service, shown once, revoked for good."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.messages import get_messages
from django.urls import reverse
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from access.admin import NEW_KEY_SESSION
from access.models import APIKey

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:access_apikey_changelist")
ADD = reverse("admin:access_apikey_add")
MODELS = "/api/v1/models"


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


def change_url(api_key: APIKey) -> str:
    return reverse("admin:access_apikey_change", args=[quote(api_key.pk)])


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def raw_key_in(html: str, api_key: APIKey) -> str:
    """The raw key in the read-only field of the page that answers the creation."""
    match = re.search(rf'id="mf-raw-key" value="({re.escape(api_key.prefix)}\.[^"]+)"', html)
    assert match, html
    return match.group(1)


def create_key(admin_client, name: str = "ci", scopes=("read",)) -> tuple[APIKey, str]:
    """Create a key through the add form; returns the row and the raw key from the page the
    answer redirects to."""
    response = admin_client.post(
        ADD, {"name": name, "scopes": list(scopes), "expiry_date_0": "", "expiry_date_1": ""}, follow=True
    )
    assert response.status_code == 200 and "shown only this once" in response.content.decode()
    api_key = APIKey.objects.get(name=name)
    return api_key, raw_key_in(response.content.decode(), api_key)


def test_only_the_scoped_api_key_model_is_in_the_admin():
    assert admin.site.is_registered(APIKey)
    assert not admin.site.is_registered(LibraryAPIKey)


def test_add_form_creates_a_scoped_key_and_shows_the_raw_key_once(admin_client):
    created = admin_client.post(
        ADD, {"name": "ci", "scopes": ["predict", "read"], "expiry_date_0": "", "expiry_date_1": ""}
    )

    api_key = APIKey.objects.get(name="ci")
    # Redirect after POST: the page that shows the key is a GET of its own.
    assert created.status_code == 302
    assert created["Location"] == reverse("admin:access_apikey_created", args=[quote(api_key.pk)])
    response = admin_client.get(created["Location"])
    assert api_key.scopes == ["read", "predict"]
    assert api_key.expiry_date is None
    assert not api_key.revoked
    html = response.content.decode()
    assert response.status_code == 200 and "shown only this once" in html
    assert "no-store" in response["Cache-Control"]
    raw = raw_key_in(html, api_key)
    assert api_key.is_valid(raw)
    assert raw not in (api_key.pk, api_key.hashed_key)
    # Not in a message either (messages travel in a cookie or the session).
    assert not any(raw in text for text in messages_of(response))

    assert raw not in admin_client.get(CHANGELIST).content.decode()
    assert raw not in admin_client.get(change_url(api_key)).content.decode()


def test_reloading_the_created_page_neither_creates_a_key_nor_shows_it_again(admin_client):
    created = admin_client.post(ADD, {"name": "ci", "scopes": ["read"], "expiry_date_0": "", "expiry_date_1": ""})
    first = admin_client.get(created["Location"])
    api_key = APIKey.objects.get()
    raw = raw_key_in(first.content.decode(), api_key)

    reloaded = admin_client.get(created["Location"])

    assert reloaded.status_code == 200
    html = reloaded.content.decode()
    assert raw not in html and 'id="mf-raw-key"' not in html
    assert "was shown once, when it was created, and cannot be shown again" in html
    assert "no-store" in reloaded["Cache-Control"]
    assert APIKey.objects.count() == 1
    assert NEW_KEY_SESSION not in admin_client.session  # nothing of the raw key is left behind


def test_add_form_requires_name_and_a_known_scope(admin_client):
    response = admin_client.post(ADD, {"name": "", "scopes": ["admin"], "expiry_date_0": "", "expiry_date_1": ""})

    assert response.status_code == 200
    assert set(response.context["adminform"].form.errors) == {"name", "scopes"}
    assert not APIKey.objects.exists()


def test_created_read_key_lists_models(admin_client, api_client):
    _, raw = create_key(admin_client, scopes=["read"])

    response = api_client.get(MODELS, HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert response.status_code == 200


def test_created_key_without_read_scope_is_forbidden_to_list(admin_client, api_client):
    _, raw = create_key(admin_client, name="predictor", scopes=["predict"])

    response = api_client.get(MODELS, HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"


def test_changelist_shows_name_prefix_and_scopes(admin_client, make_key):
    api_key, _ = make_key("read", "manage", name="ops-key")

    html = admin_client.get(CHANGELIST).content.decode()

    assert "ops-key" in html
    assert api_key.prefix in html
    assert "read, manage" in html


def test_revoke_action_confirms_then_revokes_and_the_key_gets_401(admin_client, api_client):
    api_key, raw = create_key(admin_client, scopes=["read"])
    assert api_client.get(MODELS, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200

    selected = {"action": "revoke_selected", "_selected_action": [api_key.pk]}
    confirmation = admin_client.post(CHANGELIST, selected)
    assert confirmation.status_code == 200
    assert "Revoke API key?" in confirmation.content.decode()
    api_key.refresh_from_db()
    assert not api_key.revoked  # nothing changes before the confirming POST

    response = admin_client.post(CHANGELIST, {**selected, "post": "yes"})

    assert response.status_code == 302
    assert messages_of(response)[-1] == "Revoked 1 key; revocation cannot be undone."
    api_key.refresh_from_db()
    assert api_key.revoked
    refused = api_client.get(MODELS, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert refused.status_code == 401
    assert refused.json()["code"] == "api_key_revoked"


def test_revoked_key_is_read_only(admin_client, make_key):
    api_key, _ = make_key("read", name="old", revoked=True)

    page = admin_client.get(change_url(api_key))
    response = admin_client.post(
        change_url(api_key), {"name": "renamed", "scopes": ["manage"], "expiry_date_0": "", "expiry_date_1": ""}
    )

    assert page.status_code == 200
    assert 'name="name"' not in page.content.decode()
    assert response.status_code == 403
    api_key.refresh_from_db()
    assert (api_key.name, api_key.scopes, api_key.revoked) == ("old", ["read"], True)


def test_active_key_form_edits_name_and_scopes_but_not_revoked(admin_client, make_key):
    api_key, _ = make_key("read", name="svc")

    response = admin_client.post(
        change_url(api_key),
        {"name": "svc-2", "scopes": ["manage", "read"], "revoked": "on", "expiry_date_0": "", "expiry_date_1": ""},
    )

    assert response.status_code == 302
    api_key.refresh_from_db()
    assert (api_key.name, api_key.scopes, api_key.revoked) == ("svc-2", ["read", "manage"], False)


def test_key_state_is_shown_in_words_and_the_page_revokes(admin_client, api_client, make_key):
    from datetime import timedelta

    from django.utils import timezone

    live, raw = make_key("read", name="live")
    make_key("read", name="old", expiry_date=timezone.now() - timedelta(days=1))
    make_key("read", name="gone", revoked=True)
    html = admin_client.get(CHANGELIST).content.decode()
    assert ">Active<" in html and ">Expired<" in html and ">Revoked<" in html

    page = admin_client.get(change_url(live)).content.decode()
    revoke_url = reverse("admin:access_apikey_revoke", args=[quote(live.pk)])
    assert "State: Active" in page and f'href="{revoke_url}"' in page
    response = admin_client.post(revoke_url, {"confirm": "yes"}, follow=True)
    assert "Revoked “live”; revocation cannot be undone." in messages_of(response)
    assert "State: Revoked" in response.content.decode()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_client.get("/api/v1/models").status_code == 401
    again = admin_client.get(revoke_url, follow=True)
    assert "“live” is already revoked." in messages_of(again)
    assert admin_client.put(revoke_url).status_code == 405


# --- unique names ---------------------------------------------------------------------------------


def test_add_form_refuses_a_name_another_key_has_whatever_its_case(admin_client, make_key):
    existing, _ = make_key("read", name="billing-svc")

    response = admin_client.post(
        ADD, {"name": "Billing-SVC", "scopes": ["read"], "expiry_date_0": "", "expiry_date_1": ""}
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["name"]
    assert errors["name"] == [
        f"An API key named “Billing-SVC” already exists (billing-svc, prefix {existing.prefix}). Key names are "
        "unique, letter case aside: choose another name, e.g. with the date or the environment in it."
    ]
    assert "added successfully" not in response.content.decode()
    assert list(APIKey.objects.values_list("name", flat=True)) == ["billing-svc"]


def test_a_revoked_keys_name_stays_taken(admin_client, make_key):
    old, _ = make_key("read", name="ci", revoked=True)

    response = admin_client.post(ADD, {"name": "ci", "scopes": ["read"], "expiry_date_0": "", "expiry_date_1": ""})

    assert response.status_code == 200
    assert f"(ci, prefix {old.prefix}, revoked)" in response.context["adminform"].form.errors["name"][0]
    assert APIKey.objects.count() == 1


def test_renaming_a_key_to_a_taken_name_is_a_form_error(admin_client, make_key):
    make_key("read", name="svc-a")
    api_key, _ = make_key("read", name="svc-b")

    response = admin_client.post(
        change_url(api_key), {"name": "SVC-A", "scopes": ["read"], "expiry_date_0": "", "expiry_date_1": ""}
    )

    assert response.status_code == 200
    assert "An API key named “SVC-A” already exists" in response.context["adminform"].form.errors["name"][0]
    api_key.refresh_from_db()
    assert api_key.name == "svc-b"
    # Saving a key under its own name (another letter case included) is no conflict.
    same = admin_client.post(
        change_url(api_key), {"name": "SVC-B", "scopes": ["read"], "expiry_date_0": "", "expiry_date_1": ""}
    )
    assert same.status_code == 302


def test_a_name_taken_after_the_forms_check_is_a_message_not_a_500(admin_client, make_key, monkeypatch):
    """A creation racing another past the form's check: the service refuses, the page says why."""
    from access.admin import APIKeyForm

    make_key("read", name="ci")
    monkeypatch.setattr(APIKeyForm, "clean_name", lambda form: form.cleaned_data["name"])
    monkeypatch.setattr(APIKey, "validate_constraints", lambda self, exclude=None: None)

    response = admin_client.post(ADD, {"name": "ci", "scopes": ["read"], "expiry_date_0": "", "expiry_date_1": ""})

    assert (response.status_code, response.url) == (302, ADD)
    assert messages_of(response)[0].startswith("Not saved: An API key named “ci” already exists")
    assert APIKey.objects.filter(name="ci").count() == 1


def test_the_database_refuses_a_second_key_with_a_name_in_another_case(make_key):
    from django.db import IntegrityError, transaction

    make_key("read", name="ci")
    with pytest.raises(IntegrityError), transaction.atomic():
        APIKey.objects.create_key(name="CI", scopes=["read"])


def test_create_api_key_command_refuses_a_taken_name(make_key):
    from django.core.management import CommandError, call_command

    make_key("read", name="nightly")

    with pytest.raises(CommandError, match="An API key named “NIGHTLY” already exists"):
        call_command("create_api_key", "--name", "NIGHTLY", "--scopes", "read")
    assert APIKey.objects.count() == 1


# --- expire now -----------------------------------------------------------------------------------


def test_expire_now_action_confirms_then_the_key_gets_401_expired(admin_client, api_client, make_key):
    from datetime import timedelta

    from django.utils import timezone

    api_key, raw = make_key("read", name="batch-svc")
    later = timezone.now() + timedelta(days=30)
    other, _ = make_key("read", name="other", expiry_date=later)
    gone, _ = make_key("read", name="gone", revoked=True)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_client.get(MODELS).status_code == 200
    selected = {"action": "expire_selected", "_selected_action": [api_key.pk, other.pk, gone.pk]}

    confirmation = admin_client.post(CHANGELIST, selected)

    assert confirmation.status_code == 200
    html = confirmation.content.decode()
    assert "Expire 2 API keys now?" in html
    assert "2 keys: active &rarr; expired" in html
    assert "<code>api_key_expired</code>" in html and "This can be undone" in html
    assert "Left as they are: “gone” (revoked)." in html
    assert api_client.get(MODELS).status_code == 200  # nothing changes before the confirming POST

    response = admin_client.post(CHANGELIST, {**selected, "post": "yes"})

    assert response.status_code == 302
    assert messages_of(response)[-1] == (
        "Expired 2 keys now; requests with them are refused. A later expiry on the key's page undoes it."
    )
    refused = api_client.get(MODELS)
    assert (refused.status_code, refused.json()["code"]) == (401, "api_key_expired")
    listed = admin_client.get(CHANGELIST).content.decode()
    assert listed.count(">Expired<") == 2 and ">Revoked<" in listed
    gone.refresh_from_db()
    assert gone.expiry_date is None  # a revoked key is left as it was


def test_expire_now_from_the_keys_page_and_undo_with_a_later_expiry(admin_client, api_client, make_key):
    api_key, raw = make_key("read", name="live")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    expire_url = reverse("admin:access_apikey_expire", args=[quote(api_key.pk)])
    page = admin_client.get(change_url(api_key)).content.decode()
    assert f'href="{expire_url}"' in page

    confirmation = admin_client.get(expire_url)
    assert "Expire API key now?" in confirmation.content.decode()
    assert admin_client.post(expire_url).status_code == 200  # no confirmation: the page again
    assert api_client.get(MODELS).status_code == 200

    response = admin_client.post(expire_url, {"confirm": "yes"}, follow=True)

    assert "Expired “live” now; requests with it are refused. A later expiry on the key's page undoes it." in (
        messages_of(response)
    )
    html = response.content.decode()
    assert "State: Expired" in html and f'href="{expire_url}"' not in html
    assert api_client.get(MODELS).json()["code"] == "api_key_expired"
    again = admin_client.get(expire_url, follow=True)
    assert "“live” is already expired." in messages_of(again)

    undo = admin_client.post(
        change_url(api_key),
        {"name": "live", "scopes": ["read"], "expiry_date_0": "2999-01-01", "expiry_date_1": "00:00:00"},
    )
    assert undo.status_code == 302
    assert api_client.get(MODELS).status_code == 200
