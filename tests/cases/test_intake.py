"""File intake: `manage.py triggers import` and the drop-folder job (cases/intake.py)."""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django_q.models import Schedule

from cases.intake import intake_file_import, intake_folder_scan
from cases.jobs import intake_scan
from cases.models import ApiClient, Case, Customer
from policies.models import Workflow
from tests import factories

pytestmark = pytest.mark.django_db

EXAMPLES = Path(settings.BASE_DIR) / "docs" / "examples"
MAPPING = """
columns:
  event_id: ref
  customer.external_id: cust_no
  customer.name: full_name
  customer.phone: mobile
  customer.flags: flags
  data.account_reference: account
  data.balance: amount_due
  data.due_date: {column: due, date_format: "%d/%m/%Y"}
  data.days_past_due: dpd
constants:
  data.currency: GBP
  customer.consent.sms: true
"""
HEADER = "ref,cust_no,full_name,mobile,flags,account,amount_due,due,dpd"
GOOD_ROW = (
    "R-1,C-1,Ada Lovelace,+447911123456,vulnerable; complaint_open,ACC-1,420.50,01/11/2026,22"
)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def run_import(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("triggers", "import", *map(str, args), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def report_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# --- the command ----------------------------------------------------------------------------


def test_csv_with_mapping_renames_formats_dates_and_adds_constants(workflow, tmp_path):
    mapping = write(tmp_path, "mapping.yaml", MAPPING)
    data = write(tmp_path, "arrears.csv", f"{HEADER}\n{GOOD_ROW}\n")

    out, err = run_import(data, "--workflow", "promise_to_pay", "--mapping", mapping)

    case = Case.objects.get(event_id="R-1")
    assert case.api_client.name == "file-intake"
    assert case.data == {
        "account_reference": "ACC-1",
        "balance": "420.50",
        "currency": "GBP",
        "due_date": "2026-11-01",
        "days_past_due": 22,
    }
    customer = case.customer
    assert (customer.external_id, customer.name, customer.phone) == (
        "C-1",
        "Ada Lovelace",
        "+447911123456",
    )
    assert customer.flags == ["complaint_open", "vulnerable"]
    assert customer.consent["sms"]["value"] is True
    assert "1 row for workflow promise_to_pay" in out
    assert "1 created, 0 existing, 0 rejected" in out
    assert "1/1 rows, 1 created, 0 existing, 0 rejected" in err
    assert not (tmp_path / "arrears.csv.errors.csv").exists()


def test_csv_without_mapping_names_columns_by_field_path(workflow, tmp_path):
    data = write(
        tmp_path,
        "plain.csv",
        "\ufeffevent_id,customer.external_id,customer.consent.sms,customer.consent.sms.timestamp,"
        "customer.consent.email,"
        "data.account_reference,data.balance,data.currency,data.due_date,data.days_past_due,"
        "data.minimum_payment\n"
        "E-1,C-1,yes,2026-03-01T09:30:00Z,0,ACC-1,99.9,gbp,2026-11-01,7,\n",
    )

    run_import(data, "--workflow", "promise_to_pay")

    case = Case.objects.get(event_id="E-1")
    # An empty cell is left out, not sent as "": minimum_payment is optional.
    assert case.data == {
        "account_reference": "ACC-1",
        "balance": "99.9",
        "currency": "GBP",
        "due_date": "2026-11-01",
        "days_past_due": 7,
    }
    # With a timestamp column, the boolean column is the consent's value.
    assert case.customer.consent["sms"]["value"] is True
    assert case.customer.consent["sms"]["timestamp"] == "2026-03-01T09:30:00+00:00"
    assert case.customer.consent["email"]["value"] is False


def test_csv_cells_are_typed_by_the_contract(db, tmp_path):
    # Only the contract matters here, so no launchable workflow (actions, routes) is built.
    Workflow.objects.create(
        key="typed_fields",
        name="Typed fields",
        status=Workflow.Status.ACTIVE,
        contract=[
            {"name": "opted_in", "type": "boolean"},
            {"name": "documents", "type": "list", "choices": ["id", "address"]},
            {"name": "term_months", "type": "choice", "choices": [3, 6, 12]},
            {"name": "count", "type": "integer"},
            {"name": "seen_at", "type": "datetime"},
        ],
    )
    data = write(
        tmp_path,
        "typed.csv",
        "event_id,customer.external_id,customer.address.lines,data.opted_in,data.documents,"
        "data.term_months,data.count,data.seen_at\n"
        'T-1,C-1,"1 High St; Flat 2",Yes,id; address,6,-3,2026-11-01T09:30:00+01:00\n',
    )

    run_import(data, "--workflow", "typed_fields")

    case = Case.objects.get(event_id="T-1")
    assert case.data == {
        "opted_in": True,
        "documents": ["id", "address"],
        "term_months": 6,
        "count": -3,
        "seen_at": "2026-11-01T08:30:00Z",
    }
    assert case.customer.address == {"lines": ["1 High St", "Flat 2"]}


def test_json_lines_nested_bodies_and_flat_dotted_keys(workflow, tmp_path):
    nested = factories.trigger_body(event_id="J-1")
    del nested["workflow"]
    flat = {
        "event_id": "J-2",
        "customer.external_id": "C-2",
        "customer.consent.sms": True,
        "data.account_reference": "ACC-2",
        "data.balance": "10.00",
        "data.currency": "EUR",
        "data.due_date": "2026-10-01",
        "data.days_past_due": 5,
    }
    data = write(tmp_path, "feed.jsonl", f"{json.dumps(nested)}\n\n{json.dumps(flat)}\n")

    out, _ = run_import(data, "--workflow", "promise_to_pay")

    assert "2 created" in out
    assert Case.objects.get(event_id="J-1").data["balance"] == "420.50"
    j2 = Case.objects.get(event_id="J-2")
    assert j2.data["currency"] == "EUR"
    assert j2.customer.consent["sms"]["value"] is True


def test_json_lines_with_a_json_mapping(workflow, tmp_path):
    mapping = write(
        tmp_path,
        "mapping.json",
        json.dumps(
            {
                "columns": {
                    "event_id": "id",
                    "customer.external_id": "customer_id",
                    "data.account_reference": "account",
                    "data.balance": "owed",
                    "data.due_date": {"column": "due", "date_format": "%m/%d/%Y"},
                    "data.days_past_due": "dpd",
                },
                "constants": {"data.currency": "USD"},
            }
        ),
    )
    line = {"id": "N-1", "customer_id": "C-9", "account": "A-9", "owed": 12.5, "due": "11/30/2026"}
    data = write(tmp_path, "feed.ndjson", json.dumps({**line, "dpd": 3}) + "\n")

    run_import(data, "--workflow", "promise_to_pay", "--mapping", mapping)

    case = Case.objects.get(event_id="N-1")
    assert case.data["due_date"] == "2026-11-30"
    assert case.data["balance"] == "12.5"
    assert case.data["days_past_due"] == 3


def test_rejected_rows_are_reported_and_the_good_rows_imported(workflow, tmp_path, row_counts):
    mapping = write(tmp_path, "mapping.yaml", MAPPING)
    rows = [
        GOOD_ROW,
        "R-2,C-2,Bad Date,+447911123457,,ACC-2,10.00,31/02/2026,1",
        "R-3,C-3,Bad Number,+447911123458,,ACC-3,10.00,01/11/2026,many",
        "R-4,C-4,Bad Phone,07911 123456,,ACC-4,10.00,01/11/2026,1",
        "R-5,C-5,Too short",
        "R-6,C-6,Bad Balance,+447911123456,,ACC-6,-5,01/11/2026,1",
    ]
    data = write(tmp_path, "arrears.csv", HEADER + "\n" + "\n".join(rows) + "\n")

    with pytest.raises(
        CommandError, match="5 of 6 rows rejected and not stored; the other rows were stored"
    ):
        run_import(data, "--workflow", "promise_to_pay", "--mapping", mapping)

    assert list(Case.objects.values_list("event_id", flat=True)) == ["R-1"]
    # A rejected row writes nothing at all, not even its customer.
    assert row_counts() == {"Customer": 1, "Case": 1, "CaseEvent": 1}
    report = report_rows(tmp_path / "arrears.csv.errors.csv")
    assert [(r["row"], r["event_id"], r["status"], r["field"], r["column"]) for r in report] == [
        ("3", "R-2", "invalid", "data.due_date", "due"),
        ("4", "R-3", "invalid", "data.days_past_due", "dpd"),
        ("5", "R-4", "invalid", "customer.phone", "mobile"),
        ("6", "", "invalid", "", ""),
        ("7", "R-6", "invalid", "data.balance", "amount_due"),
    ]
    messages = [r["message"] for r in report]
    assert messages[0] == "Must be a date in the format %d/%m/%Y, e.g. 23/11/2026."
    assert messages[1] == "Must be a whole number, e.g. 22."
    assert "E.164" in messages[2]
    assert messages[3] == "The row has 3 cells; the header has 9 columns."
    assert messages[4] == "Must be greater than 0."


def test_json_lines_that_cannot_be_read_are_reported_by_line(workflow, tmp_path):
    good = factories.trigger_body(event_id="J-1")
    lines = [
        json.dumps(good),
        "{not json",
        "[1, 2]",
        json.dumps({"event_id": "J-4", "customer.external_id": "C-4", "colour": "red"}),
        json.dumps({**factories.trigger_body(event_id="J-5"), "workflow": "failed_payment"}),
    ]
    data = write(tmp_path, "feed.jsonl", "\n".join(lines) + "\n")

    with pytest.raises(CommandError, match="4 of 5 rows rejected"):
        run_import(data, "--workflow", "promise_to_pay")

    report = report_rows(tmp_path / "feed.jsonl.errors.csv")
    assert [(r["row"], r["event_id"], r["field"]) for r in report] == [
        ("2", "", ""),
        ("3", "", ""),
        ("4", "J-4", ""),
        ("5", "J-5", "workflow"),
    ]
    assert report[0]["message"].startswith("The line is not valid JSON")
    assert report[1]["message"] == "Each line must be a JSON object."
    assert report[2]["message"].startswith("Key(s) colour: not trigger fields.")
    assert "the line names 'failed_payment'" in report[3]["message"]
    assert list(Case.objects.values_list("event_id", flat=True)) == ["J-1"]


def test_reusing_an_event_id_with_another_body_is_a_conflict(workflow, tmp_path):
    mapping = write(tmp_path, "mapping.yaml", MAPPING)
    data = write(tmp_path, "arrears.csv", f"{HEADER}\n{GOOD_ROW}\n")
    run_import(data, "--workflow", "promise_to_pay", "--mapping", mapping)
    write(tmp_path, "arrears.csv", f"{HEADER}\n{GOOD_ROW.replace('420.50', '400.00')}\n")

    with pytest.raises(
        CommandError, match="1 of 1 row rejected and not stored; nothing was stored"
    ):
        run_import(data, "--workflow", "promise_to_pay", "--mapping", mapping)

    [problem] = report_rows(tmp_path / "arrears.csv.errors.csv")
    assert (problem["status"], problem["field"], problem["column"]) == (
        "conflict",
        "event_id",
        "ref",
    )
    assert "fields that differ: data.balance" in problem["message"]
    assert Case.objects.get().data["balance"] == "420.50"


def test_reimporting_a_file_is_harmless(workflow, tmp_path):
    mapping = write(tmp_path, "mapping.yaml", MAPPING)
    bad = "R-2,C-2,Bad Date,+447911123457,,ACC-2,10.00,31/02/2026,1"
    data = write(tmp_path, "arrears.csv", f"{HEADER}\n{GOOD_ROW}\n{bad}\n")
    with pytest.raises(CommandError):
        run_import(data, "--workflow", "promise_to_pay", "--mapping", mapping)
    assert (tmp_path / "arrears.csv.errors.csv").exists()
    write(tmp_path, "arrears.csv", f"{HEADER}\n{GOOD_ROW}\n{bad.replace('31/02', '28/02')}\n")

    out, _ = run_import(data, "--workflow", "promise_to_pay", "--mapping", mapping)
    again, _ = run_import(data, "--workflow", "promise_to_pay", "--mapping", mapping)

    assert "1 created, 1 existing, 0 rejected" in out
    assert "0 created, 2 existing, 0 rejected" in again
    assert Case.objects.count() == 2
    # The report of the failed run is stale once the file imports cleanly.
    assert not (tmp_path / "arrears.csv.errors.csv").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("data.balance: amount_due", "data.balanse: amount_due"), "Did you mean data.balance?"),
        (("%d/%m/%Y", "dd/mm/yyyy"), "'dd/mm/yyyy' does not read a whole date"),
        (("%d/%m/%Y", "%d/%m"), "does not read a whole date (day, month and year)"),
        (("data.due_date: {column: due", "data.due_date: {column: due_dt"), "no column 'due_dt'"),
        (
            ("  data.days_past_due: dpd\n", ""),
            "given no column or constant in the mapping: data.days_past_due.",
        ),
        (
            ("data.balance: amount_due", 'data.balance: {column: amount_due, date_format: "%Y"}'),
            "date_format applies only to date fields",
        ),
        (("data.currency: GBP", "data.currency: GBX"), "constants.data.currency: Must be an ISO"),
        (("customer.consent.sms: true", "customer.consent.sms: maybe"), "Must be true or false"),
        (("constants:", "workflow: promise_to_pay\nconstants:"), "unknown section 'workflow'"),
        (("  event_id: ref\n", "  event_id: ref\n  workflow: flow\n"), "given by --workflow"),
    ],
)
def test_an_unusable_mapping_imports_nothing(workflow, tmp_path, row_counts, change, message):
    mapping = write(tmp_path, "mapping.yaml", MAPPING.replace(*change))
    data = write(tmp_path, "arrears.csv", f"{HEADER}\n{GOOD_ROW}\n")

    with pytest.raises(CommandError) as raised:
        run_import(data, "--workflow", "promise_to_pay", "--mapping", mapping)

    assert message in str(raised.value)
    assert "nothing was stored" in str(raised.value)
    assert row_counts() == {"Customer": 0, "Case": 0, "CaseEvent": 0}
    assert not ApiClient.objects.exists()
    assert not (tmp_path / "arrears.csv.errors.csv").exists()


@pytest.mark.parametrize(
    ("name", "content", "args", "message"),
    [
        ("a.csv", b"event_id\nE-1\n", ["--workflow", "nope"], "No active workflow with key 'nope'"),
        ("a.csv", b"", ["--workflow", "promise_to_pay"], "a CSV file needs a header row"),
        ("a.csv", b"event_id\n\xff\n", ["--workflow", "promise_to_pay"], "is not UTF-8 text"),
        ("a.txt", b"event_id\n", ["--workflow", "promise_to_pay"], "use a .csv, .jsonl or .ndjson"),
        (
            "a.csv",
            b"event_id,customer.external_id,data.balance,balance\n",
            ["--workflow", "promise_to_pay"],
            "Column(s) balance: not trigger fields.",
        ),
        (
            "a.csv",
            b"event_id,customer.external_id\nE-1,C-1\n",
            ["--workflow", "promise_to_pay"],
            "no column in the file: data.account_reference, data.balance, data.currency,",
        ),
        (
            "a.jsonl",
            b"{}\n",
            ["--workflow", "promise_to_pay", "--client", "core-banking"],
            "No API client named 'core-banking'",
        ),
    ],
)
def test_an_unusable_file_imports_nothing(
    workflow, tmp_path, row_counts, name, content, args, message
):
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(CommandError) as raised:
        run_import(path, *args)

    assert message in str(raised.value)
    assert row_counts() == {"Customer": 0, "Case": 0, "CaseEvent": 0}


def test_a_named_client_shares_idempotency_with_its_api_calls(workflow, api, tmp_path):
    body = factories.trigger_body()
    assert api.post("/api/v1/triggers/", body, format="json").status_code == 201
    del body["workflow"]
    data = write(tmp_path, "feed.jsonl", json.dumps(body) + "\n")

    out, _ = run_import(data, "--workflow", "promise_to_pay", "--client", api.api_client.name)

    assert "0 created, 1 existing" in out
    assert Case.objects.count() == 1


def test_progress_is_shown_every_thousand_rows(workflow, tmp_path):
    lines = [f"E-{n},C-{n},ACC-{n},1.00,GBP,2026-11-01,1" for n in range(1200)]
    header = (
        "event_id,customer.external_id,data.account_reference,data.balance,data.currency,"
        "data.due_date,data.days_past_due"
    )
    data = write(tmp_path, "big.csv", header + "\n" + "\n".join(lines) + "\n")

    _, err = run_import(data, "--workflow", "promise_to_pay")

    assert err.splitlines() == [
        "1000/1200 rows, 1000 created, 0 existing, 0 rejected",
        "1200/1200 rows, 1200 created, 0 existing, 0 rejected",
    ]


def test_progress_counts_rejected_rows_per_chunk(workflow, tmp_path):
    mapping = write(tmp_path, "mapping.yaml", MAPPING)
    bad = "R-9,C-9,Bad,+447911123457,,ACC-9,10.00,1 Nov,1"
    rows = [GOOD_ROW.replace("R-1", f"R-{n}") for n in range(1, 4)]
    data = write(tmp_path, "arrears.csv", "\n".join([HEADER, rows[0], bad, *rows[1:]]) + "\n")
    seen: list[str] = []

    summary = intake_file_import(
        path=data,
        workflow_key="promise_to_pay",
        mapping_path=mapping,
        progress=lambda s: seen.append(s.progress_line()),
        chunk_rows=2,
    )

    assert seen == [
        "2/4 rows, 1 created, 0 existing, 1 rejected",
        "4/4 rows, 3 created, 0 existing, 1 rejected",
    ]
    assert summary.counts == {"created": 3, "existing": 0, "invalid": 1, "conflict": 0}
    assert summary.report_path == tmp_path / "arrears.csv.errors.csv"


def test_the_documented_example_imports(workflow, tmp_path):
    report = tmp_path / "report.csv"
    out, _ = run_import(
        EXAMPLES / "promise_to_pay.csv",
        "--workflow",
        "promise_to_pay",
        "--mapping",
        EXAMPLES / "promise_to_pay.mapping.yaml",
        "--report",
        report,
    )

    assert "3 created, 0 existing, 0 rejected" in out
    assert not report.exists()
    ada = Customer.objects.get(external_id="C-10023")
    assert ada.timezone == "Europe/London"
    assert ada.date_of_birth_hash
    assert Case.objects.get(event_id="ARR-2026-11-0002").data["due_date"] == "2026-10-15"


# --- the drop folder ------------------------------------------------------------------------


@pytest.fixture
def drop(tmp_path, workflow):
    """INTAKE_DIR with a promise_to_pay folder holding the documented mapping."""
    folder = tmp_path / "promise_to_pay"
    folder.mkdir()
    shutil.copy(EXAMPLES / "promise_to_pay.mapping.yaml", folder / "mapping.yaml")
    with override_settings(INTAKE_DIR=str(tmp_path), INTAKE_SETTLE_SECONDS=0):
        yield folder


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_drop_folder_imports_each_complete_file_once(drop):
    shutil.copy(EXAMPLES / "promise_to_pay.csv", drop / "arrears.csv")
    shutil.copy(EXAMPLES / "promise_to_pay.csv", drop / "next.csv.part")
    shutil.copy(EXAMPLES / "promise_to_pay.csv", drop / ".next.csv")

    [outcome] = intake_scan()
    assert intake_scan() == []

    assert outcome["outcome"] == "done"
    assert outcome["counts"]["created"] == 3
    [done] = names(drop / "done")
    assert done.endswith("-arrears.csv")
    assert names(drop / "processing") == []
    assert names(drop) == [".next.csv", "done", "mapping.yaml", "next.csv.part", "processing"]
    assert Case.objects.count() == 3


def test_drop_folder_files_rejected_rows_in_failed_with_their_report(drop):
    text = (EXAMPLES / "promise_to_pay.csv").read_text(encoding="utf-8")
    (drop / "arrears.csv").write_text(text.replace("15/10/2026", "2026-10-15"), encoding="utf-8")

    [outcome] = intake_scan()

    assert outcome["outcome"] == "failed"
    [data, report] = names(drop / "failed")
    assert data.endswith("-arrears.csv")
    assert report == f"{data}.errors.csv"
    [problem] = report_rows(drop / "failed" / report)
    assert (problem["row"], problem["field"]) == ("3", "data.due_date")
    assert Case.objects.count() == 2


def test_drop_folder_files_an_unusable_file_in_failed_with_a_note(drop, tmp_path):
    other = tmp_path / "no_such_workflow"
    other.mkdir()
    (other / "feed.jsonl").write_text("{}\n", encoding="utf-8")
    (drop / "mapping.json").write_text("{}", encoding="utf-8")
    shutil.copy(EXAMPLES / "promise_to_pay.csv", drop / "arrears.csv")

    outcomes = intake_scan()

    assert [o["outcome"] for o in outcomes] == ["failed", "failed"]
    [data, note] = names(other / "failed")
    assert note == f"{data}.error.txt"
    assert "No active workflow with key 'no_such_workflow'" in (other / "failed" / note).read_text()
    [_, note] = names(drop / "failed")
    assert "keep one mapping file" in (drop / "failed" / note).read_text()
    assert Case.objects.count() == 0


def test_drop_folder_waits_for_a_file_to_settle(drop):
    shutil.copy(EXAMPLES / "promise_to_pay.csv", drop / "arrears.csv")

    with override_settings(INTAKE_SETTLE_SECONDS=3600):
        assert intake_scan() == []

    assert "arrears.csv" in names(drop)


def test_drop_folder_redrives_a_claim_left_by_a_stopped_worker(drop):
    processing = drop / "processing"
    processing.mkdir()
    shutil.copy(EXAMPLES / "promise_to_pay.csv", processing / "20200101T000000Z-old.csv")
    (processing / "20200101T000000Z-old.csv.errors.csv").write_text("partial", encoding="utf-8")
    fresh = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    shutil.copy(EXAMPLES / "promise_to_pay.csv", processing / f"{fresh}-running.csv")
    # The stopped worker stored the first row already; a re-drive finds it as existing.
    intake_file_import(
        path=EXAMPLES / "promise_to_pay.csv",
        workflow_key="promise_to_pay",
        mapping_path=drop / "mapping.yaml",
        report_path=drop.parent / "unused.csv",
    )

    [outcome] = intake_scan()

    assert outcome["outcome"] == "done"
    assert outcome["counts"] == {"created": 0, "existing": 3, "invalid": 0, "conflict": 0}
    [done] = names(drop / "done")
    assert done.endswith("-old.csv") and not done.startswith("20200101")
    # A claim younger than the job timeout belongs to a worker that may still be running.
    assert names(processing) == [f"{fresh}-running.csv"]


def test_drop_folder_skips_a_file_another_worker_claimed(drop, monkeypatch):
    shutil.copy(EXAMPLES / "promise_to_pay.csv", drop / "arrears.csv")

    def taken_by_another_worker(source, target):
        raise FileNotFoundError(source)

    monkeypatch.setattr(os, "rename", taken_by_another_worker)
    assert intake_scan() == []
    assert Case.objects.count() == 0


def test_drop_folder_job_does_nothing_without_intake_dir(workflow):
    with override_settings(INTAKE_DIR=""):
        assert intake_scan() == []


def test_the_drop_folder_job_is_scheduled_every_minute():
    schedule = Schedule.objects.get(name="intake_scan")
    assert schedule.func == "cases.jobs.intake_scan"
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 1, -1)

    migration = importlib.import_module("cases.migrations.0003_intake_scan_schedule")
    migration.schedule_remove(django_apps, None)
    assert not Schedule.objects.filter(name="intake_scan").exists()
    migration.schedule_create(django_apps, None)
    migration.schedule_create(django_apps, None)
    assert Schedule.objects.filter(name="intake_scan").count() == 1


def test_drop_folder_claims_nothing_new_once_its_time_is_up(drop):
    shutil.copy(EXAMPLES / "promise_to_pay.csv", drop / "arrears.csv")

    outcomes = intake_folder_scan(
        root=drop.parent, settle_seconds=0, stale_seconds=180, claim_until=time.monotonic() - 1
    )

    assert outcomes == []
    assert "arrears.csv" in names(drop)


def test_drop_folder_leaves_a_file_in_processing_when_the_import_breaks(drop, monkeypatch):
    shutil.copy(EXAMPLES / "promise_to_pay.csv", drop / "arrears.csv")

    def database_down(**kwargs):
        raise RuntimeError("connection refused")

    monkeypatch.setattr("cases.intake.triggers_ingest", database_down)
    [outcome] = intake_scan()

    assert outcome["outcome"] == "retry"
    [left] = names(drop / "processing")
    assert left.endswith("-arrears.csv")
    assert names(drop / "done") == names(drop / "failed") == []
