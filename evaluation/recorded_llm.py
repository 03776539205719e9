"""A local OpenAI-compatible endpoint that answers from recorded responses, so that an evaluation
is deterministic and offline.

Each golden task that reaches the LLM fixer ships an ``llm.yaml``: a list of responses, each with
the strings (``match``) that identify the task's prompt (a test name, a path, an error message
from its log) and the ``answer`` the model gave. A request is answered with the first response
whose strings all occur in the prompt, or ``NO_PATCH`` when none does (a model with nothing to
offer). Usage is counted from the text (about four characters a token), so the cost figures of
an evaluation are repeatable. Every request is kept, with the sha256 of its prompt.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NO_PATCH = "NO_PATCH"
MODEL = "recorded"


@dataclass(frozen=True)
class Recorded:
    task: str
    match: tuple[str, ...]
    answer: str


@dataclass
class Exchange:
    prompt_sha256: str
    task: str | None
    """The task whose recording answered, None for NO_PATCH."""


@dataclass
class RecordedModel:
    responses: list[Recorded] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)

    def answer(self, messages: list[dict[str, Any]]) -> tuple[str, Exchange]:
        prompt = "\n".join(str(m.get("content", "")) for m in messages)
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        for r in self.responses:
            if all(s in prompt for s in r.match):
                exchange = Exchange(digest, r.task)
                self.exchanges.append(exchange)
                return r.answer, exchange
        exchange = Exchange(digest, None)
        self.exchanges.append(exchange)
        return NO_PATCH, exchange


def tokens(text: str) -> int:
    return max(1, len(text) // 4)


@contextmanager
def recorded_llm(model: RecordedModel) -> Iterator[str]:
    """Serve ``model``; yields the base URL (``http://127.0.0.1:PORT/v1``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                messages = body["messages"]
            except (ValueError, KeyError, TypeError):
                self._send(400, {"error": {"message": "expected a chat-completions body with messages"}})
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            content, _ = model.answer(messages)
            prompt_tokens = tokens("\n".join(str(m.get("content", "")) for m in messages))
            self._send(200, {
                "id": f"chatcmpl-recorded-{len(model.exchanges)}", "object": "chat.completion", "model": MODEL,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens(content),
                          "total_tokens": prompt_tokens + tokens(content)},
            })

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
