"""Request budgets for the mini-app: fixed windows counted in the shared cache.

Every /m/ request spends from its client IP's and its link's page budget; answers to the
identity questions (code sends, codes, known facts) also spend from a smaller budget; a
client that keeps opening links that do not exist is stopped for a while. The identity
module already locks a case after five wrong answers: these limits are about floods and
enumeration across many cases, which no single case sees.

Counters live in Django's default cache, which settings make shared across processes (a
database table, or Redis). Keys hold SHA-256 digests, never a raw token or address: the
cache table is not a place for credentials or personal data.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache


@dataclass(frozen=True)
class Rule:
    name: str
    limit: int
    window_seconds: int


def rate_rules() -> dict[str, Rule]:
    """The budgets, read from settings on each call so a test or deployment can change them."""
    return {
        "pages_ip": Rule("pages_ip", settings.MINIAPP_RATE_PAGES_PER_IP, 60),
        "pages_link": Rule("pages_link", settings.MINIAPP_RATE_PAGES_PER_LINK, 60),
        "codes_ip": Rule("codes_ip", settings.MINIAPP_RATE_CODES_PER_IP, 15 * 60),
        "codes_link": Rule("codes_link", settings.MINIAPP_RATE_CODES_PER_LINK, 15 * 60),
        "unknown_ip": Rule("unknown_ip", settings.MINIAPP_RATE_UNKNOWN_LINKS_PER_IP, 60 * 60),
    }


RATE_UNITS = {"second": 1, "minute": 60, "hour": 60 * 60, "day": 24 * 60 * 60}


def rate_parse(text: str) -> tuple[int, int] | None:
    """A budget written as "600/minute" (per second, minute, hour or day) as (limit, window
    seconds); "off" or empty as None. Raises ValueError with a message fit for a form."""
    text = text.strip()
    if text in ("", "off"):
        return None
    count, _, unit = text.partition("/")
    if not count.isdigit() or unit not in RATE_UNITS:
        raise ValueError(
            f"Write a rate as a number per second, minute, hour or day (e.g. 600/minute) "
            f"or off, not {text!r}."
        )
    return int(count), RATE_UNITS[unit]


def _key(rule: Rule, subject: str, now: float) -> tuple[str, int]:
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    window = int(now // rule.window_seconds)
    retry_after = int(rule.window_seconds - now % rule.window_seconds) + 1
    return f"rl:{rule.name}:{digest}:{window}", retry_after


def rate_spend(*, rule: Rule, subject: str, now: float | None = None) -> int | None:
    """Count one request against `subject`'s budget. Returns the seconds to wait when the
    budget is spent, else None.

    On the database cache `incr` is a read then a write, so two processes racing can count
    one request between them: a flood gets a handful of extra requests, never a bypass.
    Redis counts atomically."""
    now = time.time() if now is None else now
    key, retry_after = _key(rule, subject, now)
    # add() leaves an existing counter alone; the timeout outlives the window it counts.
    cache.add(key, 0, timeout=rule.window_seconds + 5)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.set(key, 1, timeout=rule.window_seconds + 5)
        count = 1
    return retry_after if count > rule.limit else None


def rate_spent(*, rule: Rule, subject: str, now: float | None = None) -> int | None:
    """Like rate_spend without counting: for budgets charged only after the answer is known
    (a link that turned out not to exist)."""
    now = time.time() if now is None else now
    key, retry_after = _key(rule, subject, now)
    return retry_after if (cache.get(key) or 0) >= rule.limit else None
