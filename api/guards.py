"""Bounds that keep the API answering: on requests in progress and on request bodies.

Without them, requests past the server's capacity waited for a thread in an unbounded queue;
their clients timed out and went, and the server kept working through them for minutes after
the load had stopped; and a 100 MB body was read whole before anything looked at it. Shed
requests cost a few microseconds, so the API answers quickly even when saturated, and is back
to normal as soon as the excess stops.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metabuilder.api.errors import PROBLEM_JSON, problem_fields
from metabuilder.domain.limits import size

RETRY_AFTER_SECONDS = 1


class ShedLoad:
    """ASGI middleware: at most ``max_in_flight`` HTTP requests at once; the rest get 503 with
    ``Retry-After``. Paths in ``exempt`` (liveness) are always served: they do no I/O."""

    def __init__(self, app: ASGIApp, max_in_flight: int, exempt: Collection[str] = ("/healthz",)) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.exempt = frozenset(exempt)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            await self._refuse(scope, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await send_problem(send, scope, 503, f"the API is at capacity ({self.max_in_flight} requests in progress); "
                                             f"retry after {RETRY_AFTER_SECONDS} s",
                           [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())])


async def send_problem(send: Send, scope: Scope, status: int, detail: str,
                       headers: list[tuple[bytes, bytes]]) -> None:
    """Answer with a problem+json body, from ASGI middleware (outside the app's error handlers)."""
    body = json.dumps(problem_fields(status, detail, scope["path"])).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class LimitBody:
    """ASGI middleware: a request body over ``max_bytes`` (or its path's own limit) is refused
    with 413, at once when its Content-Length says so, else as soon as the bytes read pass it."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        too_large = f"the request body is over the limit: at most {size(limit)} is accepted here"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await send_problem(send, scope, 413, too_large, [(b"connection", b"close")])
            return
        read = 0

        async def limited() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:  # the app's error handler answers it, in its own format
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited, send)
