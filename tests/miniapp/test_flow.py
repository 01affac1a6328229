"""The mini-app flow through Django's test client: pages, events, evidence, tokens,
sessions, double submits and the end-to-end path to a resolved case. The helpers at the
top are shared by test_identity.py and test_actions.py."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from cases.models import Case, CaseEvent
from channels.models import OutboxEntry
from miniapp.models import CaseCodeDevice, CaseLink
from miniapp.services import link_issue, link_revoke
from miniapp.views import CONSENT_TEXT
from policies.models import Workflow
from policies.services import case_prepare
from tests import factories
from writeback.models import Outcome

# --- helpers shared by the mini-app tests ----------------------------------------------------


@dataclass
class Opened:
    """A prepared case and the raw token of a link to it."""

    case: Case
    token: str

    def url(self, page: str = "", query: str = "") -> str:
        return f"/m/{self.token}/" + (f"{page}/" if page else "") + (f"?{query}" if query else "")

    def reload(self) -> Case:
        self.case = Case.objects.get(pk=self.case.pk)
        return self.case

    def bounds(self, action: str) -> dict:
        return next(a for a in self.case.offer["actions"] if a["action"] == action)["bounds"]


def open_case(workflow_key: str = "promise_to_pay", **overrides) -> Opened:
    """A case of a shipped workflow with its offer stored (as before any outreach), and a
    fresh link to it. Installs the shipped workflow unless a version is active already."""
    if not Workflow.objects.filter(key=workflow_key, status="active").exists():
        factories.workflow_shipped(workflow_key)
    case = factories.case_for(workflow_key, **overrides)
    case_prepare(case=case.pk)
    case = Case.objects.get(pk=case.pk)
    return Opened(case=case, token=link_issue(case=case).token)


def kinds(case: Case) -> list[str]:
    return list(CaseEvent.objects.filter(case=case).order_by("pk").values_list("kind", flat=True))


def last_code(case: Case) -> str:
    entry = OutboxEntry.objects.filter(to=case.customer.phone).order_by("-pk").first()
    return re.search(r"#(\d{6})$", entry.body).group(1)


def send_code(client: Client, opened: Opened, action: str = ""):
    return client.post(opened.url("verify", f"next={action}" if action else ""), {"step": "send"})


def enter_code(client: Client, opened: Opened, code: str, action: str = ""):
    query = f"next={action}" if action else ""
    return client.post(opened.url("verify", query), {"step": "code", "code": code})


def cooldown_over(case: Case) -> None:
    """Move the last code's sending time back past the 30-second resend cooldown."""
    CaseCodeDevice.objects.filter(case=case).update(
        last_sent_at=timezone.now() - dt.timedelta(seconds=31)
    )


def verify_code(client: Client, opened: Opened, action: str = "") -> None:
    """Prove the one-time code factor for `opened` in this client's session."""
    send_code(client, opened, action)
    response = enter_code(client, opened, last_code(opened.case), action)
    assert response.status_code == 302, response.content


# The known facts factories.trigger_body gives every customer.
KNOWN_FACTS = {"date_of_birth": "1985-12-10", "postcode": "SW1A 1AA", "account_last4": "4321"}


def enter_facts(client: Client, opened: Opened, action: str, **answers: str):
    return client.post(
        opened.url("verify", f"next={action}"), {"step": "facts", **KNOWN_FACTS, **answers}
    )


def verify_fully(client: Client, opened: Opened, action: str) -> None:
    """A code and known facts: what otp_and_known_fact actions need."""
    verify_code(client, opened, action)
    response = enter_facts(client, opened, action)
    assert response.status_code == 302, response.content


def form_key(response) -> str:
    return re.search(rb'name="submission_key" value="([^"]+)"', response.content).group(1).decode()


def choose(client: Client, opened: Opened, action: str, values: dict):
    """Open the action's form (for a real submission key) and post `values` to it."""
    page = client.get(opened.url("options", f"action={action}"))
    assert page.status_code == 200, page.status_code
    return client.post(
        opened.url("options"), {"action": action, "submission_key": form_key(page), **values}
    )


def error_text(response) -> str:
    return " ".join(re.findall(r'class="error"[^>]*>(.*?)</', response.content.decode(), re.S))


def promise(opened: Opened) -> dict:
    bounds = opened.bounds("promise_to_pay")
    return {"amount": bounds["max_amount"], "date": bounds["latest_date"]}


@pytest.fixture
def opened(db) -> Opened:
    return open_case("promise_to_pay")


@pytest.fixture
def chosen(client, opened) -> Opened:
    """Verified, a promise chosen: the next step is the review page."""
    client.get(opened.url())
    verify_code(client, opened)
    assert choose(client, opened, "promise_to_pay", promise(opened)).status_code == 302
    return opened


# --- links --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_unknown_token_is_404_without_a_hint(client):
    response = client.get("/m/" + "x" * 43 + "/")

    assert response.status_code == 404
    assert b"We could not find this link" in response.content
    assert "no-store" in response["Cache-Control"]


def test_expired_link_is_410_and_offers_a_new_one_while_the_case_is_open(client, opened):
    CaseLink.objects.filter(case=opened.case).update(expires_at=timezone.now())

    response = client.get(opened.url("options"))

    assert response.status_code == 410
    assert b"This link has expired" in response.content
    assert opened.url("renew").encode() in response.content
    assert "no-store" in response["Cache-Control"]


def test_expired_link_of_a_closed_case_offers_nothing(client, opened):
    from cases.services import case_transition

    case_transition(case=opened.case, transition="cancel")
    CaseLink.objects.filter(case=opened.case).update(expires_at=timezone.now())

    response = client.get(opened.url())

    assert response.status_code == 410
    assert opened.url("renew").encode() not in response.content
    assert client.post(opened.url("renew")).status_code == 410
    assert not OutboxEntry.objects.exists()


def test_revoked_link_is_410(client, opened):
    link_revoke(link=CaseLink.objects.get(case=opened.case))

    for page in ("", "verify", "options", "review", "done", "help"):
        response = client.get(opened.url(page))
        assert response.status_code == 410, page
        assert "no-store" in response["Cache-Control"]


def test_renew_sends_a_new_link_to_the_phone_on_file_never_to_a_typed_address(client, opened):
    CaseLink.objects.filter(case=opened.case).update(expires_at=timezone.now())

    response = client.post(
        opened.url("renew"),
        {"phone": "+447400123456", "email": "someone@else.example", "to": "+447400123456"},
    )

    assert response.status_code == 200
    assert b"sent you a new link" in response.content
    [sent] = OutboxEntry.objects.all()
    assert sent.to == opened.case.customer.phone
    new_token = re.search(r"/m/([^/]+)/", sent.body).group(1)
    assert new_token != opened.token
    assert client.get(f"/m/{new_token}/").status_code == 200
    assert "link_renewed" in kinds(opened.case)


@pytest.mark.django_db
def test_a_token_longer_than_any_issued_is_404(client):
    assert client.get("/m/" + "a" * 5000 + "/").status_code == 404


# --- summary, help, feedback ----------------------------------------------------------------


def test_summary_shows_what_is_owed_and_records_the_open(client, opened):
    response = client.get(opened.url(), HTTP_USER_AGENT="TestPhone/1.0")

    assert response.status_code == 200
    assert b"GBP 420.50" in response.content
    assert opened.case.data["account_reference"].encode() in response.content
    assert opened.reload().state == "engaged"
    client.get(opened.url())  # a reload within the hour is not news
    assert kinds(opened.case)[-1] == "engaged"
    CaseLink.objects.filter(case=opened.case).update(
        last_opened_at=timezone.now() - dt.timedelta(hours=2)
    )
    client.get(opened.url())  # back later: recorded
    assert kinds(opened.case)[-2:] == ["engaged", "link_opened"]


def test_i_need_help_escalates_with_the_customer_requested_help_route(client, opened):
    client.get(opened.url())

    response = client.post(opened.url("help"), {"note": "I lost my job", "page": "options"})

    assert response.status_code == 200
    assert b"Help is on the way" in response.content
    case = opened.reload()
    assert case.state == "escalated"
    assert case.escalation_reason == "customer_requested_help"
    assert case.priority == 60  # workflows/promise_to_pay.yaml exception_routes
    assert kinds(case)[-2:] == ["help_requested", "escalated"]
    # Asking again on an escalated case is recorded, and changes nothing else.
    assert client.post(opened.url("help"), {"note": "again"}).status_code == 200
    assert opened.reload().state == "escalated"


@pytest.mark.parametrize("score", ["1", "5"])
def test_feedback_from_1_to_5_is_recorded(client, chosen, score):
    client.post(chosen.url("review"))

    response = client.post(chosen.url("feedback"), {"score": score})

    assert response.status_code == 200
    event = CaseEvent.objects.get(case=chosen.case, kind="feedback_given")
    assert event.data == {"score": int(score)}


def test_feedback_counts_once_and_only_after_a_submission(client, chosen):
    client.post(chosen.url("feedback"), {"score": "2"})  # nothing submitted yet
    assert not CaseEvent.objects.filter(kind="feedback_given").exists()
    client.post(chosen.url("review"))

    first = client.post(chosen.url("feedback"), {"score": "4"})
    again = client.post(chosen.url("feedback"), {"score": "1"})

    assert first.status_code == again.status_code == 200
    [event] = CaseEvent.objects.filter(case=chosen.case, kind="feedback_given")
    assert event.data == {"score": 4}


@pytest.mark.parametrize("score", ["6", "0", "", "five", "1" * 500])
def test_feedback_outside_1_to_5_is_400_with_the_reason_shown(client, chosen, score):
    client.post(chosen.url("review"))

    response = client.post(chosen.url("feedback"), {"score": score})

    assert response.status_code == 400
    assert "Choose a number from 1 to 5." in error_text(response)
    assert not CaseEvent.objects.filter(kind="feedback_given").exists()


def test_htmx_poll_of_done_gets_the_status_fragment_only(client, chosen):
    client.post(chosen.url("review"))

    full = client.get(chosen.url("done"))
    fragment = client.get(chosen.url("done"), HTTP_HX_REQUEST="true")

    assert b"<html" in full.content and b'id="status"' in full.content
    assert fragment.status_code == 200
    assert fragment.content.decode().lstrip().startswith('<section id="status"')
    assert b"<html" not in fragment.content
    # Still pending, so the fragment keeps polling.
    assert b'hx-trigger="every 3s"' in fragment.content
    assert "no-store" in fragment["Cache-Control"]


# --- the steps, their events and the consent evidence -----------------------------------------


def test_every_step_is_recorded_and_consent_evidence_is_kept_on_the_outcome(client, opened):
    client.get(opened.url(), HTTP_USER_AGENT="TestPhone/1.0")
    send_code(client, opened)
    enter_code(client, opened, "000000" if last_code(opened.case) != "000000" else "111111")
    verify_code(client, opened)
    client.post(opened.url("options"), {"action": "pay_by_crypto"})
    choose(client, opened, "promise_to_pay", {"amount": "1.00", "date": "2000-01-01"})
    choose(client, opened, "promise_to_pay", promise(opened))
    before = timezone.now()

    response = client.post(opened.url("review"), HTTP_USER_AGENT="TestPhone/1.0")

    assert response.status_code == 302
    assert response["Location"] == opened.url("done")
    recorded = kinds(opened.case)
    for kind in (
        "engaged",
        "code_sent",
        "verification_failed",
        "verified",
        "validation_failed",
        "actions_viewed",
        "option_chosen",
        "consent_given",
        "action_submitted",
    ):
        assert kind in recorded, kind
    assert recorded.index("consent_given") < recorded.index("action_submitted")
    outcome = Outcome.objects.get(case=opened.case)
    assert outcome.values == promise(opened)
    evidence = outcome.evidence
    assert evidence["consent_text"] == CONSENT_TEXT.format(brand=django_settings.BRAND_NAME)
    assert before <= dt.datetime.fromisoformat(evidence["consented_at"]) <= timezone.now()
    assert evidence["ip"] == "127.0.0.1"
    assert evidence["user_agent"] == "TestPhone/1.0"
    assert evidence["identity"] == ["otp"]
    # The exact text the customer agreed to is the text the review page showed.
    assert opened.reload().state == "action_submitted"


def test_review_shows_the_choice_and_the_consent_text(client, chosen):
    response = client.get(chosen.url("review"))

    assert response.status_code == 200
    content = response.content.decode()
    assert CONSENT_TEXT.format(brand=django_settings.BRAND_NAME) in content
    assert promise(chosen)["amount"] in content and promise(chosen)["date"] in content


def test_review_without_a_choice_goes_back_to_the_options(client, opened):
    client.get(opened.url())
    verify_code(client, opened)

    response = client.post(opened.url("review"))

    assert response.status_code == 302
    assert response["Location"] == opened.url("options")
    assert not Outcome.objects.exists()


def test_every_personal_page_says_no_store(client, chosen):
    pages = [chosen.url(p) for p in ("", "verify", "options", "review", "help")]
    for url in pages:
        response = client.get(url)
        assert response.status_code in (200, 302), url
        assert response["Cache-Control"] == "no-store, max-age=0", url
    client.post(chosen.url("review"))
    for response in (
        client.get(chosen.url("done")),
        client.get(chosen.url("review")),  # now a redirect to done
        client.post(chosen.url("feedback"), {"score": "4"}),
        client.post(chosen.url("help"), {"note": ""}),
    ):
        assert response["Cache-Control"] == "no-store, max-age=0"


# --- double submits and token crossing ---------------------------------------------------------


def test_the_same_review_posted_twice_gives_one_outcome(client, chosen):
    first = client.post(chosen.url("review"))
    second = client.post(chosen.url("review"))

    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"] == chosen.url("done")
    assert Outcome.objects.filter(case=chosen.case).count() == 1
    assert kinds(chosen.case).count("action_submitted") == 1
    confirmation = client.get(second["Location"])
    assert b"Thank you, we have it" in confirmation.content


def test_two_tabs_with_two_submission_keys_give_one_outcome(client, opened):
    client.get(opened.url())
    verify_code(client, opened)
    tab_one = client.get(opened.url("options", "action=promise_to_pay"))
    tab_two = client.get(opened.url("options", "action=dispute"))
    assert form_key(tab_one) != form_key(tab_two)

    client.post(
        opened.url("options"),
        {"action": "promise_to_pay", "submission_key": form_key(tab_one), **promise(opened)},
    )
    assert client.post(opened.url("review")).status_code == 302
    late = client.post(
        opened.url("options"),
        {"action": "dispute", "submission_key": form_key(tab_two), "reason": "Something else"},
    )
    late_review = client.post(opened.url("review"))

    assert late["Location"] == late_review["Location"] == opened.url("done")
    [outcome] = Outcome.objects.filter(case=opened.case)
    assert outcome.action == "promise_to_pay"
    assert b"Thank you, we have it" in client.get(opened.url("done")).content


def test_two_browsers_racing_to_confirm_give_one_outcome(opened):
    """Both reach the review page before either confirms: the second sees the first's
    confirmation rather than an error."""
    first, second = Client(), Client()
    first.get(opened.url())
    for browser in (first, second):
        cooldown_over(opened.case)
        verify_code(browser, opened)
        assert choose(browser, opened, "promise_to_pay", promise(opened)).status_code == 302
        assert browser.get(opened.url("review")).status_code == 200

    assert first.post(opened.url("review"))["Location"] == opened.url("done")
    answer = second.post(opened.url("review"))

    assert answer["Location"] == opened.url("done")
    assert Outcome.objects.filter(case=opened.case).count() == 1


def test_verifying_case_a_never_unlocks_case_b(client, opened):
    other = open_case("promise_to_pay", customer={"phone": "+447400123456"})
    client.get(opened.url())
    verify_code(client, opened)
    assert choose(client, opened, "promise_to_pay", promise(opened)).status_code == 302
    client.get(other.url())

    # Case A's session neither shows B's options nor carries A's choice to B's review.
    options_b = client.get(other.url("options"))
    review_b = client.post(other.url("review"))
    chosen_b = client.post(
        other.url("options"), {"action": "promise_to_pay", "submission_key": "k", **promise(other)}
    )
    assert options_b.status_code == review_b.status_code == chosen_b.status_code == 302
    assert options_b["Location"].startswith(other.url("verify"))
    assert review_b["Location"] == other.url("options")
    assert chosen_b["Location"].startswith(other.url("verify"))
    assert not Outcome.objects.exists()
    # A's code is no answer for B: B has sent no code at all.
    response = enter_code(client, other, last_code(opened.case))
    assert response.status_code == 400
    assert "Ask for a code first." in error_text(response)
    # B verifies on its own; A stays verified and unaffected.
    verify_code(client, other)
    assert client.get(other.url("options")).status_code == 200
    assert client.get(opened.url("review")).status_code == 200
    assert opened.reload().state == other.reload().state == "verified"


# --- bad input never gives a 500 ------------------------------------------------------------

GARBAGE = [
    ("verify", {"step": "teleport"}),
    ("verify", {"step": ""}),
    ("verify", {}),
    ("verify", {"step": "code", "code": "9" * 100_000}),
    ("verify", {"step": "facts", "date_of_birth": "31/31/31", "postcode": "x" * 10_000}),
    ("verify", {"step": "facts"}),
    ("options", {}),
    ("options", {"action": "promise_to_pay"}),
    ("options", {"action": "promise_to_pay", "amount": "lots", "date": "tomorrow"}),
    ("options", {"action": "promise_to_pay", "amount": "1e400", "date": "2026-02-30"}),
    ("options", {"action": "promise_to_pay", "amount": "NaN", "date": "9" * 5000}),
    ("options", {"action": "promise_to_pay", "amount": "9" * 10_000, "submission_key": "k"}),
    ("options", {"action": "x" * 10_000}),
    ("options", {"action": "request_callback", "window": "-1", "date": "0"}),
    ("options", {"action": "dispute", "reason": "\x00"}),
    ("feedback", {"score": "\x00"}),
]


@pytest.mark.parametrize(("page", "data"), GARBAGE)
def test_garbage_posted_to_a_page_is_a_4xx(client, opened, page, data):
    client.get(opened.url())
    if page != "verify":
        verify_code(client, opened)

    response = client.post(opened.url(page, "next=payment_plan"), data)

    assert 400 <= response.status_code < 500, response.status_code
    assert not Outcome.objects.exists()
    assert "option_chosen" not in kinds(opened.case)


def test_an_unknown_step_is_400_and_counts_as_nothing(client, opened):
    client.get(opened.url())

    response = client.post(opened.url("verify"), {"step": "teleport"})

    assert response.status_code == 400
    assert not OutboxEntry.objects.exists()
    assert "verification_failed" not in kinds(opened.case)


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_other_methods_are_405(client, opened, method):
    assert getattr(client, method)(opened.url("options")).status_code == 405


# --- end to end --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_promise_to_pay_end_to_end_is_resolved_in_the_system_of_record(demo_core, settings):
    from channels.sequences import sequences_install_shipped
    from writeback.models import WritebackTarget

    settings.CORE_API_TOKEN = "test-core-token"
    factories.writeback_target_shipped()
    WritebackTarget.objects.filter(key="core_rest").update(base_url=demo_core.url)
    factories.workflow_shipped("promise_to_pay")
    sequences_install_shipped()
    opened = open_case("promise_to_pay")
    client = Client()

    home = client.get(opened.url())
    assert home.status_code == 200
    verify_code(client, opened, "promise_to_pay")
    chosen = choose(client, opened, "promise_to_pay", promise(opened))
    assert chosen["Location"] == opened.url("review")
    assert client.get(chosen["Location"]).status_code == 200
    confirmed = client.post(opened.url("review"))

    assert confirmed["Location"] == opened.url("done")
    assert opened.reload().state == "resolved"
    done = client.get(opened.url("done"))
    assert b"All done" in done.content
    assert b'hx-trigger="every 3s"' not in done.content  # nothing left to poll for
    outcome = Outcome.objects.get(case=opened.case)
    assert outcome.state == "confirmed"
    assert outcome.values == promise(opened)
    assert str(outcome.pk)[:8].upper().encode() in done.content
    assert demo_core.stats()


# --- found by these tests -----------------------------------------------------------------------


def test_renew_tapped_twice_sends_one_new_link(client, opened):
    link_revoke(link=CaseLink.objects.get(case=opened.case))

    first = client.post(opened.url("renew"))
    second = client.post(opened.url("renew"))

    assert first.status_code == second.status_code == 200
    assert b"sent you a new link" in second.content
    assert OutboxEntry.objects.count() == 1
    assert kinds(opened.case).count("link_renewed") == 1


def test_done_on_a_case_still_open_goes_back_to_the_start(client, opened):
    client.get(opened.url())

    response = client.get(opened.url("done"))

    assert response.status_code == 302
    assert response["Location"] == opened.url()


def test_a_refused_outcome_keeps_no_consent_and_says_so_plainly(client, chosen):
    from writeback.models import WritebackTarget

    target = WritebackTarget.objects.get(key="core_rest")
    target.operations = {k: v for k, v in target.operations.items() if k != "promise_to_pay"}
    target.save()

    response = client.post(chosen.url("review"))

    assert response.status_code == 400
    assert "core_rest" not in error_text(response)
    assert "We could not record this" in error_text(response)
    assert "consent_given" not in kinds(chosen.case)
    assert not Outcome.objects.exists()
    assert chosen.reload().state == "verified"


def test_a_case_reached_without_the_summary_page_still_completes(client, opened):
    """A customer who lands on a deeper page first (a bookmark, a forwarded step) is
    engaged there: the case never skips the engaged state."""
    from cases.services import case_transition

    case_transition(case=opened.case, transition="start_outreach")
    verify_code(client, opened, "promise_to_pay")
    choose(client, opened, "promise_to_pay", promise(opened))

    response = client.post(opened.url("review"))

    assert response.status_code == 302, error_text(response)
    assert opened.reload().state == "action_submitted"
    recorded = kinds(opened.case)
    assert recorded.index("engaged") < recorded.index("verified")
