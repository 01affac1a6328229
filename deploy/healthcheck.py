"""The container health check of a web process: GET /healthz?checks=database on this
container's gunicorn, as the load balancer would, with a Host header Django accepts.

    python deploy/healthcheck.py            # exit 0 healthy, 1 not

Standard library only (it runs every few seconds; booting Django would cost more than the
check). The host is the first ALLOWED_HOSTS entry, so nothing has to add "localhost" there.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def probe_host(allowed_hosts: str) -> str:
    """A name Django's ALLOWED_HOSTS accepts: the first entry, with a leading-dot wildcard
    (".example.com") turned into the bare domain and "*" into localhost."""
    first = next((host.strip() for host in allowed_hosts.split(",") if host.strip()), "")
    if not first or first == "*":
        return "localhost"
    return first.lstrip(".")


def main() -> int:
    port = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000").rsplit(":", 1)[-1]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/healthz?checks=database",
        headers={"Host": probe_host(os.environ.get("ALLOWED_HOSTS", ""))},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
