"""Leave-tools-out measurement of the classifier, and the choice of the model's temperature and
threshold on held-out folds (see :mod:`domain.evaluation` for how folds are made)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from metabuilder.domain.classifier import _classify_patterns, _with_model
from metabuilder.domain.evaluation import Evaluation, LabelledLog, choose_threshold, families_of, tool_folds
from metabuilder.domain.knowledge import KnowledgeBase
from metabuilder.domain.learned import Model, features, informative, train, window_lines
from metabuilder.domain.scanner import ScanResult
from metabuilder.domain.signals import Evidence, FailureSignal
from metabuilder.domain.taxonomy import FailureType

HEAD_LINES = 3
"""A long log's first lines, labelled UNKNOWN, teach the model and the threshold to abstain on a
truncated log (the corpora have few logs that are UNKNOWN on their own)."""
HEAD_FROM_LINES = 20
"""Only logs at least this long give a head: a shorter one's first lines may be its failure."""
TEMPERATURES = (1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 50.0, 80.0)
THRESHOLDS = tuple(round(0.2 + 0.05 * i, 2) for i in range(15))


@dataclass
class _Read:
    item: LabelledLog
    signal: FailureSignal
    result: ScanResult | None
    anchor: Evidence | None
    feats: set[int]
    thin: bool


def window_features(result: ScanResult | None, anchor: Evidence | None) -> tuple[set[int], bool]:
    """The failure window's features, and whether it is thin (see :func:`learned.informative`)."""
    if result is None:
        return set(), True
    tail_lines = result.tail.count(b"\n") + (0 if result.tail.endswith(b"\n") or not result.tail else 1)
    lines = window_lines(result.tail, result.lines - tail_lines + 1, anchor.line if anchor else None)
    return features(text for _, text in lines), not informative(text for _, text in lines)


def read(corpus: Sequence[LabelledLog], kb: KnowledgeBase, engine: str = "auto",
         heads: bool = False) -> list[_Read]:
    """Each log read once with the patterns of ``kb`` (no model yet); with ``heads``, also each
    log's first :data:`HEAD_LINES` lines as an UNKNOWN example."""
    out = []
    for item in corpus:
        data = item.path.read_bytes()
        signal, result, anchor = _classify_patterns(data, item.exit_code, None, kb, None, engine)
        out.append(_Read(item, signal, result, anchor, *window_features(result, anchor)))
        if heads and data.count(b"\n") >= HEAD_FROM_LINES:
            head = b"\n".join(data.split(b"\n")[:HEAD_LINES]) + b"\n"
            signal, result, anchor = _classify_patterns(head, None, None, kb, None, engine)
            truncated = replace(item, id=item.id + "#head", label=FailureType.UNKNOWN, alt=None)
            out.append(_Read(truncated, signal, result, anchor, *window_features(result, anchor)))
    return out


def without_tools(kb: KnowledgeBase, tools: set[str]) -> KnowledgeBase:
    """``kb`` without the entries written for ``tools``."""
    drop = families_of(tools)
    return KnowledgeBase(tuple(e for e in kb.entries if e.id.split(".", 1)[0] not in drop))


def _combined(reads: Sequence[_Read], models: Sequence[Model]) -> Evaluation:
    evaluation = Evaluation()
    for r, model in zip(reads, models, strict=True):
        signal = _with_model(r.signal, r.result, r.anchor, model) if r.result is not None else r.signal
        evaluation.add(r.item.id, r.item.label, r.item.alt, signal.type, signal.confidence)
    return evaluation


def _patterns_only(reads: Sequence[_Read]) -> Evaluation:
    evaluation = Evaluation()
    for r in reads:
        evaluation.add(r.item.id, r.item.label, r.item.alt, r.signal.type, r.signal.confidence)
    return evaluation


def _model_only(reads: Sequence[_Read], models: Sequence[Model]) -> Evaluation:
    evaluation = Evaluation()
    for r, model in zip(reads, models, strict=True):
        prediction = model.predict(r.feats, thin=r.thin)
        label = prediction.label if prediction.answered else FailureType.UNKNOWN
        evaluation.add(r.item.id, r.item.label, r.item.alt, label, prediction.probability)
    return evaluation


@dataclass
class Generalization:
    folds: list[set[str]]
    patterns: Evaluation
    model: Evaluation
    combined: Evaluation
    temperature: float
    threshold: float
    kb_entries_left_out: list[int] = field(default_factory=list)
    heads: Evaluation = field(default_factory=Evaluation)
    """The logs' truncated heads, all labelled UNKNOWN: accuracy is the share left UNKNOWN."""


def leave_tools_out(corpus: Sequence[LabelledLog], kb: KnowledgeBase, folds: int = 5,
                    engine: str = "auto") -> Generalization:
    """Every log classified by patterns and a model that never saw its tool; the temperature and
    the threshold are those that do best over all the held-out answers."""
    fold_sets = tool_folds(corpus, folds)
    # The figures count each log once; its truncated head is scored apart, in ``heads``.
    reads: list[_Read] = []
    raw_models: list[Model] = []
    left_out = []
    for tools in fold_sets:
        test = [item for item in corpus if item.tool in tools]
        train_items = [item for item in corpus if item.tool not in tools]
        fold_kb = without_tools(kb, tools)
        left_out.append(len(kb.entries) - len(fold_kb.entries))
        # The training logs' windows come from the fold's own patterns too (their anchors).
        train_reads = read(train_items, fold_kb, engine, heads=True)
        model = train([(r.feats, r.item.label) for r in train_reads], trained_on=f"fold without {sorted(tools)}")
        for r in read(test, fold_kb, engine, heads=True):
            reads.append(r)
            raw_models.append(model)

    def nll(temperature: float) -> float:
        total = 0.0
        for r, model in zip(reads, raw_models, strict=True):
            probs = replace(model, temperature=temperature).probabilities(r.feats)
            total -= math.log(max(probs.get(r.item.label, 0.0), 1e-12))
        return total

    temperature = min(TEMPERATURES, key=nll)

    def with_threshold(threshold: float) -> list[Model]:
        return [replace(m, temperature=temperature, threshold=threshold) for m in raw_models]

    full = [i for i, r in enumerate(reads) if not r.item.id.endswith("#head")]
    heads = [i for i, r in enumerate(reads) if r.item.id.endswith("#head")]

    def pick(indexes: list[int], chosen: list[Model]) -> tuple[list[_Read], list[Model]]:
        return [reads[i] for i in indexes], [chosen[i] for i in indexes]

    # The threshold is chosen by what the goal measures, the macro-F1 of patterns + model over
    # the held-out logs; of the thresholds within a log's worth of the best, the one that leaves
    # most truncated heads UNKNOWN. (Scoring logs and heads together let the heads, eighty-odd
    # UNKNOWN examples, pull the threshold to 0.9, where the model almost never answers.)
    threshold = choose_threshold(
        THRESHOLDS, lambda t: _combined(*pick(full, with_threshold(t))).macro_f1(),
        tiebreak=lambda t: _combined(*pick(heads, with_threshold(t))).accuracy())
    models = with_threshold(threshold)

    return Generalization(fold_sets, _patterns_only(pick(full, models)[0]), _model_only(*pick(full, models)),
                          _combined(*pick(full, models)), temperature, threshold, left_out,
                          _combined(*pick(heads, models)))


def plain(corpus: Sequence[LabelledLog], kb: KnowledgeBase, model: Model | None,
          engine: str = "auto") -> tuple[Evaluation, Evaluation]:
    """(patterns only, patterns and model) on the whole corpus with everything the classifier has."""
    reads = read(corpus, kb, engine)
    if model is None:
        return _patterns_only(reads), _patterns_only(reads)
    return _patterns_only(reads), _combined(reads, [model] * len(reads))
