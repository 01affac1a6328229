from __future__ import annotations

import os
import time
import uuid
from typing import Any

from django.db import models, transaction
from django.utils.timezone import now
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from privacy.fields import EncryptedJSONField


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7). Case ids are public, so they must not be
    guessable like a sequence, yet time-ordered keys keep the primary-key index append-only
    when a million cases arrive in bulk."""
    unix_ms = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & (2**48 - 1)) << 80 | random_bits
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


class ApiClient(models.Model):
    """A source system allowed to push triggers. Only a hash of its key is kept."""

    name = models.CharField(max_length=100, unique=True)
    key_prefix = models.CharField(
        max_length=16, help_text="The first characters of the key, to tell keys apart."
    )
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    rate_limit = models.CharField(
        max_length=20,
        blank=True,
        help_text="Requests allowed, e.g. 1200/minute, or off; blank: the API_RATE_LIMIT setting.",
    )

    class Meta:
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Channel(models.TextChoices):
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"
    WHATSAPP = "whatsapp", "WhatsApp"


class Customer(models.Model):
    """A customer as a source system knows them. Known facts for identity checks are kept
    only as keyed hashes (see cases/known_facts.py)."""

    api_client = models.ForeignKey(ApiClient, on_delete=models.PROTECT, related_name="customers")
    external_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=20, blank=True, help_text="E.164, e.g. +447700900123")
    email = models.EmailField(blank=True)
    whatsapp = models.CharField(max_length=20, blank=True, help_text="E.164")
    # Encrypted at rest (privacy/fields.py): read on screens and in writebacks, never searched.
    address = EncryptedJSONField(
        default=dict, blank=True, help_text="lines, city, region, postcode, country"
    )
    locale = models.CharField(max_length=16, default="en")
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA zone name")
    preferred_channel = models.CharField(max_length=16, choices=Channel.choices, blank=True)
    # {"sms": {"value": true, "timestamp": "...Z", "source": "..."}, ...}
    consent = models.JSONField(default=dict, blank=True)
    flags = models.JSONField(
        default=list, blank=True, help_text="e.g. vulnerable, complaint_open, insolvency"
    )
    known_fact_salt = models.CharField(max_length=32, blank=True, editable=False)
    date_of_birth_hash = models.CharField(max_length=64, blank=True, editable=False)
    postcode_hash = models.CharField(max_length=64, blank=True, editable=False)
    account_last4_hash = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["api_client", "external_id"], name="customer_external_id_per_client"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name or 'Customer'} ({self.external_id})"

    def has_consent(self, channel: str) -> bool:
        return bool(self.consent.get(channel, {}).get("value"))


class CaseState(models.TextChoices):
    RECEIVED = "received", "Received"
    OUTREACH = "outreach", "In outreach"
    ENGAGED = "engaged", "Engaged (link opened)"
    VERIFIED = "verified", "Verified"
    ACTION_SUBMITTED = "action_submitted", "Submitted, awaiting writeback"
    RESOLVED = "resolved", "Resolved"
    ESCALATED = "escalated", "Escalated to an agent"
    WRITEBACK_FAILED = "writeback_failed", "Writeback failed"
    ABANDONED = "abandoned", "Abandoned"
    CANCELLED = "cancelled", "Cancelled by the source"
    CLOSED_BY_AGENT = "closed_by_agent", "Closed by an agent"
    CLOSED_BY_RULE = "closed_by_rule", "Closed by a rule"


class CaseOutcome(models.TextChoices):
    """Where a case ended, bucketed for metrics."""

    RESOLVED_IN_MESSAGE = "resolved_in_message", "Resolved in the message"
    ESCALATED_WITH_CONTEXT = "escalated_with_context", "Escalated with context"
    ABANDONED = "abandoned", "Abandoned"
    WRITEBACK_FAILED = "writeback_failed", "Writeback failed"
    COMPLETED_BY_AGENT = "completed_by_agent", "Completed by an agent"
    CANCELLED = "cancelled", "Cancelled by the source"
    CLOSED_BY_RULE = "closed_by_rule", "Closed by a rule"


class Actor(models.TextChoices):
    SYSTEM = "system", "System"
    CUSTOMER = "customer", "Customer"
    AGENT = "agent", "Agent"
    API = "api", "API client"


S = CaseState
OPEN_STATES = (S.RECEIVED, S.OUTREACH, S.ENGAGED, S.VERIFIED)
TERMINAL_STATES = frozenset(
    {S.RESOLVED, S.ABANDONED, S.CANCELLED, S.CLOSED_BY_AGENT, S.CLOSED_BY_RULE}
)


class Case(ConcurrentTransitionMixin, models.Model):
    """One trigger's journey from receipt to closure.

    The state changes only through the @transition methods below; each one queues its
    CaseEvent, which `save()` writes in the same transaction as the state. Concurrent
    writers are stopped twice over: services lock the row (SELECT … FOR UPDATE), and
    ConcurrentTransitionMixin refuses to save a state that changed since it was read.
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    workflow = models.ForeignKey("policies.Workflow", on_delete=models.PROTECT, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="cases")
    api_client = models.ForeignKey(ApiClient, on_delete=models.PROTECT, related_name="cases")
    event_id = models.CharField(max_length=200, help_text="The source system's id for the event")
    # Hash of the canonical trigger body: a replay with the same event_id must match it.
    body_fingerprint = models.CharField(max_length=64, editable=False)
    # Encrypted at rest: it repeats the customer's contact details and address, and is read
    # only to explain a replay's conflict.
    payload = EncryptedJSONField(help_text="The trigger as received, normalised")
    data = models.JSONField(help_text="The trigger's data, validated against the contract")
    segment = models.CharField(max_length=64, blank=True)
    state = FSMField(default=S.RECEIVED, choices=S.choices, protected=True, db_index=True)
    outcome = models.CharField(max_length=32, choices=CaseOutcome.choices, blank=True)
    # The actions (with bounds) this case was offered, and the policy version that decided
    # it: exactly what the customer was shown and why. Set once, before any outreach.
    offer = models.JSONField(null=True, blank=True)
    priority = models.PositiveSmallIntegerField(default=0, help_text="Queue priority, 0–100")
    escalation_reason = models.CharField(max_length=200, blank=True)
    triggered_at = models.DateTimeField(default=now)
    first_sent_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    written_back_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-triggered_at"]
        constraints = [
            # The idempotency guarantee lives in the database, not only in a lookup.
            models.UniqueConstraint(
                fields=["api_client", "event_id"], name="case_event_id_per_client"
            )
        ]
        indexes = [
            models.Index(fields=["workflow", "triggered_at"], name="case_workflow_triggered"),
            models.Index(fields=["customer", "triggered_at"], name="case_customer_triggered"),
        ]
        permissions = [
            # Auditors download a case's evidence bundle (cases/evidence.py): everything the
            # customer saw and agreed to, in one file, so it is a permission of its own.
            ("view_evidence", "Can download a case's evidence bundle"),
        ]

    def __str__(self) -> str:
        return f"Case {self.id} ({self.state})"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending_events: list[CaseEvent] = []

    # -- timeline ------------------------------------------------------------------------

    def save(self, *args: Any, **kwargs: Any) -> None:
        with transaction.atomic():
            super().save(*args, **kwargs)
            if self._pending_events:
                CaseEvent.objects.bulk_create(self._pending_events)
                self._pending_events = []

    def _record(self, kind: str, actor: str, data: dict[str, Any] | None = None) -> None:
        self._pending_events.append(
            CaseEvent(case=self, kind=kind, actor=actor, data=data or {}, created_at=now())
        )

    def _close(self, outcome: str) -> None:
        self.outcome = outcome
        self.closed_at = now()

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    # -- transitions: the whole lifecycle of a case ----------------------------------------

    @transition(field=state, source=S.RECEIVED, target=S.OUTREACH)
    def start_outreach(self, *, actor: str = Actor.SYSTEM, data: dict | None = None) -> None:
        self._record("outreach_started", actor, data)

    @transition(field=state, source=[S.RECEIVED, S.OUTREACH], target=S.ENGAGED)
    def engage(self, *, actor: str = Actor.CUSTOMER, data: dict | None = None) -> None:
        self.opened_at = self.opened_at or now()
        self._record("engaged", actor, data)

    @transition(field=state, source=S.ENGAGED, target=S.VERIFIED)
    def verify(self, *, actor: str = Actor.CUSTOMER, data: dict | None = None) -> None:
        self.verified_at = now()
        self._record("verified", actor, data)

    @transition(field=state, source=[S.ENGAGED, S.VERIFIED], target=S.ACTION_SUBMITTED)
    def submit_action(self, *, actor: str = Actor.CUSTOMER, data: dict | None = None) -> None:
        self.submitted_at = now()
        self._record("action_submitted", actor, data)

    @transition(field=state, source=S.ESCALATED, target=S.ACTION_SUBMITTED)
    def complete_by_agent(self, *, actor: str = Actor.AGENT, data: dict | None = None) -> None:
        """An agent records the outcome; it goes through the same writeback outbox."""
        self.submitted_at = now()
        self._record("completed_by_agent", actor, data)

    @transition(field=state, source=S.ACTION_SUBMITTED, target=S.RESOLVED)
    def confirm_writeback(self, *, actor: str = Actor.SYSTEM, data: dict | None = None) -> None:
        """Dual completion: resolved only once the system of record has confirmed."""
        self.written_back_at = now()
        by_agent = self.events.filter(kind="completed_by_agent").exists()
        self._close(CaseOutcome.COMPLETED_BY_AGENT if by_agent else CaseOutcome.RESOLVED_IN_MESSAGE)
        self._record("writeback_confirmed", actor, data)

    @transition(field=state, source=S.ACTION_SUBMITTED, target=S.WRITEBACK_FAILED)
    def fail_writeback(self, *, actor: str = Actor.SYSTEM, data: dict | None = None) -> None:
        self.outcome = CaseOutcome.WRITEBACK_FAILED
        self._record("writeback_failed", actor, data)

    @transition(field=state, source=S.WRITEBACK_FAILED, target=S.ACTION_SUBMITTED)
    def retry_writeback(self, *, actor: str = Actor.AGENT, data: dict | None = None) -> None:
        self.outcome = ""
        self._record("writeback_retried", actor, data)

    @transition(field=state, source=[*OPEN_STATES, S.WRITEBACK_FAILED], target=S.ESCALATED)
    def escalate(self, *, actor: str = Actor.SYSTEM, data: dict | None = None) -> None:
        """To the agents' queue; `data` may carry `priority` and `reason`."""
        data = data or {}
        self.outcome = CaseOutcome.ESCALATED_WITH_CONTEXT
        self.priority = int(data.get("priority", self.priority or 50))
        self.escalation_reason = str(data.get("reason", ""))[:200]
        self._record("escalated", actor, data)

    @transition(field=state, source=S.ESCALATED, target=S.OUTREACH)
    def offer_again(self, *, actor: str = Actor.AGENT, data: dict | None = None) -> None:
        """An agent sends the customer a new link with another offer (agents/services.py);
        `data` carries the offer before and after, who and why."""
        self.outcome = ""
        self.escalation_reason = ""
        self._record("offered_again", actor, data)

    @transition(field=state, source=list(OPEN_STATES), target=S.CLOSED_BY_RULE)
    def close_by_rule(self, *, actor: str = Actor.SYSTEM, data: dict | None = None) -> None:
        """A rule closed the case without outreach (a fork rule, a pilot's fallback, an
        exception route); `data` carries the reason and the rule."""
        self._close(CaseOutcome.CLOSED_BY_RULE)
        self._record("closed_by_rule", actor, data)

    @transition(field=state, source=list(OPEN_STATES), target=S.ABANDONED)
    def abandon(self, *, actor: str = Actor.SYSTEM, data: dict | None = None) -> None:
        self._close(CaseOutcome.ABANDONED)
        self._record("abandoned", actor, data)

    @transition(
        field=state, source=[*OPEN_STATES, S.ESCALATED, S.WRITEBACK_FAILED], target=S.CANCELLED
    )
    def cancel(self, *, actor: str = Actor.API, data: dict | None = None) -> None:
        """The source system resolved it elsewhere. Not while an outcome awaits writeback:
        that outcome is the customer's and must reach the system of record."""
        self._close(CaseOutcome.CANCELLED)
        self._record("cancelled", actor, data)

    @transition(field=state, source=[S.ESCALATED, S.WRITEBACK_FAILED], target=S.CLOSED_BY_AGENT)
    def close_by_agent(self, *, actor: str = Actor.AGENT, data: dict | None = None) -> None:
        self._close(CaseOutcome.ESCALATED_WITH_CONTEXT)
        self._record("closed_by_agent", actor, data)


class CaseEventQuerySet(models.QuerySet):
    """Bulk update() and delete() skip the model's save() and delete() (the admin's "delete
    selected" action among them), so the append-only rule is enforced here too."""

    def update(self, **kwargs: Any) -> int:
        raise RuntimeError("Case events are append-only; record a new event instead.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise RuntimeError("Case events are append-only and cannot be deleted.")


class CaseEvent(models.Model):
    """The append-only timeline of a case. Metrics, the agents' case page and exports read
    these rows; the application never updates or deletes one.

    Each case's events form a hash chain (cases/evidence.py): the sealer job fills
    `chain_position`, `prev_hash` and `hash` once, shortly after the event is written, so an
    event edited or deleted later no longer matches the chain. Until then they are empty."""

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="events")
    kind = models.CharField(max_length=64)
    actor = models.CharField(max_length=16, choices=Actor.choices)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=now)
    chain_position = models.PositiveIntegerField(
        null=True, blank=True, editable=False, help_text="1 for the case's first sealed event."
    )
    prev_hash = models.CharField(
        max_length=64, blank=True, editable=False, help_text="The previous event's hash."
    )
    hash = models.CharField(
        max_length=64, blank=True, editable=False, help_text="SHA-256; empty until sealed."
    )

    objects = CaseEventQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["case", "created_at"], name="caseevent_case_created"),
            models.Index(fields=["kind", "created_at"], name="caseevent_kind_created"),
            # The sealer's queue: as small as the events of the last minute, however long
            # the timeline grows.
            models.Index(
                fields=["case", "id"], condition=models.Q(hash=""), name="caseevent_unsealed"
            ),
        ]
        constraints = [
            # One event per place in a chain, so two sealers can never fork it. Partial: an
            # insert (position still NULL) does not touch this index.
            models.UniqueConstraint(
                fields=["case", "chain_position"],
                condition=models.Q(chain_position__isnull=False),
                name="caseevent_chain_position",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} by {self.actor}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise RuntimeError("Case events are append-only; record a new event instead.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Case events are append-only and cannot be deleted.")
