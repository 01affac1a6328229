"""The exceptions queue (/admin/agents/task/): order, filters, search, actions, and the
same number of queries whatever its length."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import Task, TaskKind
from agents.selectors import queue_tasks
from cases.models import CaseEvent
from tests import factories
from tests.agents.conftest import escalated

QUEUE = "/admin/agents/task/"


@pytest.fixture
def agent_client(client, agent):
    client.force_login(agent)
    return client


def rows(response) -> list[str]:
    """Case ids in the order the page lists them."""
    return [str(task.case_id) for task in response.context["cl"].result_list]


def test_ordered_by_priority_then_due_then_age(workflow, agent_client):
    low = escalated(priority=10)
    high = escalated(priority=90)
    mid_late = escalated(priority=50)
    mid_early = escalated(priority=50)
    Task.objects.filter(case=mid_early).update(due_at=timezone.now() + dt.timedelta(hours=1))
    same_due = timezone.now() + dt.timedelta(hours=30)
    Task.objects.filter(case=mid_late).update(due_at=same_due)
    older = escalated(priority=50)
    Task.objects.filter(case=older).update(
        due_at=same_due, created_at=timezone.now() - dt.timedelta(days=1)
    )
    response = agent_client.get(QUEUE)
    assert response.status_code == 200
    assert rows(response) == [str(c.pk) for c in (high, mid_early, older, mid_late, low)]


def test_only_open_tasks_are_queued(workflow, agent_client, agent):
    from agents.services import case_close

    waiting, closed = escalated(), escalated()
    case_close(case=closed, user=agent, reason="done")
    assert rows(agent_client.get(QUEUE)) == [str(waiting.pk)]


def test_filters(workflow, agent_client, agent, other_agent):
    from agents.services import task_claim, task_open_callback

    mine = escalated(reason="identity_failed")
    theirs = escalated(reason="customer_reply")
    free = escalated(reason="customer_reply")
    task_claim(task=Task.objects.get(case=mine), user=agent)
    task_claim(task=Task.objects.get(case=theirs), user=other_agent)
    Task.objects.filter(case=free).update(due_at=timezone.now() - dt.timedelta(minutes=5))
    callback_case = factories.case_in_state("resolved")
    callback = task_open_callback(
        case=callback_case, values={"date": "2020-01-01", "window": "09:00-12:00"}
    )
    other_workflow = factories.workflow_shipped("failed_payment")
    other = factories.case_for("failed_payment")
    from cases.services import case_transition

    case_transition(case=other, transition="escalate", data={"reason": "x", "priority": 1})

    def listed(**params) -> set[str]:
        return set(rows(agent_client.get(QUEUE, params)))

    ids = {name: str(c.pk) for name, c in (("mine", mine), ("theirs", theirs), ("free", free))}
    ids["callback"], ids["other"] = str(callback.case_id), str(other.pk)
    assert listed(kind="callback") == {ids["callback"]}
    assert listed(reason="identity_failed") == {ids["mine"]}
    assert listed(assignee="mine") == {ids["mine"]}
    assert listed(assignee="unassigned") == {ids["free"], ids["callback"], ids["other"]}
    assert listed(assignee=str(other_agent.pk)) == {ids["theirs"]}
    assert listed(workflow=other_workflow.key) == {ids["other"]}
    assert listed(breached="yes") == {ids["free"], ids["callback"]}
    assert ids["free"] not in listed(breached="no")
    page = agent_client.get(QUEUE, {"breached": "yes"}).content.decode()
    assert "SLA breached" in page and "overdue" in page


def test_search_by_customer_case_or_event(workflow, agent_client):
    one = escalated(customer={"external_id": "CUST-77", "name": "Grace Hopper"})
    two = escalated()
    assert rows(agent_client.get(QUEUE, {"q": "CUST-77"})) == [str(one.pk)]
    assert rows(agent_client.get(QUEUE, {"q": "Grace"})) == [str(one.pk)]
    assert rows(agent_client.get(QUEUE, {"q": str(two.pk)})) == [str(two.pk)]
    assert rows(agent_client.get(QUEUE, {"q": two.event_id})) == [str(two.pk)]
    assert rows(agent_client.get(QUEUE, {"q": "nobody"})) == []


def test_claim_assign_unassign_actions(workflow, agent_client, agent, other_agent):
    case = escalated()
    task = Task.objects.get(case=case)

    def act(action: str, **extra):
        return agent_client.post(
            QUEUE, {"action": action, "_selected_action": [task.pk], **extra}, follow=True
        )

    act("claim")
    assert Task.objects.get(pk=task.pk).assignee == agent
    act("assign", assignee=other_agent.pk)
    assert Task.objects.get(pk=task.pk).assignee == other_agent
    response = act("assign")
    assert "Choose who to assign to" in response.content.decode()
    act("unassign")
    assert Task.objects.get(pk=task.pk).assignee is None
    assert list(
        CaseEvent.objects.filter(case=case, actor="agent").values_list("kind", flat=True)
    ) == ["agent_claimed", "agent_assigned", "agent_unassigned"]


def test_viewers_see_the_queue_but_cannot_act(workflow, client):
    from tests.agents.conftest import staff_with

    case = escalated()
    viewer = staff_with("view_task", username="auditor")
    client.force_login(viewer)
    assert client.get(QUEUE).status_code == 200
    task = Task.objects.get(case=case)
    response = client.post(QUEUE, {"action": "claim", "_selected_action": [task.pk]})
    assert Task.objects.get(pk=task.pk).assignee is None
    assert response.status_code in (200, 302)
    nobody = factories.user("plain-staff")
    client.force_login(nobody)
    assert client.get(QUEUE).status_code == 403


def _queue_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(QUEUE)
    assert response.status_code == 200
    return len(queries)


def test_the_queue_runs_the_same_queries_for_3_or_30_tasks(workflow, agent_client, agent):
    from agents.services import task_claim

    for _ in range(3):
        task_claim(task=Task.objects.get(case=escalated()), user=agent)
    few = _queue_queries(agent_client)
    for number in range(27):
        case = escalated(priority=number)
        if number % 2:
            task_claim(task=Task.objects.get(case=case), user=agent)
    assert Task.objects.filter(status="open").count() == 30
    assert _queue_queries(agent_client) == few


@pytest.mark.postgres
def test_the_queue_reads_its_partial_index(workflow):
    """With thousands of tasks (most of them done), the queue's page comes off the partial
    index in order, without sorting the table."""
    from cases.models import Case
    from cases.services import triggers_ingest

    client, _ = factories.api_client()
    results = triggers_ingest(
        client=client, raw_triggers=[factories.trigger_body() for _ in range(1500)]
    )
    case_ids = [r.case_id for r in results]
    now = timezone.now()
    tasks = []
    for index, case_id in enumerate(case_ids):
        for kind in (TaskKind.EXCEPTION, TaskKind.CALLBACK):
            tasks.append(
                Task(
                    case_id=case_id,
                    kind=kind,
                    status="open" if index % 10 == 0 else "done",
                    reason="customer_reply",
                    priority=index % 100,
                    due_at=now + dt.timedelta(minutes=index),
                    window_end=now + dt.timedelta(minutes=index + 60),
                )
            )
    Task.objects.bulk_create(tasks)
    assert Case.objects.count() >= 1500
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE agents_task")
        cursor.execute("ANALYZE cases_case")
    plan = queue_tasks()[:50].explain()
    assert "task_queue_order" in plan, plan
    assert "Seq Scan on agents_task" not in plan, plan
