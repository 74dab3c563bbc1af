"""Per-model ONNX Runtime settings and warm-up, set through the API (PATCH, scope manage) and the
admin: validated alike (400 with a code and a message naming what is allowed), audited, and
applied without a restart (the sessions are built again with them)."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime
import pytest
from django.urls import reverse

from inference.sessions import get_pool
from registry.models import MLModel, SettingsEvent
from tests.inference.factories import make_scaled_model
from tests.inference.memory_models import make_constant_of_shape_model
from tests.registry.test_admin import serving_fields

pytestmark = pytest.mark.django_db

ROW = {"input_data": {"X": [[1.0, 2.0, 3.0]]}, "skip_cache": True}


@pytest.fixture
def scaled(ready_model):
    return ready_model(make_scaled_model(2.0), name="scaled")


def patch(client, model: dict, body: dict):
    return client.patch(f"/api/v1/models/{model['id']}", body, format="json")


def predict(client, model: dict):
    response = client.post(f"/api/v1/models/{model['id']}/predict", ROW, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["output_data"]["Y"] == [[2.0, 4.0, 6.0]]
    return response


def pool_entries(model: dict) -> list[dict]:
    sha256 = MLModel.objects.get(pk=model["id"]).file_sha256
    return [entry for entry in get_pool().stats()["entries"] if entry["sha256"] == sha256]


# --- the API -------------------------------------------------------------------------------------


def test_runtime_settings_round_trip_and_empty_means_the_servers_defaults(scaled, manage_client):
    assert scaled["runtime"] == {
        "graph_optimization_level": "",
        "intra_op_threads": None,
        "inter_op_threads": None,
        "execution_mode": "",
        "enable_cpu_mem_arena": None,
        "execution_providers": [],
        "sessions_per_process": 1,
    }
    assert scaled["warmup"] == {"count": 1, "data": "zero", "sample": None}
    body = {
        "runtime": {
            "graph_optimization_level": "extended",
            "intra_op_threads": 2,
            "execution_mode": "parallel",
            "enable_cpu_mem_arena": False,
            "execution_providers": ["CPUExecutionProvider"],
            "sessions_per_process": 2,
        },
        "warmup": {"count": 3, "data": "sample", "sample": {"X": [[0.5, 1.0, 1.5]]}},
    }
    response = patch(manage_client, scaled, body)
    assert response.status_code == 200, response.json()
    assert response.json()["runtime"] == {**body["runtime"], "inter_op_threads": None}
    assert response.json()["warmup"] == body["warmup"]
    # Back to the defaults.
    response = patch(manage_client, scaled, {"runtime": {"graph_optimization_level": "", "intra_op_threads": None}})
    assert response.json()["runtime"]["graph_optimization_level"] == ""
    assert response.json()["runtime"]["intra_op_threads"] is None


BAD_SETTINGS = [
    (
        {"runtime": {"execution_providers": ["CUDAExecutionProvider"]}},
        "unknown_execution_provider",
        "CPUExecutionProvider",
    ),
    ({"runtime": {"execution_providers": "CPUExecutionProvider"}}, "not_a_list", "list"),
    ({"runtime": {"intra_op_threads": -1}}, "invalid_thread_count", "0-64"),
    ({"runtime": {"inter_op_threads": 100000}}, "invalid_thread_count", "0-64"),
    (
        {"runtime": {"graph_optimization_level": "turbo"}},
        "invalid_optimization_level",
        "disabled, basic, extended, all",
    ),
    ({"runtime": {"execution_mode": "async"}}, "invalid_execution_mode", "sequential, parallel"),
    ({"runtime": {"sessions_per_process": 0}}, "invalid_sessions_per_process", "1-8"),
    ({"runtime": {"sessions_per_process": 9}}, "invalid_sessions_per_process", "1-8"),
    ({"runtime": {"fast": True}}, "read_only_field", "intra_op_threads"),
    ({"warmup": {"count": 101}}, "invalid_warmup_count", "0-100"),
    ({"warmup": {"data": "ones"}}, "invalid_warmup_data", "zero, random, sample"),
    ({"warmup": {"data": "sample"}}, "missing_warmup_sample", "input_data"),
    ({"warmup": {"data": "sample", "sample": {"X": [[1.0, 2.0]]}}}, "invalid_shape", "warm-up sample"),
    ({"warmup": {"data": "sample", "sample": {"Z": [[1.0, 2.0, 3.0]]}}}, "unknown_input", "warm-up sample"),
]


@pytest.mark.parametrize(
    ("body", "code", "named"), BAD_SETTINGS, ids=[case[1] + str(i) for i, case in enumerate(BAD_SETTINGS)]
)
def test_bad_settings_are_400_with_a_code_naming_the_allowed_values(scaled, manage_client, body, code, named):
    response = patch(manage_client, scaled, body)
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code
    assert named in response.json()["detail"]
    model = MLModel.objects.get(pk=scaled["id"])
    assert (model.ort_execution_providers, model.ort_intra_op_threads, model.warmup_count) == ([], None, 1)
    assert not SettingsEvent.objects.exists()


def test_unknown_provider_names_the_installed_ones(scaled, manage_client):
    response = patch(manage_client, scaled, {"runtime": {"execution_providers": ["NoSuchExecutionProvider"]}})
    for offered in onnxruntime.get_available_providers():
        assert offered in response.json()["detail"]


def test_settings_need_the_manage_scope(scaled, client_for):
    response = patch(client_for("read", "predict"), scaled, {"runtime": {"intra_op_threads": 2}})
    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"


def test_changes_are_audited_with_who_and_from_what(scaled, manage_client):
    patch(manage_client, scaled, {"runtime": {"intra_op_threads": 2, "sessions_per_process": 1}})
    (event,) = SettingsEvent.objects.all()
    # sessions_per_process was 1 already: only what changed is recorded.
    assert event.changes == {"ort_intra_op_threads": [None, 2]}
    assert (event.name, event.version, event.model_id) == ("scaled", "1.0.0", MLModel.objects.get().pk)
    assert event.actor_label.startswith("key:") and event.actor_key_id is not None
    patch(manage_client, scaled, {"runtime": {"intra_op_threads": 2}})
    assert SettingsEvent.objects.count() == 1  # nothing changed, nothing recorded


# --- applied without a restart ---------------------------------------------------------------------


def test_a_change_rebuilds_the_sessions_with_the_new_settings(scaled, manage_client, predict_client):
    predict(predict_client, scaled)
    (before,) = pool_entries(scaled)
    assert before["runtime"]["intra_op_threads"] == 1 and before["sessions"] == 1
    assert before["runtime"]["graph_optimization_level"] == "all"

    body = {"runtime": {"intra_op_threads": 2, "graph_optimization_level": "basic", "sessions_per_process": 3}}
    assert patch(manage_client, scaled, body).status_code == 200
    predict(predict_client, scaled)
    (after,) = pool_entries(scaled)  # the old sessions were swept
    assert after["runtime"]["intra_op_threads"] == 2
    assert after["runtime"]["graph_optimization_level"] == "basic"
    assert after["sessions"] == 3
    assert after["loaded_at"] >= before["loaded_at"]


def test_requests_spread_over_the_sessions_of_a_model(scaled, manage_client, predict_client):
    patch(manage_client, scaled, {"runtime": {"sessions_per_process": 3}})
    entry = get_pool().get(MLModel.objects.get(pk=scaled["id"]))
    sessions = [entry.session, *entry.replicas]
    assert len({id(session) for session in sessions}) == 3
    used = []
    for session in sessions:  # each one answers: what a request gets from any of them is the same
        used.append(session.run(None, {"X": np.array([[1.0, 2.0, 3.0]], np.float32)})[0].tolist())
    assert used == [[[2.0, 4.0, 6.0]]] * 3
    for _ in range(6):
        predict(predict_client, scaled)


def test_an_extra_provider_is_used_before_cpu(scaled, manage_client, predict_client):
    others = [name for name in onnxruntime.get_available_providers() if name != "CPUExecutionProvider"]
    if not others:
        pytest.skip("this onnxruntime offers only the CPU provider")
    response = patch(manage_client, scaled, {"runtime": {"execution_providers": others[:1]}})
    assert response.status_code == 200, response.json()
    predict(predict_client, scaled)
    (entry,) = pool_entries(scaled)
    assert entry["runtime"]["execution_providers"] == [others[0], "CPUExecutionProvider"]


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_an_isolated_model_gets_its_settings_in_its_children(ready_model, manage_client, predict_client):
    model = ready_model(make_constant_of_shape_model(), name="filler")
    assert model["value_dependent_memory"] is True

    def load() -> list:
        response = predict_client.post(
            f"/api/v1/models/{model['id']}/predict",
            {"input_data": {"shape": [2, 3]}, "skip_cache": True},
            format="json",
        )
        assert response.status_code == 200, response.json()
        entry = get_pool().get(MLModel.objects.get(pk=model["id"]))
        return [entry.isolated, *entry.replicas]

    (one,) = load()
    baseline = threads_of(one.pid)
    patch(manage_client, model, {"runtime": {"sessions_per_process": 2, "intra_op_threads": 4}})
    children = load()
    assert len({child.pid for child in children}) == 2 and one.pid not in {child.pid for child in children}
    # ONNX Runtime's intra-op pool of 4 is the calling thread and 3 more, in each child.
    assert [threads_of(child.pid) - baseline for child in children] == [3, 3]


# --- the admin -------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


def change(admin_client, scaled, **fields):
    model = MLModel.objects.get(pk=scaled["id"])
    data = {**serving_fields(model), "description": "", "tags": "", **fields}
    return admin_client.post(reverse("admin:registry_mlmodel_change", args=[model.pk]), data)


def test_admin_sets_runtime_settings_through_the_service_and_audits_them(scaled, admin_client, ops_user):
    response = change(admin_client, scaled, ort_intra_op_threads="2", warmup_count="2", warmup_data="random")
    assert response.status_code == 302
    model = MLModel.objects.get(pk=scaled["id"])
    assert (model.ort_intra_op_threads, model.warmup_count, model.warmup_data) == (2, 2, "random")
    (event,) = SettingsEvent.objects.all()
    assert event.changes == {
        "ort_intra_op_threads": [None, 2],
        "warmup_count": [1, 2],
        "warmup_data": ["zero", "random"],
    }
    assert (event.actor_label, event.actor_user_id) == (ops_user.get_username(), ops_user.pk)
    trail = admin_client.get(reverse("admin:registry_settingsevent_change", args=[event.pk]))
    assert trail.status_code == 200 and "ort_intra_op_threads" in trail.content.decode()


ADMIN_BAD = [
    ({"ort_execution_providers": '["CUDAExecutionProvider"]'}, "ort_execution_providers", "CPUExecutionProvider"),
    ({"ort_intra_op_threads": "500"}, "ort_intra_op_threads", "0-64"),
    ({"ort_graph_optimization_level": "turbo"}, "ort_graph_optimization_level", "disabled, basic, extended, all"),
    ({"sessions_per_process": "0"}, "sessions_per_process", "1-8"),
    ({"sessions_per_process": "9"}, "sessions_per_process", "1-8"),
    ({"warmup_data": "sample", "warmup_sample": '{"X": [[1]]}'}, "warmup_sample", "warm-up sample"),
]


@pytest.mark.parametrize(("fields", "field", "named"), ADMIN_BAD, ids=[case[1] for case in ADMIN_BAD])
def test_admin_refuses_bad_settings_naming_the_allowed_values(scaled, admin_client, fields, field, named):
    response = change(admin_client, scaled, **fields)
    assert response.status_code == 200  # the form again, with the error
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert named in " ".join(errors[field])
    assert not SettingsEvent.objects.exists()
