"""Prometheus figures for /metrics (text exposition format, via prometheus_client).

Two kinds. Request latency is observed in each web process (config/observability.py); with
PROMETHEUS_MULTIPROC_DIR set, prometheus_client keeps it in files there that every process
shares, so a scrape answered by any one of several gunicorn workers sees them all. Queue
depths, sends, writebacks and breakers are read from the database at scrape time: the
database is the one place every process and host agrees on, and no counter can drift from it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from channels.models import Message, MessageStatus
from config.health import queues_due, workers_alive
from config.observability import REQUEST_LATENCY
from hooks.models import WebhookDelivery
from writeback.models import Breaker, Outcome, WritebackTarget


def _by_state(model, field: str, states) -> dict[str, int]:
    counts = dict.fromkeys(states, 0)
    for row in model.objects.values(field).annotate(n=Count("pk")).order_by():
        counts[row[field]] = row["n"]
    return counts


class DatabaseCollector(Collector):
    """Gauges read from the database on each scrape: grouped counts over indexed columns."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        queues = queues_due(now=now)
        depth = GaugeMetricFamily(
            "closeloop_queue_depth",
            "Work that is due and not yet done: messages, writebacks, webhooks, jobs.",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            "closeloop_queue_oldest_age_seconds",
            "How long the oldest due item of each queue has waited (0 when empty).",
            labels=["queue"],
        )
        for queue in queues:
            depth.add_metric([queue.name], queue.depth)
            age.add_metric([queue.name], queue.age_seconds(now))
        yield depth
        yield age

        messages = GaugeMetricFamily(
            "closeloop_messages", "Outbound messages by status.", labels=["status"]
        )
        for status, n in _by_state(Message, "status", MessageStatus.values).items():
            messages.add_metric([status], n)
        yield messages

        outcomes = GaugeMetricFamily(
            "closeloop_writeback_outcomes", "Writeback outcomes by state.", labels=["state"]
        )
        for state, n in _by_state(Outcome, "state", Outcome.State.values).items():
            outcomes.add_metric([state], n)
        yield outcomes

        webhooks = GaugeMetricFamily(
            "closeloop_webhook_deliveries", "Webhook deliveries by state.", labels=["state"]
        )
        for state, n in _by_state(WebhookDelivery, "state", WebhookDelivery.State.values).items():
            webhooks.add_metric([state], n)
        yield webhooks

        # One series per possible state, 1 for the current one (the Prometheus "state set"
        # shape), so an alert can say `closeloop_writeback_breaker{state="open"} == 1`.
        breaker = GaugeMetricFamily(
            "closeloop_writeback_breaker",
            "Circuit breaker of each writeback target: 1 for its current state.",
            labels=["target", "state"],
        )
        failures = GaugeMetricFamily(
            "closeloop_writeback_breaker_failures",
            "Consecutive failed calls counted by each target's breaker.",
            labels=["target"],
        )
        rows = {b.target_id: b for b in Breaker.objects.all()}
        for target_id, key in WritebackTarget.objects.values_list("pk", "key"):
            row = rows.get(target_id)
            current = row.state if row else Breaker.State.CLOSED
            for state in Breaker.State.values:
                breaker.add_metric([key, state], 1 if state == current else 0)
            failures.add_metric([key], row.consecutive_failures if row else 0)
        yield breaker
        yield failures

        yield GaugeMetricFamily(
            "closeloop_worker_clusters",
            "django-q2 worker clusters that reported in the last 3 seconds.",
            value=len(workers_alive()),
        )


def metrics_exposition() -> bytes:
    """One scrape's worth, in the text format. Built per scrape so the request figures come
    from the shared files when several processes serve the site."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(REQUEST_LATENCY)
    registry.register(DatabaseCollector())
    return generate_latest(registry)
