"""A real SMTP server on loopback (aiosmtpd) for the email provider: records envelopes and
the parsed messages, refuses chosen recipients, and can be slow on purpose."""

from __future__ import annotations

import asyncio
import email
import logging
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller

# aiosmtpd logs every command at INFO, addresses included: not wanted in test output.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


class _Controller(Controller):
    """aiosmtpd binds a fixed port; this one asks the OS for a free one, so parallel test
    runs never collide."""

    def _create_server(self):
        async def create():
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=0
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


class SmtpStandIn:
    """`.messages` holds each accepted message parsed (email.message.EmailMessage), and
    `.envelopes` the SMTP envelope. `refuse(address, code=550)` refuses a recipient at RCPT;
    `delay` holds the answer to DATA back, for timeout tests."""

    def __init__(self, *, delay: float = 0.0):
        self.delay = delay
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Envelope] = []
        self._refused: dict[str, int] = {}
        self._lock = threading.Lock()
        self._controller = _Controller(self, hostname="127.0.0.1")
        self._controller.start()
        self.host = "127.0.0.1"
        self.port: int = self._controller.port

    def refuse(self, address: str, *, code: int = 550) -> None:
        with self._lock:
            self._refused[address.lower()] = code

    # aiosmtpd handler hooks
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        with self._lock:
            code = self._refused.get(address.lower())
        if code is not None:
            status = "5.1.1" if code >= 500 else "4.2.1"
            return f"{code} {status} <{address}>: Recipient address rejected"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        data: bytes = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(data, policy=default_policy)
        with self._lock:
            self.envelopes.append(Envelope(envelope.mail_from, list(envelope.rcpt_tos), data))
            self.messages.append(parsed)
        return "250 Message accepted for delivery"

    def stop(self) -> None:
        if self._controller.loop.is_running():
            self._controller.stop()

    def __enter__(self) -> SmtpStandIn:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
