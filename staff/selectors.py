from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from staff.models import AuditEntry

AUDIT_COLUMNS = (
    "id",
    "created_at",
    "kind",
    "action",
    "username",
    "user_id",
    "target_type",
    "target_id",
    "target_repr",
    "changes",
    "ip_address",
    "detail",
)
AUDIT_EXPORT_PAGE = 2000


def audit_entries_export(
    *, since: dt.datetime | None, after: int | None
) -> Iterator[dict[str, Any]]:
    """Audit entries in id order, page by page (keyset on the id, like the case events
    export: a page costs the same at the end of the trail as at its start)."""
    last = after or 0
    while True:
        page = AuditEntry.objects.filter(id__gt=last)
        if since is not None:
            page = page.filter(created_at__gte=since)
        rows = list(page.order_by("id").values_list(*AUDIT_COLUMNS)[:AUDIT_EXPORT_PAGE])
        for row in rows:
            yield dict(zip(AUDIT_COLUMNS, row, strict=True))
        if len(rows) < AUDIT_EXPORT_PAGE:
            return
        last = rows[-1][0]
