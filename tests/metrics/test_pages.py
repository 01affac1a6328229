"""The staff dashboard."""

from __future__ import annotations

import pytest

from tests import factories

pytestmark = pytest.mark.django_db


def test_anonymous_is_sent_to_login(client):
    answer = client.get("/admin/metrics/")
    assert answer.status_code == 302
    assert "/admin/login/" in answer["Location"]


def _metrics_reader():
    """Staff with the dashboard's permission (every role but Agent has it: staff/roles.py)."""
    from django.contrib.auth.models import Permission

    user = factories.user()
    user.user_permissions.add(Permission.objects.get(codename="view_casefact"))
    return user


def test_staff_without_the_permission_get_403(client, db):
    client.force_login(factories.user())
    assert client.get("/admin/metrics/").status_code == 403


def test_dashboard_renders_svg_charts(client, dataset):
    client.force_login(_metrics_reader())
    since = dataset["w1"].date().isoformat()
    answer = client.get("/admin/metrics/", {"workflow": "promise_to_pay", "since": since})
    assert answer.status_code == 200
    page = answer.content.decode()
    assert page.count('class="metrics-chart"') == 3
    assert "Drop-off funnel" in page and "Weekly cohorts" in page
    assert "Readiness (last 30 days)" in page
    assert "Agent corrections &gt; 10% of submitted outcomes: 0.25 — review" in page
    assert "<script" not in page.split('id="content-main"')[1]


def test_dashboard_breakdown_and_bad_filters(client, dataset):
    client.force_login(_metrics_reader())
    page = client.get("/admin/metrics/", {"by": "segment"}).content.decode()
    assert "Completion rate by segment" in page
    answer = client.get("/admin/metrics/", {"since": "2026-05-01", "until": "2026-04-01"})
    assert answer.status_code == 400
    assert "since must be before until" in answer.content.decode()
