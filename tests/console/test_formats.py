"""One timestamp format in the admin (with seconds and the time zone) and sizes in units, on the
pages ops staff read most: the model list and page, jobs, keys, predictions and alias events."""

from __future__ import annotations

import io
import re
from datetime import datetime

import pytest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone

from access.models import APIKey
from inference.history import history
from inference.models import Prediction
from jobs import services as job_services
from registry import services
from registry.models import AliasEvent
from tests.jobs.factories import iris_rows, jsonl_bytes, uploaded_input
from tests.registry.onnx_factories import make_iris_model

pytestmark = pytest.mark.django_db

# Django's English formats, which the admin showed before: "Dec. 6, 2026, 7:32 p.m.", "noon".
DJANGO_DEFAULTS = re.compile(r"\b(a\.m\.|p\.m\.|noon|midnight)|\b(Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\. \d")


def shown(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


def test_the_admins_pages_show_one_timestamp_format_and_sizes_in_units(admin_client, ops_user, make_key):
    staged = services.stage_stream(io.BytesIO(make_iris_model(zipmap=False)))
    model = services.model_register(name="iris", version="1.0.0", staged=staged, actor=ops_user)
    services.alias_set(name="iris", alias="production", version="1.0.0", actor=ops_user)
    api_key, raw = make_key("read", "predict", name="reporting")
    admin_client.get("/api/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}")  # its last use
    job = job_services.job_create(model=model, input_file=uploaded_input(jsonl_bytes(iris_rows(3))), api_key=api_key)
    Prediction.objects.all().delete()
    admin_client.post(
        reverse("admin:registry_mlmodel_try", args=[model.pk]), {"input_data": '{"X": [[5.1, 3.5, 1.4, 0.2]]}'}
    )
    history.flush()
    model.refresh_from_db()
    api_key.refresh_from_db()
    event = AliasEvent.objects.get()
    prediction = Prediction.objects.get()

    pages = {
        reverse("admin:registry_mlmodel_changelist"): [shown(model.created_at)],
        reverse("admin:registry_mlmodel_change", args=[model.pk]): [
            shown(model.uploaded_at),
            shown(event.created_at),
            filesizeformat(model.file_size),  # the timeline's upload
        ],
        reverse("admin:jobs_job_changelist"): [shown(job.created_at)],
        reverse("admin:jobs_job_change", args=[job.pk]): [shown(job.created_at), filesizeformat(job.input_size)],
        reverse("admin:access_apikey_changelist"): [shown(api_key.created), shown(api_key.last_used_at)],
        reverse("admin:inference_prediction_changelist"): [shown(prediction.created_at)],
        reverse("admin:registry_aliasevent_changelist"): [shown(event.created_at)],
    }
    for url, expected in pages.items():
        html = admin_client.get(url).content.decode().replace("\xa0", " ")
        for text in expected:
            assert text.replace("\xa0", " ") in html, (url, text)
        assert not DJANGO_DEFAULTS.search(html), (url, DJANGO_DEFAULTS.search(html).group(0))
        assert not re.search(r"\d{4,}(,\d{3})* bytes", html), url  # 12,345 bytes: a size not in units
    assert APIKey.objects.count() == 1
