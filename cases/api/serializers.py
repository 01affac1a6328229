"""Output shapes for cases. Plain functions over model instances: the API's responses are
small and fixed, and this keeps the batch path free of per-item serializer overhead."""

from __future__ import annotations

from typing import Any

from cases.models import Case, CaseEvent

MILESTONES = (
    "triggered_at",
    "first_sent_at",
    "opened_at",
    "verified_at",
    "submitted_at",
    "written_back_at",
    "closed_at",
)


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def case_summary(case: Case, request) -> dict[str, Any]:
    url = request.build_absolute_uri(f"/api/v1/cases/{case.id}/")
    return {
        "id": str(case.id),
        "workflow": {"key": case.workflow.key, "version": case.workflow.version},
        "event_id": case.event_id,
        "state": case.state,
        "outcome": case.outcome,
        "links": {"self": url, "cancel": f"{url}cancel/"},
    }


def case_detail(case: Case, events: list[CaseEvent], request) -> dict[str, Any]:
    return {
        **case_summary(case, request),
        "customer": {"external_id": case.customer.external_id},
        "segment": case.segment,
        "data": case.data,
        "offer": getattr(case, "offer", None),
        "milestones": {name.removesuffix("_at"): _iso(getattr(case, name)) for name in MILESTONES},
        "expires_at": _iso(case.expires_at),
        "timeline": [
            {"kind": e.kind, "actor": e.actor, "at": _iso(e.created_at), "data": e.data}
            for e in events
        ],
    }
