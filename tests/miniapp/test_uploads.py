"""Document uploads: types judged by their first bytes, the size limit named in the error,
one file per required document, private storage that no URL serves, SHA-256 kept, and
the documents filed with the system of record."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from miniapp.storage import private_storage
from privacy.crypto import bytes_decrypt
from tests import factories
from tests.miniapp.test_flow import Opened, error_text, kinds, open_case, verify_fully
from writeback.models import Outcome

PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64 + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64
EXE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 64
HTML = b"<!doctype html><script>alert(1)</script>"


@pytest.fixture(autouse=True)
def private_root(settings, tmp_path) -> Path:
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"
    return settings.PRIVATE_MEDIA_ROOT


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def upload_file(name: str, content: bytes, content_type: str = "application/pdf"):
    return SimpleUploadedFile(name, content, content_type=content_type)


def verified(client: Client, **overrides) -> Opened:
    opened = open_case("compliance_refresh", **overrides)
    client.get(opened.url())
    verify_fully(client, opened, "upload_documents")
    return opened


def send(client: Client, opened: Opened, **files):
    return client.post(opened.url("upload"), {"step": "upload", **files})


def both(identity=None, address=None) -> dict:
    return {
        "document_proof_of_identity": identity or upload_file("passport.pdf", PDF),
        "document_proof_of_address": address
        or upload_file("bill.png", PNG, content_type="image/png"),
    }


# --- what is accepted -----------------------------------------------------------------------


def test_the_form_has_one_file_input_per_required_document(client, db):
    opened = verified(client)
    page = client.get(opened.url("upload"))
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count('type="file"') == 2
    assert 'name="document_proof_of_identity"' in html
    assert 'accept=".pdf,.jpg,.jpeg,.png,application/pdf,image/jpeg,image/png"' in html
    assert "multiple" not in html
    assert 'enctype="multipart/form-data"' in html
    assert "actions_viewed" in kinds(opened.case)


@pytest.mark.parametrize(
    ("name", "content", "extension"),
    [("scan.pdf", PDF, "pdf"), ("photo.jpeg", JPEG, "jpg"), ("photo.png", PNG, "png")],
)
def test_pdf_jpeg_and_png_are_accepted_and_stored_privately_with_their_sha256(
    client, db, private_root, name, content, extension
):
    opened = verified(client)

    response = send(client, opened, **both(identity=upload_file(name, content, "x/y")))

    assert response.status_code == 302
    assert response["Location"] == opened.url("upload", "review=1")
    files = stored_files(private_root)
    assert len(files) == 2
    choice = client.session["miniapp"][str(opened.case.pk)]["choice"]
    identity = next(d for d in choice["documents"] if d["document_type"] == "proof_of_identity")
    assert identity["sha256"] == hashlib.sha256(content).hexdigest()
    assert identity["size"] == len(content)
    assert identity["name"] == f"proof_of_identity.{extension}"
    assert identity["path"].endswith(f".{extension}")
    # A random name: never the customer's own file name.
    assert name.split(".")[0] not in identity["path"]
    # Encrypted on disk (privacy/crypto.py); the SHA-256 is of the plain bytes.
    on_disk = (private_root / identity["path"]).read_bytes()
    assert content not in on_disk and bytes_decrypt(on_disk) == content
    with private_storage().open(identity["path"]) as handle:
        assert handle.read() == content
    assert (private_root / identity["path"]).stat().st_mode & 0o077 == 0  # owner only
    assert "option_chosen" in kinds(opened.case)


@pytest.mark.parametrize(
    "content", [EXE, HTML, b"GIF89a" + b"\x00" * 32, b"%PD"], ids=["exe", "html", "gif", "short"]
)
def test_a_pdf_that_is_really_something_else_is_refused(client, db, private_root, content):
    opened = verified(client)

    response = send(
        client, opened, **both(identity=upload_file("passport.pdf", content, "application/pdf"))
    )

    assert response.status_code == 400
    assert "Proof of identity: only PDF, JPEG or PNG" in error_text(response)
    assert stored_files(private_root) == []  # nothing is kept from a refused form
    assert "validation_failed" in kinds(opened.case)


@pytest.fixture
def one_mb_limit(db):
    spec = factories.workflow_spec("compliance_refresh")
    for action in spec["actions"]:
        if action["action"] == "upload_documents":
            action["params"]["max_file_mb"] = "1"
    factories.workflow_variant("compliance_refresh", actions=spec["actions"])


def test_an_oversize_file_is_a_form_error_naming_the_limit(
    client, one_mb_limit, private_root, settings
):
    opened = verified(client)
    big = PDF + b"\x00" * (1024 * 1024)

    response = send(client, opened, **both(identity=upload_file("big.pdf", big)))

    assert response.status_code == 400
    assert "Proof of identity: the file is larger than the 1 MB limit." in error_text(response)
    assert stored_files(private_root) == []


def test_a_file_just_under_the_limit_is_accepted_from_a_temporary_file(
    client, one_mb_limit, private_root, settings
):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # stream to a temporary file, as big ones do
    opened = verified(client)
    content = PDF + b"\x00" * (1024 * 1024 - len(PDF))

    response = send(client, opened, **both(identity=upload_file("big.pdf", content)))

    assert response.status_code == 302
    digests = {
        hashlib.sha256(bytes_decrypt(p.read_bytes())).hexdigest()
        for p in stored_files(private_root)
    }
    assert hashlib.sha256(content).hexdigest() in digests


def test_too_many_files_are_refused_with_the_limit(client, db, private_root):
    opened = verified(client)  # two documents required: at most 4 files
    extra = {f"extra_{n}": upload_file(f"x{n}.pdf", PDF) for n in range(3)}

    response = send(client, opened, **both(), **extra)

    assert response.status_code == 400
    assert "Send at most 4 files; 5 were sent." in error_text(response)
    assert stored_files(private_root) == []


def test_two_files_for_one_document_are_refused(client, db, private_root):
    opened = verified(client)
    files = both()
    files["document_proof_of_identity"] = [
        upload_file("a.pdf", PDF),
        upload_file("b.pdf", PDF),
    ]
    response = send(client, opened, **files)
    assert response.status_code == 400
    assert "Proof of identity: choose one file." in error_text(response)


def test_a_missing_required_document_is_named(client, db, private_root):
    opened = verified(client)

    response = send(client, opened, document_proof_of_identity=upload_file("passport.pdf", PDF))

    assert response.status_code == 400
    assert "Proof of address: choose a file." in error_text(response)
    assert stored_files(private_root) == []


def test_an_empty_file_is_refused(client, db):
    opened = verified(client)
    response = send(client, opened, **both(identity=upload_file("empty.pdf", b"")))
    assert response.status_code == 400
    assert "Proof of identity: the file is empty." in error_text(response)


# --- who may upload -------------------------------------------------------------------------


def test_uploads_need_the_actions_identity_level(client, db, private_root):
    opened = open_case("compliance_refresh")
    client.get(opened.url())

    response = send(client, opened, **both())

    assert response.status_code == 302
    assert response["Location"] == opened.url("verify", "next=upload_documents")
    assert stored_files(private_root) == []


def test_a_case_not_offered_uploads_gets_400(client, db):
    opened = open_case("promise_to_pay")
    client.get(opened.url())
    response = client.get(opened.url("upload"))
    assert response.status_code == 400
    assert "validation_failed" in kinds(opened.case)


def test_an_upload_without_the_csrf_token_is_refused(client, db, private_root):
    opened = verified(client)
    client.handler.enforce_csrf_checks = True
    response = send(client, opened, **both())
    assert response.status_code == 403
    assert stored_files(private_root) == []


# --- storage is private ---------------------------------------------------------------------


def test_a_stored_document_is_under_no_url(client, db, private_root):
    opened = verified(client)
    send(client, opened, **both())
    [document, _] = client.session["miniapp"][str(opened.case.pk)]["choice"]["documents"]

    for prefix in ("/media/", "/static/", "/private/", "/"):
        assert client.get(prefix + document["path"]).status_code == 404
    with pytest.raises(ValueError, match="never served"):
        private_storage().url(document["path"])


# --- review, submit and the system of record ------------------------------------------------


def test_review_shows_the_documents_and_change_discards_them(client, db, private_root):
    opened = verified(client)
    send(client, opened, **both())

    review = client.get(opened.url("upload", "review=1"))
    assert review.status_code == 200
    assert "Proof of identity" in review.content.decode()
    assert "I confirm these documents are genuine" in review.content.decode()

    changed = client.post(opened.url("upload"), {"step": "change"})
    assert changed["Location"] == opened.url("upload")
    assert stored_files(private_root) == []


def test_uploading_again_replaces_the_files_not_yet_sent(client, db, private_root):
    opened = verified(client)
    send(client, opened, **both())
    send(client, opened, **both())
    assert len(stored_files(private_root)) == 2


@pytest.mark.django_db(transaction=True)
def test_uploaded_documents_end_to_end_are_filed_with_the_system_of_record(
    demo_core, settings, private_root
):
    from channels.sequences import sequences_install_shipped
    from config.http import http_request
    from writeback.models import WritebackTarget

    settings.CORE_API_TOKEN = "test-core-token"
    factories.writeback_target_shipped()
    WritebackTarget.objects.filter(key="core_rest").update(base_url=demo_core.url)
    factories.workflow_shipped("compliance_refresh")
    sequences_install_shipped()
    client = Client()
    opened = verified(client)
    jpeg = upload_file("me.jpg", JPEG, "image/jpeg")

    assert send(client, opened, **both(identity=jpeg))["Location"].endswith("review=1")
    confirmed = client.post(opened.url("upload"), {"step": "confirm"})

    assert confirmed["Location"] == opened.url("done")
    assert opened.reload().state == "resolved"
    outcome = Outcome.objects.get(case=opened.case)
    assert outcome.values == {"documents": ["proof_of_identity", "proof_of_address"]}
    assert "I confirm these documents" in outcome.evidence["consent_text"]
    assert "consent_given" in kinds(opened.case)
    account = opened.case.data["account_reference"]
    filed = {}
    for operation in outcome.operations.all():
        answer = http_request(
            "GET",
            f"{demo_core.url}/accounts/{account}/documents/{operation.target_reference}",
            headers=demo_core.auth_headers(),
        )
        assert answer.status == 200, answer.text
        filed[answer.json()["document_type"]] = answer.json()["sha256"]
    assert filed == {
        "proof_of_identity": hashlib.sha256(JPEG).hexdigest(),
        "proof_of_address": hashlib.sha256(PNG).hexdigest(),
    }
    # Submitted: a second confirm finds nothing pending and changes nothing.
    assert client.post(opened.url("upload"), {"step": "confirm"}).status_code == 302
    assert Outcome.objects.filter(case=opened.case).count() == 1
