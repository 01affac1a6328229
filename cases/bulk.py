"""Bulk inserts for the trigger-ingest hot path, through PostgreSQL's COPY.

On PostgreSQL, Django's bulk_create sends each column as one array literal that psycopg
quotes in Python, a regular-expression pass per value: for a 1,000-trigger batch that was
the largest part of the ingest's time (docs/performance.md). COPY streams the same rows in
PostgreSQL's text format, formatted in C by psycopg, with no statement to plan, and the
server checks the same constraints. COPY has no ON CONFLICT: a unique violation aborts the
whole COPY, so callers run it in a savepoint and, in that rare race, fall back to
bulk_create and its conflict handling. Elsewhere (SQLite) `copy_available()` is false and
callers use bulk_create directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from django.db import connection, models

# Fields whose Python value is already what the column takes (psycopg adapts it), so the
# per-value get_db_prep_save() call, a large part of bulk_create's cost, can be skipped.
# Any other field type goes through get_db_prep_save() as bulk_create would.
_PLAIN_TYPES = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "SmallAutoField",
        "BigIntegerField",
        "BooleanField",
        "CharField",
        "DateField",
        "DateTimeField",
        "EmailField",
        "IntegerField",
        "PositiveBigIntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "SlugField",
        "SmallIntegerField",
        "TextField",
        "UUIDField",
    }
)


def copy_available() -> bool:
    return connection.vendor == "postgresql"


def _plain(value: Any) -> Any:
    # TextChoices members are str subclasses; COPY wants the plain value.
    return value.value if isinstance(value, Enum) else value


def _converter(field: models.Field) -> Callable[[Any], Any]:
    if isinstance(field, models.JSONField):
        # As JSONField.get_db_prep_save(): None is SQL NULL, anything else JSON text.
        encoder = field.encoder
        return lambda value: None if value is None else json.dumps(value, cls=encoder)
    target = field.target_field if field.is_relation else field
    # Only Django's own fields take their Python value as is. A project field with a plain
    # column type may still convert on the way in (privacy/fields.py encrypts).
    if target.get_internal_type() in _PLAIN_TYPES and type(target).__module__.startswith("django."):
        return _plain
    return lambda value: field.get_db_prep_save(value, connection)


def bulk_copy(objs: Sequence[models.Model], *, assign_ids: bool = False) -> None:
    """Insert unsaved instances of one model with a single COPY. Defaults and auto_now
    fields are filled as bulk_create fills them. An auto-increment primary key is left to
    the database, or with `assign_ids` drawn from its sequence first and set on the
    objects (one more round trip), for rows that others will point at. Related objects
    must be saved before the instances are built (their ids are read from the instances),
    and fields with a db_default are not supported."""
    if not objs:
        return
    meta = objs[0]._meta
    quote = connection.ops.quote_name
    auto_pk = meta.pk if meta.pk.db_returning else None
    if auto_pk is not None and assign_ids:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                [quote(meta.db_table), auto_pk.column, len(objs)],
            )
            for obj, (new_id,) in zip(objs, cursor.fetchall(), strict=True):
                obj.pk = new_id
        auto_pk = None
    fields = [field for field in meta.concrete_fields if field is not auto_pk]
    converters = [(field, _converter(field)) for field in fields]
    sql = "COPY {} ({}) FROM STDIN".format(
        quote(meta.db_table), ", ".join(quote(field.column) for field in fields)
    )
    # Django's debug cursor logs the COPY as one query (DEBUG, CaptureQueriesContext), though
    # with no useful duration, and does not turn its errors into Django's:
    # wrap_database_errors does.
    with connection.cursor() as cursor, connection.wrap_database_errors, cursor.copy(sql) as copy:
        for obj in objs:
            copy.write_row([convert(field.pre_save(obj, True)) for field, convert in converters])
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias


def bulk_update_arrays(
    objs: Sequence[models.Model],
    fields: Sequence[str],
    *,
    only_if: dict[str, Any] | None = None,
) -> int:
    """One UPDATE for many rows of one model, each row its own values, sent as one array per
    column (PostgreSQL: `UPDATE … FROM unnest(…)`). Django's bulk_update writes a CASE WHEN per
    row for every field, and building that expression tree took milliseconds a row on the
    dispatcher's path; a placeholder per value instead made psycopg's query parsing the next
    cost. Elsewhere (SQLite) one prepared statement is run per row. `only_if` ({field:
    value}) leaves rows that no longer hold those values untouched. Returns rows updated."""
    if not objs:
        return 0
    meta = objs[0]._meta
    quote = connection.ops.quote_name
    columns = [meta.get_field(name) for name in fields]
    guards = [(meta.get_field(name), value) for name, value in (only_if or {}).items()]
    guard_values = [field.get_db_prep_save(value, connection) for field, value in guards]
    pk = quote(meta.pk.column)
    if connection.vendor != "postgresql":
        assignments = ", ".join(f"{quote(field.column)} = %s" for field in columns)
        conditions = "".join(f" AND {quote(field.column)} = %s" for field, _ in guards)
        sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {pk} = %s{conditions}"  # noqa: S608 (names, not values)
        rows = [
            [
                *(
                    field.get_db_prep_save(getattr(obj, field.attname), connection)
                    for field in columns
                ),
                obj.pk,
                *guard_values,
            ]
            for obj in objs
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, rows)
            return cursor.rowcount
    arrays: list[Any] = [[obj.pk for obj in objs]]
    for field in columns:
        arrays.append(
            [field.get_db_prep_save(getattr(obj, field.attname), connection) for obj in objs]
        )
    unnest = ", ".join(f"%s::{field.db_type(connection)}[]" for field in [meta.pk, *columns])
    names = ", ".join(quote(field.column) for field in [meta.pk, *columns])
    assignments = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in columns)
    conditions = "".join(f" AND m.{quote(field.column)} = %s" for field, _ in guards)
    sql = (
        f"UPDATE {quote(meta.db_table)} AS m SET {assignments} "  # noqa: S608 (names, not values)
        f"FROM unnest({unnest}) AS v({names}) WHERE m.{pk} = v.{pk}{conditions}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*arrays, *guard_values])
        return cursor.rowcount
