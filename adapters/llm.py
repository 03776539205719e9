"""The LLM fixer: asks any OpenAI-compatible chat-completions endpoint for a unified diff.

Configured by URL, model and key (``META_BUILDER_LLM_URL``, ``META_BUILDER_LLM_MODEL``,
``META_BUILDER_LLM_API_KEY``); prices per million tokens turn the reported usage into a cost.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from metabuilder.adapters.llm_context import ContextFile, gather
from metabuilder.domain.outcomes import Fixer
from metabuilder.domain.payloads import FixInput, PatchProposal

SYSTEM_PROMPT = (
    "You repair failing build steps. You get the step, the failure class and evidence from its log, "
    "the end of the log, and the relevant files of the workspace. Answer with exactly one unified diff "
    "(paths relative to the workspace root, a/ and b/ prefixes) inside a ```diff block, changing as "
    "little as possible. Never touch .git/, CI configuration or credentials. Fix the cause, never the "
    "check: a patch that silences it (# noqa, # type: ignore, a skipped or weakened test, an edit to "
    "license data, a scanner's baseline or a tool's configuration) is not applied. If you cannot fix it, "
    "answer NO_PATCH."
)
CANDIDATE_TEMPERATURE = 0.8
"""The sampling temperature of best-of-N candidates after the first (``FixInput.candidate`` > 0)."""
_FENCE = re.compile(r"```(?:diff|patch)?\s*\n(.*?)```", re.S)


@dataclass(frozen=True)
class Exchange:
    """One request to the endpoint and its answer, as sent and received (for replay bundles)."""

    messages: list[dict[str, str]]
    answer: str
    model: str
    diff: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    context: list[str] = field(default_factory=list)


OnExchange = Callable[[Exchange], Awaitable[None]]


class LlmError(RuntimeError):
    """The endpoint could not be reached or answered something unusable.

    ``retryable`` is False for a 4xx answer other than 408 and 429 (a bad request, a bad key, an
    unknown model: asking again gets the same answer); ``retry_after`` is the wait a 429 asked
    for (its ``Retry-After`` header, in seconds), else None."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


RETRYABLE_4XX = frozenset({408, 429})
MAX_RETRY_AFTER_SECONDS = 600.0
"""A longer ``Retry-After`` is capped: the activity's retry waits at most this long."""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: a number of seconds or an HTTP date; None if
    absent or unreadable. Capped at :data:`MAX_RETRY_AFTER_SECONDS`."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            at = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        seconds = at.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


@dataclass(frozen=True)
class LlmSettings:
    url: str
    """Base URL, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8080/v1``."""
    model: str
    api_key: str = ""
    price_in_per_million: float = 0.0
    price_out_per_million: float = 0.0
    timeout_seconds: float = 120.0
    temperature: float = 0.0
    """``META_BUILDER_LLM_TEMPERATURE``: sent with every request (0: the most repeatable answers)."""
    max_tokens: int = 2048
    """``META_BUILDER_LLM_MAX_TOKENS``: the answer's cap, sent as ``max_tokens``; with the prompt's
    size it bounds a call's worst-case cost, which is what a budget reserves before the call."""


def build_messages(inp: FixInput, files: list[ContextFile]) -> list[dict[str, str]]:
    signal = inp.signal
    lines = [f"Step {inp.step.name!r} failed. Command: {inp.step.command}"]
    if signal is not None:
        lines.append(f"Failure class: {signal.type.value} (confidence {signal.confidence:.2f})")
        lines += [f"Evidence (line {e.line}): {e.text}" for e in signal.evidence]
    lines += ["", "End of the log:", inp.log_tail[-6000:], ""]
    for f in files:
        lines += [f"File {f.path}" + (" (an excerpt)" if f.truncated else "") + ":", "```", f.text, "```", ""]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def extract_diff(content: str) -> str:
    """The diff in an answer: the fenced block, or the answer itself if it is a bare diff."""
    if "NO_PATCH" in content and "---" not in content:
        return ""
    if m := _FENCE.search(content):
        return m.group(1).strip("\n") + "\n"
    stripped = content.strip()
    if stripped.startswith(("diff --git", "--- ")):
        return stripped + "\n"
    return ""


Prepare = Callable[[list[dict[str, str]]], tuple[list[dict[str, str]], int]]
"""What is done to the messages before they are sent (redaction), and how many matches it masked."""


async def propose(settings: LlmSettings, inp: FixInput, workdir: Path, on_exchange: OnExchange | None = None,
                  prepare: Prepare | None = None) -> PatchProposal:
    """Ask the endpoint for a patch. ``prepare`` (redaction) runs before anything is sent, and
    ``on_exchange`` is told what was sent (so a replay bundle keeps only the redacted text)."""
    files = gather(workdir, inp.step.command, [e.text for e in (inp.signal.evidence if inp.signal else [])],
                   inp.log_tail)
    messages, masked = prepare(build_messages(inp, files)) if prepare else (build_messages(inp, files), 0)
    # Best of N: the first candidate at the configured temperature, the others sampled (at least
    # CANDIDATE_TEMPERATURE), or N answers would be one.
    temperature = settings.temperature if inp.candidate == 0 else max(settings.temperature, CANDIDATE_TEMPERATURE)
    body = {"model": settings.model, "temperature": temperature, "max_tokens": settings.max_tokens,
            "messages": messages}
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    url = settings.url.rstrip("/") + "/chat/completions"
    try:
        async with httpx.AsyncClient(timeout=settings.timeout_seconds) as client:
            resp = await client.post(url, json=body, headers=headers)
    except httpx.HTTPError as err:
        raise LlmError(f"LLM endpoint {url}: {err.__class__.__name__}: {err}") from err
    if resp.status_code != 200:
        code = resp.status_code
        raise LlmError(f"LLM endpoint {url} answered {code}: {resp.text[:300]}",
                       retryable=not (400 <= code < 500 and code not in RETRYABLE_4XX),
                       retry_after=retry_after_seconds(resp.headers.get("Retry-After")) if code == 429 else None)
    try:
        data = resp.json()
        content = data["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise LlmError(f"LLM endpoint {url} answered without choices[0].message.content: {resp.text[:300]}") from err
    usage = data.get("usage") or {}
    tokens_in, tokens_out = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    cost = (tokens_in * settings.price_in_per_million + tokens_out * settings.price_out_per_million) / 1e6
    proposal = PatchProposal(fixer=Fixer.LLM, diff=extract_diff(content), summary=f"{len(files)} file(s) sent"
                             + (f", {masked} secret(s) or pattern(s) redacted" if masked else ""),
                             context=[f.label() for f in files],
                             model=str(data.get("model") or settings.model), tokens_in=tokens_in,
                             tokens_out=tokens_out, cost_usd=round(cost, 6))
    if on_exchange is not None:
        await on_exchange(Exchange(messages, content, proposal.model or settings.model, proposal.diff,
                                   tokens_in, tokens_out, proposal.cost_usd, list(proposal.context)))
    return proposal
