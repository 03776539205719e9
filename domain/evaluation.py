"""Measuring the classifier on a labelled corpus: per-class precision/recall/F1, macro-F1, accuracy.

A corpus directory holds ``labels.csv`` (columns ``id,class,alt_class``, an optional ``exit_code``
and any others) and one
folder per id with the log in ``fail.log``. ``alt_class``, where given, is a second acceptable
answer: predicting it counts as predicting the main class.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from domain.taxonomy import FailureType


@dataclass(frozen=True, slots=True)
class LabelledLog:
    id: str
    path: Path
    label: FailureType
    alt: FailureType | None
    exit_code: int | None = None


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
            out.append(LabelledLog(row["id"], log, label, alt, int(code) if code else None))
    return out


@dataclass
class Evaluation:
    """Predictions against labels; ``alt`` answers count as the main label."""

    pairs: list[tuple[FailureType, FailureType]] = field(default_factory=list)
    """(label, prediction) with the prediction mapped to the label when it is the alt class."""
    misses: list[tuple[str, FailureType, FailureType | None, FailureType]] = field(default_factory=list)

    def add(self, log_id: str, label: FailureType, alt: FailureType | None, predicted: FailureType) -> None:
        effective = label if predicted in (label, alt) else predicted
        self.pairs.append((label, effective))
        if effective != label:
            self.misses.append((log_id, label, alt, predicted))

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
