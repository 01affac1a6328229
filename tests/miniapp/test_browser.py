"""The mini-app in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright;
no browser is ever downloaded) against pytest-django's live server.

Covered: promise-to-pay from the trigger through code entry to the confirmation page, with
the taps after verification counted (at most two for the recommended option) and the time
from the first page open to the `action_submitted` event printed (`pytest -s`); five wrong
codes lock identity; an expired link offers a fresh one; the whole flow at 320 px wide with
JavaScript off fits the screen and keeps 44 px touch targets. Every page is also watched for
Content-Security-Policy violations.

Select them with `-m browser`; they are skipped, with the reason, where Chromium is absent.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.cache import cache
from django.utils import timezone

from cases.models import CaseEvent
from miniapp.models import CaseLink
from tests import factories
from tests.miniapp.test_flow import Opened, last_code, open_case

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)"
    ),
]


@pytest.fixture(scope="module", autouse=True)
def _async_unsafe_allowed() -> Iterator[None]:
    """Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    (reading a code from the outbox, checking events) are plain blocking calls that Django
    would refuse. Only for this module: the variable must never leak into other tests."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


TOUCH_TARGETS = (
    "button, a.button, .options a, .help a, .link, "
    "input:not([type=hidden]):not([type=radio]), .field div > div > label, .scale label"
)


@pytest.fixture(scope="module")
def chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def limits_on(settings):
    """The real rate limits, as in production, with counters from earlier runs gone."""
    settings.MINIAPP_RATE_LIMITS = True
    cache.clear()


class Phone:
    """A browser page that records policy violations and counts the taps it makes."""

    def __init__(self, page):
        self.page = page
        self.taps = 0
        self.violations: list[str] = []
        page.on("console", self._console)

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.violations.append(message.text)

    def tap(self, selector: str) -> None:
        self.taps += 1
        with self.page.expect_navigation():
            self.page.click(selector)


@pytest.fixture
def phone(chromium) -> Iterator[Phone]:
    context = chromium.new_context()
    yield Phone(context.new_page())
    context.close()


@pytest.fixture
def small_phone(chromium) -> Iterator[Phone]:
    """320 × 640, JavaScript off: the smallest screen we support, the plainest browser."""
    context = chromium.new_context(
        java_script_enabled=False, viewport={"width": 320, "height": 640}
    )
    yield Phone(context.new_page())
    context.close()


def _open() -> Opened:
    """A promise_to_pay case with its outreach sequence (a transactional test starts from
    empty tables: without a sequence the case would go straight to an agent)."""
    from channels.sequences import sequences_install_shipped

    factories.workflow_shipped("promise_to_pay")
    sequences_install_shipped()
    return open_case("promise_to_pay")


def _to_confirmation(phone: Phone, live_server, opened: Opened, check=None) -> dict:
    """Open the link, verify by code, accept the recommended option and confirm.
    Returns the taps after verification and the seconds from open to submission."""
    page = phone.page
    check = check or (lambda: None)
    opened_at = timezone.now()
    page.goto(live_server.url + opened.url())
    check()
    phone.tap("a.button.primary")  # the recommended option: to identity first
    check()
    phone.tap("text=Text me a code")
    page.fill("#code", last_code(opened.case))
    check()
    phone.tap("form:has(#code) button[type=submit]")
    # The code is accepted: from here every tap counts.
    assert "/options/" in page.url, page.url
    phone.taps = 0
    check()
    phone.tap("form[action$='/options/'] button[type=submit]")  # Continue, pre-filled
    assert "/review/" in page.url, page.url
    check()
    phone.tap("text=I agree, confirm")
    assert page.url.endswith("/done/"), page.url
    check()
    submitted = CaseEvent.objects.get(case=opened.case, kind="action_submitted")
    return {"taps": phone.taps, "seconds": (submitted.created_at - opened_at).total_seconds()}


@pytest.mark.django_db(transaction=True)
def test_promise_to_pay_in_two_taps_after_the_code(phone, live_server, demo_core, settings):
    from writeback.models import WritebackTarget

    settings.CORE_API_TOKEN = "test-core-token"
    opened = _open()
    WritebackTarget.objects.filter(key="core_rest").update(base_url=demo_core.url)

    figures = _to_confirmation(phone, live_server, opened)

    print(
        f"\npromise_to_pay in Chromium: {figures['taps']} taps after verification, "
        f"{figures['seconds']:.2f} s from first open to action_submitted"
    )
    assert figures["taps"] <= 2
    # The writeback lands; the page says so (htmx polls while it is pending).
    phone.page.wait_for_selector("text=All done", timeout=10_000)
    assert opened.reload().state == "resolved"
    assert phone.violations == []


@pytest.mark.django_db(transaction=True)
def test_five_wrong_codes_lock_the_link(phone, live_server, limits_on):
    opened = _open()
    page = phone.page
    page.goto(live_server.url + opened.url("verify"))
    phone.tap("text=Text me a code")
    wrong = "000000" if last_code(opened.case) != "000000" else "111111"
    for attempt in range(5):
        page.fill("#code", wrong)
        phone.tap("form:has(#code) button[type=submit]")
        if attempt < 4:
            assert "not right" in page.locator(".error").inner_text()
    assert page.locator("text=this link is locked").is_visible()
    assert page.locator("#code").count() == 0
    # Opening the page again does not bring the code form back: the case went to an agent.
    page.goto(live_server.url + opened.url("verify"))
    assert page.locator("#code").count() == 0
    assert page.locator("text=Text me a code").count() == 0
    assert CaseEvent.objects.filter(case=opened.case, kind="verification_failed").count() == 5
    assert opened.reload().state != "verified"
    assert phone.violations == []


@pytest.mark.django_db(transaction=True)
def test_an_expired_link_offers_a_fresh_one(phone, live_server, limits_on):
    opened = _open()
    CaseLink.objects.filter(case=opened.case).update(
        expires_at=timezone.now() - dt.timedelta(minutes=1)
    )
    page = phone.page
    response = page.goto(live_server.url + opened.url())
    assert response.status == 410
    assert page.locator("h1").inner_text() == "This link has expired"
    links_before = CaseLink.objects.filter(case=opened.case).count()
    phone.tap("text=Send me a new link")
    assert page.locator("h1").inner_text() == "We've sent you a new link"
    assert CaseLink.objects.filter(case=opened.case).count() == links_before + 1
    assert phone.violations == []


def _fits_and_is_tappable(phone: Phone) -> None:
    """Nothing wider than the 320 px screen, no sideways scrolling; every control at least
    44 px high. Playwright evaluates in its own isolated world, which keeps working with the
    page's JavaScript off, so one call measures every element's box."""
    page = phone.page
    width = page.viewport_size["width"]
    boxes = page.locator("body *").evaluate_all(
        """elements => elements.map(e => {
            const box = e.getBoundingClientRect();
            return {tag: e.tagName, cls: e.className, left: box.left, right: box.right,
                    width: box.width, height: box.height};
        }).concat([{tag: "document", cls: "", left: 0,
                    right: document.documentElement.scrollWidth, width: 1, height: 1}])"""
    )
    overflowing = [
        box
        for box in boxes
        if box["width"] > 0 and (box["left"] < -0.5 or box["right"] > width + 0.5)
    ]
    assert overflowing == [], (page.url, overflowing)
    targets = page.locator(TOUCH_TARGETS).evaluate_all(
        "elements => elements.map("
        "e => [e.outerHTML.slice(0, 80), e.getBoundingClientRect().height])"
    )
    assert targets, page.url
    small = [(html, height) for html, height in targets if 0 < height < 43.5]
    assert small == [], (page.url, small)


@pytest.mark.django_db(transaction=True)
def test_the_flow_at_320_px_without_javascript(small_phone, live_server, limits_on):
    opened = _open()
    started = time.monotonic()
    figures = _to_confirmation(
        small_phone, live_server, opened, check=lambda: _fits_and_is_tappable(small_phone)
    )
    assert figures["taps"] <= 2
    assert small_phone.page.locator("#status h1").is_visible()
    assert small_phone.violations == []
    print(f"\n320 px, no JavaScript: {figures['taps']} taps, {time.monotonic() - started:.1f} s")
