"""Metrics: one fact row per case, rebuilt from the case's timeline, and the unit costs
staff set in the admin.

A CaseFact is a cache, not a record: `metrics.services.case_facts_refresh` recomputes it
from the case row and its CaseEvents at any time, and `manage.py metrics_rebuild` rebuilds
them all. The dashboard and the API aggregate facts because a million cases' timelines
(ten million events) cannot be re-read for every page view."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.validators import MinValueValidator
from django.db import models
from django.utils.timezone import now

ZERO = Decimal("0")


class UnitCost(models.Model):
    """What one message and one agent-minute cost, for cost per resolved case. One row
    (`unit_cost_get` creates it); staff edit it in the admin."""

    currency = models.CharField(max_length=3, default="GBP", help_text="ISO 4217, e.g. GBP")
    sms_message = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        default=Decimal("0.0400"),
        validators=[MinValueValidator(ZERO)],
    )
    email_message = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        default=Decimal("0.0010"),
        validators=[MinValueValidator(ZERO)],
    )
    whatsapp_message = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        default=Decimal("0.0300"),
        validators=[MinValueValidator(ZERO)],
    )
    agent_minute = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        default=Decimal("0.5000"),
        validators=[MinValueValidator(ZERO)],
    )
    agent_minutes_per_case = models.DecimalField(
        max_digits=8,
        decimal_places=2,
        default=Decimal("12.00"),
        validators=[MinValueValidator(ZERO)],
        help_text="Minutes an agent would take to handle one case by phone or letter: the "
        "comparison for cost per resolved case.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "unit costs"
        verbose_name_plural = "unit costs"

    def __str__(self) -> str:
        return f"Unit costs ({self.currency})"

    def per_message(self, channel: str) -> Decimal:
        return getattr(self, f"{channel}_message", ZERO)


class Stage(models.IntegerChoices):
    """The drop-off funnel, in order. A case's stage is the furthest it reached."""

    TRIGGERED = 0, "Triggered"
    SENT = 1, "Sent"
    DELIVERED = 2, "Delivered"
    OPENED = 3, "Opened"
    VERIFIED = 4, "Verified"
    OPTION_CHOSEN = 5, "Option chosen"
    SUBMITTED = 6, "Submitted"
    WRITTEN_BACK = 7, "Written back"


class CaseFact(models.Model):
    """One case's journey, summarised from its timeline for aggregation."""

    case = models.OneToOneField(
        "cases.Case", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    api_client_id = models.IntegerField()
    workflow_key = models.CharField(max_length=64)
    workflow_version = models.PositiveIntegerField()
    segment = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=32)
    outcome = models.CharField(max_length=32, blank=True)
    triggered_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True)
    # Attribution: the sequence message that brought the customer in (the last one sent
    # before the link was first opened), or the last one sent if it never was.
    channel = models.CharField(max_length=16, blank=True)
    step = models.PositiveSmallIntegerField(null=True)
    variant = models.CharField(max_length=16, blank=True)
    template = models.CharField(max_length=64, blank=True)
    stage = models.PositiveSmallIntegerField(choices=Stage.choices, default=Stage.TRIGGERED)
    messages_sms = models.PositiveIntegerField(default=0)
    messages_email = models.PositiveIntegerField(default=0)
    messages_whatsapp = models.PositiveIntegerField(default=0)
    opened = models.BooleanField(default=False)
    submitted = models.BooleanField(default=False)
    resolved = models.BooleanField(default=False, help_text="Writeback confirmed")
    escalated = models.BooleanField(default=False)
    agent_touched = models.BooleanField(default=False)
    agent_corrected = models.BooleanField(default=False)
    exceptions = models.PositiveIntegerField(default=0)
    writeback_finished = models.BooleanField(default=False)
    writeback_first_attempt = models.BooleanField(default=False)
    resolution_seconds = models.FloatField(null=True)
    action_seconds = models.FloatField(null=True)
    handle_seconds = models.FloatField(null=True)
    value_kind = models.CharField(max_length=16, blank=True)  # promised | paid | arranged
    value_amount = models.DecimalField(max_digits=14, decimal_places=2, null=True)
    value_currency = models.CharField(max_length=3, blank=True)
    refreshed_at = models.DateTimeField(default=now)

    class Meta:
        indexes = [
            models.Index(
                fields=["workflow_key", "triggered_at"], name="casefact_workflow_triggered"
            ),
            models.Index(fields=["triggered_at"], name="casefact_triggered"),
        ]

    def __str__(self) -> str:
        return f"Facts of case {self.case_id}"


class ExceptionFact(models.Model):
    """How often one exception type was routed on one case."""

    fact = models.ForeignKey(CaseFact, on_delete=models.CASCADE, related_name="exception_rows")
    exception_type = models.CharField(max_length=32)
    occurrences = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["fact", "exception_type"], name="exceptionfact_once")
        ]

    def __str__(self) -> str:
        return f"{self.exception_type} ×{self.occurrences}"


class RefreshMark(models.Model):
    """How far the refresh job has read the timeline: every event with a smaller id is
    reflected in the facts. One row."""

    last_event_id = models.BigIntegerField(default=0)
    refreshed_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"Facts up to event {self.last_event_id}"


# --- daily rollups ---------------------------------------------------------------------------

# What a DailyRollup row adds up over the CaseFacts of its day and group: name → (how, what).
# "count" counts the facts matching the condition; "sum" adds a column up. One definition
# serves the model's columns, the rebuild (metrics/rollups.py) and every selector.
ROLLUP_MEASURES: dict[str, tuple[str, Any]] = {
    "cases": ("count", models.Q()),
    "completed": ("count", models.Q(resolved=True)),
    "closed": ("count", models.Q(closed_at__isnull=False)),
    "deflected": ("count", models.Q(closed_at__isnull=False, agent_touched=False)),
    "manual_touch": ("count", models.Q(agent_touched=True)),
    "wb_finished": ("count", models.Q(writeback_finished=True)),
    "wb_first_attempt": ("count", models.Q(writeback_first_attempt=True)),
    "wb_eventual": ("count", models.Q(writeback_finished=True, resolved=True)),
    "exception_cases": ("count", models.Q(exceptions__gt=0)),
    "exceptions_total": ("sum", "exceptions"),
    "sent_sms": ("sum", "messages_sms"),
    "sent_email": ("sum", "messages_email"),
    "sent_whatsapp": ("sum", "messages_whatsapp"),
    "handle_seconds_total": ("sum", "handle_seconds"),
    "handled_by_agent_timed": ("count", models.Q(handle_seconds__isnull=False)),
    "time_to_resolution_cases": ("count", models.Q(resolution_seconds__isnull=False)),
    "time_to_action_cases": ("count", models.Q(action_seconds__isnull=False)),
    "agent_handle_time_cases": ("count", models.Q(handle_seconds__isnull=False)),
    **{f"reached_{stage.value}": ("count", models.Q(stage__gte=stage.value)) for stage in Stage},
    "outcome_open": ("count", models.Q(outcome="")),
    **{
        f"outcome_{value}": ("count", models.Q(outcome=value))
        for value in (
            "resolved_in_message",
            "escalated_with_context",
            "abandoned",
            "writeback_failed",
            "completed_by_agent",
            "cancelled",
            "closed_by_rule",
        )
    },
    "completed_by_rule": ("count", models.Q(resolved=True, agent_touched=False, exceptions=0)),
    "routed_as_exception": ("count", models.Q(exceptions__gt=0, agent_touched=False)),
    "completed_with_agent": ("count", models.Q(agent_touched=True, closed_at__isnull=False)),
    "abandoned_after_message": (
        "count",
        models.Q(stage__gte=Stage.SENT, outcome="abandoned"),
    ),
    "submitted_cases": ("count", models.Q(submitted=True)),
    "corrected": ("count", models.Q(agent_corrected=True)),
    "engaged": ("count", models.Q(opened=True)),
    "engaged_needing_agent": (
        "count",
        models.Q(opened=True) & (models.Q(escalated=True) | models.Q(agent_touched=True)),
    ),
    "value_amount": ("sum", "value_amount"),
}


class DailyRollup(models.Model):
    """The CaseFacts of one UTC day, one workflow and one API client, added up overall
    (dimension "") or per value of one breakdown dimension, and per value kind/currency.

    Like the facts, a cache: `metrics.rollups` rebuilds a day's rows from its facts in the
    same transaction as the facts change. The dashboard adds up whole days here and reads
    only the partial days at a period's edges from the facts, so a year costs a few
    thousand rows instead of a million."""

    day = models.DateField()
    workflow_key = models.CharField(max_length=64)
    api_client_id = models.IntegerField()
    dimension = models.CharField(max_length=16, blank=True)  # "" or a key of BREAKDOWNS
    dimension_value = models.CharField(max_length=64, blank=True)
    value_kind = models.CharField(max_length=16, blank=True)
    value_currency = models.CharField(max_length=3, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "day",
                    "workflow_key",
                    "api_client_id",
                    "dimension",
                    "dimension_value",
                    "value_kind",
                    "value_currency",
                ],
                name="dailyrollup_once",
            )
        ]
        indexes = [
            models.Index(fields=["dimension", "day"], name="dailyrollup_dimension_day"),
            models.Index(
                fields=["dimension", "workflow_key", "day"], name="dailyrollup_dim_workflow_day"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_key} on {self.day} ({self.dimension or 'overall'})"


# The measure columns are added from ROLLUP_MEASURES rather than spelled out, so a measure
# cannot be counted by the rebuild and forgotten by the model (or the other way round).
for _name, (_how, _what) in ROLLUP_MEASURES.items():
    if _name == "value_amount":
        _field = models.DecimalField(max_digits=18, decimal_places=2, default=ZERO)
    elif _name == "handle_seconds_total":
        _field = models.FloatField(default=0)
    else:
        _field = models.BigIntegerField(default=0)
    DailyRollup.add_to_class(_name, _field)


class ExceptionRollup(models.Model):
    """Exception occurrences of one type on one UTC day, workflow and API client, overall
    or per value of one breakdown dimension."""

    day = models.DateField()
    workflow_key = models.CharField(max_length=64)
    api_client_id = models.IntegerField()
    dimension = models.CharField(max_length=16, blank=True)
    dimension_value = models.CharField(max_length=64, blank=True)
    exception_type = models.CharField(max_length=32)
    occurrences = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "day",
                    "workflow_key",
                    "api_client_id",
                    "dimension",
                    "dimension_value",
                    "exception_type",
                ],
                name="exceptionrollup_once",
            )
        ]
        indexes = [
            models.Index(fields=["dimension", "day"], name="exceptionrollup_dimension_day"),
        ]

    def __str__(self) -> str:
        return f"{self.exception_type} ×{self.occurrences} on {self.day}"
