"""The ingest's bulk writes: COPY on PostgreSQL (cases/bulk.py), bulk_create elsewhere. Both
must store the same rows, a batch must cost a fixed number of queries, and a race that makes
COPY fail must fall back to the conflict handling it cannot do itself."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cases import services
from cases.models import Actor, Case, CaseEvent, Customer
from tests import factories

pytestmark = pytest.mark.django_db


def test_ingested_rows_carry_defaults_and_links(workflow, api_key, trigger_body):
    client, _ = api_key
    body = trigger_body()

    [result] = services.triggers_ingest(client=client, raw_triggers=[body])

    case = Case.objects.select_related("customer").get(pk=result.case_id)
    assert case.state == "received"
    assert (case.priority, case.escalation_reason, case.offer, case.outcome) == (0, "", None, "")
    assert case.customer.external_id == body["customer"]["external_id"]
    assert case.customer.api_client_id == client.pk
    assert case.customer.consent["sms"]["value"] is True
    assert len(case.customer.postcode_hash) == 64
    assert case.payload["data"] == case.data
    assert case.updated_at is not None
    [event] = CaseEvent.objects.filter(case=case)
    assert (event.kind, event.actor) == ("triggered", "api")
    assert event.data["workflow"] == "promise_to_pay"


@pytest.mark.postgres
def test_a_batch_costs_the_same_queries_whatever_its_size(workflow, api_key, trigger_body):
    client, _ = api_key
    services.triggers_ingest(client=client, raw_triggers=[trigger_body()])  # warm caches

    counts = []
    for size in (10, 1000):
        batch = [trigger_body() for _ in range(size)]
        with CaptureQueriesContext(connection) as queries:
            results = services.triggers_ingest(client=client, raw_triggers=batch)
        assert {result.status for result in results} == {"created"}
        counts.append(len(queries))

    assert counts[0] == counts[1] <= 20, counts
    assert Case.objects.filter(api_client=client).count() == 1011
    assert CaseEvent.objects.filter(kind="triggered").count() == 1011


@pytest.mark.postgres
def test_customer_created_meanwhile_falls_back_to_the_upsert(api_key):
    client, _ = api_key
    now = timezone.now()
    existing = Customer.objects.create(api_client=client, external_id="c-1", name="Old")
    newcomer = Customer(api_client=client, external_id="c-1", name="New", updated_at=now)
    other = Customer(api_client=client, external_id="c-2", name="Other", updated_at=now)

    services._customers_insert([newcomer, other])

    assert newcomer.pk == existing.pk
    assert Customer.objects.get(pk=existing.pk).name == "New"
    assert Customer.objects.get(pk=other.pk).external_id == "c-2"
    assert Customer.objects.filter(api_client=client).count() == 2


@pytest.mark.postgres
def test_case_stored_meanwhile_falls_back_to_ignore_and_read_back(workflow, api_key):
    client, _ = api_key
    first = factories.case(client=client)
    now = timezone.now()

    def new_case(event_id: str) -> Case:
        return Case(
            workflow=workflow,
            customer=first.customer,
            api_client=client,
            event_id=event_id,
            body_fingerprint="f" * 64,
            payload={},
            data={},
            triggered_at=now,
            expires_at=now,
        )

    late, fresh = new_case(first.event_id), new_case("evt-fresh")
    stored = services._cases_insert(client, [late, fresh])

    assert stored[first.event_id]["id"] == first.id != late.id
    assert stored["evt-fresh"]["id"] == fresh.id
    assert Case.objects.filter(api_client=client).count() == 2


@pytest.mark.postgres
def test_bulk_copy_stores_choices_as_values_and_none_json_as_null(workflow, api_key):
    from cases.bulk import bulk_copy

    client, _ = api_key
    case = factories.case(client=client)

    bulk_copy([CaseEvent(case=case, kind="note", actor=Actor.AGENT, data={"n": 1})])

    event = CaseEvent.objects.get(case=case, kind="note")
    assert (event.actor, event.data) == ("agent", {"n": 1})
    assert Case.objects.filter(pk=case.pk, offer__isnull=True).exists()
