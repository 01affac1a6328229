"""Process-level endpoints that belong to no app: health and metrics."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from config.health import CHECKS, health_report
from config.metrics import metrics_exposition


@require_GET
@never_cache
def healthz(request):
    """Readiness for load balancers and monitors: 200 when every check passes, else 503
    with the failing ones named. `?checks=database,broker` runs only those (a web node's
    load-balancer check need not fail because the workers are down)."""
    asked = [name.strip() for name in request.GET.get("checks", "").split(",") if name.strip()]
    unknown = sorted(set(asked) - set(CHECKS))
    if unknown:
        return JsonResponse(
            {
                "detail": f"Unknown check(s): {', '.join(unknown)}.",
                "errors": {"checks": [f"Choose from {', '.join(CHECKS)}."]},
            },
            status=400,
        )
    healthy, report = health_report(names=asked or None)
    failing = [name for name, item in report.items() if item["status"] != "ok"]
    return JsonResponse(
        {"status": "ok" if healthy else "error", "failing": failing, "checks": report},
        status=200 if healthy else 503,
    )


@require_GET
@never_cache
def metrics(request):
    """Prometheus scrape target, for the monitoring system's token only: 404 while
    METRICS_TOKEN is unset (nothing is exposed by default), 401 without the token."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("Metrics are not enabled.")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        response = HttpResponse(
            "Send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'.\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE_LATEST)


def bench_bare(request):
    """A baseline for bench/miniapp.py, routed only with BENCH_BARE_VIEW=1."""
    return HttpResponse("ok", content_type="text/plain")
