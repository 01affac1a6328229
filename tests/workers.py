"""A real django-q2 worker process for tests that need one (use with `transactional_db`, so
the worker sees committed rows). It runs the production settings against the test database,
with the environment a test gives it (e.g. a provider pointed at a loopback stand-in)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The URL of the database this test run is using (pytest-django's test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{db.get('USER') or 'postgres'}{password}@{db.get('HOST') or '127.0.0.1'}"
        f":{db.get('PORT') or 5432}/{db['NAME']}"
    )


def worker_env(**overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "tests-only-not-a-secret",
        "DEBUG": "0",
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(settings.DATA_DIR),
        "PUBLIC_BASE_URL": settings.PUBLIC_BASE_URL,
        "Q_WORKERS": "1",
        "LOG_LEVEL": "WARNING",
    }
    env.update(overrides)
    return env


@contextmanager
def running_worker(**env: str) -> Iterator[subprocess.Popen]:
    """`manage.py qcluster` until the block ends; stopped with SIGINT as an operator would."""
    process = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "qcluster"],
        env=worker_env(**env),
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()
