"""One form per action. Bounds come from the case's stored offer: the HTML carries them
(min, max, choices) so the phone helps the customer, and `clean()` checks them again with
`offer_check_choice`, the one check that counts."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, ClassVar

import phonenumbers
from django import forms

from cases.models import Case
from policies.offers import offer_check_choice


class ActionForm(forms.Form):
    action: ClassVar[str]
    # Hidden and random per page view: two taps or two tabs give one outcome.
    submission_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args: Any, case: Case, bounds: dict[str, Any], **kwargs: Any):
        self.case = case
        self.bounds = bounds
        super().__init__(*args, **kwargs)
        self.setup()

    def setup(self) -> None:
        """Set field bounds from the offer."""

    def choice(self) -> dict[str, Any]:
        """The customer's choice as plain JSON values (after is_valid)."""
        data = {
            k: v
            for k, v in self.cleaned_data.items()
            if k != "submission_key" and v not in (None, "")
        }
        return {k: (v.isoformat() if isinstance(v, dt.date) else str(v)) for k, v in data.items()}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        errors = offer_check_choice(offer=self.case.offer, action=self.action, choice=self.choice())
        for field, messages in errors.items():
            self.add_error(field if field in self.fields else None, messages)
        return cleaned

    def summary(self, choice: dict[str, Any]) -> list[tuple[str, str]]:
        """What the review page shows, as (label, value) rows."""
        return [(self.fields[k].label or k, v) for k, v in choice.items() if k in self.fields]


def _money_field(label: str, low: str, high: str) -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        min_value=Decimal(low),
        max_value=Decimal(high),
        decimal_places=2,
        max_digits=12,
        widget=forms.NumberInput(
            attrs={"min": low, "max": high, "step": "0.01", "inputmode": "decimal"}
        ),
    )


def _date_field(label: str, low: str, high: str) -> forms.DateField:
    return forms.DateField(
        label=label,
        widget=forms.DateInput(attrs={"type": "date", "min": low, "max": high}),
    )


class PromiseToPayForm(ActionForm):
    action = "promise_to_pay"

    def setup(self) -> None:
        b = self.bounds
        currency = self.case.data.get("currency", "")
        self.fields["amount"] = _money_field(
            f"Amount you will pay ({currency})", b["min_amount"], b["max_amount"]
        )
        self.fields["date"] = _date_field(
            "Date you will pay by", b["earliest_date"], b["latest_date"]
        )
        self.fields["submission_key"] = self.fields.pop("submission_key")

    def recommended_initial(self) -> dict[str, Any]:
        return {"amount": self.bounds["max_amount"], "date": self.bounds["latest_date"]}


class PaymentPlanForm(ActionForm):
    action = "payment_plan"

    def setup(self) -> None:
        currency = self.case.data.get("currency", "")
        choices = [
            (
                str(plan["instalments"]),
                f"{plan['instalments']} monthly payments of {currency} {plan['instalment_amount']}"
                + (
                    f" (last one {plan['final_amount']})"
                    if plan["final_amount"] != plan["instalment_amount"]
                    else ""
                )
                + f", first on {plan['first_due']}",
            )
            for plan in self.bounds["plans"]
        ]
        self.fields["instalments"] = forms.ChoiceField(
            label="Your plan", choices=choices, widget=forms.RadioSelect
        )
        self.fields["submission_key"] = self.fields.pop("submission_key")

    def recommended_initial(self) -> dict[str, Any]:
        return {"instalments": str(self.bounds["plans"][-1]["instalments"])}

    def choice(self) -> dict[str, Any]:
        count = self.cleaned_data.get("instalments")
        plan = next((p for p in self.bounds["plans"] if str(p["instalments"]) == count), None)
        if plan is None:
            return {"instalments": str(count)}
        return {
            "instalments": str(plan["instalments"]),
            "instalment_amount": plan["instalment_amount"],
            "final_amount": plan["final_amount"],
            "total": plan["total"],
            "first_due": plan["first_due"],
            "frequency": plan["frequency"],
        }

    def summary(self, choice: dict[str, Any]) -> list[tuple[str, str]]:
        currency = self.case.data.get("currency", "")
        return [
            ("Payments", f"{choice['instalments']} monthly"),
            ("Each payment", f"{currency} {choice.get('instalment_amount', '')}"),
            ("First payment", choice.get("first_due", "")),
            ("Total", f"{currency} {choice.get('total', '')}"),
        ]


class DisputeForm(ActionForm):
    action = "dispute"

    def setup(self) -> None:
        self.fields["reason"] = forms.ChoiceField(
            label="Why do you dispute this?",
            choices=[(r, r) for r in self.bounds["reasons"]],
            widget=forms.RadioSelect,
        )
        self.fields["note"] = forms.CharField(
            label="Anything else we should know? (optional)",
            required=False,
            max_length=1000,
            widget=forms.Textarea(attrs={"rows": 4, "maxlength": 1000}),
        )
        self.fields["submission_key"] = self.fields.pop("submission_key")

    def recommended_initial(self) -> dict[str, Any]:
        return {}


class RequestCallbackForm(ActionForm):
    action = "request_callback"

    def setup(self) -> None:
        b = self.bounds
        self.fields["date"] = _date_field("Day", b["earliest_date"], b["latest_date"])
        self.fields["window"] = forms.ChoiceField(
            label="Time", choices=[(w, w) for w in b["windows"]], widget=forms.RadioSelect
        )
        self.fields["submission_key"] = self.fields.pop("submission_key")

    def recommended_initial(self) -> dict[str, Any]:
        earliest = dt.date.fromisoformat(self.bounds["earliest_date"])
        return {
            "date": (earliest + dt.timedelta(days=1)).isoformat(),
            "window": self.bounds["windows"][0],
        }


class AttestationForm(ActionForm):
    action = "attestation"

    def setup(self) -> None:
        self.fields["typed_name"] = forms.CharField(
            label="Type your full name",
            max_length=200,
            widget=forms.TextInput(attrs={"autocomplete": "name", "maxlength": 200}),
        )
        self.fields["confirm"] = forms.BooleanField(
            label=f"I confirm: {self.bounds['statement']}", required=True
        )
        self.fields["submission_key"] = self.fields.pop("submission_key")

    def clean_typed_name(self) -> str:
        name = " ".join(self.cleaned_data["typed_name"].split())
        if len(name) < 3 or " " not in name:
            raise forms.ValidationError("Type your first and last name.")
        return name

    def choice(self) -> dict[str, Any]:
        return {
            "typed_name": self.cleaned_data["typed_name"],
            "statement": self.bounds["statement"],
            "confirmed": "yes",
        }

    def recommended_initial(self) -> dict[str, Any]:
        return {}

    def summary(self, choice: dict[str, Any]) -> list[tuple[str, str]]:
        return [("Statement", choice["statement"]), ("Signed", choice["typed_name"])]


class UpdateContactDetailsForm(ActionForm):
    action = "update_contact_details"

    def setup(self) -> None:
        allowed = set(self.bounds["fields"])
        self.fields["unchanged"] = forms.BooleanField(
            label="My details are correct; nothing has changed", required=False
        )
        if "phone" in allowed:
            self.fields["phone"] = forms.CharField(
                label="New mobile number",
                required=False,
                max_length=20,
                widget=forms.TextInput(attrs={"type": "tel", "autocomplete": "tel"}),
            )
        if "email" in allowed:
            self.fields["email"] = forms.EmailField(
                label="New email address",
                required=False,
                widget=forms.EmailInput(attrs={"autocomplete": "email"}),
            )
        if "address" in allowed:
            self.fields["address_lines"] = forms.CharField(
                label="New address (street and number)", required=False, max_length=200
            )
            self.fields["address_city"] = forms.CharField(
                label="Town or city", required=False, max_length=100
            )
            self.fields["address_postcode"] = forms.CharField(
                label="Postcode", required=False, max_length=16
            )
        self.fields["submission_key"] = self.fields.pop("submission_key")

    def clean_phone(self) -> str:
        raw = self.cleaned_data.get("phone", "").strip()
        if not raw:
            return ""
        region = (self.case.customer.address or {}).get("country") or "GB"
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException as exc:
            raise forms.ValidationError("Enter a mobile number, e.g. +44 7700 900123.") from exc
        if not phonenumbers.is_valid_number(number):
            raise forms.ValidationError("Enter a mobile number, e.g. +44 7700 900123.")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        address = [cleaned.get(f"address_{part}") for part in ("lines", "city", "postcode")]
        if any(address) and not all(address):
            self.add_error("address_lines", "Give the full new address: street, town and postcode.")
        changed = any(cleaned.get(k) for k in ("phone", "email")) or any(address)
        if cleaned.get("unchanged") and changed:
            self.add_error("unchanged", "Either confirm nothing changed, or give new details.")
        elif not cleaned.get("unchanged") and not changed and not self.errors:
            self.add_error(None, "Give your new details, or confirm nothing has changed.")
        return cleaned

    def choice(self) -> dict[str, Any]:
        data = self.cleaned_data
        if data.get("unchanged"):
            return {"unchanged": "yes"}
        choice: dict[str, Any] = {}
        for key in ("phone", "email"):
            if data.get(key):
                choice[key] = data[key]
        if data.get("address_lines"):
            choice["address"] = {
                "lines": data["address_lines"],
                "city": data["address_city"],
                "postcode": data["address_postcode"],
            }
        return choice

    def recommended_initial(self) -> dict[str, Any]:
        return {}

    def summary(self, choice: dict[str, Any]) -> list[tuple[str, str]]:
        if choice.get("unchanged"):
            return [("Your details", "No change")]
        rows = [(k.capitalize(), v) for k, v in choice.items() if k in ("phone", "email")]
        if "address" in choice:
            a = choice["address"]
            rows.append(("Address", f"{a['lines']}, {a['city']} {a['postcode']}"))
        return rows


ACTION_FORMS: dict[str, type[ActionForm]] = {
    form.action: form
    for form in (
        PromiseToPayForm,
        PaymentPlanForm,
        DisputeForm,
        RequestCallbackForm,
        AttestationForm,
        UpdateContactDetailsForm,
    )
}
