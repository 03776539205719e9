"""The learned fallback: a complement naive Bayes model over hashed token n-grams of the failure window.

Patterns know the messages someone wrote them for. The model knows the *vocabulary* of each
class ("denied", "violation", "assert", "unreachable", "migration"...) whatever tool prints it,
so it answers where no pattern fires, or where the patterns are weak.

- The failure window is the last :data:`WINDOW_LINES` lines up to the failure point, with the
  CI prefixes taken off and numbers, times, hex ids and temp paths masked.
- Its features are the distinct lower-case words and word pairs of each line, hashed (CRC-32,
  stable across processes and machines) into :data:`BUCKETS` buckets.
- Training counts, per class, the logs that contain each feature, and weighs a feature for a
  class by how rare it is in the *other* classes (complement naive Bayes over binary features,
  additive smoothing, weights normalized per class). A bucket's weights are centred across classes and
  quantized to int8, which keeps the shipped file small and the answer deterministic.
- The probability is a softmax of the scores divided by a temperature, and the model answers
  only at or above its threshold; both are chosen on held-out folds (leave-tools-out) by
  ``scripts/train_classifier.py``, not by hand.

Naive Bayes rather than a library's logistic regression: training is counting (a whole
leave-tools-out run takes a second in pure Python), prediction is a few hundred additions, and
scikit-learn would add tens of MB and half a second of import to every ``classify`` process.
"""

from __future__ import annotations

import base64
import json
import math
import re
import zlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from metabuilder.domain.signals import display_line, normalize
from metabuilder.domain.taxonomy import FailureType

BUNDLED_MODEL = Path(__file__).with_name("classifier_model.json")
BUCKETS = 1 << 14
WINDOW_LINES = 60
MIN_FEATURES = 6
"""A window with fewer distinct features than this (a truncated or empty log) gets no answer."""
CLASSES: tuple[FailureType, ...] = tuple(FailureType)
_WORD = re.compile(r"[a-z][a-z_]+")


def window_lines(tail: bytes, tail_first_line: int, failure_line: int | None) -> list[tuple[int, str]]:
    """(line number, display text) of the failure window: the lines of ``tail`` (whose first line
    is ``tail_first_line``) up to ``failure_line``, at most :data:`WINDOW_LINES` of them."""
    raw = tail.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    numbered = [(tail_first_line + i, line) for i, line in enumerate(raw)]
    if failure_line is not None and numbered and numbered[0][0] <= failure_line:
        numbered = [(n, line) for n, line in numbered if n <= failure_line]
    kept = [(n, display_line(line)) for n, line in numbered[-WINDOW_LINES:]]
    return [(n, text) for n, text in kept if text]


def line_features(text: str) -> set[int]:
    words = _WORD.findall(normalize(text).lower().replace("<n>", " ").replace("<hex>", " "))
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    return {zlib.crc32(g.encode()) % BUCKETS for g in grams}


def features(lines: Iterable[str]) -> set[int]:
    out: set[int] = set()
    for text in lines:
        out |= line_features(text)
    return out


@dataclass(frozen=True)
class Prediction:
    label: FailureType
    probability: float
    answered: bool
    """False when below the threshold or when the window is too thin to say anything."""
    probabilities: dict[FailureType, float]


@dataclass(frozen=True)
class Model:
    classes: tuple[FailureType, ...]
    bias: tuple[float, ...]
    weights: array[int]
    """int8, ``len(classes) * BUCKETS``, class-major; real weight = value * scale."""
    scale: float
    temperature: float
    threshold: float
    trained_on: str = ""

    def scores(self, feats: set[int]) -> list[float]:
        n, w, scale = BUCKETS, self.weights, self.scale
        return [self.bias[c] + scale * sum(w[c * n + b] for b in feats) for c in range(len(self.classes))]

    def probabilities(self, feats: set[int]) -> dict[FailureType, float]:
        scores = self.scores(feats)
        top = max(scores)
        exp = [math.exp((s - top) / self.temperature) for s in scores]
        total = sum(exp)
        return {c: e / total for c, e in zip(self.classes, exp, strict=True)}

    def predict(self, feats: set[int], threshold: float | None = None) -> Prediction:
        probs = self.probabilities(feats)
        label = max(probs, key=lambda c: (probs[c], c.value))
        p = probs[label]
        cut = self.threshold if threshold is None else threshold
        answered = len(feats) >= MIN_FEATURES and label is not FailureType.UNKNOWN and p >= cut
        return Prediction(label, p, answered, probs)

    def strongest_line(self, lines: Sequence[tuple[int, str]], label: FailureType) -> tuple[int, str] | None:
        """The window line whose features weigh most for ``label`` against the other classes."""
        c = self.classes.index(label)
        n, w = BUCKETS, self.weights
        best, best_score = None, 0.0
        for number, text in lines:
            score = sum(w[c * n + b] - max(w[k * n + b] for k in range(len(self.classes)) if k != c)
                        for b in line_features(text))
            if best is None or score > best_score:
                best, best_score = (number, text), score
        return best

    def to_json(self) -> str:
        return json.dumps({
            "format": "nb-hashed-ngrams-1", "buckets": BUCKETS, "window_lines": WINDOW_LINES,
            "classes": [c.value for c in self.classes], "bias": [round(b, 6) for b in self.bias],
            "scale": self.scale, "temperature": self.temperature, "threshold": self.threshold,
            "trained_on": self.trained_on, "weights": base64.b64encode(self.weights.tobytes()).decode(),
        }, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Model:
        data = json.loads(text)
        if data.get("format") != "nb-hashed-ngrams-1" or data.get("buckets") != BUCKETS:
            raise ValueError("classifier model: unknown format (rebuild it with scripts/train_classifier.py)")
        weights = array("b")
        weights.frombytes(base64.b64decode(data["weights"]))
        return cls(tuple(FailureType(c) for c in data["classes"]), tuple(data["bias"]), weights,
                   float(data["scale"]), float(data["temperature"]), float(data["threshold"]),
                   data.get("trained_on", ""))


def train(examples: Sequence[tuple[set[int], FailureType]], *, alpha: float = 0.5, temperature: float = 1.0,
          threshold: float = 0.5, trained_on: str = "") -> Model:
    """A model from (features, label) pairs; deterministic for the same examples in any order."""
    classes = CLASSES
    docs = [0] * len(classes)
    counts: list[list[int]] = [[0] * BUCKETS for _ in classes]
    for feats, label in examples:
        c = classes.index(label)
        docs[c] += 1
        row = counts[c]
        for b in feats:
            row[b] += 1
    # Complement naive Bayes: a class is scored by how unlike the *other* classes' logs the
    # window is, which keeps a big class (LINT here) from drawing every thin window to itself.
    # Each class's weights are normalized to unit mass, and the prior is left out, as
    # complement NB does for unevenly sized classes.
    bias = [0.0 if d else -1e3 for d in docs]
    totals = [sum(row) for row in counts]
    everything = [sum(counts[c][b] for c in range(len(classes))) for b in range(BUCKETS)]
    grand = sum(totals)
    raw = []
    for c in range(len(classes)):
        denominator = math.log(grand - totals[c] + alpha * BUCKETS)
        complement = [-(math.log(everything[b] - counts[c][b] + alpha) - denominator) for b in range(BUCKETS)]
        mass = sum(abs(v) for v in complement) or 1.0
        raw.append([v / mass * BUCKETS for v in complement])
    # Centre each bucket across classes (adds one constant to every class's score: no effect on
    # the answer) so that the int8 range is spent on the differences.
    n = len(classes)
    weights = array("b", [0]) * (n * BUCKETS)
    centred = [[raw[c][b] for c in range(n)] for b in range(BUCKETS)]
    for column in centred:
        mean = sum(column) / n
        column[:] = [v - mean for v in column]
    peak = max((abs(v) for column in centred for v in column), default=1.0) or 1.0
    scale = peak / 127
    for b, column in enumerate(centred):
        for c, v in enumerate(column):
            weights[c * BUCKETS + b] = max(-127, min(127, round(v / scale)))
    return Model(classes, tuple(bias), weights, scale, temperature, threshold, trained_on)


@cache
def bundled_model() -> Model | None:
    """The model shipped with Meta-Builder, or None if the file is missing."""
    try:
        return Model.from_json(BUNDLED_MODEL.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
