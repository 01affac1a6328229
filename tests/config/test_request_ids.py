"""Request IDs: taken from X-Request-ID when safe, made otherwise, echoed on every response,
stamped on the request's log records and carried to the jobs it enqueues."""

from __future__ import annotations

import logging
import re

import pytest
from django.conf import settings
from django.test import Client
from django_q.models import OrmQ
from django_q.signals import post_execute_in_worker, pre_execute
from django_q.signing import SignedPackage

from config.observability import RequestIdFilter, request_id_var

GENERATED = re.compile(r"^[0-9a-f]{32}$")


class Records(logging.Handler):
    """Keeps records as the console handler would see them: through the request-id filter."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records():
    handler = Records()
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def test_a_request_without_an_id_gets_one(db):
    first = Client().get("/healthz?checks=database")
    second = Client().get("/healthz?checks=database")
    assert GENERATED.match(first["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_a_safe_incoming_id_is_echoed(db):
    response = Client().get("/healthz?checks=database", HTTP_X_REQUEST_ID="lb-7f3a:req.42_x-1")
    assert response["X-Request-ID"] == "lb-7f3a:req.42_x-1"


@pytest.mark.parametrize(
    "unsafe",
    ["a" * 65, "has space", 'quote"d', "semi;colon", "é-accent", "<script>"],
)
def test_an_unsafe_incoming_id_is_replaced(db, unsafe):
    response = Client().get("/healthz?checks=database", HTTP_X_REQUEST_ID=unsafe)
    assert GENERATED.match(response["X-Request-ID"])


def test_error_answers_carry_the_id_too(db):
    response = Client().get("/no-such-page", HTTP_X_REQUEST_ID="req-404")
    assert response.status_code == 404
    assert response["X-Request-ID"] == "req-404"
    api = Client().get("/api/v1/workflows/", HTTP_X_REQUEST_ID="req-401")
    assert api.status_code == 401
    assert api["X-Request-ID"] == "req-401"


def test_log_records_of_the_request_carry_its_id(db, records):
    Client().get("/no-such-page", HTTP_X_REQUEST_ID="req-logged")
    [record] = [r for r in records if "no-such-page" in r.getMessage()]
    assert record.request_id == "req-logged"
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "outside", None, None)
    RequestIdFilter().filter(outside)
    assert outside.request_id == "-"


def test_the_console_log_shows_the_id():
    """The JSON format (privacy/logs.py) writes `request_id` as a field; the plain one:"""
    assert "request_id" in settings.LOGGING["handlers"]["console"]["filters"]
    assert "[%(request_id)s]" in settings.LOGGING["formatters"]["plain"]["format"]


@pytest.mark.django_db(transaction=True)
def test_jobs_enqueued_by_a_request_carry_its_id_to_the_worker(
    api, workflow, trigger_body, queued_jobs
):
    # Committed for real, so the job is enqueued on commit inside the request, as in
    # production.
    response = api.post(
        "/api/v1/triggers/", trigger_body(), format="json", HTTP_X_REQUEST_ID="req-job"
    )
    assert response.status_code == 201
    [queued] = OrmQ.objects.all()
    task = SignedPackage.loads(queued.payload)
    assert task["request_id"] == "req-job"
    assert request_id_var.get() is None  # the request's id ended with it

    # What a worker does around the job: its log lines carry the id, the next job's do not.
    pre_execute.send(sender="django_q", func=None, task=task)
    assert request_id_var.get() == "req-job"
    post_execute_in_worker.send(sender="django_q", func=None, task=task)
    assert request_id_var.get() is None


def test_jobs_enqueued_outside_a_request_carry_no_id(db, queued_jobs):
    from django_q.tasks import async_task

    async_task("math.floor", 1.5)
    task = SignedPackage.loads(OrmQ.objects.get().payload)
    assert "request_id" not in task
