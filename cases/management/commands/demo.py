"""`make demo`: migrate, seed, then run the web server, the job worker and the demo core
system of record together until Ctrl-C. One foreground command, so a newcomer has one thing
to start and stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from cases.management.commands.seed_demo import DEMO_ADMIN_PASSWORD, DEMO_ADMIN_USER, DEMO_API_KEY


class Command(BaseCommand):
    help = "Run the demo: migrate, seed, then web server + worker + demo core until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--core-port", type=int, default=os.environ.get("CORE_PORT", "8100"))

    def handle(self, *args, host: str, port: int, core_port: int, **options):
        if not settings.DEBUG:
            raise CommandError("The demo runs with DEBUG=1; use `make demo`.")
        base = f"http://{host}:{port}"
        if "PUBLIC_BASE_URL" not in os.environ:
            # Links printed and sent in the demo must point at the port it really runs on.
            os.environ["PUBLIC_BASE_URL"] = settings.PUBLIC_BASE_URL = base
        core = f"http://{host}:{core_port}"
        if "CORE_API_URL" not in os.environ:
            # Set before web and worker start, so writeback in both posts to this demo core.
            os.environ["CORE_API_URL"] = core
            os.environ.setdefault("CORE_API_TOKEN", "demo-core-token")
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        call_command("seed_demo", stdout=self.stdout)
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        core_command = [sys.executable, "-m", "democore", "--host", host, "--port", str(core_port)]
        core_command += ["--db", str(settings.DATA_DIR / "democore.sqlite3")]
        processes = {
            "core": subprocess.Popen(core_command, cwd=settings.BASE_DIR),
            "web": subprocess.Popen([*manage, "runserver", "--noreload", f"{host}:{port}"]),
            "worker": subprocess.Popen([*manage, "qcluster"]),
        }
        self.stdout.write(
            self.style.SUCCESS(
                f"\nCloseloop demo is running on {base}\n"
                f"  Staff admin   {base}/admin/   login {DEMO_ADMIN_USER} / {DEMO_ADMIN_PASSWORD}\n"
                f"  Demo phone    {base}/admin/channels/phone/   (what customers were sent)\n"
                f"  API docs      {base}/api/docs/\n"
                f"  Health        {base}/healthz\n"
                f"  Demo core     {core}   faults and stats: {core}/_control/stats\n"
                f"  Writeback to  {os.environ['CORE_API_URL']}\n"
                f"  Try the API   curl -H 'Authorization: Bearer {DEMO_API_KEY}' "
                f"{base}/api/v1/workflows/\n"
                "Press Ctrl-C to stop.\n"
            )
        )
        self._supervise(processes)

    def _supervise(self, processes: dict[str, subprocess.Popen]) -> None:
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                for name, process in processes.items():
                    if process.poll() is not None:
                        self.stderr.write(f"The {name} process exited ({process.returncode}).")
                        stopping = True
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stdout.write("\nStopping…")
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 10
            for process in processes.values():
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
