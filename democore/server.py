"""The demo core's HTTP server: routing, authentication, idempotency and fault injection.

Every answer is JSON. The order of checks in `Handler.answer` is the contract's order: an
outage answers before anything else, then authentication, then the request's shape, then
injected errors, then the Idempotency-Key, then the work itself.
"""

from __future__ import annotations

import base64
import contextlib
import email.policy
import hashlib
import hmac
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from democore import validation
from democore.faults import FaultInjector, FaultsInvalid
from democore.store import Store

logger = logging.getLogger("democore")

MAX_BODY_BYTES = 20 * 1024 * 1024
SIGNATURE_MAX_AGE_SECONDS = 300
# How long a request waits for another request holding the same Idempotency-Key to finish
# before it gives up with 409 and lets the caller retry later.
IDEMPOTENCY_WAIT_SECONDS = 5.0
ACCOUNT_REF = re.compile(r"[^\x00-\x1f\x7f/]{1,128}")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str, detail: str, **headers: str) -> Answer:
    return Answer(status, {"error": code, "detail": detail}, headers)


class Abandoned(Exception):
    """The server is stopping while this request hangs: drop the connection unanswered."""


# Authentication -----------------------------------------------------------------------


def auth_problem(headers, body: bytes, token: str) -> str | None:
    """Why this request is not authenticated, or None. Three kinds, so a caller's bearer,
    basic and HMAC adapters can each be tested against a real check."""
    signature = headers.get("X-Signature")
    if signature:
        return signature_problem(signature, body, token)
    authorization = headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if not authorization:
        return "Send Authorization: Bearer <token>, HTTP basic auth or X-Signature."
    if scheme.lower() == "bearer":
        return None if hmac.compare_digest(credentials.strip(), token) else "Wrong bearer token."
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except ValueError:
            return "Basic credentials are not valid base64."
        password = decoded.partition(":")[2]
        return None if hmac.compare_digest(password, token) else "Wrong basic auth password."
    return f"Unsupported Authorization scheme {scheme!r}."


def signature_problem(signature: str, body: bytes, token: str) -> str | None:
    parts = dict(part.strip().partition("=")[::2] for part in signature.split(","))
    timestamp, digest = parts.get("t", ""), parts.get("v1", "")
    if not timestamp.isdigit() or not digest:
        return "X-Signature must read t=<unix seconds>,v1=<hex HMAC-SHA256>."
    # Replay protection: a captured request stops working after five minutes.
    if abs(time.time() - int(timestamp)) > SIGNATURE_MAX_AGE_SECONDS:
        return f"X-Signature timestamp is more than {SIGNATURE_MAX_AGE_SECONDS}s from now."
    expected = hmac.new(token.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), digest.lower()):
        return "X-Signature does not match the body."
    return None


# Bodies -------------------------------------------------------------------------------


class BadBody(Exception):
    def __init__(self, status: int, code: str, detail: str):
        self.answer = error(status, code, detail)


def parse_json(content_type: str, body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    media = content_type.partition(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise BadBody(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise BadBody(400, "invalid_json", f"The body is not valid JSON: {exc}.") from exc
    if not isinstance(payload, dict):
        raise BadBody(400, "invalid_json", "The body must be a JSON object.")
    return payload


def parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    # The stdlib email parser reads multipart/form-data: the `cgi` module is gone in 3.13.
    if not content_type.lower().startswith("multipart/form-data"):
        raise BadBody(415, "unsupported_media_type", "Send documents as multipart/form-data.")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise BadBody(400, "invalid_multipart", "The multipart body could not be read.")
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        content = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            form[name] = {
                "filename": part.get_filename(),
                "content_type": part.get_content_type(),
                "content": content,
            }
        else:
            form[name] = content.decode(part.get_content_charset() or "utf-8", "replace")
    return form


def fingerprint(method: str, path: str, payload: Any) -> str:
    """What makes two requests "the same" for an Idempotency-Key: the parsed body, not its
    bytes, because a retried multipart upload gets a fresh boundary and JSON encoders may
    order keys differently."""
    if isinstance(payload, dict) and isinstance(payload.get("file"), dict):
        upload = payload["file"]
        payload = {
            **payload,
            "file": {**upload, "content": hashlib.sha256(upload["content"]).hexdigest()},
        }
    canonical = json.dumps([method, path, payload], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# Work ---------------------------------------------------------------------------------


def create_record(kind: str, status: int = 201) -> Callable[..., Answer]:
    def apply(store: Store, db, account: str, cleaned: dict[str, Any]) -> Answer:
        store.account_row(db, account, create=True)
        return Answer(status, store.record_create(db, kind=kind, account=account, fields=cleaned))

    return apply


def update_contact(store: Store, db, account: str, cleaned: dict[str, Any]) -> Answer:
    row = store.account_row(db, account, create=True)
    row["contact"].update(cleaned["changes"])
    store.account_save(db, account, row)
    fields = {**cleaned, "contact": row["contact"]}
    return Answer(
        200, store.record_create(db, kind="contact_updates", account=account, fields=fields)
    )


def add_flag(store: Store, db, account: str, cleaned: dict[str, Any]) -> Answer:
    row = store.account_row(db, account, create=True)
    if cleaned["flag"] not in row["flags"]:
        row["flags"].append(cleaned["flag"])
        store.account_save(db, account, row)
    return Answer(201, store.record_create(db, kind="flags", account=account, fields=cleaned))


def remove_flag(store: Store, db, account: str, cleaned: dict[str, Any]) -> Answer:
    row = store.account_row(db, account, create=True)
    removed = cleaned["flag"] in row["flags"]
    if removed:
        row["flags"].remove(cleaned["flag"])
        store.account_save(db, account, row)
    return Answer(
        200,
        {"account": account, "flag": cleaned["flag"], "removed": removed, "flags": row["flags"]},
    )


def store_document(store: Store, db, account: str, cleaned: dict[str, Any]) -> Answer:
    upload = cleaned.pop("file")
    content = upload["content"]
    fields = {
        "document_type": cleaned["document_type"],
        "filename": upload["filename"],
        "content_type": upload["content_type"],
        "sha256": hashlib.sha256(content).hexdigest(),
        "size": len(content),
        "external_id": cleaned["external_id"],
    }
    store.account_row(db, account, create=True)
    record = store.record_create(
        db, kind="documents", account=account, fields=fields, content=content
    )
    return Answer(201, record)


@dataclass(frozen=True)
class Collection:
    kind: str
    clean: Callable[[dict[str, Any]], dict[str, Any]]
    apply: Callable[..., Answer]
    multipart: bool = False


COLLECTIONS = {
    "arrangements": Collection(
        "arrangements", validation.clean_arrangement, create_record("arrangements")
    ),
    "payments": Collection("payments", validation.clean_payment, create_record("payments")),
    "notes": Collection("notes", validation.clean_note, create_record("notes")),
    "flags": Collection("flags", validation.clean_flag, add_flag),
    "documents": Collection("documents", validation.clean_document, store_document, multipart=True),
}
CONTACT = Collection("contact_updates", validation.clean_contact, update_contact)
FLAG_REMOVAL = Collection("flags", lambda payload: payload, remove_flag)


@dataclass(frozen=True)
class Route:
    account: str
    read: Callable[[Store], Answer] | None = None
    write: Collection | None = None
    flag: str | None = None


def resolve(method: str, segments: list[str]) -> Route | Answer:
    if len(segments) < 2 or segments[0] != "accounts":
        return error(404, "not_found", "No such endpoint.")
    account, rest = segments[1], segments[2:]
    if not ACCOUNT_REF.fullmatch(account):
        return error(404, "not_found", "Account references are 1-128 printable characters.")
    allowed: dict[str, Route] = {}
    if not rest:
        allowed["GET"] = Route(account, read=lambda store: Answer(200, store.account_view(account)))
    elif rest == ["contact"]:
        allowed["GET"] = Route(
            account,
            read=lambda store: Answer(
                200, {"account": account, "contact": store.account_view(account)["contact"]}
            ),
        )
        allowed["PATCH"] = Route(account, write=CONTACT)
    elif rest[0] == "contact" and len(rest) == 2:
        allowed["GET"] = Route(account, read=record_reader("contact_updates", account, rest[1]))
    elif rest[0] in COLLECTIONS and len(rest) == 1:
        kind = rest[0]
        allowed["GET"] = Route(
            account,
            read=lambda store: Answer(200, store.record_list(kind=kind, account=account)),
        )
        allowed["POST"] = Route(account, write=COLLECTIONS[kind])
    elif rest[0] in COLLECTIONS and len(rest) == 2:
        allowed["GET"] = Route(account, read=record_reader(rest[0], account, rest[1]))
        if rest[0] == "flags":
            allowed["DELETE"] = Route(account, write=FLAG_REMOVAL, flag=rest[1])
    if not allowed:
        return error(404, "not_found", "No such endpoint.")
    if method not in allowed:
        return error(
            405, "method_not_allowed", f"Use {', '.join(allowed)}.", Allow=", ".join(allowed)
        )
    return allowed[method]


def record_reader(kind: str, account: str, reference: str) -> Callable[[Store], Answer]:
    def read(store: Store) -> Answer:
        record = store.record_get(kind=kind, account=account, reference=reference)
        if record is None:
            return error(404, "not_found", f"No {kind} record {reference} on this account.")
        return Answer(200, record)

    return read


# Server -------------------------------------------------------------------------------


class DemoCoreServer(ThreadingHTTPServer):
    daemon_threads = True
    # Restart on the same port while the old socket sits in TIME_WAIT.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], *, store: Store, token: str | None, seed=None):
        super().__init__(address, Handler)
        self.store = store
        self.token = token or None
        self.faults = FaultInjector(seed)
        self.stopping = threading.Event()
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request_thread(self, request, client_address):
        with self.connections_lock:
            self.open_connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.open_connections.discard(request)

    def stop(self) -> None:
        """Stop serving and cut kept-alive connections, so callers see the outage at once
        instead of talking to a server that is gone."""
        self.stopping.set()
        self.shutdown()
        self.server_close()
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.store.close()


class Handler(BaseHTTPRequestHandler):
    server: DemoCoreServer
    protocol_version = "HTTP/1.1"
    server_version = "DemoCore/1.0"
    # Headers and body leave in one segment: written separately, Nagle's algorithm and the
    # caller's delayed ACK add about 40 ms to every kept-alive request.
    wbufsize = -1
    disable_nagle_algorithm = True

    def do_GET(self):
        self.handle_one()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_GET

    def log_message(self, format, *args):
        # The one line per request comes from handle_one; the base class's lines would
        # repeat it (and its error lines print request lines we already log).
        pass

    def handle_one(self) -> None:
        started = time.monotonic()
        path = urlsplit(self.path).path
        try:
            answer = self.answer(path)
        except Abandoned:
            self.close_connection = True
            return
        except Exception:
            logger.exception("%s %s failed", self.command, path)
            answer = error(500, "internal_error", "The demo core failed on this request.")
        if not (path.startswith("/_control/") or path == "/healthz"):
            # A store closed by stop() must not keep this last answer from going out.
            with contextlib.suppress(Exception):
                self.server.store.meters_add("requests", f"status:{answer.status}")
        # Logged before sending, so the line exists once the caller has its answer.
        logger.info(
            "%s %s %s %dms",
            self.command,
            path,
            answer.status,
            (time.monotonic() - started) * 1000,
        )
        self.send(answer)

    def send(self, answer: Answer) -> None:
        payload = json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The caller gave up (its timeout): the work, if any, is done all the same.
            self.close_connection = True

    def read_body(self) -> bytes | Answer:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return error(411, "length_required", "Send a Content-Length; chunked is not read.")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            return error(413, "too_large", f"Bodies are at most {MAX_BODY_BYTES} bytes.")
        return self.rfile.read(length) if length else b""

    def answer(self, path: str) -> Answer:
        # Read the body first whatever happens next, so a kept-alive connection never
        # mistakes an unread body for the next request.
        body = self.read_body()
        if isinstance(body, Answer):
            return body
        segments = [unquote(segment) for segment in path.strip("/").split("/")]
        if segments[0] == "_control":
            return self.control(segments[1:], body)
        server = self.server
        faults = server.faults.current()
        if segments == ["healthz"] and self.command == "GET":
            return error(503, "down", "Down (injected).") if faults.down else Answer(200, {})
        if faults.down:
            return error(503, "down", "The core system is unavailable (injected).")
        if server.token:
            problem = auth_problem(self.headers, body, server.token)
            if problem:
                return error(401, "unauthorized", problem, **{"WWW-Authenticate": "Bearer"})
        route = resolve(self.command, segments)
        if isinstance(route, Answer):
            return route
        if server.faults.draw("error_rate"):
            return error(500, "injected_error", "Injected error; nothing was done.")
        if route.read:
            self.slow_down()
            return route.read(server.store)
        return self.write(route, path, body)

    def write(self, route: Route, path: str, body: bytes) -> Answer:
        store, collection = self.server.store, route.write
        content_type = self.headers.get("Content-Type", "")
        try:
            if collection.multipart:
                payload = parse_multipart(content_type, body)
            elif route.flag is not None:
                payload = {"flag": route.flag}
            else:
                payload = parse_json(content_type, body)
        except BadBody as exc:
            return exc.answer
        key = self.headers.get("Idempotency-Key")
        if key is not None:
            if not IDEMPOTENCY_KEY.fullmatch(key):
                return error(400, "invalid_idempotency_key", "1-255 printable ASCII characters.")
            replay = self.claim(key, fingerprint(self.command, path, payload))
            if replay is not None:
                return replay
        else:
            store.meters_add("unkeyed")
        try:
            self.slow_down()
            try:
                cleaned = collection.clean(payload)
            except validation.Invalid as exc:
                answer = Answer(422, {"errors": exc.errors})
                if key is not None:
                    with store.transaction() as db:
                        store.idempotency_finish(db, key, answer.status, answer.body)
                return answer
            # The record and the stored response commit together: a replay can never miss
            # work that was done, nor find a response for work that was rolled back.
            with store.transaction() as db:
                answer = collection.apply(store, db, route.account, cleaned)
                if key is not None:
                    store.idempotency_finish(db, key, answer.status, answer.body)
        except BaseException:
            if key is not None:
                store.idempotency_release(key)
            raise
        if self.server.faults.draw("error_after_commit_rate"):
            return error(500, "injected_error_after_commit", "Injected error after the work.")
        return answer

    def claim(self, key: str, request_fingerprint: str) -> Answer | None:
        """None when this request now holds the key and must do the work; otherwise the
        answer to send instead."""
        store = self.server.store
        deadline = time.monotonic() + IDEMPOTENCY_WAIT_SECONDS
        while True:
            state, status, body = store.idempotency_claim(key, request_fingerprint)
            if state == "new":
                return None
            if state == "reused":
                return Answer(
                    422,
                    {
                        "error": "idempotency_key_reused",
                        "detail": "This Idempotency-Key was used for a different request.",
                    },
                )
            if state == "done":
                store.meters_add("replays")
                return Answer(status, body, {"Idempotent-Replayed": "true"})
            if time.monotonic() >= deadline:
                return error(
                    409,
                    "idempotency_key_in_progress",
                    "A request with this Idempotency-Key is still running; retry later.",
                )
            if self.server.stopping.wait(0.02):
                raise Abandoned

    def slow_down(self) -> None:
        faults = self.server.faults.current()
        if faults.latency_ms and self.server.stopping.wait(faults.latency_ms / 1000):
            raise Abandoned
        if self.server.faults.draw("timeout_rate") and self.server.stopping.wait(
            faults.hang_seconds
        ):
            raise Abandoned

    def control(self, segments: list[str], body: bytes) -> Answer:
        server = self.server
        route = (self.command, *segments)
        if route == ("GET", "faults"):
            return Answer(200, server.faults.as_dict())
        if route == ("POST", "faults"):
            try:
                server.faults.update(parse_json(self.headers.get("Content-Type", ""), body))
            except BadBody as exc:
                return exc.answer
            except FaultsInvalid as exc:
                return Answer(422, {"errors": exc.errors})
            return Answer(200, server.faults.as_dict())
        if route == ("POST", "reset"):
            server.store.wipe()
            server.faults.reset()
            return Answer(200, {"reset": True})
        if route == ("GET", "stats"):
            return Answer(200, server.store.stats())
        return error(404, "not_found", "Control endpoints: faults, reset, stats.")


def serve(
    host: str, port: int, *, db_path: str, token: str | None, seed: int | None = None
) -> DemoCoreServer:
    """Bind and return the server; the caller runs `serve_forever()`."""
    return DemoCoreServer((host, port), store=Store(db_path), token=token, seed=seed)
