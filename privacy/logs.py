"""Structured, redacted logs (docs/privacy.md).

`JsonFormatter` writes one JSON object per line — time, level, logger, message, request_id
and any `extra` fields — for log shippers to index without parsing prose. `RedactFilter`
masks personal data and secrets before any handler formats the record: phone numbers,
email addresses, mini-app link tokens, API keys and bearer tokens, one-time codes in the
messages we send, and card-like digit runs, in the message, its arguments, `extra` fields
and tracebacks alike. Both are configured in LOGGING (config/settings.py); LOG_FORMAT picks
the formatter.

Redaction is a net under the code, not the plan: code should not log personal values in
the first place (channels and writeback log ids and counts), and these patterns catch what
slips through — a provider's error text quoting a number, a URL with a token in it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "request",
}

# Order matters: secrets and tokens first (they may contain digit runs), cards before phones
# (a card number would otherwise be taken for a phone number), codes before bare digits.
PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Our API keys (clk_…), then any bearer credential or Authorization header value.
    (re.compile(r"\bclk_[A-Za-z0-9_\-]+"), "clk_[redacted]"),
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{8,}"), r"\1\2[redacted]"),
    (
        re.compile(r"(?i)\b(token|api_key|apikey|secret|password)(\s*[=:]\s*)[^\s,;&'\"]{4,}"),
        r"\1\2[redacted]",
    ),
    # The same as a quoted key and value: a dict's repr ({'token': '…'}) or JSON.
    (
        re.compile(
            r"(?i)(['\"](?:[a-z_]*token|api_key|secret|password|code)['\"]\s*:\s*['\"])[^'\"]{4,}(['\"])"
        ),
        r"\1[redacted]\2",
    ),
    # Mini-app links: /m/<token>/… (the token is the whole credential).
    (re.compile(r"/m/[A-Za-z0-9_\-]{16,}"), "/m/[token]"),
    # Email addresses.
    (
        re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+"),
        "[email]",
    ),
    # One-time codes in the formats our code messages use ("code is 123456", "#123456").
    (re.compile(r"(?i)\b(code(?:\s+is)?[:\s]+)\d{4,8}\b"), r"\1[code]"),
    (re.compile(r"(?<![\w&])#\d{4,8}\b"), "#[code]"),
    # Card-like runs: 13 to 19 digits, spaces or dashes between groups allowed.
    (re.compile(r"(?<![\w.\-])\d(?:[ \-]?\d){12,18}(?![\w.\-])"), "[card]"),
    # Phone numbers: E.164 (+44 7911 123456, +447911123456), national numbers with a trunk
    # 0 (07911 123456, 020 7946 0958) and North American ones ((555) 123-4567, 555-123-4567).
    (re.compile(r"(?<![\w+])\+[1-9](?:[ \-().]?\d){6,14}(?![\w])"), "[phone]"),
    (re.compile(r"(?<![\w.\-])\(?0\d{2,4}\)?[ \-]?\d{3,4}[ \-]?\d{3,4}(?![\w.\-])"), "[phone]"),
    (re.compile(r"(?<![\w.\-])\(?\d{3}\)?[ \-.]\d{3}[ \-.]\d{4}(?![\w.\-])"), "[phone]"),
)


def redact(text: str) -> str:
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redacted(value: Any) -> Any:
    """A value from `extra` with its strings redacted, at any depth; numbers pass (a phone
    number given as an int is still caught once it is text)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [redacted(item) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        text = str(value)
        return value if redact(text) == text else redact(text)
    return redact(str(value))


class RedactFilter(logging.Filter):
    """Masks personal data in the record itself, so every handler after it (and every
    formatter) sees the redacted text. Put it on the handlers, where records from every
    logger (Django's, django-q's, libraries') pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True  # a second handler with this filter: already done
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg} {record.args!r}"  # a malformed call still gets logged
        record.msg, record.args = redact(message), None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, redacted(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._redacted = True
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id
    when there is one, `extra` fields, and the traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id and request_id != "-":
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
