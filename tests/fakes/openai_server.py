"""A local HTTP server that speaks the OpenAI chat-completions protocol, for the LLM fixer.

It answers ``POST /v1/chat/completions`` with the next queued reply (a fixed text, like a model
that always writes the same patch) and records every request so tests can read the prompt.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    def __init__(self) -> None:
        self.replies: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.connections = 0
        """TCP connections accepted (whatever was sent on them)."""
        self.usage = (1000, 200)
        """The ``usage`` every answer reports: (prompt tokens, completion tokens)."""
        self.errors: list[tuple[int, dict[str, str]]] = []
        """Answers to give before the next replies: (HTTP status, headers), e.g. (429, {"Retry-After": "1"})."""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                fake.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if fake.errors:
                    status, headers = fake.errors.pop(0)
                    self._send(status, {"error": {"message": f"fake error {status}"}}, headers)
                    return
                content = fake.replies.pop(0) if fake.replies else "NO_PATCH"
                prompt, completion = fake.usage
                self._send(200, {
                    "id": f"chatcmpl-{len(fake.requests)}", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion},
                })

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


class _CountingServer(ThreadingHTTPServer):
    fake: FakeOpenAI

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.fake.connections += 1
        return True


@contextmanager
def fake_openai() -> Iterator[tuple[FakeOpenAI, str]]:
    """Yield the fake and its base URL (``http://127.0.0.1:PORT/v1``)."""
    fake = FakeOpenAI()
    server = _CountingServer(("127.0.0.1", 0), fake.handler())
    server.fake = fake
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
