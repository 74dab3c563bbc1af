"""Health thresholds per model name, edited by ops (the dashboard links here).

An empty field takes the deployment's default (settings.MONITOR_*), shown beside each field and
in the list. The form refuses thresholds that cannot mean anything: rates outside 0..1 (the
fields' validators) and an amber threshold above its red one, comparing what will be in effect
(a field left empty against the default of the other).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin

from monitoring.models import Thresholds, defaults

# (amber field, red field, what they measure in words)
PAIRS = (
    ("error_rate_amber", "error_rate_red", "server-error rate"),
    ("p95_amber_ms", "p95_red_ms", "p95 latency"),
)


def _shown(field: str, value: float) -> str:
    return f"{value:.1%}" if field.startswith("error_rate") else f"{value:,.0f} ms"


class ThresholdsForm(forms.ModelForm):
    class Meta:
        model = Thresholds
        fields = ("name", "error_rate_amber", "error_rate_red", "p95_amber_ms", "p95_red_ms", "min_requests")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field, default in defaults().items():
            if field in self.fields:
                shown = _shown(field, default) if field != "min_requests" else f"{default:g}"
                self.fields[field].help_text += f" Default: {shown}."

    def clean(self):
        cleaned = super().clean()
        fallback = defaults()
        for amber_field, red_field, words in PAIRS:
            if amber_field in self.errors or red_field in self.errors:
                continue  # already refused (not a number, out of range)
            amber = cleaned.get(amber_field)
            red = cleaned.get(red_field)
            amber_in_effect = fallback[amber_field] if amber is None else amber
            red_in_effect = fallback[red_field] if red is None else red
            if amber_in_effect > red_in_effect:
                message = (
                    f"The amber {words} ({_shown(amber_field, amber_in_effect)}"
                    f"{'' if amber is not None else ', the default'}) is above the red one "
                    f"({_shown(red_field, red_in_effect)}{'' if red is not None else ', the default'}): "
                    "amber must be at most red."
                )
                self.add_error(amber_field if amber is not None else red_field, message)
        return cleaned


@admin.register(Thresholds)
class ThresholdsAdmin(admin.ModelAdmin):
    form = ThresholdsForm
    list_display = ("name", "server_error_rate", "p95", "minimum_requests", "updated_at")
    search_fields = ("name",)
    readonly_fields = ("updated_at",)

    @admin.display(description="Server-error rate amber / red")
    def server_error_rate(self, obj: Thresholds) -> str:
        return self._pair(obj, "error_rate_amber", "error_rate_red")

    @admin.display(description="p95 amber / red")
    def p95(self, obj: Thresholds) -> str:
        return self._pair(obj, "p95_amber_ms", "p95_red_ms")

    @admin.display(description="Minimum requests")
    def minimum_requests(self, obj: Thresholds) -> str:
        value = obj.effective()["min_requests"]
        return f"{value:g}" + ("" if obj.min_requests is not None else " (default)")

    @staticmethod
    def _pair(obj: Thresholds, amber_field: str, red_field: str) -> str:
        effective = obj.effective()
        return " / ".join(
            _shown(field, effective[field]) + ("" if getattr(obj, field) is not None else " (default)")
            for field in (amber_field, red_field)
        )
