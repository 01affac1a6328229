"""The data-protection ledger: one row per anonymisation, erasure or evidence deletion.

It says what was done, when, by whom and to how many cases, and names the customer only by
the keyed hash their external id became (privacy/services.py `customer_ref`), so the ledger
itself holds no personal data and outlives the rows it describes."""

from __future__ import annotations

from django.db import models
from django.utils.timezone import now


class PrivacyAction(models.TextChoices):
    ANONYMISED = "anonymised", "Anonymised after the retention period"
    ERASED = "erased", "Erased on the customer's request"
    EVIDENCE_DELETED = "evidence_deleted", "Cases deleted after the evidence period"


class PrivacyRecord(models.Model):
    action = models.CharField(max_length=20, choices=PrivacyAction.choices)
    # Null once the customer row itself is deleted (evidence period over).
    customer = models.ForeignKey(
        "cases.Customer", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    customer_ref = models.CharField(
        max_length=80, db_index=True, help_text="The keyed hash the external id became."
    )
    source = models.CharField(max_length=100, help_text="The API client the customer came from.")
    requested_by = models.CharField(
        max_length=150, help_text="Who asked (an erasure), or the job that did it."
    )
    reference = models.CharField(
        max_length=200, blank=True, help_text="The erasure request's reference, if given."
    )
    cases = models.PositiveIntegerField(default=0)
    # Counts of what was changed or deleted, and the case ids (not personal).
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "data-protection record"
        verbose_name_plural = "data-protection records"
        constraints = [
            # A customer is anonymised (or erased) once; the retention job and an erasure
            # request racing each other cannot both do it.
            models.UniqueConstraint(
                fields=["customer"],
                condition=models.Q(action__in=["anonymised", "erased"]),
                name="privacyrecord_one_anonymisation_per_customer",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.customer_ref} ({self.cases} case(s))"
