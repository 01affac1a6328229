"""/metrics: Prometheus text format behind a bearer token; off (404) unless METRICS_TOKEN."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.cache import cache
from django.test import Client
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from cases.services import case_transition
from hooks.services import webhook_endpoint_create
from tests import factories
from tests.test_deploy import ROOT
from writeback.breaker import breaker_record
from writeback.models import WritebackTarget

TOKEN = "metrics-token-for-tests"


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN


def scrape() -> dict[tuple[str, tuple], float]:
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_off_without_a_token_setting(db, settings):
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics").status_code == 404
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"]
)
def test_a_missing_or_wrong_token_is_401(db, token, header):
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = Client().get("/metrics", **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"closeloop_" not in response.content


def test_request_latency_by_view_and_status(db, token, api):
    api.get("/api/v1/workflows/")
    api.get("/api/v1/cases/00000000-0000-0000-0000-000000000000/")
    Client().get("/no-such-page")
    samples = scrape()
    count = "closeloop_http_request_duration_seconds_count"
    assert samples[(count, (("method", "GET"), ("status", "200"), ("view", "api:workflows")))] >= 1
    assert (
        samples[(count, (("method", "GET"), ("status", "404"), ("view", "api:case-detail")))] >= 1
    )
    assert samples[(count, (("method", "GET"), ("status", "404"), ("view", "unmatched")))] >= 1
    bucket = (
        "closeloop_http_request_duration_seconds_bucket",
        (("le", "+Inf"), ("method", "GET"), ("status", "200"), ("view", "api:workflows")),
    )
    assert samples[bucket] >= 1
    # Paths never become labels: a case id or a link token would be one series each.
    assert not any("0000-0000" in str(labels) for _, labels in samples)


def test_queue_depths_sends_writebacks_webhooks_and_breakers(db, token, workflow):
    cache.clear()  # no worker status left behind by another test's worker
    client, _ = factories.api_client()
    webhook_endpoint_create(client=client, url="http://127.0.0.1:9/hooks")
    case_transition(case=factories.case(client), transition="escalate")  # job not run
    target = WritebackTarget.objects.get(key="core_rest")
    for _ in range(target.breaker_threshold):
        breaker_record(target=target, success=False)

    samples = scrape()
    assert samples[("closeloop_queue_depth", (("queue", "webhooks"),))] == 1
    assert samples[("closeloop_queue_depth", (("queue", "messages"),))] == 0
    assert samples[("closeloop_queue_depth", (("queue", "writeback"),))] == 0
    assert ("closeloop_queue_depth", (("queue", "jobs"),)) in samples
    assert samples[("closeloop_queue_oldest_age_seconds", (("queue", "webhooks"),))] >= 0
    assert samples[("closeloop_webhook_deliveries", (("state", "pending"),))] == 1
    assert samples[("closeloop_webhook_deliveries", (("state", "delivered"),))] == 0
    assert samples[("closeloop_messages", (("status", "sent"),))] == 0
    assert samples[("closeloop_writeback_outcomes", (("state", "confirmed"),))] == 0
    breaker = "closeloop_writeback_breaker"
    assert samples[(breaker, (("state", "open"), ("target", "core_rest")))] == 1
    assert samples[(breaker, (("state", "closed"), ("target", "core_rest")))] == 0
    failures = ("closeloop_writeback_breaker_failures", (("target", "core_rest"),))
    assert samples[failures] == target.breaker_threshold
    assert samples[("closeloop_worker_clusters", ())] == 0


def test_several_processes_share_the_latency_histogram(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR, what each web process observes lands in files there,
    and a scrape answered by any process adds them all up."""
    serve = (
        "import django; django.setup(); from django.test import Client; "
        "[Client().get('/no-such-page') for _ in range({n})]"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "LOG_LEVEL": "ERROR",
    }
    for n in (3, 2):
        subprocess.run(
            [sys.executable, "-c", serve.format(n=n)], cwd=ROOT, env=env, check=True, timeout=60
        )

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    count = registry.get_sample_value(
        "closeloop_http_request_duration_seconds_count",
        {"view": "unmatched", "method": "GET", "status": "404"},
    )
    assert count == 5
