"""Daily rollups: the CaseFacts of each UTC day, workflow and API client added up, so the
dashboard reads a few thousand rows for a year instead of a million facts.

They are rebuilt from the facts, never counted up by hand: `rollups_refresh` recomputes
the days a batch of facts belongs to (in the facts' own transaction), `rollups_rebuild`
recomputes them all. A case's day, workflow and client never change, so refreshing the
days of the cases whose facts changed is enough."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from functools import reduce
from operator import or_
from typing import Any

from django.db import connection, transaction
from django.db.models import Aggregate, Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from metrics.models import (
    ROLLUP_MEASURES,
    CaseFact,
    DailyRollup,
    ExceptionFact,
    ExceptionRollup,
    RefreshMark,
)

# The breakdown dimensions: name → CaseFact column.
DIMENSIONS = {
    "channel": "channel",
    "step": "step",
    "variant": "variant",
    "template": "template",
    "segment": "segment",
}
BATCH = {"postgresql": 5000}.get(connection.vendor, 500)


def fact_aggregates() -> dict[str, Aggregate]:
    """Each measure as an aggregate over CaseFacts."""
    out: dict[str, Aggregate] = {}
    for name, (how, what) in ROLLUP_MEASURES.items():
        out[name] = Count("pk", filter=what) if how == "count" else Sum(what)
    return out


def dimension_text(value: Any) -> str:
    """A dimension's value as stored in a rollup row (a step number as text, none as "")."""
    return "" if value is None else str(value)


def dimension_value(dimension: str, text: str) -> Any:
    """The other way round: the value a breakdown shows."""
    if dimension == "step":
        return int(text) if text else None
    return text


def utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def _days_q(days: Iterable[dt.date]) -> Q:
    """Facts triggered on these UTC days, as few ranges as the days allow."""
    ranges: list[list[dt.date]] = []
    for day in sorted(set(days)):
        if ranges and ranges[-1][1] == day:
            ranges[-1][1] = day + dt.timedelta(days=1)
        else:
            ranges.append([day, day + dt.timedelta(days=1)])
    return reduce(
        or_,
        (
            Q(triggered_at__gte=utc_midnight(start), triggered_at__lt=utc_midnight(end))
            for start, end in ranges
        ),
    )


def _rows(facts: QuerySet[CaseFact]) -> tuple[list[DailyRollup], list[ExceptionRollup]]:
    """Rollup rows (overall and per dimension) for a set of facts."""
    facts = facts.order_by().annotate(day=TruncDate("triggered_at", tzinfo=dt.UTC))
    aggregates = fact_aggregates()
    rollups: list[DailyRollup] = []
    for dimension, column in [("", None), *DIMENSIONS.items()]:
        keys = ["day", "workflow_key", "api_client_id", "value_kind", "value_currency"]
        grouped = facts.values(*keys, *([column] if column else [])).annotate(**aggregates)
        for row in grouped:
            measures = {name: row[name] or 0 for name in ROLLUP_MEASURES}
            measures["value_amount"] = row["value_amount"] or Decimal(0)
            rollups.append(
                DailyRollup(
                    **{key: row[key] for key in keys},
                    dimension=dimension,
                    dimension_value=dimension_text(row[column]) if column else "",
                    **measures,
                )
            )
    exception_rows: list[ExceptionRollup] = []
    occurrences = ExceptionFact.objects.filter(fact__in=facts.values("pk")).annotate(
        day=TruncDate("fact__triggered_at", tzinfo=dt.UTC)
    )
    for dimension, column in [("", None), *DIMENSIONS.items()]:
        keys = ["day", "fact__workflow_key", "fact__api_client_id", "exception_type"]
        extra = [f"fact__{column}"] if column else []
        grouped = occurrences.order_by().values(*keys, *extra).annotate(n=Sum("occurrences"))
        for row in grouped:
            exception_rows.append(
                ExceptionRollup(
                    day=row["day"],
                    workflow_key=row["fact__workflow_key"],
                    api_client_id=row["fact__api_client_id"],
                    exception_type=row["exception_type"],
                    dimension=dimension,
                    dimension_value=dimension_text(row[extra[0]]) if column else "",
                    occurrences=row["n"],
                )
            )
    return rollups, exception_rows


def _insert(rollups: list[DailyRollup], exception_rows: list[ExceptionRollup]) -> None:
    DailyRollup.objects.bulk_create(rollups, batch_size=BATCH)
    ExceptionRollup.objects.bulk_create(exception_rows, batch_size=BATCH)


def rollups_refresh(*, case_ids: Iterable[Any]) -> int:
    """Recompute the rollup rows of every (workflow, client, day) these cases belong to,
    from the facts as they are now. Returns the number of days recomputed."""
    ids = list(case_ids)
    if not ids:
        return 0
    days: dict[tuple[str, int], set[dt.date]] = defaultdict(set)
    sources = (
        CaseFact.objects.filter(case_id__in=ids)
        .annotate(day=TruncDate("triggered_at", tzinfo=dt.UTC))
        .values_list("workflow_key", "api_client_id", "day")
        .distinct()
    )
    for workflow_key, api_client_id, day in sources:
        days[(workflow_key, api_client_id)].add(day)
    with transaction.atomic():
        # One writer at a time: two refreshes of the same day would both delete, then both
        # insert, and the second insert would break the rollup's unique key.
        RefreshMark.objects.select_for_update().get_or_create(pk=1)
        for (workflow_key, api_client_id), source_days in days.items():
            source = Q(workflow_key=workflow_key, api_client_id=api_client_id)
            for model in (DailyRollup, ExceptionRollup):
                model.objects.filter(source, day__in=source_days).delete()
            _insert(*_rows(CaseFact.objects.filter(source & _days_q(source_days))))
    return sum(len(source_days) for source_days in days.values())


def rollups_rebuild() -> int:
    """Throw every rollup row away and recompute them all from the facts. Returns rows."""
    with transaction.atomic():
        RefreshMark.objects.select_for_update().get_or_create(pk=1)
        DailyRollup.objects.all().delete()
        ExceptionRollup.objects.all().delete()
        rollups, exception_rows = _rows(CaseFact.objects.all())
        _insert(rollups, exception_rows)
    return len(rollups)
