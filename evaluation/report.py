"""What ``metabuilder eval`` prints: a line per task, then the figures (text or JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from metabuilder.domain.golden import Score, Summary, miss


def task_line(s: Score) -> str:
    mark = "✓" if s.resolved else "✗"
    o = s.observed
    what = f"{o.failure_class or '-'} -> {o.strategy or '-'} -> {o.status}"
    if o.level:
        what += f" [{o.level} {o.confidence:.2f}]"
    line = f"{mark} {s.task:<28} {what:<52} {o.seconds:6.1f}s"
    return line if s.resolved else f"{line}  ({miss(s)})"


def text(summary: Summary, scores: Sequence[Score], *, model: str) -> str:
    a = summary.accuracy
    lines = [
        "", f"Golden tasks: {summary.tasks}, resolved as expected: {summary.resolved}/{summary.tasks}",
        f"Decision accuracy: class {a['class']:.0%}, strategy {a['strategy']:.0%}, status {a['status']:.0%}",
        f"Unsafe patches applied: {summary.unsafe_applied} (refused by the sandbox: {summary.refused})",
        f"LLM ({model}): {summary.llm_calls} request(s), {summary.tokens} tokens, ${summary.cost_usd:.4f}",
        "Time to resolution by class (median / max seconds):",
    ]
    lines += [f"  {c:<17} {t['median']:6.1f} / {t['max']:6.1f}" for c, t in summary.seconds_by_class.items()]
    if summary.calibration:
        lines.append("Confidence of repaired runs vs. real correctness:")
        lines += [f"  {level:<7} {row['correct']}/{row['runs']} right" for level, row in summary.calibration.items()]
    if summary.misses:
        lines += ["Not resolved as expected:", *[f"  - {m}" for m in summary.misses]]
    return "\n".join(lines)


def as_json(summary: Summary, scores: Sequence[Score], *, model: str, wall_seconds: float) -> dict[str, Any]:
    def task(s: Score) -> dict[str, Any]:
        e, o = s.expected, s.observed
        return {"task": s.task, "language": e.language, "resolved": s.resolved,
                "expected": {"class": e.failure_class, "strategy": e.strategy, "status": e.status,
                             "fixer": e.fixer, "check": e.check},
                "observed": {k: v for k, v in asdict(o).items()},
                "scores": {"class": s.class_ok, "strategy": s.strategy_ok, "status": s.status_ok,
                           "fixer": s.fixer_ok, "check": s.check_ok}}

    return {"model": model, "wall_seconds": round(wall_seconds, 1), **asdict(summary),
            "results": [task(s) for s in scores]}
