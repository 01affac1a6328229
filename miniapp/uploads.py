"""Upload documents: one file input per document the offer asks for → review with
consent → outcome, whose writeback files each document with the system of record.

A file is judged by its first bytes, never by its name or the browser's content type;
the size limit is enforced while the body streams in; files are stored in the private
store (miniapp/storage.py) under random names, with their SHA-256, and never served.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods

from cases.models import Actor, Case
from cases.services import IllegalTransition, case_record_event
from miniapp.sessions import session_choice, session_factors, session_set_choice
from miniapp.storage import private_storage
from miniapp.views import (
    _client_ip,
    _closed_page,
    _context,
    _needs,
    _now_iso,
    _recommended,
    _url,
    customer_page,
)
from policies.offers import offer_action

ACTION = "upload_documents"
MB = 1024 * 1024
# (extension, first bytes, content type). HEIC is left out: phones convert photos to JPEG
# when a file input accepts only these types.
SIGNATURES = (
    ("pdf", b"%PDF-", "application/pdf"),
    ("jpg", b"\xff\xd8\xff", "image/jpeg"),
    ("png", b"\x89PNG\r\n\x1a\n", "image/png"),
)
ACCEPT = ".pdf,.jpg,.jpeg,.png,application/pdf,image/jpeg,image/png"
CONSENT_TEXT = (
    "I confirm these documents are genuine and current, and I agree to {brand} keeping them "
    "with my account."
)


def sniff(head: bytes) -> tuple[str, str] | None:
    """(extension, content type) from a file's first bytes, or None if not allowed."""
    for extension, magic, content_type in SIGNATURES:
        if head.startswith(magic):
            return extension, content_type
    return None


def document_label(document_type: str) -> str:
    return document_type.replace("_", " ").capitalize()


class UploadLimit(FileUploadHandler):
    """Counts each file's bytes as the body streams in and stops keeping a file once it
    passes the limit, so an oversize file becomes a form error naming the limit rather
    than a full copy on disk or a 413 page. The limit comes from the case's offer."""

    def __init__(self, request: HttpRequest, limit_bytes: int):
        super().__init__(request)
        self.limit_bytes = limit_bytes
        self.oversize: set[str] = set()
        self.received = 0

    def new_file(self, field_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, *args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.limit_bytes:
            self.oversize.add(self.field_name)
            return None  # later handlers (memory, temporary file) get no more of it
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


class UploadForm(forms.Form):
    def __init__(
        self,
        *args: Any,
        document_types: list[str],
        max_files: int,
        max_file_mb: int,
        oversize: set[str] = frozenset(),
        file_count: int = 0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.max_files, self.max_file_mb = max_files, max_file_mb
        self.oversize, self.file_count = oversize, file_count
        for document_type in document_types:
            label = document_label(document_type)
            self.fields[f"document_{document_type}"] = forms.FileField(
                label=label,
                widget=forms.FileInput(attrs={"accept": ACCEPT}),
                error_messages={
                    "required": f"{label}: choose a file.",
                    "empty": f"{label}: the file is empty.",
                    "invalid": f"{label}: no file was received.",
                },
            )
        self.sniffed: dict[str, tuple[str, str]] = {}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.file_count > self.max_files:
            raise forms.ValidationError(
                f"Send at most {self.max_files} files; {self.file_count} were sent."
            )
        for name, field in self.fields.items():
            if self.files and len(self.files.getlist(name)) > 1:
                self.add_error(name, f"{field.label}: choose one file.")
                continue
            upload: UploadedFile | None = cleaned.get(name)
            if name in self.oversize or (upload and upload.size > self.max_file_mb * MB):
                self.add_error(
                    name, f"{field.label}: the file is larger than the {self.max_file_mb} MB limit."
                )
                continue
            if upload is None:
                continue
            upload.seek(0)
            kind = sniff(upload.read(8))
            upload.seek(0)
            if kind is None:
                self.add_error(
                    name,
                    f"{field.label}: only PDF, JPEG or PNG files are accepted, and this file "
                    "is none of them (whatever its name says).",
                )
            else:
                self.sniffed[name] = kind
        return cleaned


# --- storing ------------------------------------------------------------------------------


def documents_store(*, case: Case, form: UploadForm) -> list[dict[str, Any]]:
    """Write each checked file to the private store under a random name; the customer's
    own file name is kept nowhere (it may hold personal details)."""
    storage = private_storage()
    documents = []
    for name, (extension, content_type) in form.sniffed.items():
        upload = form.cleaned_data[name]
        document_type = name.removeprefix("document_")
        digest = hashlib.sha256()
        for chunk in upload.chunks():
            digest.update(chunk)
        upload.seek(0)
        path = storage.save(f"cases/{case.pk}/{secrets.token_hex(16)}.{extension}", upload)
        documents.append(
            {
                "name": f"{document_type}.{extension}",
                "content_type": content_type,
                "size": upload.size,
                "sha256": digest.hexdigest(),
                "path": path,
                "document_type": document_type,
            }
        )
    return documents


def documents_discard(*, documents: list[dict[str, Any]]) -> None:
    """Delete uploaded files that will not be submitted (replaced, or the customer
    changed their mind)."""
    storage = private_storage()
    for document in documents:
        storage.delete(document["path"])


# --- the page -----------------------------------------------------------------------------


@csrf_exempt  # checked below by csrf_protect, once the upload limit is in place
@require_http_methods(["GET", "POST"])
@customer_page
def upload(request: HttpRequest, token: str) -> HttpResponse:
    item = offer_action(request.case.offer, ACTION)
    max_file_mb = int(item["bounds"]["max_file_mb"]) if item else 1
    # Must be set before anything reads the body, which the CSRF check does (Django's
    # documented pattern for per-view upload handlers).
    limit = UploadLimit(request, max_file_mb * MB)
    request.upload_handlers.insert(0, limit)
    return _upload(request, token, limit)


@csrf_protect
def _upload(request: HttpRequest, token: str, limit: UploadLimit) -> HttpResponse:
    case = request.case
    closed = _closed_page(request, token)
    if closed:
        return closed
    item = offer_action(case.offer, ACTION)
    if item is None:
        case_record_event(
            case=case,
            kind="validation_failed",
            actor=Actor.CUSTOMER,
            data={"action": ACTION, "errors": {"action": ["not offered"]}},
        )
        return render(
            request,
            "miniapp/upload.html",
            _context(request, token, error="That option is not available."),
            status=400,
        )
    if _needs(request, case, ACTION):
        return redirect(_url("verify", token) + f"?next={ACTION}")
    bounds = item["bounds"]
    choice = session_choice(request, case)
    pending = choice if choice and choice.get("action") == ACTION else None
    if request.method == "GET":
        if request.GET.get("review") and pending:
            return _review(request, token, item, pending)
        case_record_event(
            case=case,
            kind="actions_viewed",
            actor=Actor.CUSTOMER,
            data={"shown": ACTION, "offered": [a["action"] for a in case.offer["actions"]]},
        )
        return _form_page(request, token, item, _form(bounds))
    step = request.POST.get("step")
    if step == "confirm":
        if not pending:
            return redirect(_url("upload", token))
        return _submit(request, token, item, pending)
    if step == "change":
        if pending:
            documents_discard(documents=pending["documents"])
            session_set_choice(request, case, None)
        return redirect(_url("upload", token))
    file_count = sum(len(request.FILES.getlist(key)) for key in request.FILES)
    form = _form(
        bounds,
        data=request.POST,
        files=request.FILES,
        oversize=limit.oversize,
        file_count=file_count,
    )
    if not form.is_valid():
        case_record_event(
            case=case,
            kind="validation_failed",
            actor=Actor.CUSTOMER,
            data={"action": ACTION, "fields": sorted(form.errors)},
        )
        return _form_page(request, token, item, form, status=400)
    documents = documents_store(case=case, form=form)
    if pending:
        documents_discard(documents=pending["documents"])
    session_set_choice(
        request,
        case,
        {
            "action": ACTION,
            "values": {"documents": [d["document_type"] for d in documents]},
            "documents": documents,
            "submission_key": secrets.token_urlsafe(16),
        },
    )
    case_record_event(
        case=case,
        kind="option_chosen",
        actor=Actor.CUSTOMER,
        data={"action": ACTION, "recommended": (_recommended(case) or {}).get("action") == ACTION},
    )
    return redirect(_url("upload", token) + "?review=1")


def _form(bounds: dict[str, Any], **kwargs: Any) -> UploadForm:
    return UploadForm(
        document_types=bounds["document_types"],
        max_files=int(bounds["max_files"]),
        max_file_mb=int(bounds["max_file_mb"]),
        **kwargs,
    )


def _form_page(
    request: HttpRequest, token: str, item: dict, form: UploadForm, status: int = 200
) -> HttpResponse:
    case = request.case
    return render(
        request,
        "miniapp/upload.html",
        _context(
            request,
            token,
            item=item,
            form=form,
            max_file_mb=item["bounds"]["max_file_mb"],
            others=[a for a in case.offer["actions"] if a["action"] != ACTION],
        ),
        status=status,
    )


def _review(
    request: HttpRequest,
    token: str,
    item: dict,
    pending: dict[str, Any],
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    rows = [(document_label(d["document_type"]), d["size"]) for d in pending["documents"]]
    return render(
        request,
        "miniapp/upload_review.html",
        _context(
            request,
            token,
            item=item,
            rows=rows,
            consent_text=CONSENT_TEXT.format(brand=settings.BRAND_NAME),
            error=error,
        ),
        status=status,
    )


def _submit(request: HttpRequest, token: str, item: dict, pending: dict[str, Any]) -> HttpResponse:
    from writeback.services import OutcomeExists, OutcomeRefused, outcome_submit

    case = request.case
    evidence = {
        "consent_text": CONSENT_TEXT.format(brand=settings.BRAND_NAME),
        "consented_at": _now_iso(),
        "ip": _client_ip(request),
        "user_agent": request.headers.get("User-Agent", "")[:300],
        "identity": sorted(session_factors(request, case)),
    }
    case_record_event(
        case=case, kind="consent_given", actor=Actor.CUSTOMER, data={"action": ACTION, **evidence}
    )
    try:
        outcome_submit(
            case=case,
            action=ACTION,
            values=pending["values"],
            evidence=evidence,
            documents=pending["documents"],
            submission_key=pending["submission_key"],
        )
    except OutcomeExists:
        pass  # a second tap or tab submitted first: show that one
    except (OutcomeRefused, IllegalTransition) as exc:
        return _review(request, token, item, pending, error=str(exc), status=400)
    session_set_choice(request, case, None)
    return redirect(_url("done", token))
