"""File targets: CSV rows per operation file and day, a manifest with row counts and
SHA-256, written atomically and idempotently; documents copied beside them."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from policies.models import Workflow
from tests.writeback.conftest import case_ready, submit
from tests.writeback.test_services import _stored_document
from writeback.adapters import adapter_for
from writeback.models import Operation, WritebackTarget
from writeback.outbox import operation_request, outcome_context


@pytest.fixture
def file_target(db, tmp_path):
    target = WritebackTarget(
        key="core_files",
        name="Core batch files",
        kind="file",
        drop_folder=str(tmp_path / "drop"),
        operations={
            "promise_to_pay": [
                {
                    "name": "arrangement",
                    "file": "arrangements",
                    "body": {
                        "account": "{data.account_reference}",
                        "amount": "{values.amount}",
                        "date": "{values.date}",
                    },
                    "read_back": True,
                }
            ],
            "upload_documents": [
                {
                    "name": "document",
                    "file": "documents",
                    "each": "documents",
                    "body": {
                        "account": "{data.account_reference}",
                        "type": "{document.document_type}",
                    },
                    "expect": {"document_sha256": "{document.sha256}"},
                    "read_back": True,
                }
            ],
        },
    )
    target.full_clean()
    target.save()
    return target


def point_workflows_at(target):
    Workflow.objects.update(writeback_target=target.key)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_outcomes_are_appended_with_a_manifest(file_target, django_capture_on_commit_callbacks):
    case_ready("promise_to_pay")  # installs the workflow
    point_workflows_at(file_target)
    outcomes = [
        submit(case_ready("promise_to_pay"), django_capture_on_commit_callbacks) for _ in range(2)
    ]
    for outcome in outcomes:
        outcome.refresh_from_db()
        outcome.case.refresh_from_db()
        assert (outcome.state, outcome.case.state) == ("confirmed", "resolved")
    folder = file_target.drop_folder + f"/core_files/{outcomes[0].created_at.date().isoformat()}"
    rows = read_csv(f"{folder}/arrangements.csv")
    assert [row["outcome_id"] for row in rows] == [str(o.pk) for o in outcomes]
    assert rows[0]["amount"] == "120.00"
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    content = (folder / "arrangements.csv").read_bytes()
    assert manifest["files"] == [
        {"file": "arrangements.csv", "rows": 2, "sha256": hashlib.sha256(content).hexdigest()}
    ]
    assert (folder / "SHA256SUMS").read_text() == (
        f"{hashlib.sha256(content).hexdigest()}  arrangements.csv\n"
    )
    assert not list(folder.glob("*.tmp"))
    reference = outcomes[1].operations.get().target_reference
    assert reference == "arrangements.csv#2"


def test_a_row_already_in_the_file_is_not_appended_again(
    file_target, django_capture_on_commit_callbacks
):
    case = case_ready("promise_to_pay")
    point_workflows_at(file_target)
    outcome = submit(case, django_capture_on_commit_callbacks)
    operation = outcome.operations.get()
    adapter = adapter_for(file_target)
    request = operation_request(outcome, operation, outcome_context(outcome), with_content=True)
    again = adapter.send(request)  # a worker that died after writing, re-running
    assert again.ok and again.reference == operation.target_reference
    folder = adapter.folder(request.period)
    assert len(read_csv(folder / "arrangements.csv")) == 1
    assert json.loads((folder / "manifest.json").read_text())["files"][0]["rows"] == 1


def test_documents_are_copied_beside_the_rows(
    file_target, settings, tmp_path, django_capture_on_commit_callbacks
):
    case = case_ready("compliance_refresh")
    point_workflows_at(file_target)
    documents = [
        _stored_document(settings, tmp_path, "bill.pdf", b"%PDF electricity"),
        _stored_document(settings, tmp_path, "id.pdf", b"%PDF passport"),
    ]
    outcome = submit(
        case,
        django_capture_on_commit_callbacks,
        action="upload_documents",
        values={},
        documents=documents,
    )
    outcome.refresh_from_db()
    assert outcome.state == "confirmed", outcome.last_error
    assert list(outcome.operations.values_list("key", "status")) == [
        ("document-1", Operation.Status.CONFIRMED),
        ("document-2", Operation.Status.CONFIRMED),
    ]
    folder = adapter_for(file_target).folder(outcome.created_at.date().isoformat())
    rows = read_csv(folder / "documents.csv")
    assert [row["document_sha256"] for row in rows] == [d["sha256"] for d in documents]
    assert (folder / rows[0]["document_file"]).read_bytes() == b"%PDF electricity"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(d["sha256"] for d in manifest["documents"]) == sorted(
        d["sha256"] for d in documents
    )


def test_a_document_changed_on_disk_is_not_sent(
    file_target, settings, tmp_path, django_capture_on_commit_callbacks
):
    case = case_ready("compliance_refresh")
    point_workflows_at(file_target)
    document = _stored_document(settings, tmp_path, "bill.pdf", b"%PDF electricity")
    (tmp_path / "media" / document["path"]).write_bytes(b"tampered")
    outcome = submit(
        case,
        django_capture_on_commit_callbacks,
        action="upload_documents",
        values={},
        documents=[document],
    )
    outcome.refresh_from_db()
    assert outcome.state == "failed"
    assert "changed on disk" in outcome.last_error["last_request"]["error"]
