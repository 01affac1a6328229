"""`GET /api/v1/events/?stream=audit`: the staff audit trail, streamed like the case events.

The default stream (`cases`) is the metrics export unchanged: an API key's own case events.
The audit stream covers every tenant's staff activity, so an API key (a source system) never
gets it; it answers a signed-in staff member with the audit trail's view permission
(Auditor, Administrator), two-factor verified where that is required."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission

from cases.api import schema
from cases.api.auth import ApiKeyAuthentication, IsApiClient
from metrics import api as metrics_api
from metrics.forms import ExportForm
from staff.selectors import AUDIT_COLUMNS, audit_entries_export

STREAMS = ("cases", "audit")


def _stream_name(request) -> str:
    return request.query_params.get("stream", "").strip() or "cases"


def audit_export_allowed(user) -> bool:
    return bool(
        user is not None
        and user.is_authenticated
        and getattr(user, "is_staff", False)
        and user.is_active
        and user.has_perm("staff.view_auditentry")
        and (not settings.STAFF_2FA_REQUIRED or user.is_verified())
    )


class EventStreamPermission(BasePermission):
    def has_permission(self, request, view) -> bool:
        stream = _stream_name(request)
        if stream not in STREAMS and request.user is not None and request.user.is_authenticated:
            # Signed in one way or the other: the mistake to report is the parameter.
            raise ValidationError({"stream": ["stream must be cases or audit."]})
        if stream != "audit":
            self.message = IsApiClient.message
            return IsApiClient().has_permission(request, view)
        self.message = (
            "The audit stream is for staff with the Auditor or Administrator role, signed in "
            "to the admin (with two-factor where required); API keys cannot read it."
        )
        return audit_export_allowed(request.user)


class EventsExportView(metrics_api.EventsExportView):
    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [EventStreamPermission]

    @extend_schema(
        operation_id="events_export",
        summary="Stream your cases' events, or the staff audit trail (NDJSON or CSV)",
        description="In id order; pass the last id you read as `after` to continue. "
        "`stream=audit` streams the staff audit trail instead (see docs/staff.md): a "
        "signed-in Auditor or Administrator only, never an API key.",
        parameters=[
            *metrics_api.EXPORT_PARAMETERS,
            OpenApiParameter("stream", str, enum=list(STREAMS), description="Default: cases."),
        ],
        responses={
            200: OpenApiResponse(OpenApiTypes.BINARY),
            400: OpenApiResponse(schema.ERROR),
            403: OpenApiResponse(schema.ERROR),
        },
        tags=["metrics"],
    )
    def get(self, request):
        if _stream_name(request) == "cases":
            return super().get(request)
        form = self.valid(ExportForm(request.query_params, default_format="ndjson", after_kind=int))
        data = form.cleaned_data
        rows = audit_entries_export(since=data["since"], after=data["after"])
        return metrics_api.export_stream("audit", AUDIT_COLUMNS, rows, data["format"])
