"""The agent's case page (/admin/agents/case/<id>/): everything that happened on the case,
and the forms to act on it. Each form posts to its own URL; a refusal shows the page again
with the form's error (400), a success redirects back with a message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_POST

from agents import services
from agents.forms import (
    AssignForm,
    CallbackDoneForm,
    CloseForm,
    NoteForm,
    OfferForm,
    ReasonForm,
    ReplyForm,
    completable_actions,
    complete_form,
)
from agents.models import Task, TaskStatus
from agents.selectors import CasePage, case_page, task_times
from cases.models import Case
from cases.services import IllegalTransition

WORK_QUEUE = services.WORK_QUEUE
CHOOSE_AN_ACTION = (
    "Choose one of the actions offered on this case (paying and uploading need the customer)."
)


def _may_view(user: Any) -> bool:
    return user.has_perm(WORK_QUEUE) or user.has_perm("cases.view_case")


def _page(case_id: Any) -> CasePage:
    try:
        return case_page(case_id=case_id)
    except Case.DoesNotExist as exc:
        raise Http404("No such case.") from exc


def _render(
    request: HttpRequest, page: CasePage, bound: dict[str, Any] | None = None, status: int = 200
) -> HttpResponse:
    case = page.case
    bound = bound or {}
    completable = completable_actions(case)
    chosen = request.GET.get("complete") or (
        next((i["action"] for i in completable if i.get("recommended")), None)
        or (completable[0]["action"] if completable else "")
    )
    now = timezone.now()
    context = {
        **admin.site.each_context(request),
        "title": f"Case {case.pk}",
        "page": page,
        "case": case,
        "now": now,
        "can_act": request.user.has_perm(WORK_QUEUE),
        "tasks": [
            {"task": t, "times": task_times(t, now), "overdue": t.is_overdue(now)}
            for t in page.tasks
        ],
        "completable": completable,
        "complete_action": bound.get("complete_action", chosen),
        "complete_form": bound.get("complete") or complete_form(case, chosen),
        "complete_reason": bound.get("complete_reason") or ReasonForm(prefix="complete"),
        "retry_form": bound.get("retry") or ReasonForm(prefix="retry"),
        "offer_form": bound.get("offer") or OfferForm(case=case, prefix="offer"),
        "reply_form": bound.get("reply") or ReplyForm(prefix="reply"),
        "note_form": bound.get("note") or NoteForm(prefix="note"),
        "close_form": bound.get("close") or CloseForm(prefix="close"),
        "assign_form": bound.get("assign") or AssignForm(prefix="assign"),
        "callback_form": bound.get("callback") or CallbackDoneForm(prefix="callback"),
        "action_error": bound.get("error", ""),
        "whatsapp_refusal": services.reply_refusal(case=case, channel="whatsapp"),
    }
    return TemplateResponse(request, "admin/agents/case.html", context, status=status)


def case_view(request: HttpRequest, case_id: Any) -> HttpResponse:
    if not _may_view(request.user):
        raise PermissionDenied
    return _render(request, _page(case_id))


def _task_of(case: Case, request: HttpRequest) -> Task:
    task = Task.objects.filter(
        case=case, pk=request.POST.get("task") or 0, status=TaskStatus.OPEN
    ).first()
    if task is None:
        raise services.ActionRefused("That task is not open on this case.")
    return task


# Each action: (form key, form builder, run). `run` calls one service and returns the
# message for the agent; it raises ActionRefused for a refusal.
Run = Callable[[HttpRequest, Case, Any], str]


def _claim(request: HttpRequest, case: Case, form: Any) -> str:
    services.task_claim(task=_task_of(case, request), user=request.user)
    return "The task is yours."


def _unassign(request: HttpRequest, case: Case, form: Any) -> str:
    services.task_unassign(task=_task_of(case, request), user=request.user)
    return "The task is back in the queue."


def _assign(request: HttpRequest, case: Case, form: AssignForm) -> str:
    assignee = form.cleaned_data["assignee"]
    services.task_assign(task=_task_of(case, request), user=request.user, assignee=assignee)
    return f"Assigned to {assignee.username}."


def _callback_done(request: HttpRequest, case: Case, form: CallbackDoneForm) -> str:
    services.task_callback_done(
        task=_task_of(case, request), user=request.user, note=form.cleaned_data["note"]
    )
    return "Callback recorded as done."


def _retry(request: HttpRequest, case: Case, form: ReasonForm) -> str:
    services.case_retry_writeback(case=case, user=request.user, reason=form.cleaned_data["reason"])
    return "The writeback is being sent again."


def _offer(request: HttpRequest, case: Case, form: OfferForm) -> str:
    data = form.cleaned_data
    proposal = services.offer_propose(
        case=case,
        user=request.user,
        action=data["action"],
        amount=data["amount"],
        latest_date=data["latest_date"],
        reason=data["reason"],
    )
    if proposal.status == proposal.Status.PENDING:
        return "The offer is outside policy and above the limit: it waits for an approver."
    return "The new offer is on its way to the customer."


def _reply(request: HttpRequest, case: Case, form: ReplyForm) -> str:
    message = services.case_reply(
        case=case,
        user=request.user,
        channel=form.cleaned_data["channel"],
        text=form.cleaned_data["text"],
    )
    return f"Reply sent by {message.get_channel_display()}."


def _note(request: HttpRequest, case: Case, form: NoteForm) -> str:
    services.case_note_add(case=case, user=request.user, text=form.cleaned_data["text"])
    return "Note added."


def _close(request: HttpRequest, case: Case, form: CloseForm) -> str:
    services.case_close(case=case, user=request.user, reason=form.cleaned_data["reason"])
    return "Case closed."


class _NoFields(forms.Form):
    pass


ACTIONS: dict[str, tuple[Callable[..., Any], Run]] = {
    "claim": (lambda case, data: _NoFields(data), _claim),
    "unassign": (lambda case, data: _NoFields(data), _unassign),
    "assign": (lambda case, data: AssignForm(data, prefix="assign"), _assign),
    "callback": (lambda case, data: CallbackDoneForm(data, prefix="callback"), _callback_done),
    "retry": (lambda case, data: ReasonForm(data, prefix="retry"), _retry),
    "offer": (lambda case, data: OfferForm(data, case=case, prefix="offer"), _offer),
    "reply": (lambda case, data: ReplyForm(data, prefix="reply"), _reply),
    "note": (lambda case, data: NoteForm(data, prefix="note"), _note),
    "close": (lambda case, data: CloseForm(data, prefix="close"), _close),
}


def _refused(form: forms.Form, exc: services.ActionRefused) -> None:
    form.add_error(exc.field if exc.field in form.fields else None, str(exc))


@require_POST
def case_act(request: HttpRequest, case_id: Any, name: str) -> HttpResponse:
    if not request.user.has_perm(WORK_QUEUE):
        raise PermissionDenied
    if name == "complete":
        return _complete(request, case_id)
    if name not in ACTIONS:
        raise Http404("No such action.")
    build, run = ACTIONS[name]
    case = Case.objects.select_related("workflow", "customer").filter(pk=case_id).first()
    if case is None:
        raise Http404("No such case.")
    form = build(case, request.POST)
    if form.is_valid():
        try:
            messages.success(request, run(request, case, form))
            return redirect("agents-case", case_id=case.pk)
        except services.ActionRefused as exc:
            _refused(form, exc)
        except IllegalTransition as exc:
            form.add_error(None, str(exc))
    return _render(request, _page(case_id), {name: form, "error": _first_error(form)}, status=400)


def _first_error(form: forms.Form) -> str:
    for errors in form.errors.values():
        return str(errors[0])
    return ""


def _complete(request: HttpRequest, case_id: Any) -> HttpResponse:
    case = Case.objects.select_related("workflow", "customer").filter(pk=case_id).first()
    if case is None:
        raise Http404("No such case.")
    action = request.POST.get("action", "")
    form = complete_form(case, action, request.POST)
    reason = ReasonForm(request.POST, prefix="complete")
    if form is None:
        page = _page(case_id)
        return _render(
            request,
            page,
            {"error": CHOOSE_AN_ACTION},
            status=400,
        )
    if form.is_valid() and reason.is_valid():
        try:
            services.case_complete(
                case=case,
                user=request.user,
                action=action,
                values=form.choice(),
                reason=reason.cleaned_data["reason"],
                submission_key=form.cleaned_data["submission_key"],
            )
            messages.success(request, "Outcome recorded; it is on its way to the system of record.")
            return redirect("agents-case", case_id=case.pk)
        except services.ActionRefused as exc:
            form.add_error(None, str(exc))
        except IllegalTransition as exc:
            form.add_error(None, str(exc))
    bound = {
        "complete": form,
        "complete_reason": reason,
        "complete_action": action,
        "error": _first_error(form) or _first_error(reason),
    }
    return _render(request, _page(case_id), bound, status=400)


def admin_urls() -> list:
    """Mounted by config/urls.py at admin/agents/case/, behind the admin's staff login."""
    return [
        path("<uuid:case_id>/", admin.site.admin_view(case_view), name="agents-case"),
        path(
            "<uuid:case_id>/<slug:name>/",
            admin.site.admin_view(case_act),
            name="agents-case-act",
        ),
    ]
