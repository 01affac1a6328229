"""Background jobs for webhooks (django-q2). Each is safe to run twice: a send first claims
its delivery, and a delivered one is never claimed again."""

from __future__ import annotations

import logging

from hooks.delivery import deliveries_send_due, delivery_send

logger = logging.getLogger(__name__)


def delivery_send_job(delivery_id: str) -> str:
    result = delivery_send(delivery_id=delivery_id)
    logger.info("webhook %s: %s", delivery_id, result)
    return result


def deliver_due() -> dict[str, int]:
    """Scheduled every minute: retries whose backoff is over, and claims whose worker died."""
    results = deliveries_send_due()
    if results:
        logger.info("webhook sweep: %s", results)
    return results
