"""The container health check of a worker (`manage.py qcluster`): healthy while a django-q2
cluster on this host has reported its status in the last few seconds.

    python deploy/worker_healthcheck.py     # exit 0 healthy, 1 not

Each cluster saves its status about every second with a 3-second expiry (where /healthz's
worker check reads it too, config/health.py); a dead or stuck cluster stops saving it.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from config.health import workers_alive

    here = socket.gethostname()
    clusters = [cluster for cluster in workers_alive() if cluster.host == here]
    if not clusters:
        print(f"worker healthcheck: no cluster on {here} has reported", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
