"""`python manage.py triggers import FILE --workflow KEY`: triggers from a CSV or JSON Lines
file, through the batch API's own path. The work is done by cases/intake.py."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from cases.intake import (
    INTAKE_CLIENT_NAME,
    IntakeFileError,
    IntakeSummary,
    intake_file_import,
    intake_report_path,
)


class Command(BaseCommand):
    help = "Work with triggers from files. See docs/intake.md."

    def add_arguments(self, parser):
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
        importer = subcommands.add_parser(
            "import",
            help="Import a CSV or JSON Lines file of triggers for one workflow.",
            description=(
                "Each row becomes a trigger, validated and stored exactly as the batch API "
                "does; rows that fail are listed in an error report. Importing the same file "
                "again is harmless: its rows come back as existing."
            ),
        )
        importer.add_argument("file", type=Path, help="A .csv, .jsonl or .ndjson file")
        importer.add_argument("--workflow", required=True, help="The active workflow's key")
        importer.add_argument(
            "--mapping", type=Path, help="A YAML or JSON file mapping columns to trigger fields"
        )
        importer.add_argument(
            "--client",
            default=INTAKE_CLIENT_NAME,
            help=(
                "The API client the triggers come from (idempotency is per client); "
                f"default {INTAKE_CLIENT_NAME!r}, created on first use"
            ),
        )
        importer.add_argument(
            "--report", type=Path, help="Where to write the error report (default FILE.errors.csv)"
        )

    def handle(self, *args, subcommand: str, **options):
        if subcommand == "import":
            self.import_file(**options)

    def import_file(
        self,
        *,
        file: Path,
        workflow: str,
        mapping: Path | None,
        client: str,
        report: Path | None,
        **options,
    ) -> None:
        def progress(summary: IntakeSummary) -> None:
            self.stderr.write(summary.progress_line())

        try:
            summary = intake_file_import(
                path=file,
                workflow_key=workflow,
                mapping_path=mapping,
                client_name=client,
                report_path=report,
                progress=progress,
            )
        except IntakeFileError as exc:
            problems = "\n".join(f"  - {problem}" for problem in exc.problems)
            raise CommandError(f"{file} was not imported; nothing was stored:\n{problems}") from exc
        counts = summary.counts
        rows = f"{summary.total} row{'' if summary.total == 1 else 's'}"
        self.stdout.write(
            f"{file}: {rows} for workflow {summary.workflow_key} as client "
            f"{summary.client_name!r}: {counts['created']} created, {counts['existing']} "
            f"existing, {summary.rejected} rejected ({counts['invalid']} invalid, "
            f"{counts['conflict']} conflict)."
        )
        if not summary.ok:
            where = summary.report_path or report or intake_report_path(file)
            stored = (
                "nothing was stored"
                if summary.rejected == summary.total
                else "the other rows were stored"
            )
            raise CommandError(
                f"{summary.rejected} of {rows} rejected and not stored; {stored}. "
                f"Each problem is listed in {where}."
            )
