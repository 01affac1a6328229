"""A workflow's completion blueprint, compiled: every rule checked against the contract
once, cached per workflow version, and the launch gate that lists what is missing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.apps import apps

from policies.catalogue import ACTIONS, EVIDENCE_KINDS, EXCEPTION_TYPES
from policies.models import ExceptionRoute, Workflow
from policies.rules import Rule, RuleError, rule_compile

WINDOW = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")
CONTACT_FIELDS = {"phone", "email", "address"}


@dataclass(frozen=True)
class CompiledAction:
    key: str
    label: str
    identity_level: str
    eligible: Rule
    params: dict[str, Rule]
    evidence: tuple[str, ...]
    recommended: bool


@dataclass(frozen=True)
class CompiledFork:
    name: str
    when: Rule
    route: str
    priority: int
    reason: str


@dataclass(frozen=True)
class CompiledRoute:
    exception_type: str
    outcome: str
    max_retries: int
    alternative_action: str
    priority: int
    priority_rule: Rule | None
    close_reason: str


@dataclass(frozen=True)
class Blueprint:
    workflow_id: int
    actions: tuple[CompiledAction, ...]
    forks: tuple[CompiledFork, ...]
    routes: dict[str, CompiledRoute]


class BlueprintError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def action_rule_problems(
    *, action: str, eligible_when: str, params: Any, evidence: Any, contract: list[dict]
) -> tuple[list[str], dict[str, Rule], Rule | None]:
    """Check one action row; return (problems, compiled params, compiled condition)."""
    problems: list[str] = []
    spec = ACTIONS.get(action)
    if spec is None:
        return [f"Unknown action {action!r}."], {}, None
    label = spec.label
    eligible = None
    try:
        eligible = rule_compile(
            eligible_when, contract=contract, expect=bool, label=f"{label}: eligible when"
        )
    except RuleError as exc:
        problems.append(str(exc))
    compiled: dict[str, Rule] = {}
    params = params if isinstance(params, dict) else {}
    known = {param.name: param for param in spec.params}
    for name in params:
        if name not in known:
            problems.append(
                f"{label}: unknown bound {name!r}; it takes: {', '.join(known) or 'none'}."
            )
    for param in spec.params:
        source = params.get(param.name) or param.default
        if source is None:
            if param.required:
                problems.append(f"{label}: the bound {param.name!r} ({param.help}) is required.")
            continue
        try:
            compiled[param.name] = rule_compile(
                str(source), contract=contract, expect=param.kind, label=f"{label}: {param.name}"
            )
        except RuleError as exc:
            problems.append(str(exc))
    if not isinstance(evidence, list) or not all(e in EVIDENCE_KINDS for e in evidence):
        problems.append(f"{label}: evidence must be a list of: {', '.join(EVIDENCE_KINDS)}.")
    return problems, compiled, eligible


def _compile_actions(workflow: Workflow, problems: list[str]) -> list[CompiledAction]:
    compiled = []
    for row in workflow.actions.all():
        row_problems, params, eligible = action_rule_problems(
            action=row.action,
            eligible_when=row.eligible_when,
            params=row.params,
            evidence=row.evidence,
            contract=workflow.contract,
        )
        problems.extend(row_problems)
        if row_problems:
            continue
        compiled.append(
            CompiledAction(
                key=row.action,
                label=ACTIONS[row.action].label,
                identity_level=row.identity_level or ACTIONS[row.action].identity_level,
                eligible=eligible,
                params=params,
                evidence=tuple(row.evidence),
                recommended=row.recommended,
            )
        )
    return compiled


def _compile_forks(workflow: Workflow, problems: list[str]) -> list[CompiledFork]:
    forks = []
    for row in workflow.fork_rules.all():
        try:
            when = rule_compile(
                row.when, contract=workflow.contract, expect=bool, label=f"Fork rule {row.name!r}"
            )
        except RuleError as exc:
            problems.append(str(exc))
            continue
        forks.append(CompiledFork(row.name, when, row.route, row.priority, row.reason))
    return forks


def _compile_routes(workflow: Workflow, problems: list[str]) -> dict[str, CompiledRoute]:
    routes = {}
    for row in workflow.exception_routes.all():
        priority_rule = None
        if row.priority_rule.strip():
            try:
                priority_rule = rule_compile(
                    row.priority_rule,
                    contract=workflow.contract,
                    expect=int,
                    label=f"Route {row.exception_type}: priority rule",
                )
            except RuleError as exc:
                problems.append(str(exc))
                continue
        routes[row.exception_type] = CompiledRoute(
            exception_type=row.exception_type,
            outcome=row.outcome,
            max_retries=row.max_retries,
            alternative_action=row.alternative_action,
            priority=row.priority,
            priority_rule=priority_rule,
            close_reason=row.close_reason,
        )
    return routes


def blueprint_compile(workflow: Workflow) -> tuple[Blueprint, list[str]]:
    """Compile everything; return the blueprint of what compiled and every problem found."""
    problems: list[str] = []
    try:
        workflow.compiled_contract  # noqa: B018 - raises on a broken contract
    except ValueError as exc:
        return Blueprint(workflow.pk, (), (), {}), [f"Contract: {exc}"]
    blueprint = Blueprint(
        workflow_id=workflow.pk,
        actions=tuple(_compile_actions(workflow, problems)),
        forks=tuple(_compile_forks(workflow, problems)),
        routes=_compile_routes(workflow, problems),
    )
    return blueprint, problems


_cache: dict[tuple[int, Any], Blueprint] = {}


def blueprint_for(workflow: Workflow) -> Blueprint:
    """The compiled blueprint of a workflow version, compiled once per process. Active
    versions never change (a change makes a new version), so caching by id and
    last-modified time is safe; a draft being edited recompiles."""
    key = (workflow.pk, workflow.updated_at)
    blueprint = _cache.get(key)
    if blueprint is None:
        blueprint, problems = blueprint_compile(workflow)
        if problems:
            raise BlueprintError(problems)
        if len(_cache) > 256:
            _cache.clear()
        _cache[key] = blueprint
    return blueprint


def _writeback_target_gaps(key: str, actions: list) -> list[str]:
    # By app label: writeback builds on policies, not the other way round.
    target = apps.get_model("writeback", "WritebackTarget").objects.filter(key=key).first()
    if target is None:
        return [f"The writeback target {key!r} does not exist; create it or pick another."]
    return [
        f"{row.get_action_display()}: the writeback target {key!r} has no operations for it."
        for row in actions
        if row.action not in target.operations
    ]


def workflow_launch_gaps(workflow: Workflow) -> list[str]:
    """Everything that stops this workflow version from going live, in plain words."""
    gaps: list[str] = []
    if not workflow.completion_definition.strip():
        gaps.append("Write the one-sentence completion definition (when is a case done?).")
    if not workflow.contract:
        gaps.append("Define the trigger data contract (at least one field).")
    actions = list(workflow.actions.all())
    if not actions:
        gaps.append("Offer at least one action.")
    for row in actions:
        if not row.evidence:
            gaps.append(f"{row.get_action_display()}: choose the evidence it must capture.")
    if not workflow.writeback_target.strip():
        gaps.append("Attach a writeback target (where outcomes are posted).")
    else:
        gaps.extend(_writeback_target_gaps(workflow.writeback_target, actions))
    routes = {row.exception_type: row for row in workflow.exception_routes.all()}
    offered = {row.action for row in actions}
    for exception_type, label in EXCEPTION_TYPES:
        route = routes.get(exception_type)
        if route is None:
            gaps.append(f"Choose an exception route for “{label}”.")
        elif route.outcome == ExceptionRoute.Outcome.OFFER_ALTERNATIVE and (
            route.alternative_action not in offered
        ):
            gaps.append(
                f"“{label}” offers an alternative that this workflow does not offer; "
                "pick one of its actions."
            )
        elif route.outcome == ExceptionRoute.Outcome.CLOSE and not route.close_reason.strip():
            gaps.append(f"“{label}” closes the case: give the reason it records.")
        elif route.outcome == ExceptionRoute.Outcome.RETRY and route.max_retries < 1:
            gaps.append(f"“{label}” retries: allow at least one retry.")
    _, problems = blueprint_compile(workflow)
    gaps.extend(f"Fix the rule — {problem}" for problem in problems)
    return gaps
