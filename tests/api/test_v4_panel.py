"""The V4 run panel, promote from the run page, the live run page and the Stats page, in real
Chromium against the API process and a `metabuilder worker` process (real git, real runs)."""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path

from playwright.async_api import Browser, expect

from metabuilder.domain.access import Role
from metabuilder.domain.breakers import BreakerKey, BreakerPolicy, record_failure
from metabuilder.domain.budgets import Dimension
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store import access, breakers, budgets
from metabuilder.store.audit import audit_events
from metabuilder.store.db import transaction
from tests.api.conftest import LiveApi, LiveWorker, make_tenant, wait_status, workspace
from tests.api.test_portal import browser, shots, sign_in  # noqa: F401 (the fixtures)
from tests.api.test_run_confidence import PLAN as PINNED
from tests.conftest import git


def pinned_project(live_api: LiveApi, tenant: str) -> tuple[Path, str]:
    """A project whose unpinned requirement the plan's fix command pins, on a branch of its own."""
    repo = workspace(live_api, f"ws-{tenant}")
    (repo / "requirements.txt").write_text("requests\n")
    (repo / "pins.sh").write_text("grep -q '^requests==' requirements.txt || "
                                  "{ echo 'requirements.txt:1: requests is not pinned'; "
                                  "echo '1 lint error found'; exit 1; }\n")
    branch = f"feature/{tenant}"
    git(repo, "checkout", "--quiet", "-b", branch)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "deps")
    return repo, branch


async def test_the_panel_shows_each_part_and_an_admin_promotes_the_risky_run(  # type: ignore[no-untyped-def]
        live_api: LiveApi, live_worker: LiveWorker, api_sessions, browser: Browser,  # noqa: F811
        shots: Path) -> None:  # noqa: F811
    tenant, tokens = make_tenant(api_sessions)
    repo, branch = pinned_project(live_api, tenant)
    async with live_api.client(tokens["operator"]) as http:  # type: ignore[index]
        started = await http.post("/api/meta/v3/runs", json={"plan_yaml": PINNED, "workspace": str(repo)})
        assert started.status_code == 202, started.text
        plain = await http.post("/api/meta/v3/runs", json={
            "plan_yaml": "name: plain\nsteps:\n  - name: a\n    command: 'true'\n", "workspace": str(repo)})
        run = await wait_status(http, started.json()["run_id"], "succeeded", "failed", timeout=90)
        await wait_status(http, plain.json()["run_id"], "succeeded", "failed")
    assert run["status"] == "succeeded", run
    run_id = run["run_id"]
    # What the budget and breaker parts read, written through their own stores.
    budgets.reserve(api_sessions, f"{run_id}-llm", run_id=run_id, tenant_id=tenant, amounts={
        Dimension.COST: 0.4, Dimension.ATTEMPTS: 3}, scopes=[budgets.LedgerScope.run(
            run_id, tenant, {Dimension.COST: 1.0, Dimension.ATTEMPTS: 6})])
    key = BreakerKey(tenant, FailureType.TRANSIENT, "pypi.org:443")
    for ago in (3.0, 2.0, 1.0):
        breakers.change(api_sessions, key, functools.partial(record_failure, now=time.time() - ago,
                                                             policy=BreakerPolicy(threshold=3), run_id="r"))

    viewer = await sign_in(browser, live_api, tokens["viewer"])  # type: ignore[index]
    await viewer.goto(f"/portal/runs/{run_id}")
    panel = viewer.locator("#v4-panel")
    await expect(panel.locator("#confidence-level")).to_have_text("medium")
    await expect(panel.locator("#risks")).to_contain_text("dependency_manifest")
    cost = panel.locator(".budget-line[data-dimension='cost_usd']")
    await expect(cost).to_contain_text("0.4 reserved")
    await expect(cost).to_contain_text("of 1")
    assert await panel.locator("#panel-budget .bar > span").first.get_attribute("style") == "width:40.0%"
    await expect(panel.locator("#panel-breakers")).to_contain_text("TRANSIENT/pypi.org:443")
    await expect(panel.locator("#panel-breakers .status")).to_have_text("open")
    await expect(panel.locator("#panel-canary")).to_contain_text("Canary: not configured")
    repairs = panel.locator("#panel-repairs li")
    await expect(repairs.filter(has_text="autofix.patch").first).to_be_visible()
    await expect(viewer.locator("#promote")).to_have_count(0)  # a viewer may not
    await expect(viewer.locator("#live-state")).to_have_count(0)  # finished: no live updates
    await viewer.screenshot(path=shots / "portal-v4-panel.png", full_page=True)

    # A run with nothing to show says so, part by part.
    await viewer.goto(f"/portal/runs/{plain.json()['run_id']}")
    for part, says in (("#panel-confidence", "auto-fix repaired nothing"), ("#panel-budget", "metered, no limit"),
                       ("#panel-repairs", "No repair")):
        await expect(viewer.locator(part)).to_contain_text(says)

    admin = await sign_in(browser, live_api, tokens["admin"])  # type: ignore[index]
    await admin.goto(f"/portal/runs/{run_id}")
    form = admin.locator("#promote")
    await expect(form.locator("input[name=target_branch]")).to_have_value(branch)
    await form.get_by_role("button", name="Promote").click()
    await expect(admin.locator("main")).to_contain_text("needs its risks approved")
    await admin.goto(f"/portal/runs/{run_id}")
    await form.locator("input[name=approve_risks]").check()
    await form.locator("input[name=reason]").fill("pinning is what we want")
    await form.get_by_role("button", name="Promote").click()  # approved, but not promoted by the approver
    await expect(admin.locator("main")).to_contain_text("your approval is recorded")
    shared = live_api.settings.shared_repo
    assert git(Path(shared), "branch", "--list", branch) == ""
    # A second admin of the tenant sees the approval and promotes.
    with transaction(api_sessions) as session:
        second = access.create_token(session, tenant, "second-admin", Role.ADMIN).token
    other = await sign_in(browser, live_api, second)
    await other.goto(f"/portal/runs/{run_id}")
    await expect(other.locator("#risk-approvals")).to_contain_text("risks approved by admin-user")
    await expect(other.locator("#risk-approvals")).to_contain_text("pinning is what we want")
    await other.locator("#promote").get_by_role("button", name="Promote").click()
    await expect(other.get_by_role("status")).to_have_text(
        re.compile(rf"^promoted: {re.escape(branch)} is at {run['head_commit'][:12]} \(a new branch\)$"))
    assert git(Path(shared), "rev-parse", f"refs/heads/{branch}") == run["head_commit"]
    with transaction(api_sessions) as session:
        events = [(a.event, a.actor) for a in audit_events(session, tenant=tenant) if a.target == run_id]
        promoted = [a.data for a in audit_events(session, tenant=tenant, event="run.promoted")]
    assert ("run.promotion_approved", "admin-user") in events and ("run.promoted", "second-admin") in events
    assert promoted[0]["approved_by"] == ["admin-user"]

    # The Stats page draws the tenant's runs: one repaired by a patch, the other plain.
    await viewer.goto("/portal/stats?window=24h")
    await expect(viewer.locator("#fig-total")).to_have_text("2")
    await expect(viewer.locator("#fig-success")).to_have_text("100%")
    await expect(viewer.locator("#fig-repairs")).to_have_text("1")
    await expect(viewer.locator("#failures-over-time svg rect.mark")).to_have_count(1)
    await expect(viewer.locator("#failures-over-time svg rect.mark title")).to_contain_text("LINT: 1")
    await expect(viewer.locator("#repairs-by-strategy svg")).to_contain_text("patch")
    await expect(viewer.locator("#resolution-by-class svg")).to_contain_text("LINT")
    await expect(viewer.locator("#cost-by-tenant svg rect.mark title")).to_have_text(f"{tenant}: $0.0000")  # a fix
    await viewer.screenshot(path=shots / "portal-stats.png", full_page=True)
    assert (await viewer.goto("/portal/stats?window=1y")).status == 422  # type: ignore[union-attr]

    async with live_api.client(tokens["viewer"]) as http:  # type: ignore[index]
        stats = (await http.get("/api/meta/v4/stats", params={"window_hours": 24})).json()["runs"]
        assert (stats["total"], stats["by_status"], stats["repairs_by_strategy"]) == (
            2, {"succeeded": 2}, {"patch": 1})
        assert stats["failures_by_class"] == {"LINT": 1} and stats["resolution_by_class"]["LINT"]["count"] == 1
        assert (await http.get("/api/meta/v4/stats", params={"window_hours": 0})).status_code == 422


async def test_the_run_page_updates_live_while_the_run_goes_on(  # type: ignore[no-untyped-def]
        live_api: LiveApi, live_worker: LiveWorker, api_sessions, browser: Browser) -> None:  # noqa: F811
    tenant, tokens = make_tenant(api_sessions)
    plan = "name: live\nsteps:\n  - name: wait\n    command: sleep 2\n  - name: after\n    command: echo done\n"
    async with live_api.client(tokens["operator"]) as http:  # type: ignore[index]
        started = await http.post("/api/meta/v3/runs", json={
            "plan_yaml": plan, "workspace": str(workspace(live_api, f"ws-{tenant}"))})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        await wait_status(http, run_id, "running")
    viewer = await sign_in(browser, live_api, tokens["viewer"])  # type: ignore[index]
    await viewer.goto(f"/portal/runs/{run_id}")
    await expect(viewer.locator("#live-state")).to_have_text("updating live")
    await expect(viewer.locator("#run-status")).to_have_text("succeeded", timeout=20_000)  # no reload
    await expect(viewer.locator("#steps tbody tr").filter(has_text="after")).to_contain_text("succeeded")
    await expect(viewer.locator("#live-state")).to_have_count(0)
