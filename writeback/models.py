"""Writeback: where outcomes go (targets), what was submitted (the outbox of outcomes and
their operations), each target's circuit breaker, and the daily reconciliation report.

The delivery itself lives in writeback/services.py; attempts are CaseEvents, not rows
here, because the timeline is the truth."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.timezone import now

from cases.models import Actor, uuid7


class WritebackTarget(models.Model):
    """A system of record that outcomes are posted to. Workflows name it by `key`."""

    class Kind(models.TextChoices):
        REST = "rest", "REST/JSON API"
        FILE = "file", "CSV files in a drop folder"

    class AuthKind(models.TextChoices):
        NONE = "none", "None"
        BEARER = "bearer", "Bearer token"
        BASIC = "basic", "HTTP basic (password = the secret)"
        HMAC = "hmac", "HMAC-SHA256 signature (X-Signature)"

    key = models.SlugField(max_length=100, unique=True, help_text="Workflows name it by this.")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.REST)
    base_url = models.CharField(
        max_length=300, blank=True, help_text="Blank: the CORE_API_URL setting."
    )
    auth_kind = models.CharField(max_length=8, choices=AuthKind.choices, default=AuthKind.NONE)
    # Only the NAME of an environment variable: secrets never enter the database.
    secret_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the token, e.g. CORE_API_TOKEN.",
    )
    basic_username = models.CharField(max_length=100, blank=True, default="closeloop")
    timeout_seconds = models.FloatField(default=10.0, help_text="Per request.")
    success_statuses = models.CharField(max_length=200, default="200-299")
    retryable_statuses = models.CharField(
        max_length=200,
        default="408,409,425,429,500-599",
        help_text="Answers worth trying again later. Timeouts and refused connections always are.",
    )
    permanent_statuses = models.CharField(
        max_length=200,
        default="400-407,410-424,426-428,430-499",
        help_text="Answers that no retry will change: the case goes to its exception route.",
    )
    max_attempts = models.PositiveSmallIntegerField(default=6)
    backoff_base_seconds = models.FloatField(default=30.0)
    backoff_cap_seconds = models.FloatField(default=3600.0)
    breaker_threshold = models.PositiveSmallIntegerField(
        default=5, help_text="Consecutive failures that open the circuit breaker."
    )
    breaker_cooldown_seconds = models.PositiveIntegerField(
        default=60, help_text="How long an open breaker holds jobs before one probe."
    )
    operations = models.JSONField(
        default=dict,
        blank=True,
        help_text="Per action, the list of operations at the target (see docs/writeback.md).",
    )
    drop_folder = models.CharField(
        max_length=500, blank=True, help_text="File kind only: where CSV files are written."
    )
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key})"

    def clean(self) -> None:
        from writeback.mapping import target_problems

        problems = target_problems(self)
        if problems:
            raise ValidationError(problems)


class Breaker(models.Model):
    """A target's circuit breaker, shared by every worker through this row (updated under
    a row lock). Open: the target's jobs wait, pending, without calling it."""

    class State(models.TextChoices):
        CLOSED = "closed", "Closed (calls go through)"
        OPEN = "open", "Open (jobs held)"
        HALF_OPEN = "half_open", "Half-open (one probe in flight)"

    target = models.OneToOneField(WritebackTarget, on_delete=models.CASCADE, related_name="breaker")
    state = models.CharField(max_length=10, choices=State.choices, default=State.CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    # The one probe allowed through a half-open breaker; if its worker dies, another may
    # probe once this passes.
    probe_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.target.key}: {self.state}"


class Outcome(models.Model):
    """One submitted outcome and its writeback job (the outbox row), written in the same
    transaction as the case's submit_action / complete_by_agent."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending (claimed by a worker)"
        CONFIRMED = "confirmed", "Confirmed by the target"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    case = models.ForeignKey("cases.Case", on_delete=models.PROTECT, related_name="outcomes")
    target = models.ForeignKey(WritebackTarget, on_delete=models.PROTECT, related_name="outcomes")
    action = models.CharField(max_length=64)
    values = models.JSONField(default=dict, blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    documents = models.JSONField(default=list, blank=True)
    actor = models.CharField(max_length=16, choices=Actor.choices, default=Actor.CUSTOMER)
    submission_key = models.CharField(max_length=100, blank=True)
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=now)
    lease_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True, editable=False)
    last_error = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=now)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["case", "submission_key"],
                condition=~Q(submission_key=""),
                name="outcome_submission_key_per_case",
            ),
            # A case has one live outcome; a failed one may be replaced by an agent's.
            models.UniqueConstraint(
                fields=["case"], condition=~Q(state="failed"), name="outcome_one_live_per_case"
            ),
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="outcome_due")]

    def __str__(self) -> str:
        return f"{self.action} for case {self.case_id} ({self.state})"


class Operation(models.Model):
    """One operation of an outcome at the target (an arrangement, a note, a document…),
    confirmed on its own so that a retry re-does only what is not yet confirmed."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACKNOWLEDGED = "acknowledged", "Acknowledged, read-back to do"
        CONFIRMED = "confirmed", "Confirmed"
        FAILED = "failed", "Failed"

    outcome = models.ForeignKey(Outcome, on_delete=models.CASCADE, related_name="operations")
    position = models.PositiveSmallIntegerField()
    key = models.CharField(max_length=120, help_text="Operation name (and document number).")
    spec_name = models.CharField(max_length=100)
    document_index = models.PositiveSmallIntegerField(null=True, blank=True)
    status = models.CharField(max_length=14, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    target_reference = models.CharField(max_length=200, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["outcome", "position"]
        constraints = [
            models.UniqueConstraint(fields=["outcome", "key"], name="operation_key_per_outcome")
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class ReconciliationReport(models.Model):
    """What one reconciliation run found and re-drove."""

    created_at = models.DateTimeField(default=now)
    source = models.CharField(max_length=16, default="schedule")  # schedule | command
    dry_run = models.BooleanField(default=False)
    pending = models.PositiveIntegerField(default=0)
    unacknowledged = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    redriven = models.PositiveIntegerField(default=0)
    confirmed = models.PositiveIntegerField(default=0)
    still_open = models.PositiveIntegerField(default=0)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Reconciliation {self.created_at:%Y-%m-%d %H:%M}"
