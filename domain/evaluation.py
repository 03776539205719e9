"""Measuring the classifier on a labelled corpus: per-class precision/recall/F1, macro-F1, accuracy,
coverage and calibration, on the whole corpus and in leave-tools-out folds.

A corpus directory holds ``labels.csv`` (columns ``id,class,alt_class``, optional ``exit_code``
and ``tool``, and any others) and one folder per id with the log in ``fail.log``. ``alt_class``,
where given, is a second acceptable answer: predicting it counts as predicting the main class.
``tool`` names what printed the log; without it the tool is read from a ``source`` such as "real
mypy output", else from the id without its trailing number.

Leave-tools-out: the tools are dealt into folds. For each fold, the knowledge-base entries
written for its tools are left out (an entry's id family, the part before the first dot, names
the tool or language it was written for: ``pytest.assert-line``, ``rust.compile``; see
:data:`TOOL_FAMILIES`), and the learned model is trained on the other folds' logs only. So each
log is classified as if nobody had seen its tool. Generic families (``net``, ``http``, ``disk``,
``anchor``, ``cue``...) stay: they are what is meant to generalize.
"""

from __future__ import annotations

import csv
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from metabuilder.domain.taxonomy import FailureType

# Knowledge-base families written for a corpus tool, where the family is not the tool's own name.
TOOL_FAMILIES: dict[str, tuple[str, ...]] = {
    "cargo": ("cargo", "rust"), "rustc": ("rust",), "javac": ("javac", "java"), "java": ("java", "jdk"),
    "go": ("go", "gofmt"), "gofmt": ("gofmt", "go"), "gcc": ("c",), "clang": ("c",), "node": ("node",),
    "django-admin": ("django",), "psql": ("sql",), "sqlite3": ("sql",), "detect-secrets-hook": ("secrets",),
    "pytest": ("pytest",), "python": ("python",), "mvn": ("surefire", "junit", "java"), "maven": ("surefire", "junit"),
    "pip-audit": ("audit",), "npm": ("node", "audit"), "tsc": ("tsc",), "eslint": ("eslint",),
    "php": ("ruby-php",), "ruby": ("ruby-php",), "minitest": ("ruby-php",),
}

@dataclass(frozen=True, slots=True)
class LabelledLog:
    id: str
    path: Path
    label: FailureType
    alt: FailureType | None
    exit_code: int | None = None
    tool: str = ""


def read_corpus(directory: str | Path) -> list[LabelledLog]:
    """The labelled logs of ``directory``; ``ValueError`` naming the file and row on bad labels."""
    directory = Path(directory)
    labels = directory / "labels.csv"
    if not labels.is_file():
        raise ValueError(f"{labels}: not found (a corpus needs labels.csv with id,class,alt_class)")
    out = []
    with labels.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"id", "class"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{labels}: missing column(s) {', '.join(sorted(missing))}")
        for row_number, row in enumerate(reader, start=2):
            try:
                label = FailureType(row["class"].strip())
                alt = FailureType(row["alt_class"].strip()) if (row.get("alt_class") or "").strip() else None
            except ValueError as err:
                raise ValueError(f"{labels}:{row_number}: {err}") from None
            log = directory / row["id"] / "fail.log"
            if not log.is_file():
                raise ValueError(f"{labels}:{row_number}: {log} not found")
            code = (row.get("exit_code") or "").strip()
            if code and not code.lstrip("-").isdigit():
                raise ValueError(f"{labels}:{row_number}: exit_code {code!r} is not a number")
            out.append(LabelledLog(row["id"], log, label, alt, int(code) if code else None, _tool(row)))
    return out


_SOURCE_TOOL = re.compile(r"real (\S+) output")


def _tool(row: dict[str, str]) -> str:
    if (row.get("tool") or "").strip():
        return row["tool"].strip()
    if m := _SOURCE_TOOL.search(row.get("source") or ""):
        return m.group(1)
    return re.sub(r"-[0-9]+$", "", row["id"])


def families_of(tools: Iterable[str]) -> set[str]:
    """The knowledge-base id families written for ``tools``."""
    out: set[str] = set()
    for tool in tools:
        out |= {tool, *TOOL_FAMILIES.get(tool, ())}
    return out


def tool_folds(corpus: Sequence[LabelledLog], folds: int) -> list[set[str]]:
    """The corpus's tools dealt into ``folds`` sets, by a stable hash of the name (reproducible)."""
    tools = sorted({item.tool for item in corpus})
    ordered = sorted(tools, key=lambda t: (zlib.crc32(t.encode()), t))
    out: list[set[str]] = [set() for _ in range(min(folds, len(tools)) or 1)]
    for i, tool in enumerate(ordered):
        out[i % len(out)].add(tool)
    return out


def expected_calibration_error(scored: Iterable[tuple[float, bool]], bins: int = 10) -> float:
    """How far confidence is from accuracy: the mean over equal-width confidence bins of
    |accuracy - mean confidence|, weighted by the share of answers in each bin."""
    buckets: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    items = list(scored)
    for confidence, correct in items:
        buckets[min(bins - 1, int(confidence * bins))].append((confidence, correct))
    total = len(items)
    return sum(len(b) / total * abs(sum(c for _, c in b) / len(b) - sum(p for p, _ in b) / len(b))
               for b in buckets if b) if total else 0.0


THRESHOLD_TOLERANCE = 0.005
"""Macro-F1 differences below this (about one log's worth on these corpora) do not pick a threshold."""


def choose_threshold(candidates: Iterable[float], score: Callable[[float], float],
                     tiebreak: Callable[[float], float] | None = None,
                     tolerance: float = THRESHOLD_TOLERANCE) -> float:
    """The candidate with the best ``score``. Candidates within ``tolerance`` of the best are
    taken as equal: of those, the one with the best ``tiebreak``, then the higher threshold (the
    safer abstention). Without a tolerance a flat curve picks its noise: a threshold that wins
    by one held-out log."""
    ordered = sorted(set(candidates))
    scores = {t: round(score(t), 6) for t in ordered}
    best = max(scores.values())
    near = [t for t in ordered if scores[t] >= best - tolerance]
    return max(near, key=lambda t: (round(tiebreak(t), 6) if tiebreak else 0.0, t))


@dataclass
class Evaluation:
    """Predictions against labels; ``alt`` answers count as the main label."""

    pairs: list[tuple[FailureType, FailureType]] = field(default_factory=list)
    """(label, prediction) with the prediction mapped to the label when it is the alt class."""
    misses: list[tuple[str, FailureType, FailureType | None, FailureType]] = field(default_factory=list)
    confidences: list[tuple[float, bool]] = field(default_factory=list)
    """(confidence, correct) of each answer that was not UNKNOWN."""

    def add(self, log_id: str, label: FailureType, alt: FailureType | None, predicted: FailureType,
            confidence: float | None = None) -> None:
        effective = label if predicted in (label, alt) else predicted
        self.pairs.append((label, effective))
        if effective != label:
            self.misses.append((log_id, label, alt, predicted))
        if confidence is not None and predicted is not FailureType.UNKNOWN:
            self.confidences.append((confidence, effective == label))

    def coverage(self) -> float:
        """Share of logs labelled with a class (not UNKNOWN) that got an answer other than UNKNOWN."""
        classifiable = [p for y, p in self.pairs if y is not FailureType.UNKNOWN]
        return sum(1 for p in classifiable if p is not FailureType.UNKNOWN) / len(classifiable) if classifiable else 0.0

    def ece(self) -> float:
        return expected_calibration_error(self.confidences)

    def summary(self) -> str:
        return (f"macro-F1 {self.macro_f1():.3f}  accuracy {self.accuracy():.3f}  coverage {self.coverage():.3f}  "
                f"ECE {self.ece():.3f}  logs {len(self.pairs)}")

    @property
    def classes(self) -> list[FailureType]:
        present = {c for pair in self.pairs for c in pair}
        return [t for t in FailureType if t in present]

    def per_class(self) -> dict[FailureType, tuple[float, float, float, int]]:
        """Precision, recall, F1 and support of each class seen in labels or predictions."""
        out = {}
        for cls in self.classes:
            tp = sum(1 for y, p in self.pairs if y == cls and p == cls)
            fp = sum(1 for y, p in self.pairs if y != cls and p == cls)
            fn = sum(1 for y, p in self.pairs if y == cls and p != cls)
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out[cls] = (precision, recall, f1, tp + fn)
        return out

    def macro_f1(self) -> float:
        """Mean F1 over the classes that have at least one labelled example."""
        scores = [f1 for f1, support in ((v[2], v[3]) for v in self.per_class().values()) if support]
        return sum(scores) / len(scores) if scores else 0.0

    def accuracy(self) -> float:
        return sum(1 for y, p in self.pairs if y == p) / len(self.pairs) if self.pairs else 0.0

    def confusion(self) -> Counter[tuple[FailureType, FailureType]]:
        return Counter(self.pairs)

    def report(self) -> Iterator[str]:
        """The evaluation as text lines: table, macro-F1, accuracy, confusion matrix, misses."""
        yield f"{'class':<17}{'precision':>10}{'recall':>8}{'f1':>7}{'support':>9}"
        for cls, (p, r, f1, n) in self.per_class().items():
            yield f"{cls.value:<17}{p:>10.2f}{r:>8.2f}{f1:>7.2f}{n:>9}"
        yield ""
        yield f"macro-F1 {self.macro_f1():.3f}   accuracy {self.accuracy():.3f}   logs {len(self.pairs)}"
        yield f"coverage {self.coverage():.3f} (non-UNKNOWN answers on classifiable logs)   ECE {self.ece():.3f}"
        yield ""
        yield from confusion_lines(self.confusion(), self.classes)
        if self.misses:
            yield ""
            yield "misclassified:"
            for log_id, label, alt, predicted in self.misses:
                also = f" (or {alt.value})" if alt else ""
                yield f"  {log_id}: labelled {label.value}{also}, predicted {predicted.value}"


def confusion_lines(matrix: Counter[tuple[FailureType, FailureType]], classes: Iterable[FailureType]) -> Iterator[str]:
    """A confusion matrix, rows are labels and columns predictions (abbreviated class names)."""
    classes = list(classes)
    short = {c: c.value[:6] for c in classes}
    yield "label \\ predicted " + " ".join(f"{short[c]:>6}" for c in classes)
    for row in classes:
        yield f"{row.value:<18}" + " ".join(f"{matrix.get((row, col), 0) or '.':>6}" for col in classes)
