"""What /healthz and /metrics read: the database, the job broker, the workers' heartbeat and
the queues of work that is due but not done. Every query is a count or a MIN over an index
(or over django-q2's queue table, which holds only unfinished jobs), so a load balancer may
ask every few seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count, Min
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import OrmQ
from django_q.status import Stat

from channels.models import Message, MessageStatus
from hooks.models import WebhookDelivery
from writeback.models import Outcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Queue:
    name: str
    depth: int
    oldest_due_at: datetime | None

    def age_seconds(self, now: datetime) -> float:
        return max(0.0, (now - self.oldest_due_at).total_seconds()) if self.oldest_due_at else 0.0


def queues_due(*, now: datetime | None = None) -> list[Queue]:
    """Work whose time has come and that no worker has finished: messages to send, outcomes
    to write back, webhooks to deliver, and jobs waiting in django-q2's queue."""
    now = now or timezone.now()
    sources = {
        # The partial index on queued messages (channels/models.py) answers this.
        "messages": Message.objects.filter(
            status=MessageStatus.QUEUED, not_before__lte=now
        ).aggregate(depth=Count("pk"), oldest=Min("not_before")),
        "writeback": Outcome.objects.filter(
            state=Outcome.State.PENDING, next_attempt_at__lte=now
        ).aggregate(depth=Count("pk"), oldest=Min("next_attempt_at")),
        "webhooks": WebhookDelivery.objects.filter(
            state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now
        ).aggregate(depth=Count("pk"), oldest=Min("next_attempt_at")),
        # The ORM broker sets `lock` to the enqueue time, and pushes it into the future while
        # a worker holds the job; a lock in the past is a job no worker has taken.
        "jobs": OrmQ.objects.filter(lock__lte=now).aggregate(depth=Count("pk"), oldest=Min("lock")),
    }
    return [Queue(name, row["depth"], row["oldest"]) for name, row in sources.items()]


def workers_alive() -> list[Any]:
    """The django-q2 clusters that reported in the last few seconds: each saves its status
    to the shared cache about every second with a 3-second expiry, so an entry exists only
    while its cluster runs."""
    return Stat.get_all()


# --- the checks behind /healthz -------------------------------------------------------------


class CheckFailed(Exception):
    def __init__(self, detail: str, figures: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.figures = figures or {}


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {}


def check_broker() -> dict[str, Any]:
    details: dict[str, Any] = {"kind": settings.Q_BROKER}
    if settings.REDIS_URL:
        # The shared cache (and a Redis broker) lives there; a worker that cannot reach it
        # cannot take jobs either.
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        details["redis"] = "ok"
    if settings.Q_BROKER == "redis":
        # The list django-q2's clusters pop jobs from (its client has no timeout, hence the
        # ping above first).
        details["jobs"] = get_broker().queue_size()
    else:
        details["jobs"] = OrmQ.objects.count()
    return details


def check_workers() -> dict[str, Any]:
    clusters = workers_alive()
    if not clusters:
        raise CheckFailed("no worker cluster has reported in the last 3 seconds")
    workers = sum(len(c.workers) for c in clusters)
    if not workers:
        # A cluster reports in once before it has started its workers, and a cluster whose
        # workers all died still reports: neither runs a job.
        raise CheckFailed(f"{len(clusters)} worker cluster(s) report no running workers")
    return {"clusters": len(clusters), "workers": workers}


def check_queues() -> dict[str, Any]:
    now = timezone.now()
    limit = settings.HEALTHZ_MAX_JOB_AGE_SECONDS
    queues = queues_due(now=now)
    oldest = max(queues, key=lambda queue: queue.age_seconds(now))
    details = {
        "oldest_seconds": round(oldest.age_seconds(now)),
        "oldest_queue": oldest.name if oldest.oldest_due_at else None,
        "limit_seconds": limit,
        "depth": {queue.name: queue.depth for queue in queues},
    }
    if oldest.age_seconds(now) > limit:
        raise CheckFailed(
            f"the oldest due {oldest.name} job has waited {round(oldest.age_seconds(now))} s, "
            f"more than {limit} s",
            figures=details,
        )
    return details


CHECKS = {
    "database": check_database,
    "broker": check_broker,
    "worker": check_workers,
    "oldest_unsent_job": check_queues,
}


def health_report(*, names: list[str] | None = None) -> tuple[bool, dict[str, Any]]:
    """Run the named checks (all by default); each is "ok" with its figures, or "error"
    with why."""
    report: dict[str, Any] = {}
    for name in names or list(CHECKS):
        try:
            report[name] = {"status": "ok", **CHECKS[name]()}
        except CheckFailed as exc:
            report[name] = {"status": "error", "detail": exc.detail, **exc.figures}
        except Exception as exc:
            # /healthz answers anyone: the exception's text (a host name, a port) goes to the
            # log, only its kind to the caller.
            logger.warning("health check %s failed", name, exc_info=True)
            report[name] = {"status": "error", "detail": type(exc).__name__}
    healthy = all(item["status"] == "ok" for item in report.values())
    return healthy, report
