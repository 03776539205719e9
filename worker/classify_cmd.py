"""``metabuilder classify``: classify failure logs, or measure the classifier on a labelled corpus."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from domain.classifier import classify
from domain.evaluation import Evaluation, read_corpus
from domain.knowledge import KnowledgeBase, bundled_knowledge_base, load_knowledge_base
from domain.signals import FailureSignal

_BOLD, _RED, _DIM, _RESET = "\x1b[1m", "\x1b[31m", "\x1b[2m", "\x1b[0m"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("classify", help="classify failure logs (or --eval a labelled corpus)",
                       description="Classify failed steps' logs into the failure taxonomy.")
    p.add_argument("files", nargs="*", metavar="FILE", help="log files; - reads standard input")
    p.add_argument("--json", action="store_true", help="one JSON object per file, one per line")
    p.add_argument("--exit-code", type=int, metavar="N", help="the step's exit code (137, 139, 124... are signals)")
    p.add_argument("--step", metavar="NAME", help="the step's name (a weak hint: lint, test, migrate...)")
    p.add_argument("--eval", metavar="DIR", help="measure on a corpus: DIR/labels.csv and DIR/<id>/fail.log")
    p.add_argument("--patterns", metavar="FILE", action="append", default=[],
                   help="extra knowledge-base entries (YAML), added to the bundled ones")
    p.add_argument("--engine", choices=["auto", "hyperscan", "re"], default="auto", help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_classify)


def _knowledge_base(extra_files: list[str]) -> KnowledgeBase:
    kb = bundled_knowledge_base()
    for path in extra_files:
        kb = kb.extended(load_knowledge_base(path).entries)
    return kb


def cmd_classify(args: argparse.Namespace, _settings: object = None) -> int:
    kb = _knowledge_base(args.patterns)
    if args.eval:
        if args.files:
            raise ValueError("give either --eval DIR or log files, not both")
        return _evaluate(Path(args.eval), kb, args.engine)
    if not args.files:
        raise ValueError("no log given: name one or more files, or - for standard input")
    missing = [f for f in args.files if f != "-" and not Path(f).is_file()]
    if missing:
        raise ValueError(f"{missing[0]}: no such file")
    color = sys.stdout.isatty() and not args.json
    for name in args.files:
        if name == "-":
            signal = classify(sys.stdin.buffer, exit_code=args.exit_code, step_name=args.step, kb=kb,
                              engine=args.engine)
        else:
            with open(name, "rb") as fh:
                signal = classify(fh, exit_code=args.exit_code, step_name=args.step, kb=kb, engine=args.engine)
        if args.json:
            print(escaped_json({"file": name, **signal.to_dict()}))
        else:
            _print_signal(name, signal, sys.stdout, color)
    return 0


def shown(text: str) -> str:
    """``text`` safe to print on a terminal: every non-printable character as an escape (``\\x1b``,
    ``\\x9b``, ``\\x07``...), so that a log cannot reset, move or recolour the reader's terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def escaped_json(data: object) -> str:
    """JSON of ``data`` in which no character reaches the terminal raw: JSON escapes only C0 controls;
    DEL, C1 controls (``\\x9b`` is a CSI) and other non-printables are written ``\\uXXXX`` too."""
    text = json.dumps(data, ensure_ascii=False)
    return text if text.isprintable() else "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _print_signal(name: str, signal: FailureSignal, out: TextIO, color: bool) -> None:
    def paint(text: str, style: str) -> str:
        text = shown(text)
        return f"{style}{text}{_RESET}" if color else text

    actions = ", ".join(a for a, on in (("retry", signal.can_retry), ("re-plan", signal.requires_replan),
                                        ("approval", signal.requires_approval)) if on) or "fix the code"
    guess = f", best guess {signal.best_guess.value}" if signal.best_guess else ""
    out.write(f"{shown(name)}: {paint(signal.type.value, _BOLD)} (confidence {signal.confidence:.2f}{guess}) "
              f"-> {actions}\n")
    if signal.reason:
        out.write(f"  {paint(signal.reason, _DIM)}\n")
    for e in signal.evidence:
        where = f"{e.line:>7}" if e.line is not None else "      -"
        out.write(f"  {where} | {paint(e.text, _RED)}  {paint('[' + e.pattern + ']', _DIM)}\n")
    if signal.retry_after is not None:
        out.write(f"  retry after {signal.retry_after:g}s\n")
    if signal.fingerprint:
        out.write(f"  fingerprint {signal.fingerprint}\n")


def _evaluate(directory: Path, kb: KnowledgeBase, engine: str) -> int:
    corpus = read_corpus(directory)
    evaluation = Evaluation()
    started = time.perf_counter()
    total_bytes = 0
    for item in corpus:
        total_bytes += item.path.stat().st_size
        with item.path.open("rb") as fh:
            signal = classify(fh, kb=kb, engine=engine, exit_code=item.exit_code)
        evaluation.add(item.id, item.label, item.alt, signal.type)
    elapsed = time.perf_counter() - started
    print(f"corpus {directory}: {len(corpus)} logs, {total_bytes / 2**20:.1f} MiB in {elapsed:.2f}s")
    print()
    for line in evaluation.report():
        print(line)
    return 0
