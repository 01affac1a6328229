from __future__ import annotations

from functools import cached_property

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from policies.contracts import CompiledContract, ContractError, contract_compile


class Workflow(models.Model):
    """One version of a workflow. A workflow is identified by its key; each change to an
    active workflow makes a new row with the next version, and cases point at the row they
    were created under, so running cases keep the rules they started with."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        RETIRED = "retired", "Retired"

    key = models.SlugField(max_length=64, help_text="Stable identifier used by source systems.")
    version = models.PositiveIntegerField(default=1)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    contract = models.JSONField(
        default=list,
        help_text=(
            "The trigger data contract: a list of fields, each "
            '{"name", "type", "required", …rules}. Types: string, integer, decimal, boolean, '
            "date, datetime, currency, email, phone, choice, list."
        ),
    )
    completion_definition = models.CharField(
        max_length=500,
        blank=True,
        help_text="One sentence: when is a case of this workflow done?",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["key", "version"], name="workflow_key_version_unique"),
            # Triggers name a workflow by key; exactly one version may take them.
            models.UniqueConstraint(
                fields=["key"], condition=Q(status="active"), name="workflow_one_active_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.key} v{self.version})"

    @cached_property
    def compiled_contract(self) -> CompiledContract:
        return contract_compile(self.contract)

    def clean(self) -> None:
        try:
            contract_compile(self.contract)
        except ContractError as exc:
            raise ValidationError(
                {"contract": [f"{path}: {' '.join(msgs)}" for path, msgs in exc.errors.items()]}
            ) from exc
