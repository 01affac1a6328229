"""dispatch_until_idle overlaps batches: the next batch is claimed and its sends started
while the previous batch's sends are in flight. Every message still goes out once, and a
fallback queued while recording one batch goes out in the same run."""

from __future__ import annotations

from collections import Counter

from django.test import override_settings

from cases.models import CaseEvent
from channels.dispatch import dispatch_until_idle
from channels.models import Message
from tests.channels.test_dispatch import queued_case, shipped, twilio  # noqa: F401 (fixtures)


@override_settings(OUTREACH_DISPATCH_BATCH=2, OUTREACH_SEND_CONCURRENCY=4)
def test_overlapping_batches_send_every_message_once(shipped, twilio):  # noqa: F811
    cases = [queued_case() for _ in range(5)]
    report = dispatch_until_idle(budget_seconds=60)
    assert (report.claimed, report.sent, report.failed) == (5, 5, 0)
    assert Counter(Message.objects.values_list("status", flat=True)) == {"sent": 5}
    assert len(twilio.messages) == 5
    assert len({m["Body"] for m in twilio.messages}) == 5  # a fresh link in each
    sent_events = CaseEvent.objects.filter(kind="message_sent")
    assert sorted(e.case_id for e in sent_events) == sorted(c.pk for c in cases)
    # Recorded after sending: the provider's id, no lease left, no other fields lost.
    for message in Message.objects.all():
        assert message.provider_message_id.startswith("SM")
        assert message.lease_until is None and message.sent_at is not None
        assert message.provider == "twilio" and message.segments >= 1
        assert "/m/" in message.body_masked and message.body_sha256


def test_a_fallback_queued_while_recording_goes_out_in_the_same_run(shipped, twilio):  # noqa: F811
    case = queued_case()
    twilio.fail_permanently(to=case.customer.phone, code=21211)
    report = dispatch_until_idle(budget_seconds=60)
    assert (report.claimed, report.failed, report.fallbacks, report.sent) == (2, 1, 1, 1)
    statuses = dict(Message.objects.filter(case=case).values_list("channel", "status"))
    assert statuses == {"sms": "failed", "email": "sent"}
