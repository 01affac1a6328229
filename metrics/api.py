"""Metrics API: the figures as JSON, and streamed exports of events and cases. An API key
sees only its own cases. Views check the parameters (metrics/forms.py) and call selectors."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from cases.api import schema
from metrics.forms import ExportForm, PeriodForm
from metrics.selectors import (
    CASE_COLUMNS,
    EVENT_COLUMNS,
    cases_export,
    events_export,
    metrics_cohorts,
    metrics_funnel,
    metrics_readiness,
    metrics_summary,
)


class JsonOnly(BaseContentNegotiation):
    """Answers are JSON or a stream we build; `?format=` names the export's format, not a
    DRF renderer, so DRF's own format negotiation stays out of the way."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return JSONRenderer(), JSONRenderer.media_type


class MetricsApiView(APIView):
    content_negotiation_class = JsonOnly

    @staticmethod
    def valid(form: Any) -> Any:
        if not form.is_valid():
            errors = form.errors.get_json_data()
            raise ValidationError(
                {field: [error["message"] for error in items] for field, items in errors.items()}
            )
        return form


def _text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    return "" if value is None else str(value)


def _csv_cell(value: Any) -> str:
    text = _text(value)
    # OWASP CSV injection: a cell a spreadsheet would run as a formula is quoted as text.
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _ndjson(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for row in rows:
        item = {
            key: value if isinstance(value, dict) else _text(value) for key, value in row.items()
        }
        yield (json.dumps(item, separators=(",", ":"), default=str) + "\n").encode()


def _csv(columns: tuple[str, ...], rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for count, row in enumerate(rows, 1):
        writer.writerow([_csv_cell(row[column]) for column in columns])
        if count % 500 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def export_stream(name: str, columns: tuple[str, ...], rows: Iterable[dict], chosen: str):
    """Rows streamed as CSV or NDJSON with a download name: every export (cases, events,
    the staff audit trail) answers the same way."""
    if chosen == "csv":
        response = StreamingHttpResponse(_csv(columns, rows), content_type="text/csv")
        extension = "csv"
    else:
        response = StreamingHttpResponse(_ndjson(rows), content_type="application/x-ndjson")
        extension = "ndjson"
    response["Content-Disposition"] = f'attachment; filename="{name}.{extension}"'
    response["Cache-Control"] = "no-store"
    return response


PERIOD_PARAMETERS = [
    OpenApiParameter("workflow", str, description="A workflow key; all workflows if absent."),
    OpenApiParameter(
        "since",
        str,
        description="Cases triggered from this date or ISO 8601 date-time (default: 30 days "
        "before until).",
    ),
    OpenApiParameter(
        "until",
        str,
        description="Up to this date-time, or to the end of this date (default: now).",
    ),
    OpenApiParameter(
        "by",
        str,
        description="Break the figures down by channel, step, variant, template or segment.",
    ),
]
EXPORT_PARAMETERS = [
    OpenApiParameter("since", str, description="Rows from this date or date-time on."),
    OpenApiParameter("after", str, description="Resume after this id (the last one you read)."),
    OpenApiParameter("format", str, enum=["ndjson", "csv"]),
]


class MetricsView(MetricsApiView):
    @extend_schema(
        operation_id="metrics_retrieve",
        summary="Completion metrics, funnel, weekly cohorts and readiness",
        description="Figures for your own cases; definitions in docs/metrics.md.",
        parameters=PERIOD_PARAMETERS,
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 400: OpenApiResponse(schema.ERROR)},
        tags=["metrics"],
    )
    def get(self, request):
        form = self.valid(PeriodForm(request.query_params))
        scope = form.scope(api_client_id=request.auth.pk)
        by = form.cleaned_data["by"] or None
        return Response(
            {
                "workflow": scope.workflow_key,
                "since": _text(scope.since),
                "until": _text(scope.until),
                "metrics": metrics_summary(scope=scope, by=by),
                "funnel": metrics_funnel(scope=scope, by=by),
                "cohorts": metrics_cohorts(scope=scope),
                "readiness": metrics_readiness(
                    now=timezone.now(),
                    workflow_key=scope.workflow_key,
                    api_client_id=request.auth.pk,
                ),
            }
        )


class EventsExportView(MetricsApiView):
    @extend_schema(
        operation_id="events_export",
        summary="Stream your cases' events (NDJSON or CSV)",
        description="In id order; pass the last id you read as `after` to continue.",
        parameters=EXPORT_PARAMETERS,
        responses={200: OpenApiResponse(OpenApiTypes.BINARY), 400: OpenApiResponse(schema.ERROR)},
        tags=["metrics"],
    )
    def get(self, request):
        form = self.valid(ExportForm(request.query_params, default_format="ndjson", after_kind=int))
        data = form.cleaned_data
        rows = events_export(
            api_client_id=request.auth.pk, since=data["since"], after=data["after"]
        )
        return export_stream("events", EVENT_COLUMNS, rows, data["format"])


class CasesExportView(MetricsApiView):
    @extend_schema(
        operation_id="cases_export",
        summary="Stream your cases (CSV or NDJSON)",
        description="In id order (the order they arrived); `after` continues after a case id.",
        parameters=EXPORT_PARAMETERS,
        responses={200: OpenApiResponse(OpenApiTypes.BINARY), 400: OpenApiResponse(schema.ERROR)},
        tags=["metrics"],
    )
    def get(self, request):
        form = self.valid(
            ExportForm(request.query_params, default_format="csv", after_kind=uuid.UUID)
        )
        data = form.cleaned_data
        rows = cases_export(api_client_id=request.auth.pk, since=data["since"], after=data["after"])
        return export_stream("cases", CASE_COLUMNS, rows, data["format"])
