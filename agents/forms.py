"""The agent's forms on the case page. Completing an action reuses the mini-app's own form
for it (miniapp/forms.py ACTION_FORMS): the agent is held to the same bounds as the
customer, checked by the same code."""

from __future__ import annotations

import secrets
from typing import Any

from django import forms

from agents.services import REPLY_CHANNELS, assignable_users
from cases.models import Case, Channel
from miniapp.forms import ACTION_FORMS, ActionForm
from policies.catalogue import ACTIONS
from policies.offers import offer_action


def completable_actions(case: Case) -> list[dict[str, Any]]:
    """The offered actions an agent can record for the customer: those with a form (paying
    and uploading need the customer themselves)."""
    return [
        item for item in (case.offer or {}).get("actions", []) if item["action"] in ACTION_FORMS
    ]


def complete_form(case: Case, action: str, data: Any = None) -> ActionForm | None:
    item = offer_action(case.offer, action)
    if item is None or action not in ACTION_FORMS:
        return None
    return ACTION_FORMS[action](
        data,
        case=case,
        bounds=item["bounds"],
        prefix="complete",
        initial={"submission_key": secrets.token_urlsafe(16)},
    )


class ReasonForm(forms.Form):
    reason = forms.CharField(
        label="Why (for the timeline)",
        required=False,
        max_length=500,
        widget=forms.TextInput(attrs={"size": 60}),
    )


class CloseForm(forms.Form):
    reason = forms.CharField(
        label="Reason for closing", max_length=500, widget=forms.TextInput(attrs={"size": 60})
    )


class NoteForm(forms.Form):
    text = forms.CharField(
        label="Note", max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60})
    )


class ReplyForm(forms.Form):
    channel = forms.ChoiceField(
        label="Channel", choices=[(c, Channel(c).label) for c in REPLY_CHANNELS]
    )
    text = forms.CharField(
        label="Message",
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "maxlength": 1000}),
    )


class CallbackDoneForm(forms.Form):
    note = forms.CharField(
        label="What came of the call",
        max_length=1000,
        widget=forms.TextInput(attrs={"size": 60}),
    )


class AssignForm(forms.Form):
    assignee = forms.ChoiceField(label="Assign to")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read once: the page renders this field on every open task.
        self.users = {str(user.pk): user for user in assignable_users()}
        self.fields["assignee"].choices = [("", "—")] + [
            (pk, user.username) for pk, user in self.users.items()
        ]

    def clean_assignee(self) -> Any:
        return self.users[self.cleaned_data["assignee"]]


class OfferForm(forms.Form):
    """A new link offering an alternative. The bounds come from the workflow's definition
    of the action; the agent may change the amount and the last date."""

    action = forms.ChoiceField(label="Offer")
    amount = forms.DecimalField(
        label="Amount (pay now, promise to pay up to, plan total)",
        required=False,
        min_value=0.01,
        max_digits=12,
        decimal_places=2,
    )
    latest_date = forms.DateField(
        label="Last date (promise to pay, callback)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    reason = forms.CharField(
        label="Reason (needed outside policy)",
        required=False,
        max_length=500,
        widget=forms.TextInput(attrs={"size": 60}),
    )

    def __init__(self, *args: Any, case: Case, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from policies.blueprint import blueprint_for

        offered = {item["action"] for item in (case.offer or {}).get("actions", [])}
        choices = []
        for action in blueprint_for(case.workflow).actions:
            label = ACTIONS[action.key].label
            choices.append(
                (action.key, label if action.key in offered else f"{label} (not offered)")
            )
        self.fields["action"].choices = choices
