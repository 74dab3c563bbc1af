"""The registry admin: lists, registration, the change page, actions and deletion."""

from __future__ import annotations

import hashlib
import io
import random

import onnx
import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from registry import services
from registry.models import MLModel, Tag
from registry.storage import ModelStore
from tests.registry.onnx_factories import make_add_model, make_iris_model

pytestmark = pytest.mark.django_db

Status = MLModel.Status
CHANGELIST = reverse("admin:registry_mlmodel_changelist")
ADD = reverse("admin:registry_mlmodel_add")
XSS = "<script>alert(1)</script>"
ESCAPED_XSS = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


def serving_fields(model) -> dict:
    """The serving options as the change form shows them (a browser posts them back)."""
    values = {name: getattr(model, name) for name in services.SERVING_OPTIONS}
    form = {name: ("on" if value else "") if isinstance(value, bool) else value for name, value in values.items()}
    return {name: value for name, value in form.items() if value not in ("", None)}


def change_url(model: MLModel) -> str:
    return reverse("admin:registry_mlmodel_change", args=[model.pk])


def onnx_file(data: bytes, name: str = "model.onnx") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def random_bytes() -> bytes:
    return random.Random(7).randbytes(4096)


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def make_model(name: str, version: str = "1.0.0", *, status: str = Status.PENDING, tags=(), **fields) -> MLModel:
    """A row in any status, without a real file (for lists and state checks)."""
    if status in (Status.UPLOADED, Status.VALIDATING, Status.READY):
        fields.setdefault("file_sha256", hashlib.sha256(f"{name}:{version}".encode()).hexdigest())
        fields.setdefault("file_size", 2048)
    model = MLModel.objects.create(name=name, version=version, status=status, **fields)
    model.tags.set([Tag.objects.get_or_create(name=tag)[0] for tag in tags])
    return model


def register(name: str, version: str = "1.0.0", data: bytes | None = None) -> MLModel:
    """A model registered and validated through the services, with a real stored file."""
    staged = services.stage_stream(io.BytesIO(data if data is not None else make_add_model()))
    return services.model_register(name=name, version=version, staged=staged)


def hostile_model() -> bytes:
    """The add model with script tags in its doc_string, metadata keys and values."""
    model = onnx.load_model_from_string(make_add_model())
    model.doc_string = XSS
    model.producer_name = XSS
    onnx.helper.set_model_props(model, {"license": XSS, f"<b>{XSS}</b>": "x"})
    return model.SerializeToString()


def listed(response) -> list[str]:
    return [str(model) for model in response.context["cl"].result_list]


# --- changelist ---------------------------------------------------------------------------------


def test_changelist_shows_each_status_in_words(admin_client):
    for index, status in enumerate(Status):
        make_model("m", f"1.{index}.0", status=status)

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    for status in Status:
        assert f'class="mf-status mf-status-{status.value}">{status.label}</span>' in html


def test_changelist_shows_human_readable_size(admin_client):
    make_model("big", status=Status.READY, file_size=5 * 1024 * 1024)

    response = admin_client.get(CHANGELIST)

    assert "5.0\xa0MB" in response.content.decode()


def test_changelist_filters_by_status_name_and_tag(admin_client):
    make_model("alpha", status=Status.READY, tags=["vision"])
    make_model("alpha", "2.0.0", status=Status.ERROR)
    make_model("beta", status=Status.READY)
    vision = Tag.objects.get(name="vision")

    assert listed(admin_client.get(CHANGELIST, {"status__exact": "ready"})) == ["alpha:1.0.0", "beta:1.0.0"]
    assert listed(admin_client.get(CHANGELIST, {"name": "alpha"})) == ["alpha:2.0.0", "alpha:1.0.0"]
    assert listed(admin_client.get(CHANGELIST, {"tags__id__exact": vision.pk})) == ["alpha:1.0.0"]


def test_changelist_searches_name_description_and_sha256(admin_client):
    make_model("resnet", description="image classifier")
    make_model("bert", description="text encoder")
    make_model("gpt", status=Status.READY, file_sha256="abcdef" + "0" * 58)

    assert listed(admin_client.get(CHANGELIST, {"q": "resn"})) == ["resnet:1.0.0"]
    assert listed(admin_client.get(CHANGELIST, {"q": "encoder"})) == ["bert:1.0.0"]
    assert listed(admin_client.get(CHANGELIST, {"q": "abcdef"})) == ["gpt:1.0.0"]


def test_changelist_orders_newest_semver_first_within_a_name(admin_client):
    for version in ("1.2.0", "1.10.0", "2.0.0-rc.1", "1.9.0", "2.0.0"):
        make_model("ranked", version)
    make_model("aaa", "0.1.0")

    response = admin_client.get(CHANGELIST)

    assert listed(response) == [
        "aaa:0.1.0",
        "ranked:2.0.0",
        "ranked:2.0.0-rc.1",
        "ranked:1.10.0",
        "ranked:1.9.0",
        "ranked:1.2.0",
    ]


def test_changelist_query_count_does_not_grow_with_rows(admin_client, ops_user):
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(CHANGELIST).status_code == 200
        return len(queries)

    for index in range(2):
        make_model("few", f"1.{index}.0", tags=["a", "b"], created_by=ops_user)
    few = count_queries()
    for index in range(8):
        make_model("many", f"1.{index}.0", tags=["a", "c"], created_by=ops_user)

    assert count_queries() == few


# --- add form -----------------------------------------------------------------------------------


def test_add_form_registers_a_ready_model_with_schema(admin_client, ops_user):
    response = admin_client.post(
        ADD,
        {
            "name": "adder",
            "version": "1.0.0",
            "description": "adds",
            "tags": "math, demo",
            "file": onnx_file(make_add_model()),
        },
    )

    assert response.status_code == 302
    model = MLModel.objects.get(name="adder", version="1.0.0")
    assert model.status == Status.READY
    assert [spec["name"] for spec in model.input_schema] == ["X", "Y"]
    assert [spec["name"] for spec in model.output_schema] == ["Z"]
    assert sorted(model.tags.values_list("name", flat=True)) == ["demo", "math"]
    assert model.created_by == ops_user
    assert ModelStore().exists(model.file_sha256)
    assert messages_of(response) == ["adder 1.0.0 is ready: 2 inputs, 1 output."]  # one message, no "added"


def test_messages_show_a_models_name_as_it_is_written(admin_client):
    # Django's admin capitalises each message's first letter; ours shows them as written.
    response = admin_client.post(
        ADD, {"name": "resNet", "version": "1.0.0", "file": onnx_file(make_add_model())}, follow=True
    )

    html = response.content.decode()
    assert '<li class="success">resNet 1.0.0 is ready: 2 inputs, 1 output.</li>' in html
    assert "ResNet" not in html


def test_add_form_goes_to_the_model_page_which_refreshes_while_validating(admin_client, settings):
    # The hand-over to the background waits for a commit this test never makes, so the
    # version stays validating for as long as the test looks at it.
    settings.VALIDATION_EAGER = False
    response = admin_client.post(ADD, {"name": "adder", "version": "1.0.0", "file": onnx_file(make_add_model())})

    model = MLModel.objects.get(name="adder", version="1.0.0")
    assert (response.status_code, response.url) == (302, change_url(model))
    assert model.status == Status.VALIDATING
    assert any(
        m == "adder 1.0.0 is being validated in the background; its page refreshes until it is ready or has failed."
        for m in messages_of(response)
    )
    html = admin_client.get(response.url).content.decode()
    assert '<meta http-equiv="refresh" content="2">' in html
    assert "<strong>Validating…</strong>" in html
    assert "waiting for a worker" in html

    services.model_validation_run(model_id=model.pk)  # what the runner or a worker does

    html = admin_client.get(change_url(model)).content.decode()
    assert 'http-equiv="refresh"' not in html
    assert "Status: Ready" in html
    assert "Validating…" not in html


def stored_files(model_storage) -> list:
    """Model files in the store (not the upload folder, not the deployment's sentinel)."""
    return [
        path
        for path in model_storage.rglob("*")
        if path.is_file() and "tmp" not in path.relative_to(model_storage).parts and "_modelforge" not in path.parts
    ]


def test_add_form_refuses_a_corrupt_file_on_the_form_and_registers_nothing(admin_client, model_storage):
    response = admin_client.post(
        ADD, {"name": "noise", "version": "1.0.0", "tags": "a, b", "file": onnx_file(random_bytes())}
    )

    # One outcome: the form again, with the reason on the file, and no row, file or message saying otherwise.
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert list(form.errors) == ["file"]
    [error] = form.errors["file"]
    assert error.startswith("This file cannot be registered (invalid_model): ")
    assert "not a readable ONNX model" in error
    html = response.content.decode()
    assert 'class="errornote"' in html and "added successfully" not in html
    assert messages_of(response) == []
    assert form["name"].value() == "noise" and form["tags"].value() == "a, b"  # kept, to try another file
    assert not MLModel.objects.exists()
    assert stored_files(model_storage) == []


def test_a_new_version_from_the_model_page_with_a_corrupt_file_is_refused_on_the_add_form(admin_client):
    """The model page's "Upload a new version" posts to the add form, which answers the same way."""
    iris = register("iris", "1.0.0")

    response = admin_client.post(
        ADD, {"name": "iris", "version": "1.0.1", "_continue": "1", "file": onnx_file(b"\x08\x07garbage")}
    )

    assert response.status_code == 200
    assert "This file cannot be registered (invalid_model)" in response.context["adminform"].form.errors["file"][0]
    assert list(MLModel.objects.values_list("pk", flat=True)) == [iris.pk]


def test_add_form_refuses_a_duplicate_name_and_version_as_a_form_error(admin_client):
    register("adder", "1.0.0")

    response = admin_client.post(ADD, {"name": "adder", "version": "1.0.0", "file": onnx_file(make_add_model())})

    assert response.status_code == 200
    errors = response.context["adminform"].form.non_field_errors()
    assert errors == ["This name and version are already registered. Pick a new version number."]
    assert MLModel.objects.filter(name="adder").count() == 1


def test_add_form_reports_a_duplicate_found_by_the_service(admin_client, monkeypatch):
    """A registration racing another one past the form's check ends in a message, not a 500."""
    register("adder", "1.0.0")
    # The form's checks run before the other registration commits; only the service sees it.
    monkeypatch.setattr(MLModel, "validate_constraints", lambda self, exclude=None: None)
    monkeypatch.setattr(MLModel, "validate_unique", lambda self, exclude=None: None)

    response = admin_client.post(ADD, {"name": "adder", "version": "1.0.0", "file": onnx_file(make_add_model())})

    assert response.status_code == 302
    assert response.url == ADD
    assert messages_of(response) == ["adder 1.0.0 already exists. Pick a new version number."]
    assert MLModel.objects.filter(name="adder").count() == 1


def test_add_form_requires_an_onnx_file(admin_client):
    missing = admin_client.post(ADD, {"name": "adder", "version": "1.0.0"})
    wrong_type = admin_client.post(
        ADD, {"name": "adder", "version": "1.0.0", "file": onnx_file(make_add_model(), "model.txt")}
    )

    assert missing.status_code == wrong_type.status_code == 200
    assert missing.context["adminform"].form.errors["file"] == ["This field is required."]
    assert wrong_type.context["adminform"].form.errors["file"] == ["Choose a .onnx file."]
    assert not MLModel.objects.exists()


def test_add_form_checks_name_version_and_tags(admin_client):
    response = admin_client.post(
        ADD, {"name": "bad name", "version": "1.0", "tags": "ok, not ok!", "file": onnx_file(make_add_model())}
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"name", "version", "tags"}
    assert "'not ok!' is not a valid tag" in errors["tags"][0]
    assert not MLModel.objects.exists()
    assert not Tag.objects.exists()


@pytest.mark.parametrize("enforce_csrf", [False, True])
def test_add_form_refuses_an_oversize_file_with_413(ops_user, settings, model_storage, enforce_csrf):
    """With CSRF checks on (a real browser), the body is parsed before the admin view runs."""
    settings.MAX_MODEL_SIZE_MB = 1
    settings.MAX_MODEL_SIZE_BYTES = 100
    browser = Client(enforce_csrf_checks=enforce_csrf, raise_request_exception=False)
    browser.force_login(ops_user)
    token = browser.get(ADD).cookies["csrftoken"].value

    response = browser.post(
        ADD,
        {"csrfmiddlewaretoken": token, "name": "huge", "version": "1.0.0", "file": onnx_file(make_add_model())},
    )

    assert response.status_code == 413
    assert "larger than the 1 MB limit" in response.content.decode()
    assert not MLModel.objects.exists()
    assert list((model_storage / "tmp").iterdir()) == []


# --- change page ------------------------------------------------------------------------------


def test_change_page_shows_schema_and_metadata_tables(admin_client):
    model = register("iris", "1.0.0", make_iris_model())

    response = admin_client.get(change_url(model))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="mf-status mf-status-ready">Ready</span>' in html
    assert (
        "<td><code>X</code></td><td>tensor</td><td>FP32</td><td><code>tensor(float)</code></td><td>[?, 4]</td>" in html
    )
    assert "<td><code>output_probability</code></td><td>sequence</td>" in html
    assert "<code>seq(map(int64,tensor(float)))</code>" in html
    assert '<th scope="row">Producer</th><td>skl2onnx</td>' in html
    assert '<th scope="row">Opset imports</th>' in html
    assert "<td>ai.onnx</td>" in html  # the default domain, stored as ""
    assert "<td>ai.onnx.ml</td>" in html
    assert model.file_sha256 in html


def test_change_page_escapes_untrusted_model_content(admin_client):
    admin_client.post(ADD, {"name": "hostile", "version": "1.0.0", "file": onnx_file(hostile_model())})
    model = MLModel.objects.get(name="hostile")
    assert model.status == Status.READY
    assert model.model_metadata["doc_string"] == XSS

    html = admin_client.get(change_url(model)).content.decode()

    assert XSS not in html
    assert "<b>" not in html
    assert html.count(ESCAPED_XSS) >= 4  # doc_string, producer_name, a metadata key and a value


def test_change_page_shows_validation_warnings(admin_client):
    model = make_model("warned", status=Status.READY, validation_warnings=[f"Test run failed: {XSS}"])

    html = admin_client.get(change_url(model)).content.decode()

    assert f"<li>Test run failed: {ESCAPED_XSS}</li>" in html


def test_change_form_edits_description_and_tags_only(admin_client):
    model = register("adder", "1.0.0")
    before = MLModel.objects.get(pk=model.pk)

    response = admin_client.post(
        change_url(model),
        {
            **serving_fields(model),
            "description": "now described",
            "tags": "b, a",
            "status": Status.ARCHIVED,
            "file_sha256": "0" * 64,
            "file_size": "1",
            "name": "renamed",
            "version": "9.9.9",
            "error_code": "forged",
        },
    )

    assert response.status_code == 302
    model.refresh_from_db()
    assert model.description == "now described"
    assert sorted(model.tags.values_list("name", flat=True)) == ["a", "b"]
    assert (model.status, model.file_sha256, model.file_size) == (Status.READY, before.file_sha256, before.file_size)
    assert (model.name, model.version, model.error_code) == ("adder", "1.0.0", "")


def test_change_form_upload_replaces_the_file_and_validates_again(admin_client):
    # A version that has never been ready (its file failed validation) takes a new file.
    model = register("swap", "1.0.0", random_bytes())
    assert model.status == Status.ERROR
    old_sha = model.file_sha256

    response = admin_client.post(
        change_url(model),
        {**serving_fields(model), "description": "", "tags": "", "file": onnx_file(make_iris_model(zipmap=False))},
    )

    assert response.status_code == 302
    model.refresh_from_db()
    assert model.status == Status.READY
    assert model.file_sha256 != old_sha
    assert [spec["name"] for spec in model.input_schema] == ["X"]
    assert "swap 1.0.0 is ready: 1 input, 2 outputs." in messages_of(response)


def test_change_form_refuses_a_corrupt_new_file_on_the_form_and_keeps_the_version(admin_client):
    model = register("swap", "1.0.0", make_add_model())
    MLModel.objects.filter(pk=model.pk).update(status=Status.ERROR, first_ready_at=None, error_code="stale")
    model.refresh_from_db()

    response = admin_client.post(
        change_url(model),
        {**serving_fields(model), "description": "new", "tags": "", "file": onnx_file(random_bytes())},
    )

    assert response.status_code == 200
    assert (
        response.context["adminform"]
        .form.errors["file"][0]
        .startswith("This file cannot be registered (invalid_model): ")
    )
    assert messages_of(response) == []
    before = model.file_sha256
    model.refresh_from_db()
    assert (model.file_sha256, model.description, model.error_code) == (before, "", "stale")


def test_change_form_refuses_a_new_file_for_an_archived_model(admin_client):
    model = register("old", "1.0.0")
    services.model_archive(model=model)

    response = admin_client.post(
        change_url(model), {**serving_fields(model), "description": "", "tags": "", "file": onnx_file(random_bytes())}
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["file"] == [
        "This version is archived; register a new version instead."
    ]
    model.refresh_from_db()
    assert model.status == Status.ARCHIVED


# --- actions and deletion -----------------------------------------------------------------------


def run_action(admin_client, action: str, *models: MLModel):
    return admin_client.post(CHANGELIST, {"action": action, "_selected_action": [str(m.pk) for m in models]})


def test_validate_action_reports_ready_error_and_refused(admin_client):
    good = register("good", "1.0.0")
    bad = register("bad", "1.0.0", random_bytes())
    MLModel.objects.filter(pk=good.pk).update(status=Status.ERROR, error_code="stale", error_message="stale")
    pending = make_model("pending")
    archived = make_model("archived", status=Status.ARCHIVED)

    response = run_action(admin_client, "validate_selected", good, bad, pending, archived)

    assert response.status_code == 302
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.status, good.error_code) == (Status.READY, "")
    assert (bad.status, bad.error_code) == (Status.ERROR, "invalid_model")
    shown = messages_of(response)
    assert shown[0] == "Validation started for 2 (in the background: the list shows each outcome), refused 2."
    assert any(m.startswith("Not validated: pending 1.0.0: pending:1.0.0 has no file yet.") for m in shown)
    assert any(m.startswith("Not validated: archived 1.0.0: archived:1.0.0 is archived") for m in shown)


def test_archive_action_archives_and_reports_refusals(admin_client):
    ready = register("ready", "1.0.0")
    busy = make_model("busy", status=Status.VALIDATING)

    page = run_action(admin_client, "archive_selected", ready, busy)  # the confirmation page first
    assert page.status_code == 200 and MLModel.objects.get(pk=ready.pk).status == Status.READY
    selected = {"action": "archive_selected", "_selected_action": [str(ready.pk), str(busy.pk)], "post": "yes"}
    response = admin_client.post(CHANGELIST, selected)

    assert response.status_code == 302
    ready.refresh_from_db()
    busy.refresh_from_db()
    assert ready.status == Status.ARCHIVED
    assert busy.status == Status.VALIDATING
    shown = messages_of(response)
    assert shown[0] == "Archived 1, refused 1."
    assert shown[1].startswith("Not archived: busy 1.0.0: busy:1.0.0 is being validated")


def test_delete_page_deletes_through_the_service(admin_client, django_capture_on_commit_callbacks):
    model = register("doomed", "1.0.0")
    path = ModelStore().path_for(model.file_sha256)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:registry_mlmodel_delete", args=[model.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not MLModel.objects.filter(pk=model.pk).exists()
    assert not path.exists()


def test_delete_action_keeps_a_file_another_version_shares(admin_client, django_capture_on_commit_callbacks):
    first = register("twin", "1.0.0")
    second = register("twin", "1.0.1")
    path = ModelStore().path_for(first.file_sha256)
    delete = {"action": "delete_selected", "post": "yes"}

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(CHANGELIST, {**delete, "_selected_action": [str(first.pk)]})
    assert path.exists()

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(CHANGELIST, {**delete, "_selected_action": [str(second.pk)]})
    assert not path.exists()
    assert not MLModel.objects.exists()


def test_tag_admin_lists_tags_with_model_counts(admin_client):
    make_model("a", tags=["vision", "prod"])
    make_model("b", tags=["vision"])

    response = admin_client.get(reverse("admin:registry_tag_changelist"))

    assert response.status_code == 200
    assert [(tag.name, tag.model_count) for tag in response.context["cl"].result_list] == [("prod", 1), ("vision", 2)]


def test_change_form_edits_the_batching_settings(admin_client):
    model = register("batched", "1.0.0")
    data = {**serving_fields(model), "description": "", "tags": "", "batching_enabled": "on", "max_batch_size": "8"}
    response = admin_client.post(change_url(model), data)
    assert response.status_code == 302
    model.refresh_from_db()
    assert (model.batching_enabled, model.max_batch_size) == (True, 8)
