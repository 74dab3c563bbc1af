from __future__ import annotations

import django_filters

from jobs.models import Job


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Job.Status.choices)
    priority = django_filters.ChoiceFilter(choices=Job.Priority.choices)
    model = django_filters.UUIDFilter(field_name="model_id", help_text="Jobs of this model version (its id).")

    class Meta:
        model = Job
        fields = ("status", "priority", "model")
