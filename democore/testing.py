"""Run a demo core from tests and benchmarks.

    with DemoCore.start(token="t") as core:        # in a background thread
        core.faults(error_rate=0.5, seed=7)
        ...
        core.stop(); ...; core.restart()           # refused connections, then recovery

`DemoCore.start_process(...)` runs `python -m democore` instead, for benchmarks that must not
share a GIL with the caller. Control calls use urllib so this module needs no Django.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any

from democore.server import DemoCoreServer, serve

REPO_ROOT = Path(__file__).resolve().parent.parent


class DemoCore:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        db_path: str | None,
        token: str | None,
        seed: int | None,
        in_process: bool,
        log_path: str | None = None,
    ):
        if db_path is None:
            # A file rather than :memory:, so restart() finds the same data again.
            scratch = tempfile.mkdtemp(prefix="democore-")
            weakref.finalize(self, _remove_tree, scratch)
            db_path = str(Path(scratch) / "democore.sqlite3")
        self.host, self.port, self.db_path = host, port, str(db_path)
        self.token, self.seed, self.in_process = token, seed, in_process
        self.log_path = log_path
        self.server: DemoCoreServer | None = None
        self.thread: threading.Thread | None = None
        self.process: subprocess.Popen | None = None

    @classmethod
    def start(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        db_path: str | os.PathLike | None = None,
        token: str | None = None,
        seed: int | None = None,
    ) -> DemoCore:
        """Serve from a daemon thread of this process."""
        core = cls(
            host=host,
            port=port,
            db_path=None if db_path is None else str(db_path),
            token=token,
            seed=seed,
            in_process=True,
        )
        core.launch()
        return core

    @classmethod
    def start_process(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        db_path: str | os.PathLike | None = None,
        token: str | None = None,
        seed: int | None = None,
        log_path: str | os.PathLike | None = None,
    ) -> DemoCore:
        """Run `python -m democore` as a subprocess; returns once /healthz answers."""
        core = cls(
            host=host,
            port=port,
            db_path=None if db_path is None else str(db_path),
            token=token,
            seed=seed,
            in_process=False,
            log_path=None if log_path is None else str(log_path),
        )
        core.launch()
        return core

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.server is not None or self.process is not None

    def launch(self) -> None:
        if self.in_process:
            self.server = serve(
                self.host, self.port, db_path=self.db_path, token=self.token, seed=self.seed
            )
            self.port = self.server.server_address[1]
            self.thread = threading.Thread(
                target=self.server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"democore-{self.port}",
                daemon=True,
            )
            self.thread.start()
        else:
            self.launch_process()
        self.wait_healthy()

    def launch_process(self) -> None:
        command = [sys.executable, "-m", "democore", "--host", self.host]
        command += ["--port", str(self.port), "--db", self.db_path, "--token", self.token or ""]
        if self.seed is not None:
            command += ["--seed", str(self.seed)]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        # The first line names the port, which matters when port 0 let the system choose.
        first_line = self.process.stdout.readline()
        if not first_line.startswith("democore listening on "):
            self.process.kill()
            self.process = None
            raise RuntimeError(f"democore did not start: {first_line.strip() or 'no output'}")
        self.port = int(first_line.rsplit(":", 1)[1])

    def wait_healthy(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, _ = self.control("GET", "/healthz")
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"democore at {self.url} did not answer /healthz")
            time.sleep(0.05)

    def control(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - always our own loopback URL
            self.url + path, data=data, method=method
        )
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def expect(self, method: str, path: str, body: dict | None = None) -> Any:
        status, answer = self.control(method, path, body)
        if status != 200:
            raise RuntimeError(f"democore {method} {path} answered {status}: {answer}")
        return answer

    def faults(self, **faults: Any) -> dict[str, Any]:
        """Set any of error_rate, error_after_commit_rate, timeout_rate, hang_seconds,
        latency_ms, down, seed; with no arguments, read the current faults."""
        if not faults:
            return self.expect("GET", "/_control/faults")
        return self.expect("POST", "/_control/faults", faults)

    def stats(self) -> dict[str, Any]:
        return self.expect("GET", "/_control/stats")

    def reset(self) -> None:
        self.expect("POST", "/_control/reset", {})

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def stop(self) -> None:
        """Stop answering: connections are refused until restart()."""
        if self.server is not None:
            self.server.stop()
            self.thread.join(timeout=5)
            self.server = self.thread = None
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process.stdout.close()
            self.process = None

    def restart(self) -> None:
        """Come back on the same port with the same database (faults start cleared)."""
        self.stop()
        self.launch()

    def __enter__(self) -> DemoCore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
