"""Case selectors: the reads that feed the API and pages."""

from __future__ import annotations

import uuid
from typing import Any

from cases.models import ApiClient, Case, CaseEvent


def case_get_for_client(*, client: ApiClient, case_id: Any) -> Case | None:
    """A client sees only its own cases; anything else is indistinguishable from absent."""
    try:
        case_uuid = uuid.UUID(str(case_id))
    except ValueError:
        return None
    return (
        Case.objects.select_related("workflow", "customer")
        .filter(api_client=client, pk=case_uuid)
        .first()
    )


def case_timeline(*, case: Case) -> list[CaseEvent]:
    return list(CaseEvent.objects.filter(case=case).order_by("created_at", "id"))


def cases_by_ids(*, ids: list[Any]) -> dict[Any, Case]:
    return {case.id: case for case in Case.objects.select_related("workflow").filter(id__in=ids)}
