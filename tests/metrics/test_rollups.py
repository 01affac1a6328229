"""Daily rollups give the same figures as the facts they add up, for periods that fall on
whole days, cut through days, or lie within one day."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db.models import Sum
from django.utils import timezone

from metrics.models import ROLLUP_MEASURES, CaseFact, DailyRollup, ExceptionFact, ExceptionRollup
from metrics.rollups import DIMENSIONS, fact_aggregates, rollups_rebuild, rollups_refresh
from metrics.selectors import Scope, _exception_sums, _grouped, _sums


def _rows(model) -> set[tuple]:
    fields = [f.attname for f in model._meta.concrete_fields if f.attname != "id"]
    return set(model.objects.values_list(*fields))


def _from_facts(scope: Scope, column: str | None = None) -> dict:
    facts = CaseFact.objects.filter(scope.q()).order_by()
    if column is None:
        return {None: facts.aggregate(**fact_aggregates())}
    return {row.pop(column): row for row in facts.values(column).annotate(**fact_aggregates())}


def _scopes(dataset) -> list[Scope]:
    w1 = dataset["w1"]  # a Monday, 09:00 UTC
    midnight = w1.replace(hour=0)
    return [
        Scope(since=midnight, until=midnight + dt.timedelta(days=21)),  # whole days
        Scope(since=w1 + dt.timedelta(hours=1), until=w1 + dt.timedelta(days=8, hours=3)),
        Scope(since=w1 - dt.timedelta(minutes=5), until=w1 + dt.timedelta(hours=5)),  # one day
        Scope(since=w1 + dt.timedelta(hours=20), until=w1 + dt.timedelta(hours=30)),  # 1 midnight
        Scope(since=None, until=w1 + dt.timedelta(days=7, hours=2)),
        Scope(since=w1 + dt.timedelta(hours=2), until=None),
        Scope(workflow_key="promise_to_pay", since=midnight, until=timezone.now()),
        Scope(workflow_key="failed_payment", since=midnight, until=timezone.now()),
    ]


def test_sums_equal_the_facts_for_every_kind_of_period(dataset):
    assert DailyRollup.objects.exists()
    for scope in _scopes(dataset):
        total = _grouped(_sums(scope), None).get(None, {})
        expected = _from_facts(scope)[None]
        for name in ROLLUP_MEASURES:
            assert (total.get(name) or 0) == (expected[name] or 0), (scope, name)


@pytest.mark.parametrize("dimension", list(DIMENSIONS))
def test_breakdowns_equal_the_facts(dataset, dimension):
    for scope in _scopes(dataset):
        groups = _grouped(_sums(scope, dimension=dimension, keys=("group",)), 0)
        expected = _from_facts(scope, DIMENSIONS[dimension])
        assert set(groups) == set(expected)
        for group, row in expected.items():
            assert groups[group]["cases"] == row["cases"]
            assert groups[group]["completed"] == row["completed"]
            assert groups[group]["value_amount"] == (row["value_amount"] or 0)


def test_exception_types_equal_the_facts(dataset):
    for scope in _scopes(dataset):
        expected = {
            row["exception_type"]: row["n"]
            for row in ExceptionFact.objects.filter(scope.q("fact__"))
            .values("exception_type")
            .annotate(n=Sum("occurrences"))
        }
        assert _exception_sums(scope).get(None, {}) == expected
        by_channel = _exception_sums(scope, dimension="channel")
        assert sum(n for types in by_channel.values() for n in types.values()) == sum(
            expected.values()
        )


def test_refresh_of_some_cases_equals_a_rebuild(dataset):
    rebuilt = _rows(DailyRollup), _rows(ExceptionRollup)
    # Stale rows for one day, then a refresh of that day's cases puts them right.
    some = list(CaseFact.objects.values_list("case_id", flat=True)[:3])
    DailyRollup.objects.update(cases=999)
    ExceptionRollup.objects.all().delete()
    days = rollups_refresh(case_ids=CaseFact.objects.values_list("case_id", flat=True))
    assert days >= 2
    assert (_rows(DailyRollup), _rows(ExceptionRollup)) == rebuilt
    assert rollups_refresh(case_ids=some) >= 1
    assert (_rows(DailyRollup), _rows(ExceptionRollup)) == rebuilt
    rollups_rebuild()
    assert (_rows(DailyRollup), _rows(ExceptionRollup)) == rebuilt
    assert rollups_refresh(case_ids=[]) == 0
