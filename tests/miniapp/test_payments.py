"""Pay now and update card through a provider's hosted step: the demo provider end to
end, declines and their route, Stripe Checkout against a loopback stand-in (the request,
the signed webhook, the return page) and the one-outcome rule when both report."""

from __future__ import annotations

import json
import re
import time

import pytest
from django.test import Client

from cases.models import CaseEvent
from miniapp.payments.base import PaymentRefused, provider_for
from tests import factories
from tests.miniapp.test_flow import Opened, error_text, kinds, open_case, verify_code
from tests.standins.stripe import StripeStandIn
from writeback.models import Outcome

WEBHOOK_SECRET = "whsec_test_standin"
WEBHOOK_URL = "/payments/stripe/webhook/"


@pytest.fixture
def stripe(settings):
    with StripeStandIn(secret_key="sk_test_standin") as standin:
        settings.PAYMENT_PROVIDER = "stripe"
        settings.STRIPE_API_BASE = standin.url
        settings.STRIPE_SECRET_KEY = "sk_test_standin"
        settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
        yield standin


@pytest.fixture
def demo(settings):
    settings.PAYMENT_PROVIDER = "demo"


def verified(client: Client, action: str = "pay_now", **overrides) -> Opened:
    opened = open_case("failed_payment", **overrides)
    client.get(opened.url())
    verify_code(client, opened, action)
    return opened


def start(client: Client, opened: Opened, action: str = "pay_now", **values):
    page = client.get(opened.url(f"pay/{action}"))
    assert page.status_code == 200, page.content
    key = re.search(rb'name="submission_key" value="([^"]+)"', page.content).group(1).decode()
    if action == "pay_now":
        values.setdefault("amount", opened.bounds("pay_now")["amount"])
    return client.post(opened.url(f"pay/{action}"), {"submission_key": key, **values})


def demo_finish(client: Client, location: str, choice: str = "pay"):
    """On the demo provider's page, press Pay or Decline; then follow it back to us."""
    back = client.post(location, {"choice": choice})
    assert back.status_code == 302, back.content
    return client.get(back["Location"])


def webhook(client: Client, stripe: StripeStandIn, session_id: str, **kwargs):
    body = json.dumps(stripe.event(session_id, kwargs.pop("kind", "checkout.session.completed")))
    body = body.encode()
    signature = kwargs.pop("signature", None) or stripe.sign(body, secret=WEBHOOK_SECRET, **kwargs)
    return client.post(
        WEBHOOK_URL, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )


def session_of(response) -> str:
    return response["Location"].rstrip("/").rsplit("/", 1)[-1]


# --- the demo provider ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_demo_pay_now_end_to_end_is_resolved_in_the_system_of_record(demo, demo_core, settings):
    from channels.sequences import sequences_install_shipped
    from writeback.models import WritebackTarget

    settings.CORE_API_TOKEN = "test-core-token"
    factories.writeback_target_shipped()
    WritebackTarget.objects.filter(key="core_rest").update(base_url=demo_core.url)
    factories.workflow_shipped("failed_payment")
    sequences_install_shipped()
    client = Client()
    opened = verified(client)

    started = start(client, opened)
    assert started.status_code == 302
    assert started["Location"].startswith("/payments/demo/")
    hosted = client.get(started["Location"])
    assert hosted.status_code == 200
    assert "Pay with demo card •••• 4242" in hosted.content.decode()
    # The hosted step takes no card data at all: no inputs but the CSRF token.
    assert re.findall(rb"<input[^>]*>", hosted.content) == [
        i for i in re.findall(rb"<input[^>]*>", hosted.content) if b"csrfmiddlewaretoken" in i
    ]
    back = demo_finish(client, started["Location"])

    assert back["Location"] == opened.url("done")
    assert opened.reload().state == "resolved"
    outcome = Outcome.objects.get(case=opened.case)
    assert outcome.state == "confirmed"
    assert outcome.values["amount"] == "120.00"
    assert outcome.values["currency"] == "GBP"
    assert outcome.values["provider"] == "demo"
    assert outcome.values["card_last4"] == "4242"
    assert outcome.values["provider_reference"].startswith("demo_pi_")
    assert outcome.submission_key.startswith("payment:demo_cs_")
    assert "I authorise" in outcome.evidence["consent_text"]
    assert outcome.evidence["identity"] == ["otp"]
    assert outcome.evidence["payment"]["via"] == "return"
    events = kinds(opened.case)
    for kind in ("actions_viewed", "option_chosen", "consent_given", "payment_started"):
        assert kind in events
    assert events.index("payment_started") < events.index("action_submitted")
    assert b"All done" in client.get(opened.url("done")).content


def test_demo_card_update_submits_the_saved_card_reference(client, db, demo):
    opened = verified(client, "update_payment_method")
    started = start(client, opened, "update_payment_method")
    hosted = client.get(started["Location"])
    assert "Save demo card •••• 4242" in hosted.content.decode()

    back = demo_finish(client, started["Location"])

    assert back["Location"] == opened.url("done")
    outcome = Outcome.objects.get(case=opened.case)
    assert outcome.action == "update_payment_method"
    assert outcome.values["provider_reference"].startswith("demo_pm_")
    assert outcome.values["card_last4"] == "4242"
    assert "amount" not in outcome.values
    assert opened.reload().state == "action_submitted"


def test_the_identity_level_is_required_before_the_provider_is_reached(client, db, demo):
    opened = open_case("failed_payment")
    client.get(opened.url())

    page = client.get(opened.url("pay/pay_now"))
    posted = client.post(opened.url("pay/pay_now"), {"amount": "120.00", "submission_key": "k"})

    assert page.status_code == posted.status_code == 302
    assert page["Location"] == opened.url("verify", "next=pay_now")
    assert "payment_started" not in kinds(opened.case)


def test_options_send_provider_actions_to_the_payment_page(client, db, demo):
    opened = verified(client)
    response = client.get(opened.url("options", "action=pay_now"))
    assert response["Location"] == opened.url("pay/pay_now")


def test_an_action_not_offered_is_400_and_recorded(client, db, demo):
    opened = open_case("promise_to_pay")
    client.get(opened.url())
    response = client.post(opened.url("pay/pay_now"), {"amount": "1.00", "submission_key": "k"})
    assert response.status_code == 400
    assert "not available" in error_text(response)
    assert "validation_failed" in kinds(opened.case)


def test_a_declined_demo_payment_follows_the_payment_declined_route(client, db, demo):
    opened = verified(client)

    # failed_payment: payment_declined → retry, at most 2 retries, then escalate.
    first = start(client, opened)
    declined = demo_finish(client, first["Location"], "decline")
    assert declined.status_code == 200
    assert "did not go through" in declined.content.decode()
    assert "Try again" in declined.content.decode()
    replay = client.get(client.post(first["Location"], {"choice": "decline"})["Location"])
    assert replay.status_code == 200
    assert kinds(opened.case).count("payment_declined") == 1  # one decline, however often read

    second = start(client, opened)
    assert session_of(second) != session_of(first)  # a new attempt opens a new session
    demo_finish(client, second["Location"], "decline")
    third = start(client, opened)
    escalated = demo_finish(client, third["Location"], "decline")

    assert escalated["Location"] == opened.url("done")
    assert opened.reload().state == "escalated"
    routes = [
        e.data["route"]
        for e in CaseEvent.objects.filter(case=opened.case, kind="payment_declined").order_by("pk")
    ]
    assert routes == ["retry", "retry", "escalate"]
    assert kinds(opened.case).count("exception_retry") == 2
    assert not Outcome.objects.filter(case=opened.case).exists()


def test_a_decline_can_offer_the_workflows_alternative(client, db, demo):
    spec = factories.workflow_spec("failed_payment")
    spec["exception_routes"]["payment_declined"] = {
        "outcome": "offer_alternative",
        "alternative_action": "request_callback",
    }
    factories.workflow_variant("failed_payment", exception_routes=spec["exception_routes"])
    opened = verified(client)

    declined = demo_finish(client, start(client, opened)["Location"], "decline")

    assert declined.status_code == 200
    assert opened.url("options", "action=request_callback") in declined.content.decode()
    assert "alternative_offered" in kinds(opened.case)
    assert opened.reload().state == "verified"


def test_a_tampered_demo_result_is_refused(client, db, demo):
    opened = verified(client)
    start(client, opened)
    response = client.get(
        opened.url("pay/pay_now/return", "provider=demo&session_id=forged:result")
    )
    assert response.status_code == 400
    assert not Outcome.objects.filter(case=opened.case).exists()


def test_another_cases_payment_cannot_complete_this_case(client, db, demo):
    paid = verified(client)
    other = verified(Client())
    started = start(client, paid)
    back = client.post(started["Location"], {"choice": "pay"})["Location"]
    query = back.split("?", 1)[1]

    response = client.get(other.url("pay/pay_now/return", query))

    assert response.status_code == 400
    assert not Outcome.objects.filter(case=other.case).exists()


def test_the_demo_page_exists_only_with_the_demo_provider(client, db, settings, demo):
    opened = verified(client)
    location = start(client, opened)["Location"]
    settings.PAYMENT_PROVIDER = "stripe"
    assert client.get(location).status_code == 404


def test_leaving_the_provider_page_counts_as_a_new_attempt(client, db, demo):
    opened = verified(client)
    first = start(client, opened)
    cancelled = client.get(opened.url("pay/pay_now/return", "provider=demo&cancelled=1"))
    assert cancelled["Location"] == opened.url("pay/pay_now", "cancelled=1")
    assert "Nothing was taken" in client.get(cancelled["Location"]).content.decode()
    assert session_of(start(client, opened)) != session_of(first)


# --- amounts --------------------------------------------------------------------------------


@pytest.fixture
def part_payments(db):
    """failed_payment whose pay_now allows a part payment of at least 50.00."""
    spec = factories.workflow_spec("failed_payment")
    for action in spec["actions"]:
        if action["action"] == "pay_now":
            action["params"]["min_amount"] = "50.0"
    factories.workflow_variant("failed_payment", actions=spec["actions"])


@pytest.mark.parametrize(
    ("amount", "said"),
    [("49.99", "50.00"), ("120.01", "120.00"), ("abc", "number"), ("60.001", "2 decimal")],
)
def test_an_amount_outside_the_offer_is_refused_before_the_provider(
    client, part_payments, stripe, amount, said
):
    opened = verified(client)
    response = start(client, opened, amount=amount)
    assert response.status_code == 400
    assert said in error_text(response)
    assert stripe.created == []
    assert "payment_started" not in kinds(opened.case)
    assert "validation_failed" in kinds(opened.case)


def test_a_part_payment_within_the_offer_is_charged(client, part_payments, stripe):
    opened = verified(client)
    response = start(client, opened, amount="60.50")
    assert response.status_code == 302
    assert stripe.created[-1]["line_items[0][price_data][unit_amount]"] == "6050"


# --- Stripe ---------------------------------------------------------------------------------


def test_stripe_checkout_session_request_shape(client, db, stripe):
    opened = verified(client)

    response = start(client, opened)

    session_id = session_of(response).split("/")[-1]
    assert response["Location"] == stripe.sessions[session_id]["url"]
    request = stripe.requests[-1]
    assert (request.method, request.path) == ("POST", "/v1/checkout/sessions")
    assert request.headers["authorization"] == "Bearer sk_test_standin"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["idempotency-key"] == f"closeloop-{opened.case.pk}-pay_now-1-120.00"
    form = request.form()
    return_url = f"http://127.0.0.1:8000{opened.url('pay/pay_now/return')}"
    assert form == {
        "mode": "payment",
        "success_url": f"{return_url}?provider=stripe&session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{return_url}?provider=stripe&cancelled=1",
        "client_reference_id": str(opened.case.pk),
        "metadata[case]": str(opened.case.pk),
        "metadata[action]": "pay_now",
        "payment_method_types[0]": "card",
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "gbp",
        "line_items[0][price_data][unit_amount]": "12000",
        "line_items[0][price_data][product_data][name]": "Closeloop Bank: Pay now",
        "payment_intent_data[metadata][case]": str(opened.case.pk),
    }


def test_stripe_card_update_uses_a_setup_session(client, db, stripe):
    opened = verified(client, "update_payment_method")
    start(client, opened, "update_payment_method")
    form = stripe.requests[-1].form()
    assert form["mode"] == "setup"
    assert form["currency"] == "gbp"
    assert not any(name.startswith("line_items") for name in form)


def test_a_double_tap_opens_one_stripe_session(client, db, stripe):
    opened = verified(client)
    first, second = start(client, opened), start(client, opened)
    assert first["Location"] == second["Location"]
    assert len(stripe.sessions) == 1
    assert kinds(opened.case).count("payment_started") == 1


def test_stripe_down_is_a_clear_503_and_nothing_is_started(client, db, stripe):
    opened = verified(client)
    stripe.fail_next(1, status=500)
    response = start(client, opened)
    assert response.status_code == 503
    assert "not" in error_text(response)
    assert "payment_started" not in kinds(opened.case)


def test_stripe_return_reads_the_session_and_submits_once(client, db, stripe):
    opened = verified(client)
    session_id = session_of(start(client, opened))
    success_url = stripe.complete(session_id, last4="1881")

    back = client.get(success_url)

    assert back["Location"] == opened.url("done")
    retrieve = stripe.requests[-1]
    assert (retrieve.method, retrieve.path) == ("GET", f"/v1/checkout/sessions/{session_id}")
    assert "expand[]" in retrieve.query
    outcome = Outcome.objects.get(case=opened.case)
    assert outcome.values["provider"] == "stripe"
    assert outcome.values["card_last4"] == "1881"
    assert outcome.values["provider_reference"].startswith("pi_")
    assert outcome.values["amount"] == "120.00"
    assert outcome.submission_key == f"payment:{session_id}"
    assert client.get(success_url)["Location"] == opened.url("done")  # a reload: same outcome
    assert Outcome.objects.filter(case=opened.case).count() == 1


def test_stripe_card_update_keeps_the_payment_method_token(client, db, stripe):
    opened = verified(client, "update_payment_method")
    session_id = session_of(start(client, opened, "update_payment_method"))
    client.get(stripe.complete(session_id))
    outcome = Outcome.objects.get(case=opened.case)
    assert outcome.values["provider_reference"].startswith("pm_")
    assert outcome.values["card_last4"] == "4242"


@pytest.mark.parametrize("first", ["return", "webhook"])
def test_return_and_webhook_in_either_order_give_one_outcome(client, db, stripe, first):
    opened = verified(client)
    session_id = session_of(start(client, opened))
    success_url = stripe.complete(session_id)

    if first == "return":
        assert client.get(success_url)["Location"] == opened.url("done")
        answer = webhook(Client(), stripe, session_id)
    else:
        answer = webhook(Client(), stripe, session_id)
        assert client.get(success_url)["Location"] == opened.url("done")

    assert answer.status_code == 200
    assert answer.json() == {"result": "submitted"}
    assert Outcome.objects.filter(case=opened.case).count() == 1
    assert kinds(opened.case).count("action_submitted") == 1
    assert opened.reload().state == "action_submitted"


def test_a_valid_webhook_alone_completes_the_payment(client, db, stripe):
    opened = verified(client)
    session_id = session_of(start(client, opened))
    stripe.complete(session_id)

    answer = webhook(Client(), stripe, session_id)

    assert answer.status_code == 200
    outcome = Outcome.objects.get(case=opened.case)
    assert outcome.evidence["payment"]["via"] == "webhook"
    assert "I authorise" in outcome.evidence["consent_text"]  # the consent from our page


def test_a_replayed_webhook_event_is_acted_on_once(client, db, stripe):
    opened = verified(client)
    session_id = session_of(start(client, opened))
    stripe.complete(session_id)
    body = json.dumps(stripe.event(session_id)).encode()
    signature = stripe.sign(body, secret=WEBHOOK_SECRET)

    answers = [
        Client().post(
            WEBHOOK_URL, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
        )
        for _ in range(2)
    ]

    assert [a.json()["result"] for a in answers] == ["submitted", "duplicate"]
    assert kinds(opened.case).count("payment_webhook") == 1
    assert Outcome.objects.filter(case=opened.case).count() == 1


@pytest.mark.parametrize(
    ("signature", "status"),
    [
        ("t=1,v1=" + "0" * 64, 403),  # stale and wrong
        ("", 400),
        ("v1=abc", 400),
        ("t=abc,v1=abc", 400),
    ],
)
def test_a_webhook_without_a_valid_signature_header_is_refused(
    client, db, stripe, signature, status
):
    opened = verified(client)
    session_id = session_of(start(client, opened))
    stripe.complete(session_id)
    body = json.dumps(stripe.event(session_id)).encode()
    answer = Client().post(
        WEBHOOK_URL, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )
    assert answer.status_code == status
    assert not Outcome.objects.filter(case=opened.case).exists()


def test_a_webhook_signed_with_another_secret_is_403(client, db, stripe):
    opened = verified(client)
    session_id = session_of(start(client, opened))
    stripe.complete(session_id)
    body = json.dumps(stripe.event(session_id)).encode()
    answer = Client().post(
        WEBHOOK_URL,
        body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=stripe.sign(body, secret="whsec_someone_else"),
    )
    assert answer.status_code == 403
    assert "does not match" in answer.json()["error"]
    assert not Outcome.objects.filter(case=opened.case).exists()


def test_a_webhook_body_changed_after_signing_is_403(client, db, stripe):
    opened = verified(client)
    session_id = session_of(start(client, opened))
    stripe.complete(session_id)
    body = json.dumps(stripe.event(session_id)).encode()
    signature = stripe.sign(body, secret=WEBHOOK_SECRET)
    tampered = body.replace(b"checkout.session.completed", b"checkout.session.completed ")
    answer = Client().post(
        WEBHOOK_URL, tampered, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )
    assert answer.status_code == 403


@pytest.mark.parametrize("age", [301, -301])
def test_a_webhook_outside_the_300_second_tolerance_is_403(client, db, stripe, age):
    opened = verified(client)
    session_id = session_of(start(client, opened))
    stripe.complete(session_id)
    answer = webhook(Client(), stripe, session_id, timestamp=int(time.time()) - age)
    assert answer.status_code == 403
    assert "tolerance" in answer.json()["error"]
    assert not Outcome.objects.filter(case=opened.case).exists()


def test_webhooks_are_refused_while_no_secret_is_set(client, db, stripe, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    opened = verified(client)
    session_id = session_of(start(client, opened))
    stripe.complete(session_id)
    assert webhook(Client(), stripe, session_id).status_code == 403


def test_webhooks_of_other_kinds_and_unknown_providers(client, db, stripe):
    opened = verified(client)
    session_id = session_of(start(client, opened))
    other = webhook(Client(), stripe, session_id, kind="customer.created")
    assert other.status_code == 200
    assert other.json() == {"result": "ignored"}
    assert Client().post("/payments/demo/webhook/", b"{}", "application/json").status_code == 404
    assert Client().post("/payments/paypal/webhook/", b"{}", "application/json").status_code == 404
    assert Client().get(WEBHOOK_URL).status_code == 405


def test_a_webhook_while_stripe_cannot_be_read_asks_for_redelivery(client, db, stripe):
    opened = verified(client)
    session_id = session_of(start(client, opened))
    stripe.complete(session_id)
    stripe.fail_next(1, status=503)

    answer = webhook(Client(), stripe, session_id)

    assert answer.status_code == 503
    assert "payment_webhook" not in kinds(opened.case)  # so the redelivery is not a duplicate
    assert webhook(Client(), stripe, session_id).json() == {"result": "submitted"}


def test_a_failed_delayed_payment_follows_the_decline_route(client, db, stripe):
    opened = verified(client)
    session_id = session_of(start(client, opened))
    stripe.decline(session_id)

    answer = webhook(Client(), stripe, session_id, kind="checkout.session.async_payment_failed")

    assert answer.json() == {"result": "declined"}
    declined = CaseEvent.objects.get(case=opened.case, kind="payment_declined")
    assert declined.data["decline_code"] == "card_declined"
    assert declined.data["route"] == "retry"


def test_an_expired_session_is_a_cancelled_attempt(client, db, stripe):
    opened = verified(client)
    session_id = session_of(start(client, opened))
    stripe.expire(session_id)
    back = client.get(opened.url("pay/pay_now/return", f"provider=stripe&session_id={session_id}"))
    assert back["Location"] == opened.url("pay/pay_now", "cancelled=1")
    assert "payment_cancelled" in kinds(opened.case)


def test_a_session_id_that_is_not_stripes_is_refused_without_a_call(client, db, stripe):
    opened = verified(client)
    start(client, opened)
    calls = len(stripe.requests)
    back = client.get(opened.url("pay/pay_now/return", "provider=stripe&session_id=../../v1/x"))
    assert back.status_code == 400
    assert len(stripe.requests) == calls
    with pytest.raises(PaymentRefused):
        provider_for("stripe").complete(session_id="cs_../x")


def test_a_payment_on_a_case_that_moved_on_is_kept_for_an_agent(client, db, stripe):
    """Paid in one tab after a second tab's payment already gave the outcome: the money
    moved, so the timeline says so."""
    opened = verified(client)
    first = session_of(start(client, opened))
    client.get(opened.url("pay/pay_now/return", "provider=stripe&cancelled=1"))
    second = session_of(start(client, opened))
    client.get(stripe.complete(second))
    client.get(stripe.complete(first))

    assert Outcome.objects.filter(case=opened.case).count() == 1
    unmatched = CaseEvent.objects.get(case=opened.case, kind="payment_unmatched")
    assert unmatched.data["session"] == first


# --- no card numbers ------------------------------------------------------------------------


def test_no_card_number_is_stored_anywhere(client, db, stripe, settings):
    opened = verified(client)
    client.get(stripe.complete(session_of(start(client, opened))))
    settings.PAYMENT_PROVIDER = "demo"
    other_client = Client()
    other = verified(other_client, "update_payment_method")
    demo_finish(other_client, start(other_client, other, "update_payment_method")["Location"])

    stored = [
        json.dumps([o.values, o.evidence, o.documents, o.submission_key])
        for o in Outcome.objects.all()
    ]
    stored += [json.dumps(data) for data in CaseEvent.objects.values_list("data", flat=True)]
    assert Outcome.objects.count() == 2
    # A card number as digits (13–19 of them), or grouped in fours as printed on a card.
    card_number = re.compile(
        r"(?<!\d)\d{13,19}(?!\d)|(?<![\w-])\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?![\w-])"
    )
    for text in stored:
        assert not card_number.search(text), text
