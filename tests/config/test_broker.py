"""The job broker: the database by default, Redis with Q_BROKER=redis (config/settings.py),
and a real worker cluster taking jobs from Redis."""

from __future__ import annotations

import json

import pytest
from django_q.models import Task
from django_q.tasks import async_task

from config.health import check_broker
from tests.test_deploy import _manage
from tests.workers import running_worker, wait_for

SHOW_BROKER = (
    "import json; from django.conf import settings; from django_q.brokers import get_broker; "
    "print(json.dumps({'cluster': settings.Q_CLUSTER, 'broker': type(get_broker()).__name__}))"
)


def broker_settings(tmp_path, **env: str) -> dict:
    # No DATABASE_URL: the settings alone are under test, on a throwaway SQLite file.
    result = _manage(
        "shell",
        "-c",
        SHOW_BROKER,
        SECRET_KEY="s" * 50,
        DATA_DIR=str(tmp_path),
        DATABASE_URL="",
        **env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_database_is_the_broker_by_default(tmp_path):
    shown = broker_settings(tmp_path)
    assert shown["broker"] == "ORM"
    assert shown["cluster"]["orm"] == "default"
    assert "redis" not in shown["cluster"]
    assert shown["cluster"]["retry"] > shown["cluster"]["timeout"]
    assert shown["cluster"]["max_attempts"] == 5
    assert shown["cluster"]["scheduler"] is True


def test_q_broker_redis_moves_the_queue_to_redis_url(tmp_path):
    shown = broker_settings(
        tmp_path,
        Q_BROKER="redis",
        REDIS_URL="redis://cache.internal:6380/3",
        Q_CLUSTER_NAME="closeloop-eu",
        Q_SCHEDULER="0",
    )
    assert shown["broker"] == "Redis"
    assert shown["cluster"]["redis"] == "redis://cache.internal:6380/3"
    assert "orm" not in shown["cluster"]
    assert shown["cluster"]["name"] == "closeloop-eu"
    assert shown["cluster"]["scheduler"] is False
    assert shown["cluster"]["retry"] > shown["cluster"]["timeout"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"Q_BROKER": "redis"}, "Q_BROKER=redis needs REDIS_URL"),
        ({"Q_BROKER": "kafka"}, "Q_BROKER must be orm or redis, got 'kafka'"),
        ({"Q_TIMEOUT": "300", "Q_RETRY": "300"}, "Q_RETRY must be longer than Q_TIMEOUT"),
    ],
)
def test_a_broker_setting_it_cannot_use_stops_startup(tmp_path, env, message):
    result = _manage("check", SECRET_KEY="s" * 50, DATA_DIR=str(tmp_path), **env)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.django_db
def test_healthz_counts_the_jobs_waiting_in_redis(redis_broker):
    async_task("math.floor", 2.5)
    async_task("math.floor", 3.5)
    assert check_broker() == {"kind": "redis", "redis": "ok", "jobs": 2}


@pytest.mark.django_db(transaction=True)
def test_a_worker_cluster_takes_jobs_from_redis(redis_broker, tmp_path):
    # Enqueued before any cluster runs: the job waits in Redis, not in the database.
    task_id = async_task("math.floor", 2.5)
    assert redis_broker.client.llen(f"django_q:{redis_broker.name}:q") == 1
    with running_worker(log=tmp_path / "worker.log", **redis_broker.env):
        done = wait_for(lambda: Task.objects.filter(id=task_id).exists(), timeout=30)
        assert done, (tmp_path / "worker.log").read_text()[-2000:]
    task = Task.objects.get(id=task_id)
    assert (task.success, task.result) == (True, 2)
    assert redis_broker.client.llen(f"django_q:{redis_broker.name}:q") == 0
