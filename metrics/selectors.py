"""Every figure on the dashboard and in the metrics API, read from CaseFacts (which are
recomputed from the timeline; see metrics/services.py). Definitions: docs/metrics.md.

Percentiles are PostgreSQL's `percentile_cont` (continuous, interpolated); on SQLite the
same interpolation runs in Python over the values."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Aggregate, Count, FloatField, Q, QuerySet, Sum
from django.db.models.functions import TruncWeek

from cases.models import CaseOutcome
from metrics.models import CaseFact, ExceptionFact, Stage, UnitCost

BREAKDOWNS = {
    "channel": "channel",
    "step": "step",
    "variant": "variant",
    "template": "template",
    "segment": "segment",
}
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


COUNTS = {
    "cases": Count("pk"),
    "completed": Count("pk", filter=Q(resolved=True)),
    "closed": Count("pk", filter=Q(closed_at__isnull=False)),
    "deflected": Count("pk", filter=Q(closed_at__isnull=False, agent_touched=False)),
    "manual_touch": Count("pk", filter=Q(agent_touched=True)),
    "wb_finished": Count("pk", filter=Q(writeback_finished=True)),
    "wb_first_attempt": Count("pk", filter=Q(writeback_first_attempt=True)),
    "wb_eventual": Count("pk", filter=Q(writeback_finished=True, resolved=True)),
    "exception_cases": Count("pk", filter=Q(exceptions__gt=0)),
    "exceptions_total": Sum("exceptions"),
    "sent_sms": Sum("messages_sms"),
    "sent_email": Sum("messages_email"),
    "sent_whatsapp": Sum("messages_whatsapp"),
    "handle_seconds_total": Sum("handle_seconds"),
    "handled_by_agent_timed": Count("handle_seconds"),
    **{f"{name}_cases": Count(column) for name, column in DURATIONS.items()},
}


def _aggregates() -> dict[str, Any]:
    aggregates = dict(COUNTS)
    if _on_postgres():
        for name, column in DURATIONS.items():
            aggregates[f"{name}_p50"] = PercentileCont(column, 0.5)
            aggregates[f"{name}_p90"] = PercentileCont(column, 0.9)
    return aggregates


def _python_percentiles(queryset: QuerySet[CaseFact], group: str | None) -> dict[Any, dict]:
    """{group value: {name_p50, name_p90}} computed in Python (SQLite)."""
    out: dict[Any, dict] = defaultdict(dict)
    for name, column in DURATIONS.items():
        values: dict[Any, list[float]] = defaultdict(list)
        fields = (group, column) if group else (column,)
        rows = queryset.filter(**{f"{column}__isnull": False}).values_list(*fields)
        for row in rows:
            values[row[0] if group else None].append(row[-1])
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


def _values(queryset: QuerySet[CaseFact], group: str | None) -> dict[Any, dict]:
    """{group: {currency: {promised, paid, arranged}}}, amounts as decimal strings."""
    fields = ([group] if group else []) + ["value_currency", "value_kind"]
    out: dict[Any, dict] = defaultdict(lambda: defaultdict(dict))
    rows = queryset.exclude(value_kind="").values(*fields).annotate(amount=Sum("value_amount"))
    for row in rows:
        key = row[group] if group else None
        amount = Decimal(row["amount"]).quantize(Decimal("0.01"))
        out[key][row["value_currency"]][row["value_kind"]] = str(amount)
    return {key: {cur: dict(kinds) for cur, kinds in value.items()} for key, value in out.items()}


def _exceptions(scope: Scope, group: str | None) -> dict[Any, dict[str, int]]:
    prefix_group = f"fact__{group}" if group else None
    fields = ([prefix_group] if group else []) + ["exception_type"]
    out: dict[Any, dict[str, int]] = defaultdict(dict)
    rows = (
        ExceptionFact.objects.filter(scope.q("fact__"))
        .order_by()
        .values(*fields)
        .annotate(n=Sum("occurrences"))
    )
    for row in rows:
        out[row[prefix_group] if group else None][row["exception_type"]] = row["n"]
    return out


def metrics_summary(*, scope: Scope, by: str | None = None, costs: UnitCost | None = None) -> dict:
    """The issue's per-workflow figures for the scope, overall and (with `by`, one of
    BREAKDOWNS) per channel, sequence step, template variant, template or segment."""
    from metrics.services import unit_cost_get

    costs = costs or unit_cost_get()
    queryset = facts_in(scope)
    overall = queryset.aggregate(**_aggregates())
    if not _on_postgres():
        overall.update(_python_percentiles(queryset, None).get(None, {}))
    summary = _shape(
        overall,
        costs,
        _values(queryset, None).get(None, {}),
        _exceptions(scope, None).get(None, {}),
    )
    result: dict[str, Any] = {"overall": summary}
    if by:
        column = BREAKDOWNS[by]
        rows = list(queryset.values(column).annotate(**_aggregates()).order_by(column))
        extra = {} if _on_postgres() else _python_percentiles(queryset, column)
        values, exceptions = _values(queryset, column), _exceptions(scope, column)
        result["breakdown"] = {
            "by": by,
            "rows": [
                {
                    "group": row[column],
                    **_shape(
                        {**row, **extra.get(row[column], {})},
                        costs,
                        values.get(row[column], {}),
                        exceptions.get(row[column], {}),
                    ),
                }
                for row in rows
            ],
        }
    return result


def metrics_funnel(*, scope: Scope, by: str | None = None) -> dict:
    """Cases reaching each funnel stage (or a later one), and each step's conversion from
    the stage before."""
    counts = {
        f"stage_{stage.value}": Count("pk", filter=Q(stage__gte=stage.value)) for stage in Stage
    }

    def steps(row: dict[str, Any]) -> list[dict]:
        out, previous = [], None
        for stage in Stage:
            cases = row[f"stage_{stage.value}"]
            out.append(
                {
                    "stage": stage.name.lower(),
                    "label": stage.label,
                    "cases": cases,
                    "conversion": _rate(cases, previous) if previous is not None else None,
                    "of_triggered": _rate(cases, row["stage_0"]),
                }
            )
            previous = cases
        return out

    queryset = facts_in(scope)
    result: dict[str, Any] = {"overall": steps(queryset.aggregate(**counts))}
    if by:
        column = BREAKDOWNS[by]
        rows = queryset.values(column).annotate(**counts).order_by(column)
        result["breakdown"] = {
            "by": by,
            "rows": [{"group": row[column], "steps": steps(row)} for row in rows],
        }
    return result


def metrics_cohorts(*, scope: Scope) -> list[dict]:
    """Cases triggered each week (Monday to Sunday, UTC) and where they ended; a case still
    under way counts as "open"."""
    rows = (
        facts_in(scope)
        .annotate(week=TruncWeek("triggered_at", tzinfo=dt.UTC))
        .values("week", "outcome")
        .annotate(cases=Count("pk"))
        .order_by("week")
    )
    weeks: dict[dt.date, dict[str, int]] = {}
    for row in rows:
        buckets = weeks.setdefault(row["week"].date(), {})
        bucket = row["outcome"] or "open"
        buckets[bucket] = buckets.get(bucket, 0) + row["cases"]
    return [
        {"week_start": week.isoformat(), "cases": sum(buckets.values()), "outcomes": buckets}
        for week, buckets in sorted(weeks.items())
    ]


# --- readiness ---------------------------------------------------------------------------------


def _routine() -> Q:
    return Q(resolved=True, agent_touched=False, exceptions=0)


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
    cycles = [now - window * n for n in (1, 2, 3)]  # starts of the current and two before
    scope = Scope(
        workflow_key=workflow_key, since=cycles[2], until=now, api_client_id=api_client_id
    )
    current = Q(triggered_at__gte=cycles[0])
    previous = Q(triggered_at__gte=cycles[1], triggered_at__lt=cycles[0])
    before = Q(triggered_at__lt=cycles[1])
    counts = {
        "cases": Count("pk", filter=current),
        "completed_by_rule": Count("pk", filter=current & _routine()),
        "routed_as_exception": Count(
            "pk", filter=current & Q(exceptions__gt=0, agent_touched=False)
        ),
        "handled_by_agent": Count("pk", filter=current & Q(agent_touched=True)),
        "completed_with_agent": Count(
            "pk", filter=current & Q(agent_touched=True, closed_at__isnull=False)
        ),
        "abandoned": Count("pk", filter=current & Q(outcome=CaseOutcome.ABANDONED)),
        "messaged": Count("pk", filter=current & Q(stage__gte=Stage.SENT)),
        "abandoned_after_message": Count(
            "pk", filter=current & Q(stage__gte=Stage.SENT, outcome=CaseOutcome.ABANDONED)
        ),
        "submitted_cases": Count("pk", filter=current & Q(submitted=True)),
        "corrected": Count("pk", filter=current & Q(agent_corrected=True)),
        "wb_finished": Count("pk", filter=current & Q(writeback_finished=True)),
        "writeback_succeeded": Count(
            "pk", filter=current & Q(writeback_finished=True, resolved=True)
        ),
        "engaged": Count("pk", filter=current & Q(opened=True)),
        "engaged_needing_agent": Count(
            "pk", filter=current & Q(opened=True) & (Q(escalated=True) | Q(agent_touched=True))
        ),
        "exception_cases": Count("pk", filter=current & Q(exceptions__gt=0)),
        "previous_cases": Count("pk", filter=previous),
        "previous_manual": Count("pk", filter=previous & Q(agent_touched=True)),
        "before_cases": Count("pk", filter=before),
        "before_manual": Count("pk", filter=before & Q(agent_touched=True)),
    }
    rows = facts_in(scope).values("workflow_key").annotate(**counts).order_by("workflow_key")
    return [_readiness_shape(row) for row in rows if row["cases"]]


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
