"""The decision-diff gate: a history that no longer replays, or a recorded decision the current
code takes differently, blocks the ramp and is listed; clean ones pass."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from metabuilder.service.canary import decision_gate, history_files
from metabuilder.service.errors import BadRequest
from metabuilder.service.replay import FORMAT, import_bundle
from metabuilder.worker.cli.replay import replay_histories

HISTORIES = Path(__file__).parent.parent / "histories"
DIFF = "--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-x=1\n+x = 1\n"


def bundle(run_id: str, recorded_verdict: str) -> dict[str, object]:
    """A bundle with one patch review: the current sandbox allows this lint fix."""
    digest = hashlib.sha256(DIFF.encode()).hexdigest()
    return {"format": FORMAT, "run_id": run_id,
            "entries": [{"key": "apply:1", "kind": "apply", "step_name": "style",
                         "facts": {"seq": 1, "signal_type": "LINT", "write_scope": [], "protected_checks": [],
                                   "review": {"verdict": recorded_verdict, "problems": []}},
                         "blobs": {"diff": digest}}],
            "blobs": {digest: base64.b64encode(DIFF.encode()).decode()}}


async def test_a_nondeterministic_history_and_a_changed_decision_block(sessions, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = HISTORIES / "multi_step_success.v2.json"
    tampered = tmp_path / "tampered.json"
    text = good.read_text()
    # The recorded run scheduled another activity than the code does now: a nondeterministic change.
    tampered.write_text(text.replace('"name": "run_step"', '"name": "run_step_v0"', 1))
    import_bundle(sessions, bundle("same-run", "allowed"))
    import_bundle(sessions, bundle("changed-run", "refused"))

    passed = await decision_gate(sessions, history_files([good]), bundles=0, replay=replay_histories)
    assert passed.passed and (passed.histories, passed.bundles) == (1, 0)

    report = await decision_gate(sessions, history_files([good, tampered]), bundles=10, replay=replay_histories)
    assert not report.passed
    assert (report.histories, report.bundles, report.decisions) == (2, 2, 2)
    [history, decision] = report.problems
    assert history.startswith(f"history {tampered}: does not replay:") and "run_step" in history
    assert decision == "run changed-run: decision changed: patch 1 of style: verdict: 'refused' -> 'allowed'"


def test_history_files_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="no such file"):
        history_files([tmp_path / "missing"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"events": "nope"}))
    with pytest.raises(BadRequest, match="not a Temporal history"):
        history_files([bad])
    assert len(history_files([HISTORIES])) == len(list(HISTORIES.glob("*.json")))
