"""gunicorn's settings for Closeloop's web processes:

    gunicorn --config python:config.gunicorn config.wsgi

Read from the environment like config/settings.py; every variable is in
docs/configuration.md. The container (Dockerfile) and the systemd unit
(deploy/systemd/closeloop-web.service) both start the web side this way.
"""

from __future__ import annotations

import os
from pathlib import Path

bind = [os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")]
# Sync workers take a request only when they are free, so the load spreads evenly over them
# (docs/performance.md, "Why sync workers"); two per core keeps the cores busy while half of
# them wait on PostgreSQL. Each process holds its own database connection.
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * (os.cpu_count() or 1))
# More than one thread turns the workers into gunicorn's gthread workers.
threads = int(os.environ.get("GUNICORN_THREADS") or 1)
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or 30)
graceful_timeout = timeout
keepalive = 5
# Recycled now and then so a slow leak in any library cannot grow a worker without bound;
# the jitter keeps the workers from all restarting at once.
max_requests = 2000
max_requests_jitter = 200
errorlog = "-"
# No control socket (gunicornc): systemd or the container runtime manages the processes, two
# instances on one host would claim the same default path, and the service user's home
# directory is not writable.
control_socket_disable = True
# Off unless asked for: the paths of customer pages carry their link token (/m/<token>/),
# and the proxy in front logs requests already.
_access_log = os.environ.get("GUNICORN_ACCESS_LOG", "").strip().lower() in {"1", "true", "on"}
accesslog = "-" if _access_log else None
# gunicorn's worker heartbeat files: on a memory filesystem where there is one, so a slow
# container disk cannot make a healthy worker look dead.
if Path("/dev/shm").is_dir():  # noqa: S108 - a tmpfs, not a shared temporary file
    worker_tmp_dir = "/dev/shm"  # noqa: S108


def on_starting(server) -> None:
    """Empty PROMETHEUS_MULTIPROC_DIR before the workers start: figures left by a previous
    run would be added to this run's (docs/operations.md, "Several web processes")."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        # prometheus_client's files only, whatever else an operator keeps there.
        for leftover in Path(folder).glob("*.db"):
            leftover.unlink(missing_ok=True)
