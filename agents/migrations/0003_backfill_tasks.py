"""Open a task for every case already waiting for an agent when this app arrives: an
installation that upgrades must not lose its escalated and writeback-failed cases from the
queue. Idempotent: cases with an open exception task are skipped."""

from django.db import migrations
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

EXCEPTION_STATES = ("escalated", "writeback_failed")
WRITEBACK_FAILED_PRIORITY = 60  # as agents.services
BATCH = 2000


def forwards(apps, schema_editor):
    from agents.sla import sla_due_at

    Case = apps.get_model("cases", "Case")
    CaseEvent = apps.get_model("cases", "CaseEvent")
    Task = apps.get_model("agents", "Task")
    entered = (
        CaseEvent.objects.filter(case=OuterRef("pk"), kind__in=EXCEPTION_STATES)
        .order_by("-created_at")
        .values("created_at")[:1]
    )
    waiting = (
        Case.objects.filter(state__in=EXCEPTION_STATES)
        .exclude(Exists(Task.objects.filter(case=OuterRef("pk"), kind="exception", status="open")))
        .annotate(entered_at=Subquery(entered))
        .values_list("pk", "state", "priority", "escalation_reason", "entered_at", "updated_at")
        .order_by("pk")
    )
    batch = []
    for pk, state, priority, reason, entered_at, updated_at in waiting.iterator(chunk_size=BATCH):
        if state == "escalated":
            reason = reason or "escalated"
        else:
            reason, priority = "writeback_failed", max(priority, WRITEBACK_FAILED_PRIORITY)
        created_at = entered_at or updated_at or timezone.now()
        batch.append(
            Task(
                case_id=pk,
                kind="exception",
                status="open",
                reason=reason[:200],
                priority=priority,
                due_at=sla_due_at(created_at=created_at, priority=priority),
                created_at=created_at,
            )
        )
        if len(batch) >= BATCH:
            Task.objects.bulk_create(batch)
            batch = []
    if batch:
        Task.objects.bulk_create(batch)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0002_queue_order_offer_proposals"),
        ("cases", "0003_intake_scan_schedule"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
