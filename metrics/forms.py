"""Query parameters of the metrics dashboard and API, checked in one place: a bad date, a
period that ends before it starts or an unknown workflow is a field error, never a 500."""

from __future__ import annotations

import datetime as dt
import uuid

from django import forms
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from metrics.selectors import BREAKDOWNS, Scope
from policies.models import Workflow

DEFAULT_DAYS = 30
EXPORT_FORMATS = {"csv", "ndjson"}


def _moment(value: str, field: str, *, end: bool) -> dt.datetime:
    """A date (a whole UTC day: its start, or the next day's start for an end) or an ISO
    8601 date-time (UTC unless it names an offset)."""
    value = value.strip()
    try:
        day = parse_date(value)
        moment = None if day else parse_datetime(value)
    except ValueError:
        day = moment = None
    if day is not None:
        start = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
        return start + dt.timedelta(days=1) if end else start
    if moment is None:
        raise forms.ValidationError(
            f"{field} must be a date (2026-03-01) or an ISO 8601 date-time (2026-03-01T09:00:00Z).",
            code="invalid",
        )
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=dt.UTC)


class PeriodForm(forms.Form):
    """since/until: cases triggered from `since` up to (not including) `until`; a date as
    `until` includes that whole day. Default: the last 30 days."""

    workflow = forms.CharField(required=False, max_length=64)
    since = forms.CharField(required=False, max_length=40)
    until = forms.CharField(required=False, max_length=40)
    by = forms.CharField(required=False, max_length=16)

    def clean_workflow(self) -> str:
        key = self.cleaned_data["workflow"].strip()
        if key and not Workflow.objects.filter(key=key).exists():
            raise forms.ValidationError(f"No workflow has the key {key!r}.", code="unknown")
        return key

    def clean_since(self) -> dt.datetime | None:
        raw = self.cleaned_data["since"]
        return _moment(raw, "since", end=False) if raw.strip() else None

    def clean_until(self) -> dt.datetime | None:
        raw = self.cleaned_data["until"]
        return _moment(raw, "until", end=True) if raw.strip() else None

    def clean_by(self) -> str:
        by = self.cleaned_data["by"].strip()
        if by and by not in BREAKDOWNS:
            raise forms.ValidationError(
                f"by must be one of {', '.join(BREAKDOWNS)}.", code="invalid_choice"
            )
        return by

    def clean(self) -> dict:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if "since" in data and "until" in data:
            until = until or timezone.now()
            since = since or until - dt.timedelta(days=DEFAULT_DAYS)
            if since >= until:
                self.add_error("since", "since must be before until.")
            data["since"], data["until"] = since, until
        return data

    def scope(self, *, api_client_id: int | None = None) -> Scope:
        data = self.cleaned_data
        return Scope(
            workflow_key=data["workflow"] or None,
            since=data["since"],
            until=data["until"],
            api_client_id=api_client_id,
        )


class ExportForm(forms.Form):
    """since: rows from this moment on (events by created_at, cases by triggered_at);
    after: the last id of the previous page, to resume a stream where it stopped."""

    since = forms.CharField(required=False, max_length=40)
    after = forms.CharField(required=False, max_length=40)
    format = forms.CharField(required=False, max_length=8)

    def __init__(self, *args, default_format: str, after_kind: type, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.default_format = default_format
        self.after_kind = after_kind

    def clean_since(self) -> dt.datetime | None:
        raw = self.cleaned_data["since"]
        return _moment(raw, "since", end=False) if raw.strip() else None

    def clean_after(self) -> int | uuid.UUID | None:
        raw = self.cleaned_data["after"].strip()
        if not raw:
            return None
        try:
            value = self.after_kind(raw)
        except ValueError:
            value = None
        if value is None or (isinstance(value, int) and value < 0):
            kind = "an event id (a whole number)" if self.after_kind is int else "a case id"
            raise forms.ValidationError(f"after must be {kind}.", code="invalid") from None
        return value

    def clean_format(self) -> str:
        chosen = self.cleaned_data["format"].strip() or self.default_format
        if chosen not in EXPORT_FORMATS:
            raise forms.ValidationError("format must be csv or ndjson.", code="invalid_choice")
        return chosen
