"""The customer's side of a provider action, before the provider's hosted step: the
amount for pay now (bounds from the offer, checked again by `offer_check_choice`), and
nothing for a card update, whose details only the provider sees."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from miniapp.forms import ActionForm, _money_field


class PayNowForm(ActionForm):
    action = "pay_now"

    def setup(self) -> None:
        low, high = self.bounds["min_amount"], self.bounds["amount"]
        currency = self.case.data.get("currency", "")
        field = _money_field(f"Amount to pay ({currency})", low, high)
        if Decimal(low) == Decimal(high):
            # Nothing to choose: the page states the amount instead of offering a field.
            field.widget = forms.HiddenInput()
        self.fields["amount"] = field
        self.fields["submission_key"] = self.fields.pop("submission_key")

    def recommended_initial(self) -> dict[str, Any]:
        return {"amount": self.bounds["amount"]}

    @property
    def fixed_amount(self) -> bool:
        return Decimal(self.bounds["min_amount"]) == Decimal(self.bounds["amount"])


class UpdatePaymentMethodForm(ActionForm):
    action = "update_payment_method"

    def recommended_initial(self) -> dict[str, Any]:
        return {}


PAYMENT_FORMS: dict[str, type[ActionForm]] = {
    form.action: form for form in (PayNowForm, UpdatePaymentMethodForm)
}
