"""A deployment answers, knows its tenant, and heals a run with a known problem."""

from __future__ import annotations

import time

import httpx

V3 = "/api/meta/v3"
# Where a run stops moving on its own (a gate waits for a person: for a smoke test, an end).
TERMINAL = {"succeeded", "failed", "cancelled", "rolled_back", "escalated", "paused_awaiting_approval"}

# A lint step that fails until its fix command has run: the repair ladder's patch rung
# (the step's own `fix`) must heal it, and the run must end green.
KNOWN_ISSUE_PLAN = """\
name: smoke-heal
write_scope: ["smoke_fixed.txt"]
steps:
  - name: lint
    command: >-
      test -f smoke_fixed.txt || { echo "smoke.py:1:1: F401 'os' imported but unused"; exit 1; }
    fix: echo fixed > smoke_fixed.txt
    timeout: 1m
  - name: test
    command: grep -q fixed smoke_fixed.txt && echo "1 passed"
    timeout: 1m
"""


def test_the_deployment_is_healthy(base_url: str) -> None:
    answer = httpx.get(f"{base_url}/healthz", timeout=10.0)
    assert answer.status_code == 200, answer.text


def test_the_token_names_its_tenant_and_role(api: httpx.Client) -> None:
    me = api.get(f"{V3}/me")
    assert me.status_code == 200, me.text
    assert me.json()["role"] in ("admin", "owner"), me.json()


def test_a_run_with_a_known_problem_heals(api: httpx.Client, workspace: str) -> None:
    plan = api.post(f"{V3}/plans", json={"yaml": KNOWN_ISSUE_PLAN})
    assert plan.status_code == 201, plan.text
    started = api.post(f"{V3}/runs", json={"plan_id": plan.json()["id"], "workspace": workspace})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]

    deadline = time.monotonic() + 180
    while True:
        answer = api.get(f"{V3}/runs/{run_id}")
        # 404 until the run's first record reaches the database projection
        assert answer.status_code in (200, 404), answer.text
        run = answer.json() if answer.status_code == 200 else {"status": "pending"}
        if run["status"] in TERMINAL or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert run["status"] == "succeeded", run

    timeline = api.get(f"{V3}/runs/{run_id}/autofix")
    assert timeline.status_code == 200, timeline.text
    strategies = {entry["strategy"] for entry in timeline.json()["timeline"]}
    assert "patch" in strategies, timeline.json()
