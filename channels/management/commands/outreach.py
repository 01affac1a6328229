"""Outreach sequences as files, and a manual run of the outreach sweep:

    python manage.py outreach export WORKFLOW_KEY [--output FILE]
    python manage.py outreach import FILE
    python manage.py outreach install-shipped [--replace]
    python manage.py outreach list
    python manage.py outreach tick

Import replaces the workflow's sequence and templates as a whole, validated exactly as the
admin validates; nothing is written when anything is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from channels.models import MessageTemplate, Sequence
from channels.sequences import (
    sequence_export,
    sequence_import,
    sequence_spec_read,
    sequences_install_shipped,
)


class Command(BaseCommand):
    help = "Export, import and list outreach sequences; run the outreach sweep once."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="verb", required=True)
        export = sub.add_parser("export", help="Write a workflow's sequence as YAML.")
        export.add_argument("key")
        export.add_argument("--output", help="File to write (default: standard output)")
        importer = sub.add_parser("import", help="Replace a sequence from a file.")
        importer.add_argument("file")
        shipped = sub.add_parser("install-shipped", help="Install workflows/outreach/*.yaml.")
        shipped.add_argument(
            "--replace", action="store_true", help="Overwrite sequences already installed"
        )
        sub.add_parser("list", help="List sequences.")
        sub.add_parser("tick", help="Run the every-minute outreach sweep once, now.")

    def handle(self, *args, verb: str, **options):
        getattr(self, f"_{verb.replace('-', '_')}")(**options)

    def _export(self, *, key: str, output: str | None, **_):
        if not Sequence.objects.filter(workflow_key=key).exists():
            raise CommandError(f"No sequence for workflow {key!r}.")
        text = yaml.safe_dump(
            sequence_export(workflow_key=key), sort_keys=False, allow_unicode=True, width=100
        )
        if output:
            Path(output).write_text(text, encoding="utf-8")
            self.stderr.write(f"Wrote the {key} sequence to {output}.")
        else:
            self.stdout.write(text, ending="")

    def _import(self, *, file: str, **_):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No such file: {file}")
        try:
            spec = sequence_spec_read(path)
            sequence = sequence_import(spec=spec)
        except yaml.YAMLError as exc:
            raise CommandError(f"{path.name} is not valid YAML: {exc}") from exc
        except ValidationError as exc:
            problems = "\n".join(f"  - {message}" for message in exc.messages)
            raise CommandError(f"{path.name} was not imported:\n{problems}") from exc
        self.stdout.write(
            f"Imported {sequence}: {sequence.steps.count()} step(s), "
            f"{MessageTemplate.objects.filter(workflow_key=sequence.workflow_key).count()} "
            "template(s)."
        )

    def _install_shipped(self, *, replace: bool, **_):
        for sequence in sequences_install_shipped(replace=replace):
            self.stdout.write(f"Installed {sequence}.")

    def _list(self, **_):
        for sequence in Sequence.objects.prefetch_related("steps"):
            self.stdout.write(
                f"{sequence.workflow_key:<22} {'active' if sequence.active else 'paused':<7} "
                f"{sequence.steps.count()} steps, max {sequence.max_touches} touches, "
                f"{sequence.contact_window_start:%H:%M}–{sequence.contact_window_end:%H:%M} local"
            )

    def _tick(self, **_):
        from channels.jobs import outreach_tick

        self.stdout.write(json.dumps(outreach_tick(), indent=2, default=str))
