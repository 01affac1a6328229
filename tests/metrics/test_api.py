"""Metrics API and the streamed exports: auth, field errors, formats, own cases only."""

from __future__ import annotations

import csv
import io
import json

import pytest
from rest_framework.test import APIClient

from metrics import selectors
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(dataset, client_and_key):
    _, raw_key = client_and_key
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return http


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


@pytest.mark.parametrize("url", ["/api/v1/metrics/", "/api/v1/events/", "/api/v1/cases/export/"])
def test_key_required(db, url):
    assert APIClient().get(url).status_code == 401
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION="Bearer clk_not-a-key")
    assert http.get(url).status_code == 401


def test_metrics_json(owner, dataset):
    since = dataset["w1"].date().isoformat()
    answer = owner.get("/api/v1/metrics/", {"workflow": "promise_to_pay", "since": since})
    assert answer.status_code == 200
    body = answer.json()
    assert body["workflow"] == "promise_to_pay"
    assert body["since"] == f"{since}T00:00:00Z"
    assert body["metrics"]["overall"]["cases"] == 7
    assert body["metrics"]["overall"]["completion_rate"] == 0.4286
    assert [step["cases"] for step in body["funnel"]["overall"]] == [7, 6, 6, 5, 3, 3, 3, 2]
    assert len(body["cohorts"]) == 2
    assert body["readiness"][0]["workflow"] == "promise_to_pay"
    by_segment = owner.get("/api/v1/metrics/", {"since": since, "by": "segment"}).json()
    assert [row["group"] for row in by_segment["metrics"]["breakdown"]["rows"]] == [
        "business",
        "retail",
        "vip",
    ]


def test_metrics_cover_only_the_callers_cases(dataset):
    _, other_key = factories.api_client()
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    since = dataset["w1"].date().isoformat()
    body = http.get("/api/v1/metrics/", {"since": since}).json()
    assert body["metrics"]["overall"]["cases"] == 0
    assert body["readiness"] == []
    assert _body(http.get("/api/v1/events/")) == b""
    assert _body(http.get("/api/v1/cases/export/")).decode().splitlines() == [
        ",".join(selectors.CASE_COLUMNS)
    ]


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"since": "yesterday"}, "since", "since must be a date"),
        ({"until": "2026-13-45"}, "until", "until must be a date"),
        ({"since": "2026-03-02", "until": "2026-03-01"}, "since", "since must be before until"),
        ({"workflow": "nope"}, "workflow", "No workflow has the key 'nope'"),
        ({"by": "colour"}, "by", "by must be one of channel"),
    ],
)
def test_metrics_bad_parameters(owner, params, field, message):
    answer = owner.get("/api/v1/metrics/", params)
    assert answer.status_code == 400
    assert message in answer.json()["errors"][field][0]


@pytest.mark.parametrize(
    ("url", "params", "field"),
    [
        ("/api/v1/events/", {"format": "xml"}, "format"),
        ("/api/v1/events/", {"after": "-3"}, "after"),
        ("/api/v1/events/", {"after": "ten"}, "after"),
        ("/api/v1/events/", {"since": "soon"}, "since"),
        ("/api/v1/cases/export/", {"after": "12"}, "after"),
        ("/api/v1/cases/export/", {"format": "json"}, "format"),
    ],
)
def test_export_bad_parameters(owner, url, params, field):
    answer = owner.get(url, params)
    assert answer.status_code == 400
    assert field in answer.json()["errors"]


def test_events_ndjson_in_pages(owner, dataset, monkeypatch):
    monkeypatch.setattr(selectors, "EXPORT_PAGE", 5)  # many pages from a small data set
    answer = owner.get("/api/v1/events/")
    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in _body(answer).decode().splitlines()]
    ids = [int(line["id"]) for line in lines]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) == 50
    assert set(lines[0]) == set(selectors.EVENT_COLUMNS)
    assert lines[0]["workflow"] == "promise_to_pay" and lines[0]["kind"] == "triggered"
    resumed = owner.get("/api/v1/events/", {"after": ids[40]})
    assert [json.loads(line)["id"] for line in _body(resumed).decode().splitlines()] == [
        str(i) for i in ids[41:]
    ]
    since = dataset["w2"].isoformat().replace("+00:00", "Z")
    recent = _body(owner.get("/api/v1/events/", {"since": since})).decode().splitlines()
    assert len(recent) == 15  # E, F and G's events


def test_events_csv(owner, dataset):
    answer = owner.get("/api/v1/events/", {"format": "csv"})
    assert answer["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(_body(answer).decode())))
    assert len(rows) == 50
    sent = next(row for row in rows if row["kind"] == "message_sent")
    assert json.loads(sent["data"])["channel"] == "sms"


def test_cases_export_csv_and_ndjson(owner, dataset, monkeypatch):
    monkeypatch.setattr(selectors, "EXPORT_PAGE", 3)
    rows = list(csv.DictReader(io.StringIO(_body(owner.get("/api/v1/cases/export/")).decode())))
    assert len(rows) == 7
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)
    assert {row["outcome"] for row in rows} >= {"abandoned", "completed_by_agent"}
    assert "phone" not in rows[0] and "email" not in rows[0]
    lines = _body(owner.get("/api/v1/cases/export/", {"format": "ndjson", "after": rows[2]["id"]}))
    assert [json.loads(line)["id"] for line in lines.decode().splitlines()] == [
        row["id"] for row in rows[3:]
    ]


def test_csv_cells_that_look_like_formulas_are_text(owner, dataset):
    case = dataset["cases"]["a"]
    type(case).objects.filter(pk=case.pk).update(segment="=HYPERLINK(1)")
    rows = list(csv.DictReader(io.StringIO(_body(owner.get("/api/v1/cases/export/")).decode())))
    assert "'=HYPERLINK(1)" in {row["segment"] for row in rows}
