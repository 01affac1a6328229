from __future__ import annotations

from django.db import models
from django.utils import timezone


class CaseLink(models.Model):
    """A customer's signed link into the mini-app: `/m/<token>/`.

    The token is 256 random bits shown once (in the message) and stored only as a SHA-256
    hash, so a database reader cannot open a customer's case. A link is bound to one case,
    expires, and can be revoked.
    """

    case = models.ForeignKey("cases.Case", on_delete=models.PROTECT, related_name="links")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    first_opened_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["case", "created_at"], name="caselink_case_created")]

    def __str__(self) -> str:
        return f"Link for case {self.case_id}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()
