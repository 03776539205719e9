"""``metabuilder classify``: classify failure logs, or measure the classifier on a labelled corpus."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from metabuilder.domain.knowledge import KnowledgeBase
    from metabuilder.domain.scanner import Engine
    from metabuilder.domain.signals import FailureSignal
    from metabuilder.domain.taxonomy import FailureType

from metabuilder.worker.terminal import use_color

_BOLD, _RED, _DIM, _RESET = "\x1b[1m", "\x1b[31m", "\x1b[2m", "\x1b[0m"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("classify", help="classify failure logs (or --eval a labelled corpus)",
                       description="Classify failed steps' logs into the failure taxonomy.")
    p.add_argument("files", nargs="*", metavar="FILE", help="log files; - reads standard input")
    p.add_argument("--json", action="store_true", help="one JSON object per file, one per line")
    p.add_argument("--exit-code", type=int, metavar="N", help="the step's exit code (137, 139, 124... are signals)")
    p.add_argument("--step", metavar="NAME", help="the step's name (a weak hint: lint, test, migrate...)")
    p.add_argument("--eval", metavar="DIR", action="append", type=Path,
                   help="measure on a corpus: DIR/labels.csv and DIR/<id>/fail.log (repeatable)")
    p.add_argument("--folds", type=int, default=5, metavar="N",
                   help="with --eval: leave-tools-out folds (default 5; 0 or 1: none)")
    p.add_argument("--no-model", dest="learned", action="store_false",
                   help="patterns only: no learned fallback")
    p.add_argument("--patterns", metavar="FILE", action="append", default=[],
                   help="extra knowledge-base entries (YAML), added to the bundled ones")
    p.add_argument("--engine", choices=["auto", "hyperscan", "re"], default="auto", help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_classify, needs_settings=False)

    p = sub.add_parser("corrections", help="export people's corrections as a labelled corpus (for classify --eval)",
                       description="Write a tenant's corrections (POST /runs/{id}/corrections) as DIR/labels.csv "
                                   "and DIR/<id>/fail.log, the corpus layout that `classify --eval DIR` reads.")
    p.add_argument("action", choices=["export"])
    p.add_argument("directory", metavar="DIR", type=Path)
    p.add_argument("--tenant", default="default")
    p.set_defaults(fn=cmd_corrections)


def cmd_corrections(args: argparse.Namespace, settings: object) -> int:
    import csv

    from metabuilder.store import knowledge
    from metabuilder.store.db import transaction
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)  # type: ignore[arg-type]
    with transaction(sessions) as session:
        rows = [(c.id, c.corrected, c.exit_code, c.step_name, c.log_window)
                for c in knowledge.list_corrections(session, args.tenant, limit=100_000)]
    args.directory.mkdir(parents=True, exist_ok=True)
    with (args.directory / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "class", "alt_class", "exit_code", "tool", "source"])
        for correction_id, corrected, exit_code, step, window in rows:
            (args.directory / correction_id).mkdir(exist_ok=True)
            (args.directory / correction_id / "fail.log").write_text(window + "\n", encoding="utf-8")
            writer.writerow([correction_id, corrected, "", "" if exit_code is None else exit_code,
                             f"step:{step}", f"correction by a person, tenant {args.tenant}"])
    print(f"{len(rows)} corrections of tenant {args.tenant!r} written to {args.directory} "
          f"(measure with: metabuilder classify --eval {args.directory})")
    return 0


def cmd_classify(args: argparse.Namespace, _settings: object = None) -> int:
    # Imported here, not at the top: every `metabuilder` call builds this command's parser.
    from metabuilder.domain.classifier import classify
    from metabuilder.worker import kb_cache

    if args.eval:
        if args.files:
            raise ValueError("give either --eval DIR or log files, not both")
        kb, engine = kb_cache.load(args.patterns, args.engine)
        return _evaluate(args.eval, kb, engine, args.folds, args.learned)
    if not args.files:
        raise ValueError("no log given: name one or more files, or - for standard input")
    missing = [f for f in args.files if f != "-" and not Path(f).is_file()]
    if missing:
        raise ValueError(f"{missing[0]}: no such file")
    kb, engine = kb_cache.load(args.patterns, args.engine)
    color = use_color(sys.stdout) and not args.json
    for name in args.files:
        if name == "-":
            signal = classify(sys.stdin.buffer, exit_code=args.exit_code, step_name=args.step, kb=kb,
                              engine=engine, learned=args.learned)
        else:
            with open(name, "rb") as fh:
                signal = classify(fh, exit_code=args.exit_code, step_name=args.step, kb=kb, engine=engine,
                                  learned=args.learned)
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


def _evaluate(directories: list[Path], kb: KnowledgeBase, engine: Engine, folds: int, learned: bool) -> int:
    from metabuilder.domain.classifier import classify
    from metabuilder.domain.crossval import leave_tools_out
    from metabuilder.domain.evaluation import Evaluation, read_corpus
    from metabuilder.domain.learned import bundled_model

    corpus = [item for directory in directories for item in read_corpus(directory)]
    model = bundled_model() if learned else None
    patterns_only, evaluation = Evaluation(), Evaluation()
    started = time.perf_counter()
    total_bytes = 0
    for item in corpus:
        total_bytes += item.path.stat().st_size
        data = item.path.read_bytes()
        signal = classify(data, kb=kb, engine=engine, exit_code=item.exit_code, learned=False)
        patterns_only.add(item.id, item.label, item.alt, signal.type, signal.confidence)
        if model is not None:
            signal = classify(data, kb=kb, engine=engine, exit_code=item.exit_code, model=model)
        evaluation.add(item.id, item.label, item.alt, signal.type, signal.confidence)
    elapsed = time.perf_counter() - started
    tools = sorted({item.tool for item in corpus})
    print(f"corpus {', '.join(map(str, directories))}: {len(corpus)} logs from {len(tools)} tools, "
          f"{total_bytes / 2**20:.1f} MiB in {elapsed:.2f}s")
    print()
    print("plain (every pattern" + (", the shipped model" if model else "") + "):")
    print(f"  patterns only      {patterns_only.summary()}")
    if model is not None:
        print(f"  patterns + model   {evaluation.summary()}   (model: {model.trained_on})")
    held_out_misses: list[tuple[str, FailureType, FailureType | None, FailureType]] = []
    if folds > 1 and len(tools) > 1:
        held = leave_tools_out(corpus, kb, folds)
        held_out_misses = held.combined.misses
        print()
        print(f"leave-tools-out ({len(held.folds)} folds by tool; a fold's tools lose the patterns written for "
              f"them, {min(held.kb_entries_left_out)}-{max(held.kb_entries_left_out)} entries, and their logs "
              "from training):")
        print(f"  patterns only      {held.patterns.summary()}")
        print(f"  model only         {held.model.summary()}")
        print(f"  patterns + model   {held.combined.summary()}")
        print(f"  truncated logs (first 3 lines of each log of 20+) left UNKNOWN: {held.heads.accuracy():.3f}")
        print(f"  chosen on the held-out answers: temperature {held.temperature:g}, threshold {held.threshold:g}")
    print()
    for line in evaluation.report():
        print(line)
    if held_out_misses:
        # What the classifier gets wrong on tools it has never seen: where to look for what generalizes.
        print()
        print("misclassified leave-tools-out (patterns + model):")
        for log_id, label, alt, predicted in held_out_misses:
            also = f" (or {alt.value})" if alt else ""
            print(f"  {log_id}: labelled {label.value}{also}, predicted {predicted.value}")
    return 0
