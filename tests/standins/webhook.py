"""A loopback webhook receiver: an API client's endpoint as our deliveries meet it. It
answers 200 unless told otherwise (`fail_next`, `answer_next`) and keeps every request."""

from __future__ import annotations

from typing import Any

from tests.standins.http import LoopbackStandIn, Request


class WebhookReceiver(LoopbackStandIn):
    def handle(self, request: Request) -> tuple[int, Any]:
        scripted = self._take_scripted()
        if scripted is not None:
            status, payload = scripted
            return status, payload if payload is not None else {"error": "receiver failed"}
        return 200, {"received": True}
