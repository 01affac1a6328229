"""`python manage.py evidence verify [CASE_ID ...]`, `evidence bundle CASE_ID [--out DIR]`
and `evidence seal`: the case timelines' hash chains and evidence bundles. The work is done
by cases/evidence.py; docs/evidence.md explains both."""

from __future__ import annotations

import uuid
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from cases.evidence import (
    chains_verify,
    events_seal,
    events_unsealed,
    evidence_bundle,
    evidence_bundle_html,
    evidence_bundle_json,
    evidence_filename,
)
from cases.models import Case

# Exit codes: 1 a chain is broken, 2 the command was given something it cannot check.
BROKEN = 1
USAGE = 2


def _case_ids(values: list[str]) -> list[uuid.UUID]:
    ids = []
    for value in values:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            raise CommandError(f"{value!r} is not a case id (a UUID).", returncode=USAGE) from None
    known = set(Case.objects.filter(pk__in=ids).values_list("pk", flat=True))
    unknown = [str(case_id) for case_id in ids if case_id not in known]
    if unknown:
        raise CommandError(f"No such case: {', '.join(unknown)}.", returncode=USAGE)
    return ids


class Command(BaseCommand):
    help = "Check the timelines' hash chains and write evidence bundles. See docs/evidence.md."

    def add_arguments(self, parser):
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
        verify = subcommands.add_parser(
            "verify",
            help="Check the hash chains of the cases given, or of every case.",
            description=(
                "Recomputes every sealed event's hash and follows each chain. Prints each "
                "broken case with its first bad event and why; exits with 1 if any is broken."
            ),
        )
        verify.add_argument("case_ids", nargs="*", metavar="CASE_ID", help="Case ids (UUIDs)")
        bundle = subcommands.add_parser(
            "bundle",
            help="Write a case's evidence bundle (JSON and HTML).",
            description="Writes evidence-<case id>.json and .html into the folder given.",
        )
        bundle.add_argument("case_id", metavar="CASE_ID")
        bundle.add_argument(
            "--out", type=Path, default=Path("."), help="Folder to write to (default: here)"
        )
        subcommands.add_parser(
            "seal",
            help="Seal the events waiting for the scheduled sealer now.",
            description="Appends every settled unsealed event to its case's chain.",
        )

    def handle(self, *args, subcommand: str, **options):
        if subcommand == "verify":
            self.verify(options["case_ids"])
        elif subcommand == "bundle":
            self.bundle(options["case_id"], options["out"])
        else:
            sealed = events_seal(budget_seconds=float("inf"))
            self.stdout.write(f"Sealed {sealed} events.")

    def verify(self, values: list[str]) -> None:
        case_ids = _case_ids(values) if values else None
        checked = events = broken = 0
        for report in chains_verify(case_ids=case_ids):
            checked += 1
            events += report.events
            if report.broken is None:
                if case_ids is not None:
                    head = report.head_hash or "(no sealed events yet)"
                    self.stdout.write(f"case {report.case_id}: ok, head {head}")
                continue
            broken += 1
            bad = report.broken
            self.stdout.write(
                self.style.ERROR(
                    f"case {report.case_id}: BROKEN at event {bad.event_id} "
                    f"(#{bad.position} {bad.kind}, {bad.created_at.isoformat()}): "
                    f"{bad.reason.replace('_', ' ')}: {bad.detail}"
                )
            )
        waiting, oldest = events_unsealed()
        if waiting:
            self.stdout.write(
                f"{waiting} events wait for the sealer (oldest written {oldest.isoformat()}); "
                "they join their chains within a minute, or now with `evidence seal`."
            )
        summary = f"Checked {checked} chains, {events} events: {broken} broken."
        if broken:
            raise CommandError(summary, returncode=BROKEN)
        self.stdout.write(self.style.SUCCESS(summary))

    def bundle(self, value: str, out: Path) -> None:
        [case_id] = _case_ids([value])
        if not out.is_dir():
            raise CommandError(f"{out} is not a folder.", returncode=USAGE)
        bundle = evidence_bundle(case=Case.objects.get(pk=case_id))
        written = []
        for extension, content in (
            ("json", evidence_bundle_json(bundle)),
            ("html", evidence_bundle_html(bundle)),
        ):
            path = out / evidence_filename(case_id, extension)
            path.write_text(content, encoding="utf-8")
            written.append(str(path))
        chain = bundle["chain"]
        state = "verifies" if chain["verified"] else "is BROKEN"
        self.stdout.write(f"Wrote {' and '.join(written)}.")
        self.stdout.write(f"Head hash {chain['head_hash'] or '(none)'}; the chain {state}.")
        if not chain["verified"]:
            raise CommandError("The case's chain does not verify.", returncode=BROKEN)
