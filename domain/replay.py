"""Replaying a run's decisions from its bundle: the pure part.

A replay bundle keeps what each step's attempt did (command, exit code, the log, its
classification, the decision taken), each LLM exchange and each patch review. Re-driving it
runs the same pure decisions again on the current code and knowledge base (no commands, no LLM):
the classification of the stored log, the retry decision of the policy, the rungs and fixers the
ladder allows the class, and the sandbox's review of each patch. The decision diff lists every
place where today's answer differs from the recorded one.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metabuilder.domain.classifier import classify
from metabuilder.domain.knowledge import KnowledgeBase
from metabuilder.domain.plans import Step
from metabuilder.domain.policy import AutofixPolicy
from metabuilder.domain.protected import ProtectedCheck
from metabuilder.domain.repair import LADDER, fixers_for
from metabuilder.domain.sandbox import review_patch
from metabuilder.domain.signals import FailureSignal
from metabuilder.domain.taxonomy import FailureType


def classification(signal: FailureSignal | None) -> dict[str, Any] | None:
    """The parts of a classification a replay compares."""
    if signal is None:
        return None
    return {"type": signal.type.value, "confidence": round(signal.confidence, 3), "fingerprint": signal.fingerprint,
            "patterns": list(signal.patterns[:5]), "retry_after": signal.retry_after}


def ladder_decision(signal: FailureSignal, step: Step) -> dict[str, Any]:
    """What the ladder allows the failure: its rungs, and the fixers of its patch rung in order."""
    return {"rungs": [r.value for r in LADDER[signal.type]],
            "fixers": [c.fixer.value for c in fixers_for(signal, step)]}


def retry_decision(signal: FailureSignal, policy: AutofixPolicy | None, temporal_attempt: int,
                   retry_budget: int) -> dict[str, Any]:
    """The policy's answer for a failed attempt: retried or not, after how long (without jitter).
    The step activity decides the same way (``activities.steps._retry_delay``)."""
    if policy is None or temporal_attempt - 1 >= min(policy.retries_for(signal.type), retry_budget):
        return {"retry": False, "delay": None}
    return {"retry": True, "delay": policy.delay(signal.type, temporal_attempt, retry_after=signal.retry_after)}


def step_decisions(log: bytes, exit_code: int, step: Step, kb: KnowledgeBase | None, policy: AutofixPolicy | None,
                   temporal_attempt: int, retry_budget: int) -> dict[str, Any]:
    """Every decision about one failed attempt, from its log alone."""
    signal = classify(io.BytesIO(log), exit_code=exit_code, step_name=step.name, kb=kb)
    return {"classification": classification(signal),
            "retry": retry_decision(signal, policy, temporal_attempt, retry_budget),
            "ladder": ladder_decision(signal, step)}


def review_decision(diff: str, failure_type: FailureType, write_scope: Sequence[str],
                    checks: Sequence[ProtectedCheck]) -> dict[str, Any]:
    review = review_patch(diff, failure_type, write_scope, checks)
    return {"verdict": review.verdict.value, "problems": list(review.problems)}


@dataclass(frozen=True)
class Difference:
    """One decision the current code takes differently."""

    where: str
    """The entry: ``step test attempt 2``, ``patch 5``..."""
    what: str
    """The dotted field: ``classification.type``, ``retry.delay``, ``ladder.rungs``..."""
    recorded: object
    replayed: object

    def __str__(self) -> str:
        return f"{self.where}: {self.what}: {self.recorded!r} -> {self.replayed!r}"


def differences(where: str, recorded: Mapping[str, Any] | None, replayed: Mapping[str, Any] | None,
                prefix: str = "") -> list[Difference]:
    """Every leaf that differs between two decision mappings (a missing side counts as None)."""
    out: list[Difference] = []
    recorded, replayed = recorded or {}, replayed or {}
    for key in sorted(set(recorded) | set(replayed)):
        a, b, name = recorded.get(key), replayed.get(key), f"{prefix}{key}"
        if isinstance(a, Mapping) or isinstance(b, Mapping):
            if a is None or b is None:
                if a != b:
                    out.append(Difference(where, name, a, b))
                continue
            out += differences(where, a, b, f"{name}.")
        elif a != b:
            out.append(Difference(where, name, a, b))
    return out
