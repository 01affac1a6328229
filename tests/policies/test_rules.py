"""Rules: a broken rule is refused with a message that names the rule and the problem, and
such a rule can be neither saved (model clean, file import) nor activated (launch gate)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from policies.blueprint import BlueprintError, blueprint_for, workflow_launch_gaps
from policies.models import ExceptionRoute, ForkRule, Workflow, WorkflowAction, WorkflowApproval
from policies.rules import RuleError, rule_compile
from policies.services import (
    ApprovalError,
    workflow_import,
    workflow_new_version,
    workflow_request_activation,
    workflows_install_shipped,
)
from tests import factories

CONTRACT = factories.workflow_spec("promise_to_pay")["contract"]
DATA_FIELDS = "account_reference, balance, currency, days_past_due, due_date, minimum_payment"
CUSTOMER_FIELDS = (
    "consent, flags, has_email, has_phone, has_whatsapp, locale, preferred_channel, timezone"
)
DOUBLES = (
    "mixes types that do not combine (decimal fields are doubles: write 5000.0, not 5000; "
    "convert with double(x) or int(x))."
)


def _problem(source: str, expect=bool, label: str = "Promise: eligible when") -> str:
    with pytest.raises(RuleError) as caught:
        rule_compile(source, contract=CONTRACT, expect=expect, label=label)
    return str(caught.value)


# --- rule_compile -------------------------------------------------------------------------------


def test_syntax_error_names_the_rule_and_the_position():
    message = _problem("data.balance >")

    assert message.startswith("Promise: eligible when: syntax error in `data.balance >`: 1:15:")
    assert "mismatched input '<EOF>'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "data.nope > 1",
            "Promise: eligible when: `data.nope > 1` uses data.nope, which this workflow does "
            f"not have; data has: {DATA_FIELDS}.",
        ),
        (
            "has(data.nope)",
            "Promise: eligible when: `has(data.nope)` uses data.nope, which this workflow does "
            f"not have; data has: {DATA_FIELDS}.",
        ),
        (
            '"risky" in customer.nope',
            'Promise: eligible when: `"risky" in customer.nope` uses customer.nope, which this '
            f"workflow does not have; customer has: {CUSTOMER_FIELDS}.",
        ),
        (
            'case.region == "north"',
            'Promise: eligible when: `case.region == "north"` uses case.region, which this '
            "workflow does not have; case has: segment.",
        ),
    ],
)
def test_unknown_field(source, message):
    assert _problem(source) == message


def test_field_names_inside_text_are_not_fields():
    rule = rule_compile('"data.nope" != case.segment', contract=CONTRACT, expect=bool)

    assert rule.evaluate({"case": {"segment": "retail"}}) is True


def test_unknown_name():
    message = _problem("balance > 5000.0")

    assert message.startswith(
        "Promise: eligible when: `balance > 5000.0` fails on sample data: Undefined variable"
    )


@pytest.mark.parametrize(
    ("source", "expect", "message"),
    [
        ("data.balance", bool, "gives float on sample data; it must give true or false."),
        (
            'data.currency == "GBP" ? 1 : 0',
            bool,
            "gives int on sample data; it must give true or false.",
        ),
        ("data.balance > 10.0", float, "gives bool on sample data; it must give a number."),
        ("data.balance", int, "gives float on sample data; it must give a whole number."),
        ("[3, 6.0]", list[int], "gives list on sample data; it must give a list of whole numbers."),
        ('["a", 1]', list[str], "gives list on sample data; it must give a list of text."),
        ("30", str, "gives int on sample data; it must give text."),
    ],
)
def test_wrong_result_type(source, expect, message):
    assert _problem(source, expect=expect) == f"Promise: eligible when: `{source}` {message}"


@pytest.mark.parametrize(
    "source",
    [
        "data.balance * 2 > 100.0",  # double * int
        "data.balance + 1 > 100.0",
        "data.days_past_due * 0.25 > 1.0",  # int * double
        "data.balance > 5000.0 + data.days_past_due",
    ],
)
def test_int_and_double_arithmetic_is_refused_with_a_hint(source):
    assert _problem(source) == f"Promise: eligible when: `{source}` {DOUBLES}"


def test_int_literal_compared_with_a_decimal_field_is_exact():
    # CEL compares numbers across int and double by value, so `> 5000` is the same rule as
    # `> 5000.0`; only arithmetic across the two types is an error (above).
    rule = rule_compile("data.balance > 5000", contract=CONTRACT, expect=bool)

    assert rule.evaluate({"data": {"balance": 5000.0}}) is False
    assert rule.evaluate({"data": {"balance": 5000.01}}) is True


def test_optional_field_must_be_guarded_with_has():
    assert _problem("data.minimum_payment > 10.0") == (
        "Promise: eligible when: `data.minimum_payment > 10.0` reads data.minimum_payment, "
        "which triggers may leave out; guard it with has(data.minimum_payment)."
    )
    assert _problem("data.balance * 0.25 + data.minimum_payment", expect=float).endswith(
        "guard it with has(data.minimum_payment)."
    )

    guarded = rule_compile(
        "has(data.minimum_payment) ? data.minimum_payment : data.balance * 0.25",
        contract=CONTRACT,
        expect=float,
    )
    assert guarded.evaluate({"data": {"balance": 100.0}}) == 25.0
    assert guarded.evaluate({"data": {"balance": 100.0, "minimum_payment": 40.0}}) == 40.0


def test_empty_long_and_failing_rules():
    assert _problem("   ") == "Promise: eligible when: the rule is empty."
    long_rule = " || ".join(["data.balance > 1.0"] * 120)
    assert _problem(long_rule) == (
        "Promise: eligible when: the rule is longer than 2,000 characters."
    )
    assert _problem("data.days_past_due / 0 > 1") == (
        "Promise: eligible when: `data.days_past_due / 0 > 1` fails on sample data: "
        "division by zero in CEL expression"
    )


def test_shipped_rules_compile():
    for key in ("promise_to_pay", "failed_payment", "compliance_refresh", "address_update"):
        spec = factories.workflow_spec(key)
        for action in spec["actions"]:
            rule_compile(action["eligible_when"], contract=spec["contract"], expect=bool)
        for fork in spec["fork_rules"]:
            rule_compile(fork["when"], contract=spec["contract"], expect=bool)


# --- a broken rule cannot be saved --------------------------------------------------------------


@pytest.fixture
def draft(db):
    """A draft of promise_to_pay v2, made from the active v1 by its author."""
    active = factories.workflow_promise_to_pay()
    return workflow_new_version(workflow=active, user=factories.user("author"))


def _clean_errors(row) -> dict[str, list[str]] | list[str]:
    with pytest.raises(ValidationError) as caught:
        row.full_clean()
    error = caught.value
    return error.message_dict if hasattr(error, "error_dict") else error.messages


def test_action_with_a_broken_rule_cannot_be_saved(draft):
    row = WorkflowAction(
        workflow=draft,
        action="pay_now",
        eligible_when="data.balance > 100",
        identity_level="otp",
        params={"amount": "data.balance * 2", "min_amount": "data.nope"},
        evidence=["amount"],
    )

    assert _clean_errors(row) == {
        "__all__": [
            f"Pay now: amount: `data.balance * 2` {DOUBLES}",
            "Pay now: min_amount: `data.nope` uses data.nope, which this workflow does not "
            f"have; data has: {DATA_FIELDS}.",
        ]
    }


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"eligible_when": "data.balance"},
            "Pay now: eligible when: `data.balance` gives float on sample data; it must give "
            "true or false.",
        ),
        (
            {"params": {}},
            "Pay now: the bound 'amount' (Amount due now) is required.",
        ),
        (
            {"params": {"amount": "data.balance", "maximum": "10.0"}},
            "Pay now: unknown bound 'maximum'; it takes: amount, min_amount.",
        ),
        (
            {"evidence": ["fingerprint"]},
            "Pay now: evidence must be a list of: consent_text, amount, date, plan, "
            "payment_reference, reason, note, documents, typed_name, contact_details, "
            "callback_window.",
        ),
    ],
)
def test_action_problems_are_named(draft, changes, problem):
    fields = {
        "workflow": draft,
        "action": "pay_now",
        "identity_level": "otp",
        "params": {"amount": "data.balance"},
        "evidence": ["amount"],
        **changes,
    }

    assert _clean_errors(WorkflowAction(**fields)) == {"__all__": [problem]}


def test_fork_rule_with_a_broken_rule_cannot_be_saved(draft):
    row = ForkRule(
        workflow=draft,
        name="Payday lender",
        when='"payday" in customer.lenders',
        reason="Agents handle these.",
    )

    assert _clean_errors(row) == {
        "when": [
            'Payday lender: `"payday" in customer.lenders` uses customer.lenders, which this '
            f"workflow does not have; customer has: {CUSTOMER_FIELDS}."
        ]
    }


@pytest.mark.parametrize(
    ("priority_rule", "problem"),
    [
        (
            "data.balance > 2500.0 ? 70.0 : 40.0",
            "priority: `data.balance > 2500.0 ? 70.0 : 40.0` gives float on sample data; "
            "it must give a whole number.",
        ),
        (
            "data.minimum_payment > 10.0 ? 70 : 40",
            "priority: `data.minimum_payment > 10.0 ? 70 : 40` reads data.minimum_payment, "
            "which triggers may leave out; guard it with has(data.minimum_payment).",
        ),
    ],
)
def test_exception_route_with_a_broken_rule_cannot_be_saved(draft, priority_rule, problem):
    row = draft.exception_routes.get(exception_type="no_response")
    row.priority_rule = priority_rule

    assert _clean_errors(row) == {"priority_rule": [problem]}


def _row_counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (Workflow, WorkflowAction, ForkRule, ExceptionRoute, WorkflowApproval)
    }


@pytest.mark.django_db
@pytest.mark.parametrize("installed", [False, True])
def test_import_with_a_broken_rule_lists_the_problem_and_writes_nothing(installed):
    if installed:
        workflows_install_shipped()
    spec = factories.workflow_spec("promise_to_pay")
    spec["actions"][0]["eligible_when"] = "data.days_past_due < 90 && data.balanse <= 5000.0"
    spec["fork_rules"][2]["when"] = "data.balance > 10000"  # fine: see the int-literal test
    spec["exception_routes"]["ineligible"]["priority_rule"] = "data.balance > 2500.0 ? 70 : 4.0"
    before = _row_counts()

    with pytest.raises(ValidationError) as caught:
        workflow_import(spec=spec)

    assert caught.value.messages == [
        "actions[0]: Promise to pay: eligible when: `data.days_past_due < 90 && "
        "data.balanse <= 5000.0` uses data.balanse, which this workflow does not have; "
        f"data has: {DATA_FIELDS}.",
        "exception_routes.ineligible.priority_rule: priority: `data.balance > 2500.0 ? 70 : "
        "4.0` gives float on sample data; it must give a whole number.",
    ]
    assert _row_counts() == before


# --- a broken rule cannot be activated ----------------------------------------------------------


def test_broken_rule_inserted_behind_the_admins_back_blocks_activation(draft):
    ForkRule.objects.create(
        workflow=draft, name="Sloppy", when="data.balance >", reason="Written in a hurry."
    )
    broken = "Fix the rule — Fork rule 'Sloppy': syntax error in `data.balance >`: 1:15:"

    gaps = workflow_launch_gaps(draft)
    with pytest.raises(ApprovalError) as caught:
        workflow_request_activation(workflow=draft, user=factories.user())

    assert len(gaps) == 1
    assert gaps[0].startswith(broken)
    assert str(caught.value).startswith(f"Not ready to launch: {broken}")
    draft.refresh_from_db()
    assert draft.status == Workflow.Status.DRAFT
    assert not WorkflowApproval.objects.filter(workflow=draft).exists()
    with pytest.raises(BlueprintError) as compiled:
        blueprint_for(draft)
    assert compiled.value.problems[0].startswith("Fork rule 'Sloppy': syntax error")


def test_broken_action_and_route_rows_are_each_listed(draft):
    WorkflowAction.objects.filter(workflow=draft, action="payment_plan").update(
        params={"total_amount": "data.balance", "instalment_counts": "[3, 6, 12]"}
    )
    ExceptionRoute.objects.filter(workflow=draft, exception_type="no_response").update(
        priority_rule="data.days_past_due >= 10 ? 'urgent' : 30"
    )
    draft.save()  # a new updated_at, as an admin save would give

    gaps = workflow_launch_gaps(draft)

    assert gaps == [
        "Fix the rule — Payment plan: the bound 'min_instalment' (Least amount of one "
        "instalment) is required.",
        "Fix the rule — Payment plan: the bound 'max_term_months' (Longest plan, in months) "
        "is required.",
        "Fix the rule — Route no_response: priority rule: `data.days_past_due >= 10 ? "
        "'urgent' : 30` gives str on sample data; it must give a whole number.",
    ]
    with pytest.raises(ApprovalError, match="the bound 'min_instalment'"):
        workflow_request_activation(workflow=draft, user=factories.user())


# --- the launch gate ----------------------------------------------------------------------------

ROUTE_GAPS = [
    "Choose an exception route for “Payment declined”.",
    "Choose an exception route for “No eligible action”.",
    "Choose an exception route for “Identity check failed”.",
    "Choose an exception route for “Missing document”.",
    "Choose an exception route for “System of record unavailable”.",
    "Choose an exception route for “No response”.",
    "Choose an exception route for “Customer asked for help”.",
]


@pytest.mark.django_db
def test_launch_gate_lists_everything_an_empty_draft_lacks():
    empty = Workflow.objects.create(key="empty", name="Empty")

    assert workflow_launch_gaps(empty) == [
        "Write the one-sentence completion definition (when is a case done?).",
        "Define the trigger data contract (at least one field).",
        "Offer at least one action.",
        "Attach a writeback target (where outcomes are posted).",
        *ROUTE_GAPS,
    ]


@pytest.mark.django_db
def test_launch_gate_names_each_missing_piece_of_a_half_done_draft():
    spec = factories.workflow_spec("promise_to_pay")
    spec["key"] = "half_done"
    spec["actions"][2]["evidence"] = []
    spec["writeback_target"] = ""
    routes = spec["exception_routes"]
    del routes["identity_failed"], routes["no_response"]
    routes["payment_declined"] = {"outcome": "offer_alternative", "alternative_action": "pay_now"}
    draft = workflow_import(spec=spec)
    ExceptionRoute.objects.create(workflow=draft, exception_type="no_response", outcome="close")
    ExceptionRoute.objects.create(
        workflow=draft, exception_type="identity_failed", outcome="retry", max_retries=0
    )

    assert workflow_launch_gaps(draft) == [
        "Dispute: choose the evidence it must capture.",
        "Attach a writeback target (where outcomes are posted).",
        "“Payment declined” offers an alternative that this workflow does not offer; pick one "
        "of its actions.",
        "“Identity check failed” retries: allow at least one retry.",
        "“No response” closes the case: give the reason it records.",
    ]


@pytest.mark.django_db
def test_shipped_workflows_have_no_gaps():
    for workflow in workflows_install_shipped():
        assert workflow.status == Workflow.Status.ACTIVE
        assert workflow_launch_gaps(workflow) == []
