"""Request IDs and request metrics: what operators need to follow one request through the
logs and to see the service's latency and queues (docs/operations.md).

A request's id lives in a context variable for the length of the request: the logging filter
stamps it on every record, and jobs enqueued during the request carry it to the worker (the
django-q2 signals connected in config/apps.py), so one id ties a web request to the jobs it
started.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from prometheus_client import Histogram

REQUEST_ID_HEADER = "X-Request-ID"
# Short and plain: the id is copied into log lines and response headers, so it must not be
# able to carry a newline, a quote or a kilobyte of someone's payload.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


def request_id_from(incoming: str | None) -> str:
    """The caller's id when it is a safe one (a proxy or the client set it), else a new one."""
    if incoming and REQUEST_ID_PATTERN.match(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Puts `request_id` on every log record ("-" outside a request or job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Django logs a 4xx or 5xx answer ("Not Found: /x") after the middleware chain has
        # returned, so after the variable was reset; that record carries its request.
        request = getattr(record, "request", None)
        record.request_id = request_id_var.get() or getattr(request, "request_id", None) or "-"
        return True


class RequestIdMiddleware:
    """First in the chain, so every later middleware's log lines carry the id too."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response


# --- jobs: the id travels with the task (connected in config/apps.py) -----------------------


def job_carry_request_id(sender: Any, task: dict[str, Any], **kwargs: Any) -> None:
    """pre_enqueue: the task package is signed after this, so the id travels inside it."""
    request_id = request_id_var.get()
    if request_id:
        task["request_id"] = request_id


def job_adopt_request_id(sender: Any, func: Any, task: dict[str, Any], **kwargs: Any) -> None:
    """pre_execute, in the worker: the job's log lines carry the id of the request that
    enqueued it."""
    request_id_var.set(task.get("request_id"))


def job_forget_request_id(sender: Any, func: Any, task: dict[str, Any], **kwargs: Any) -> None:
    """post_execute_in_worker: a worker process runs job after job; the next one must not
    inherit this one's id. A job run inline (sync) ran inside its request, whose id stays."""
    if not task.get("sync"):
        request_id_var.set(None)


# --- request latency --------------------------------------------------------------------------

# Not in the default registry: /metrics builds its own per scrape (config/metrics.py), which
# lets several processes share one set of figures when PROMETHEUS_MULTIPROC_DIR is set.
REQUEST_LATENCY = Histogram(
    "closeloop_http_request_duration_seconds",
    "Time from the request reaching Django to its response, by view, method and status.",
    ["view", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def view_label(request: HttpRequest) -> str:
    """The URL pattern's name, never the path: a path carries case ids and link tokens, and
    one series per token would also swamp Prometheus."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return match.view_name or match.route or "unnamed"


class RequestMetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in HTTP_METHODS else "other"
        REQUEST_LATENCY.labels(view_label(request), method, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response
