from __future__ import annotations

from django.db import models
from django.utils import timezone
from django_otp.models import SideChannelDevice


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
    # When an open was last recorded: reloads within the hour are not news on the timeline.
    last_opened_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["case", "created_at"], name="caselink_case_created")]

    def __str__(self) -> str:
        return f"Link for case {self.case_id}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()


class CaseCodeDevice(SideChannelDevice):
    """One-time codes for one case, sent by SMS or WhatsApp to the number on file.

    Built on django-otp's side-channel device: 6 digits from the OS CSPRNG, a validity
    window, single use (a verified token is cleared). Customers are not Django users, so the
    device belongs to a case instead. Failures are counted here, not per code: a new code
    does not reset them, and the fifth wrong answer (codes and known facts together) locks
    identity for the case.
    """

    user = None
    case = models.OneToOneField("cases.Case", on_delete=models.PROTECT, related_name="code_device")
    channel = models.CharField(max_length=16, blank=True)
    codes_sent = models.PositiveSmallIntegerField(default=0)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveSmallIntegerField(default=0)
    locked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "one-time code device"

    def __str__(self) -> str:
        return f"Codes for case {self.case_id}"
