"""The demo core system of record, through real HTTP on loopback: every endpoint, the three
auth kinds, Idempotency-Key semantics, each injected fault, restarts and the stats that tell
a correct caller from one that duplicates records."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time

import pytest

from config.http import HttpFailure, http_request
from democore import server as democore_server
from democore.testing import DemoCore

TOKEN = "test-core-token"
PROMISE = {
    "type": "promise",
    "amount": "120.00",
    "currency": "GBP",
    "date": "2026-11-01",
    "external_id": "case-1:promise",
}


def call(core, method, path, *, body=None, key=None, headers=None, auth=True, **kwargs):
    sent = {"Content-Type": "application/json"} if body is not None else {}
    if auth:
        sent["Authorization"] = f"Bearer {TOKEN}"
    if key is not None:
        sent["Idempotency-Key"] = key
    sent.update(headers or {})
    return http_request(method, core.url + path, headers=sent, json=body, **kwargs)


def signed(body: bytes, *, at: int, token: str = TOKEN) -> dict[str, str]:
    digest = hmac.new(token.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Signature": f"t={at},v1={digest}", "Content-Type": "application/json"}


def test_healthz_needs_no_auth(demo_core):
    answer = http_request("GET", demo_core.url + "/healthz")
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"


def test_accounts_exist_on_first_use(demo_core):
    answer = call(demo_core, "GET", "/accounts/ANY-REF-42")
    assert answer.status == 200
    assert answer.json() == {
        "account": "ANY-REF-42",
        "contact": {"phone": None, "email": None, "address": None},
        "flags": [],
        "notes": [],
        "arrangements_count": 0,
        "documents_count": 0,
    }


def test_promise_arrangement_is_stored_and_read_back(demo_core):
    created = call(demo_core, "POST", "/accounts/ACC-1/arrangements", body=PROMISE)
    assert created.status == 201
    record = created.json()
    assert record["reference"] == "ARR-000001"
    assert record["account"] == "ACC-1"
    assert {k: record[k] for k in PROMISE} == PROMISE
    assert record["created_at"].endswith("Z")

    read = call(demo_core, "GET", "/accounts/ACC-1/arrangements/ARR-000001")
    assert read.status == 200 and read.json() == record
    assert call(demo_core, "GET", "/accounts/ACC-1/arrangements").json() == [record]
    assert call(demo_core, "GET", "/accounts/ACC-1").json()["arrangements_count"] == 1
    # References belong to their account: another account cannot read it.
    assert call(demo_core, "GET", "/accounts/ACC-2/arrangements/ARR-000001").status == 404
    missing = call(demo_core, "GET", "/accounts/ACC-1/arrangements/ARR-999999")
    assert missing.status == 404 and missing.json()["error"] == "not_found"


def test_plan_arrangement_keeps_its_instalments(demo_core):
    plan = {
        "type": "plan",
        "amount": 300,
        "currency": "EUR",
        "instalments": [
            {"date": "2026-11-01", "amount": "150"},
            {"date": "2026-12-01", "amount": 150.0},
        ],
    }
    record = call(demo_core, "POST", "/accounts/ACC-1/arrangements", body=plan).json()
    assert record["amount"] == "300.00"
    assert record["instalments"] == [
        {"date": "2026-11-01", "amount": "150.00"},
        {"date": "2026-12-01", "amount": "150.00"},
    ]
    assert record["external_id"] is None


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"type", "amount", "currency"}),
        ({**PROMISE, "type": "loan"}, {"type"}),
        ({**PROMISE, "amount": "-1"}, {"amount"}),
        ({**PROMISE, "amount": "1.005"}, {"amount"}),
        ({**PROMISE, "amount": True}, {"amount"}),
        ({**PROMISE, "currency": "pounds"}, {"currency"}),
        ({**PROMISE, "date": "2026-02-30"}, {"date"}),
        ({**PROMISE, "date": None}, {"date"}),
        ({**PROMISE, "external_id": 7}, {"external_id"}),
        ({**PROMISE, "type": "plan", "instalments": []}, {"instalments"}),
        (
            {**PROMISE, "type": "plan", "instalments": [{"date": "x", "amount": "1"}, 3]},
            {"instalments.0.date", "instalments.1"},
        ),
    ],
)
def test_invalid_arrangement_is_refused_field_by_field(demo_core, body, errors):
    answer = call(demo_core, "POST", "/accounts/ACC-1/arrangements", body=body)
    assert answer.status == 422
    assert set(answer.json()["errors"]) == errors
    assert demo_core.stats()["arrangements"] == 0


def test_payment_is_stored_and_read_back(demo_core):
    body = {
        "amount": "25.10",
        "currency": "USD",
        "provider_reference": "pi_123",
        "external_id": "p1",
    }
    created = call(demo_core, "POST", "/accounts/ACC-1/payments", body=body)
    assert created.status == 201
    record = created.json()
    assert record["reference"] == "PAY-000001"
    assert record["provider_reference"] == "pi_123"
    assert (
        call(demo_core, "GET", f"/accounts/ACC-1/payments/{record['reference']}").json() == record
    )
    refused = call(demo_core, "POST", "/accounts/ACC-1/payments", body={"amount": "1"})
    assert refused.status == 422
    assert set(refused.json()["errors"]) == {"currency", "provider_reference"}


def test_contact_update_merges_into_the_account(demo_core):
    first = call(demo_core, "PATCH", "/accounts/ACC-1/contact", body={"phone": "+447911123456"})
    assert first.status == 200
    assert first.json()["reference"] == "CON-000001"
    second = call(
        demo_core,
        "PATCH",
        "/accounts/ACC-1/contact",
        body={"email": "ann@example.com", "address": {"line1": "1 High St", "postcode": "N1"}},
    )
    contact = {
        "phone": "+447911123456",
        "email": "ann@example.com",
        "address": {"line1": "1 High St", "postcode": "N1"},
    }
    assert second.json()["contact"] == contact
    assert second.json()["changes"] == {
        "email": "ann@example.com",
        "address": {"line1": "1 High St", "postcode": "N1"},
    }
    assert call(demo_core, "GET", "/accounts/ACC-1").json()["contact"] == contact
    assert call(demo_core, "GET", "/accounts/ACC-1/contact").json()["contact"] == contact
    read = call(demo_core, "GET", "/accounts/ACC-1/contact/CON-000001")
    assert read.json()["changes"] == {"phone": "+447911123456"}

    bad = call(demo_core, "PATCH", "/accounts/ACC-1/contact", body={"phone": "07911 123456"})
    assert bad.status == 422 and set(bad.json()["errors"]) == {"phone"}
    empty = call(demo_core, "PATCH", "/accounts/ACC-1/contact", body={"external_id": "x"})
    assert empty.status == 422 and set(empty.json()["errors"]) == {"contact"}
    assert demo_core.stats()["contact_updates"] == 2


def test_notes_show_on_the_account(demo_core):
    created = call(
        demo_core,
        "POST",
        "/accounts/ACC-1/notes",
        body={"text": "Promised by SMS", "category": "x"},
    )
    assert created.status == 201 and created.json()["reference"] == "NOTE-000001"
    assert call(demo_core, "GET", "/accounts/ACC-1").json()["notes"] == [created.json()]
    assert call(demo_core, "GET", "/accounts/ACC-1/notes/NOTE-000001").json() == created.json()
    blank = call(demo_core, "POST", "/accounts/ACC-1/notes", body={"text": "   "})
    assert blank.status == 422 and "text" in blank.json()["errors"]


def test_flags_are_set_and_removed(demo_core):
    created = call(demo_core, "POST", "/accounts/ACC-1/flags", body={"flag": "hardship"})
    assert created.status == 201 and created.json()["reference"] == "FLG-000001"
    call(demo_core, "POST", "/accounts/ACC-1/flags", body={"flag": "hardship"})
    assert call(demo_core, "GET", "/accounts/ACC-1").json()["flags"] == ["hardship"]

    removed = call(demo_core, "DELETE", "/accounts/ACC-1/flags/hardship")
    assert removed.status == 200
    assert removed.json() == {"account": "ACC-1", "flag": "hardship", "removed": True, "flags": []}
    again = call(demo_core, "DELETE", "/accounts/ACC-1/flags/hardship")
    assert again.status == 200 and again.json()["removed"] is False
    assert call(demo_core, "GET", "/accounts/ACC-1").json()["flags"] == []


def test_document_upload_keeps_the_exact_bytes(demo_core):
    # Line breaks of every kind and raw binary: the multipart parser must not touch them.
    content = b"%PDF-1.7\r\n\x00\xff\n\r--boundary-lookalike\r\n" + bytes(range(256)) * 40
    answer = http_request(
        "POST",
        demo_core.url + "/accounts/ACC-1/documents",
        headers={"Authorization": f"Bearer {TOKEN}"},
        data={"document_type": "proof_of_address", "external_id": "doc-1"},
        files={"file": ("bill.pdf", content, "application/pdf")},
    )
    assert answer.status == 201
    record = answer.json()
    assert record["reference"] == "DOC-000001"
    assert record["sha256"] == hashlib.sha256(content).hexdigest()
    assert record["size"] == len(content)
    assert record["filename"] == "bill.pdf"
    assert record["content_type"] == "application/pdf"
    assert record["document_type"] == "proof_of_address"
    read = call(demo_core, "GET", "/accounts/ACC-1/documents/DOC-000001")
    assert read.json() == record
    assert call(demo_core, "GET", "/accounts/ACC-1").json()["documents_count"] == 1


def test_document_without_a_file_or_as_json_is_refused(demo_core):
    no_file = http_request(
        "POST",
        demo_core.url + "/accounts/ACC-1/documents",
        headers={"Authorization": f"Bearer {TOKEN}"},
        data={"document_type": "id"},
        files={"other": ("x.txt", b"x", "text/plain")},
    )
    assert no_file.status == 422 and set(no_file.json()["errors"]) == {"file"}
    as_json = call(demo_core, "POST", "/accounts/ACC-1/documents", body={"document_type": "id"})
    assert as_json.status == 415
    assert demo_core.stats()["documents"] == 0


# Authentication -------------------------------------------------------------------------


def test_bearer_token(demo_core):
    assert call(demo_core, "GET", "/accounts/A").status == 200
    missing = call(demo_core, "GET", "/accounts/A", auth=False)
    assert missing.status == 401 and missing.json()["error"] == "unauthorized"
    wrong = call(demo_core, "GET", "/accounts/A", auth=False, headers={"Authorization": "Bearer x"})
    assert wrong.status == 401 and "Wrong bearer token" in wrong.json()["detail"]


def test_basic_auth_with_the_token_as_password(demo_core):
    url = demo_core.url + "/accounts/A"
    assert http_request("GET", url, auth=("closeloop", TOKEN)).status == 200
    assert http_request("GET", url, auth=("closeloop", "nope")).status == 401
    garbled = http_request("GET", url, headers={"Authorization": "Basic !!!"})
    assert garbled.status == 401


def test_hmac_signature(demo_core):
    url = demo_core.url + "/accounts/A/notes"
    body = json.dumps({"text": "signed"}).encode()
    now = int(time.time())
    ok = http_request("POST", url, content=body, headers=signed(body, at=now))
    assert ok.status == 201

    stale = http_request("POST", url, content=body, headers=signed(body, at=now - 301))
    assert stale.status == 401 and "300s" in stale.json()["detail"]
    wrong_key = http_request("POST", url, content=body, headers=signed(body, at=now, token="x"))
    assert wrong_key.status == 401
    # A signature over one body does not cover another.
    tampered = http_request(
        "POST", url, content=body.replace(b"signed", b"forged"), headers=signed(body, at=now)
    )
    assert tampered.status == 401
    malformed = http_request(
        "POST", url, content=body, headers={"X-Signature": "v1=abc", "Content-Type": "x/json"}
    )
    assert malformed.status == 401
    assert demo_core.stats()["notes"] == 1


def test_control_endpoints_need_no_auth(demo_core):
    assert http_request("GET", demo_core.url + "/_control/stats").status == 200
    assert http_request("GET", demo_core.url + "/_control/faults").status == 200


def test_no_token_means_no_auth(tmp_path):
    with DemoCore.start(db_path=tmp_path / "open.sqlite3") as core:
        assert http_request("GET", core.url + "/accounts/A").status == 200


# Idempotency-Key ------------------------------------------------------------------------


def test_replay_returns_the_first_response_and_creates_nothing(demo_core):
    first = call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-1")
    replay = call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-1")
    assert first.status == replay.status == 201
    assert replay.json() == first.json()
    assert "idempotent-replayed" not in first.headers
    assert replay.headers["idempotent-replayed"] == "true"
    stats = demo_core.stats()
    assert (stats["arrangements"], stats["replays"], stats["unkeyed"]) == (1, 1, 0)


def test_key_order_in_the_body_does_not_make_another_request(demo_core):
    reordered = json.dumps(dict(reversed(PROMISE.items()))).encode()
    call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-1")
    replay = http_request(
        "POST",
        demo_core.url + "/accounts/A/arrangements",
        content=reordered,
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Idempotency-Key": "k-1",
            "Content-Type": "application/json",
        },
    )
    assert replay.headers["idempotent-replayed"] == "true"


def test_multipart_retry_with_a_new_boundary_replays(demo_core):
    def upload():
        return http_request(
            "POST",
            demo_core.url + "/accounts/A/documents",
            headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "doc-key"},
            data={"document_type": "id"},
            files={"file": ("id.png", b"\x89PNG\r\n", "image/png")},
        )

    first, second = upload(), upload()
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert demo_core.stats()["documents"] == 1


def test_validation_errors_are_replayed_too(demo_core):
    bad = {**PROMISE, "currency": "x"}
    first = call(demo_core, "POST", "/accounts/A/arrangements", body=bad, key="k-bad")
    replay = call(demo_core, "POST", "/accounts/A/arrangements", body=bad, key="k-bad")
    assert first.status == replay.status == 422
    assert replay.headers["idempotent-replayed"] == "true"


def test_same_key_for_another_request_is_refused(demo_core):
    call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-1")
    other = call(
        demo_core, "POST", "/accounts/A/arrangements", body={**PROMISE, "amount": "1"}, key="k-1"
    )
    assert other.status == 422 and other.json()["error"] == "idempotency_key_reused"
    elsewhere = call(demo_core, "POST", "/accounts/B/arrangements", body=PROMISE, key="k-1")
    assert elsewhere.status == 422
    assert demo_core.stats()["arrangements"] == 1


def test_concurrent_requests_with_one_key_make_one_record(demo_core):
    # Latency keeps the first request running while the others arrive.
    demo_core.faults(latency_ms=300)
    answers = []

    def post():
        answers.append(
            call(
                demo_core,
                "POST",
                "/accounts/A/payments",
                key="pay-1",
                body={"amount": "5.00", "currency": "GBP", "provider_reference": "pi_1"},
            )
        )

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answer.status for answer in answers] == [201] * 6
    assert {answer.json()["reference"] for answer in answers} == {"PAY-000001"}
    assert sum("idempotent-replayed" in answer.headers for answer in answers) == 5
    assert demo_core.stats()["payments"] == 1


def test_a_key_still_running_after_the_wait_answers_409(demo_core, monkeypatch):
    monkeypatch.setattr(democore_server, "IDEMPOTENCY_WAIT_SECONDS", 0.3)
    demo_core.faults(timeout_rate=1.0, hang_seconds=1.5)
    hanging = threading.Thread(
        target=call,
        args=(demo_core, "POST", "/accounts/A/notes"),
        kwargs={"body": {"text": "slow"}, "key": "n-1"},
    )
    hanging.start()
    time.sleep(0.2)
    busy = call(demo_core, "POST", "/accounts/A/notes", body={"text": "slow"}, key="n-1")
    assert busy.status == 409 and busy.json()["error"] == "idempotency_key_in_progress"
    hanging.join()
    demo_core.faults(timeout_rate=0.0)
    done = call(demo_core, "POST", "/accounts/A/notes", body={"text": "slow"}, key="n-1")
    assert done.status == 201 and done.headers["idempotent-replayed"] == "true"
    assert demo_core.stats()["notes"] == 1


def test_bad_idempotency_key_is_refused(demo_core):
    answer = call(demo_core, "POST", "/accounts/A/notes", body={"text": "x"}, key="a" * 256)
    assert answer.status == 400 and answer.json()["error"] == "invalid_idempotency_key"


# Faults ---------------------------------------------------------------------------------


def test_error_rate_answers_500_before_doing_anything(demo_core):
    demo_core.faults(error_rate=1.0)
    failed = call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-1")
    assert failed.status == 500 and failed.json()["error"] == "injected_error"
    assert demo_core.stats()["arrangements"] == 0
    demo_core.faults(error_rate=0.0)
    # The key was not used up: the retry does the work for the first time.
    retried = call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-1")
    assert retried.status == 201 and "idempotent-replayed" not in retried.headers


def test_error_after_commit_then_replay_returns_the_committed_record(demo_core):
    demo_core.faults(error_after_commit_rate=1.0)
    failed = call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-1")
    assert failed.status == 500 and failed.json()["error"] == "injected_error_after_commit"
    assert demo_core.stats()["arrangements"] == 1  # the work was done all the same
    demo_core.faults(error_after_commit_rate=0.0)
    replay = call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-1")
    assert replay.status == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["reference"] == "ARR-000001"
    stats = demo_core.stats()
    assert (stats["arrangements"], stats["duplicates"]) == (1, 0)


def test_error_after_commit_without_a_key_duplicates_on_retry(demo_core):
    # The nasty case a caller must guard against: the blind retry makes a second record.
    demo_core.faults(error_after_commit_rate=1.0)
    assert call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE).status == 500
    demo_core.faults(error_after_commit_rate=0.0)
    assert call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE).status == 201
    stats = demo_core.stats()
    assert (stats["arrangements"], stats["duplicates"], stats["unkeyed"]) == (2, 1, 2)


def test_timeout_hangs_past_the_client_timeout_and_then_does_the_work(demo_core):
    demo_core.faults(timeout_rate=1.0, hang_seconds=0.6)
    with pytest.raises(HttpFailure) as failure:
        call(demo_core, "POST", "/accounts/A/notes", body={"text": "n"}, key="n-1", timeout=0.2)
    assert failure.value.kind == "timeout"
    time.sleep(0.8)
    assert demo_core.stats()["notes"] == 1
    demo_core.faults(timeout_rate=0.0)
    replay = call(demo_core, "POST", "/accounts/A/notes", body={"text": "n"}, key="n-1")
    assert replay.headers["idempotent-replayed"] == "true"
    assert demo_core.stats()["notes"] == 1


def test_a_hang_shorter_than_the_client_timeout_is_only_slow(demo_core):
    demo_core.faults(timeout_rate=1.0, hang_seconds=0.3)
    answer = call(demo_core, "GET", "/accounts/A", timeout=5)
    assert answer.status == 200 and answer.elapsed_ms >= 300


def test_latency_is_added_to_every_request(demo_core):
    demo_core.faults(latency_ms=250)
    answer = call(demo_core, "GET", "/accounts/A")
    assert answer.status == 200 and answer.elapsed_ms >= 250
    assert http_request("GET", demo_core.url + "/_control/stats").elapsed_ms < 250


def test_down_answers_503_until_it_is_back(demo_core):
    demo_core.faults(down=True)
    answer = call(demo_core, "POST", "/accounts/A/notes", body={"text": "x"}, key="n-1")
    assert answer.status == 503 and answer.json()["error"] == "down"
    assert http_request("GET", demo_core.url + "/healthz").status == 503
    assert demo_core.faults()["down"] is True
    demo_core.faults(down=False)
    assert call(demo_core, "POST", "/accounts/A/notes", body={"text": "x"}, key="n-1").status == 201


def test_seeded_faults_repeat(demo_core):
    def statuses():
        demo_core.faults(error_rate=0.5, seed=42)
        return [call(demo_core, "GET", "/accounts/A").status for _ in range(16)]

    first = statuses()
    assert set(first) == {200, 500}
    assert statuses() == first


def test_invalid_faults_change_nothing(demo_core):
    answer = http_request(
        "POST", demo_core.url + "/_control/faults", json={"error_rate": 2, "latency_ms": 10, "x": 1}
    )
    assert answer.status == 422
    assert set(answer.json()["errors"]) == {"error_rate", "x"}
    assert demo_core.faults()["latency_ms"] == 0


def test_reset_wipes_data_and_faults(demo_core):
    call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-1")
    demo_core.faults(latency_ms=5, down=True)
    demo_core.reset()
    assert demo_core.faults()["down"] is False and demo_core.faults()["latency_ms"] == 0
    stats = demo_core.stats()
    assert stats["arrangements"] == 0 and stats["requests"] == 0
    # The key was wiped with the data, so the same request runs afresh.
    again = call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-1")
    assert again.status == 201 and again.json()["reference"] == "ARR-000001"


# Restarts, stats, errors, logs ----------------------------------------------------------


def test_restart_keeps_data_on_the_same_port(demo_core):
    port = demo_core.port
    created = call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-1").json()
    demo_core.stop()
    with pytest.raises(HttpFailure) as failure:
        call(demo_core, "GET", "/accounts/A", timeout=1)
    assert failure.value.kind == "refused"
    demo_core.restart()
    assert demo_core.port == port
    assert call(demo_core, "GET", "/accounts/A/arrangements/ARR-000001").json() == created
    replay = call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-1")
    assert replay.headers["idempotent-replayed"] == "true"
    following = call(demo_core, "POST", "/accounts/A/arrangements", body=PROMISE, key="k-2")
    assert following.json()["reference"] == "ARR-000002"


def test_stats_count_requests_statuses_and_duplicates(demo_core):
    body = {"amount": "5.00", "currency": "GBP", "provider_reference": "pi_1", "external_id": "e1"}
    call(demo_core, "POST", "/accounts/A/payments", body=body)
    call(demo_core, "POST", "/accounts/A/payments", body=body)
    call(demo_core, "POST", "/accounts/A/payments", body={**body, "external_id": "e2"}, key="k")
    call(demo_core, "POST", "/accounts/A/notes", body={"text": "x", "external_id": "e1"})
    call(demo_core, "GET", "/accounts/A", auth=False)
    stats = demo_core.stats()
    assert stats["requests"] == 5
    assert stats["by_status"] == {"201": 4, "401": 1}
    assert stats["payments"] == 3 and stats["notes"] == 1
    # Only the two unkeyed payments share an external_id within one kind.
    assert stats["duplicates"] == 1
    assert stats["unkeyed"] == 3
    assert set(stats) >= {
        "arrangements",
        "payments",
        "notes",
        "flags",
        "documents",
        "contact_updates",
        "replays",
    }


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [
        ("POST", "/accounts/A/notes", b"{not json", 400, "invalid_json"),
        ("POST", "/accounts/A/notes", b"[1, 2]", 400, "invalid_json"),
        ("GET", "/nowhere", None, 404, "not_found"),
        ("GET", "/accounts/A/loans", None, 404, "not_found"),
        ("GET", "/accounts/A/notes/N/extra", None, 404, "not_found"),
        ("PUT", "/accounts/A/notes", b"{}", 405, "method_not_allowed"),
        ("DELETE", "/accounts/A/notes/NOTE-000001", None, 405, "method_not_allowed"),
    ],
)
def test_bad_requests_get_json_errors(demo_core, method, path, content, status, code):
    answer = http_request(
        method,
        demo_core.url + path,
        content=content,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert answer.status == status
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] == code


def test_wrong_content_type_and_unknown_control_paths(demo_core):
    text = http_request(
        "POST",
        demo_core.url + "/accounts/A/notes",
        content=b"text=hi",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"},
    )
    assert text.status == 415
    assert http_request("GET", demo_core.url + "/_control/nothing").status == 404


def test_one_log_line_per_request_without_bodies(demo_core, caplog):
    with caplog.at_level(logging.INFO, logger="democore"):
        call(demo_core, "POST", "/accounts/A/notes", body={"text": "secret-note-text"})
    lines = [
        record.getMessage()
        for record in caplog.records
        if record.name == "democore" and "/healthz" not in record.getMessage()
    ]
    assert len(lines) == 1
    assert lines[0].startswith("POST /accounts/A/notes 201 ")
    assert "secret-note-text" not in caplog.text


def test_python_m_democore_runs_as_a_process(tmp_path):
    with DemoCore.start_process(db_path=tmp_path / "core.sqlite3", token=TOKEN) as core:
        assert http_request("GET", core.url + "/healthz").status == 200
        created = call(core, "POST", "/accounts/A/notes", body={"text": "kept"}, key="n-1")
        assert created.status == 201
        core.restart()
        assert call(core, "GET", "/accounts/A/notes/NOTE-000001").json() == created.json()
    assert (tmp_path / "core.sqlite3").exists()
