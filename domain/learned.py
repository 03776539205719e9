"""The learned fallback: a linear model (logistic regression) over hashed token n-grams of the failure window.

Patterns know the messages someone wrote them for. The model knows the *vocabulary* of each
class ("denied", "violation", "assert", "unreachable", "migration"...) whatever tool prints it,
so it answers where no pattern fires, or where the patterns are weak.

- The failure window is the last :data:`WINDOW_LINES` lines up to the failure point, with the
  CI prefixes taken off and numbers, times, hex ids and temp paths masked.
- Its features are the distinct lower-case words and word pairs of each line, and the line's
  shape (:func:`shape_tokens`: a source location and what follows it, an HTTP status), hashed
  (CRC-32, stable across processes and machines) into :data:`BUCKETS` buckets.
- Training is multinomial logistic regression by stochastic gradient descent in a fixed order,
  each class weighed by the inverse of its size (:func:`train`). A bucket's weights are centred
  across classes and quantized to int8, which keeps the shipped file small and the answer
  deterministic. (Complement naive Bayes, the first version, was weaker on held-out tools:
  macro-F1 0.40 against 0.50 on its own, docs/classifier.md.)
- The probability is a softmax of the scores divided by a temperature, and the model answers
  only at or above its threshold; both are chosen on held-out folds (leave-tools-out) by
  ``scripts/train_classifier.py``, not by hand.

Pure Python rather than a library: training takes a few seconds per fold, prediction is a few
hundred additions, and scikit-learn would add tens of MB and half a second of import to every
``classify`` process.
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
FORMAT = "linear-hashed-ngrams-2"
"""Version 2: logistic regression (was complement naive Bayes) over words, pairs and the lines' shapes."""
EPOCHS, RATE, L2 = 5, 0.5, 1e-4
"""Training's passes, first step and weight decay, chosen on the leave-tools-out folds (docs/classifier.md)."""
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


# The shape of a line, which the words miss: numbers are masked, so an HTTP status or a source
# location is invisible to them. A location followed by a severity or a rule code is a finding
# whatever the tool; the kind of file it points at says which kind of tool (a compiler's source
# or a document); a status in the 4xx/5xx range says what a server answered.
_LOCATION = re.compile(r"^(?:\S*?/)?[\w.-]+?\.([A-Za-z0-9+]{1,5})(?::[\w.]+)?"
                       r"(?::\d+(?:[:.]\d+)?|\(\d+(?:,\d+)?\))[:)]?\s*(\S*)")
_STATUS = re.compile(r"(?<![\d.:/-])([45]\d\d)(?![\d.:/-])")
_RULE_CODE = re.compile(r"^\[?[A-Z]{1,4}\d{2,5}\]?:?$")
_SEVERITIES = {"error", "error:", "warning", "warning:", "note:", "note", "fatal", "info", "style"}


def shape_tokens(text: str) -> list[str]:
    """Tokens for the shape of a line: ``loc``, ``loc:<ext>``, ``loc:<severity>``, ``loc:code``, ``status:4xx``..."""
    out = []
    if m := _LOCATION.match(text):
        ext, after = m.group(1).lower(), m.group(2)
        out += ["<loc>", f"<loc:{ext}>"]
        word = after.lower()
        if word in _SEVERITIES:
            out += [f"<loc:{word.rstrip(':')}>", f"<loc:{ext}:{word.rstrip(':')}>"]
        elif _RULE_CODE.match(after):
            out.append("<loc:code>")
    out += [f"<status:{m.group(1)}>" for m in _STATUS.finditer(text)]
    return out


def line_features(text: str) -> set[int]:
    words = _WORD.findall(normalize(text).lower().replace("<n>", " ").replace("<hex>", " "))
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)] + shape_tokens(text)
    return {zlib.crc32(g.encode()) % BUCKETS for g in grams}


def features(lines: Iterable[str]) -> set[int]:
    out: set[int] = set()
    for text in lines:
        out |= line_features(text)
    return out


# What a CI runner prints around a step's output (its job lines, the command it runs, its exit
# line) is the same whatever failed. A window with little else says nothing about the failure:
# such lines still count as features (dropping them from the window made held-out figures
# worse), but not towards :data:`MIN_FEATURES`.
_FRAMING = re.compile(
    r"^(?:\[Pipeline\] |section_(?:start|end):|travis_(?:fold|time):|Running with gitlab-runner |Executing \"|"
    r"ERROR: Job failed|ERROR: script returned exit code|Finished: [A-Z]+$|Cleaning up |Script contents:$|"
    r"Starting: |Finishing: |Bash exited with code|Process completed with exit code|Post job cleanup|"
    r"The command \".*\" exited with|Done\. Your build exited with|\+ |\$ |Run [\w./-])")


def informative(lines: Iterable[str]) -> bool:
    """Whether the window has :data:`MIN_FEATURES` features besides the CI runner's own lines."""
    return len(features(text for text in lines if not _FRAMING.match(text))) >= MIN_FEATURES


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

    def predict(self, feats: set[int], threshold: float | None = None, thin: bool = False) -> Prediction:
        """``thin``: the window is mostly the CI runner's own lines (see :func:`informative`)."""
        probs = self.probabilities(feats)
        label = max(probs, key=lambda c: (probs[c], c.value))
        p = probs[label]
        cut = self.threshold if threshold is None else threshold
        answered = not thin and len(feats) >= MIN_FEATURES and label is not FailureType.UNKNOWN and p >= cut
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
            "format": FORMAT, "buckets": BUCKETS, "window_lines": WINDOW_LINES,
            "classes": [c.value for c in self.classes], "bias": [round(b, 6) for b in self.bias],
            "scale": self.scale, "temperature": self.temperature, "threshold": self.threshold,
            "trained_on": self.trained_on, "weights": base64.b64encode(self.weights.tobytes()).decode(),
        }, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Model:
        data = json.loads(text)
        if data.get("format") != FORMAT or data.get("buckets") != BUCKETS:
            raise ValueError("classifier model: unknown format (rebuild it with scripts/train_classifier.py)")
        weights = array("b")
        weights.frombytes(base64.b64decode(data["weights"]))
        return cls(tuple(FailureType(c) for c in data["classes"]), tuple(data["bias"]), weights,
                   float(data["scale"]), float(data["temperature"]), float(data["threshold"]),
                   data.get("trained_on", ""))


def train(examples: Sequence[tuple[set[int], FailureType]], *, epochs: int = EPOCHS, rate: float = RATE,
          l2: float = L2, temperature: float = 1.0, threshold: float = 0.5, trained_on: str = "") -> Model:
    """A model from (features, label) pairs; deterministic for the same examples in any order.

    Multinomial logistic regression by stochastic gradient descent: the examples are taken in a
    fixed order (sorted), the step falls as 1 / (1 + epoch), and each class's loss is weighed by
    the inverse of its size, so that a big class (LINT here) does not draw every thin window to
    itself. Features are binary, so a step touches only the buckets a window has."""
    classes = CLASSES
    n = len(classes)
    sizes = [0] * n
    data = sorted((sorted(feats), classes.index(label)) for feats, label in examples)
    for _, c in data:
        sizes[c] += 1
    balance = [len(data) / (n * size) if size else 0.0 for size in sizes]
    present = [c for c in range(n) if sizes[c]]
    w: list[list[float]] = [[0.0] * BUCKETS for _ in classes]
    b = [0.0] * n
    for epoch in range(epochs):
        step = rate / (1 + epoch)
        for feats, y in data:
            scores = {c: b[c] + sum(w[c][i] for i in feats) for c in present}
            top = max(scores.values())
            exp = {c: math.exp(v - top) for c, v in scores.items()}
            total = sum(exp.values())
            for c in present:
                gradient = balance[y] * (exp[c] / total - (1.0 if c == y else 0.0))
                b[c] -= step * gradient
                row = w[c]
                for i in feats:
                    row[i] -= step * (gradient + l2 * row[i])
    bias = [b[c] if sizes[c] else -1e3 for c in range(n)]
    # Centre each bucket across classes (adds one constant to every class's score: no effect on
    # the answer) so that the int8 range is spent on the differences.
    weights = array("b", [0]) * (n * BUCKETS)
    centred = [[w[c][i] for c in range(n)] for i in range(BUCKETS)]
    for column in centred:
        mean = sum(column) / n
        column[:] = [v - mean for v in column]
    peak = max((abs(v) for column in centred for v in column), default=1.0) or 1.0
    scale = peak / 127
    for i, column in enumerate(centred):
        for c, v in enumerate(column):
            weights[c * BUCKETS + i] = max(-127, min(127, round(v / scale)))
    return Model(classes, tuple(bias), weights, scale, temperature, threshold, trained_on)


@cache
def bundled_model() -> Model | None:
    """The model shipped with Meta-Builder, or None if the file is missing."""
    try:
        return Model.from_json(BUNDLED_MODEL.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
