"""Every figure on the dashboard and in the metrics API, read from CaseFacts (which are
recomputed from the timeline; see metrics/services.py). Definitions: docs/metrics.md.

Percentiles are PostgreSQL's `percentile_cont` (continuous, interpolated); on SQLite the
same interpolation runs in Python over the values."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import reduce
from operator import or_
from typing import Any

from django.db import connection
from django.db.models import Aggregate, FloatField, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from metrics.models import (
    ROLLUP_MEASURES,
    CaseFact,
    DailyRollup,
    ExceptionFact,
    ExceptionRollup,
    Stage,
    UnitCost,
)
from metrics.rollups import (
    DIMENSIONS,
    dimension_text,
    dimension_value,
    fact_aggregates,
    utc_midnight,
)

BREAKDOWNS = DIMENSIONS
DURATIONS = {
    "time_to_resolution": "resolution_seconds",
    "time_to_action": "action_seconds",
    "agent_handle_time": "handle_seconds",
}
READINESS_DAYS = 30
# The target split of a workflow's cases once it runs at scale.
TARGET_SPLIT = {"completed_by_rule": 0.80, "routed_as_exception": 0.15, "handled_by_agent": 0.05}


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate; identical sorts are shared between fractions."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=float(fraction), **extra)


def percentile(values: list[float], fraction: float) -> float | None:
    """`percentile_cont` in Python: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


@dataclass(frozen=True)
class Scope:
    """Which cases a figure covers: a workflow (all if None), cases triggered in
    [since, until), and for API clients only their own cases."""

    workflow_key: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    api_client_id: int | None = None

    def q(self, prefix: str = "") -> Q:
        q = Q()
        if self.workflow_key:
            q &= Q(**{f"{prefix}workflow_key": self.workflow_key})
        if self.since:
            q &= Q(**{f"{prefix}triggered_at__gte": self.since})
        if self.until:
            q &= Q(**{f"{prefix}triggered_at__lt": self.until})
        if self.api_client_id is not None:
            q &= Q(**{f"{prefix}api_client_id": self.api_client_id})
        return q


def facts_in(scope: Scope) -> QuerySet[CaseFact]:
    return CaseFact.objects.filter(scope.q()).order_by()


def _on_postgres() -> bool:
    return connection.vendor == "postgresql"


def _rate(part: int | None, whole: int | None) -> float | None:
    return round(part / whole, 4) if whole else None


# SQLite binds at most 32,766 parameters per statement.
EDGE_CHUNK = 5000


# --- sums: whole days from the rollups, partial days from the facts ------------------------


@dataclass(frozen=True)
class _Split:
    """A scope cut into whole UTC days [first_day, last_day) read from DailyRollups (None
    at either end: unbounded; `whole_days` False: none) and the partial days at its edges,
    read from CaseFacts (`edges`: [start, end) ranges of triggered_at)."""

    whole_days: bool
    first_day: dt.date | None
    last_day: dt.date | None
    edges: tuple[tuple[dt.datetime, dt.datetime], ...]

    def edges_q(self, prefix: str = "") -> Q:
        return reduce(
            or_,
            (
                Q(**{f"{prefix}triggered_at__gte": start, f"{prefix}triggered_at__lt": end})
                for start, end in self.edges
            ),
        )


def _split(scope: Scope) -> _Split:
    since, until = scope.since, scope.until
    first = last = None
    if since is not None:
        first = since.astimezone(dt.UTC).date()
        if utc_midnight(first) < since:
            first += dt.timedelta(days=1)
    if until is not None:
        last = until.astimezone(dt.UTC).date()
    if first is not None and last is not None and first >= last:
        # Within a day or across one midnight: few facts, read them all.
        return _Split(False, None, None, ((since, until),))
    edges = []
    if since is not None and since < utc_midnight(first):
        edges.append((since, utc_midnight(first)))
    if until is not None and utc_midnight(last) < until:
        edges.append((utc_midnight(last), until))
    return _Split(True, first, last, tuple(edges))


def _source_q(scope: Scope, prefix: str = "") -> Q:
    """The scope's workflow and client, without its period."""
    return replace(scope, since=None, until=None).q(prefix)


def _day_rows(model: type, scope: Scope, split: _Split) -> QuerySet:
    rows = model.objects.filter(_source_q(scope)).order_by()
    if split.first_day is not None:
        rows = rows.filter(day__gte=split.first_day)
    if split.last_day is not None:
        rows = rows.filter(day__lt=split.last_day)
    return rows


def _keyed(row: dict[str, Any], names: list[str], dimension: str, keys: tuple[str, ...]) -> tuple:
    return tuple(
        dimension_value(dimension, dimension_text(row[name])) if key == "group" else row[name]
        for key, name in zip(keys, names, strict=True)
    )


def _add(out: dict[tuple, dict], key: tuple, row: dict[str, Any], names: Iterable[str]) -> None:
    sums = out.setdefault(key, {})
    for name in names:
        sums[name] = sums.get(name, 0) + (row[name] or 0)


def _grouped_rows(rows: QuerySet, names: list[str], aggregates: dict[str, Any]) -> list[dict]:
    """One row of aggregates per distinct `names`; without names, one row for all (an
    empty values() would group by every column instead)."""
    if not names:
        return [rows.aggregate(**aggregates)]
    return list(rows.values(*names).annotate(**aggregates))


def _sums(scope: Scope, *, dimension: str = "", keys: tuple[str, ...] = ()) -> dict[tuple, dict]:
    """Every measure of ROLLUP_MEASURES added up over the scope, per `keys`: a tuple of
    "group" (the value of `dimension`), "day", "workflow_key", "value_kind" and
    "value_currency". Whole days come from the rollups, partial days from the facts."""
    split = _split(scope)
    out: dict[tuple, dict] = {}
    if split.whole_days:
        names = [{"group": "dimension_value"}.get(key, key) for key in keys]
        rows = _day_rows(DailyRollup, scope, split).filter(dimension=dimension)
        sums = {name: Sum(name) for name in ROLLUP_MEASURES}
        for row in _grouped_rows(rows, names, sums):
            _add(out, _keyed(row, names, dimension, keys), row, ROLLUP_MEASURES)
    if split.edges:
        names = [{"group": DIMENSIONS.get(dimension)}.get(key, key) for key in keys]
        facts = CaseFact.objects.filter(_source_q(scope) & split.edges_q()).order_by()
        if "day" in keys:
            facts = facts.annotate(day=TruncDate("triggered_at", tzinfo=dt.UTC))
        for row in _grouped_rows(facts, names, fact_aggregates()):
            _add(out, _keyed(row, names, dimension, keys), row, ROLLUP_MEASURES)
    return out


def _exception_sums(scope: Scope, *, dimension: str = "") -> dict[Any, dict[str, int]]:
    """{group (None overall): {exception type: occurrences}} over the scope."""
    split = _split(scope)
    out: dict[Any, dict[str, int]] = defaultdict(dict)

    def add(group: Any, exception_type: str, occurrences: int) -> None:
        out[group][exception_type] = out[group].get(exception_type, 0) + occurrences

    if split.whole_days:
        rows = _day_rows(ExceptionRollup, scope, split).filter(dimension=dimension)
        for row in rows.values("dimension_value", "exception_type").annotate(n=Sum("occurrences")):
            group = dimension_value(dimension, row["dimension_value"]) if dimension else None
            add(group, row["exception_type"], row["n"])
    if split.edges:
        # The edges hold a day or two of facts: fetching their ids first lets the exception
        # rows be found by index, where a join would read every exception row there is.
        column = DIMENSIONS[dimension] if dimension else None
        facts = CaseFact.objects.filter(_source_q(scope) & split.edges_q()).order_by()
        groups = dict(facts.values_list("pk", column)) if column else None
        ids = list(groups) if column else list(facts.values_list("pk", flat=True))
        for start in range(0, len(ids), EDGE_CHUNK):
            rows = ExceptionFact.objects.filter(fact_id__in=ids[start : start + EDGE_CHUNK])
            for fact_id, exception_type, occurrences in rows.values_list(
                "fact_id", "exception_type", "occurrences"
            ):
                add(groups[fact_id] if column else None, exception_type, occurrences)
    return out


def _grouped(sums: dict[tuple, dict], position: int | None) -> dict[Any, dict[str, Any]]:
    """Sums collapsed onto one key position (None: everything into one total)."""
    out: dict[Any, dict[str, Any]] = {}
    for key, row in sums.items():
        _add(out, key[position] if position is not None else None, row, ROLLUP_MEASURES)
    return out


def _values(sums: dict[tuple, dict], position: int | None) -> dict[Any, dict]:
    """{group: {currency: {promised, paid, arranged}}} from sums keyed (…, value_kind,
    value_currency), amounts as decimal strings."""
    out: dict[Any, dict] = defaultdict(lambda: defaultdict(dict))
    for key, row in sums.items():
        kind, currency = key[-2], key[-1]
        if kind:
            amount = Decimal(row["value_amount"]).quantize(Decimal("0.01"))
            out[key[position] if position is not None else None][currency][kind] = str(amount)
    return {key: {cur: dict(kinds) for cur, kinds in value.items()} for key, value in out.items()}


def _percentiles(scope: Scope, column: str | None) -> dict[Any, dict]:
    """{group value: {name_p50, name_p90}}: exact, so read from the facts, never rolled up."""
    queryset = facts_in(scope)
    out: dict[Any, dict] = defaultdict(dict)
    if _on_postgres():
        aggregates = {}
        for name, field in DURATIONS.items():
            aggregates[f"{name}_p50"] = PercentileCont(field, 0.5)
            aggregates[f"{name}_p90"] = PercentileCont(field, 0.9)
        if column is None:
            out[None] = queryset.aggregate(**aggregates)
        else:
            for row in queryset.values(column).annotate(**aggregates):
                out[row.pop(column)] = row
        return out
    for name, field in DURATIONS.items():
        values: dict[Any, list[float]] = defaultdict(list)
        fields = (column, field) if column else (field,)
        rows = queryset.filter(**{f"{field}__isnull": False}).values_list(*fields)
        for row in rows:
            values[row[0] if column else None].append(row[-1])
        for key, numbers in values.items():
            out[key][f"{name}_p50"] = percentile(numbers, 0.5)
            out[key][f"{name}_p90"] = percentile(numbers, 0.9)
    return out


def _shape(row: dict[str, Any], costs: UnitCost, values: dict, exceptions: dict) -> dict:
    """The figures of one group, from its raw aggregates."""
    cases = row["cases"] or 0
    completed = row["completed"] or 0
    messages = {channel: row[f"sent_{channel}"] or 0 for channel in ("sms", "email", "whatsapp")}
    message_cost = sum(
        (costs.per_message(channel) * count for channel, count in messages.items()), Decimal(0)
    )
    agent_minutes = Decimal(str(row["handle_seconds_total"] or 0)) / 60
    agent_cost = agent_minutes * costs.agent_minute
    total = message_cost + agent_cost
    had_agent = costs.agent_minutes_per_case * costs.agent_minute

    def money(amount: Decimal | None) -> str | None:
        return None if amount is None else str(amount.quantize(Decimal("0.01")))

    durations = {}
    for name in DURATIONS:
        p50, p90 = row.get(f"{name}_p50"), row.get(f"{name}_p90")
        durations[name] = {
            "cases": row[f"{name}_cases"] or 0,
            "median_seconds": None if p50 is None else round(p50, 1),
            "p90_seconds": None if p90 is None else round(p90, 1),
        }
    return {
        "cases": cases,
        "completed": completed,
        "completion_rate": _rate(completed, cases),
        **durations,
        "writeback": {
            "finished": row["wb_finished"],
            "first_attempt": row["wb_first_attempt"],
            "eventual": row["wb_eventual"],
            "first_attempt_rate": _rate(row["wb_first_attempt"], row["wb_finished"]),
            "eventual_rate": _rate(row["wb_eventual"], row["wb_finished"]),
        },
        "closed": row["closed"],
        "deflected": row["deflected"],
        "deflection_rate": _rate(row["deflected"], row["closed"]),
        "manual_touch": row["manual_touch"],
        "manual_touch_rate": _rate(row["manual_touch"], cases),
        "exceptions": {
            "total": row["exceptions_total"] or 0,
            "cases": row["exception_cases"],
            "share": _rate(row["exception_cases"], cases),
            "by_type": exceptions,
        },
        "value": values,
        "cost": {
            "currency": costs.currency,
            "messages": messages,
            "message_cost": money(message_cost),
            "agent_minutes": str(agent_minutes.quantize(Decimal("0.1"))),
            "agent_cost": money(agent_cost),
            "total": money(total),
            "per_resolved_case": money(total / completed) if completed else None,
            "agent_handled_per_case": money(had_agent),
            "agent_handled_total": money(had_agent * cases),
        },
    }


def _order(group: Any) -> tuple:
    return (group is None, group)


def metrics_summary(*, scope: Scope, by: str | None = None, costs: UnitCost | None = None) -> dict:
    """The issue's per-workflow figures for the scope, overall and (with `by`, one of
    BREAKDOWNS) per channel, sequence step, template variant, template or segment."""
    from metrics.services import unit_cost_get

    costs = costs or unit_cost_get()
    value_keys = ("value_kind", "value_currency")
    sums = _sums(scope, keys=value_keys)
    overall = _grouped(sums, None).get(None) or {name: 0 for name in ROLLUP_MEASURES}
    summary = _shape(
        {**overall, **_percentiles(scope, None).get(None, {})},
        costs,
        _values(sums, None).get(None, {}),
        _exception_sums(scope).get(None, {}),
    )
    result: dict[str, Any] = {"overall": summary}
    if by:
        sums = _sums(scope, dimension=by, keys=("group", *value_keys))
        groups = _grouped(sums, 0)
        percentiles = _percentiles(scope, BREAKDOWNS[by])
        values, exceptions = _values(sums, 0), _exception_sums(scope, dimension=by)
        result["breakdown"] = {
            "by": by,
            "rows": [
                {
                    "group": group,
                    **_shape(
                        {**groups[group], **percentiles.get(group, {})},
                        costs,
                        values.get(group, {}),
                        exceptions.get(group, {}),
                    ),
                }
                for group in sorted(groups, key=_order)
                if groups[group]["cases"]
            ],
        }
    return result


def metrics_funnel(*, scope: Scope, by: str | None = None) -> dict:
    """Cases reaching each funnel stage (or a later one), and each step's conversion from
    the stage before."""

    def steps(row: dict[str, Any]) -> list[dict]:
        out, previous = [], None
        for stage in Stage:
            cases = row.get(f"reached_{stage.value}", 0)
            out.append(
                {
                    "stage": stage.name.lower(),
                    "label": stage.label,
                    "cases": cases,
                    "conversion": _rate(cases, previous) if previous is not None else None,
                    "of_triggered": _rate(cases, row.get("reached_0", 0)),
                }
            )
            previous = cases
        return out

    overall = _grouped(_sums(scope), None).get(None, {})
    result: dict[str, Any] = {"overall": steps(overall)}
    if by:
        groups = _grouped(_sums(scope, dimension=by, keys=("group",)), 0)
        result["breakdown"] = {
            "by": by,
            "rows": [
                {"group": group, "steps": steps(groups[group])}
                for group in sorted(groups, key=_order)
                if groups[group]["cases"]
            ],
        }
    return result


OUTCOME_MEASURES = [name for name in ROLLUP_MEASURES if name.startswith("outcome_")]


def metrics_cohorts(*, scope: Scope) -> list[dict]:
    """Cases triggered each week (Monday to Sunday, UTC) and where they ended; a case still
    under way counts as "open"."""
    weeks: dict[dt.date, dict[str, int]] = {}
    for (day,), row in _sums(scope, keys=("day",)).items():
        day = day.date() if isinstance(day, dt.datetime) else day
        buckets = weeks.setdefault(day - dt.timedelta(days=day.weekday()), {})
        for name in OUTCOME_MEASURES:
            if row[name]:
                bucket = name.removeprefix("outcome_")
                buckets[bucket] = buckets.get(bucket, 0) + row[name]
    return [
        {"week_start": week.isoformat(), "cases": sum(buckets.values()), "outcomes": buckets}
        for week, buckets in sorted(weeks.items())
        if buckets
    ]


# --- readiness ---------------------------------------------------------------------------------


def metrics_readiness(
    *,
    now: dt.datetime,
    workflow_key: str | None = None,
    api_client_id: int | None = None,
    days: int = READINESS_DAYS,
) -> list[dict]:
    """Per workflow, the last `days` days' shares, flags and the split against the 80/15/5
    target; manual touch is compared with the two cycles (of `days` days) before."""
    window = dt.timedelta(days=days)
    cycles = {}
    for name, number in (("current", 1), ("previous", 2), ("before", 3)):
        scope = Scope(
            workflow_key=workflow_key,
            since=now - window * number,
            until=now - window * (number - 1),
            api_client_id=api_client_id,
        )
        cycles[name] = _grouped(_sums(scope, keys=("workflow_key",)), 0)
    rows = []
    for key in sorted(cycles["current"]):
        current = cycles["current"][key]
        row = {
            "workflow_key": key,
            **current,
            "abandoned": current["outcome_abandoned"],
            "handled_by_agent": current["manual_touch"],
            "messaged": current[f"reached_{Stage.SENT.value}"],
            "writeback_succeeded": current["wb_eventual"],
        }
        for name in ("previous", "before"):
            earlier = cycles[name].get(key, {})
            row[f"{name}_cases"] = earlier.get("cases", 0)
            row[f"{name}_manual"] = earlier.get("manual_touch", 0)
        if row["cases"]:
            rows.append(_readiness_shape(row))
    return rows


def _flag(key: str, label: str, value: float | None, raised: bool, verdict: str) -> dict:
    return {"key": key, "label": label, "value": value, "raised": raised, "verdict": verdict}


def _readiness_shape(row: dict[str, Any]) -> dict:
    cases = row["cases"]
    share = {
        name: _rate(row[name], cases)
        for name in ("completed_by_rule", "completed_with_agent", "abandoned")
    }
    split = {name: _rate(row[name], cases) or 0.0 for name in TARGET_SPLIT}
    split["other"] = round(max(0.0, 1 - sum(split.values())), 4)
    manual = [
        _rate(row["before_manual"], row["before_cases"]),
        _rate(row["previous_manual"], row["previous_cases"]),
        _rate(row["handled_by_agent"], cases),
    ]
    abandonment = _rate(row["abandoned_after_message"], row["messaged"])
    corrections = _rate(row["corrected"], row["submitted_cases"])
    writeback = _rate(row["writeback_succeeded"], row["wb_finished"])
    engaged_agent = _rate(row["engaged_needing_agent"], row["engaged"])
    exceptions = _rate(row["exception_cases"], cases)
    no_fall = None not in manual and manual[2] > 0 and manual[2] >= manual[1] >= manual[0]
    flags = [
        _flag(
            "routine_share",
            "Completed by rule ≥ 60%: a good candidate",
            share["completed_by_rule"],
            (share["completed_by_rule"] or 0) >= 0.60,
            "good_candidate",
        ),
        _flag(
            "abandonment_after_first_message",
            "Abandoned after the first message > 25%",
            abandonment,
            (abandonment or 0) > 0.25,
            "review",
        ),
        _flag(
            "agent_corrections",
            "Agent corrections > 10% of submitted outcomes",
            corrections,
            (corrections or 0) > 0.10,
            "review",
        ),
        _flag(
            "writeback_success",
            "Writeback success < 95%: not ready to scale",
            writeback,
            writeback is not None and writeback < 0.95,
            "not_ready_to_scale",
        ),
        _flag(
            "manual_touch_not_falling",
            "No fall in manual touch over two cycles: pause expansion",
            manual[2],
            bool(no_fall),
            "pause_expansion",
        ),
        _flag(
            "engaged_needing_agent",
            "> 20% of engaged customers still need an agent",
            engaged_agent,
            (engaged_agent or 0) > 0.20,
            "review",
        ),
        _flag(
            "exception_share",
            "Exceptions on > 30% of cases",
            exceptions,
            (exceptions or 0) > 0.30,
            "review",
        ),
    ]
    return {
        "workflow": row["workflow_key"],
        "cases": cases,
        "shares": share,
        "split": split,
        "target_split": TARGET_SPLIT,
        "manual_touch_by_cycle": manual,
        "flags": flags,
    }


def workflow_keys() -> list[str]:
    """Workflows that have cases with facts, for filters."""
    from policies.models import Workflow

    return sorted(set(Workflow.objects.values_list("key", flat=True)))


# --- exports -----------------------------------------------------------------------------------

EXPORT_PAGE = 2000
EVENT_COLUMNS = ("id", "case_id", "workflow", "kind", "actor", "created_at", "data")
CASE_COLUMNS = (
    "id",
    "workflow",
    "workflow_version",
    "event_id",
    "customer_external_id",
    "segment",
    "state",
    "outcome",
    "priority",
    "escalation_reason",
    "triggered_at",
    "first_sent_at",
    "opened_at",
    "verified_at",
    "submitted_at",
    "written_back_at",
    "closed_at",
    "expires_at",
)


def events_export(
    *, api_client_id: int, since: dt.datetime | None, after: int | None
) -> Iterator[dict[str, Any]]:
    """A client's case events in id order, page by page (keyset on the id, so a page costs
    the same at the end of ten million rows as at the start)."""
    from cases.models import CaseEvent

    last = after or 0
    while True:
        page = CaseEvent.objects.filter(case__api_client_id=api_client_id, id__gt=last)
        if since is not None:
            page = page.filter(created_at__gte=since)
        rows = list(
            page.order_by("id").values_list(
                "id", "case_id", "case__workflow__key", "kind", "actor", "created_at", "data"
            )[:EXPORT_PAGE]
        )
        for row in rows:
            yield dict(zip(EVENT_COLUMNS, row, strict=True))
        if len(rows) < EXPORT_PAGE:
            return
        last = rows[-1][0]


def cases_export(
    *, api_client_id: int, since: dt.datetime | None, after: Any | None
) -> Iterator[dict[str, Any]]:
    """A client's cases in id order (uuid7: the order they arrived), page by page. No
    contact details: the source's own customer id is enough to join them up."""
    from cases.models import Case

    fields = (
        "id",
        "workflow__key",
        "workflow__version",
        "event_id",
        "customer__external_id",
        *CASE_COLUMNS[5:],
    )
    last = after
    while True:
        page = Case.objects.filter(api_client_id=api_client_id)
        if since is not None:
            page = page.filter(triggered_at__gte=since)
        if last is not None:
            page = page.filter(id__gt=last)
        rows = list(page.order_by("id").values_list(*fields)[:EXPORT_PAGE])
        for row in rows:
            yield dict(zip(CASE_COLUMNS, row, strict=True))
        if len(rows) < EXPORT_PAGE:
            return
        last = rows[-1][0]
