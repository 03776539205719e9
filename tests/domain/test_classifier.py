"""The classifier on real tool output: every log of the development corpus, the issue's tie-break
cases, CI log dressing, retry-after, fingerprints and the confidence threshold."""

from __future__ import annotations

import csv
import io
import re
from email.utils import formatdate
from pathlib import Path

import pytest

from metabuilder.domain.classifier import MIN_CONFIDENCE, classify, classify_failure
from metabuilder.domain.evaluation import Evaluation, read_corpus
from metabuilder.domain.signals import Evidence, fingerprint, normalize, retry_after
from metabuilder.domain.taxonomy import FailureType

OWN = Path(__file__).resolve().parents[1] / "corpus" / "own"
PUBLIC = next((p for p in (Path(__file__).resolve().parents[3] / "shared", Path("/work/shared"))
               if (p / "corpus" / "public" / "cidiff").is_dir()), Path("/nonexistent")) / "corpus/public/cidiff"
OWN_CORPUS = read_corpus(OWN)
with (OWN / "labels.csv").open(newline="") as _fh:
    _SETS = {row["id"]: row.get("set") or "dev" for row in csv.DictReader(_fh)}
DEV = [item for item in OWN_CORPUS if _SETS[item.id] == "dev"]
WIDENED = [item for item in OWN_CORPUS if _SETS[item.id] == "widened"]


def _log(case_id: str) -> bytes:
    return (OWN / case_id / "fail.log").read_bytes()


@pytest.mark.parametrize("item", DEV, ids=[i.id for i in DEV])
def test_real_tool_output_is_classified_by_its_label(item):
    signal = classify(item.path.read_bytes(), exit_code=item.exit_code)
    assert signal.type in (item.label, item.alt), (signal.type, signal.evidence)
    assert 0 < signal.confidence <= 1
    assert signal.evidence and len(signal.evidence) <= 5
    assert all(e.text for e in signal.evidence)


def test_the_widened_corpus_keeps_its_floor():
    # Logs of tools added after the knowledge base was written; measured, not tuned to pass one by
    # one. The floors sit a little under what was measured when they were added (docs/classifier.md).
    patterns, combined = Evaluation(), Evaluation()
    for item in WIDENED:
        data = item.path.read_bytes()
        patterns.add(item.id, item.label, item.alt, classify(data, exit_code=item.exit_code, learned=False).type)
        combined.add(item.id, item.label, item.alt, classify(data, exit_code=item.exit_code).type)
    assert len(WIDENED) >= 320
    # Measured 0.848 (patterns) and 0.962 (with the model) on 289 logs; 0.6 before the third batch;
    # 0.905 and 0.975 on 326 logs with the fourth batch and its cues; 0.929 and 0.979 after the fifth round.
    assert patterns.accuracy() >= 0.85, "\n".join(patterns.report())
    assert combined.accuracy() >= max(patterns.accuracy(), 0.9), "\n".join(combined.report())


def test_every_class_is_in_the_development_corpus():
    # UNKNOWN too: logs of failed steps that say nothing about why (issue 21's third batch).
    labels = {i.label for i in OWN_CORPUS}
    assert labels == set(FailureType)


def test_public_corpus_accuracy_floor():
    assert PUBLIC.is_dir(), "the shared public corpus (../shared/corpus/public/cidiff) is needed for this test"
    evaluation = Evaluation()
    for item in read_corpus(PUBLIC):
        evaluation.add(item.id, item.label, item.alt, classify(item.path.read_bytes()).type)
    # Measured 0.909 when this was written; the floor catches regressions, not noise.
    assert evaluation.accuracy() >= 0.88, "\n".join(evaluation.report())


def test_a_test_failing_on_a_503_is_transient():
    signal = classify(_log("pytest-503-service"))
    assert signal.type is FailureType.TRANSIENT
    assert any("503" in e.text for e in signal.evidence)


def test_an_assert_near_the_end_beats_an_earlier_retry_warning():
    log = _log("pytest-after-pip-retry")
    assert b"Retrying" in log
    signal = classify(log)
    assert signal.type is FailureType.TEST_ASSERT
    assert "pip.retrying" in signal.patterns


def test_a_specific_message_owns_its_line():
    signal = classify(b"[ERROR] build\njava.io.IOException: No space left on device\nBUILD FAILURE\n")
    assert signal.type is FailureType.INFRA
    assert signal.evidence[0].pattern == "disk.full"


def test_pytest_summary_is_the_evidence_and_flags_follow_the_class():
    signal = classify(_log("pytest-assert"))
    assert signal.type is FailureType.TEST_ASSERT
    assert (signal.can_retry, signal.requires_replan, signal.requires_approval) == (False, False, False)
    assert any(e.text.startswith("FAILED test_calc.py::test_add") for e in signal.evidence)
    security = classify(_log("bandit"))
    assert security.requires_approval and not security.can_retry
    assert classify(_log("alembic-multiple-heads")).requires_replan


def _dress_as_ci(log: bytes) -> bytes:
    """The same output as a GitHub Actions runner would store it, with a long green preamble."""
    preamble = b"".join(b"Collecting package-%d\n  Downloading package-%d.tar.gz (12 kB)\n" % (i, i)
                        for i in range(3000))
    lines = (preamble + b"##[group]Run make test\n" + log).splitlines()
    dressed = [b"2026-11-21T10:%02d:%02d.1234567Z " % (i // 60 % 60, i % 60)
               + line.replace(b"error", b"\x1b[31merror\x1b[0m") + b"\r\n"
               for i, line in enumerate(lines)]
    return b"".join(dressed) + b"2026-11-21T10:59:59.0000000Z ##[error]Process completed with exit code 1.\r\n"


@pytest.mark.parametrize("case_id", ["pytest-assert", "mypy", "ruff-check", "curl-429-retry-after",
                                     "psql-missing-relation", "git-pre-receive-declined", "go-panic"])
def test_ci_dressing_does_not_change_the_class(case_id):
    plain = classify(_log(case_id))
    dressed = classify(_dress_as_ci(_log(case_id)))
    assert dressed.type is plain.type
    assert dressed.fingerprint == plain.fingerprint
    assert not any(e.text.startswith("2026-") or "\x1b" in e.text for e in dressed.evidence)


def test_empty_and_blank_logs_are_unknown_with_a_reason():
    for log in (b"", b"\n\n  \n", ""):
        signal = classify(log)
        assert signal.type is FailureType.UNKNOWN and signal.reason == "the log is empty"


def test_a_log_with_nothing_known_is_unknown():
    signal = classify(b"hello\nworld\n")
    assert signal.type is FailureType.UNKNOWN
    assert signal.reason == "no known failure message in the log"


def test_exit_code_decides_when_the_log_is_silent():
    assert classify(b"", exit_code=139).type is FailureType.RUNTIME
    assert classify(b"starting\n", exit_code=137).type is FailureType.INFRA


def test_weak_evidence_gives_unknown_with_the_best_guess():
    signal = classify(b"step 3 of 4\n", step_name="lint")
    assert signal.type is FailureType.UNKNOWN
    assert signal.best_guess is FailureType.LINT
    assert signal.confidence < MIN_CONFIDENCE


def test_odd_bytes_do_not_crash():
    log = b"\x00\xff\xfe broken \x80 utf-8\n" * 1000 + b"E   assert 1 == 2\n" + b"\x00" * 5000
    assert classify(log).type is FailureType.TEST_ASSERT
    huge_line = b"x" * (3 << 20) + b" No space left on device"  # no newline at all
    assert classify(huge_line).type is FailureType.INFRA


def test_streams_and_iterables_are_accepted():
    log = _log("mypy")
    assert classify(io.BytesIO(log)).type is FailureType.TYPECHECK
    assert classify(iter([log[:7], log[7:30], log[30:]])).type is FailureType.TYPECHECK
    assert classify(log.decode()).type is FailureType.TYPECHECK


def test_classify_failure_keeps_the_seed_signature():
    signal = classify_failure(step_name="test_step", logs="AssertionError: expected 1 but got 2", artifacts=[])
    assert signal.type is FailureType.TEST_ASSERT
    report = classify_failure("deploy", "deploying\n", artifacts=["HTTP/1.1 429 Too Many Requests\nRetry-After: 7\n"])
    assert report.type is FailureType.RATE_LIMIT and report.retry_after == 7


NOW = 1_800_000_000.0


@pytest.mark.parametrize(("line", "seconds"), [
    ("Retry-After: 30", 30),
    ("< retry-after: 120", 120),
    (f"Retry-After: {formatdate(NOW + 30, usegmt=True)}", 30),
    (f"x-ratelimit-reset: {int(NOW) + 45}", 45),
    ("x-ratelimit-reset-requests: 6m0s", 360),
    ("Rate limit reached for gpt-4 in organization org-x on tokens per min. Please try again in 20s.", 20),
    ("You have exceeded the quota; retry after 2 minutes", 120),
    ("Please try again in 1m30s", 90),
    ("throttled: try again in 1.5 hours", 5400),
    ("nothing about waiting here", None),
])
def test_retry_after(line, seconds):
    assert retry_after(line, now=NOW) == seconds


def test_rate_limit_log_carries_retry_after():
    signal = classify(_log("curl-429-retry-after"))
    assert signal.type is FailureType.RATE_LIMIT and signal.retry_after == 30


def test_fingerprint_ignores_what_changes_between_runs():
    one = ("2026-11-20T10:00:01Z /tmp/pytest-of-ci/pytest-12/test_x0/app.py:41: "
           "connect to 127.0.0.1:43121 failed (id 9f8e7d6c5b)")
    two = ("2026-11-21T18:22:59Z /tmp/pytest-of-ci/pytest-7/test_x0/app.py:57: "
           "connect to 127.0.0.1:51000 failed (id 0a1b2c3d4e)")
    assert normalize(one) == normalize(two)
    ev = lambda text: [Evidence(3, text, "net.connection-refused")]  # noqa: E731
    assert fingerprint(FailureType.TRANSIENT, ev(one)) == fingerprint(FailureType.TRANSIENT, ev(two))
    assert fingerprint(FailureType.TRANSIENT, ev(one)) != fingerprint(FailureType.TRANSIENT, ev("disk full"))


def test_same_failure_in_two_real_runs_has_one_fingerprint():
    # Two runs of the same broken test: temp dirs, timings and ports differ.
    a = _log("pytest-503-service")
    b = re.sub(rb"in [0-9.]+s", b"in 9.99s", a).replace(b"127.0.0.1:", b"127.0.0.1:1")
    assert classify(a).fingerprint == classify(b).fingerprint
    assert classify(a).fingerprint != classify(_log("pytest-assert")).fingerprint


def test_json_shape():
    data = classify(_log("curl-429-retry-after")).to_dict()
    assert {"type", "confidence", "evidence", "retry_after", "fingerprint", "patterns"} <= data.keys()
    assert data["type"] == "RATE_LIMIT"
    assert all(set(e) == {"line", "text", "pattern"} for e in data["evidence"])


def test_a_line_that_two_entries_match_is_shown_once():
    # "E   AssertionError: ..." is both pytest's assert line and Python's AssertionError; the
    # GitHub Actions exit line is both the anchor and nothing else.
    log = ("tests/test_x.py::test_x FAILED\n"
           "E   AssertionError: totals differ\n"
           "FAILED tests/test_x.py::test_x - AssertionError: totals differ\n"
           "##[error]Process completed with exit code 1.\n")
    signal = classify(log)
    assert signal.type is FailureType.TEST_ASSERT
    lines = [e.line for e in signal.evidence if e.line is not None]
    assert len(lines) == len(set(lines)) >= 3
    assert len({e.pattern for e in signal.evidence}) == len(signal.evidence)
