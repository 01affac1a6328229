"""Customers' replies are encrypted at rest (privacy/fields.py); stored ones are encrypted
here."""

from django.db import migrations

import privacy.fields
from privacy.migration_ops import column_decrypt, column_encrypt


class Migration(migrations.Migration):
    dependencies = [
        ("channels", "0003_message_queued_index"),
    ]

    operations = [
        migrations.AlterField(
            model_name="inboundmessage",
            name="body",
            field=privacy.fields.EncryptedTextField(blank=True),
        ),
        migrations.RunPython(
            column_encrypt("channels.InboundMessage", "body"),
            column_decrypt("channels.InboundMessage", "body"),
        ),
    ]
