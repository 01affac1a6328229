"""When and where a customer may be contacted: consent, the contact window in the customer's
own time zone, and the cross-workflow frequency cap. Pure rules over the database's
record of what was sent; the sequence engine (channels/services.py) applies them."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings

from cases.models import Channel, Customer
from channels.models import Message, MessageStatus

UTC = dt.UTC

# The order we fall back through when a step's channel is not permitted: the customer's
# preferred channel first (set by the source), then the most immediate.
FALLBACK_ORDER = (Channel.SMS, Channel.WHATSAPP, Channel.EMAIL)

# Messages that count against the frequency cap: every attempt to reach the customer,
# whatever became of it, except those we cancelled before sending.
COUNTED_STATUSES = [status for status in MessageStatus.values if status != "cancelled"]


def customer_zone(customer: Customer) -> ZoneInfo:
    try:
        return ZoneInfo(customer.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def channel_address(customer: Customer, channel: str) -> str:
    return {
        Channel.SMS: customer.phone,
        Channel.EMAIL: customer.email,
        Channel.WHATSAPP: customer.whatsapp or customer.phone,
    }.get(channel, "")


def channel_refusal(customer: Customer, channel: str) -> str:
    """Why this customer may not be contacted on this channel, or "" if they may."""
    if not channel_address(customer, channel):
        return "no_address"
    entry = customer.consent.get(channel)
    if not isinstance(entry, dict) or "value" not in entry:
        return "no_consent"
    if not entry.get("value"):
        # A "no" the customer gave us (STOP, unsubscribe) is an opt-out; a source system's
        # "no" is an absence of consent.
        source = str(entry.get("source", ""))
        return "opted_out" if source and not source.startswith("trigger:") else "no_consent"
    return ""


def channels_in_order(customer: Customer, first: str) -> list[str]:
    """`first` (a channel or "preferred"), then the customer's preferred, then the rest."""
    order: list[str] = []
    for channel in (first, customer.preferred_channel, *FALLBACK_ORDER):
        if channel in Channel.values and channel not in order:
            order.append(channel)
    return order


def contact_window_open_at(
    at: dt.datetime, zone: ZoneInfo, start: dt.time, end: dt.time
) -> dt.datetime:
    """The first moment at or after `at` inside the daily contact window, in UTC.

    Reg F (12 CFR 1006.6(b)(1)(i)) presumes 8am–9pm *local* time convenient; the window is
    evaluated on the customer's wall clock, so a DST change moves it in UTC. A window whose
    start is after its end (e.g. 22:00–06:00) wraps past midnight.
    """
    local = at.astimezone(zone)
    now_time = local.time().replace(tzinfo=None)
    wraps = start > end
    inside = (now_time >= start or now_time < end) if wraps else (start <= now_time < end)
    if inside:
        return at
    day = local.date()
    if not wraps and now_time >= end:
        day += dt.timedelta(days=1)  # after the window closed: tomorrow's opening
    opening = dt.datetime.combine(day, start).replace(tzinfo=zone)
    # A start time inside a spring-forward gap does not exist on that day; the round trip
    # through UTC moves it to the first real instant after the gap.
    return opening.astimezone(UTC)


def frequency_cap_frees_at(customer: Customer, now: dt.datetime) -> dt.datetime | None:
    """None while the customer may get another message; otherwise when they next may.
    The cap counts messages from every workflow: a customer with three open cases still
    gets no more than the cap."""
    cap = settings.OUTREACH_FREQUENCY_CAP
    if cap <= 0:
        return None
    window = dt.timedelta(days=settings.OUTREACH_FREQUENCY_WINDOW_DAYS)
    recent = list(
        Message.objects.filter(
            customer=customer,
            purpose="step",
            status__in=COUNTED_STATUSES,
            created_at__gt=now - window,
        )
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:cap]
    )
    if len(recent) < cap:
        return None
    # The oldest of the last `cap` messages leaves the window first.
    return recent[-1] + window
