"""The timelines' hash chain (sealed on every insert path, verified by `evidence verify`),
and the evidence bundle: its contents for a full flow, and who may download it."""

from __future__ import annotations

import datetime as dt
import json
from itertools import pairwise

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_q.models import Schedule

from cases.evidence import chains_verify, event_hash, events_seal, evidence_bundle
from cases.models import Case, CaseEvent
from cases.services import case_record_event, case_transition
from channels.consent import consent_revoke
from channels.dispatch import dispatch_until_idle
from staff.models import AuditEntry
from tests import factories
from tests.channels.test_dispatch import queued_case, shipped  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db


def seal() -> int:
    return events_seal(settle_seconds=0)


def chain(case: Case) -> list[CaseEvent]:
    return list(CaseEvent.objects.filter(case=case).order_by("chain_position"))


def assert_chained(case: Case) -> None:
    events = chain(case)
    assert events, "no events"
    previous = ""
    for position, event in enumerate(events, start=1):
        assert event.chain_position == position
        assert event.prev_hash == previous
        assert event.hash == event_hash(
            case_id=case.pk,
            kind=event.kind,
            actor=event.actor,
            data=event.data,
            created_at=event.created_at,
            prev_hash=event.prev_hash,
        )
        previous = event.hash


def verify(*case_ids) -> tuple[int, str]:
    """Run `evidence verify`; return (exit code, output)."""
    from io import StringIO

    out = StringIO()
    try:
        call_command("evidence", "verify", *[str(case_id) for case_id in case_ids], stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def raw(sql: str, params: list) -> None:
    """Tampering as someone with database access would: past the ORM's append-only guard."""
    table = connection.ops.quote_name(CaseEvent._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(sql.format(table=table), params)


# --- sealing on every insert path ----------------------------------------------------------------


def test_events_from_every_insert_path_are_sealed_into_one_chain_per_case(shipped):  # noqa: F811
    # Ingest (COPY on PostgreSQL), outreach (a transition), the dispatcher's batch (COPY
    # again), a single create, and the consent path's bulk_create.
    cases = [queued_case() for _ in range(3)]
    assert dispatch_until_idle(budget_seconds=30).sent == 3
    first = cases[0]
    case_record_event(case=first, kind="agent_note", actor="agent", data={"text": "called"})
    case_transition(case=first, transition="engage")
    consent_revoke(customer=first.customer, channel="email", source="test")
    kinds = set(CaseEvent.objects.filter(case=first).values_list("kind", flat=True))
    assert {"triggered", "outreach_started", "message_sent", "agent_note", "engaged"} <= kinds
    assert "consent_revoked" in kinds
    assert not CaseEvent.objects.exclude(hash="").exists()  # nothing sealed at insert

    sealed = seal()

    assert sealed == CaseEvent.objects.count()
    for case in cases:
        assert_chained(case)
    assert all(report.ok for report in chains_verify())
    assert seal() == 0  # nothing is sealed twice


def test_young_events_wait_for_the_settle_delay_and_a_late_one_joins_the_end(workflow):
    case = factories.case_in_state("outreach")
    seal()
    # A transaction that took a lower id but committed late: its event is still young when
    # the sealer runs, while a later event has settled.
    late = CaseEvent.objects.create(case=case, kind="late", actor="system")
    settled = CaseEvent.objects.create(
        case=case,
        kind="settled",
        actor="system",
        created_at=timezone.now() - dt.timedelta(minutes=5),
    )

    assert events_seal(settle_seconds=60) == 1
    late.refresh_from_db()
    assert late.hash == "" and late.chain_position is None

    assert events_seal(settle_seconds=0) == 1
    late.refresh_from_db()
    settled.refresh_from_db()
    assert (settled.chain_position, late.chain_position) == (3, 4)
    assert late.pk < settled.pk and late.prev_hash == settled.hash
    assert verify(case.pk)[0] == 0


def test_the_append_only_guard_still_refuses_updates_and_deletes(workflow):
    case = factories.case(None)
    seal()
    event = CaseEvent.objects.get(case=case)
    with pytest.raises(RuntimeError):
        CaseEvent.objects.filter(pk=event.pk).update(hash="0" * 64)
    with pytest.raises(RuntimeError):
        event.save()
    with pytest.raises(RuntimeError):
        CaseEvent.objects.filter(pk=event.pk).delete()


def test_the_scheduled_job_and_the_seal_command_seal_what_waits(workflow, settings):
    from io import StringIO

    from cases.jobs import evidence_seal

    settings.EVIDENCE_SETTLE_SECONDS = 0
    factories.case_in_state("outreach")
    assert evidence_seal() == 2
    factories.case_in_state("engaged")
    out = StringIO()
    call_command("evidence", "seal", stdout=out)
    assert out.getvalue().strip() == "Sealed 3 events."


def test_the_sealer_is_scheduled_every_minute():
    schedule = Schedule.objects.get(name="evidence_seal")
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == (
        "cases.jobs.evidence_seal",
        "I",
        1,
    )


# --- evidence verify ---------------------------------------------------------------------------


@pytest.fixture
def sealed_cases(workflow):
    cases = [factories.case_in_state("verified") for _ in range(2)]
    seal()
    return cases


def test_intact_chains_verify_with_exit_code_0(sealed_cases):
    code, output = verify()
    assert code == 0
    assert "Checked 2 chains, 8 events: 0 broken." in output

    code, output = verify(sealed_cases[0].pk)
    head = chain(sealed_cases[0])[-1].hash
    assert code == 0 and f"case {sealed_cases[0].pk}: ok, head {head}" in output


def test_an_edited_event_fails_verify_naming_the_event(sealed_cases):
    victim, bystander = sealed_cases
    edited = chain(victim)[1]
    raw(
        "UPDATE {table} SET data = %s WHERE id = %s",
        [json.dumps({"reason": "changed after the fact"}), edited.pk],
    )

    code, output = verify()

    assert code == 1
    assert f"case {victim.pk}: BROKEN at event {edited.pk} (#2 {edited.kind}" in output
    assert "edited: hash mismatch" in output
    assert str(bystander.pk) not in output
    assert "1 broken" in output


def test_an_edited_event_with_its_hash_recomputed_breaks_the_next_link(sealed_cases):
    victim = sealed_cases[0]
    edited, following = chain(victim)[1:3]
    forged = event_hash(
        case_id=victim.pk,
        kind=edited.kind,
        actor="agent",
        data=edited.data,
        created_at=edited.created_at,
        prev_hash=edited.prev_hash,
    )
    raw("UPDATE {table} SET actor = %s, hash = %s WHERE id = %s", ["agent", forged, edited.pk])

    code, output = verify(victim.pk)

    assert code == 1
    assert f"BROKEN at event {following.pk} (#3" in output
    assert "deleted or reordered: prev_hash mismatch" in output


def test_a_deleted_event_fails_verify(sealed_cases):
    victim = sealed_cases[1]
    deleted, following = chain(victim)[1:3]
    raw("DELETE FROM {table} WHERE id = %s", [deleted.pk])

    code, output = verify(victim.pk)

    assert code == 1
    assert f"BROKEN at event {following.pk} (#3 {following.kind}" in output
    assert "deleted or reordered: prev_hash mismatch: event #2 of the chain is missing" in output


def test_reordered_events_fail_verify(sealed_cases):
    victim = sealed_cases[0]
    second, third = chain(victim)[1:3]
    # Swap their places (through a free position, for the unique constraint).
    raw("UPDATE {table} SET chain_position = 99 WHERE id = %s", [second.pk])
    raw("UPDATE {table} SET chain_position = 2 WHERE id = %s", [third.pk])
    raw("UPDATE {table} SET chain_position = 3 WHERE id = %s", [second.pk])

    code, output = verify(victim.pk)

    assert code == 1
    assert f"BROKEN at event {third.pk} (#2" in output
    assert "prev_hash mismatch" in output


def test_verify_refuses_unknown_cases_and_reports_unsealed_events(sealed_cases):
    assert verify("not-a-uuid")[0] == 2
    code, output = verify("018f0000-0000-7000-8000-000000000000")
    assert code == 2 and "No such case" in output

    case_record_event(case=sealed_cases[0], kind="agent_note", actor="agent")
    code, output = verify()
    assert code == 0
    assert "1 events wait for the sealer" in output


# --- the evidence bundle -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_bundle_of_a_full_flow_holds_the_evidence_and_no_contact_details(demo_core, settings):
    from channels.sequences import sequences_install_shipped
    from miniapp.views import CONSENT_TEXT
    from tests.miniapp.test_flow import choose, open_case, promise, verify_code
    from writeback.models import WritebackTarget

    settings.CORE_API_TOKEN = "test-core-token"
    factories.writeback_target_shipped()
    WritebackTarget.objects.filter(key="core_rest").update(base_url=demo_core.url)
    factories.workflow_shipped("promise_to_pay")
    sequences_install_shipped()
    opened = open_case("promise_to_pay")
    browser = Client()
    browser.get(opened.url(), HTTP_USER_AGENT="TestPhone/1.0")
    verify_code(browser, opened, "promise_to_pay")
    chose = promise(opened)
    choose(browser, opened, "promise_to_pay", chose)
    browser.post(opened.url("review"))
    case = opened.reload()
    assert case.state == "resolved"

    bundle = evidence_bundle(case=case)

    assert bundle["chain"]["verified"] is True
    timeline = bundle["timeline"]
    assert bundle["chain"]["events_unsealed"] == 0
    assert bundle["chain"]["events_sealed"] == len(timeline)
    assert bundle["chain"]["head_hash"] == timeline[-1]["hash"] == chain(case)[-1].hash
    assert [row["position"] for row in timeline] == list(range(1, len(timeline) + 1))
    assert all(row["prev_hash"] == before["hash"] for before, row in pairwise(timeline))

    assert bundle["trigger"]["event_id"] == case.event_id
    assert bundle["trigger"]["data"] == case.data
    assert bundle["trigger"]["body_sha256"] == case.body_fingerprint
    assert bundle["offer"]["policy"] == {"workflow": "promise_to_pay", "version": 1}
    assert "promise_to_pay" in [item["action"] for item in bundle["offer"]["actions"]]

    [code_message] = [m for m in bundle["messages"] if m["purpose"] == "code"]
    assert code_message["status"] == "sent" and "••••••" in code_message["body"]
    assert code_message["to"] == "•••• 456"

    identity = [row["kind"] for row in bundle["identity"]]
    assert "code_sent" in identity and "verified" in identity
    assert [row["data"]["action"] for row in bundle["choices"] if row["kind"] == "option_chosen"]
    [consent] = bundle["consent"]
    assert consent["data"]["consent_text"] == CONSENT_TEXT.format(brand=settings.BRAND_NAME)
    assert consent["data"]["identity"] == ["otp"]
    assert consent["hash"]

    [submission] = bundle["submissions"]
    assert submission["values"] == chose
    assert submission["consent"]["consent_text"] == consent["data"]["consent_text"]
    writeback = submission["writeback"]
    assert writeback["state"] == "confirmed"
    for operation in writeback["operations"]:
        assert operation["status"] == "confirmed"
        request = operation["request"]
        assert request["idempotency_key"] == f"closeloop:{submission['outcome']}:{operation['key']}"
        assert request["matches_sent"] is True
        assert operation["sent"]["body_sha256"] == request["body_sha256"]
        assert operation["acknowledgement"]["target_reference"]
        assert operation["acknowledgement"]["confirmed_at"]

    assert set(submission["consent"]) == {"consent_text", "consented_at", "identity"}
    # The timeline is given whole, as hashed (the engaged event keeps the browser's name);
    # contact details appear nowhere.
    dumped = json.dumps(bundle, ensure_ascii=False)
    for personal in ("+447911123456", "ada@example.com", "Lovelace"):
        assert personal not in dumped, personal
    assert opened.token not in dumped


# --- downloads: API and admin -----------------------------------------------------------------


@pytest.fixture
def owned_case(api, workflow):
    case = factories.case(api.api_client)
    case_transition(case=case, transition="start_outreach")
    return case


def test_api_owner_downloads_the_bundle_as_json_and_as_a_page(api, owned_case):
    response = api.get(f"/api/v1/cases/{owned_case.pk}/evidence/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"] == (
        f'attachment; filename="evidence-{owned_case.pk}.json"'
    )
    assert response["Cache-Control"] == "no-store, max-age=0"
    body = response.json()
    assert body["case"]["id"] == str(owned_case.pk)
    assert body["chain"]["verified"] is True
    head = body["chain"]["head_hash"]
    assert head == chain(owned_case)[-1].hash

    page = api.get(f"/api/v1/cases/{owned_case.pk}/evidence/?format=html")
    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assert head in html and "hash chain verifies" in html

    entry = AuditEntry.objects.filter(action="evidence_downloaded").latest("pk")
    assert entry.target_id == str(owned_case.pk) and entry.username.startswith("api:")


def test_api_other_client_unknown_case_and_bad_format_are_4xx(api, owned_case):
    _, other_key = factories.api_client()
    from rest_framework.test import APIClient

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    response = other.get(f"/api/v1/cases/{owned_case.pk}/evidence/")
    assert response.status_code == 404
    assert response.json() == {"detail": "No such case."}
    assert other.get(f"/api/v1/cases/{owned_case.pk}/evidence/?format=html").status_code == 404
    assert api.get("/api/v1/cases/not-a-case/evidence/").status_code == 404

    bad = api.get(f"/api/v1/cases/{owned_case.pk}/evidence/?format=pdf")
    assert bad.status_code == 400
    assert bad.json()["errors"] == {"format": ["Must be json or html."]}
    assert APIClient().get(f"/api/v1/cases/{owned_case.pk}/evidence/").status_code == 401


def test_the_api_schema_describes_the_evidence_endpoint(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/cases/{case_id}/evidence/"]["get"]
    assert operation["operationId"] == "cases_evidence"
    assert {"200", "400", "404"} <= set(operation["responses"])
    assert [p["name"] for p in operation["parameters"] if p["in"] == "query"] == ["format"]


@pytest.fixture
def staff_client(workflow):
    def make(*, evidence: bool) -> Client:
        person = factories.user()
        person.user_permissions.add(Permission.objects.get(codename="view_case"))
        if evidence:
            person.user_permissions.add(Permission.objects.get(codename="view_evidence"))
        browser = Client()
        browser.force_login(person)
        return browser

    return make


def test_admin_download_needs_the_view_evidence_permission(staff_client, workflow):
    case = factories.case_in_state("engaged")
    evidence_url = f"/admin/cases/case/{case.pk}/evidence/"
    change_url = f"/admin/cases/case/{case.pk}/change/"

    plain = staff_client(evidence=False)
    assert plain.get(change_url).status_code == 200
    assert evidence_url.encode() not in plain.get(change_url).content
    assert plain.get(evidence_url).status_code == 403

    auditor = staff_client(evidence=True)
    assert evidence_url.encode() in auditor.get(change_url).content
    page = auditor.get(evidence_url)
    assert page.status_code == 200 and b"hash chain verifies" in page.content
    download = auditor.get(evidence_url + "?format=json")
    assert download.status_code == 200
    assert download["Content-Disposition"] == f'attachment; filename="evidence-{case.pk}.json"'
    assert json.loads(download.content)["chain"]["head_hash"] == chain(case)[-1].hash
    assert auditor.get(evidence_url + "?format=pdf").status_code == 400
    missing = "/admin/cases/case/018f0000-0000-7000-8000-000000000000/evidence/"
    assert auditor.get(missing).status_code == 404
    assert AuditEntry.objects.filter(action="evidence_downloaded").count() == 2


def test_bundle_command_writes_json_and_html(workflow, tmp_path):
    from io import StringIO

    case = factories.case_in_state("verified")
    out = StringIO()
    call_command("evidence", "bundle", str(case.pk), "--out", str(tmp_path), stdout=out)

    data = json.loads((tmp_path / f"evidence-{case.pk}.json").read_text())
    html = (tmp_path / f"evidence-{case.pk}.html").read_text()
    assert data["chain"]["verified"] and data["chain"]["head_hash"] in html
    assert f"Head hash {data['chain']['head_hash']}; the chain verifies." in out.getvalue()
    with pytest.raises(CommandError) as missing_folder:
        call_command("evidence", "bundle", str(case.pk), "--out", str(tmp_path / "nope"))
    assert missing_folder.value.returncode == 2


# --- concurrency (PostgreSQL: SQLite serialises writers) ---------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("queued_jobs")
def test_sealers_racing_each_other_and_new_events_leave_every_chain_whole(workflow):
    from tests.cases.test_concurrency import run_together

    cases = [factories.case_in_state("outreach") for _ in range(6)]

    def add_events() -> int:
        for round_number in range(20):
            for case in cases:
                case_record_event(case=case, kind="note", actor="system", data={"n": round_number})
        return 0

    def sealer() -> int:
        return sum(events_seal(settle_seconds=0, batch=7) for _ in range(15))

    results = run_together([sealer, sealer, add_events, sealer])
    assert not [result for result in results if isinstance(result, BaseException)], results
    seal()

    assert not CaseEvent.objects.filter(hash="").exists()
    for case in cases:
        assert_chained(case)
    assert verify()[0] == 0
