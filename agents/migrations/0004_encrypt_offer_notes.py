"""Agents' free text on offer proposals is encrypted at rest (privacy/fields.py); stored
values are encrypted here."""

from django.db import migrations

import privacy.fields
from privacy.migration_ops import column_decrypt, column_encrypt


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0003_backfill_tasks"),
    ]

    operations = [
        migrations.AlterField(
            model_name="offerproposal",
            name="decision_note",
            field=privacy.fields.EncryptedTextField(blank=True),
        ),
        migrations.AlterField(
            model_name="offerproposal",
            name="reason",
            field=privacy.fields.EncryptedTextField(blank=True),
        ),
        migrations.RunPython(
            column_encrypt("agents.OfferProposal", "decision_note"),
            column_decrypt("agents.OfferProposal", "decision_note"),
        ),
        migrations.RunPython(
            column_encrypt("agents.OfferProposal", "reason"),
            column_decrypt("agents.OfferProposal", "reason"),
        ),
    ]
