"""Outreach: sequences and templates per workflow, the messages sent, the replies received.

Sequences and templates are keyed by workflow *key*, not by workflow version: wording and
timing are tuned by operations while a workflow runs, and must not need a new policy
version (and its four-eyes approval) for a typo. The policy decides *what* a customer may
do; the sequence decides *when and how* we ask.
"""

from __future__ import annotations

import datetime as dt

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from cases.models import Channel
from privacy.fields import EncryptedTextField


class SequenceChannel(models.TextChoices):
    PREFERRED = "preferred", "Customer's preferred channel"
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"
    WHATSAPP = "whatsapp", "WhatsApp"


class Sequence(models.Model):
    """How and when a workflow's cases are contacted."""

    workflow_key = models.SlugField(
        max_length=64, unique=True, help_text="The workflow this sequence contacts for."
    )
    name = models.CharField(max_length=200)
    active = models.BooleanField(
        default=True, help_text="Paused sequences send nothing; due steps wait."
    )
    # Reg F (12 CFR 1006.6) and most national codes: no contact before 8am or after 9pm in the
    # consumer's local time.
    # Outside this window (the quiet hours) a due step waits for the window to open.
    contact_window_start = models.TimeField(
        default=dt.time(8, 0), help_text="Earliest local time to send (customer's time zone)."
    )
    contact_window_end = models.TimeField(
        default=dt.time(21, 0), help_text="Latest local time to send (customer's time zone)."
    )
    max_touches = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(10)],
        help_text="Messages sent per case at most; then the no_response route.",
    )
    response_window_hours = models.PositiveIntegerField(
        default=72, help_text="After the last touch, wait this long before no_response."
    )
    send_rate_per_minute = models.PositiveIntegerField(
        default=0,
        help_text="Pace large campaigns: messages per minute for this workflow (0: no limit).",
    )
    # The next free send slot under the rate limit; advanced under a row lock.
    next_send_slot = models.DateTimeField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workflow_key"]

    def __str__(self) -> str:
        return f"{self.name} ({self.workflow_key})"


class SequenceStep(models.Model):
    class Anchor(models.TextChoices):
        TRIGGER = "trigger", "After the trigger"
        PREVIOUS = "previous", "After the previous message"
        DATE_FIELD = "date_field", "Relative to a date in the trigger data"

    sequence = models.ForeignKey(Sequence, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    channel = models.CharField(
        max_length=16, choices=SequenceChannel.choices, default=SequenceChannel.PREFERRED
    )
    fallback = models.BooleanField(
        default=True,
        help_text="Without consent on this channel (or if it fails for good), use the next "
        "permitted one.",
    )
    anchor = models.CharField(max_length=16, choices=Anchor.choices, default=Anchor.TRIGGER)
    anchor_field = models.CharField(
        max_length=64, blank=True, help_text="For a date anchor: the data field, e.g. due_date."
    )
    offset_days = models.IntegerField(
        default=0, help_text="Days after the anchor (negative: before a date field)."
    )
    offset_hours = models.IntegerField(default=0)
    send_at = models.TimeField(
        null=True,
        blank=True,
        help_text="For a date anchor: the local time of day to send (default 10:00).",
    )

    class Meta:
        ordering = ["sequence", "position"]
        constraints = [
            models.UniqueConstraint(fields=["sequence", "position"], name="step_position_unique")
        ]

    def __str__(self) -> str:
        return f"Step {self.position} ({self.get_channel_display()})"


class StepVariant(models.Model):
    """A/B variants of a step: the split is by percentage, stable per case."""

    step = models.ForeignKey(SequenceStep, on_delete=models.CASCADE, related_name="variants")
    label = models.CharField(max_length=16, default="A")
    template_name = models.SlugField(
        max_length=64, help_text="The message template, by name (one per channel and locale)."
    )
    weight = models.PositiveSmallIntegerField(
        default=100, validators=[MaxValueValidator(100)], help_text="Percentage of cases."
    )

    class Meta:
        ordering = ["step", "label"]
        constraints = [
            models.UniqueConstraint(fields=["step", "label"], name="variant_label_unique")
        ]

    def __str__(self) -> str:
        return f"Variant {self.label}: {self.template_name}"


class MessageTemplate(models.Model):
    """The words of one message, per workflow, channel and locale. Bodies are Django templates;
    `{{ link }}` is the case's mini-app link, the message's one primary action."""

    workflow_key = models.SlugField(max_length=64)
    name = models.SlugField(max_length=64, help_text="Steps refer to templates by name.")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    locale = models.CharField(max_length=16, default="en", help_text="e.g. en, en-GB, es")
    subject = models.CharField(max_length=200, blank=True, help_text="Email only.")
    body = models.TextField(
        help_text="Django template. Must contain {{ link }} once. Available: customer.first_name, "
        "customer.name, data.<field>, workflow.name, brand, link, expires_on."
    )
    whatsapp_template_name = models.CharField(
        max_length=100,
        blank=True,
        help_text="WhatsApp only: the approved template sent outside the 24-hour window.",
    )
    whatsapp_language = models.CharField(max_length=16, blank=True, default="en")
    whatsapp_parameters = models.JSONField(
        default=list,
        blank=True,
        help_text="WhatsApp only: the template's parameters, each a Django template, e.g. "
        '["{{ customer.first_name }}", "{{ link }}"].',
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workflow_key", "name", "channel", "locale"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow_key", "name", "channel", "locale"],
                name="template_unique_per_locale",
            )
        ]

    def __str__(self) -> str:
        return f"{self.workflow_key}/{self.name} ({self.channel}, {self.locale})"


class CaseOutreach(models.Model):
    """Where one case is in its sequence. The advance job picks rows whose next step is due."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Sending steps"
        AWAITING_RESPONSE = "awaiting_response", "Last touch sent; waiting for a response"
        FINISHED = "finished", "Finished"

    case = models.OneToOneField("cases.Case", on_delete=models.PROTECT, related_name="outreach")
    sequence = models.ForeignKey(Sequence, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    next_position = models.PositiveSmallIntegerField(default=1)
    next_due_at = models.DateTimeField(null=True, blank=True)
    touches = models.PositiveSmallIntegerField(default=0)
    last_touch_at = models.DateTimeField(null=True, blank=True)
    finished_reason = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["status", "next_due_at"], name="outreach_due")]

    def __str__(self) -> str:
        return f"Outreach for {self.case_id} ({self.status})"


class MessageStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    READ = "read", "Read"
    FAILED = "failed", "Failed"
    UNDELIVERED = "undelivered", "Undelivered"
    # A send interrupted by a crash whose provider cannot tell whether it went out: we do
    # not send again, because a duplicate reminder is the worse harm.
    UNCONFIRMED = "unconfirmed", "Unconfirmed (interrupted, not repeated)"
    CANCELLED = "cancelled", "Cancelled before sending"


class Message(models.Model):
    """One outbound message. The row is written (queued) before the provider is called, and
    its `key` is unique: a job delivered twice finds the row and does not send again."""

    key = models.CharField(max_length=120, unique=True)
    case = models.ForeignKey("cases.Case", on_delete=models.PROTECT, related_name="messages")
    customer = models.ForeignKey(
        "cases.Customer", on_delete=models.PROTECT, related_name="messages"
    )
    workflow_key = models.SlugField(max_length=64)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    provider = models.CharField(max_length=32, blank=True)
    purpose = models.CharField(
        max_length=16,
        default="step",
        help_text="step (a sequence touch), code (a one-time code), reply (HELP and the like)",
    )
    step_position = models.PositiveSmallIntegerField(null=True, blank=True)
    variant = models.CharField(max_length=16, blank=True)
    template_name = models.CharField(max_length=64, blank=True)
    locale = models.CharField(max_length=16, blank=True)
    to = models.CharField(max_length=254)
    subject = models.CharField(max_length=200, blank=True)
    # The text as sent, with the link token masked: the raw token exists only in the message
    # itself, so the database never holds a working link.
    body_masked = models.TextField(blank=True)
    body_sha256 = models.CharField(max_length=64, blank=True)
    whatsapp_template = models.CharField(max_length=100, blank=True)
    encoding = models.CharField(max_length=8, blank=True)
    segments = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=MessageStatus.choices, default=MessageStatus.QUEUED
    )
    provider_message_id = models.CharField(max_length=120, blank=True, db_index=True)
    error = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    not_before = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "not_before"], name="message_due"),
            # The dispatcher's claim reads only queued rows: a partial index stays as small
            # as the queue, however many messages were sent before.
            models.Index(
                fields=["not_before", "id"],
                condition=models.Q(status="queued"),
                name="message_queued_due",
            ),
            models.Index(fields=["customer", "created_at"], name="message_customer_created"),
            models.Index(fields=["case", "created_at"], name="message_case_created"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} to case {self.case_id} ({self.status})"


class InboundMessage(models.Model):
    """A reply from a customer: opt-outs, opt-ins, HELP, questions."""

    class Kind(models.TextChoices):
        OPT_OUT = "opt_out", "Opt-out keyword"
        OPT_OUT_FREE_TEXT = "opt_out_free_text", "Reads like an opt-out"
        OPT_IN = "opt_in", "Opt-in keyword"
        HELP = "help", "Help keyword"
        FREE_TEXT = "free_text", "Free text"

    channel = models.CharField(max_length=16, choices=Channel.choices)
    provider = models.CharField(max_length=32)
    provider_message_id = models.CharField(max_length=120)
    sender = models.CharField(max_length=254)
    customer = models.ForeignKey(
        "cases.Customer",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="inbound_messages",
    )
    case = models.ForeignKey(
        "cases.Case",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="inbound_messages",
    )
    # The customer's own words: encrypted at rest (privacy/fields.py), read, never searched.
    body = EncryptedTextField(blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "provider_message_id"], name="inbound_provider_id_unique"
            )
        ]
        indexes = [
            models.Index(
                fields=["customer", "channel", "received_at"], name="inbound_customer_channel"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} from {self.channel}"


class WebhookReceipt(models.Model):
    """Each provider callback we accepted, by its provider-given identity: a replay of the
    same callback is refused (403) instead of being applied twice."""

    provider = models.CharField(max_length=32)
    dedupe_key = models.CharField(max_length=200)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "dedupe_key"], name="webhook_once")
        ]

    def __str__(self) -> str:
        return f"{self.provider} callback {self.dedupe_key}"


class OutboxEntry(models.Model):
    """The outbox provider's own store: the demo's stand-in for a phone or mailbox. Unlike a
    Message, it holds the full text with a working link, so a newcomer can click what the
    customer would get. Only the outbox provider (development and demo) writes here."""

    message_key = models.CharField(max_length=120, unique=True)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    to = models.CharField(max_length=254, db_index=True)
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "outbox entries"

    def __str__(self) -> str:
        return f"{self.channel} to {self.to}"
