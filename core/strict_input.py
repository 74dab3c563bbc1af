"""Input serializers that refuse fields they do not accept.

DRF silently drops unknown and read-only fields; a client that PATCHes `status` would believe
it worked. Here such a request is a 400 naming the field instead.
"""

from __future__ import annotations

from rest_framework import serializers


class StrictInputSerializer(serializers.Serializer):
    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unexpected = sorted(set(data.keys()) - writable)
            if unexpected:
                raise serializers.ValidationError(
                    {
                        name: [
                            serializers.ErrorDetail(
                                f"'{name}' cannot be set here. Accepted fields: {', '.join(sorted(writable))}.",
                                code="read_only_field",
                            )
                        ]
                        for name in unexpected
                    }
                )
        return super().to_internal_value(data)


UNAUTHENTICATED = "No API key or an invalid, revoked or expired one."


def error_responses(described: dict[int, str], *statuses: int) -> dict:
    """OpenAPI responses for these error statuses, each with the view's own description."""
    from drf_spectacular.utils import OpenApiResponse

    return {code: OpenApiResponse(ErrorSerializer, description=described[code]) for code in statuses}


class ErrorSerializer(serializers.Serializer):
    """The body of every error response."""

    code = serializers.CharField(help_text="Machine-readable error code, e.g. `duplicate_version`.")
    detail = serializers.CharField(help_text="What went wrong and what to do about it.")
    errors = serializers.DictField(required=False, help_text="Per-field messages for invalid input.")
