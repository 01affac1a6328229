"""Customer addresses and trigger payloads are encrypted at rest (privacy/fields.py): the
columns become text, then each stored value is replaced by the token of its JSON text."""

from django.db import migrations

import privacy.fields
from privacy.migration_ops import column_decrypt, column_encrypt


class Migration(migrations.Migration):
    dependencies = [
        ("cases", "0006_apiclient_rate_limit"),
    ]

    operations = [
        migrations.AlterField(
            model_name="case",
            name="payload",
            field=privacy.fields.EncryptedJSONField(
                help_text="The trigger as received, normalised"
            ),
        ),
        migrations.AlterField(
            model_name="customer",
            name="address",
            field=privacy.fields.EncryptedJSONField(
                blank=True, default=dict, help_text="lines, city, region, postcode, country"
            ),
        ),
        migrations.RunPython(
            column_encrypt("cases.Customer", "address"),
            column_decrypt("cases.Customer", "address"),
        ),
        migrations.RunPython(
            column_encrypt("cases.Case", "payload"), column_decrypt("cases.Case", "payload")
        ),
    ]
