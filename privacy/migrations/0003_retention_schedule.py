"""Schedule the retention run (privacy.jobs.retention_run) once a day, at night."""

import datetime as dt

from django.db import migrations
from django.utils import timezone

SCHEDULE_NAME = "retention"


def schedule_create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    # 03:30 UTC: after midnight everywhere we operate, away from the morning's outreach.
    first = timezone.now().replace(hour=3, minute=30, second=0, microsecond=0)
    if first <= timezone.now():
        first += dt.timedelta(days=1)
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "privacy.jobs.retention_run",
            "schedule_type": "D",  # Schedule.DAILY
            "repeats": -1,
            "next_run": first,
        },
    )


def schedule_remove(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("privacy", "0002_encrypt_documents"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(schedule_create, schedule_remove)]
