"""A webhook receiver on loopback that checks every delivery's signature (the tests' notifications)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.notifications import verify


@dataclass
class Receiver:
    """Answers ``/flaky`` with 500 twice, then 200; ``/down`` always 500; anything else 200."""

    port: int = 0
    secrets: dict[str, str] = field(default_factory=dict)
    """Path -> the secret of the webhook that posts there."""
    got: list[tuple[str, dict[str, str], bytes, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path: str) -> list[tuple[dict[str, str], dict[str, Any], bool]]:
        with self.lock:
            return [(h, json.loads(b), ok) for p, h, b, ok in self.got if p == path]

    def subscribe(self, sessions: sessionmaker[Session], tenant: str, path: str, events: list[str]) -> str:
        """A webhook of ``tenant`` posting ``events`` to ``path`` here (its secret kept to check
        the signatures); its id."""
        from metabuilder.service.notifications import create_webhook
        from metabuilder.store.db import transaction
        from metabuilder.store.tenants import ensure_tenant

        with transaction(sessions) as session:
            ensure_tenant(session, tenant)
            made = create_webhook(session, tenant, {"url": f"http://127.0.0.1:{self.port}{path}", "events": events},
                                  where="test", tenant=None, actor="test")
        self.secrets[path] = made.secret or ""
        return made.id


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    """A local HTTP receiver on loopback for the test's webhooks, checking each signature."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            ok = verify(state.secrets.get(self.path, ""), int(headers["x-metabuilder-timestamp"]), body,
                        headers["x-metabuilder-signature"], now=time.time())
            with state.lock:
                state.got.append((self.path, headers, body, ok))
                seen = sum(1 for p, *_ in state.got if p == self.path)
            failing = self.path == "/down" or (self.path == "/flaky" and seen <= 2)
            self.send_response(500 if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
