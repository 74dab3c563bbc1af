"""Jobs in the Django admin: read-only rows the system writes; actions go through jobs.services.

Cancelling (from the job's page or the list's action) first shows what will change: each job's
status -> cancelled and its progress. Only the confirming POST cancels.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.exceptions import DomainError
from jobs import services
from jobs.models import Job

Status = Job.Status

# White text on each colour passes WCAG AA contrast; the label names the status in words.
STATUS_COLOURS = {
    Status.PENDING: "#5f6368",
    Status.QUEUED: "#1d4ed8",
    Status.RUNNING: "#9a3412",
    Status.COMPLETED: "#166534",
    Status.FAILED: "#b91c1c",
    Status.CANCELLED: "#374151",
}


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("short_id", "status_badge", "progress", "model_label", "owner", "priority", "created_at")
    list_filter = ("status", "priority", "input_format")
    list_select_related = ("api_key", "user")
    search_fields = ("id", "model_name", "error_code")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    actions = ("cancel_jobs", "retry_jobs")
    change_form_template = "admin/jobs/job/job_page.html"
    change_list_template = "admin/jobs/job/change_list.html"

    class Media:
        css = {"all": ("console/console.css",)}

    # The change page reloads itself this often while the job is pending, queued or running.
    REFRESH_SECONDS = 2
    fieldsets = (
        (None, {"fields": ("id", "status_badge", "priority", "model_link", "owner")}),
        ("Input", {"fields": ("input_format", "input_filename", "input_size_display", "progress")}),
        ("Run", {"fields": ("attempts", "worker", "celery_task_id", "queue_time_ms", "inference_time_ms")}),
        ("Result", {"fields": ("output_file", "warnings", "error_code", "error_message", "traceback_block")}),
        ("Times", {"fields": ("created_at", "enqueued_at", "started_at", "finished_at")}),
    )
    readonly_fields = (
        "id",
        "status_badge",
        "priority",
        "model_link",
        "owner",
        "input_format",
        "input_filename",
        "input_size_display",
        "progress",
        "attempts",
        "worker",
        "celery_task_id",
        "queue_time_ms",
        "inference_time_ms",
        "output_file",
        "warnings",
        "error_code",
        "error_message",
        "traceback_block",
        "created_at",
        "enqueued_at",
        "started_at",
        "finished_at",
    )

    # Jobs are created through the API and changed by the system only.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_cancel_permission(self, request, obj=None) -> bool:
        """Cancel and retry act on jobs (the rows stay read-only): staff allowed to change jobs."""
        return request.user.has_perm("jobs.change_job")

    # --- the job page: cancel and retry buttons, refreshed while the job is active ----------------

    def get_urls(self):
        own = [
            path("<path:object_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="jobs_job_cancel"),
            path("<path:object_id>/retry/", self.admin_site.admin_view(self.retry_view), name="jobs_job_retry"),
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if job is not None:
            may_act = self.has_cancel_permission(request, job)
            context.update(
                mf_job=job,
                mf_refresh_seconds=self.REFRESH_SECONDS if job.status in Job.ACTIVE else None,
                mf_cancel_url=reverse("admin:jobs_job_cancel", args=[job.pk])
                if may_act and job.status in Job.ACTIVE
                else None,
                # Not for a failure another run would meet again (its input is at fault).
                mf_retry_url=reverse("admin:jobs_job_retry", args=[job.pk]) if may_act and job.is_retryable else None,
            )
        return super().change_view(request, object_id, form_url, extra_context=context)

    def changelist_view(self, request, extra_context=None):
        """The list reloads itself (every REFRESH_SECONDS) while a job it shows is pending, queued
        or running, so their progress and outcome appear without a manual reload."""
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None and any(job.status in Job.ACTIVE for job in changelist.result_list):
            response.context_data["mf_refresh_seconds"] = self.REFRESH_SECONDS
        return response

    def _job_for_action(self, request, object_id) -> Job:
        if request.method != "POST":
            raise PermissionDenied
        job = self.get_object(request, object_id)
        if job is None:
            raise Http404("No job with this id.")
        if not self.has_cancel_permission(request, job):
            raise PermissionDenied
        return job

    def cancel_view(self, request, object_id):
        """GET (or a POST without ``confirm=yes``): what cancelling will change. The confirming
        POST cancels."""
        if request.method not in ("GET", "POST"):
            return HttpResponseNotAllowed(["GET", "POST"])
        job = self.get_object(request, object_id)
        if job is None:
            raise Http404("No job with this id.")
        if not self.has_cancel_permission(request, job):
            raise PermissionDenied
        job_url = reverse("admin:jobs_job_change", args=[job.pk])
        if job.status not in Job.ACTIVE:
            self.message_user(request, f"Not cancelled: the job has already {job.status}.", level=messages.WARNING)
            return HttpResponseRedirect(job_url)
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            try:
                services.job_cancel(job=job)
            except DomainError as exc:  # it finished between the page and the click
                self.message_user(request, f"Not cancelled: {exc.detail}", level=messages.WARNING)
            else:
                self.message_user(request, f"Job {str(job.pk)[:8]} is cancelled.")
            return HttpResponseRedirect(job_url)
        return self._cancel_confirmation(
            request, [job], form_action=request.path, hidden=[("confirm", "yes")], back_url=job_url
        )

    def _cancel_confirmation(self, request, jobs: list[Job], *, form_action, hidden, back_url, skipped=0):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Cancel job?" if len(jobs) == 1 else f"Cancel {len(jobs)} jobs?",
            "rows": [(job, self.status_badge(job), self.progress(job)) for job in jobs],
            "cancelled_badge": self.status_badge(Job(status=Status.CANCELLED)),
            "skipped": skipped,
            "form_action": form_action,
            "hidden": hidden,
            "back_url": back_url,
        }
        return TemplateResponse(request, "admin/jobs/job/cancel_confirmation.html", context)

    def retry_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = self._job_for_action(request, object_id)
        try:
            copy = services.job_resubmit(job=job)
        except DomainError as exc:
            self.message_user(request, f"Not retried: {exc.detail}", level=messages.WARNING)
            return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))
        self.message_user(request, f"Queued job {str(copy.pk)[:8]}, a new run of job {str(job.pk)[:8]}.")
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[copy.pk]))

    def delete_model(self, request, obj: Job) -> None:
        self._delete(request, [obj])

    def delete_queryset(self, request, queryset) -> None:
        self._delete(request, list(queryset))

    def _delete(self, request, jobs: list[Job]) -> None:
        refused = 0
        for job in jobs:
            try:
                services.job_delete(job=job)
            except DomainError:
                refused += 1
        if refused:
            self.message_user(
                request, f"{refused} job(s) not finished were kept: cancel them first.", level=messages.WARNING
            )

    @admin.display(description="id", ordering="id")
    def short_id(self, job: Job) -> str:
        return str(job.pk)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, job: Job) -> SafeString:
        return format_html(
            '<span style="display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;'
            'background:{};font-weight:600;white-space:nowrap" class="mf-status mf-status-{}">{}</span>',
            STATUS_COLOURS.get(job.status, "#5f6368"),
            job.status,
            job.get_status_display(),
        )

    @admin.display(description="progress")
    def progress(self, job: Job) -> SafeString:
        """A bar with the numbers beside it in words (the bar alone says nothing to a screen reader
        that the label does not)."""
        if not job.progress_total:
            return format_html("{}", "—")
        percent = 100 * job.progress_done / job.progress_total
        text = f"{job.progress_done:,} / {job.progress_total:,} ({percent:.0f}%)"
        return format_html(
            '<span class="mf-progress"><progress max="{}" value="{}" aria-label="{} rows done">{}</progress>'
            "<span>{}</span></span>",
            job.progress_total,
            job.progress_done,
            text,
            text,
            text,
        )

    @admin.display(description="model", ordering="model_name")
    def model_label(self, job: Job) -> str:
        return f"{job.model_name}:{job.model_version}"

    @admin.display(description="model")
    def model_link(self, job: Job) -> SafeString:
        """name:version, linked to the version's page while it exists (a job outlives it)."""
        if job.model_id is None:
            return format_html("{} (deleted)", self.model_label(job))
        url = reverse("admin:registry_mlmodel_change", args=[job.model_id])
        return format_html('<a href="{}">{}</a>', url, self.model_label(job))

    @admin.display(description="input size")
    def input_size_display(self, job: Job) -> str:
        return "—" if job.input_size is None else filesizeformat(job.input_size)

    @admin.display(description="owner")
    def owner(self, job: Job) -> str:
        return job.owner_label or "—"

    @admin.display(description="traceback")
    def traceback_block(self, job: Job) -> SafeString:
        if not job.traceback:
            return format_html("{}", "—")
        return format_html('<pre style="white-space:pre-wrap;max-height:30em;overflow:auto">{}</pre>', job.traceback)

    @admin.action(description="Cancel selected jobs…", permissions=["cancel"])
    def cancel_jobs(self, request, queryset):
        """First a page saying what will change; the confirming POST (``post=yes``) cancels."""
        if request.POST.get("post") != "yes":
            selected = list(queryset.select_related("api_key", "user"))
            active = [job for job in selected if job.status in Job.ACTIVE]
            if not active:
                self.message_user(request, "None of the selected jobs is active; nothing to cancel.", messages.WARNING)
                return None
            hidden = [("action", "cancel_jobs"), ("post", "yes")]
            hidden += [(helpers.ACTION_CHECKBOX_NAME, job.pk) for job in active]
            changelist = reverse("admin:jobs_job_changelist")
            return self._cancel_confirmation(
                request,
                active,
                form_action=changelist,
                hidden=hidden,
                back_url=changelist,
                skipped=len(selected) - len(active),
            )
        cancelled = skipped = 0
        for job in queryset:
            if job.status not in Job.ACTIVE:
                skipped += 1
                continue
            try:
                services.job_cancel(job=job)
                cancelled += 1
            except DomainError:
                skipped += 1
        self.message_user(request, f"Cancelled {cancelled} job(s); {skipped} had already finished.")

    @admin.action(description="Retry selected jobs (as new jobs)", permissions=["cancel"])
    def retry_jobs(self, request, queryset) -> None:
        created, problems = 0, []
        for job in queryset:
            if job.status == Status.FAILED and not job.is_retryable:
                problems.append(f"{str(job.pk)[:8]}: not retried, it failed on its input ({job.error_code}).")
                continue
            try:
                services.job_resubmit(job=job)
                created += 1
            except DomainError as exc:
                problems.append(f"{str(job.pk)[:8]}: {exc.detail}")
        if created:
            self.message_user(request, f"Queued {created} new job(s).")
        for problem in problems:
            self.message_user(request, problem, level=messages.WARNING)
