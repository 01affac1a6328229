"""Per-API-key request budgets on /api/v1/: 429 with Retry-After and our error shape, counted
per key in the shared cache, with a per-client override."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from cases.models import ApiClient
from cases.services import api_client_set_rate_limit
from miniapp import ratelimit
from tests import factories

# A moment 50.25 s into its minute: a 60-second window has 9.75 s left, so Retry-After is 10.
FROZEN_NOW = 1_800_000_050.25


@pytest.fixture
def limits(settings, monkeypatch):
    settings.API_RATE_LIMIT = "2/minute"
    monkeypatch.setattr(ratelimit.time, "time", lambda: FROZEN_NOW)
    cache.clear()
    yield
    cache.clear()


def key_client(name: str | None = None) -> tuple[APIClient, ApiClient]:
    client, raw_key = factories.api_client(name)
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return http, client


def test_over_the_limit_is_429_with_retry_after(db, limits):
    http, _ = key_client()
    assert [http.get("/api/v1/workflows/").status_code for _ in range(2)] == [200, 200]

    response = http.get("/api/v1/workflows/")
    assert response.status_code == 429
    assert response["Retry-After"] == "10"
    assert response.json() == {
        "detail": "Too many requests for this API key; try again in 10 seconds.",
        "errors": {"rate_limit": ["This key may send 2 requests per minute."]},
    }


def test_another_key_has_its_own_budget(db, limits):
    first, _ = key_client()
    second, _ = key_client()
    for _ in range(3):
        first.get("/api/v1/workflows/")
    assert first.get("/api/v1/workflows/").status_code == 429
    assert second.get("/api/v1/workflows/").status_code == 200


def test_every_endpoint_spends_from_the_one_budget(db, limits, workflow):
    http, _ = key_client()
    created = http.post("/api/v1/triggers/", factories.trigger_body(), format="json")
    assert created.status_code == 201
    assert http.get("/api/v1/workflows/").status_code == 200
    refused = http.post("/api/v1/triggers/", factories.trigger_body(), format="json")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "10"


def test_the_budget_comes_back_in_the_next_window(db, limits, monkeypatch):
    http, _ = key_client()
    for _ in range(2):
        http.get("/api/v1/workflows/")
    assert http.get("/api/v1/workflows/").status_code == 429
    monkeypatch.setattr(ratelimit.time, "time", lambda: FROZEN_NOW + 10)
    assert http.get("/api/v1/workflows/").status_code == 200


def test_a_clients_own_limit_overrides_the_setting(db, limits):
    generous, generous_client = key_client()
    api_client_set_rate_limit(client=generous_client, rate_limit="5/minute")
    unlimited, unlimited_client = key_client()
    api_client_set_rate_limit(client=unlimited_client, rate_limit="off")

    assert [generous.get("/api/v1/workflows/").status_code for _ in range(6)] == [200] * 5 + [429]
    assert generous.get("/api/v1/workflows/").json()["errors"] == {
        "rate_limit": ["This key may send 5 requests per minute."]
    }
    assert {unlimited.get("/api/v1/workflows/").status_code for _ in range(10)} == {200}


def test_unauthenticated_requests_are_not_counted_against_a_key(db, limits):
    http, _ = key_client()
    stranger = APIClient()
    for _ in range(5):
        assert stranger.get("/api/v1/workflows/").status_code == 401
    assert http.get("/api/v1/workflows/").status_code == 200


def test_off_by_setting(db, settings):
    settings.API_RATE_LIMIT = "off"
    http, _ = key_client()
    assert {http.get("/api/v1/workflows/").status_code for _ in range(5)} == {200}


@pytest.mark.parametrize("value", ["600", "ten/minute", "5/fortnight", "5 per minute"])
def test_a_bad_rate_is_refused(db, value):
    _, client = key_client()
    with pytest.raises(ValueError, match="600/minute"):
        api_client_set_rate_limit(client=client, rate_limit=value)
    client.refresh_from_db()
    assert client.rate_limit == ""


def test_staff_set_a_clients_limit_in_the_admin(db):
    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("root", "r@example.com", "pw"))
    _, client = key_client("collections")
    url = f"/admin/cases/apiclient/{client.pk}/change/"

    refused = staff.post(url, {"rate_limit": "lots"})
    assert refused.status_code == 200
    assert "per second, minute, hour or day" in refused.content.decode()
    client.refresh_from_db()
    assert client.rate_limit == ""

    assert staff.post(url, {"rate_limit": "1200/minute"}).status_code == 302
    client.refresh_from_db()
    assert client.rate_limit == "1200/minute"
    assert client.name == "collections"
