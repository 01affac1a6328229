"""The HTTP server under the Twilio and WhatsApp stand-ins: a threaded server on an
ephemeral loopback port, speaking HTTP/1.1 keep-alive so a benchmark's hundred thousand
requests reuse a handful of connections instead of opening one each."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


class Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes):
        parts = urlsplit(target)
        self.method = method
        self.path = parts.path
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.headers = headers  # names in lower case
        self.body = body

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one write (flushed after each request): with the default
    # unbuffered writes, Nagle's algorithm and the client's delayed ACK cost 40 ms a request.
    wbufsize = -1
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            self.command,
            self.path,
            {name.lower(): value for name, value in self.headers.items()},
            self.rfile.read(length) if length else b"",
        )
        standin = self.server.standin
        if standin.delay and standin._stopped.wait(standin.delay):
            self.close_connection = True
            return
        status, payload = standin._answer(request)
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a benchmark would otherwise print a line per request


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: LoopbackStandIn

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.connections: set[socket.socket] = set()


class LoopbackStandIn:
    """Base for an HTTP stand-in: subclasses answer requests in `handle()`.

    `delay` (seconds) holds every answer back, for timeout tests; `fail_next(n, status)`
    answers the next n requests that would have succeeded with `status` and the provider's
    error body instead; `answer_next(status, payload)` with exactly that (a recorded answer)."""

    def __init__(self, *, delay: float = 0.0):
        self.delay = delay
        self.requests: deque[Request] = deque(maxlen=100)  # the latest, for format checks
        self._lock = threading.Lock()
        self._scripted: deque[tuple[int, Any]] = deque()
        self._stopped = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.standin = self
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def fail_next(self, n: int = 1, *, status: int = 500) -> None:
        with self._lock:
            self._scripted.extend([(status, None)] * n)

    def answer_next(self, status: int, payload: Any) -> None:
        with self._lock:
            self._scripted.append((status, payload))

    def _take_scripted(self) -> tuple[int, Any] | None:
        """The next scripted answer; a payload of None asks the subclass for its error body."""
        with self._lock:
            return self._scripted.popleft() if self._scripted else None

    def _answer(self, request: Request) -> tuple[int, Any]:
        self.requests.append(request)
        return self.handle(request)

    def handle(self, request: Request) -> tuple[int, Any]:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop answering: later calls find the port closed (connection refused)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()
        # Kept-alive connections too: a stopped provider must look unreachable, not keep
        # answering clients that connected earlier.
        for connection in list(self._server.connections):
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
