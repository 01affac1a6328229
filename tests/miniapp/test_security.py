"""The mini-app's browser-facing protections: Content-Security-Policy without inline script
or style, the brand stylesheet, CSRF, clickjacking, no-store caching, rate limits per link
and per IP (on the shared database cache, and on Redis when one is at hand), and URLs that
carry nothing personal beyond the token."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection
from django.test import Client

from cases.models import CaseEvent
from miniapp.middleware import STRIPE_CHECKOUT_ORIGIN, csp_policy
from miniapp.ratelimit import Rule, rate_spend
from tests.miniapp.test_flow import (
    choose,
    enter_code,
    last_code,
    open_case,
    promise,
    send_code,
    verify_code,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates" / "miniapp"


class _Page(HTMLParser):
    """Inline script and style, and every URL, in one rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts: list[str] = []
        self.inline_styles: list[str] = []
        self.urls: list[str] = []
        self._in_script = False
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in values
        if tag == "style":
            self._in_style = True
        if "style" in values:
            self.inline_styles.append(f"<{tag} style={values['style']!r}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.inline_scripts.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action", "hx-get", "hx-post") and value:
                self.urls.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data.strip()[:80])
        if self._in_style and data.strip():
            self.inline_styles.append(data.strip()[:80])


def parsed(response) -> _Page:
    page = _Page()
    page.feed(response.content.decode())
    return page


@pytest.fixture
def limits(settings):
    """Rate limits on, with small budgets, and counters from earlier tests gone."""
    settings.MINIAPP_RATE_LIMITS = True
    settings.MINIAPP_RATE_PAGES_PER_IP = 1000
    settings.MINIAPP_RATE_PAGES_PER_LINK = 1000
    settings.MINIAPP_RATE_CODES_PER_IP = 1000
    settings.MINIAPP_RATE_CODES_PER_LINK = 1000
    settings.MINIAPP_RATE_UNKNOWN_LINKS_PER_IP = 1000
    cache.clear()
    yield settings
    cache.clear()


# --- Content-Security-Policy ------------------------------------------------------------------


EXPECTED_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


@pytest.mark.django_db
def test_every_customer_page_has_the_policy_no_store_and_deny_framing(client):
    opened = open_case()
    verify_code(client, opened)
    pages = [
        client.get(opened.url()),
        client.get(opened.url("verify")),
        client.get(opened.url("options")),
        client.get(opened.url("help")),
        client.get("/m/not-a-real-token/"),
    ]
    assert [page.status_code for page in pages] == [200, 302, 200, 200, 404]
    for page in pages:
        assert page["Content-Security-Policy"] == EXPECTED_CSP
        assert page["X-Frame-Options"] == "DENY"
        assert "no-store" in page["Cache-Control"]


@pytest.mark.django_db
def test_rendered_pages_carry_no_inline_script_or_style(client):
    opened = open_case()
    verify_code(client, opened)
    options = client.get(opened.url("options"))
    chosen = choose(client, opened, "promise_to_pay", promise(opened))
    assert chosen.status_code == 302, chosen.content
    for response in (
        client.get(opened.url()),
        options,
        client.get(opened.url("review")),
        client.get(opened.url("help")),
    ):
        assert response.status_code == 200
        page = parsed(response)
        assert page.inline_scripts == [] and page.inline_styles == []


def test_templates_have_no_inline_script_style_or_handlers():
    """The policy would block them in the browser; catch them here first."""
    for template in sorted(TEMPLATES.rglob("*.html")):
        text = re.sub(r"\{#.*?#\}", "", template.read_text())  # template comments
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template.name
        assert "<style" not in text, template.name
        assert not re.search(r"\sstyle\s*=", text), template.name
        assert not re.search(r"\son[a-z]+\s*=", text), template.name
        assert "javascript:" not in text, template.name


def test_the_policy_names_stripe_checkout_and_the_logo_host_only_when_used(settings):
    settings.BRAND_LOGO_URL = "/static/miniapp/logo.svg"
    assert csp_policy() == EXPECTED_CSP
    settings.PAYMENT_PROVIDER = "stripe"
    settings.BRAND_LOGO_URL = "https://cdn.bank.example/brand/logo.svg"
    policy = csp_policy()
    assert f"form-action 'self' {STRIPE_CHECKOUT_ORIGIN};" in policy
    assert "img-src 'self' data: https://cdn.bank.example;" in policy


@pytest.mark.django_db
def test_staff_pages_keep_their_own_inline_code_and_still_render(client):
    """Swagger UI runs an inline script: the policy is scoped to /m/."""
    docs = client.get("/api/docs/")
    login = client.get("/admin/login/")
    assert docs.status_code == 200 and login.status_code == 200
    assert "Content-Security-Policy" not in docs and "Content-Security-Policy" not in login
    assert login["X-Frame-Options"] == "DENY"


# --- branding -------------------------------------------------------------------------------


def _contrast_with_white(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


@pytest.mark.django_db
def test_the_brand_colour_is_a_cacheable_stylesheet_linked_from_every_page(client, settings):
    settings.BRAND_COLOUR = "#7a1f5c"
    css = client.get("/m/brand.css")
    assert css.status_code == 200
    assert css["Content-Type"].startswith("text/css")
    assert css.content.decode().strip() == ":root { --brand: #7a1f5c; }"
    assert css["Cache-Control"] == "public, max-age=3600"
    page = client.get(open_case().url())
    assert '<link rel="stylesheet" href="/m/brand.css">' in page.content.decode()
    assert "data-brand" not in page.content.decode()
    assert client.post("/m/brand.css").status_code == 405


def test_the_default_brand_colour_keeps_aa_contrast_with_white_text():
    assert _contrast_with_white(django_settings.BRAND_COLOUR) >= 4.5


def test_a_brand_colour_that_is_not_a_hex_colour_stops_startup():
    """The colour is written into CSS: anything but #rrggbb could inject rules."""
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": "x",
            "BRAND_COLOUR": "red; } body { display: none",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "BRAND_COLOUR must be a colour like #0b5cad" in result.stderr


# --- CSRF -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_post_without_the_csrf_token_is_refused_and_sends_nothing():
    opened = open_case()
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(opened.url("verify"))
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()
    refused = browser.post(opened.url("verify"), {"step": "send"})
    assert refused.status_code == 403
    assert not CaseEvent.objects.filter(case=opened.case, kind="code_sent").exists()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    sent = browser.post(
        opened.url("verify"), {"step": "send", "csrfmiddlewaretoken": token.group(1)}
    )
    assert sent.status_code == 200
    assert CaseEvent.objects.filter(case=opened.case, kind="code_sent").count() == 1


# --- rate limits ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_pages_per_link_answer_429_with_retry_after_then_recover(client, limits):
    limits.MINIAPP_RATE_PAGES_PER_LINK = 3
    opened, other = open_case(), open_case()
    assert [client.get(opened.url()).status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get(opened.url())
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 61
    assert "no-store" in refused["Cache-Control"]
    assert refused["Content-Security-Policy"] == EXPECTED_CSP
    assert "Please wait a moment" in refused.content.decode()
    assert "Please try again in 1 minute." in refused.content.decode()
    # Another customer's link from the same address is not held back.
    assert client.get(other.url()).status_code == 200


@pytest.mark.django_db
def test_pages_per_ip_cover_every_link_from_one_address(limits):
    limits.MINIAPP_RATE_PAGES_PER_IP = 4
    cases = [open_case() for _ in range(3)]
    crowd = Client(REMOTE_ADDR="198.51.100.7")
    statuses = [crowd.get(opened.url()).status_code for opened in cases + cases[:2]]
    assert statuses == [200, 200, 200, 200, 429]
    assert Client(REMOTE_ADDR="198.51.100.8").get(cases[0].url()).status_code == 200


@pytest.mark.django_db
def test_identity_answers_have_a_stricter_budget(client, limits):
    limits.MINIAPP_RATE_CODES_PER_LINK = 3
    opened = open_case()
    assert send_code(client, opened).status_code == 200
    code = last_code(opened.case)
    wrong = "000000" if code != "000000" else "111111"
    assert enter_code(client, opened, wrong).status_code == 400
    assert enter_code(client, opened, wrong).status_code == 400
    refused = enter_code(client, opened, code)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) <= 15 * 60 + 1
    # The refused answer never reached the identity check: nothing recorded for it.
    assert CaseEvent.objects.filter(case=opened.case, kind="verified").count() == 0
    assert CaseEvent.objects.filter(case=opened.case, kind="verification_failed").count() == 2
    # Pages of the same link still open; only the answers wait.
    assert client.get(opened.url()).status_code == 200


@pytest.mark.django_db
def test_identity_answers_per_ip_span_links(limits):
    limits.MINIAPP_RATE_CODES_PER_IP = 2
    first, second = open_case(), open_case()
    client = Client(REMOTE_ADDR="203.0.113.9")
    assert send_code(client, first).status_code == 200
    assert send_code(client, second).status_code == 200
    assert enter_code(client, second, "123456").status_code == 429


@pytest.mark.django_db
def test_probing_unknown_links_stops_that_address(limits):
    limits.MINIAPP_RATE_UNKNOWN_LINKS_PER_IP = 3
    opened = open_case()
    prober = Client(REMOTE_ADDR="192.0.2.44")
    statuses = [prober.get(f"/m/guess-{n}/").status_code for n in range(3)]
    assert statuses == [404, 404, 404]
    assert prober.get(opened.url()).status_code == 429
    assert Client(REMOTE_ADDR="192.0.2.45").get(opened.url()).status_code == 200


@pytest.mark.django_db
def test_limits_off_never_refuse(client, settings):
    settings.MINIAPP_RATE_LIMITS = False
    settings.MINIAPP_RATE_PAGES_PER_LINK = 1
    opened = open_case()
    assert {client.get(opened.url()).status_code for _ in range(3)} == {200}


@pytest.mark.django_db
def test_counters_hold_no_raw_token_or_address(client, limits):
    opened = open_case()
    client.get(opened.url(), REMOTE_ADDR="198.51.100.23")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT cache_key FROM {django_settings.CACHE_TABLE}")  # noqa: S608
        keys = [row[0] for row in cursor.fetchall()]
    assert any("rl:pages_link:" in key for key in keys)
    assert not any(opened.token in key or "198.51.100.23" in key for key in keys)


def test_a_window_refuses_past_its_limit_and_reopens_in_the_next(db):
    cache.clear()
    rule = Rule("test", limit=2, window_seconds=60)
    start = 1_800_000_000.0  # on a window boundary
    assert rate_spend(rule=rule, subject="a", now=start) is None
    assert rate_spend(rule=rule, subject="a", now=start + 1) is None
    assert rate_spend(rule=rule, subject="a", now=start + 30) == 31
    assert rate_spend(rule=rule, subject="b", now=start + 30) is None
    assert rate_spend(rule=rule, subject="a", now=start + 60) is None


@pytest.mark.django_db
def test_migrate_creates_the_shared_cache_table():
    assert django_settings.CACHE_TABLE in connection.introspection.table_names()
    assert django_settings.CACHES["default"]["BACKEND"].endswith("DatabaseCache")
    cache.set("probe", 41)
    assert cache.incr("probe") == 42


def test_redis_url_selects_the_redis_cache():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.CACHES['default']['BACKEND'], settings.CACHES['default']['LOCATION'])",
        ],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": "x",
            "REDIS_URL": "redis://127.0.0.1:6390/0",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == [
        "django.core.cache.backends.redis.RedisCache",
        "redis://127.0.0.1:6390/0",
    ], result.stderr


@pytest.fixture
def redis_server(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed; the database cache is covered above")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp_path],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.django_db
def test_limits_work_the_same_on_redis(client, redis_server, limits):
    limits.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_server,
        }
    }
    limits.MINIAPP_RATE_PAGES_PER_LINK = 2
    opened = open_case()
    statuses = [client.get(opened.url()).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


# --- nothing personal in URLs ---------------------------------------------------------------


@pytest.mark.django_db
def test_urls_carry_the_token_and_option_names_only(client):
    opened = open_case()
    customer = opened.case.customer
    personal = [customer.phone, customer.email, customer.name, *customer.name.split()]
    personal += [str(value) for value in opened.case.data.values() if len(str(value)) > 3]
    seen: list[str] = []
    for response in (client.get(opened.url()), send_code(client, opened)):
        seen += parsed(response).urls
    verified = enter_code(client, opened, last_code(opened.case))
    seen.append(verified["Location"])
    options = client.get(opened.url("options"))
    seen += parsed(options).urls
    for url in seen:
        parts = urlsplit(url)
        assert set(parse_qs(parts.query)) <= {"next", "action"}, url
        for value in personal:
            assert value not in url, (value, url)
        if parts.path.startswith("/m/") and parts.path != "/m/brand.css":
            assert parts.path.split("/")[2] == opened.token, url
