"""The demo core's own storage: one SQLite file (WAL) behind one lock.

One connection and one lock serve every thread: the demo core answers a handful of callers,
and a single writer keeps the idempotency claim and the record it guards in one transaction
without any retry-on-busy logic.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

# kind -> prefix of its references ("ARR-000001"). The kind names double as the stats keys.
KINDS = {
    "arrangements": "ARR",
    "payments": "PAY",
    "contact_updates": "CON",
    "notes": "NOTE",
    "flags": "FLG",
    "documents": "DOC",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    ref TEXT PRIMARY KEY,
    contact TEXT NOT NULL,
    flags TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    reference TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    external_id TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL,
    content BLOB,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_account ON records (account, kind);
CREATE TABLE IF NOT EXISTS sequences (kind TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER,
    body TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

EMPTY_CONTACT = {"phone": None, "email": None, "address": None}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()
        self.connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.connection.row_factory = sqlite3.Row
        if path != ":memory:":
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.executescript(SCHEMA)
        # A claim still "running" belongs to a process that died mid-request: nothing can
        # finish it now, and leaving it would answer 409 to that key forever.
        self.connection.execute("DELETE FROM idempotency WHERE state = 'running'")

    def close(self) -> None:
        with self.lock:
            self.connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield self.connection
            except BaseException:
                self.connection.execute("ROLLBACK")
                raise
            self.connection.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            yield self.connection

    def wipe(self) -> None:
        with self.transaction() as db:
            for table in ("accounts", "records", "sequences", "idempotency", "meters"):
                db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names

    # Accounts and records -------------------------------------------------------------

    def account_row(self, db: sqlite3.Connection, ref: str, *, create: bool) -> dict[str, Any]:
        row = db.execute("SELECT contact, flags FROM accounts WHERE ref = ?", (ref,)).fetchone()
        if row is not None:
            return {"contact": json.loads(row["contact"]), "flags": json.loads(row["flags"])}
        account = {"contact": dict(EMPTY_CONTACT), "flags": []}
        if create:
            db.execute(
                "INSERT INTO accounts (ref, contact, flags, created_at) VALUES (?, ?, ?, ?)",
                (ref, json.dumps(account["contact"]), "[]", now_iso()),
            )
        return account

    def account_save(self, db: sqlite3.Connection, ref: str, account: dict[str, Any]) -> None:
        db.execute(
            "UPDATE accounts SET contact = ?, flags = ? WHERE ref = ?",
            (json.dumps(account["contact"]), json.dumps(account["flags"]), ref),
        )

    def account_view(self, ref: str) -> dict[str, Any]:
        with self.reading() as db:
            account = self.account_row(db, ref, create=False)
            counts = dict(
                db.execute(
                    "SELECT kind, COUNT(*) FROM records WHERE account = ? GROUP BY kind", (ref,)
                ).fetchall()
            )
            notes = [
                json.loads(row["body"])
                for row in db.execute(
                    "SELECT body FROM records WHERE account = ? AND kind = 'notes' ORDER BY id",
                    (ref,),
                )
            ]
        return {
            "account": ref,
            "contact": account["contact"],
            "flags": account["flags"],
            "notes": notes,
            "arrangements_count": counts.get("arrangements", 0),
            "documents_count": counts.get("documents", 0),
        }

    def record_create(
        self,
        db: sqlite3.Connection,
        *,
        kind: str,
        account: str,
        fields: dict[str, Any],
        content: bytes | None = None,
    ) -> dict[str, Any]:
        db.execute(
            "INSERT INTO sequences (kind, value) VALUES (?, 1) "
            "ON CONFLICT (kind) DO UPDATE SET value = value + 1",
            (kind,),
        )
        number = db.execute("SELECT value FROM sequences WHERE kind = ?", (kind,)).fetchone()[0]
        created_at = now_iso()
        record = {
            "reference": f"{KINDS[kind]}-{number:06d}",
            "account": account,
            **fields,
            "created_at": created_at,
        }
        db.execute(
            "INSERT INTO records (kind, reference, account, external_id, body, content, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                kind,
                record["reference"],
                account,
                fields.get("external_id") or "",
                json.dumps(record),
                content,
                created_at,
            ),
        )
        return record

    def record_get(self, *, kind: str, account: str, reference: str) -> dict[str, Any] | None:
        with self.reading() as db:
            row = db.execute(
                "SELECT body FROM records WHERE kind = ? AND account = ? AND reference = ?",
                (kind, account, reference),
            ).fetchone()
        return None if row is None else json.loads(row["body"])

    def record_list(self, *, kind: str, account: str) -> list[dict[str, Any]]:
        with self.reading() as db:
            rows = db.execute(
                "SELECT body FROM records WHERE kind = ? AND account = ? ORDER BY id",
                (kind, account),
            ).fetchall()
        return [json.loads(row["body"]) for row in rows]

    # Idempotency ----------------------------------------------------------------------

    def idempotency_claim(self, key: str, fingerprint: str) -> tuple[str, int | None, Any]:
        """("new", …) after claiming the key for this request; ("done", status, body) when a
        response is stored; ("reused", …) for another request's key; ("running", …) while the
        first request holding the key is still being answered."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT fingerprint, state, status, body FROM idempotency WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO idempotency (key, fingerprint, state, created_at)"
                    " VALUES (?, ?, 'running', ?)",
                    (key, fingerprint, now_iso()),
                )
                return "new", None, None
        if row["fingerprint"] != fingerprint:
            return "reused", None, None
        if row["state"] == "running":
            return "running", None, None
        return "done", row["status"], json.loads(row["body"])

    def idempotency_finish(self, db: sqlite3.Connection, key: str, status: int, body: Any) -> None:
        db.execute(
            "UPDATE idempotency SET state = 'done', status = ?, body = ? WHERE key = ?",
            (status, json.dumps(body), key),
        )

    def idempotency_release(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM idempotency WHERE key = ? AND state = 'running'", (key,))

    # Meters and stats -----------------------------------------------------------------

    def meters_add(self, *names: str) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO meters (name, value) VALUES (?, 1) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1",
                [(name,) for name in names],
            )

    def stats(self) -> dict[str, Any]:
        with self.reading() as db:
            meters = dict(db.execute("SELECT name, value FROM meters").fetchall())
            counts = dict(db.execute("SELECT kind, COUNT(*) FROM records GROUP BY kind").fetchall())
            # Records beyond the first that share a caller's external_id within one kind: a
            # correct caller (one Idempotency-Key per outcome) never makes any.
            duplicates = db.execute(
                "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM records"
                " WHERE external_id != '' GROUP BY kind, external_id HAVING n > 1)"
            ).fetchone()[0]
        by_status = {
            name.removeprefix("status:"): value
            for name, value in sorted(meters.items())
            if name.startswith("status:")
        }
        return {
            "requests": meters.get("requests", 0),
            "by_status": by_status,
            **{kind: counts.get(kind, 0) for kind in KINDS},
            "replays": meters.get("replays", 0),
            "unkeyed": meters.get("unkeyed", 0),
            "duplicates": duplicates,
        }
