"""`python manage.py privacy generate-key | rotate-keys [--dry-run] | retention [--dry-run]`:
the field-encryption keys and the retention run (docs/privacy.md)."""

from __future__ import annotations

from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from privacy.crypto import DecryptionFailed
from privacy.services import (
    cases_expired,
    customers_due,
    keys_rotate,
    retention_apply,
)


class Command(BaseCommand):
    help = "Field-encryption keys and the retention run. See docs/privacy.md."

    def add_arguments(self, parser):
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
        subcommands.add_parser(
            "generate-key",
            help="Print a new key for FIELD_ENCRYPTION_KEYS.",
            description="Prints a new random Fernet key. Put it first in FIELD_ENCRYPTION_KEYS.",
        )
        rotate = subcommands.add_parser(
            "rotate-keys",
            help="Re-encrypt every encrypted value and document under the first key.",
            description=(
                "Re-encrypts each encrypted column and each document in the private store "
                "with the first key of FIELD_ENCRYPTION_KEYS, leaving what is already under "
                "it. Safe to stop and run again."
            ),
        )
        rotate.add_argument("--dry-run", action="store_true", help="Count, change nothing.")
        retention = subcommands.add_parser(
            "retention",
            help="Run the retention policy now (the daily job does the same).",
            description=(
                "Anonymises the customers whose cases all closed longer ago than their "
                "workflow's retention period, then deletes the cases past the evidence period."
            ),
        )
        retention.add_argument(
            "--dry-run", action="store_true", help="Say how many are due, change nothing."
        )

    def handle(self, *args, subcommand: str, **options):
        if subcommand == "generate-key":
            self.stdout.write(Fernet.generate_key().decode())
        elif subcommand == "rotate-keys":
            self._rotate(dry_run=options["dry_run"])
        else:
            self._retention(dry_run=options["dry_run"])

    def _rotate(self, *, dry_run: bool) -> None:
        try:
            report = keys_rotate(dry_run=dry_run)
        except DecryptionFailed as exc:
            raise CommandError(
                f"{exc} Put the key that wrote it back in FIELD_ENCRYPTION_KEYS (after the "
                "new one) and run again."
            ) from exc
        verb = "would re-encrypt" if dry_run else "re-encrypted"
        for name, counts in report.columns.items():
            self.stdout.write(f"{name}: {counts['checked']} value(s), {verb} {counts['rewritten']}")
        files = report.files
        self.stdout.write(f"documents: {files['checked']} file(s), {verb} {files['rewritten']}")
        old = sum(report.kept_as_written.values())
        for name, count in report.kept_as_written.items():
            self.stdout.write(f"{name}: {count} sealed note(s) still need an older key")
        if old:
            self.stdout.write(
                self.style.WARNING(
                    "Keep the older keys in FIELD_ENCRYPTION_KEYS: the case timeline and the "
                    "audit trail are kept as written (the hash chain covers them) until the "
                    "evidence period deletes them."
                )
            )
        elif not dry_run:
            self.stdout.write(
                self.style.SUCCESS("Everything is under the first key; the others may be removed.")
            )

    def _retention(self, *, dry_run: bool) -> None:
        now = timezone.now()
        if dry_run:
            due = len(customers_due(now=now, limit=1_000_000))
            expired = len(cases_expired(now=now, limit=1_000_000))
            self.stdout.write(
                f"{due} customer(s) due for anonymisation; {expired} case(s) past the "
                "evidence period (their customers already anonymised)."
            )
            return
        report = retention_apply(now=now, budget_seconds=float("inf"))
        self.stdout.write(
            f"Anonymised {report.anonymised} customer(s); deleted {report.cases_deleted} "
            "case(s) past the evidence period."
        )
