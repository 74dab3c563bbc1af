from __future__ import annotations

import django_filters

from core.datetime_filters import UtcIsoDateTimeFilter
from jobs.models import Job


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Job.Status.choices)
    priority = django_filters.ChoiceFilter(choices=Job.Priority.choices)
    model = django_filters.UUIDFilter(field_name="model_id", help_text="Jobs of this model version (its id).")
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Job
        fields = ("status", "priority", "model", "created_after", "created_before")
