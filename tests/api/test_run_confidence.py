"""A repaired run's confidence and risk signals in GET /runs/{id}, and its timeline in
GET /api/meta/v4/runs/{id}/timeline, through the real API process."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.access import Role
from tests.api.conftest import LiveApi, make_tenant, wait_status, workspace
from tests.api.test_approval_flow import api_workers  # noqa: F401 (the fixture)
from tests.conftest import git

PLAN = """name: pinned
steps:
  - name: pins
    command: bash pins.sh
    fix: sed -i 's/^requests$/requests==2.32.3/' requirements.txt
  - name: hello
    command: echo hello
"""


async def test_a_repaired_run_shows_its_confidence_and_risks(live_api: LiveApi, api_workers: None,  # noqa: F811
                                                              api_sessions: sessionmaker[Session]) -> None:
    tenant, tokens = make_tenant(api_sessions)
    operator = live_api.client(tokens[Role.OPERATOR])
    repo = workspace(live_api, f"ws-{tenant}")
    (repo / "requirements.txt").write_text("requests\n")
    (repo / "pins.sh").write_text("grep -q '^requests==' requirements.txt || "
                                  "{ echo 'requirements.txt:1: requests is not pinned'; "
                                  "echo '1 lint error found'; exit 1; }\n")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "deps")
    started = await operator.post("/api/meta/v3/runs", json={"plan_yaml": PLAN, "workspace": str(repo)})
    assert started.status_code == 202, started.text
    run = await wait_status(operator, started.json()["run_id"], "succeeded", "failed", "paused_awaiting_approval")
    assert run["status"] == "succeeded", run
    c = run["confidence"]
    assert c["step"] == "pins" and c["level"] == "medium" and 0 < c["score"] < 0.9, c
    assert set(c["parts"]) == {"classifier", "rung", "patch_size", "fixer", "flake_history", "checks_green"}
    assert (c["parts"]["fixer"], c["parts"]["checks_green"]) == (0.95, 1.0)
    assert [r["name"] for r in c["risks"]] == ["dependency_manifest"]

    res = await operator.get(f"/api/meta/v4/runs/{run['run_id']}/timeline")
    assert res.status_code == 200, res.text
    events = res.json()["events"]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run.started" and kinds[-1] == "run.finished", kinds
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    # (attempt numbers are not asserted: a loaded machine may add a retried attempt)
    pins = [(e["kind"], e["data"].get("status") or e["data"].get("outcome")) for e in events if e["step"] == "pins"]
    order = [pins.index(p) for p in [("step.finished", "failed"), ("autofix.classify", "failed"),
                                     ("autofix.patch", "applied"), ("step.finished", "succeeded"),
                                     ("autofix.patch", "fixed")]]
    assert order == sorted(order), pins
    stranger = live_api.client(make_tenant(api_sessions)[1][Role.ADMIN])
    assert (await stranger.get(f"/api/meta/v4/runs/{run['run_id']}/timeline")).status_code == 404

    trivial = "name: p\nsteps:\n  - name: a\n    command: 'true'\n"
    plain = await operator.post("/api/meta/v3/runs", json={"plan_yaml": trivial, "workspace": str(repo)})
    done = await wait_status(operator, plain.json()["run_id"], "succeeded", "failed")
    assert done["confidence"] is None
