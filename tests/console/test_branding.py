"""The admin as ops staff open it: ModelForge's name, "View site" to the API docs, the dashboard
from the index, and Celery's own result tables out of the way."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"
TASK_RESULTS = "/admin/django_celery_results/taskresult/"
GROUP_RESULTS = "/admin/django_celery_results/groupresult/"


def test_the_admin_says_modelforge_and_view_site_opens_the_api_docs(client, ops_user):
    client.force_login(ops_user)
    html = client.get(reverse("admin:index")).content.decode()
    assert "Django administration" not in html and "Django site admin" not in html
    assert ">ModelForge</a>" in html and "<title>Operations | ModelForge</title>" in html
    assert f'href="{reverse("swagger-ui")}">View site</a>' in html
    assert client.get(reverse("swagger-ui")).status_code == 200
    assert f'href="{DASHBOARD}"' in html


def test_celery_results_leave_the_index_and_stay_reachable_by_superusers(client, ops_user, django_user_model):
    client.force_login(ops_user)  # a superuser
    index = client.get(reverse("admin:index")).content.decode()
    assert "Celery Results" not in index and TASK_RESULTS not in index
    assert "Registry" in index  # the rest of the index is still there
    assert client.get(TASK_RESULTS).status_code == 200
    assert client.get(GROUP_RESULTS).status_code == 200

    staff = django_user_model.objects.create_user(username="viewer", password="viewer-password-123", is_staff=True)
    client.force_login(staff)
    assert client.get(TASK_RESULTS).status_code == 403
