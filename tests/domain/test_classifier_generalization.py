"""What generalizes beyond the tools the patterns were written for: cross-tool cues, the learned
fallback and its calibration, leave-tools-out folds; and what must stay UNKNOWN."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from metabuilder.domain.classifier import classify
from metabuilder.domain.crossval import leave_tools_out, read, without_tools
from metabuilder.domain.evaluation import expected_calibration_error, read_corpus, tool_folds
from metabuilder.domain.knowledge import bundled_knowledge_base
from metabuilder.domain.learned import BUNDLED_MODEL, Model, bundled_model, features, train
from metabuilder.domain.taxonomy import FailureType

OWN = Path(__file__).resolve().parents[1] / "corpus" / "own"
KB = bundled_knowledge_base()


@pytest.mark.parametrize(("text", "expected"), [
    # issue 13: pip-licenses' own --fail-on message
    ("fail-on license AGPL-3.0-only was found for package pdfmagic:0.9.1", FailureType.POLICY),
    ("ERROR: package left-pad@1.3.0 uses license WTFPL, which is on the deny list", FailureType.POLICY),
    ("push to refs/heads/main rejected by the branch protection rule", FailureType.POLICY),
    ("3 secrets found in the working tree (aws access key, slack token)", FailureType.SECURITY),
    ("django 3.2.1 is affected by CVE-2023-31047", FailureType.SECURITY),
    ("error: could not resolve dependency tree for package frobnicate", FailureType.INFRA),
    ("Error: you have exceeded your request quota, please slow down", FailureType.RATE_LIMIT),
])
def test_refusals_findings_and_answers_are_read_by_meaning_not_by_tool(text, expected):
    kb = without_tools(KB, {"pip-licenses", "gitleaks", "npm", "license", "secrets", "audit"})
    signal = classify(text + "\n", exit_code=1, kb=kb, learned=False)
    assert signal.type is expected, signal
    assert any(p.startswith("cue.") for p in signal.patterns)


@pytest.mark.parametrize("log", [
    b"", b"\n\n", b"Run started\n", b"+ make build\n", b"Collecting requests\n  Downloading requests-2.31.0.whl\n",
    b"2026-11-21T10:00:00.1Z ##[group]Run actions/checkout@v4\n2026-11-21T10:00:01.1Z ##[endgroup]\n",
])
def test_truncated_and_uninformative_logs_stay_unknown(log):
    assert classify(log, exit_code=1).type is FailureType.UNKNOWN


def test_the_shipped_model_loads_and_abstains_on_thin_windows():
    model = bundled_model()
    assert model is not None and 0 < model.threshold < 1 and model.temperature > 0
    assert not model.predict(features(["ok"])).answered


def test_training_is_deterministic_whatever_the_order():
    reads = read(read_corpus(OWN), KB)
    examples = [(r.feats, r.item.label) for r in reads]
    shuffled = examples[:]
    random.Random(3).shuffle(shuffled)
    assert train(examples).to_json() == train(shuffled).to_json()
    round_trip = Model.from_json(train(examples).to_json())
    assert round_trip.predict(examples[0][0]).label is train(examples).predict(examples[0][0]).label


def test_the_model_file_is_what_the_training_command_builds():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = Path(__file__).parent / "__rebuilt_model.json"
    try:
        subprocess.run([sys.executable, "scripts/train_classifier.py", "--out", str(out)], cwd=root, check=True,
                       capture_output=True, timeout=300)
        assert out.read_text() == BUNDLED_MODEL.read_text(), "rebuild it: python scripts/train_classifier.py"
    finally:
        out.unlink(missing_ok=True)


def test_folds_hold_each_tool_once_and_the_fold_never_sees_its_tools():
    corpus = read_corpus(OWN)
    folds = tool_folds(corpus, 5)
    tools = [t for fold in folds for t in fold]
    assert sorted(tools) == sorted({i.tool for i in corpus})
    kb = without_tools(KB, {"pytest", "cargo"})
    assert not [e.id for e in kb.entries if e.id.split(".")[0] in ("pytest", "cargo", "rust")]
    assert any(e.id.startswith("cue.") for e in kb.entries)


def test_leave_tools_out_is_lower_than_plain_and_reports_calibration():
    corpus = read_corpus(OWN)
    held = leave_tools_out(corpus, KB, folds=3)
    assert len(held.combined.pairs) == len(corpus)
    assert held.combined.macro_f1() < 1.0  # the plain figure on this corpus is 1.0: folds are harder
    assert 0 <= held.combined.ece() <= 1
    assert held.threshold in [round(0.2 + 0.05 * i, 2) for i in range(15)]


def test_expected_calibration_error():
    assert expected_calibration_error([(0.9, True)] * 9 + [(0.9, False)]) == pytest.approx(0.0)
    assert expected_calibration_error([(1.0, False)] * 4) == pytest.approx(1.0)
    assert expected_calibration_error([(0.75, True), (0.75, False)]) == pytest.approx(0.25)
