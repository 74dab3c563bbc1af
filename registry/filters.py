from __future__ import annotations

import django_filters

from core.datetime_filters import UtcIsoDateTimeFilter
from registry.models import MLModel


class MLModelFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(field_name="name", help_text="Exact model name.")
    status = django_filters.ChoiceFilter(choices=MLModel.Status.choices)
    tag = django_filters.CharFilter(field_name="tags__name", help_text="Models carrying this tag.", distinct=True)
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = MLModel
        fields = ("name", "status", "tag", "created_after", "created_before")
