"""The query parameters of the API's lists (models, jobs, a model's predictions), checked.

django-filter drops parameters a list does not know, and DRF's OrderingFilter drops an ordering
it does not offer: ``?created_after=yesterday`` on a list without that filter, or
``?ordering=bogus``, answered every row as if nothing had been asked. Here a list answers 400
instead, with a detail naming the parameter and the form it takes:

``invalid_filter``     a parameter the list takes, with a value it cannot use: not an ISO 8601
                       date-time, not one of the choices, not a UUID, an ordering field the
                       list does not offer, a page that is not a whole number from 1 (rendered
                       as any validation error, so ``errors`` names the parameter too)
``unknown_parameter``  a parameter the list does not take (the detail lists those it does)

An empty value still means "no filter", as django-filter has it. Only lists are checked this
way: a detail route's own parameters (``?wait=``, ``?format=``) are its own business.
"""

from __future__ import annotations

from django_filters import filters as django_filters
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.filters import OrderingFilter, SearchFilter
from rest_framework.pagination import PageNumberPagination
from rest_framework.settings import api_settings

from core.exceptions import DomainError

DATE_TIME_FORM = "an ISO 8601 date-time such as 2026-01-01T00:00:00Z"


class UnknownParameter(DomainError):
    code = "unknown_parameter"


def invalid_filter(parameter: str, message: str) -> ValidationError:
    return ValidationError({parameter: [ErrorDetail(message, code="invalid_filter")]})


def _expected_form(query_filter) -> str:
    if "choices" in query_filter.extra:  # ChoiceFilter, TypedChoiceFilter
        return "one of " + ", ".join(str(value) for value, _ in query_filter.extra["choices"])
    if isinstance(query_filter, django_filters.UUIDFilter):
        return "a UUID (32 hexadecimal digits, dashes allowed)"
    if isinstance(query_filter, django_filters.IsoDateTimeFilter):
        return DATE_TIME_FORM
    if isinstance(query_filter, django_filters.BooleanFilter):
        return "true or false"
    return "a " + query_filter.__class__.__name__.removesuffix("Filter").lower() + " value"


def _is_list(view) -> bool:
    # Viewsets name their action; a plain ListAPIView has none and is a list.
    return getattr(view, "action", "list") == "list"


def _accepted_parameters(view, queryset) -> set[str]:
    accepted: set[str] = set()
    for backend_class in getattr(view, "filter_backends", ()):
        backend = backend_class()
        if isinstance(backend, DjangoFilterBackend):
            filterset_class = backend.get_filterset_class(view, queryset)
            if filterset_class is not None:
                accepted.update(filterset_class.base_filters)
        elif isinstance(backend, SearchFilter):
            accepted.add(backend.search_param)
        elif isinstance(backend, OrderingFilter):
            accepted.add(backend.ordering_param)
    paginator = getattr(view, "paginator", None)
    for name in ("page_query_param", "page_size_query_param"):
        if getattr(paginator, name, None):
            accepted.add(getattr(paginator, name))
    # DRF's ?format= (a renderer; on the job routes, which turn that off, a file format) is no
    # filter but never an unknown parameter either.
    if api_settings.URL_FORMAT_OVERRIDE:
        accepted.add(api_settings.URL_FORMAT_OVERRIDE)
    return accepted


class StrictFilterBackend(DjangoFilterBackend):
    """django-filter's backend, refusing what it would ignore on a list (see the module doc)."""

    def filter_queryset(self, request, queryset, view):
        if not _is_list(view):
            return super().filter_queryset(request, queryset, view)
        accepted = _accepted_parameters(view, queryset)
        unknown = sorted(set(request.query_params) - accepted)
        if unknown:
            raise UnknownParameter(
                f"This list takes no parameter {', '.join(map(repr, unknown))}. "
                f"It takes: {', '.join(sorted(accepted))}."
            )
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            name, messages = next(iter(filterset.errors.items()))
            raise invalid_filter(
                name,
                f"{' '.join(messages)} Expected {_expected_form(filterset.filters[name])}; "
                f"got {request.query_params.get(name)!r}.",
            )
        return filterset.qs


class StrictOrderingFilter(OrderingFilter):
    """DRF's ordering, refusing a field it does not offer instead of ignoring it."""

    def get_ordering(self, request, queryset, view):
        raw = request.query_params.get(self.ordering_param)
        if raw:
            offered = {name for name, _ in self.get_valid_fields(queryset, view, {"request": request})}
            terms = [term.strip() for term in raw.split(",")]
            bad = [term for term in terms if term.removeprefix("-") not in offered]
            if bad:
                raise invalid_filter(
                    self.ordering_param,
                    f"Cannot order by {', '.join(map(repr, bad))}. Expected comma-separated fields among "
                    f"{', '.join(sorted(offered))}, each optionally prefixed with - for descending.",
                )
        return super().get_ordering(request, queryset, view)


class StrictPageNumberPagination(PageNumberPagination):
    """A page that is not a whole number from 1 is the client's mistake (400), not a missing page."""

    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param)
        malformed = raw is not None and not (raw.isascii() and raw.isdigit() and int(raw) >= 1)
        if malformed and raw not in self.last_page_strings:
            raise invalid_filter(self.page_query_param, f"Expected a whole number from 1; got {raw!r}.")
        return super().get_page_number(request, paginator)
