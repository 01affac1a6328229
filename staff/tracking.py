"""What staff change in the admin, recorded with before and after.

Model signals catch every way the admin writes: change forms, inlines, deletes (one by one
or "delete selected", cascades included) and actions that call services. They record only
inside a staff admin request: staff.middleware.StaffAuditMiddleware puts the request in a
context variable, so the workers, the API and the mini-app, which change the same rows,
write nothing here.

Cases are not tracked this way: a case changes only through services (agents' actions,
the re-drive action), which call staff.services.audit_record themselves.

A row's "before" is taken when it is loaded (post_init), not re-read before saving: the
sequence admin parks step positions with a bulk update before saving the steps, and the
trail should show the positions staff saw, not the parking values.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from collections.abc import Iterator
from typing import Any

from django.apps import apps
from django.db.models import Model
from django.db.models.signals import m2m_changed, post_delete, post_init, post_save, pre_save
from django.http import HttpRequest

_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar(
    "staff_audit_request", default=None
)

TRACKED_MODELS = (
    "policies.Workflow",
    "policies.WorkflowAction",
    "policies.ForkRule",
    "policies.ExceptionRoute",
    "policies.WorkflowApproval",
    "channels.MessageTemplate",
    "channels.Sequence",
    "channels.SequenceStep",
    "channels.StepVariant",
    "writeback.WritebackTarget",
    "writeback.Breaker",
    "metrics.UnitCost",
    "cases.Customer",
    "cases.ApiClient",
    "auth.User",
    "auth.Group",
)
# Many-to-many fields whose changes are changes of access.
TRACKED_M2M = {
    ("auth.User", "groups"),
    ("auth.User", "user_permissions"),
    ("auth.Group", "permissions"),
}
# Bookkeeping that moves without anyone deciding anything.
IGNORED_FIELDS = frozenset({"last_login", "updated_at", "created_at"})
# A decision field whose new value names the action better than "change".
DECISION_ACTIONS = {
    ("policies.workflowapproval", "decision"): {"approved": "approve", "rejected": "reject"},
}


def current_request() -> HttpRequest | None:
    return _request.get()


@contextlib.contextmanager
def staff_request(request: HttpRequest) -> Iterator[None]:
    """Within this block, changes to tracked rows are recorded as made by request.user
    (staff.middleware.StaffAuditMiddleware wraps every admin request in it)."""
    token = _request.set(request)
    try:
        yield
    finally:
        _request.reset(token)


def _staff_user(request: HttpRequest | None) -> Any:
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def _fields(instance: Model) -> dict[str, Any]:
    # Loaded values only: reading a deferred field (a queryset's .only()) would load the
    # row again, and with it run this handler again.
    loaded = instance.__dict__
    return {
        field.name: copy.deepcopy(loaded[field.attname])
        for field in instance._meta.concrete_fields
        if field.attname in loaded
    }


def _on_init(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    if _request.get() is not None:
        instance._audit_before = _fields(instance)


def _on_pre_save(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    if _request.get() is None:
        return
    if instance._state.adding:
        # New, unless built with the pk of an existing row to replace it (a file import).
        row = None
        if instance.pk is not None:
            row = sender._base_manager.filter(pk=instance.pk).first()
        instance._audit_before = _fields(row) if row is not None else None
    elif not hasattr(instance, "_audit_before"):
        # Loaded before the admin request began (rare): read it once more.
        row = sender._base_manager.filter(pk=instance.pk).first()
        instance._audit_before = _fields(row) if row is not None else None


def _on_post_save(sender: type[Model], instance: Model, update_fields=None, **kwargs: Any) -> None:
    request = _request.get()
    if request is None:
        return
    from staff.services import audit_record

    after = _fields(instance)
    before = getattr(instance, "_audit_before", None)
    instance._audit_before = after
    names = [name for name in after if name not in IGNORED_FIELDS and name != "id"]
    if update_fields is not None:
        names = [name for name in names if name in update_fields]
    if before is None:
        changes = {name: [None, after[name]] for name in names if after[name] not in (None, "")}
        action = "add"
    else:
        changes = {
            name: [before[name], after[name]]
            for name in names
            if name in before and before[name] != after[name]
        }
        if not changes:
            return
        action = "change"
        for (label, field), verbs in DECISION_ACTIONS.items():
            if sender._meta.label_lower == label and field in changes:
                action = verbs.get(changes[field][1], action)
    audit_record(user=_staff_user(request), action=action, target=instance, changes=changes)


def _on_post_delete(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    request = _request.get()
    if request is None:
        return
    from staff.services import audit_record

    values = getattr(instance, "_audit_before", None) or _fields(instance)
    changes = {
        name: [value, None]
        for name, value in values.items()
        if name not in IGNORED_FIELDS and value not in (None, "")
    }
    audit_record(user=_staff_user(request), action="delete", target=instance, changes=changes)


def _names(model: type[Model], pks: Any) -> list[str]:
    rows = model._base_manager.filter(pk__in=pks)
    if model._meta.label == "auth.Permission":
        return sorted(
            f"{app}.{codename}"
            for app, codename in rows.values_list("content_type__app_label", "codename")
        )
    return sorted(str(row) for row in rows)


def _on_m2m_changed(
    sender: type[Model], instance: Model, action: str, reverse: bool, model, pk_set, **kwargs: Any
) -> None:
    request = _request.get()
    if request is None or reverse:
        return
    field = next(
        (
            f
            for f in instance._meta.many_to_many
            if f.remote_field.through is sender and (instance._meta.label, f.name) in TRACKED_M2M
        ),
        None,
    )
    if field is None:
        return
    if action.startswith("pre_"):
        pending = instance.__dict__.setdefault("_audit_m2m_before", {})
        pending[field.name] = _names(model, getattr(instance, field.name).values("pk"))
        return
    before = instance.__dict__.get("_audit_m2m_before", {}).pop(field.name, None)
    after = _names(model, getattr(instance, field.name).values("pk"))
    if before == after:
        return
    from staff.services import audit_record

    audit_record(
        user=_staff_user(request),
        action="change",
        target=instance,
        changes={field.name: [before, after]},
    )


def tracking_connect() -> None:
    """Connect the handlers to the tracked models (StaffConfig.ready)."""
    for label in TRACKED_MODELS:
        model = apps.get_model(label)
        uid = f"staff-audit-{label}"
        post_init.connect(_on_init, sender=model, dispatch_uid=f"{uid}-init")
        pre_save.connect(_on_pre_save, sender=model, dispatch_uid=f"{uid}-pre")
        post_save.connect(_on_post_save, sender=model, dispatch_uid=f"{uid}-post")
        post_delete.connect(_on_post_delete, sender=model, dispatch_uid=f"{uid}-delete")
    for label, name in TRACKED_M2M:
        through = apps.get_model(label)._meta.get_field(name).remote_field.through
        m2m_changed.connect(
            _on_m2m_changed, sender=through, dispatch_uid=f"staff-audit-{label}-{name}"
        )
