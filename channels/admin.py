"""The outreach admin: operations staff edit sequences and message templates (with a live
preview of what a customer would read), read what was sent and received, and in the demo
open a customer's phone and reply from it.

Writes go through the services in channels/sequences.py and channels/inbound.py; this module
decides who may press which button and shows the results as pages staff can read."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator
from django.db import transaction
from django.db.models import Count, F, Max, Q
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template import TemplateSyntaxError
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from cases.models import Case, Channel, Customer
from channels.contact_rules import FALLBACK_ORDER, channel_address, customer_zone
from channels.inbound import inbound_receive, message_queue_reply
from channels.jobs import dispatch_enqueue
from channels.models import (
    CaseOutreach,
    InboundMessage,
    Message,
    MessageTemplate,
    OutboxEntry,
    Sequence,
    SequenceChannel,
    SequenceStep,
    StepVariant,
)
from channels.rendering import TemplateProblem, _compiled, message_render
from channels.sequences import (
    _date_fields,
    sequence_export,
    sequence_import,
    step_problems,
    template_problems,
)
from channels.services import outreach_ledger
from channels.sms import GSM_BASIC, GSM_EXTENSION, sms_size
from policies.admin import sample_trigger
from policies.models import Workflow
from staff.services import audit_record

UTC = dt.UTC
MAX_STEP_POSITION = 100
# Moved and deleted steps are parked this far up before the rows are saved one by one, so
# two steps can swap positions under the (sequence, position) unique constraint.
PARKED_POSITION_OFFSET = 1000
MAX_IMPORT_BYTES = 1_000_000
LEDGER_LIMIT = 200
PHONE_LIMIT = 200


# --- what the pages show ---------------------------------------------------------------------


def template_names_by_channel(workflow_key: str) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    rows = MessageTemplate.objects.filter(workflow_key=workflow_key).values_list("name", "channel")
    for name, channel in rows:
        names.setdefault(channel, set()).add(name)
    return names


def sequence_template_gaps(
    sequence: Sequence, names_by_channel: dict[str, set[str]] | None = None
) -> list[str]:
    """Templates a step may need and the workflow lacks. A step on the preferred channel,
    or one that may fall back, can land on any channel; without a template there the step
    is skipped for that customer (no_template), so staff should see it before it happens."""
    if names_by_channel is None:
        names_by_channel = template_names_by_channel(sequence.workflow_key)
    gaps = []
    for step in sequence.steps.all():
        pinned = step.channel != SequenceChannel.PREFERRED and not step.fallback
        channels = [step.channel] if pinned else list(FALLBACK_ORDER)
        for variant in step.variants.all():
            missing = [
                channel
                for channel in channels
                if variant.template_name not in names_by_channel.get(channel, set())
            ]
            if missing:
                gaps.append(
                    f"Step {step.position}: no {', '.join(missing)} template named "
                    f"{variant.template_name!r}"
                )
    return gaps


# A token as long as a real one (secrets.token_urlsafe(32) is 43 characters), so a preview
# counts the same SMS segments as the message a customer gets.
PREVIEW_TOKEN = ("preview-" * 6)[:43]


def preview_link() -> str:
    return f"{settings.PUBLIC_BASE_URL}/m/{PREVIEW_TOKEN}/"


def preview_case(workflow_key: str) -> tuple[Case, str]:
    """A case to render templates against: the workflow's most recent case, so staff see
    real data; else an unsaved one built from the workflow's contract."""
    case = (
        Case.objects.filter(workflow__key=workflow_key)
        .select_related("workflow", "customer")
        .order_by("-triggered_at")
        .first()
    )
    if case is not None:
        return case, f"the most recent {workflow_key} case ({case.pk})"
    workflow = Workflow.objects.filter(key=workflow_key).order_by("-version").first()
    if workflow is None:
        workflow, data = Workflow(key=workflow_key, name=workflow_key), {}
        described = "a sample customer (no workflow has this key, so data.* is empty)"
    else:
        # Through JSON, as a trigger's data is stored: dates as ISO text, not date objects.
        data = json.loads(json.dumps(sample_trigger(workflow)["data"], cls=DjangoJSONEncoder))
        described = f"a sample built from the {workflow_key} contract (no cases yet)"
    customer = Customer(name="Sample Customer", timezone="Europe/London", locale="en-GB")
    case = Case(
        workflow=workflow,
        customer=customer,
        data=data,
        expires_at=timezone.now() + dt.timedelta(days=7),
    )
    return case, described


@dataclass
class TemplatePreview:
    sample: str
    channel: str
    subject: str = ""
    body: str = ""
    parameters: tuple[str, ...] = ()
    characters: int = 0
    encoding: str = ""
    units: int = 0
    segments: int = 0
    max_segments: int = 0
    ucs2_characters: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def over_limit(self) -> bool:
        return self.segments > self.max_segments


def template_preview(
    template: MessageTemplate, *, samples: dict[str, tuple[Case, str]] | None = None
) -> TemplatePreview:
    """The text a customer would read, rendered as the dispatcher renders it, and its size."""
    samples = {} if samples is None else samples
    if template.workflow_key not in samples:
        samples[template.workflow_key] = preview_case(template.workflow_key)
    case, described = samples[template.workflow_key]
    preview = TemplatePreview(
        sample=described, channel=template.channel, max_segments=settings.SMS_MAX_SEGMENTS
    )
    unsubscribe = f"{settings.PUBLIC_BASE_URL}{reverse('channels:unsubscribe', args=['sample'])}"
    try:
        rendered = message_render(
            template=template,
            case=case,
            link=preview_link(),
            unsubscribe_url=unsubscribe if template.channel == Channel.EMAIL else "",
        )
    except TemplateProblem as exc:
        preview.problems.append(str(exc))
        return preview
    preview.subject, preview.body = rendered.subject, rendered.body
    preview.parameters = rendered.whatsapp_parameters
    preview.characters = len(rendered.body)
    if template.channel == Channel.SMS:
        size = sms_size(rendered.body)
        preview.encoding, preview.units, preview.segments = size.encoding, size.units, size.segments
        preview.ucs2_characters = sorted(
            {ch for ch in rendered.body if ch not in GSM_BASIC and ch not in GSM_EXTENSION}
        )
    return preview


def _ledger_value(key: str, value: Any, zone) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, str) and (key.endswith("_until") or key.endswith("_at")):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
        if moment.tzinfo is not None:
            return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
    return str(value)


# The outcome first (why it was skipped, what the provider said), then the circumstances.
LEDGER_FIRST = ("reason", "status", "error", "kind", "source")
# The message key repeats what the row shows, and a reply's text stays on the timeline.
LEDGER_HIDDEN = {"message", "channel", "step", "purpose", "text"}


def ledger_rows(*, customer: Customer, limit: int = LEDGER_LIMIT) -> list[dict[str, Any]]:
    zone = customer_zone(customer)
    rows = []
    for event in outreach_ledger(customer_id=customer.pk)[:limit]:
        data = event.data if isinstance(event.data, dict) else {}
        keys = [k for k in LEDGER_FIRST if k in data]
        keys += [k for k in data if k not in keys and k not in LEDGER_HIDDEN]
        rows.append(
            {
                "event": event,
                "local": event.created_at.astimezone(zone),
                "utc": event.created_at.astimezone(UTC),
                "channel": data.get("channel") or data.get("using") or "",
                "step": data.get("step", ""),
                "details": [
                    (k.replace("_", " "), _ledger_value(k, data[k], zone))
                    for k in keys
                    if data[k] not in (None, "")
                ],
            }
        )
    return rows


def contact_ledger_html(*, customer: Customer, case: Case | None = None) -> str:
    """The "why did (or didn't) this customer get a message?" table, for the case and
    customer pages."""
    rows = ledger_rows(customer=customer)
    return render_to_string(
        "admin/channels/contact_ledger.html",
        {
            "rows": rows,
            "zone": customer_zone(customer).key,
            "current_case_id": case.pk if case is not None else None,
            "truncated": len(rows) == LEDGER_LIMIT,
            "limit": LEDGER_LIMIT,
        },
    )


def demo_phone_link(customer: Customer) -> str:
    return format_html(
        '<a href="{}">Open this customer’s demo phone</a>',
        reverse("admin-channels-phone-customer", args=[customer.pk]),
    )


def _admin_link(viewname: str, pk: Any, text: Any) -> str:
    if pk is None:
        return "—"
    return format_html('<a href="{}">{}</a>', reverse(viewname, args=[pk]), text)


def _problem_parts(problem: str) -> tuple[str, str]:
    """'anchor_field: is not a date field' -> ('anchor_field', 'Is not a date field')."""
    where, sep, text = problem.partition(": ")
    if not sep or " " in where:
        return "", problem
    return where, text[:1].upper() + text[1:]


# --- permissions -----------------------------------------------------------------------------


def _sequence_perm(request: HttpRequest, action: str) -> bool:
    return request.user.has_perm(f"channels.{action}_sequence")


class SequencePart:
    """Steps and variants are edited as part of their sequence, under its permissions."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _sequence_perm(request, "view") or _sequence_perm(request, "change")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _sequence_perm(request, "change")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _sequence_perm(request, "change")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _sequence_perm(request, "change")


class CaseAndCustomerLinks:
    """List and detail columns linking a message to its case and customer."""

    @admin.display(description="Case", ordering="case")
    def case_link(self, obj: Message | InboundMessage) -> str:
        return _admin_link("admin:cases_case_change", obj.case_id, obj.case_id)

    @admin.display(description="Customer")
    def customer_link(self, obj: Message | InboundMessage) -> str:
        return _admin_link("admin:cases_customer_change", obj.customer_id, obj.customer_id)


class ReadOnlyAdmin(admin.ModelAdmin):
    """A record of what happened: nothing here is added, edited or deleted by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- sequences: the steps on the sequence page -----------------------------------------------


class VariantsSummary(forms.Widget):
    """A saved step's variants as text with a link to edit them; it takes no input."""

    def __init__(self, step: SequenceStep) -> None:
        super().__init__()
        self.step = step

    def render(self, name, value, attrs=None, renderer=None) -> str:
        variants = format_html_join(
            ", ",
            "{}: {} ({}%)",
            ((v.label, v.template_name, v.weight) for v in self.step.variants.all()),
        )
        return format_html(
            '{} <a href="{}">Edit variants</a>',
            variants or "no variants",
            reverse("admin:channels_sequencestep_change", args=[self.step.pk]),
        )


class StepForm(forms.ModelForm):
    first_template = forms.ChoiceField(
        label="Template",
        required=False,
        help_text="A new step sends this template; add A/B variants once it is saved.",
    )
    template_choices: list[tuple[str, str]] = []

    class Meta:
        model = SequenceStep
        fields = (
            "position",
            "channel",
            "fallback",
            "anchor",
            "anchor_field",
            "offset_days",
            "offset_hours",
            "send_at",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        position = self.fields["position"]
        position.validators.append(MaxValueValidator(MAX_STEP_POSITION))
        position.widget.attrs["max"] = MAX_STEP_POSITION
        template = self.fields["first_template"]
        template.choices = [("", "—"), *self.template_choices]
        if self.instance.pk:
            template.disabled = True
            template.widget = VariantsSummary(self.instance)


class StepFormSet(BaseInlineFormSet):
    """Each step is checked with the rules a sequence file is checked with
    (channels.sequences.step_problems), and each problem is shown on its field."""

    FIELDS = {"channel", "anchor", "anchor_field"}

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        sequence = self.instance
        names = template_names_by_channel(sequence.workflow_key)
        date_fields = _date_fields(sequence.workflow_key)
        kept = 0
        for form in self.forms:
            if self._should_delete_form(form) or not (form.instance.pk or form.has_changed()):
                continue
            kept += 1
            step = form.instance
            if step.pk:
                variants = list(step.variants.all())
            elif form.cleaned_data.get("first_template"):
                variants = [
                    StepVariant(label="A", template_name=form.cleaned_data["first_template"])
                ]
            else:
                form.add_error("first_template", "Choose the template this step sends.")
                continue
            for problem in step_problems(step, variants, names, date_fields):
                where, text = _problem_parts(problem)
                if where == "offset":
                    form.add_error("offset_days", text)
                elif where in self.FIELDS:
                    form.add_error(where, text)
                elif where == "variants" and not step.pk:
                    form.add_error("first_template", text)
                else:
                    form.add_error(None, problem[:1].upper() + problem[1:])
        if not kept:
            raise ValidationError("A sequence needs at least one step.")


class StepInline(SequencePart, admin.TabularInline):
    model = SequenceStep
    form = StepForm
    formset = StepFormSet
    extra = 0
    fields = (
        "position",
        "channel",
        "fallback",
        "anchor",
        "anchor_field",
        "offset_days",
        "offset_hours",
        "send_at",
        "first_template",
    )

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).prefetch_related("variants")

    @admin.display(description="Template")
    def first_template(self, step: SequenceStep) -> str:
        # Shown instead of the form field to staff who may only view the sequence.
        return VariantsSummary(step).render("first_template", None) if step.pk else "—"

    def get_formset(self, request: HttpRequest, obj: Sequence | None = None, **kwargs: Any):
        templates = MessageTemplate.objects.order_by("name")
        if obj is not None:
            templates = templates.filter(workflow_key=obj.workflow_key)
        names = templates.values_list("name", flat=True).distinct()
        form = type("StepForm", (StepForm,), {"template_choices": [(name, name) for name in names]})
        return super().get_formset(request, obj, form=form, **kwargs)


# --- sequences: the variants of one step -----------------------------------------------------


class VariantFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        step = self.instance
        live = [
            form
            for form in self.forms
            if not self._should_delete_form(form) and (form.instance.pk or form.has_changed())
        ]
        variants = [form.instance for form in live]
        workflow_key = step.sequence.workflow_key
        problems = step_problems(
            step, variants, template_names_by_channel(workflow_key), _date_fields(workflow_key)
        )
        general = []
        for problem in problems:
            text = _problem_parts(problem)[1]
            if "weights must add up" in text.lower():
                for form in live:
                    form.add_error("weight", text)
            elif "template named" in text:
                for form in live:
                    if repr(form.instance.template_name) in text:
                        form.add_error("template_name", text)
            else:
                general.append(text)
        if general:
            raise ValidationError(general)


class VariantForm(forms.ModelForm):
    template_name = forms.ChoiceField(label="Template")
    template_choices: list[tuple[str, str]] = []

    class Meta:
        model = StepVariant
        fields = ("label", "template_name", "weight")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = list(self.template_choices)
        current = self.instance.template_name
        if current and current not in dict(choices):
            choices.append((current, f"{current} (no such template)"))
        self.fields["template_name"].choices = [("", "—"), *choices]


class VariantInline(SequencePart, admin.TabularInline):
    model = StepVariant
    form = VariantForm
    formset = VariantFormSet
    extra = 1
    verbose_name = "variant"

    def get_formset(self, request: HttpRequest, obj: SequenceStep | None = None, **kwargs: Any):
        names = (
            MessageTemplate.objects.filter(workflow_key=obj.sequence.workflow_key if obj else "")
            .order_by("name")
            .values_list("name", flat=True)
            .distinct()
        )
        form = type(
            "VariantForm", (VariantForm,), {"template_choices": [(name, name) for name in names]}
        )
        return super().get_formset(request, obj, form=form, **kwargs)


@admin.register(SequenceStep)
class SequenceStepAdmin(SequencePart, admin.ModelAdmin):
    """A step's A/B variants. Reached from its sequence ("Edit variants"); the step's own
    timing is edited on the sequence page."""

    fields = (
        "sequence",
        "position",
        "channel",
        "fallback",
        "anchor",
        "anchor_field",
        "offset_days",
        "offset_hours",
        "send_at",
    )
    readonly_fields = fields
    inlines = [VariantInline]

    def get_model_perms(self, request: HttpRequest) -> dict:
        return {}  # not listed on the index: a step is opened from its sequence

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # steps are added on the sequence page

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # and deleted there

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        return redirect("admin:channels_sequence_changelist")

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).select_related("sequence")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        step = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if step is not None:
            context["title"] = f"Variants of step {step.position} of {step.sequence.name}"
        return super().change_view(request, object_id, form_url, context)

    def response_change(self, request: HttpRequest, obj: SequenceStep) -> HttpResponse:
        if "_continue" in request.POST:
            return super().response_change(request, obj)
        self.message_user(request, f"Saved the variants of step {obj.position}.", messages.SUCCESS)
        return redirect("admin:channels_sequence_change", obj.sequence_id)


# --- sequences -------------------------------------------------------------------------------


class SequenceForm(forms.ModelForm):
    class Meta:
        model = Sequence
        fields = (
            "workflow_key",
            "name",
            "active",
            "contact_window_start",
            "contact_window_end",
            "max_touches",
            "response_window_hours",
            "send_rate_per_minute",
        )

    def clean_workflow_key(self) -> str:
        key = self.cleaned_data["workflow_key"]
        if not Workflow.objects.filter(key=key).exists():
            raise ValidationError(
                f"No workflow has the key {key!r}: a sequence contacts the cases of an "
                "installed workflow."
            )
        return key


class ImportForm(forms.Form):
    file = forms.FileField(
        label="Sequence file",
        help_text="YAML, as exported here or shipped in workflows/outreach/. Several "
        "sequences may be given as documents separated by ---.",
    )

    def clean_file(self) -> list[Any]:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_IMPORT_BYTES:
            raise ValidationError(f"The file is larger than {MAX_IMPORT_BYTES // 1000} kB.")
        try:
            text = upload.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError("The file is not UTF-8 text.") from exc
        try:
            specs = [spec for spec in yaml.safe_load_all(text) if spec is not None]
        except yaml.YAMLError as exc:
            raise ValidationError(f"The file is not valid YAML: {exc}") from exc
        if not specs:
            raise ValidationError("The file holds no sequence.")
        return specs


class _ImportRefused(Exception):
    pass


def sequences_import_file(*, specs: list[Any]) -> tuple[list[Sequence], list[str]]:
    """Import every sequence of a file, or none: one failing document rolls back the rest,
    and every problem of every document is listed."""
    problems: list[str] = []
    imported: list[Sequence] = []
    try:
        with transaction.atomic():
            for index, spec in enumerate(specs):
                label = (
                    spec.get("workflow")
                    if isinstance(spec, dict) and isinstance(spec.get("workflow"), str)
                    else None
                ) or f"document {index + 1}"
                try:
                    imported.append(sequence_import(spec=spec))
                except ValidationError as exc:
                    problems.extend(f"{label}: {message}" for message in exc.messages)
            if problems:
                raise _ImportRefused
    except _ImportRefused:
        return [], problems
    return imported, []


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line bodies as YAML block text, so an exported file reads like the shipped ones."""


_LiteralDumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    ),
)


def sequences_yaml(sequences: list[Sequence]) -> str:
    return yaml.dump_all(
        [sequence_export(workflow_key=s.workflow_key) for s in sequences],
        Dumper=_LiteralDumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )


def _yaml_download(sequences: list[Sequence]) -> HttpResponse:
    name = sequences[0].workflow_key if len(sequences) == 1 else "sequences"
    response = HttpResponse(sequences_yaml(sequences), content_type="application/yaml")
    response["Content-Disposition"] = f'attachment; filename="{name}.yaml"'
    return response


@admin.register(Sequence)
class SequenceAdmin(admin.ModelAdmin):
    form = SequenceForm
    inlines = [StepInline]
    list_display = (
        "workflow_key",
        "name",
        "active",
        "steps_count",
        "contact_window",
        "max_touches",
        "response_window_hours",
        "send_rate_per_minute",
        "template_warnings",
    )
    list_filter = ("active",)
    search_fields = ("workflow_key", "name")
    actions = ["export_yaml"]

    class Media:
        css = {"all": ("channels/admin.css",)}

    def get_queryset(self, request: HttpRequest):
        return (
            super()
            .get_queryset(request)
            .annotate(steps_total=Count("steps"))
            .prefetch_related("steps__variants")
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Sequence | None = None) -> tuple:
        # Templates are keyed by workflow: moving a sequence to another key would leave
        # its templates behind. Import a file for the other workflow instead.
        return ("workflow_key",) if obj is not None else ()

    @admin.display(description="Steps", ordering="steps_total")
    def steps_count(self, obj: Sequence) -> int:
        return obj.steps_total

    @admin.display(description="Contact window")
    def contact_window(self, obj: Sequence) -> str:
        start, end = obj.contact_window_start, obj.contact_window_end
        return f"{start:%H:%M}–{end:%H:%M}"

    @admin.display(description="Template warnings")
    def template_warnings(self, obj: Sequence) -> str:
        gaps = sequence_template_gaps(obj)
        if not gaps:
            return "—"
        return format_html(
            '<span class="channels-warning">{}</span>',
            format_html_join(mark_safe("<br>"), "⚠ {}", ((gap,) for gap in gaps)),
        )

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is not SequenceStep:
            return super().save_formset(request, form, formset, change)
        moving = [
            f.instance.pk
            for f in formset.initial_forms
            if formset._should_delete_form(f) or "position" in f.changed_data
        ]
        SequenceStep.objects.filter(pk__in=moving).update(
            position=F("position") + PARKED_POSITION_OFFSET
        )
        formset.save()
        for step_form in formset.extra_forms:
            chosen = (
                step_form.cleaned_data.get("first_template") if step_form.has_changed() else None
            )
            if chosen and step_form.instance.pk and not formset._should_delete_form(step_form):
                StepVariant.objects.create(step=step_form.instance, label="A", template_name=chosen)
        return None

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        context = dict(extra_context or {})
        sequence = self.get_object(request, unquote(object_id))
        if sequence is not None:
            context["template_gaps"] = sequence_template_gaps(sequence)
        return super().change_view(request, object_id, form_url, context)

    # -- export and import

    @admin.action(description="Export selected sequences as YAML")
    def export_yaml(self, request: HttpRequest, queryset) -> HttpResponse:
        return _yaml_download(list(queryset.order_by("workflow_key")))

    def get_urls(self) -> list:
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="channels_sequence_import",
            ),
            path(
                "<path:object_id>/export/",
                self.admin_site.admin_view(self.export_view),
                name="channels_sequence_export",
            ),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        sequence = self.get_object(request, unquote(object_id))
        if sequence is None:
            raise Http404("No such sequence.")
        return _yaml_download([sequence])

    def import_view(self, request: HttpRequest) -> HttpResponse:
        # A file replaces a workflow's sequence and all its templates.
        if not (
            _sequence_perm(request, "add")
            and _sequence_perm(request, "change")
            and request.user.has_perm("channels.change_messagetemplate")
        ):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        problems: list[str] = []
        if form.is_bound and form.is_valid():
            imported, problems = sequences_import_file(specs=form.cleaned_data["file"])
            if imported:
                for sequence in imported:
                    self.log_change(request, sequence, "Imported from a sequence file.")
                    # Templates are replaced in bulk, which the audit trail's per-row
                    # tracking does not see: one entry names what the file brought.
                    audit_record(
                        user=request.user,
                        action="import",
                        target=sequence,
                        detail={
                            "templates": sorted(
                                MessageTemplate.objects.filter(
                                    workflow_key=sequence.workflow_key
                                ).values_list("name", "channel", "locale")
                            )
                        },
                        request=request,
                    )
                self.message_user(
                    request,
                    "Imported: " + ", ".join(str(s) for s in imported) + ".",
                    messages.SUCCESS,
                )
                return redirect("admin:channels_sequence_changelist")
        return TemplateResponse(
            request,
            "admin/channels/sequence/import.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Import sequence file",
                "form": form,
                "problems": problems,
            },
            status=400 if problems or form.errors else 200,
        )


# --- message templates -----------------------------------------------------------------------


class MessageTemplateForm(forms.ModelForm):
    class Meta:
        model = MessageTemplate
        fields = (
            "workflow_key",
            "name",
            "channel",
            "locale",
            "subject",
            "body",
            "whatsapp_template_name",
            "whatsapp_language",
            "whatsapp_parameters",
        )
        widgets = {"body": forms.Textarea(attrs={"rows": 8, "cols": 90})}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        candidate = MessageTemplate(**{name: cleaned.get(name) for name in self.Meta.fields})
        for problem in template_problems(candidate):
            where, text = _problem_parts(problem)
            self.add_error(where if where in self.fields else "body", text)
        # The body's syntax is checked above; the subject and WhatsApp parameters are
        # rendered by the same engine at send time and must compile too.
        sources = [("subject", candidate.subject)]
        if isinstance(candidate.whatsapp_parameters, list):
            sources += [("whatsapp_parameters", str(p)) for p in candidate.whatsapp_parameters]
        for name, source in sources:
            try:
                _compiled(source)
            except TemplateSyntaxError as exc:
                self.add_error(name, f"Template error: {exc}")
        return cleaned


def _posted_template(data: Any) -> MessageTemplate:
    """The template as typed, whether or not it validates: a preview shows the text and
    lists the problems instead of refusing."""
    try:
        parameters = json.loads(data.get("whatsapp_parameters") or "[]")
    except ValueError:
        parameters = []
    return MessageTemplate(
        workflow_key=data.get("workflow_key", ""),
        name=data.get("name", ""),
        channel=data.get("channel") or Channel.SMS,
        locale=data.get("locale", ""),
        subject=data.get("subject", ""),
        body=data.get("body", ""),
        whatsapp_parameters=parameters if isinstance(parameters, list) else [],
    )


def form_preview(form: forms.ModelForm) -> TemplatePreview:
    form.is_valid()
    preview = template_preview(_posted_template(form.data))
    labels = {name: field.label for name, field in form.fields.items()}
    problems = [
        f"{labels.get(name, 'Template') if name != '__all__' else 'Template'}: {error}"
        for name, errors in form.errors.items()
        for error in errors
    ]
    preview.problems = problems + [p for p in preview.problems if p not in " ".join(problems)]
    return preview


class TemplateChangeList(ChangeList):
    """Renders the page's SMS templates once against each workflow's sample case, for the
    segments column."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        samples: dict[str, tuple[Case, str]] = {}
        for template in self.result_list:
            template.size_preview = (
                template_preview(template, samples=samples)
                if template.channel == Channel.SMS
                else None
            )


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    form = MessageTemplateForm
    list_display = ("workflow_key", "name", "channel", "locale", "sms_segments", "updated_at")
    list_display_links = ("workflow_key", "name")
    list_filter = ("workflow_key", "channel", "locale")
    search_fields = ("workflow_key", "name", "body")
    fieldsets = (
        (None, {"fields": ("workflow_key", "name", "channel", "locale", "subject", "body")}),
        (
            "WhatsApp",
            {
                "fields": ("whatsapp_template_name", "whatsapp_language", "whatsapp_parameters"),
                "description": "Outside the 24-hour window WhatsApp sends only an approved "
                "template, with these parameters.",
            },
        ),
    )

    class Media:
        css = {"all": ("channels/admin.css",)}

    def get_changelist(self, request: HttpRequest, **kwargs: Any):
        return TemplateChangeList

    @admin.display(description="SMS segments")
    def sms_segments(self, obj: MessageTemplate) -> str:
        preview = getattr(obj, "size_preview", None)
        if preview is None:
            return "—"
        if preview.problems:
            return format_html('<span class="channels-badge channels-bad">template error</span>')
        badge = (
            format_html(
                ' <span class="channels-badge channels-bad">over {}</span>', preview.max_segments
            )
            if preview.over_limit
            else ""
        )
        return format_html("{} ({}){}", preview.segments, preview.encoding, badge)

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(require_POST(self.preview_view))
        return [
            path("preview/", view, name="channels_messagetemplate_preview"),
            path("<path:object_id>/preview/", view, name="channels_messagetemplate_preview"),
            *super().get_urls(),
        ]

    def _template_for(self, request: HttpRequest, object_id: str | None) -> MessageTemplate | None:
        if object_id is None:
            if not self.has_add_permission(request):
                raise PermissionDenied
            return None
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        template = self.get_object(request, unquote(object_id))
        if template is None:
            raise Http404("No such template.")
        return template

    def preview_view(self, request: HttpRequest, object_id: str | None = None) -> HttpResponse:
        """The live preview (htmx): the form as typed, rendered against a sample case."""
        template = self._template_for(request, object_id)
        form = self.get_form(request, template, change=template is not None)(
            request.POST, instance=template
        )
        return TemplateResponse(
            request,
            "admin/channels/messagetemplate/_preview.html",
            {"preview": form_preview(form)},
        )

    def changeform_view(
        self, request: HttpRequest, object_id=None, form_url: str = "", extra_context=None
    ):
        args = [object_id] if object_id else []
        context = {
            **(extra_context or {}),
            "preview_url": reverse("admin:channels_messagetemplate_preview", args=args),
            "max_segments": settings.SMS_MAX_SEGMENTS,
        }
        if request.method == "POST" and "_preview" in request.POST:
            return self._preview_page(request, object_id, form_url, context)
        return super().changeform_view(request, object_id, form_url, context)

    def _preview_page(
        self, request: HttpRequest, object_id: str | None, form_url: str, context: dict
    ) -> HttpResponse:
        """Without JavaScript, the Preview button posts the form here: it is shown again,
        as typed, with the preview and its problems, and nothing is saved."""
        template = self._template_for(request, object_id)
        form = self.get_form(request, template, change=template is not None)(
            request.POST, instance=template
        )
        preview = form_preview(form)
        admin_form = helpers.AdminForm(
            form,
            list(self.get_fieldsets(request, template)),
            {},
            self.get_readonly_fields(request, template),
            model_admin=self,
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Change message template" if template else "Add message template",
            "subtitle": str(template) if template else None,
            "adminform": admin_form,
            "object_id": object_id,
            "original": template,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            "preview": preview,
            **context,
        }
        return self.render_change_form(
            request,
            context,
            add=template is None,
            change=template is not None,
            obj=template,
            form_url=form_url,
        )


# --- what was sent and received (read-only) --------------------------------------------------


@admin.register(Message)
class MessageAdmin(CaseAndCustomerLinks, ReadOnlyAdmin):
    list_display = (
        "key",
        "case_link",
        "channel",
        "provider",
        "step_position",
        "variant",
        "template_name",
        "status",
        "attempts",
        "segments",
        "error",
        "created_at",
        "sent_at",
        "delivered_at",
    )
    list_filter = ("status", "channel", "workflow_key", "purpose")
    search_fields = ("key", "provider_message_id")
    date_hierarchy = "created_at"
    show_full_result_count = False
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "key",
                    "case_link",
                    "customer_link",
                    "workflow_key",
                    "purpose",
                    "channel",
                    "provider",
                    "provider_message_id",
                    "status",
                    "error",
                    "attempts",
                )
            },
        ),
        (
            "What was sent",
            {
                "fields": (
                    "step_position",
                    "variant",
                    "template_name",
                    "locale",
                    "to",
                    "subject",
                    "body_masked",
                    "whatsapp_template",
                    "encoding",
                    "segments",
                )
            },
        ),
        (
            "Times",
            {
                "fields": (
                    "created_at",
                    "not_before",
                    "claimed_at",
                    "sent_at",
                    "delivered_at",
                    "read_at",
                    "updated_at",
                )
            },
        ),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [name for _, spec in self.fieldsets for name in spec["fields"]]


@admin.register(InboundMessage)
class InboundMessageAdmin(CaseAndCustomerLinks, ReadOnlyAdmin):
    list_display = ("received_at", "channel", "provider", "kind", "customer_link", "case_link")
    list_filter = ("kind", "channel", "provider")
    search_fields = ("provider_message_id",)
    date_hierarchy = "received_at"
    fields = (
        "received_at",
        "channel",
        "provider",
        "provider_message_id",
        "kind",
        "sender",
        "customer_link",
        "case_link",
        "body",
    )
    readonly_fields = fields


@admin.register(CaseOutreach)
class CaseOutreachAdmin(ReadOnlyAdmin):
    list_display = (
        "case_link",
        "sequence",
        "status",
        "next_position",
        "touches",
        "next_due_at",
        "last_touch_at",
        "finished_reason",
    )
    list_filter = ("status", "sequence")
    list_select_related = ("sequence",)
    show_full_result_count = False
    fields = (
        "case_link",
        "sequence",
        "status",
        "next_position",
        "next_due_at",
        "touches",
        "last_touch_at",
        "finished_reason",
        "started_at",
        "updated_at",
    )
    readonly_fields = fields

    @admin.display(description="Case", ordering="case")
    def case_link(self, obj: CaseOutreach) -> str:
        return _admin_link("admin:cases_case_change", obj.case_id, obj.case_id)


# --- the demo phone --------------------------------------------------------------------------


class PhoneReplyForm(forms.Form):
    text = forms.CharField(
        label="Reply as the customer",
        max_length=1600,
        strip=True,
        widget=forms.TextInput(attrs={"size": 40, "placeholder": "e.g. STOP, START, HELP"}),
    )


def _phone_page(request: HttpRequest, template: str, **context: Any) -> HttpResponse:
    return TemplateResponse(
        request,
        f"admin/channels/phone/{template}",
        {**admin.site.each_context(request), **context},
    )


def _phone_allowed(request: HttpRequest, *, reply: bool = False) -> None:
    """Reading the phone is reading messages; answering as a customer changes their consent,
    which no staff role does to a real customer (staff/roles.py): Administrators only."""
    if not request.user.has_perm("channels.view_message"):
        raise PermissionDenied
    if reply and not request.user.has_perm("channels.add_inboundmessage"):
        raise PermissionDenied


def phone_index(request: HttpRequest) -> HttpResponse:
    """Customers who have messages in the outbox, most recent first."""
    _phone_allowed(request)
    by_address = {
        row["to"]: row
        for row in OutboxEntry.objects.values("to")
        .annotate(last=Max("created_at"), count=Count("id"))
        .order_by("-last")[:500]
    }
    addresses = list(by_address)
    customers = Customer.objects.filter(
        Q(phone__in=addresses) | Q(email__in=addresses) | Q(whatsapp__in=addresses)
    ).order_by("pk")[:PHONE_LIMIT]
    rows = []
    for customer in customers:
        own = [
            by_address[a]
            for a in {customer.phone, customer.email, customer.whatsapp}
            if a in by_address
        ]
        rows.append(
            {
                "customer": customer,
                "count": sum(row["count"] for row in own),
                "last": max(row["last"] for row in own),
            }
        )
    rows.sort(key=lambda row: row["last"], reverse=True)
    return _phone_page(request, "index.html", title="Demo phone", rows=rows)


def _consent_line(customer: Customer) -> list[tuple[str, str]]:
    lines = []
    for channel in FALLBACK_ORDER:
        entry = customer.consent.get(channel) if isinstance(customer.consent, dict) else None
        value = entry.get("value") if isinstance(entry, dict) else None
        lines.append((channel, "yes" if value else "no" if value is False else "not given"))
    return lines


def phone_customer(request: HttpRequest, customer_id: int) -> HttpResponse:
    """One customer's messages as their phone shows them, newest at the bottom, and a box
    to answer as the customer (STOP, START, HELP or anything else)."""
    _phone_allowed(request, reply=request.method == "POST")
    customer = get_object_or_404(Customer, pk=customer_id)
    form = PhoneReplyForm(request.POST or None)
    if request.method == "POST" and customer.phone and form.is_valid():
        with transaction.atomic():
            result = inbound_receive(
                channel=Channel.SMS,
                provider="outbox",
                provider_message_id=str(uuid.uuid4()),
                sender=customer.phone,
                body=form.cleaned_data["text"],
            )
            answer = (
                message_queue_reply(inbound=result.inbound, text=result.reply_text)
                if result.inbound is not None
                else None
            )
            if answer is not None:
                transaction.on_commit(dispatch_enqueue)
        kind = InboundMessage.Kind(result.kind).label
        text = f"Received as “{kind}”."
        if result.consent_changed:
            text += " The customer’s SMS consent changed."
        if answer is not None:
            text += f" Our answer is on its way: “{result.reply_text}”"
        messages.success(request, text)
        return redirect("admin-channels-phone-customer", customer.pk)
    zone = customer_zone(customer)
    addresses = {a for a in (channel_address(customer, c) for c in Channel.values) if a}
    entries = OutboxEntry.objects.filter(to__in=addresses).order_by("-created_at")[:PHONE_LIMIT]
    replies = InboundMessage.objects.filter(
        Q(customer=customer) | Q(sender__in=addresses)
    ).order_by("-received_at")[:PHONE_LIMIT]
    items = [{"at": e.created_at, "entry": e} for e in entries]
    items += [{"at": r.received_at, "reply": r} for r in replies]
    items.sort(key=lambda item: item["at"])
    for item in items:
        item["local"] = item["at"].astimezone(zone)
    return _phone_page(
        request,
        "customer.html",
        title=f"Demo phone: {customer.name or customer.external_id}",
        customer=customer,
        zone=zone.key,
        items=items,
        form=form,
        consent=_consent_line(customer),
        can_reply=bool(customer.phone) and request.user.has_perm("channels.add_inboundmessage"),
    )


# Mounted by config/urls.py at admin/channels/phone/ (an admin page that belongs to no model).
phone_urls = [
    path("", admin.site.admin_view(phone_index), name="admin-channels-phone"),
    path(
        "<int:customer_id>/",
        admin.site.admin_view(phone_customer),
        name="admin-channels-phone-customer",
    ),
]

# The index shows the demo phone beside the apps (admin/channels/index.html extends it).
admin.site.index_template = "admin/channels/index.html"
