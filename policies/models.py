from __future__ import annotations

from functools import cached_property

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q

from policies.catalogue import ACTION_CHOICES, EXCEPTION_TYPES, IdentityLevel
from policies.contracts import CompiledContract, ContractError, contract_compile


class Workflow(models.Model):
    """One version of a workflow. A workflow is identified by its key; each change to an
    active workflow makes a new row with the next version, and cases point at the row they
    were created under, so running cases keep the rules they started with."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PENDING_APPROVAL = "pending_approval", "Awaiting approval"
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
    writeback_target = models.CharField(
        max_length=100,
        blank=True,
        help_text="Where outcomes are posted (the writeback target's key).",
    )
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text=(
            "Days after a case closes before its customer's personal data is anonymised "
            "(docs/privacy.md). Empty: the RETENTION_DEFAULT_DAYS setting."
        ),
    )

    class PilotMode(models.TextChoices):
        OFF = "off", "No pilot: every trigger"
        ALLOW_LIST = "allow_list", "Allow-listed customers only"
        PERCENTAGE = "percentage", "A percentage of triggers"
        DAILY_CAP = "daily_cap", "Up to a number of cases a day"

    class PilotFallback(models.TextChoices):
        ESCALATE = "escalate", "Send to the agents' queue"
        CLOSE = "close", "Close as not_in_pilot (the source keeps its old process)"

    pilot_mode = models.CharField(max_length=16, choices=PilotMode.choices, default=PilotMode.OFF)
    pilot_allow_list = models.JSONField(
        default=list, blank=True, help_text="Customer external ids admitted to the pilot."
    )
    pilot_percentage = models.PositiveSmallIntegerField(
        default=100, validators=[MaxValueValidator(100)]
    )
    pilot_daily_cap = models.PositiveIntegerField(default=0, help_text="Cases admitted per day.")
    pilot_fallback = models.CharField(
        max_length=16, choices=PilotFallback.choices, default=PilotFallback.CLOSE
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Everyone who changed this version. Four eyes means none of them may approve it.
    editors = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="+", editable=False
    )
    activated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key", "-version"]
        permissions = [("approve_workflow", "Can approve workflow activations and changes")]
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

    def contract_for_rules(self) -> list | None:
        """The contract that rules are checked against, or None while the contract itself is
        broken: its own error is the one to show (an admin form cleans rule rows with the
        contract posted beside them), and rules are then checked for syntax only."""
        try:
            contract_compile(self.contract)
        except ContractError:
            return None
        return self.contract


class WorkflowAction(models.Model):
    """An action a workflow may offer, the rule that makes a case eligible for it, and its
    bounds: each param is a CEL expression over the case (see policies/catalogue.py)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="actions")
    action = models.CharField(max_length=32, choices=ACTION_CHOICES)
    position = models.PositiveSmallIntegerField(default=0)
    eligible_when = models.TextField(
        default="true", help_text="CEL condition, e.g. data.days_past_due < 90"
    )
    identity_level = models.CharField(max_length=24, choices=IdentityLevel.CHOICES)
    params = models.JSONField(default=dict, blank=True, help_text="Bound name → CEL expression")
    evidence = models.JSONField(default=list, blank=True, help_text="Evidence kinds captured")
    recommended = models.BooleanField(
        default=False, help_text="Pre-selected for the customer when eligible."
    )

    class Meta:
        ordering = ["workflow", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "action"], name="workflow_action_once")
        ]

    def __str__(self) -> str:
        return self.get_action_display()

    def clean(self) -> None:
        from policies.blueprint import action_rule_problems

        if not self.identity_level:
            from policies.catalogue import ACTIONS

            if self.action in ACTIONS:
                self.identity_level = ACTIONS[self.action].identity_level
        problems, _, _ = action_rule_problems(
            action=self.action,
            eligible_when=self.eligible_when,
            params=self.params,
            evidence=self.evidence,
            contract=self.workflow.contract_for_rules(),
        )
        if problems:
            raise ValidationError(problems)


class ExceptionRoute(models.Model):
    """What happens when a case hits an exception the rules cannot finish."""

    class Outcome(models.TextChoices):
        RETRY = "retry", "Retry"
        OFFER_ALTERNATIVE = "offer_alternative", "Offer an alternative action"
        ESCALATE = "escalate", "Escalate to the agents' queue"
        CLOSE = "close", "Close"

    workflow = models.ForeignKey(
        Workflow, on_delete=models.CASCADE, related_name="exception_routes"
    )
    exception_type = models.CharField(max_length=32, choices=EXCEPTION_TYPES)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    max_retries = models.PositiveSmallIntegerField(default=0)
    alternative_action = models.CharField(max_length=32, choices=ACTION_CHOICES, blank=True)
    priority = models.PositiveSmallIntegerField(default=50, help_text="0 (low) to 100 (urgent)")
    priority_rule = models.TextField(
        blank=True,
        help_text="Optional CEL giving the priority, e.g. data.balance > 5000.0 ? 90 : 50",
    )
    close_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["workflow", "exception_type"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "exception_type"], name="exception_route_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_exception_type_display()} → {self.get_outcome_display()}"

    def clean(self) -> None:
        from policies.rules import RuleError, rule_compile

        errors: dict[str, str] = {}
        if self.outcome == self.Outcome.OFFER_ALTERNATIVE and not self.alternative_action:
            errors["alternative_action"] = "Choose the action to offer instead."
        if self.outcome == self.Outcome.CLOSE and not self.close_reason.strip():
            errors["close_reason"] = "Give the reason a closed case records."
        if self.outcome == self.Outcome.RETRY and self.max_retries < 1:
            errors["max_retries"] = "A retry route needs at least one retry."
        if self.priority > 100:
            errors["priority"] = "Priority runs from 0 to 100."
        if self.priority_rule.strip():
            try:
                rule_compile(
                    self.priority_rule,
                    contract=self.workflow.contract_for_rules(),
                    expect=int,
                    label="priority",
                )
            except RuleError as exc:
                errors["priority_rule"] = str(exc)
        if errors:
            raise ValidationError(errors)


class ForkRule(models.Model):
    """A pre-outreach rule: when it holds, the case skips automation and goes straight to
    an agent (or is closed), recorded with the rule that fired."""

    class Route(models.TextChoices):
        ESCALATE = "escalate", "Escalate to the agents' queue"
        CLOSE = "close", "Close without outreach"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="fork_rules")
    name = models.CharField(max_length=100)
    position = models.PositiveSmallIntegerField(default=0)
    when = models.TextField(help_text='CEL condition, e.g. "vulnerable" in customer.flags')
    route = models.CharField(max_length=16, choices=Route.choices, default=Route.ESCALATE)
    priority = models.PositiveSmallIntegerField(default=50)
    reason = models.CharField(max_length=200)

    class Meta:
        ordering = ["workflow", "position", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from policies.rules import RuleError, rule_compile

        try:
            rule_compile(
                self.when, contract=self.workflow.contract_for_rules(), expect=bool, label=self.name
            )
        except RuleError as exc:
            raise ValidationError({"when": str(exc)}) from exc
        if self.priority > 100:
            raise ValidationError({"priority": "Priority runs from 0 to 100."})


class WorkflowApproval(models.Model):
    """Four eyes: a request to activate a workflow version, and a second person's decision."""

    class Decision(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="approvals")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    summary = models.JSONField(default=dict, help_text="What changed against the active version")
    decision = models.CharField(max_length=16, choices=Decision.choices, default=Decision.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"{self.workflow} — {self.get_decision_display()}"
