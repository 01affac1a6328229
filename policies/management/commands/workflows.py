"""Workflows as files, so operations can review changes like code:

    python manage.py workflows export KEY [--version N] [--format yaml|json] [--output FILE]
    python manage.py workflows import FILE
    python manage.py workflows list

Import is validated exactly as the admin validates; a change to a live workflow becomes a
new draft version that still needs four-eyes approval in the admin.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from policies.blueprint import workflow_launch_gaps
from policies.models import Workflow
from policies.services import workflow_export, workflow_import, workflow_spec_read


class Command(BaseCommand):
    help = "Export, import and list workflow files."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="verb", required=True)
        export = sub.add_parser("export", help="Write a workflow version as YAML or JSON.")
        export.add_argument("key")
        export.add_argument("--version", type=int, help="Default: the active (or newest) one")
        export.add_argument("--format", choices=["yaml", "json"], default="yaml")
        export.add_argument("--output", help="File to write (default: standard output)")
        importer = sub.add_parser("import", help="Load a workflow file as a draft version.")
        importer.add_argument("file")
        sub.add_parser("list", help="List workflows and their versions.")

    def handle(self, *args, verb: str, **options):
        getattr(self, f"_{verb}")(**options)

    def _export(self, *, key: str, version: int | None, format: str, output: str | None, **_):
        versions = Workflow.objects.filter(key=key)
        if version is not None:
            workflow = versions.filter(version=version).first()
        else:
            workflow = (
                versions.filter(status="active").first() or versions.order_by("-version").first()
            )
        if workflow is None:
            raise CommandError(
                f"No workflow {key!r}" + (f" version {version}." if version else ".")
            )
        spec = workflow_export(workflow=workflow)
        if format == "json":
            text = json.dumps(spec, indent=2, ensure_ascii=False) + "\n"
        else:
            text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100)
        if output:
            Path(output).write_text(text, encoding="utf-8")
            self.stderr.write(f"Wrote {workflow} to {output}.")
        else:
            self.stdout.write(text, ending="")

    def _import(self, *, file: str, **_):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No such file: {file}")
        try:
            workflow = workflow_import(spec=workflow_spec_read(path))
        except ValidationError as exc:
            problems = "\n".join(f"  - {message}" for message in exc.messages)
            raise CommandError(f"{path.name} was not imported:\n{problems}") from exc
        self.stdout.write(f"Imported {workflow} as a draft.")
        gaps = workflow_launch_gaps(workflow)
        if gaps:
            self.stdout.write("Before it can be activated:\n" + "\n".join(f"  - {g}" for g in gaps))
        else:
            self.stdout.write("Ready to send for approval in the admin.")

    def _list(self, **_):
        for workflow in Workflow.objects.order_by("key", "-version"):
            self.stdout.write(f"{workflow.key:<24} v{workflow.version:<4} {workflow.status}")
