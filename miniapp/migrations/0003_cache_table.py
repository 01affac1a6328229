"""The table behind the shared cache (rate-limit counters): created by `migrate`, so a
fresh clone needs no separate `createcachetable` step.

It is created whatever CACHES says today, with Django's own schema for DatabaseCache, so a
deployment that moves from Redis back to the database cache finds it ready.
"""

from django.conf import settings
from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import migrations


def cache_table_create(apps, schema_editor):
    command = CreateCacheTable()
    command.verbosity = 0
    command.create_table(schema_editor.connection.alias, settings.CACHE_TABLE, dry_run=False)


def cache_table_drop(apps, schema_editor):
    schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(settings.CACHE_TABLE)}")


class Migration(migrations.Migration):
    dependencies = [
        ("miniapp", "0002_code_device"),
    ]

    operations = [
        migrations.RunPython(cache_table_create, cache_table_drop, elidable=False),
    ]
