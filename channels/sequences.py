"""Sequence files: a workflow's outreach (timing, channels, variants and the words) as one
YAML document, so it can be reviewed, versioned and shipped beside the workflow file.

    workflow: promise_to_pay
    name: Arrears reminders
    contact_window: {start: "08:00", end: "21:00"}
    max_touches: 3
    response_window_hours: 72
    send_rate_per_minute: 0
    steps:
      - {channel: preferred, anchor: trigger, variants: [{template: first_reminder}]}
      - {channel: preferred, anchor: date_field, anchor_field: due_date, offset_days: -3,
         send_at: "10:00", variants: [{label: A, template: due_soon, weight: 50},
                                      {label: B, template: due_soon_short, weight: 50}]}
    templates:
      - {name: first_reminder, channel: sms, locale: en, body: "… {{ link }}"}
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from cases.models import Channel
from channels.models import MessageTemplate, Sequence, SequenceChannel, SequenceStep, StepVariant
from channels.rendering import template_check
from policies.services import WORKFLOWS_DIR

SEQUENCES_DIR = WORKFLOWS_DIR / "outreach"
TOP_KEYS = {
    "workflow",
    "name",
    "active",
    "contact_window",
    "max_touches",
    "response_window_hours",
    "send_rate_per_minute",
    "steps",
    "templates",
}
STEP_KEYS = {
    "channel",
    "fallback",
    "anchor",
    "anchor_field",
    "offset_days",
    "offset_hours",
    "send_at",
    "variants",
}
VARIANT_KEYS = {"label", "template", "weight"}
TEMPLATE_KEYS = {
    "name",
    "channel",
    "locale",
    "subject",
    "body",
    "whatsapp_template_name",
    "whatsapp_language",
    "whatsapp_parameters",
}


def _time(value: Any, where: str, problems: list[str]) -> dt.time | None:
    if isinstance(value, dt.time):
        return value
    if isinstance(value, int):  # YAML reads 08:00 unquoted as sexagesimal minutes
        return dt.time(value // 60 % 24, value % 60)
    try:
        return dt.time.fromisoformat(str(value))
    except ValueError:
        problems.append(f"{where}: must be a time like 08:00.")
        return None


def _int(value: Any, where: str, problems: list[str], low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(f"{where}: must be a whole number from {low} to {high}.")
        return low
    return value


def _unknown(given: dict, allowed: set[str], where: str, problems: list[str]) -> None:
    extra = sorted(set(given) - allowed)
    if extra:
        problems.append(
            f"{where}: unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}."
        )


def _date_fields(workflow_key: str) -> set[str] | None:
    """The date fields of the workflow's active (or newest) contract, or None if unknown."""
    from policies.models import Workflow

    workflow = Workflow.objects.filter(key=workflow_key).order_by("-status", "-version").first()
    if workflow is None:
        return None
    return {
        field.get("name")
        for field in workflow.contract or []
        if field.get("type") in ("date", "datetime")
    }


def sequence_parse(
    spec: Any,
) -> tuple[
    Sequence, list[tuple[SequenceStep, list[StepVariant]]], list[MessageTemplate], list[str]
]:
    """Build unsaved objects from a sequence file and list every problem found."""
    problems: list[str] = []
    if not isinstance(spec, dict):
        raise ValidationError(["The sequence file must be a mapping."])
    _unknown(spec, TOP_KEYS, "sequence", problems)
    key = spec.get("workflow")
    if not isinstance(key, str) or not key:
        raise ValidationError(["sequence.workflow: every sequence names its workflow key."])
    window = spec.get("contact_window") or {}
    if not isinstance(window, dict):
        problems.append("contact_window: must be {start: HH:MM, end: HH:MM}.")
        window = {}
    sequence = Sequence(
        workflow_key=key,
        name=str(spec.get("name") or key),
        active=bool(spec.get("active", True)),
        contact_window_start=_time(window.get("start", "08:00"), "contact_window.start", problems)
        or dt.time(8),
        contact_window_end=_time(window.get("end", "21:00"), "contact_window.end", problems)
        or dt.time(21),
        max_touches=_int(spec.get("max_touches", 3), "max_touches", problems, 1, 10),
        response_window_hours=_int(
            spec.get("response_window_hours", 72), "response_window_hours", problems, 0, 24 * 60
        ),
        send_rate_per_minute=_int(
            spec.get("send_rate_per_minute", 0), "send_rate_per_minute", problems, 0, 1_000_000
        ),
    )
    templates: list[MessageTemplate] = []
    seen: set[tuple] = set()
    for index, raw in enumerate(spec.get("templates") or []):
        where = f"templates[{index}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a mapping.")
            continue
        _unknown(raw, TEMPLATE_KEYS, where, problems)
        channel = raw.get("channel")
        if channel not in Channel.values:
            problems.append(f"{where}.channel: one of {', '.join(Channel.values)}.")
            continue
        template = MessageTemplate(
            workflow_key=key,
            name=str(raw.get("name", "")),
            channel=channel,
            locale=str(raw.get("locale", "en")),
            subject=str(raw.get("subject", "")),
            body=str(raw.get("body", "")),
            whatsapp_template_name=str(raw.get("whatsapp_template_name", "")),
            whatsapp_language=str(raw.get("whatsapp_language", "en")),
            whatsapp_parameters=list(raw.get("whatsapp_parameters") or []),
        )
        ident = (template.name, template.channel, template.locale)
        if ident in seen:
            problems.append(f"{where}: {template.name} ({channel}, {template.locale}) twice.")
        seen.add(ident)
        problems.extend(f"{where}: {p}" for p in template_problems(template))
        templates.append(template)
    names_by_channel: dict[str, set[str]] = {}
    for template in templates:
        names_by_channel.setdefault(template.channel, set()).add(template.name)
    date_fields = _date_fields(key)
    steps: list[tuple[SequenceStep, list[StepVariant]]] = []
    raw_steps = spec.get("steps") or []
    if not raw_steps:
        problems.append("steps: a sequence needs at least one step.")
    for index, raw in enumerate(raw_steps):
        where = f"steps[{index}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a mapping.")
            continue
        _unknown(raw, STEP_KEYS, where, problems)
        step = SequenceStep(
            position=index + 1,
            channel=raw.get("channel", SequenceChannel.PREFERRED),
            fallback=bool(raw.get("fallback", True)),
            anchor=raw.get("anchor", SequenceStep.Anchor.TRIGGER),
            anchor_field=str(raw.get("anchor_field", "")),
            offset_days=_int(
                raw.get("offset_days", 0), f"{where}.offset_days", problems, -365, 365
            ),
            offset_hours=_int(
                raw.get("offset_hours", 0), f"{where}.offset_hours", problems, -24 * 365, 24 * 365
            ),
            send_at=_time(raw["send_at"], f"{where}.send_at", problems)
            if raw.get("send_at")
            else None,
        )
        variants = [
            StepVariant(
                label=str(v.get("label", "A")),
                template_name=str(v.get("template", "")),
                weight=v.get("weight", 100),
            )
            for v in raw.get("variants") or []
            if isinstance(v, dict)
        ]
        for v_index, variant in enumerate(raw.get("variants") or []):
            if isinstance(variant, dict):
                _unknown(variant, VARIANT_KEYS, f"{where}.variants[{v_index}]", problems)
        problems.extend(
            f"{where}: {p}" for p in step_problems(step, variants, names_by_channel, date_fields)
        )
        steps.append((step, variants))
    return sequence, steps, templates, problems


def template_problems(template: MessageTemplate) -> list[str]:
    problems = []
    if not template.name:
        problems.append("name: required.")
    problems.extend(template_check(body=template.body, channel=template.channel))
    if template.channel == Channel.EMAIL and not template.subject:
        problems.append("subject: an email needs a subject.")
    if template.channel == Channel.WHATSAPP and not isinstance(template.whatsapp_parameters, list):
        problems.append("whatsapp_parameters: must be a list of texts.")
    return problems


def step_problems(
    step: SequenceStep,
    variants: list[StepVariant],
    names_by_channel: dict[str, set[str]],
    date_fields: set[str] | None,
) -> list[str]:
    problems = []
    if step.channel not in SequenceChannel.values:
        problems.append(f"channel: one of {', '.join(SequenceChannel.values)}.")
    if step.anchor not in SequenceStep.Anchor.values:
        problems.append(f"anchor: one of {', '.join(SequenceStep.Anchor.values)}.")
    if step.anchor == SequenceStep.Anchor.DATE_FIELD:
        if not step.anchor_field:
            problems.append("anchor_field: a date anchor names a data field, e.g. due_date.")
        elif date_fields is not None and step.anchor_field not in date_fields:
            problems.append(
                f"anchor_field: {step.anchor_field!r} is not a date field of the workflow's "
                f"contract ({', '.join(sorted(date_fields)) or 'it has none'})."
            )
    elif step.anchor_field:
        problems.append("anchor_field: only a date anchor takes a field.")
    if step.anchor != SequenceStep.Anchor.DATE_FIELD and (
        step.offset_days < 0 or step.offset_hours < 0
    ):
        problems.append("offset: only a date anchor may be negative (a time before the date).")
    if not variants:
        problems.append("variants: each step names at least one template.")
        return problems
    total = sum(v.weight for v in variants)
    if total != 100:
        problems.append(f"variants: weights must add up to 100 (they add up to {total}).")
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        problems.append("variants: labels must differ.")
    channels = (
        [step.channel] if step.channel in Channel.values else list(names_by_channel) or ["sms"]
    )
    for variant in variants:
        missing = [
            c for c in channels if variant.template_name not in names_by_channel.get(c, set())
        ]
        if step.channel in Channel.values and missing:
            problems.append(
                f"variants: no {step.channel} template named {variant.template_name!r}."
            )
        elif step.channel == SequenceChannel.PREFERRED and not any(
            variant.template_name in names for names in names_by_channel.values()
        ):
            problems.append(f"variants: no template named {variant.template_name!r}.")
    return problems


def sequence_import(*, spec: Any) -> Sequence:
    """Create or replace a workflow's sequence and templates from a file. All or nothing:
    raises ValidationError listing every problem."""
    sequence, steps, templates, problems = sequence_parse(spec)
    if problems:
        raise ValidationError(problems)
    with transaction.atomic():
        existing = (
            Sequence.objects.select_for_update().filter(workflow_key=sequence.workflow_key).first()
        )
        if existing is not None:
            sequence.pk = existing.pk
            sequence.next_send_slot = existing.next_send_slot
            existing.steps.all().delete()
        sequence.save()
        for step, variants in steps:
            step.sequence = sequence
            step.save()
            for variant in variants:
                variant.step = step
                variant.save()
        MessageTemplate.objects.filter(workflow_key=sequence.workflow_key).delete()
        MessageTemplate.objects.bulk_create(templates)
    return sequence


def sequence_export(*, workflow_key: str) -> dict[str, Any]:
    sequence = Sequence.objects.get(workflow_key=workflow_key)
    steps = []
    for step in sequence.steps.prefetch_related("variants"):
        item: dict[str, Any] = {"channel": step.channel, "anchor": step.anchor}
        if not step.fallback:
            item["fallback"] = False
        if step.anchor_field:
            item["anchor_field"] = step.anchor_field
        if step.offset_days:
            item["offset_days"] = step.offset_days
        if step.offset_hours:
            item["offset_hours"] = step.offset_hours
        if step.send_at:
            item["send_at"] = step.send_at.strftime("%H:%M")
        item["variants"] = [
            {"label": v.label, "template": v.template_name, "weight": v.weight}
            for v in step.variants.all()
        ]
        steps.append(item)
    templates = []
    for template in MessageTemplate.objects.filter(workflow_key=workflow_key):
        item = {
            "name": template.name,
            "channel": template.channel,
            "locale": template.locale,
            "body": template.body,
        }
        if template.subject:
            item["subject"] = template.subject
        if template.whatsapp_template_name:
            item["whatsapp_template_name"] = template.whatsapp_template_name
            item["whatsapp_language"] = template.whatsapp_language
            item["whatsapp_parameters"] = template.whatsapp_parameters
        templates.append(item)
    return {
        "workflow": sequence.workflow_key,
        "name": sequence.name,
        "active": sequence.active,
        "contact_window": {
            "start": sequence.contact_window_start.strftime("%H:%M"),
            "end": sequence.contact_window_end.strftime("%H:%M"),
        },
        "max_touches": sequence.max_touches,
        "response_window_hours": sequence.response_window_hours,
        "send_rate_per_minute": sequence.send_rate_per_minute,
        "steps": steps,
        "templates": templates,
    }


def sequence_spec_read(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def sequences_install_shipped(*, replace: bool = False) -> list[Sequence]:
    """Install the shipped sequence files; a sequence operations already have (and may have
    edited) is kept unless `replace`."""
    installed = []
    for path in sorted(SEQUENCES_DIR.glob("*.yaml")):
        spec = sequence_spec_read(path)
        current = Sequence.objects.filter(workflow_key=spec.get("workflow")).first()
        installed.append(current if current and not replace else sequence_import(spec=spec))
    return installed
