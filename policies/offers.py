"""Offers: what one case is allowed to do, with concrete bounds.

`offer_compute` evaluates a workflow's blueprint for a case and returns a JSON-safe offer:
the eligible actions with their bounds (dates, amounts, plans), the actions left out and
the rule that left each one out, and the policy version. It is stored on the case before
any outreach, so the audit trail shows exactly what the customer was shown and why.
`offer_check_choice` re-checks a customer's choice against the stored offer on the server.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from django.utils import timezone

from policies.blueprint import CONTACT_FIELDS, WINDOW, Blueprint, CompiledAction
from policies.rules import rule_context, rule_scope

CENT = Decimal("0.01")


class Ineligible(ValueError):
    """The action's bounds leave nothing the customer could choose."""


def _money(value: Any, rounding: str) -> Decimal:
    # Floats from CEL carry binary noise (42.050000000000004); round the way that keeps
    # the customer inside the policy: minimums up, maximums down.
    return Decimal(repr(float(value))).quantize(CENT, rounding=rounding)


def _days(value: Any, name: str) -> int:
    days = int(value)
    if days < 0:
        raise Ineligible(f"{name} is negative ({days})")
    return days


def _bounds(action: CompiledAction, params: dict[str, Any], today: dt.date) -> dict[str, Any]:
    key = action.key
    if key == "pay_now":
        amount = _money(params["amount"], ROUND_FLOOR)
        minimum = _money(params.get("min_amount", params["amount"]), ROUND_CEILING)
        if amount <= 0:
            raise Ineligible("nothing is due")
        return {"amount": str(amount), "min_amount": str(min(minimum, amount))}
    if key == "promise_to_pay":
        minimum = _money(params["min_amount"], ROUND_CEILING)
        maximum = _money(params["max_amount"], ROUND_FLOOR)
        if maximum <= 0 or minimum > maximum:
            raise Ineligible(f"the minimum {minimum} is above the maximum {maximum}")
        latest = today + dt.timedelta(days=_days(params["max_days"], "max_days"))
        return {
            "min_amount": str(max(minimum, CENT)),
            "max_amount": str(maximum),
            "earliest_date": today.isoformat(),
            "latest_date": latest.isoformat(),
        }
    if key == "payment_plan":
        total = _money(params["total_amount"], ROUND_FLOOR)
        min_instalment = _money(params["min_instalment"], ROUND_CEILING)
        max_term = int(params["max_term_months"])
        plans = []
        for count in sorted(set(params["instalment_counts"])):
            if count < 2 or count > max_term:
                continue
            instalment = (total / count).quantize(CENT, rounding=ROUND_CEILING)
            # Rounding the instalment up leaves a smaller final one, which must meet the
            # minimum too: 74.99 in 3 is 25.00, 25.00 and 24.99.
            final = total - instalment * (count - 1)
            if final < min_instalment:
                continue
            plans.append(
                {
                    "instalments": count,
                    "frequency": "monthly",
                    "instalment_amount": str(instalment),
                    "final_amount": str(final),
                    "total": str(total),
                    "first_due": (today + dt.timedelta(days=7)).isoformat(),
                }
            )
        if not plans:
            raise Ineligible(
                f"no plan of {sorted(params['instalment_counts'])} instalments keeps each one "
                f"at or above {min_instalment} within {max_term} months"
            )
        return {"plans": plans}
    if key == "dispute":
        reasons = [r for r in params["reasons"] if r.strip()]
        if not reasons:
            raise Ineligible("no dispute reasons")
        return {"reasons": reasons}
    if key == "upload_documents":
        types = [t for t in params["document_types"] if t.strip()]
        if not types:
            raise Ineligible("no document is required")
        return {
            "document_types": types,
            "max_files": max(1, int(params.get("max_files", 5))),
            "max_file_mb": max(1, int(params.get("max_file_mb", 10))),
        }
    if key == "attestation":
        return {"statement": str(params["statement"])}
    if key == "update_contact_details":
        fields = [f for f in params.get("fields", sorted(CONTACT_FIELDS)) if f in CONTACT_FIELDS]
        return {"fields": fields, "confirm_unchanged": True}
    if key == "request_callback":
        windows = [w for w in params["windows"] if WINDOW.match(w)]
        if not windows:
            raise Ineligible("no valid callback window (HH:MM-HH:MM)")
        latest = today + dt.timedelta(days=_days(params.get("max_days", 7), "max_days"))
        return {
            "windows": windows,
            "earliest_date": today.isoformat(),
            "latest_date": latest.isoformat(),
        }
    return {}  # update_payment_method: the provider's hosted page holds the details


def offer_compute(*, case: Any, blueprint: Blueprint, today: dt.date | None = None) -> dict:
    plain_context = rule_context(case=case, today=today)
    day = dt.date.fromisoformat(plain_context["today"])
    context = rule_scope(plain_context)
    offered: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    for action in blueprint.actions:
        try:
            eligible = action.eligible.evaluate(context)
        except (KeyError, TypeError, ValueError, RuntimeError, ZeroDivisionError) as exc:
            excluded.append(
                {
                    "action": action.key,
                    "rule": action.eligible.source,
                    "reason": f"rule error: {exc}",
                }
            )
            continue
        if eligible is not True:
            excluded.append(
                {"action": action.key, "rule": action.eligible.source, "reason": "rule is false"}
            )
            continue
        try:
            params = {name: rule.evaluate(context) for name, rule in action.params.items()}
            bounds = _bounds(action, params, day)
        except Ineligible as exc:
            excluded.append({"action": action.key, "rule": "bounds", "reason": str(exc)})
            continue
        except (KeyError, TypeError, ValueError, RuntimeError, ZeroDivisionError) as exc:
            excluded.append(
                {"action": action.key, "rule": "bounds", "reason": f"bound error: {exc}"}
            )
            continue
        offered.append(
            {
                "action": action.key,
                "label": action.label,
                "identity_level": action.identity_level,
                "bounds": bounds,
                "evidence": list(action.evidence),
                "recommended": action.recommended,
            }
        )
    if offered and not any(item["recommended"] for item in offered):
        offered[0]["recommended"] = True
    elif sum(item["recommended"] for item in offered) > 1:
        first = next(i for i, item in enumerate(offered) if item["recommended"])
        for i, item in enumerate(offered):
            item["recommended"] = i == first
    return {
        "policy": {"workflow": case.workflow.key, "version": case.workflow.version},
        "computed_at": timezone.now().isoformat().replace("+00:00", "Z"),
        "today": day.isoformat(),
        "currency": case.data.get("currency", ""),
        "actions": offered,
        "excluded": excluded,
    }


def offer_item_for(
    *,
    case: Any,
    blueprint: Blueprint,
    action: str,
    overrides: dict[str, Any] | None = None,
    today: dt.date | None = None,
) -> dict[str, Any]:
    """One action of the workflow's blueprint as an offer item for this case, whether or not
    its eligibility rule holds, with some params replaced: the alternative an agent offers.
    Raises Ineligible (with the reason) when the workflow does not define the action or its
    bounds leave nothing to choose."""
    compiled = next((item for item in blueprint.actions if item.key == action), None)
    if compiled is None:
        raise Ineligible(f"workflow {case.workflow.key} does not define {action}")
    plain_context = rule_context(case=case, today=today)
    day = dt.date.fromisoformat(plain_context["today"])
    context = rule_scope(plain_context)
    try:
        params = {name: rule.evaluate(context) for name, rule in compiled.params.items()}
        params.update(overrides or {})
        bounds = _bounds(compiled, params, day)
    except (KeyError, TypeError, ValueError, RuntimeError, ZeroDivisionError) as exc:
        raise Ineligible(str(exc)) from exc
    return {
        "action": compiled.key,
        "label": compiled.label,
        "identity_level": compiled.identity_level,
        "bounds": bounds,
        "evidence": list(compiled.evidence),
        "recommended": True,
    }


def offer_action(offer: dict | None, action: str) -> dict | None:
    for item in (offer or {}).get("actions", []):
        if item["action"] == action:
            return item
    return None


def _decimal(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value).strip())
    except (ArithmeticError, ValueError):
        return None
    return number if number.is_finite() else None


def _date(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        return None


def offer_check_choice(*, offer: dict | None, action: str, choice: dict[str, Any]) -> dict:
    """Errors by field for a customer's choice, checked against the stored offer: the HTML
    enforces the same bounds, but only this check counts."""
    item = offer_action(offer, action)
    if item is None:
        return {"action": ["This option is not available for this case."]}
    bounds = item["bounds"]
    errors: dict[str, list[str]] = {}

    def amount_between(field: str, low: str, high: str) -> None:
        amount = _decimal(choice.get(field))
        if amount is None or amount.as_tuple().exponent < -2:
            errors[field] = ["Enter an amount with at most 2 decimal places, e.g. 120.50."]
        elif amount < Decimal(low) or amount > Decimal(high):
            errors[field] = [f"Enter an amount from {low} to {high}."]

    def date_between(field: str, low: str, high: str) -> None:
        day = _date(choice.get(field))
        if day is None:
            errors[field] = ["Enter a date."]
        elif not dt.date.fromisoformat(low) <= day <= dt.date.fromisoformat(high):
            errors[field] = [f"Choose a date from {low} to {high}."]

    if action == "promise_to_pay":
        amount_between("amount", bounds["min_amount"], bounds["max_amount"])
        date_between("date", bounds["earliest_date"], bounds["latest_date"])
    elif action == "pay_now":
        amount_between("amount", bounds["min_amount"], bounds["amount"])
    elif action == "payment_plan":
        counts = {str(plan["instalments"]) for plan in bounds["plans"]}
        if str(choice.get("instalments")) not in counts:
            errors["instalments"] = ["Choose one of the plans offered."]
    elif action == "dispute":
        if choice.get("reason") not in bounds["reasons"]:
            errors["reason"] = ["Choose one of the reasons listed."]
    elif action == "request_callback":
        if choice.get("window") not in bounds["windows"]:
            errors["window"] = ["Choose one of the times listed."]
        date_between("date", bounds["earliest_date"], bounds["latest_date"])
    elif action == "update_contact_details":
        changed = {key for key in ("phone", "email", "address") if choice.get(key)}
        extra = changed - set(bounds["fields"])
        if extra:
            errors[sorted(extra)[0]] = ["This detail cannot be changed here."]
    return errors
