"""Webhooks in the staff admin: endpoints (created with a secret, validated, secret rotated)
and deliveries (read-only, with attempts, redelivered by those allowed to)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from cases.services import case_transition
from hooks.models import WebhookDelivery, WebhookEndpoint
from hooks.services import webhook_endpoint_create
from tests import factories
from tests.standins.webhook import WebhookReceiver


@pytest.fixture
def admin_client(db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def receiver():
    with WebhookReceiver() as standin:
        yield standin


def test_staff_create_an_endpoint_with_a_filter_and_a_secret(admin_client):
    api_client, _ = factories.api_client()
    response = admin_client.post(
        "/admin/hooks/webhookendpoint/add/",
        {
            "api_client": api_client.pk,
            "url": "https://source.example.com/closeloop",
            "description": "Collections platform",
            "active": "on",
            "events": ["case.resolved", "case.escalated"],
        },
    )
    assert response.status_code == 302, response.content
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.api_client == api_client
    assert endpoint.events == ["case.resolved", "case.escalated"]
    assert endpoint.secret.startswith("whsec_") and len(endpoint.secret) > 40

    page = admin_client.get(f"/admin/hooks/webhookendpoint/{endpoint.pk}/change/")
    assert endpoint.secret in page.content.decode()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("url", "ftp://source.example.com/x", "must start with https://"),
        ("url", "not a url", "Enter a valid URL"),
        ("events", ["case.nonsense"], "Select a valid choice"),
    ],
)
def test_bad_endpoint_input_is_a_form_error(admin_client, field, value, message):
    api_client, _ = factories.api_client()
    data = {"api_client": api_client.pk, "url": "https://ok.example.com/", "active": "on"}
    data[field] = value
    response = admin_client.post("/admin/hooks/webhookendpoint/add/", data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_staff_change_an_endpoint_but_not_its_client_or_secret(admin_client):
    api_client, _ = factories.api_client()
    other, _ = factories.api_client()
    endpoint = webhook_endpoint_create(client=api_client, url="https://a.example.com/")
    secret = endpoint.secret
    response = admin_client.post(
        f"/admin/hooks/webhookendpoint/{endpoint.pk}/change/",
        {
            "api_client": other.pk,
            "url": "https://b.example.com/hooks",
            "description": "moved",
            "events": ["case.resolved"],
            "secret": "whsec_chosen",
        },
    )
    assert response.status_code == 302, response.content
    endpoint.refresh_from_db()
    assert endpoint.url == "https://b.example.com/hooks"
    assert endpoint.active is False
    assert endpoint.events == ["case.resolved"]
    assert endpoint.api_client == api_client
    assert endpoint.secret == secret


def test_rotate_secret_action(admin_client):
    api_client, _ = factories.api_client()
    endpoint = webhook_endpoint_create(client=api_client, url="https://a.example.com/")
    before = endpoint.secret
    response = admin_client.post(
        "/admin/hooks/webhookendpoint/",
        {"action": "rotate_secret", "_selected_action": [endpoint.pk]},
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.secret != before and endpoint.secret.startswith("whsec_")


def test_deliveries_show_their_attempts_and_can_be_redelivered(
    admin_client, workflow, receiver, settings, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    api_client, _ = factories.api_client()
    webhook_endpoint_create(client=api_client, url=receiver.url + "/hooks")
    receiver.fail_next(1, status=502)
    with django_capture_on_commit_callbacks(execute=True):
        case_transition(case=factories.case(api_client), transition="escalate")
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == WebhookDelivery.State.FAILED

    listing = admin_client.get("/admin/hooks/webhookdelivery/")
    assert listing.status_code == 200
    assert "case.escalated" in listing.content.decode()
    page = admin_client.get(f"/admin/hooks/webhookdelivery/{delivery.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "502" in html and "HTTP 502" in html
    assert f"/admin/cases/case/{delivery.case_id}/change/" in html

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/hooks/webhookdelivery/",
            {"action": "redeliver", "_selected_action": [delivery.pk]},
        )
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.state == WebhookDelivery.State.DELIVERED
    assert [a.status_code for a in delivery.attempt_log.all()] == [502, 200]


def test_redeliver_needs_its_permission(workflow, receiver):
    viewer = get_user_model().objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_webhookdelivery"))
    client = Client()
    client.force_login(viewer)
    api_client, _ = factories.api_client()
    webhook_endpoint_create(client=api_client, url=receiver.url + "/hooks")
    case_transition(case=factories.case(api_client), transition="escalate")
    delivery = WebhookDelivery.objects.get()

    listing = client.get("/admin/hooks/webhookdelivery/")
    assert listing.status_code == 200
    assert "redeliver" not in listing.content.decode()
    client.post(
        "/admin/hooks/webhookdelivery/",
        {"action": "redeliver", "_selected_action": [delivery.pk]},
    )
    assert not receiver.requests

    viewer.user_permissions.add(Permission.objects.get(codename="redeliver_webhookdelivery"))
    assert 'value="redeliver"' in client.get("/admin/hooks/webhookdelivery/").content.decode()
