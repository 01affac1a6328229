"""Concurrent writers on PostgreSQL: threads lined up on a barrier race for the same case or
the same event_id, and exactly one wins. SQLite serialises writers, so these need PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django_fsm import ConcurrentTransition
from rest_framework.test import APIClient

from cases.models import Case, CaseEvent, Customer
from cases.services import IllegalTransition, case_transition
from tests import factories

# Jobs stay queued: the races here are over the rows themselves, not over what the preparing
# and outreach jobs would do to a committed case.
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("queued_jobs"),
]


def run_together(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run each job in its own thread, all released at once; return each one's result or
    the exception it raised, in order."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def worker(index: int, job: Callable[[], Any]) -> None:
        try:
            connection.ensure_connection()  # connect first, so the race is over the rows
            barrier.wait(timeout=30)
            results[index] = job()
        except BaseException as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [
        threading.Thread(target=worker, args=(index, job), daemon=True)
        for index, job in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    return results


# The event each transition records (other jobs may add events of their own meanwhile).
EVENT_KIND = {
    "complete_by_agent": "completed_by_agent",
    "cancel": "cancelled",
    "close_by_agent": "closed_by_agent",
    "confirm_writeback": "writeback_confirmed",
    "fail_writeback": "writeback_failed",
    "abandon": "abandoned",
}


def _winners_and_losers(results: list[Any]) -> tuple[list[Case], list[BaseException]]:
    winners = [r for r in results if isinstance(r, Case)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) + len(losers) == len(results)
    return winners, losers


# --- the state machine ---------------------------------------------------------------------------


def test_same_transition_from_eight_threads_wins_once(workflow):
    case = factories.case()

    results = run_together([lambda: case_transition(case=case.pk, transition="start_outreach")] * 8)

    winners, losers = _winners_and_losers(results)
    assert len(winners) == 1
    assert len(losers) == 7
    assert all(isinstance(exc, IllegalTransition) for exc in losers), losers
    assert all(exc.state == "outreach" for exc in losers)
    assert Case.objects.get(pk=case.pk).state == "outreach"
    assert CaseEvent.objects.filter(case=case, kind="outreach_started").count() == 1


@pytest.mark.parametrize(
    ("source", "transitions"),
    [
        # From each of these states, whichever transition wins leaves the others illegal.
        ("escalated", ["complete_by_agent", "cancel", "close_by_agent"]),
        ("action_submitted", ["confirm_writeback", "fail_writeback"]),
        ("engaged", ["abandon", "cancel"]),
    ],
)
def test_different_transitions_from_one_state_win_once(workflow, source, transitions):
    case = factories.case_in_state(source)
    names = [transitions[i % len(transitions)] for i in range(8)]

    results = run_together(
        [lambda name=name: case_transition(case=case.pk, transition=name) for name in names]
    )

    winners, losers = _winners_and_losers(results)
    assert len(winners) == 1
    assert all(isinstance(exc, IllegalTransition) for exc in losers), losers
    [winner] = winners
    stored = Case.objects.get(pk=case.pk)
    assert stored.state == winner.state != source
    kinds = [EVENT_KIND[name] for name in transitions]
    recorded = list(CaseEvent.objects.filter(case=case, kind__in=kinds).values_list("kind"))
    assert recorded == [(EVENT_KIND[names[results.index(winner)]],)]


def test_stale_instances_without_the_lock_still_win_once(workflow):
    """The second line of defence: instances read before the race, saved without the
    service's row lock, are stopped by ConcurrentTransitionMixin."""
    case = factories.case()

    def transition_a_stale_copy(copy: Case) -> Case:
        copy.start_outreach()
        copy.save()
        return copy

    copies = [Case.objects.get(pk=case.pk) for _ in range(8)]
    results = run_together([lambda copy=copy: transition_a_stale_copy(copy) for copy in copies])

    winners, losers = _winners_and_losers(results)
    assert len(winners) == 1
    assert all(isinstance(exc, ConcurrentTransition) for exc in losers), losers
    assert CaseEvent.objects.filter(case=case, kind="outreach_started").count() == 1


# --- the trigger API -----------------------------------------------------------------------------


def _poster(raw_key: str, url: str, body: dict) -> Callable[[], Any]:
    def post():
        http = APIClient()  # one client per thread: the test client is not thread-safe
        http.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        response = http.post(url, body, format="json")
        return response.status_code, response.json()

    return post


def test_twenty_identical_triggers_at_once_make_one_case(workflow, api_key, trigger_body):
    _, raw_key = api_key
    body = trigger_body()

    results = run_together([_poster(raw_key, "/api/v1/triggers/", body)] * 20)

    assert not [r for r in results if isinstance(r, BaseException)], results
    statuses = Counter(status for status, _ in results)
    assert statuses[201] == 1
    assert statuses[200] == 19
    assert len({answer["id"] for _, answer in results}) == 1
    assert Case.objects.count() == 1
    assert Customer.objects.count() == 1
    assert CaseEvent.objects.filter(kind="triggered").count() == 1
    [case] = Case.objects.all()
    assert str(case.id) == results[0][1]["id"]


def test_conflicting_bodies_at_once_make_one_case_and_409s(workflow, api_key, trigger_body):
    """Same event_id, ten different bodies: one is stored, the others are told which fields
    differ, and none of them changes the customer the stored one describes."""
    _, raw_key = api_key
    first = trigger_body()
    bodies = [
        {
            **first,
            "customer": {**first["customer"], "name": f"Name {n}", "phone": "+447911123456"},
            "data": {**first["data"], "balance": f"{100 + n}.00"},
        }
        for n in range(10)
    ]

    results = run_together([_poster(raw_key, "/api/v1/triggers/", body) for body in bodies])

    assert not [r for r in results if isinstance(r, BaseException)], results
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 1, 409: 9}
    winner_index = next(i for i, (status, _) in enumerate(results) if status == 201)
    case = Case.objects.get()
    assert {answer["id"] for _, answer in results} == {str(case.id)}
    for status, answer in results:
        if status == 409:
            assert answer["differences"] == ["customer.name", "data.balance"]
    assert case.data["balance"] == bodies[winner_index]["data"]["balance"]
    customer = Customer.objects.get()
    assert customer.name == bodies[winner_index]["customer"]["name"]
    assert CaseEvent.objects.filter(kind="triggered").count() == 1


def test_concurrent_batches_sharing_event_ids(workflow, api_key, trigger_body):
    """Overlapping batches: every event_id ends up stored once, and each batch reports
    each item as created or existing."""
    _, raw_key = api_key
    bodies = [trigger_body() for _ in range(30)]
    batches = [bodies[i : i + 20] for i in (0, 5, 10, 0, 5, 10)]

    results = run_together(
        [_poster(raw_key, "/api/v1/triggers/batch/", {"triggers": b}) for b in batches]
    )

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert all(status == 200 for status, _ in results)
    created = sum(answer["counts"]["created"] for _, answer in results)
    assert created == 30
    ids_by_event: dict[str, set[str]] = {}
    for batch, (_, answer) in zip(batches, results, strict=True):
        assert {r["status"] for r in answer["results"]} <= {"created", "existing"}
        for body, item in zip(batch, answer["results"], strict=True):
            ids_by_event.setdefault(body["event_id"], set()).add(item["id"])
    assert all(len(ids) == 1 for ids in ids_by_event.values())
    assert Case.objects.count() == 30
    assert CaseEvent.objects.filter(kind="triggered").count() == 30
