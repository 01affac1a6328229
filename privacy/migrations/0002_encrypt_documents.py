"""Documents already in the private store (PRIVATE_MEDIA_ROOT) are encrypted in place
(miniapp/storage.py now encrypts every file it writes). A file is rewritten through a
temporary file and a rename, and files that are tokens already are left alone, so an
interrupted run can simply be run again."""

from django.db import migrations


def documents_encrypt(apps, schema_editor):
    from privacy.services import documents_rotate

    documents_rotate()


def documents_decrypt(apps, schema_editor):
    from pathlib import Path

    from django.conf import settings

    from miniapp.storage import private_storage
    from privacy.crypto import bytes_decrypt, is_token

    root = Path(settings.PRIVATE_MEDIA_ROOT)
    storage = private_storage()
    for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []:
        name = path.relative_to(root).as_posix()
        stored = storage.raw_read(name)
        if is_token(stored):
            storage.raw_replace(name, bytes_decrypt(stored))


class Migration(migrations.Migration):
    dependencies = [("privacy", "0001_ledger")]

    operations = [migrations.RunPython(documents_encrypt, documents_decrypt, elidable=True)]
