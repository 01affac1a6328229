"""A real django-q2 worker process for tests that need one (use with `transactional_db`, so
the worker sees committed rows). It runs the production settings against the test database,
with the environment a test gives it (e.g. a provider pointed at a loopback stand-in)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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
        # The caller's key: jobs it enqueues are signed with it, and the worker checks it.
        "SECRET_KEY": settings.SECRET_KEY,
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
def running_worker(*, log: Path | None = None, **env: str) -> Iterator[subprocess.Popen]:
    """`manage.py qcluster` until the block ends; stopped with SIGINT as an operator would.
    It leads a process group of its own, so `cluster_kill` can take down the whole cluster
    (its sentinel, pusher, monitor and workers) as a machine failure would. `log` takes its
    output (django-q2 logs every job: a busy cluster would fill a pipe nobody reads)."""
    log_file = open(log, "ab") if log else None  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "qcluster"],
        env=worker_env(**env),
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=log_file or subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        _stop(process, signal.SIGINT)
        if log_file:
            log_file.close()


def cluster_kill(process: subprocess.Popen) -> None:
    """SIGKILL a worker cluster and every process of it, with no chance to finish a job."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def running_web(*, log: Path | None = None, **env: str) -> Iterator[str]:
    """A web node: gunicorn with config/gunicorn.py and the production settings on a free
    loopback port, until the block ends. Yields its base URL once it answers /healthz."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_file = open(log, "ab") if log else None  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "python:config.gunicorn", "config.wsgi"],
        env=worker_env(
            **{
                "GUNICORN_BIND": f"127.0.0.1:{port}",
                "WEB_CONCURRENCY": "2",
                "ALLOWED_HOSTS": "127.0.0.1",
                # Plain HTTP on loopback, and every request from one address and one key.
                "SECURE_SSL_REDIRECT": "0",
                "API_RATE_LIMIT": "off",
                "MINIAPP_RATE_LIMITS": "0",
                **env,
            }
        ),
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=log_file or subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/healthz?checks=database", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return process.poll() is not None  # stop waiting for a server that exited

    try:
        if not wait_for(answers, timeout=30) or process.poll() is not None:
            raise RuntimeError(f"gunicorn on port {port} did not start")
        yield url
    finally:
        _stop(process, signal.SIGTERM)
        if log_file:
            log_file.close()


def _stop(process: subprocess.Popen, signum: int) -> None:
    if process.poll() is None:
        process.send_signal(signum)
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
