"""The optional LLM classifier's prompt and the reading of its answer (no I/O here).

It is asked only where the patterns and the learned model both abstain, with the step, the exit
code, what evidence there is and the failure window; its answer counts only if it names a class
with a confidence of at least :data:`MIN_CONFIDENCE`. Without an endpoint nothing changes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

from metabuilder.domain.signals import Evidence, FailureSignal, fingerprint, normalize
from metabuilder.domain.taxonomy import FailureType

MIN_CONFIDENCE = 0.6
CLASSES = [t.value for t in FailureType]
SYSTEM_PROMPT = (
    "You classify why a CI build step failed. Classes: TRANSIENT (network blips, 5xx, timeouts), INFRA "
    "(disk, memory, missing tools, runner), TEST_ASSERT (a test's assertion failed), LINT (style and static "
    "analysis), TYPECHECK (type or compile errors), SECURITY (vulnerabilities, secrets, insecure code), POLICY "
    "(an organisation's rule refused it: licences, protected branches, permissions), RUNTIME (the program "
    "crashed), SCHEMA_MIGRATION (database migrations and schema), RATE_LIMIT (429s, quotas), UNKNOWN (the log "
    "does not say). Answer with one JSON object and nothing else: "
    '{"class": "<one of the classes>", "confidence": <0 to 1>, "line": "<the log line that decides it>"}'
)
_JSON = re.compile(r"\{.*\}", re.S)


def cache_key(step_name: str, exit_code: int | None, window: Sequence[str]) -> str:
    """The same failure (times, paths, numbers masked) asks the endpoint once."""
    text = "\n".join([step_name, str(exit_code), *(normalize(line) for line in window)])
    return hashlib.sha256(text.encode()).hexdigest()


def build_messages(step_name: str, exit_code: int | None, signal: FailureSignal,
                   window: Sequence[str]) -> list[dict[str, str]]:
    evidence = "\n".join(f"- {e.text} [{e.pattern}]" for e in signal.evidence) or "- none"
    user = (f"Step: {step_name}\nExit code: {exit_code}\nEvidence found by patterns:\n{evidence}\n"
            f"Best guess so far: {signal.best_guess.value if signal.best_guess else 'none'}\n"
            "End of the log, up to the failure:\n" + "\n".join(window))
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user[-12_000:]}]


def read_answer(content: str, signal: FailureSignal) -> FailureSignal:
    """``signal`` decided by the answer, or ``signal`` unchanged if the answer is unusable or unsure."""
    match = _JSON.search(content or "")
    try:
        data = json.loads(match.group(0)) if match else {}
        label = FailureType(str(data.get("class", "")).strip().upper())
        confidence = min(1.0, max(0.0, float(data.get("confidence", 0))))
    except (ValueError, TypeError):
        return signal
    if label is FailureType.UNKNOWN or confidence < MIN_CONFIDENCE:
        return signal
    line = str(data.get("line") or "")[:300]
    evidence = [Evidence(None, line, f"llm.{label.value.lower()}")] if line else []
    return FailureSignal.of(label, confidence, evidence=evidence + list(signal.evidence),
                            patterns=[*signal.patterns, "llm"], retry_after=signal.retry_after,
                            scores={**signal.scores, f"llm.{label.value}": confidence},
                            fingerprint=fingerprint(label, evidence),
                            reason=f"no pattern or model decides; the LLM reads it as {label.value} ({confidence:.2f})")
