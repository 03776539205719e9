"""The local HTTP services golden tasks talk to: package mirrors, APIs, registries that fail the
way real ones do (5xx while they deploy, 429 with Retry-After, a reset connection, a slow first
answer, a 403 from a protected environment).

Each task's ``fixture.yaml`` lists, per path, the answers in order; the last one repeats. An
answer is ``reset`` (the connection is reset without a response) or
``[delay=SECONDS ]STATUS[ retry-after=SECONDS][ BODY]``. Every run gets its own prefix
(``/r/<key>``), so concurrent tasks and repeated runs count their requests apart.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_ANSWER = re.compile(r"^(?:delay=(?P<delay>[0-9.]+)\s+)?(?P<status>[0-9]{3})(?:\s+retry-after=(?P<after>[0-9]+))?"
                     r"(?:\s+(?P<body>.*))?$", re.S)
_REASONS = {200: "OK", 403: "Forbidden", 429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: str = "ok"
    delay: float = 0.0
    retry_after: int | None = None
    reset: bool = False


def parse_answer(text: str, where: str) -> Answer:
    """One answer of a fixture route; ``ValueError`` naming ``where``."""
    if text.strip() == "reset":
        return Answer(reset=True)
    m = _ANSWER.match(text.strip())
    if not m:
        raise ValueError(f"{where}: {text!r} is not an answer (reset, or [delay=S ]STATUS[ retry-after=S][ BODY])")
    return Answer(status=int(m["status"]), body=m["body"] if m["body"] is not None else "ok",
                  delay=float(m["delay"] or 0), retry_after=int(m["after"]) if m["after"] else None)


class FixtureService:
    """Routes of every registered run, and how many requests each route got."""

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, list[Answer]]] = {}
        self.calls: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()
        self.base = ""

    def register(self, key: str, routes: Mapping[str, Sequence[str]], where: str) -> str:
        """Add a run's routes; returns its base URL."""
        self.routes[key] = {path: [parse_answer(a, f"{where}: {path}") for a in answers] or [Answer()]
                            for path, answers in routes.items()}
        return f"{self.base}/r/{key}"

    def answer(self, path: str) -> Answer:
        parts = path.split("?", 1)[0].split("/", 3)  # '', 'r', key, rest
        if len(parts) < 4 or parts[1] != "r" or parts[2] not in self.routes:
            return Answer(status=404, body="no such fixture")
        key, rest = parts[2], "/" + parts[3]
        answers = self.routes[key].get(rest)
        if answers is None:
            return Answer()
        with self.lock:
            n = self.calls.get((key, rest), 0)
            self.calls[(key, rest)] = n + 1
        return answers[min(n, len(answers) - 1)]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out and hung up (as the slow fixtures make them) is expected


@contextmanager
def fixture_service() -> Iterator[FixtureService]:
    service = FixtureService()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            a = service.answer(self.path)
            if a.reset:
                # SO_LINGER 0: close() sends a RST, as a load balancer dropping the connection does.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            if a.delay:
                time.sleep(a.delay)
            data = a.body.encode()
            self.send_response(a.status, _REASONS.get(a.status))
            if a.retry_after is not None:
                self.send_header("Retry-After", str(a.retry_after))
            self.send_header("Content-Type", "application/json" if data[:1] in (b"{", b"[") else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve  # noqa: N815 (http.server's naming)

        def log_message(self, *args: object) -> None:
            pass

    server = _QuietServer(("127.0.0.1", 0), Handler)
    service.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
