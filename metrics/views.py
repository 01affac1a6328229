"""The staff metrics dashboard (/admin/metrics/): the same selectors as the API, with
charts rendered as SVG on the server."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from metrics import charts
from metrics.forms import PeriodForm
from metrics.selectors import (
    BREAKDOWNS,
    metrics_cohorts,
    metrics_funnel,
    metrics_readiness,
    metrics_summary,
    workflow_keys,
)
from metrics.services import unit_cost_get


def dashboard(request: HttpRequest) -> HttpResponse:
    from django.contrib import admin

    # Staff roles (staff/roles.py): Operations, Risk, Auditor and Administrator read the
    # figures; an Agent's work is the queue.
    if not request.user.has_perm("metrics.view_casefact"):
        raise PermissionDenied
    form = PeriodForm(request.GET)
    context = {
        **admin.site.each_context(request),
        "title": "Metrics",
        "form": form,
        "workflows": workflow_keys(),
        "breakdowns": list(BREAKDOWNS),
    }
    if not form.is_valid():
        return TemplateResponse(request, "admin/metrics/dashboard.html", context, status=400)
    scope = form.scope()
    by = form.cleaned_data["by"] or "channel"
    costs = unit_cost_get()
    summary = metrics_summary(scope=scope, by=by, costs=costs)
    funnel = metrics_funnel(scope=scope)
    cohorts = metrics_cohorts(scope=scope)
    context.update(
        scope=scope,
        by=by,
        costs=costs,
        overall=summary["overall"],
        breakdown=summary["breakdown"]["rows"],
        funnel=funnel["overall"],
        cohorts=cohorts,
        readiness=metrics_readiness(now=timezone.now(), workflow_key=scope.workflow_key),
        funnel_svg=charts.funnel_chart(funnel["overall"]),
        cohort_svg=charts.cohort_chart(cohorts),
        breakdown_svg=charts.rate_chart(
            summary["breakdown"]["rows"], "completion_rate", f"Completion rate by {by}"
        ),
    )
    return TemplateResponse(request, "admin/metrics/dashboard.html", context)


def admin_urls():
    """Mounted by config/urls.py at admin/metrics/, behind the admin's staff login."""
    from django.contrib import admin

    return [path("", admin.site.admin_view(dashboard), name="admin-metrics")]
