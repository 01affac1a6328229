"""Data-migration steps that encrypt (and, reversed, decrypt) values already stored, for the
migrations that turn a column into an encrypted field (privacy/fields.py).

They work on the column's raw text in batches, so a table of millions of rows is never held
in memory, and skip values that are tokens already: a migration stopped half-way and run
again finishes the job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from privacy.crypto import is_token, text_decrypt, text_encrypt

BATCH = 1000


def _rewrite(
    apps: Any, schema_editor: Any, label: str, field_name: str, convert: Callable[[str], str | None]
) -> None:
    model = apps.get_model(label)
    connection = schema_editor.connection
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    column = quote(model._meta.get_field(field_name).column)
    pk = quote(model._meta.pk.column)
    last = None
    while True:
        after = "" if last is None else f" AND {pk} > %s"
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {pk}, {column} FROM {table} WHERE {column} IS NOT NULL{after} "  # noqa: S608 (names, not values)
                f"ORDER BY {pk} LIMIT {BATCH}",
                [] if last is None else [last],
            )
            rows = cursor.fetchall()
        if not rows:
            return
        last = rows[-1][0]
        changes = []
        for row_pk, value in rows:
            converted = convert(value)
            if converted is not None:
                changes.append((converted, row_pk))
        if changes:
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"UPDATE {table} SET {column} = %s WHERE {pk} = %s",  # noqa: S608 (names)
                    changes,
                )


def column_encrypt(label: str, field_name: str) -> Callable[[Any, Any], None]:
    """RunPython forwards step: every stored value becomes the token of its text (for a
    JSON column, its JSON text: what EncryptedJSONField decrypts and parses)."""

    def forwards(apps: Any, schema_editor: Any) -> None:
        _rewrite(
            apps,
            schema_editor,
            label,
            field_name,
            lambda value: None if is_token(value) else text_encrypt(value),
        )

    return forwards


def column_decrypt(label: str, field_name: str) -> Callable[[Any, Any], None]:
    """RunPython backwards step: tokens back to the text they hold."""

    def backwards(apps: Any, schema_editor: Any) -> None:
        _rewrite(
            apps,
            schema_editor,
            label,
            field_name,
            lambda value: text_decrypt(value) if is_token(value) else None,
        )

    return backwards
