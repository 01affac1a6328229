"""Ship the "core_rest" writeback target (the four shipped workflows name it), mapping every
catalogue action onto the demo core's API, and schedule the writeback jobs."""

from django.db import migrations

ACCOUNT = "/accounts/{data.account_reference}"


def note(text, category):
    return {
        "name": "note",
        "method": "POST",
        "path": f"{ACCOUNT}/notes",
        "body": {"text": text, "category": category},
        "read_back": f"{ACCOUNT}/notes/{{reference}}",
    }


CLEAR_PAYMENT_FAILED = {
    "name": "clear_flag",
    "method": "DELETE",
    "path": f"{ACCOUNT}/flags/payment_failed",
    "reference": "",
}

OPERATIONS = {
    "promise_to_pay": [
        {
            "name": "arrangement",
            "method": "POST",
            "path": f"{ACCOUNT}/arrangements",
            "body": {
                "type": "promise",
                "amount": "{values.amount}",
                "currency": "{data.currency}",
                "date": "{values.date}",
            },
            "read_back": f"{ACCOUNT}/arrangements/{{reference}}",
        }
    ],
    "payment_plan": [
        {
            "name": "arrangement",
            "method": "POST",
            "path": f"{ACCOUNT}/arrangements",
            "body": {
                "type": "plan",
                "amount": "{data.balance}",
                "currency": "{data.currency}",
                "instalments": "{values.schedule}",
            },
            "read_back": f"{ACCOUNT}/arrangements/{{reference}}",
        }
    ],
    "dispute": [
        note("Dispute: {values.reason}. {values.note?}", "dispute"),
        {
            "name": "flag",
            "method": "POST",
            "path": f"{ACCOUNT}/flags",
            "body": {"flag": "dispute_open"},
            "read_back": f"{ACCOUNT}/flags/{{reference}}",
        },
    ],
    "request_callback": [
        note("Callback requested on {values.date}, {values.window}.", "callback"),
    ],
    "pay_now": [
        {
            "name": "payment",
            "method": "POST",
            "path": f"{ACCOUNT}/payments",
            "body": {
                "amount": "{values.amount}",
                "currency": "{data.currency}",
                "provider_reference": "{values.provider_reference}",
            },
            "read_back": f"{ACCOUNT}/payments/{{reference}}",
        },
        CLEAR_PAYMENT_FAILED,
    ],
    "update_payment_method": [
        note("Payment method updated (provider reference {values.provider_reference}).", "billing"),
        CLEAR_PAYMENT_FAILED,
    ],
    "update_contact_details": [
        {
            "name": "contact",
            "method": "PATCH",
            "path": f"{ACCOUNT}/contact",
            "unless": "values.unchanged",
            "body": {
                "phone": "{values.phone?}",
                "email": "{values.email?}",
                "address": "{values.address?}",
            },
            "read_back": f"{ACCOUNT}/contact/{{reference}}",
            "expect": {
                "changes.phone": "{values.phone?}",
                "changes.email": "{values.email?}",
                "changes.address": "{values.address?}",
            },
        },
        {
            "name": "note",
            "method": "POST",
            "path": f"{ACCOUNT}/notes",
            "when": "values.unchanged",
            "body": {
                "text": "The customer confirmed their contact details are unchanged.",
                "category": "contact",
            },
            "read_back": f"{ACCOUNT}/notes/{{reference}}",
        },
    ],
    "attestation": [
        note("Attestation signed by {values.typed_name}: {values.statement}", "attestation"),
    ],
    "upload_documents": [
        {
            "name": "document",
            "method": "POST",
            "path": f"{ACCOUNT}/documents",
            "each": "documents",
            "multipart": True,
            "body": {"document_type": "{document.document_type}"},
            "read_back": f"{ACCOUNT}/documents/{{reference}}",
            "expect": {
                "sha256": "{document.sha256}",
                "size": "{document.size}",
                "document_type": "{document.document_type}",
            },
        }
    ],
}

SCHEDULES = {
    "writeback_deliver_due": {
        "func": "writeback.jobs.deliver_due_outcomes",
        "schedule_type": "I",  # Schedule.MINUTES
        "minutes": 1,
    },
    "writeback_reconcile": {
        "func": "writeback.jobs.reconcile_daily",
        "schedule_type": "D",  # Schedule.DAILY
    },
}


def forwards(apps, schema_editor):
    Target = apps.get_model("writeback", "WritebackTarget")
    Breaker = apps.get_model("writeback", "Breaker")
    target, _ = Target.objects.update_or_create(
        key="core_rest",
        defaults={
            "name": "Core system (REST)",
            "kind": "rest",
            "base_url": "",
            "auth_kind": "bearer",
            "secret_env": "CORE_API_TOKEN",
            "operations": OPERATIONS,
        },
    )
    Breaker.objects.get_or_create(target=target)
    Schedule = apps.get_model("django_q", "Schedule")
    for name, fields in SCHEDULES.items():
        Schedule.objects.update_or_create(name=name, defaults={**fields, "repeats": -1})


def backwards(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name__in=list(SCHEDULES)).delete()
    apps.get_model("writeback", "WritebackTarget").objects.filter(
        key="core_rest", outcomes__isnull=True
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("writeback", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
