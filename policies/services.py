"""Workflow services: install and import blueprints, version them, approve them with four
eyes, and apply them to cases (pilot admission, fork rules, offers, exception routes)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import connection, transaction
from django.utils import timezone

from cases.models import Actor, Case, CaseEvent, Customer
from cases.services import case_record_event, case_transition
from policies.blueprint import blueprint_for, workflow_launch_gaps
from policies.models import (
    ExceptionRoute,
    ForkRule,
    Workflow,
    WorkflowAction,
    WorkflowApproval,
)
from policies.offers import offer_action, offer_compute
from policies.rules import rule_context

WORKFLOWS_DIR = Path(settings.BASE_DIR) / "workflows"
SPEC_KEYS = {
    "key",
    "name",
    "completion_definition",
    "writeback_target",
    "retention_days",
    "contract",
    "actions",
    "fork_rules",
    "exception_routes",
    "pilot",
}
ACTION_KEYS = {"action", "eligible_when", "identity_level", "params", "evidence", "recommended"}
FORK_KEYS = {"name", "when", "route", "priority", "reason"}
ROUTE_KEYS = {
    "outcome",
    "max_retries",
    "alternative_action",
    "priority",
    "priority_rule",
    "close_reason",
}
PILOT_KEYS = {"mode", "allow_list", "percentage", "daily_cap", "fallback"}


# --- workflow files -------------------------------------------------------------------------


def workflow_spec_read(path: Path) -> dict[str, Any]:
    """Read a workflow file (YAML, of which JSON is a subset)."""
    try:
        with path.open(encoding="utf-8") as handle:
            spec = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise ValidationError(f"{path.name}: not valid YAML or JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise ValidationError(f"{path.name}: a workflow file must be a mapping.")
    return spec


def _export(workflow: Workflow, actions, forks, routes) -> dict[str, Any]:
    return {
        "key": workflow.key,
        "name": workflow.name,
        "completion_definition": workflow.completion_definition,
        "writeback_target": workflow.writeback_target,
        "retention_days": workflow.retention_days,
        "contract": workflow.contract,
        "actions": [
            {
                "action": row.action,
                "eligible_when": row.eligible_when,
                "identity_level": row.identity_level,
                "recommended": row.recommended,
                "params": row.params,
                "evidence": row.evidence,
            }
            for row in actions
        ],
        "fork_rules": [
            {
                "name": row.name,
                "when": row.when,
                "route": row.route,
                "priority": row.priority,
                "reason": row.reason,
            }
            for row in forks
        ],
        "exception_routes": {
            row.exception_type: {
                key: value
                for key, value in (
                    ("outcome", row.outcome),
                    ("max_retries", row.max_retries),
                    ("alternative_action", row.alternative_action),
                    ("priority", row.priority),
                    ("priority_rule", row.priority_rule),
                    ("close_reason", row.close_reason),
                )
                if value not in ("", None)
            }
            for row in sorted(routes, key=lambda r: r.exception_type)
        },
        "pilot": {
            "mode": workflow.pilot_mode,
            "allow_list": workflow.pilot_allow_list,
            "percentage": workflow.pilot_percentage,
            "daily_cap": workflow.pilot_daily_cap,
            "fallback": workflow.pilot_fallback,
        },
    }


def workflow_export(*, workflow: Workflow) -> dict[str, Any]:
    """The workflow version as a file spec; `workflow_import` reads it back unchanged."""
    return _export(
        workflow,
        workflow.actions.all(),
        workflow.fork_rules.all(),
        workflow.exception_routes.all(),
    )


def _unknown_keys(given: Any, allowed: set[str], where: str, problems: list[str]) -> dict:
    if not isinstance(given, dict):
        problems.append(f"{where}: must be a mapping.")
        return {}
    extra = sorted(set(given) - allowed)
    if extra:
        problems.append(
            f"{where}: unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}."
        )
    return given


def _messages(exc: ValidationError, where: str) -> list[str]:
    if hasattr(exc, "error_dict"):
        # Errors of the whole row (an action's rules) are named by the row, not "__all__".
        return [
            f"{where if field == NON_FIELD_ERRORS else f'{where}.{field}'}: {msg}"
            for field, msgs in exc.message_dict.items()
            for msg in msgs
        ]
    return [f"{where}: {msg}" for msg in exc.messages]


def _build(spec: dict[str, Any], workflow: Workflow) -> tuple[list, list[str]]:
    """Fill `workflow` from a spec and build its child rows, validating each exactly as the
    admin does (model full_clean). Returns (unsaved children, problems)."""
    problems: list[str] = []
    _unknown_keys(spec, SPEC_KEYS, "workflow", problems)
    workflow.name = spec.get("name") or spec.get("key") or ""
    workflow.completion_definition = spec.get("completion_definition", "") or ""
    workflow.writeback_target = spec.get("writeback_target", "") or ""
    workflow.retention_days = spec.get("retention_days")
    workflow.contract = spec.get("contract", [])
    pilot = _unknown_keys(spec.get("pilot", {}), PILOT_KEYS, "pilot", problems)
    # Plain strings, not the choices' enum members: an exported spec must dump as YAML.
    workflow.pilot_mode = pilot.get("mode", Workflow.PilotMode.OFF.value)
    workflow.pilot_allow_list = pilot.get("allow_list", [])
    workflow.pilot_percentage = pilot.get("percentage", 100)
    workflow.pilot_daily_cap = pilot.get("daily_cap", 0)
    workflow.pilot_fallback = pilot.get("fallback", Workflow.PilotFallback.CLOSE.value)
    try:
        workflow.full_clean(exclude=["version", "status", "created_by"])
    except ValidationError as exc:
        problems.extend(_messages(exc, "workflow"))
        return [], problems  # children cannot be checked against a broken contract

    children: list = []
    actions = spec.get("actions", [])
    for index, item in enumerate(actions if isinstance(actions, list) else []):
        item = _unknown_keys(item, ACTION_KEYS, f"actions[{index}]", problems)
        children.append(
            (
                f"actions[{index}]",
                WorkflowAction(
                    workflow=workflow,
                    position=index,
                    action=item.get("action", ""),
                    eligible_when=item.get("eligible_when", "true"),
                    identity_level=item.get("identity_level", ""),
                    params=item.get("params", {}),
                    evidence=item.get("evidence", []),
                    recommended=bool(item.get("recommended", False)),
                ),
            )
        )
    forks = spec.get("fork_rules", [])
    for index, item in enumerate(forks if isinstance(forks, list) else []):
        item = _unknown_keys(item, FORK_KEYS, f"fork_rules[{index}]", problems)
        children.append(
            (
                f"fork_rules[{index}]",
                ForkRule(
                    workflow=workflow,
                    position=index,
                    **{k: v for k, v in item.items() if k in FORK_KEYS},
                ),
            )
        )
    routes = spec.get("exception_routes", {})
    if not isinstance(routes, dict):
        problems.append("exception_routes: must be a mapping of exception type to route.")
        routes = {}
    for exception_type, item in routes.items():
        item = _unknown_keys(item, ROUTE_KEYS, f"exception_routes.{exception_type}", problems)
        children.append(
            (
                f"exception_routes.{exception_type}",
                ExceptionRoute(
                    workflow=workflow,
                    exception_type=exception_type,
                    **{k: v for k, v in item.items() if k in ROUTE_KEYS},
                ),
            )
        )
    seen: Counter = Counter()
    for where, child in children:
        try:
            child.full_clean(exclude=["workflow"])
        except ValidationError as exc:
            problems.extend(_messages(exc, where))
        if isinstance(child, WorkflowAction):
            seen[child.action] += 1
    problems.extend(f"actions: {name} is listed {n} times." for name, n in seen.items() if n > 1)
    return [child for _, child in children], problems


def _save_children(workflow: Workflow, children: Iterable) -> None:
    workflow.actions.all().delete()
    workflow.fork_rules.all().delete()
    workflow.exception_routes.all().delete()
    for child in children:
        child.workflow = workflow
        child.save()


def workflow_import(*, spec: dict[str, Any], user=None, activate: bool = False) -> Workflow:
    """Import a workflow file. The newest version is updated in place while it is a draft;
    otherwise a new draft version is made, so active versions never change under running
    cases. `activate` is for installing shipped files (seed, tests): it bypasses four-eyes
    approval, which applies to staff changes. Raises ValidationError listing every problem.
    """
    key = spec.get("key") if isinstance(spec, dict) else None
    if not isinstance(key, str) or not key:
        raise ValidationError(["workflow.key: every workflow file needs a key."])
    with transaction.atomic():
        latest = Workflow.objects.select_for_update().filter(key=key).order_by("-version").first()
        if (
            latest is not None
            and activate
            and latest.status == Workflow.Status.ACTIVE
            and _same_spec(latest, spec)
        ):
            return latest  # installing the same file again changes nothing
        if latest is not None and latest.status == Workflow.Status.DRAFT:
            workflow = latest
        else:
            workflow = Workflow(
                key=key, version=(latest.version + 1) if latest else 1, created_by=user
            )
        children, problems = _build(spec, workflow)
        if problems:
            raise ValidationError(problems)
        workflow.status = Workflow.Status.DRAFT
        workflow.save()
        _save_children(workflow, children)
        if user is not None:
            workflow.editors.add(user)
        if activate:
            gaps = workflow_launch_gaps(workflow)
            if gaps:
                raise ValidationError(gaps)
            _activate(workflow)
    return workflow


def _split(children: list) -> tuple[list, list, list]:
    return (
        [c for c in children if isinstance(c, WorkflowAction)],
        [c for c in children if isinstance(c, ForkRule)],
        [c for c in children if isinstance(c, ExceptionRoute)],
    )


def _same_spec(current: Workflow, spec: dict[str, Any]) -> bool:
    probe = Workflow(key=current.key)
    children, problems = _build(spec, probe)
    return not problems and _export(probe, *_split(children)) == workflow_export(workflow=current)


def workflow_install(*, spec: dict[str, Any]) -> Workflow:
    return workflow_import(spec=spec, activate=True)


def workflows_install_shipped() -> list[Workflow]:
    return [
        workflow_install(spec=workflow_spec_read(path))
        for path in sorted(WORKFLOWS_DIR.glob("*.yaml"))
    ]


# --- versions and four-eyes approval --------------------------------------------------------


class ApprovalError(Exception):
    pass


def workflow_new_version(*, workflow: Workflow, user=None) -> Workflow:
    """Start changing a live workflow: a draft copy with the next version number."""
    latest = Workflow.objects.filter(key=workflow.key).order_by("-version").first()
    if latest.status == Workflow.Status.DRAFT:
        return latest
    spec = workflow_export(workflow=workflow)
    with transaction.atomic():
        draft = Workflow(key=workflow.key, version=latest.version + 1, created_by=user)
        children, problems = _build(spec, draft)
        if problems:
            raise ValidationError(problems)
        draft.save()
        _save_children(draft, children)
        if user is not None:
            draft.editors.add(user)
    return draft


def _diff(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    if before is None:
        return {"new_workflow": True}
    return {
        key: {"before": before.get(key), "after": after.get(key)}
        for key in sorted(SPEC_KEYS)
        if before.get(key) != after.get(key)
    }


def workflow_request_activation(*, workflow: Workflow, user) -> WorkflowApproval:
    if workflow.status not in (Workflow.Status.DRAFT, Workflow.Status.PENDING_APPROVAL):
        raise ApprovalError(
            f"Only a draft can be sent for approval; this one is {workflow.status}."
        )
    gaps = workflow_launch_gaps(workflow)
    if gaps:
        raise ApprovalError("Not ready to launch: " + " ".join(gaps))
    active = Workflow.objects.filter(key=workflow.key, status=Workflow.Status.ACTIVE).first()
    with transaction.atomic():
        workflow.status = Workflow.Status.PENDING_APPROVAL
        workflow.save(update_fields=["status", "updated_at"])
        WorkflowApproval.objects.filter(
            workflow=workflow, decision=WorkflowApproval.Decision.PENDING
        ).update(decision=WorkflowApproval.Decision.REJECTED, note="Superseded by a new request.")
        return WorkflowApproval.objects.create(
            workflow=workflow,
            requested_by=user,
            summary=_diff(
                workflow_export(workflow=active) if active else None,
                workflow_export(workflow=workflow),
            ),
        )


def workflow_authors(*, workflow: Workflow) -> set[int]:
    """Ids of the users who created or changed this version."""
    return {workflow.created_by_id, *workflow.editors.values_list("pk", flat=True)} - {None}


def workflow_approve(*, approval: WorkflowApproval, user, note: str = "") -> Workflow:
    """Four eyes: a second staff user with the approver permission, never the author."""
    workflow = approval.workflow
    if approval.decision != WorkflowApproval.Decision.PENDING:
        raise ApprovalError("This request has been decided already.")
    if user.pk in workflow_authors(workflow=workflow) | {approval.requested_by_id}:
        raise ApprovalError("The author of a change cannot approve it; ask a second approver.")
    if not user.has_perm("policies.approve_workflow"):
        raise ApprovalError("Approving workflows needs the approver permission (Risk role).")
    gaps = workflow_launch_gaps(workflow)
    if gaps:
        raise ApprovalError("Not ready to launch: " + " ".join(gaps))
    with transaction.atomic():
        approval.decision = WorkflowApproval.Decision.APPROVED
        approval.decided_by = user
        approval.decided_at = timezone.now()
        approval.note = note
        approval.save()
        _activate(workflow)
    return workflow


def workflow_reject(*, approval: WorkflowApproval, user, note: str) -> WorkflowApproval:
    if approval.decision != WorkflowApproval.Decision.PENDING:
        raise ApprovalError("This request has been decided already.")
    with transaction.atomic():
        approval.decision = WorkflowApproval.Decision.REJECTED
        approval.decided_by = user
        approval.decided_at = timezone.now()
        approval.note = note
        approval.save()
        workflow = approval.workflow
        workflow.status = Workflow.Status.DRAFT
        workflow.save(update_fields=["status", "updated_at"])
    return approval


def _activate(workflow: Workflow) -> None:
    """Make this version the one that takes triggers; the previous one retires, and its
    running cases keep it."""
    Workflow.objects.filter(key=workflow.key, status__in=["active", "paused"]).exclude(
        pk=workflow.pk
    ).update(status=Workflow.Status.RETIRED, updated_at=timezone.now())
    workflow.status = Workflow.Status.ACTIVE
    workflow.activated_at = timezone.now()
    workflow.save(update_fields=["status", "activated_at", "updated_at"])


def workflow_pause(*, workflow: Workflow) -> Workflow:
    if workflow.status != Workflow.Status.ACTIVE:
        raise ApprovalError("Only an active workflow can be paused.")
    workflow.status = Workflow.Status.PAUSED
    workflow.save(update_fields=["status", "updated_at"])
    return workflow


def workflow_resume(*, workflow: Workflow) -> Workflow:
    """Resuming changes no rule, so it needs no second approver."""
    if workflow.status != Workflow.Status.PAUSED:
        raise ApprovalError("Only a paused workflow can be resumed.")
    workflow.status = Workflow.Status.ACTIVE
    workflow.save(update_fields=["status", "updated_at"])
    return workflow


# --- applying a workflow to a case ----------------------------------------------------------


def _pilot_bucket(workflow: Workflow, customer: Customer) -> int:
    """0 to 99, stable per customer: the same customer is always in or out of a pilot."""
    digest = hashlib.sha256(f"{workflow.key}:{customer.external_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 100


def pilot_admits(*, case: Case) -> tuple[bool, str]:
    workflow = case.workflow
    mode = workflow.pilot_mode
    if mode == Workflow.PilotMode.OFF:
        return True, "no pilot"
    if mode == Workflow.PilotMode.ALLOW_LIST:
        admitted = case.customer.external_id in set(workflow.pilot_allow_list)
        return (
            admitted,
            "customer on the allow-list" if admitted else "customer not on the allow-list",
        )
    if mode == Workflow.PilotMode.PERCENTAGE:
        bucket = _pilot_bucket(workflow, case.customer)
        admitted = bucket < workflow.pilot_percentage
        return admitted, f"bucket {bucket} vs {workflow.pilot_percentage}%"
    # Daily cap: lock the workflow row so two workers cannot both take the last place.
    # NO KEY UPDATE on PostgreSQL, so ingest (whose case inserts take KEY SHARE on the same
    # row through the foreign key) is never blocked behind a pilot admission.
    no_key = connection.features.has_select_for_no_key_update
    Workflow.objects.select_for_update(no_key=no_key).filter(pk=workflow.pk).first()
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    admitted_today = CaseEvent.objects.filter(
        kind="pilot_admitted", case__workflow__key=workflow.key, created_at__gte=start
    ).count()
    admitted = admitted_today < workflow.pilot_daily_cap
    return admitted, f"{admitted_today} of {workflow.pilot_daily_cap} admitted today"


@dataclass(frozen=True)
class Preparation:
    case: Case
    outcome: str  # ready, forked, not_in_pilot, ineligible, skipped


def case_prepare(*, case: Case | Any) -> Preparation:
    """Before any outreach: compute and store the offer, admit to the pilot, apply fork
    rules, and route a case with nothing to offer. Idempotent (jobs are at-least-once)."""
    case_id = case.pk if isinstance(case, Case) else case
    with transaction.atomic():
        # Lock the case row only: a plain FOR UPDATE would also lock the joined workflow and
        # customer rows, which every ingest holds key-share locks on, and deadlock with it.
        case = (
            Case.objects.select_for_update(of=("self",))
            .select_related("workflow", "customer")
            .get(pk=case_id)
        )
        if case.state != "received" or case.offer is not None:
            return Preparation(case, "skipped")
        blueprint = blueprint_for(case.workflow)
        offer = offer_compute(case=case, blueprint=blueprint)
        Case.objects.filter(pk=case.pk).update(offer=offer, updated_at=timezone.now())
        case.offer = offer
        case_record_event(
            case=case,
            kind="offer_computed",
            actor=Actor.SYSTEM,
            data={
                "policy": offer["policy"],
                "actions": [item["action"] for item in offer["actions"]],
                "excluded": offer["excluded"],
            },
        )
        if case.workflow.pilot_mode != Workflow.PilotMode.OFF:
            admitted, why = pilot_admits(case=case)
            case_record_event(
                case=case,
                kind="pilot_admitted" if admitted else "pilot_excluded",
                actor=Actor.SYSTEM,
                data={"mode": case.workflow.pilot_mode, "why": why},
            )
            if not admitted:
                data = {"reason": "not_in_pilot", "why": why, "priority": 10}
                if case.workflow.pilot_fallback == Workflow.PilotFallback.ESCALATE:
                    case = case_transition(case=case, transition="escalate", data=data)
                else:
                    case = case_transition(case=case, transition="close_by_rule", data=data)
                return Preparation(case, "not_in_pilot")
        context = rule_context(case=case)
        for fork in blueprint.forks:
            try:
                fired = fork.when.evaluate(context) is True
            except (KeyError, TypeError, ValueError, RuntimeError, ZeroDivisionError):
                fired = False
            if fired:
                data = {
                    "reason": fork.reason,
                    "rule": fork.name,
                    "expression": fork.when.source,
                    "priority": fork.priority,
                }
                transition = (
                    "escalate" if fork.route == ForkRule.Route.ESCALATE else "close_by_rule"
                )
                case = case_transition(case=case, transition=transition, data=data)
                return Preparation(case, "forked")
        if not offer["actions"]:
            case_route_exception(
                case=case, exception_type="ineligible", detail={"excluded": offer["excluded"]}
            )
            case.refresh_from_db()
            return Preparation(case, "ineligible")
    return Preparation(case, "ready")


def case_route_exception(
    *, case: Case, exception_type: str, detail: dict[str, Any] | None = None, attempt: int = 1
) -> str:
    """Follow the workflow's route for an exception; return what was done: retry,
    offer_alternative, escalate or close. Whatever cannot be done safely escalates."""
    route = blueprint_for(case.workflow).routes.get(exception_type)
    detail = detail or {}
    record = {"exception": exception_type, "attempt": attempt, **detail}
    outcome = route.outcome if route else ExceptionRoute.Outcome.ESCALATE
    if outcome == ExceptionRoute.Outcome.RETRY and attempt <= route.max_retries:
        case_record_event(case=case, kind="exception_retry", actor=Actor.SYSTEM, data=record)
        return "retry"
    if outcome == ExceptionRoute.Outcome.OFFER_ALTERNATIVE and offer_action(
        case.offer, route.alternative_action
    ):
        case_record_event(
            case=case,
            kind="alternative_offered",
            actor=Actor.SYSTEM,
            data={**record, "action": route.alternative_action},
        )
        return "offer_alternative"
    if outcome == ExceptionRoute.Outcome.CLOSE and case.state in (
        "received",
        "outreach",
        "engaged",
        "verified",
    ):
        case_transition(
            case=case,
            transition="close_by_rule",
            data={**record, "reason": route.close_reason},
        )
        return "close"
    priority = route.priority if route else 50
    if route and route.priority_rule:
        try:
            priority = int(route.priority_rule.evaluate(rule_context(case=case)))
        except (KeyError, TypeError, ValueError, RuntimeError, ZeroDivisionError):
            priority = route.priority
    case_transition(
        case=case,
        transition="escalate",
        data={**record, "reason": exception_type, "priority": max(0, min(100, priority))},
    )
    return "escalate"


def cases_prepare(*, case_ids: Iterable[Any]) -> Counter:
    """Prepare many cases; one bad case never stops the rest (it is escalated instead)."""
    outcomes: Counter = Counter()
    for case_id in case_ids:
        outcomes[case_prepare(case=case_id).outcome] += 1
    return outcomes


def workflow_preview(*, workflow: Workflow, trigger: dict[str, Any]) -> dict[str, Any]:
    """The offer a customer would get for a sample trigger. Nothing is saved."""
    from cases.triggers import trigger_parse

    parsed, errors = trigger_parse({**trigger, "workflow": workflow.key, "event_id": "preview"})
    if errors:
        return {"errors": errors}
    clean, errors = workflow.compiled_contract.validate(parsed.data)
    if errors:
        return {"errors": errors}
    customer = Customer(**{k: v for k, v in parsed.customer.items() if k != "consent"})
    customer.consent = parsed.customer.get("consent", {})
    case = Case(workflow=workflow, customer=customer, data=clean, segment=parsed.segment)
    blueprint = blueprint_for(workflow)
    context = rule_context(case=case)
    forks = []
    for fork in blueprint.forks:
        # As in case_prepare: a fork rule that fails on this data does not fire.
        try:
            if fork.when.evaluate(context) is True:
                forks.append(fork.name)
        except (KeyError, TypeError, ValueError, RuntimeError, ZeroDivisionError):
            continue
    return {"offer": offer_compute(case=case, blueprint=blueprint), "forks": forks}


def workflow_dry_run(*, workflow: Workflow, limit: int = 10_000) -> dict[str, Any]:
    """Run this version's rules over recent cases of the same workflow key: how many
    would be offered each action, and how many would be forked to an agent."""
    blueprint = blueprint_for(workflow)
    offered: Counter = Counter()
    forked: Counter = Counter()
    total = 0
    cases = (
        Case.objects.filter(workflow__key=workflow.key)
        .select_related("customer", "workflow")
        .order_by("-triggered_at")[:limit]
    )
    for case in cases:
        total += 1
        case.workflow = workflow  # evaluate under the version being tried
        offer = offer_compute(case=case, blueprint=blueprint)
        offered.update(item["action"] for item in offer["actions"])
        if not offer["actions"]:
            offered["(nothing)"] += 1
        context = rule_context(case=case)
        for fork in blueprint.forks:
            try:
                if fork.when.evaluate(context) is True:
                    forked[fork.name] += 1
                    break
            except (KeyError, TypeError, ValueError, RuntimeError, ZeroDivisionError):
                continue
    return {"cases": total, "offered": dict(offered), "forked": dict(forked)}
