"""A loopback HTTP dependency that is down (503) until told to recover, counting what it gets.

The circuit-breaker storm test points many runs' steps at it: the count of requests during the
outage is what breakers save.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FlakyService:
    def __init__(self) -> None:
        self.down = True
        self.lock = threading.Lock()
        self.during_outage = 0
        self.after_recovery = 0
        self.url = ""

    def recover(self) -> None:
        with self.lock:
            self.down = False

    def fail_again(self) -> None:
        with self.lock:
            self.down = True

    @property
    def requests(self) -> int:
        return self.during_outage + self.after_recovery

    def handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                with service.lock:
                    down = service.down
                    if down:
                        service.during_outage += 1
                    else:
                        service.after_recovery += 1
                body = b"unavailable\n" if down else b"ok\n"
                self.send_response(503 if down else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@contextmanager
def flaky_service() -> Iterator[FlakyService]:
    """A running :class:`FlakyService` on 127.0.0.1 (its ``url``), down until ``recover()``."""
    service = FlakyService()
    server = ThreadingHTTPServer(("127.0.0.1", 0), service.handler())
    service.url = f"http://127.0.0.1:{server.server_address[1]}/simple/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
