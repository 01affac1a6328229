"""The staff audit trail: who changed what in the admin (with before and after), and the
security events around staff and customer sign-in. Append-only, like the case timeline."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils.timezone import now


class AuditKind(models.TextChoices):
    CHANGE = "change", "Change"
    SECURITY = "security", "Security"


class AuditEntryQuerySet(models.QuerySet):
    """Bulk update() and delete() skip save() and delete(), so the append-only rule is
    enforced here too (as on cases.models.CaseEventQuerySet). Deleting a user still works:
    Django's collector nulls `user` through the base manager, and `username` keeps who it was."""

    def update(self, **kwargs: Any) -> int:
        raise RuntimeError("Audit entries are append-only; record a new entry instead.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise RuntimeError("Audit entries are append-only and cannot be deleted.")


class AuditEntry(models.Model):
    created_at = models.DateTimeField(default=now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # Kept when the user is deleted; for a failed login, the name that was typed.
    username = models.CharField(max_length=150, blank=True)
    kind = models.CharField(max_length=16, choices=AuditKind.choices)
    action = models.CharField(max_length=40)
    # What was touched, as text: the row may be deleted later, the entry stays readable.
    target_type = models.CharField(max_length=100, blank=True, help_text="app_label.model")
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    # {field: [before, after]}; secret fields appear only as "(hidden)".
    changes = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"
        ordering = ["-created_at", "-id"]
        indexes = [
            # The admin's filters: kind, action (its choices are the distinct actions) and user.
            models.Index(fields=["kind", "created_at"], name="auditentry_kind_created"),
            models.Index(fields=["action", "created_at"], name="auditentry_action_created"),
            models.Index(fields=["user", "created_at"], name="auditentry_user_created"),
            models.Index(fields=["target_type", "target_id"], name="auditentry_target"),
        ]

    def __str__(self) -> str:
        who = self.username or "system"
        what = f" {self.target_repr}" if self.target_repr else ""
        return f"{who}: {self.action}{what}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise RuntimeError("Audit entries are append-only; record a new entry instead.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Audit entries are append-only and cannot be deleted.")
