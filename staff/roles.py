"""Staff roles: the one definition of what each Django group may do.

A role is a list of "app_label.codename" permissions, or a rule over every permission that
exists (Auditor: every view permission of our apps; Administrator: everything), so a model
added later is covered once the roles are applied again. The groups are created by
staff/migrations/0002_roles.py and re-applied with `python manage.py staff roles sync`;
a migration that adds a model or a permission applies them again (see docs/staff.md).

The boundaries follow what each admin page checks: blueprint rows (actions, fork rules,
exception routes) go with the workflow's own permissions, sequence steps and variants
with the sequence's (policies/admin.py, channels/admin.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Our own apps: the Auditor reads every model in them.
PROJECT_APPS = (
    "cases",
    "policies",
    "channels",
    "miniapp",
    "writeback",
    "metrics",
    "agents",
    "staff",
    "hooks",
    "privacy",
)

ALL_VIEW_PERMISSIONS = "every view permission of the project's apps"
ALL_PERMISSIONS = "every permission"


def _crud(label: str, *verbs: str) -> list[str]:
    app_label, model = label.split(".")
    return [f"{app_label}.{verb}_{model}" for verb in verbs]


_EDIT = ("add", "change", "delete", "view")
_CASE_RECORDS = [
    "cases.view_case",
    "cases.view_caseevent",
    "cases.view_customer",
]
_WORKFLOW_READ = [
    *_crud("policies.workflow", "view"),
    *_crud("policies.workflowaction", "view"),
    *_crud("policies.forkrule", "view"),
    *_crud("policies.exceptionroute", "view"),
    *_crud("policies.workflowapproval", "view"),
]

ROLES: dict[str, list[str] | str] = {
    # The exceptions queue and the actions on a case, with the records needed to decide.
    "Agent": [
        "agents.view_task",
        "agents.change_task",
        "agents.work_queue",
        "agents.view_offerproposal",
        *_CASE_RECORDS,
        "channels.view_message",
        "channels.view_inboundmessage",
        "writeback.view_outcome",
        "writeback.view_operation",
    ],
    # Configuration: workflows and their blueprints (activation still needs Risk),
    # templates and sequences, writeback targets (with the breaker reset, re-drive and
    # reconciliation run that an outage calls for) and unit costs; cases and metrics to see
    # what the configuration does.
    "Operations": [
        *_crud("policies.workflow", *_EDIT),
        *_crud("policies.workflowaction", *_EDIT),
        *_crud("policies.forkrule", *_EDIT),
        *_crud("policies.exceptionroute", *_EDIT),
        *_crud("policies.workflowapproval", "view"),
        *_crud("channels.messagetemplate", *_EDIT),
        *_crud("channels.sequence", *_EDIT),
        *_crud("channels.sequencestep", *_EDIT),
        *_crud("channels.stepvariant", *_EDIT),
        *_crud("channels.caseoutreach", "view"),
        *_crud("writeback.writebacktarget", *_EDIT),
        *_crud("writeback.breaker", "view"),
        *_crud("writeback.outcome", "view", "change"),
        *_crud("writeback.operation", "view"),
        *_crud("writeback.reconciliationreport", "view", "add"),
        *_crud("metrics.unitcost", "add", "change", "view"),
        # Webhooks to the source systems: where they go, and re-sending one after an outage.
        *_crud("hooks.webhookendpoint", *_EDIT),
        *_crud("hooks.webhookdelivery", "view"),
        *_crud("hooks.webhookattempt", "view"),
        "hooks.redeliver_webhookdelivery",
        *_CASE_RECORDS,
        "metrics.view_casefact",
        "metrics.view_exceptionfact",
    ],
    # The second pair of eyes: approves workflow activations and out-of-policy offers, and
    # reads what it approves.
    "Risk": [
        "policies.approve_workflow",
        "agents.approve_offer",
        *_WORKFLOW_READ,
        *_CASE_RECORDS,
        "agents.view_task",
        "metrics.view_casefact",
    ],
    # Read-only everything of ours: timelines, the audit trail, metrics and exports.
    "Auditor": ALL_VIEW_PERMISSIONS,
    "Administrator": ALL_PERMISSIONS,
}


def _label(permission: Any) -> str:
    return f"{permission.content_type.app_label}.{permission.codename}"


def role_permission_labels(role: str, *, existing: Iterable[str]) -> set[str]:
    """The "app_label.codename" permissions of `role`, out of those that exist."""
    existing = set(existing)
    spec = ROLES[role]
    if spec == ALL_PERMISSIONS:
        return existing
    if spec == ALL_VIEW_PERMISSIONS:
        return {
            label
            for label in existing
            if label.split(".")[0] in PROJECT_APPS and label.split(".")[1].startswith("view_")
        }
    missing = set(spec) - existing
    if missing:
        raise LookupError(
            f"Role {role!r} names permissions that do not exist: {', '.join(sorted(missing))}. "
            "Fix staff/roles.py or migrate the app that defines them first."
        )
    return set(spec)


def roles_apply(*, apps: Any) -> dict[str, int]:
    """Create or update every role's group so it holds exactly its permissions. `apps` is
    the app registry: a migration's historical one, or django.apps.apps. Returns the number
    of permissions per role."""
    from django.contrib.auth.management import create_permissions

    # On a fresh database permissions are created only by post_migrate, after every
    # migration has run: create them now so the groups can point at them.
    # A migration's app configs are stubs without `models_module`, which create_permissions
    # reads only to skip apps without models; get_models() answers that for both kinds.
    for app_config in apps.get_app_configs():
        had = getattr(app_config, "models_module", None)
        app_config.models_module = had or bool(list(app_config.get_models()))
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = had

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    by_label = {_label(p): p for p in Permission.objects.select_related("content_type")}
    counts = {}
    for role in ROLES:
        labels = role_permission_labels(role, existing=by_label)
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set([by_label[label] for label in sorted(labels)])
        counts[role] = len(labels)
    return counts


def roles_forwards(apps: Any, schema_editor: Any) -> None:
    """For migrations: `migrations.RunPython(roles_forwards, migrations.RunPython.noop)`."""
    roles_apply(apps=apps)
