from django.contrib import admin

from monitoring.models import Thresholds


@admin.register(Thresholds)
class ThresholdsAdmin(admin.ModelAdmin):
    list_display = ("name", "error_rate_amber", "error_rate_red", "p95_amber_ms", "p95_red_ms", "min_requests")
    search_fields = ("name",)
