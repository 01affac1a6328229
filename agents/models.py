"""The agents' work: one Task per thing a person must decide on a case (an exception the
rules could not finish, or a callback the customer asked for), queued by priority, then
due time, then age."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models
from django.utils.timezone import now

from privacy.fields import EncryptedTextField


class TaskKind(models.TextChoices):
    EXCEPTION = "exception", "Exception"
    CALLBACK = "callback", "Callback"


class TaskStatus(models.TextChoices):
    OPEN = "open", "Open"
    DONE = "done", "Done"


class Task(models.Model):
    case = models.ForeignKey("cases.Case", on_delete=models.PROTECT, related_name="tasks")
    kind = models.CharField(max_length=16, choices=TaskKind.choices)
    status = models.CharField(max_length=8, choices=TaskStatus.choices, default=TaskStatus.OPEN)
    # The exception type (the escalation reason) or "callback".
    reason = models.CharField(max_length=200)
    priority = models.PositiveSmallIntegerField(default=50, help_text="0–100; higher first")
    # Exceptions: the SLA deadline. Callbacks: the start of the window the customer chose.
    due_at = models.DateTimeField()
    # Callbacks only: the end of the chosen window; past it the callback is overdue.
    window_end = models.DateTimeField(null=True, blank=True)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="agent_tasks",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Agent time: claim → first action is discovery, claim → done is handle time.
    first_action_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    done_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=now)

    class Meta:
        verbose_name = "task"
        verbose_name_plural = "exceptions queue"
        ordering = ["-priority", "due_at", "created_at", "id"]
        permissions = [
            ("work_queue", "Can claim tasks and act on cases from the exceptions queue"),
            ("approve_offer", "Can approve an out-of-policy offer above the limit"),
        ]
        indexes = [
            # The queue reads only open tasks, in its own order: a partial index keeps that
            # scan as small as the queue, however many tasks were ever done.
            # The id ends the order so the admin's changelist (which wants a total order)
            # reads the index as it is instead of sorting again.
            models.Index(
                models.F("priority").desc(),
                "due_at",
                "created_at",
                "id",
                name="task_queue_order",
                condition=models.Q(status="open"),
            ),
            models.Index(fields=["case", "status"], name="task_case_status"),
            models.Index(fields=["assignee", "status"], name="task_assignee_status"),
        ]
        constraints = [
            # One open task of each kind per case: a second escalation updates it.
            models.UniqueConstraint(
                fields=["case", "kind"],
                condition=models.Q(status="open"),
                name="task_one_open_per_case_kind",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on case {self.case_id}: {self.reason}"

    @property
    def overdue_at(self) -> dt.datetime:
        """Past this the task is late: an exception's SLA, or the end of a callback's window."""
        return (
            self.window_end if self.kind == TaskKind.CALLBACK and self.window_end else self.due_at
        )

    def is_overdue(self, at: dt.datetime | None = None) -> bool:
        return self.status == TaskStatus.OPEN and self.overdue_at < (at or now())

    @property
    def claim_to_action(self) -> dt.timedelta | None:
        """Discovery: from the claim to the first thing the agent did on the case."""
        if self.claimed_at and self.first_action_at and self.first_action_at >= self.claimed_at:
            return self.first_action_at - self.claimed_at
        return None

    def handle_time(self, at: dt.datetime | None = None) -> dt.timedelta | None:
        """From the claim to done (still running while the task is open)."""
        if self.claimed_at is None:
            return None
        end = self.done_at or at or now()
        return end - self.claimed_at if end >= self.claimed_at else None


class OfferProposal(models.Model):
    """An alternative offer an agent wants to send. Inside policy, or outside it at or below
    AGENT_OFFER_APPROVAL_LIMIT, it is sent at once (status sent); outside policy above the
    limit it waits (pending) for a second person with agents.approve_offer."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for approval"
        SENT = "sent", "Sent to the customer"
        DECLINED = "declined", "Declined"

    case = models.ForeignKey("cases.Case", on_delete=models.PROTECT, related_name="offer_proposals")
    action = models.CharField(max_length=64)
    # The offer item exactly as the customer will see it (policies.offers shape).
    item = models.JSONField()
    out_of_policy = models.BooleanField(default=False)
    # Agents' free text may say anything about the customer: encrypted at rest.
    reason = EncryptedTextField(blank=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = EncryptedTextField(blank=True)
    created_at = models.DateTimeField(default=now)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "offer approval"
        indexes = [models.Index(fields=["status", "created_at"], name="offerproposal_status")]
        constraints = [
            # One offer waits per case: a second would race the first for the same case.
            models.UniqueConstraint(
                fields=["case"],
                condition=models.Q(status="pending"),
                name="offerproposal_one_pending_per_case",
            )
        ]

    def __str__(self) -> str:
        return f"{self.action} for case {self.case_id} ({self.status})"
