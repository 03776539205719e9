"""The LLM fixer: asks any OpenAI-compatible chat-completions endpoint for a unified diff.

Configured by URL, model and key (``META_BUILDER_LLM_URL``, ``META_BUILDER_LLM_MODEL``,
``META_BUILDER_LLM_API_KEY``); prices per million tokens turn the reported usage into a cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
_FENCE = re.compile(r"```(?:diff|patch)?\s*\n(.*?)```", re.S)


class LlmError(RuntimeError):
    """The endpoint could not be reached or answered something unusable."""


@dataclass(frozen=True)
class LlmSettings:
    url: str
    """Base URL, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8080/v1``."""
    model: str
    api_key: str = ""
    price_in_per_million: float = 0.0
    price_out_per_million: float = 0.0
    timeout_seconds: float = 120.0


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


async def propose(settings: LlmSettings, inp: FixInput, workdir: Path) -> PatchProposal:
    files = gather(workdir, inp.step.command, [e.text for e in (inp.signal.evidence if inp.signal else [])],
                   inp.log_tail)
    body = {"model": settings.model, "temperature": 0, "messages": build_messages(inp, files)}
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    url = settings.url.rstrip("/") + "/chat/completions"
    try:
        async with httpx.AsyncClient(timeout=settings.timeout_seconds) as client:
            resp = await client.post(url, json=body, headers=headers)
    except httpx.HTTPError as err:
        raise LlmError(f"LLM endpoint {url}: {err.__class__.__name__}: {err}") from err
    if resp.status_code != 200:
        raise LlmError(f"LLM endpoint {url} answered {resp.status_code}: {resp.text[:300]}")
    try:
        data = resp.json()
        content = data["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise LlmError(f"LLM endpoint {url} answered without choices[0].message.content: {resp.text[:300]}") from err
    usage = data.get("usage") or {}
    tokens_in, tokens_out = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    cost = (tokens_in * settings.price_in_per_million + tokens_out * settings.price_out_per_million) / 1e6
    return PatchProposal(fixer=Fixer.LLM, diff=extract_diff(content), summary=f"{len(files)} file(s) sent",
                         context=[f.label() for f in files],
                         model=str(data.get("model") or settings.model), tokens_in=tokens_in,
                         tokens_out=tokens_out, cost_usd=round(cost, 6))
