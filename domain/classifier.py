"""Classifying a failed step's log into the failure taxonomy, with evidence.

How a decision is made:

1. The log is scanned once for every knowledge-base entry (:mod:`domain.scanner`).
2. The failure point is the last *anchor* line (``BUILD FAILURE``, ``##[error]Process completed
   with exit code 1``, ``make: *** ... Error 2``...), or the end of the log if there is none.
3. Each matching entry scores ``weight x proximity``: its weight says how specific the message
   is; proximity falls with the distance in lines between the entry's hit and the failure point.
   So a specific message near the failure beats a generic one, and a retry warning far up the
   log loses to the assertion right before the end.
4. A class's score combines its three best entries (noisy-or), so agreeing evidence adds up
   while a hundred repeats of one line count once. The exit code (137, 139, 124...) and the
   step's name add small scores of their own.
5. Confidence is the winner's score, discounted when the runner-up is close. Below
   :data:`MIN_CONFIDENCE` the answer is UNKNOWN, with the best guess kept.
6. Where the patterns abstain or are weak (below :data:`WEAK_CONFIDENCE`), the learned model
   (:mod:`domain.learned`) reads the failure window. It decides only at or above its own
   threshold, and over the patterns only when it is the more confident of the two.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from metabuilder.domain.knowledge import EntryKind, KnowledgeBase, bundled_knowledge_base
from metabuilder.domain.scanner import Engine, Scanner, ScanResult
from metabuilder.domain.signals import Evidence, FailureSignal, display_line, fingerprint, retry_after
from metabuilder.domain.taxonomy import FailureType

if TYPE_CHECKING:
    from metabuilder.domain.learned import Model

MIN_CONFIDENCE = 0.3
"""Below this the answer is UNKNOWN (with ``best_guess`` set)."""
WEAK_CONFIDENCE = 0.5
"""Below this the patterns' answer is weak, and the learned model is asked too."""
HALF_LIFE_LINES = 150.0
"""Distance from the failure point at which a hit's proximity has fallen halfway to its floor."""
PROXIMITY_FLOOR = 0.25
"""A hit far from the failure still counts this much: a lone specific message is not ignored."""
EVIDENCE_ENTRIES = 3
"""Entries of the winning class shown as evidence (one line each, plus the anchor)."""

# Exit codes that say something on their own: (class, weight, meaning).
EXIT_CODES: dict[int, tuple[FailureType, float, str]] = {
    124: (FailureType.TRANSIENT, 0.35, "timed out (exit 124)"),
    126: (FailureType.INFRA, 0.4, "command found but not executable (exit 126)"),
    127: (FailureType.INFRA, 0.5, "command not found (exit 127)"),
    134: (FailureType.RUNTIME, 0.45, "aborted, SIGABRT (exit 134)"),
    135: (FailureType.RUNTIME, 0.45, "bus error, SIGBUS (exit 135)"),
    136: (FailureType.RUNTIME, 0.45, "floating point exception, SIGFPE (exit 136)"),
    137: (FailureType.INFRA, 0.55, "killed, SIGKILL (exit 137): out of memory or a hard limit"),
    139: (FailureType.RUNTIME, 0.55, "segmentation fault, SIGSEGV (exit 139)"),
    152: (FailureType.INFRA, 0.45, "CPU time limit exceeded, SIGXCPU (exit 152)"),
    153: (FailureType.INFRA, 0.5, "file size limit exceeded, SIGXFSZ (exit 153)"),
}

# A step's name hints at what it checks; too weak to decide alone (below MIN_CONFIDENCE).
STEP_NAME_HINTS: list[tuple[tuple[str, ...], FailureType]] = [
    (("lint", "format", "fmt", "style", "ruff", "eslint", "flake8"), FailureType.LINT),
    (("typecheck", "type-check", "mypy", "pyright", "tsc", "compile", "build"), FailureType.TYPECHECK),
    (("test", "pytest", "unittest", "jest", "spec"), FailureType.TEST_ASSERT),
    (("migrat", "alembic", "flyway", "liquibase", "schema"), FailureType.SCHEMA_MIGRATION),
    (("audit", "security", "bandit", "semgrep", "secret", "trivy", "gitleaks"), FailureType.SECURITY),
    (("license", "licence", "policy", "compliance"), FailureType.POLICY),
]
STEP_NAME_WEIGHT = 0.2

LogInput = bytes | str | BinaryIO | Iterable[bytes]


@dataclass(frozen=True, slots=True)
class _Scored:
    failure_type: FailureType
    score: float
    evidence: Evidence


@lru_cache(maxsize=64)  # the bundled base, and each tenant's as its runs fail
def _scanner(kb: KnowledgeBase, engine: str | Engine) -> Scanner:
    from metabuilder.domain.scanner import make_engine

    return Scanner(kb, make_engine(kb, engine) if isinstance(engine, str) else engine)


def _as_source(log: LogInput) -> bytes | BinaryIO | Iterable[bytes]:
    if isinstance(log, str):
        return log.encode("utf-8", errors="surrogateescape")
    if isinstance(log, (bytearray, memoryview)):
        return bytes(log)
    return log


def proximity(distance: int) -> float:
    """How much a hit ``distance`` lines from the failure point counts, from 1 down to the floor."""
    return PROXIMITY_FLOOR + (1 - PROXIMITY_FLOOR) * math.pow(0.5, abs(distance) / HALF_LIFE_LINES)


def classify(
    log: LogInput,
    *,
    exit_code: int | None = None,
    step_name: str | None = None,
    kb: KnowledgeBase | None = None,
    now: float | None = None,
    engine: str | Engine = "auto",
    model: Model | None = None,
    learned: bool = True,
) -> FailureSignal:
    """Classify a failed step's log (text, bytes, a binary file or an iterable of byte blocks).

    Reads the log once, in bounded memory. ``now`` (epoch seconds) resolves dates in Retry-After
    headers; ``engine`` is ``auto``, ``hyperscan``, ``re`` or an engine object. ``model`` is the
    learned fallback (default: the bundled one); ``learned=False`` uses the patterns alone.
    """
    signal, result, anchor = _classify_patterns(log, exit_code, step_name, kb, now, engine)
    decided = signal.type is not FailureType.UNKNOWN and signal.confidence >= WEAK_CONFIDENCE
    if not learned or result is None or decided:
        return signal
    from metabuilder.domain.learned import bundled_model  # imported (and read) only when needed

    return _with_model(signal, result, anchor, model or bundled_model())


def _classify_patterns(
    log: LogInput, exit_code: int | None, step_name: str | None, kb: KnowledgeBase | None, now: float | None,
    engine: str | Engine,
) -> tuple[FailureSignal, ScanResult | None, Evidence | None]:
    kb = kb or bundled_knowledge_base()
    scanner = _scanner(kb, engine)  # type: ignore[arg-type]  # engines hash by identity
    try:
        result = scanner.scan(_as_source(log))
    except OSError as err:
        return _unknown(f"the log could not be read: {err}", [], exit_code, step_name), None, None
    if not result.nonblank:
        # A process killed by a signal often prints nothing: the exit code is then all we have.
        if exit_code in EXIT_CODES:
            return _decide(_extra_evidence(exit_code, step_name), None, []), None, None
        return _unknown("the log is empty", [], exit_code, step_name), None, None

    anchors = [Evidence(h.line, display_line(h.text), e.id) for i, e in enumerate(kb.entries)
               if e.kind is EntryKind.ANCHOR and (h := result.last_hit(i))]
    anchor = max(anchors, key=lambda a: a.line or 0, default=None)
    failure_point = anchor.line if anchor and anchor.line else result.lines
    now = time.time() if now is None else now
    scored: list[_Scored] = []
    waits: list[tuple[int, float]] = []
    for index, entry in enumerate(kb.entries):
        kept = result.hits.get(index)
        if not kept or entry.kind is EntryKind.ANCHOR:
            continue
        if entry.kind is EntryKind.RETRY_AFTER:
            for hit in kept:
                seconds = retry_after(hit.text.decode("utf-8", errors="replace"), now)
                if seconds is not None:
                    waits.append((hit.line, seconds))
        best = max(kept, key=lambda h: (proximity(failure_point - h.line), h.line))
        assert entry.failure_type is not None
        scored.append(_Scored(entry.failure_type, entry.weight * proximity(failure_point - best.line),
                              Evidence(best.line, display_line(best.text), entry.id)))
    scored += _extra_evidence(exit_code, step_name)
    if not scored:
        return FailureSignal.of(FailureType.UNKNOWN, 0.0, reason="no known failure message in the log",
                                evidence=[anchor] if anchor else []), result, anchor
    return _decide(scored, anchor, waits), result, anchor


def _with_model(signal: FailureSignal, result: ScanResult, anchor: Evidence | None,
                model: Model | None) -> FailureSignal:
    from metabuilder.domain.learned import features, informative, window_lines

    if model is None or (signal.type is not FailureType.UNKNOWN and signal.confidence >= WEAK_CONFIDENCE):
        return signal
    tail_lines = result.tail.count(b"\n") + (0 if result.tail.endswith(b"\n") or not result.tail else 1)
    lines = window_lines(result.tail, result.lines - tail_lines + 1, anchor.line if anchor else None)
    prediction = model.predict(features(text for _, text in lines), thin=not informative(text for _, text in lines))
    if not prediction.answered:
        return signal
    label, p = prediction.label, prediction.probability
    scores = {**signal.scores, f"model.{label.value}": round(p, 3)}
    # Where the patterns answer, the model may only choose among the classes they found evidence
    # for (a weak answer is mostly a close call between two); it answers alone only where they abstain.
    if signal.type is not FailureType.UNKNOWN and label is not signal.type and (
            p <= signal.confidence or label.value not in signal.scores):
        return replace(signal, scores=scores)
    if label is signal.type:  # two independent readings agree
        return replace(signal, confidence=round(max(signal.confidence, p), 3), scores=scores,
                       reason=f"{signal.reason}; the learned model agrees ({p:.2f})")
    strongest = model.strongest_line(lines, label)
    evidence = [Evidence(strongest[0], strongest[1][:300], f"model.{label.value.lower()}")] if strongest else []
    if anchor and anchor not in evidence:
        evidence.append(anchor)
    evidence.sort(key=lambda e: (e.line is None, e.line or 0))
    why = ("no pattern decides" if signal.type is FailureType.UNKNOWN
           else f"the patterns' {signal.type.value} is weak ({signal.confidence:.2f})")
    return FailureSignal.of(label, p, evidence=evidence, patterns=[*signal.patterns, "model"],
                            retry_after=signal.retry_after, scores=scores,
                            fingerprint=fingerprint(label, evidence),
                            reason=f"{why}; the learned model reads the failure window as {label.value} ({p:.2f})")


def _extra_evidence(exit_code: int | None, step_name: str | None) -> list[_Scored]:
    extra = []
    if exit_code is not None and exit_code in EXIT_CODES:
        failure_type, weight, meaning = EXIT_CODES[exit_code]
        extra.append(_Scored(failure_type, weight, Evidence(None, meaning, f"exit.{exit_code}")))
    if step_name:
        lowered = step_name.lower()
        for words, failure_type in STEP_NAME_HINTS:
            if any(w in lowered for w in words):
                extra.append(_Scored(failure_type, STEP_NAME_WEIGHT,
                                     Evidence(None, f"step name {step_name!r}", f"step.{failure_type.value.lower()}")))
                break
    return extra


def _decide(scored: list[_Scored], anchor: Evidence | None, waits: list[tuple[int, float]]) -> FailureSignal:
    by_class: dict[FailureType, list[_Scored]] = {}
    for s in sorted(scored, key=lambda s: (-s.score, s.evidence.pattern)):
        by_class.setdefault(s.failure_type, []).append(s)
    class_scores = {
        t: 1 - math.prod(1 - s.score for s in items[:3]) for t, items in by_class.items()
    }
    ranking = sorted(class_scores, key=lambda t: (-class_scores[t], t.value))
    winner = ranking[0]
    top = class_scores[winner]
    runner_up = class_scores[ranking[1]] if len(ranking) > 1 else 0.0
    confidence = top * (1 - 0.5 * runner_up / top) if top else 0.0

    evidence = _distinct_lines([s.evidence for s in by_class[winner]])[:EVIDENCE_ENTRIES]
    print_evidence = sorted(_distinct_lines(evidence + ([anchor] if anchor else [])),
                            key=lambda e: (e.line is None, e.line or 0))
    patterns = [s.evidence.pattern for s in sorted(scored, key=lambda s: (-s.score, s.evidence.pattern))]
    wait = max(waits)[1] if waits else None
    common = dict(
        evidence=print_evidence, patterns=list(dict.fromkeys(patterns)), retry_after=wait,
        scores={t.value: round(v, 3) for t, v in sorted(class_scores.items(), key=lambda kv: -kv[1])},
    )
    if confidence < MIN_CONFIDENCE:
        return FailureSignal.of(
            FailureType.UNKNOWN, confidence, best_guess=winner, fingerprint=fingerprint(FailureType.UNKNOWN, evidence),
            reason=f"best guess {winner.value} is below the confidence threshold {MIN_CONFIDENCE}", **common)
    return FailureSignal.of(winner, confidence, fingerprint=fingerprint(winner, evidence),
                            reason=f"{len(by_class[winner])} matching pattern(s) for {winner.value}", **common)


def _distinct_lines(evidence: list[Evidence]) -> list[Evidence]:
    """``evidence`` with each log line once: where two entries match one line, the first (the
    stronger) stays. Evidence that is not a line (the exit code, the step's name) is kept."""
    seen: set[int] = set()
    kept = []
    for e in evidence:
        if e.line is not None:
            if e.line in seen:
                continue
            seen.add(e.line)
        kept.append(e)
    return kept


def _unknown(reason: str, evidence: list[Evidence], exit_code: int | None, step_name: str | None) -> FailureSignal:
    extra = _extra_evidence(exit_code, step_name)
    guess = max(extra, key=lambda s: s.score).failure_type if extra else None
    return FailureSignal.of(FailureType.UNKNOWN, 0.0, evidence=evidence + [s.evidence for s in extra],
                            best_guess=guess, reason=reason, fingerprint=fingerprint(FailureType.UNKNOWN, evidence))


def classify_failure(
    step_name: str,
    logs: LogInput,
    artifacts: Sequence[str | bytes | Path] | None = None,
    *,
    exit_code: int | None = None,
    kb: KnowledgeBase | None = None,
) -> FailureSignal:
    """The seeds' entry point: classify ``logs`` of ``step_name``.

    ``artifacts`` are further outputs of the step (report text, or paths of report files such as
    a JUnit XML); they are read after the log, as if it continued.
    """
    if not artifacts:
        return classify(logs, exit_code=exit_code, step_name=step_name, kb=kb)

    def blocks() -> Iterable[bytes]:
        stream = _as_source(logs)
        if isinstance(stream, bytes):
            yield stream
        else:
            yield from (iter(lambda: stream.read(1 << 20), b"") if hasattr(stream, "read") else stream)
        for artifact in artifacts:
            yield b"\n"
            if isinstance(artifact, Path):
                with artifact.open("rb") as fh:
                    yield from iter(lambda: fh.read(1 << 20), b"")  # noqa: B023
            else:
                yield artifact.encode("utf-8", errors="surrogateescape") if isinstance(artifact, str) else artifact

    return classify(blocks(), exit_code=exit_code, step_name=step_name, kb=kb)


def failure_window(log: LogInput, *, kb: KnowledgeBase | None = None) -> list[str]:
    """The failure window's lines as a person reads them (what the learned model reads)."""
    from metabuilder.domain.learned import window_lines

    _signal, result, anchor = _classify_patterns(log, None, None, kb, None, "auto")
    if result is None:
        return []
    tail_lines = result.tail.count(b"\n") + (0 if result.tail.endswith(b"\n") or not result.tail else 1)
    lines = window_lines(result.tail, result.lines - tail_lines + 1, anchor.line if anchor else None)
    return [text for _, text in lines]
