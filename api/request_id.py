"""``X-Request-ID``: every request has an id, the caller's (when usable) or a new one; it is sent
back, logged, and written into each audit event the request causes (``store.audit.REQUEST_ID``)."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metabuilder.store.audit import REQUEST_ID

HEADER = b"x-request-id"
USABLE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RequestId:
    """Pure ASGI (no task of its own), so the context variable reaches the route and its thread."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == HEADER), "")
        request_id = given if USABLE.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
