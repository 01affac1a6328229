"""Trigger and case API. Views are thin: check the request shape, call one service,
shape the answer. Business rules live in cases/services.py."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from django.utils.html import escape
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import renderers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from cases.api import schema
from cases.api.errors import PayloadTooLarge
from cases.api.serializers import case_detail, case_summary
from cases.evidence import evidence_bundle_download, evidence_bundle_html, evidence_filename
from cases.selectors import case_get_for_client, case_timeline, cases_by_ids
from cases.services import IllegalTransition, TriggerResult, case_cancel, triggers_ingest
from policies.contracts import contract_json_schema
from policies.models import Workflow


class ApiView(APIView):
    def initial(self, request, *args, **kwargs):
        # DRF reads the stream itself, past Django's DATA_UPLOAD_MAX_MEMORY_SIZE check, so
        # the size limit is enforced here, before a byte is parsed.
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > settings.API_MAX_BODY_BYTES:
            raise PayloadTooLarge()
        super().initial(request, *args, **kwargs)

    def json_object(self, request) -> dict:
        if not isinstance(request.data, dict):
            raise ValidationError({"body": ["The body must be a JSON object."]})
        return request.data


def _conflict_body(result: TriggerResult) -> dict:
    return {
        "detail": (
            "This event_id was already used with a different body; "
            "send a new event_id for a new event."
        ),
        "id": str(result.case_id),
        "differences": result.differences,
    }


class TriggerCreateView(ApiView):
    @extend_schema(
        operation_id="triggers_create",
        summary="Push one trigger",
        description=(
            "Creates a case from a trigger. Idempotent per `event_id`: the same body again "
            "returns the original case with 200; a different body under the same `event_id` "
            "is a 409 naming the fields that differ."
        ),
        request=schema.TRIGGER_REQUEST,
        responses={
            201: OpenApiResponse(schema.CASE_SUMMARY, description="Case created"),
            200: OpenApiResponse(schema.CASE_SUMMARY, description="Replay: the original case"),
            400: OpenApiResponse(schema.ERROR, description="Invalid trigger"),
            401: OpenApiResponse(schema.ERROR, description="Missing or wrong API key"),
            409: OpenApiResponse(schema.CONFLICT, description="event_id reused with another body"),
            413: OpenApiResponse(schema.ERROR, description="Body too large"),
        },
        tags=["triggers"],
    )
    def post(self, request):
        [result] = triggers_ingest(client=request.auth, raw_triggers=[self.json_object(request)])
        if result.status == "invalid":
            return Response(
                {"detail": "The trigger is invalid.", "errors": result.errors},
                status=status.HTTP_400_BAD_REQUEST,
            )
        if result.status == "conflict":
            return Response(_conflict_body(result), status=status.HTTP_409_CONFLICT)
        case = cases_by_ids(ids=[result.case_id])[result.case_id]
        code = status.HTTP_201_CREATED if result.status == "created" else status.HTTP_200_OK
        body = case_summary(case, request)
        return Response(body, status=code, headers={"Location": body["links"]["self"]})


class TriggerBatchView(ApiView):
    @extend_schema(
        operation_id="triggers_batch",
        summary="Push up to 1,000 triggers at once",
        description=(
            "Each trigger is validated and stored on its own (never half-written), with the "
            "same idempotency rules as a single trigger. `results` has one object per input, "
            "in order: `status` is created, existing, conflict or invalid, with `id` or "
            "`errors`."
        ),
        request=schema.BATCH_REQUEST,
        responses={
            200: OpenApiResponse(schema.BATCH_RESPONSE),
            400: OpenApiResponse(schema.ERROR),
            401: OpenApiResponse(schema.ERROR),
            413: OpenApiResponse(schema.ERROR),
        },
        tags=["triggers"],
    )
    def post(self, request):
        body = self.json_object(request)
        unknown = sorted(set(body) - {"triggers"})
        if unknown:
            raise ValidationError(
                {key: ['Unknown field; send {"triggers": [...]}.'] for key in unknown}
            )
        triggers = body.get("triggers")
        limit = settings.API_BATCH_MAX_TRIGGERS
        if not isinstance(triggers, list) or not triggers:
            raise ValidationError({"triggers": ["Must be a non-empty list of triggers."]})
        if len(triggers) > limit:
            raise ValidationError(
                {"triggers": [f"At most {limit} triggers per batch; got {len(triggers)}."]}
            )
        results = triggers_ingest(client=request.auth, raw_triggers=triggers)
        base = request.build_absolute_uri("/api/v1/cases/")
        out = []
        counts = {"created": 0, "existing": 0, "conflict": 0, "invalid": 0}
        for result in results:
            counts[result.status] += 1
            item: dict = {"index": result.index, "status": result.status}
            if result.case_id is not None:
                item["id"] = str(result.case_id)
            if result.status in ("created", "existing"):
                item["state"] = result.state
                item["url"] = f"{base}{result.case_id}/"
            if result.errors:
                item["errors"] = result.errors
            if result.differences:
                item["differences"] = result.differences
            out.append(item)
        return Response({"counts": counts, "results": out})


class CaseDetailView(ApiView):
    @extend_schema(
        operation_id="cases_retrieve",
        summary="Read a case with its timeline",
        responses={200: OpenApiResponse(schema.CASE_DETAIL), 404: OpenApiResponse(schema.ERROR)},
        tags=["cases"],
    )
    def get(self, request, case_id):
        case = case_get_for_client(client=request.auth, case_id=case_id)
        if case is None:
            return Response({"detail": "No such case."}, status=status.HTTP_404_NOT_FOUND)
        return Response(case_detail(case, case_timeline(case=case), request))


class CaseCancelView(ApiView):
    @extend_schema(
        operation_id="cases_cancel",
        summary="Cancel a case the source system resolved elsewhere",
        request=schema.CANCEL_REQUEST,
        responses={
            200: OpenApiResponse(schema.CASE_SUMMARY),
            404: OpenApiResponse(schema.ERROR),
            409: OpenApiResponse(schema.ERROR, description="The case's state forbids it"),
        },
        tags=["cases"],
    )
    def post(self, request, case_id):
        case = case_get_for_client(client=request.auth, case_id=case_id)
        if case is None:
            return Response({"detail": "No such case."}, status=status.HTTP_404_NOT_FOUND)
        body = request.data if request.data else {}
        if not isinstance(body, dict) or set(body) - {"reason"}:
            raise ValidationError({"body": ['Send an empty body or {"reason": "..."}.']})
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 500:
            raise ValidationError({"reason": ["Must be text of at most 500 characters."]})
        if case.state == "cancelled":
            return Response(case_summary(case, request))
        try:
            case = case_cancel(case=case, reason=reason.strip())
        except IllegalTransition as exc:
            return Response(
                {"detail": f"{exc} Its state is {exc.state!r}.", "state": exc.state},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(case_summary(case, request))


class WorkflowListView(ApiView):
    @extend_schema(
        operation_id="workflows_list",
        summary="Active workflows and the data each trigger must carry",
        responses={200: OpenApiResponse(schema.WORKFLOW_LIST)},
        tags=["workflows"],
    )
    def get(self, request):
        workflows = Workflow.objects.filter(status="active").order_by("key")
        return Response(
            {
                "workflows": [
                    {
                        "key": wf.key,
                        "name": wf.name,
                        "version": wf.version,
                        "completion_definition": wf.completion_definition,
                        "data_schema": contract_json_schema(wf.contract),
                        "triggers_url": request.build_absolute_uri(reverse("api:triggers")),
                    }
                    for wf in workflows
                ]
            }
        )


class EvidencePageRenderer(renderers.BaseRenderer):
    """`?format=html`: the evidence bundle as its print-friendly page."""

    media_type = "text/html"
    format = "html"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        response = (renderer_context or {}).get("response")
        if response is not None and response.status_code != status.HTTP_200_OK:
            # An error answer on the page's format: its words, escaped, nothing more.
            return f"<!doctype html><title>Error</title><p>{escape(data.get('detail', ''))}</p>"
        return evidence_bundle_html(data)


class CaseEvidenceView(ApiView):
    renderer_classes = [renderers.JSONRenderer, EvidencePageRenderer]

    def initial(self, request, *args, **kwargs):
        # DRF answers an unknown ?format= with a bare 404; name the choices instead.
        wanted = request.GET.get("format")
        if wanted is not None and wanted not in ("json", "html"):
            raise ValidationError({"format": ["Must be json or html."]})
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="cases_evidence",
        summary="Download a case's evidence bundle",
        description=(
            "Everything an auditor needs about the case: trigger, offer and policy version, "
            "messages as sent, identity steps, the consent text shown and accepted, the "
            "submission, the writeback request and acknowledgement, and the timeline with "
            "each event's hash, under the hash chain's head hash and whether it verifies. "
            "`?format=html` gives the same as a print-friendly page. Contact details are "
            "masked and personal values fingerprinted."
        ),
        parameters=[
            OpenApiParameter(
                "format",
                str,
                enum=["json", "html"],
                required=False,
                description="json (default) or html",
            )
        ],
        responses={
            200: OpenApiResponse(schema.EVIDENCE_BUNDLE),
            400: OpenApiResponse(schema.ERROR, description="Unknown format"),
            404: OpenApiResponse(schema.ERROR),
        },
        tags=["cases"],
    )
    def get(self, request, case_id):
        case = case_get_for_client(client=request.auth, case_id=case_id)
        if case is None:
            return Response({"detail": "No such case."}, status=status.HTTP_404_NOT_FOUND)
        fmt = request.accepted_renderer.format
        bundle = evidence_bundle_download(case=case, fmt=fmt, username=str(request.user))
        filename = evidence_filename(case, fmt)
        disposition = "attachment" if fmt == "json" else "inline"
        return Response(
            bundle,
            headers={
                "Content-Disposition": f'{disposition}; filename="{filename}"',
                "Cache-Control": "no-store, max-age=0",
            },
        )
