"""Workflow services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from policies.models import Workflow

WORKFLOWS_DIR = Path(settings.BASE_DIR) / "workflows"


def workflow_spec_read(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)
    if not isinstance(spec, dict):
        raise ValidationError(f"{path.name}: a workflow file must be a mapping.")
    return spec


def workflow_install(*, spec: dict[str, Any], activate: bool = True) -> Workflow:
    """Create or refresh the newest version of a workflow from a spec (a shipped file).
    Validated exactly as the admin validates: full_clean runs the contract compiler."""
    with transaction.atomic():
        workflow = Workflow.objects.filter(key=spec.get("key")).order_by("-version").first()
        if workflow is None:
            workflow = Workflow(key=spec.get("key"))
        workflow.name = spec.get("name", workflow.key)
        workflow.contract = spec.get("contract", [])
        workflow.completion_definition = spec.get("completion_definition", "")
        if activate:
            workflow.status = Workflow.Status.ACTIVE
        workflow.full_clean()
        workflow.save()
    return workflow


def workflows_install_shipped() -> list[Workflow]:
    return [
        workflow_install(spec=workflow_spec_read(path))
        for path in sorted(WORKFLOWS_DIR.glob("*.yaml"))
    ]
