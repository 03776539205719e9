"""The classifier's answer (a failure signal) and the text handling around it.

``retry_after`` reads how long a log asks the caller to wait; ``fingerprint`` reduces evidence
lines to a stable hash so that the same failure in different runs groups together.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field

from metabuilder.domain.knowledge import LINE_PREFIX
from metabuilder.domain.taxonomy import TRAITS, FailureType


@dataclass(frozen=True, slots=True)
class Evidence:
    """A log line that decided the classification."""

    line: int | None
    """1-based line number; None for evidence that is not a line (the exit code)."""
    text: str
    pattern: str
    """Id of the knowledge-base entry that matched it."""


@dataclass(frozen=True)
class FailureSignal:
    """What kind of failure a log shows, how sure we are, and why (the seeds' FailureSignal)."""

    type: FailureType
    confidence: float
    evidence: list[Evidence] = field(default_factory=list)
    can_retry: bool = False
    requires_replan: bool = False
    requires_approval: bool = False
    retry_after: float | None = None
    """Seconds the log asks us to wait before trying again (Retry-After, "try again in 20s")."""
    fingerprint: str = ""
    """Same failure, same fingerprint, across runs (line numbers, times, paths, ids normalized away)."""
    patterns: list[str] = field(default_factory=list)
    """Ids of every entry that matched, strongest first."""
    best_guess: FailureType | None = None
    """For UNKNOWN below the confidence threshold: the class that scored highest."""
    reason: str = ""
    """Why the answer is what it is, in one line (e.g. "the log is empty")."""
    scores: dict[str, float] = field(default_factory=dict)
    """Score per class that had any evidence."""

    @classmethod
    def of(cls, failure_type: FailureType, confidence: float, **fields: object) -> FailureSignal:
        traits = TRAITS[failure_type]
        return cls(type=failure_type, confidence=round(confidence, 3), can_retry=traits.can_retry,
                   requires_replan=traits.requires_replan, requires_approval=traits.requires_approval,
                   **fields)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready mapping (the CLI's ``--json`` line and the API's body)."""
        data = asdict(self)
        data["type"] = self.type.value
        data["best_guess"] = self.best_guess.value if self.best_guess else None
        return data


# --- retry-after --------------------------------------------------------------------------------

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_DURATION_PART = re.compile(
    r"([0-9]+(?:\.[0-9]+)?)\s*(ms|h(?:ours?|rs?)?|m(?:in(?:ute)?s?)?|s(?:ec(?:ond)?s?)?)(?![a-z])", re.I)
_HEADER = re.compile(r"\b(retry-after|x-ratelimit-reset(?:-[a-z]+)?|ratelimit-reset)\s*[:=]\s*\"?([^\"\r\n;]+)", re.I)
_PHRASE = re.compile(
    r"\b(?:try again|retry|retrying|wait|please wait|reset)\s+(?:after|in)\s+"
    r"((?:[0-9]+(?:\.[0-9]+)?\s*[a-z]*[\s,]*(?:and\s+)?)+)", re.I)
_EPOCH_MIN = 1_000_000_000


def _duration(text: str) -> float | None:
    """Seconds in "20s", "1m30s", "2 minutes", "1.5 hours", "500ms"; a bare number is seconds."""
    text = text.strip()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", text):
        return float(text)
    total, found = 0.0, False
    for number, unit in _DURATION_PART.findall(text):
        unit = unit.lower()
        key = "ms" if unit == "ms" else unit[0] if unit[0] in "hms" else unit
        total += float(number) * _UNIT_SECONDS[key]
        found = True
    return total if found else None


def retry_after(line: str, now: float) -> float | None:
    """Seconds to wait that ``line`` asks for, or None; ``now`` (epoch seconds) resolves dates."""
    if m := _HEADER.search(line):
        name, value = m.group(1).lower(), m.group(2).strip()
        seconds = _duration(value.split(",")[0]) if not value[:3].isalpha() else None
        if seconds is not None:
            # x-ratelimit-reset carries an epoch time at GitHub and a delay at most other APIs.
            if seconds >= _EPOCH_MIN and "reset" in name:
                return max(0.0, seconds - now)
            return seconds
        try:
            from email.utils import parsedate_to_datetime  # only for an HTTP date: slow to import

            return max(0.0, parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError, IndexError):
            return None
    if m := _PHRASE.search(line):
        return _duration(m.group(1))
    return None


# --- fingerprint --------------------------------------------------------------------------------

_NORMALIZERS = [
    (re.compile(r"\b[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.,]+(?:Z|[+-][0-9:]+)?"), "<time>"),
    (re.compile(r"\b[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:[.,][0-9]+)?"), "<time>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"(?:/private)?/(?:tmp|var/folders|var/tmp)/[^\s:'\"]*|[A-Z]:\\[^\s:]*\\Temp\\[^\s:'\"]*"), "<tmp>"),
    (re.compile(r"\b(?:0x)?[0-9a-f]*[0-9][0-9a-f]*[a-f][0-9a-f]*\b|\b(?:0x)?[0-9a-f]*[a-f][0-9a-f]*[0-9][0-9a-f]*\b",
                re.I), "<hex>"),
    (re.compile(r"(?<=[:\s])[0-9]{2,5}\b(?=[/\s)'\"]|$)"), "<n>"),
    (re.compile(r"[0-9]+(?:\.[0-9]+)?"), "<n>"),
]
_LINE_PREFIX = re.compile("^\ufeff?" + LINE_PREFIX)


def display_line(raw: bytes, limit: int = 300) -> str:
    """A log line as a person reads it: decoded, timestamp prefix and CI markers removed, shortened."""
    text = raw.decode("utf-8", errors="replace").replace("\x00", "").rstrip("\r\n")
    text = _LINE_PREFIX.sub("", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def normalize(text: str) -> str:
    """``text`` with the parts that change from run to run replaced by placeholders."""
    # Hex ids must be masked before bare numbers; the long hex rule needs 7+ characters.
    for rx, placeholder in _NORMALIZERS:
        if placeholder == "<hex>":
            text = rx.sub(lambda m: "<hex>" if len(m.group(0)) >= 7 else m.group(0), text)
        else:
            text = rx.sub(placeholder, text)
    return re.sub(r"\s+", " ", text).strip()


def fingerprint(failure_type: FailureType, evidence: list[Evidence]) -> str:
    """A short stable hash of the class and its normalized evidence."""
    parts = [failure_type.value] + sorted(f"{e.pattern}|{normalize(e.text)}" for e in evidence)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
