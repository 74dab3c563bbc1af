"""An ISO 8601 date-time query filter whose value reaches the database in UTC.

Python accepts UTC offsets up to ±23:59, PostgreSQL only up to ±15:59: a query such as
``?created_after=2026-01-01T00:00:00-19:37`` would otherwise fail in the database (a 500).
Converted to UTC first, every offset Python accepts is a plain instant; one that leaves
datetime's range (year 1 minus an offset) is a 400 naming the parameter.
"""

from __future__ import annotations

from datetime import UTC

from django.core.exceptions import ValidationError
from django_filters import IsoDateTimeFilter
from django_filters.fields import IsoDateTimeField


class UtcIsoDateTimeField(IsoDateTimeField):
    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return value
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValidationError("Enter a date-time between years 1 and 9999 (in UTC).", code="invalid") from None


class UtcIsoDateTimeFilter(IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("help_text", "An ISO 8601 date-time, e.g. 2026-01-01T00:00:00Z.")
        super().__init__(*args, **kwargs)
