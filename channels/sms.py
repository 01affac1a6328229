"""How long an SMS is, as the carrier bills it.

A text that fits the GSM 03.38 alphabet travels as 7-bit units: 160 in one message, 153 per
part once split (the other 7 carry the concatenation header). One character outside that
alphabet turns the whole message into UCS-2: 70 UTF-16 code units, 67 per part. Operations
watch segments because each one is billed and long messages arrive out of order on old
handsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The opt-out instruction CTIA and most national codes ask every marketing-style SMS to carry.
OPT_OUT_LINE = "Reply STOP to opt out"

# GSM 03.38 default alphabet, one 7-bit unit each (ESC, 0x1B, is left out: it only
# introduces the extension table and is never text).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: sent as ESC + character, so each costs two units.
GSM_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class SmsSize:
    encoding: Literal["GSM-7", "UCS-2"]
    units: int  # 7-bit units for GSM-7, UTF-16 code units for UCS-2
    segments: int


def _segments(costs: list[int], single: int, part: int) -> int:
    """Parts needed when no character may be split across two parts: an ESC pair (GSM-7)
    or a surrogate pair (UCS-2) that would straddle the boundary moves to the next part."""
    total = sum(costs)
    if total <= single:
        return 1 if total else 0
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part:
            parts += 1
            used = 0
        used += cost
    return parts


def sms_size(text: str) -> SmsSize:
    if all(ch in GSM_BASIC or ch in GSM_EXTENSION for ch in text):
        costs = [2 if ch in GSM_EXTENSION else 1 for ch in text]
        return SmsSize("GSM-7", sum(costs), _segments(costs, GSM_SINGLE, GSM_PART))
    # Characters beyond the Basic Multilingual Plane (most emoji) take a surrogate pair.
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SmsSize("UCS-2", sum(costs), _segments(costs, UCS2_SINGLE, UCS2_PART))
