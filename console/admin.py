"""The ops console's part of the registry admin: registered in place of the registry's own model
and alias admins (console comes after registry in INSTALLED_APPS, so this runs second).

Subclasses of registry.admin's classes, which stay clients of the registry's services; what
is added here reads or drives the inference app too: the page of each model name
(console.name_page), the model page (console.model_page) and the confirmation pages
(console.confirm) that show, before an archive, a delete or an alias move is applied, what it
touches and the traffic it carries.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.urls import reverse

from console import confirm
from console.model_page import ModelPageMixin
from console.name_page import NamePageMixin
from console.rollout_panel import RolloutPanelMixin
from registry import admin as registry_admin
from registry.models import DEFAULT_ALIAS, MLModel, ModelAlias


class MLModelConsoleAdmin(NamePageMixin, ModelPageMixin, registry_admin.MLModelAdmin):
    # --- deleting: Django's confirmation pages, with what the delete takes away ---------------

    def get_deleted_objects(self, objs, request):
        return confirm.version_deleted_objects(self, objs, request)

    def render_delete_form(self, request, context):
        context.update(confirm.delete_context([context["object"]]))
        return super().render_delete_form(request, context)

    @admin.action(description="Delete selected models", permissions=["delete"])
    def delete_selected(self, request, queryset):
        response = django_delete_selected(self, request, queryset)
        if response is not None:  # the confirmation page (a lazy TemplateResponse)
            response.context_data.update(confirm.delete_context(list(queryset)))
        return response

    @admin.action(description="Archive selected models", permissions=["change"])
    def archive_selected(self, request, queryset):
        """A page listing the versions, their aliases and traffic first; archives on its Confirm."""
        if not confirm.confirmed(request):
            return confirm.archive_page(
                self,
                request,
                list(queryset),
                hidden=confirm.posted_fields(request),
                cancel_url=request.get_full_path(),
            )
        return super().archive_selected(request, queryset)


class ModelAliasConsoleAdmin(RolloutPanelMixin, registry_admin.ModelAliasAdmin):
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "POST" and not confirm.confirmed(request):
            page = self._confirmation(request, object_id)
            if page is not None:
                return page
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _confirmation(self, request, object_id):
        """The page before a valid form moves an alias (or creates the default alias, which
        takes the requests without a version): from -> to and the traffic the alias's version
        carries. None when the form has errors (the form page shows them), changes nothing, or
        the user may not make it (Django's view answers that)."""
        obj = self.get_object(request, object_id) if object_id else None
        if object_id and (obj is None or not self.has_change_permission(request, obj)):
            return None
        if not object_id and not self.has_add_permission(request):
            return None
        current_id = obj.model_id if obj is not None else None
        # Validating a ModelForm writes the values into its instance; obj is not saved here.
        form = self.get_form(request, obj, change=obj is not None)(request.POST, request.FILES, instance=obj)
        if not form.is_valid():
            return None
        target = form.cleaned_data["model"]
        if target.pk == current_id:
            return None
        name = obj.name if obj is not None else target.name
        alias = obj.alias if obj is not None else form.cleaned_data["alias"]
        if obj is None and alias != DEFAULT_ALIAS:
            return None  # a new alias other than the default takes no traffic from anything
        cancel = (
            reverse("admin:registry_modelalias_change", args=[obj.pk])
            if obj is not None
            else reverse("admin:registry_modelalias_changelist")
        )
        return confirm.alias_page(
            self,
            request,
            name=name,
            alias=alias,
            target=target,
            hidden=confirm.posted_fields(request),
            cancel_url=cancel,
        )

    def render_delete_form(self, request, context):
        context.update(confirm.alias_delete_context([context["object"]]))
        return super().render_delete_form(request, context)

    @admin.action(description="Delete selected aliases", permissions=["delete"])
    def delete_selected(self, request, queryset):
        response = django_delete_selected(self, request, queryset)
        if response is not None:  # the confirmation page (a lazy TemplateResponse)
            response.context_data.update(confirm.alias_delete_context(list(queryset.select_related("model"))))
        return response


admin.site.unregister(MLModel)
admin.site.register(MLModel, MLModelConsoleAdmin)
admin.site.unregister(ModelAlias)
admin.site.register(ModelAlias, ModelAliasConsoleAdmin)
