"""`python manage.py writeback reconcile [--dry-run]`: list outcomes not yet confirmed by
their target and re-drive them; `writeback deliver`: run the due-outcome sweep once."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from writeback.outbox import outcomes_deliver_due
from writeback.services import outcomes_needing_attention, writeback_reconcile


class Command(BaseCommand):
    help = "Writeback outbox: reconcile (list and re-drive unconfirmed outcomes) or deliver."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True)
        reconcile = sub.add_parser("reconcile", help="List and re-drive unconfirmed outcomes.")
        reconcile.add_argument("--dry-run", action="store_true", help="Only list them.")
        sub.add_parser("deliver", help="Deliver the outcomes that are due now, once.")

    def handle(self, *args, subcommand: str, **options) -> None:
        if subcommand == "deliver":
            results = outcomes_deliver_due()
            self.stdout.write(", ".join(f"{k}: {v}" for k, v in results.items()) or "nothing due")
            return
        found = outcomes_needing_attention()
        for reason, outcomes in found.items():
            for outcome in outcomes:
                self.stdout.write(
                    f"{reason:<15} {outcome.pk}  case {outcome.case_id}  {outcome.action}  "
                    f"target {outcome.target.key}  attempts {outcome.attempts}"
                )
        report = writeback_reconcile(dry_run=options["dry_run"], source="command")
        verb = "would re-drive" if report.dry_run else "re-drove"
        self.stdout.write(
            f"{report.pending} pending, {report.unacknowledged} sent without acknowledgement, "
            f"{report.failed} failed; {verb} "
            f"{report.pending + report.unacknowledged}, {report.confirmed} now confirmed; "
            f"{report.still_open} still open."
        )
