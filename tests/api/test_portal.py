"""The portal pages in a real browser (Debian's headless Chromium driven by Playwright) against the
running API and a `metabuilder worker` process: a run with auto-fix history shows its timeline and
its patch; a viewer sees no buttons; an admin approves the pending gate and the run goes on.

Screenshots go to a temporary directory, or to ``$META_BUILDER_SCREENSHOTS`` (``docs/screenshots``
to refresh the ones in the docs)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from metabuilder.domain.breakers import BreakerKey, BreakerPolicy, record_failure
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store import breakers
from metabuilder.worker.cli.demo import EXAMPLE
from tests.api.conftest import LiveApi, LiveWorker, make_tenant, wait_status
from tests.autofix.test_retries import flaky_command
from tests.conftest import git

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), "Chromium is missing: `apt-get install chromium` (scripts/ensure-test-tools.sh)"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("META_BUILDER_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def project(root: Path, name: str) -> Path:
    """A repository with a style problem that the lint step's fix command repairs."""
    repo = root / name
    (repo / "tools").mkdir(parents=True)
    shutil.copy(EXAMPLE / "tools" / "lint.py", repo / "tools" / "lint.py")
    (repo / "calc.py").write_text("def add(a: int, b: int) -> int:   \n    return a + b\n")
    (repo / "test_calc.py").write_text("from calc import add\n")
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "initial")
    return repo


async def sign_in(browser: Browser, api: LiveApi, token: str) -> Page:
    context = await browser.new_context(base_url=api.url, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto("/portal/runs")
    await expect(page).to_have_url(re.compile(r"/portal/login\?next=/portal/runs$"))
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/portal/runs$"))
    return page


async def test_timeline_then_an_admin_approves_and_the_run_goes_on(
        live_api: LiveApi, live_worker: LiveWorker, api_sessions, browser: Browser,  # type: ignore[no-untyped-def]
        shots: Path, tmp_path: Path) -> None:
    tenant, tokens = make_tenant(api_sessions)
    fetch = flaky_command(tmp_path / "n", 1, "curl: (56) Recv failure: Connection reset by peer")
    plan = ("name: portal-demo\nwrite_scope: ['*.py']\nsteps:\n"
            "  - name: lint\n    command: python3 tools/lint.py\n    fix: python3 tools/lint.py --fix\n"
            f"  - name: fetch\n    command: \"{fetch}\"\n"
            "  - name: deploy\n    command: echo deployed\n    requires_approval: true\n")
    async with live_api.client(tokens["operator"]) as operator:  # type: ignore[index]
        started = await operator.post("/api/meta/v3/runs", json={
            "plan_yaml": plan, "workspace": str(project(live_api.root, f"ws-{tenant}"))})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        await wait_status(operator, run_id, "paused_awaiting_approval")

    # A viewer: the run with its timeline and patch, and no buttons anywhere.
    viewer = await sign_in(browser, live_api, tokens["viewer"])  # type: ignore[index]
    await expect(viewer.get_by_role("link", name="1 gate awaiting approval")).to_be_visible()
    await viewer.screenshot(path=shots / "portal-runs.png", full_page=True)
    await viewer.get_by_role("link", name=run_id[:13]).click()
    await expect(viewer.locator("#run-status")).to_have_text("paused_awaiting_approval")
    timeline = viewer.locator("ol.timeline li")
    await expect(viewer.get_by_role("heading", name="Auto-Fix Timeline")).to_be_visible()
    await expect(timeline.filter(has_text="PATCH").filter(has_text="fixed")).to_have_count(1)
    await expect(timeline.filter(has_text="RETRY").filter(has_text="backoff 1s")).to_have_count(1)
    await expect(timeline.filter(has_text="LINT").first).to_be_visible()
    diff = viewer.locator("#diff-preview + .panel pre.diff")
    await expect(diff.locator(".del")).to_contain_text("def add(a: int, b: int) -> int:   ")
    await expect(diff.locator(".add")).to_contain_text("def add(a: int, b: int) -> int:")
    web_ui = await viewer.locator("#web-ui").get_attribute("href")
    assert web_ui == f"http://ui.example/namespaces/default/workflows/build-run-{run_id}"
    await expect(viewer.get_by_role("button", name="Approve")).to_have_count(0)
    await expect(viewer.get_by_text("Only an admin or owner can decide this gate.")).to_be_visible()
    await viewer.screenshot(path=shots / "portal-run.png", full_page=True)
    await viewer.goto("/portal/approvals")
    await expect(viewer.locator(".gate")).to_have_count(1)
    await expect(viewer.get_by_role("button", name="Approve")).to_have_count(0)
    await viewer.goto("/portal/settings/builder/autofix")
    await expect(viewer.get_by_role("button", name="Save")).to_have_count(0)

    # An admin approves from the Approvals page; the decision shows at once, then the run finishes.
    admin = await sign_in(browser, live_api, tokens["admin"])  # type: ignore[index]
    await admin.goto("/portal/approvals")
    gate = admin.locator(".gate")
    await expect(gate).to_contain_text("deploy")
    await expect(gate).to_contain_text("run the step")
    await admin.screenshot(path=shots / "portal-approvals.png", full_page=True)
    await gate.get_by_label("Reason").fill("release window open")
    await gate.get_by_role("button", name="Approve").click()
    await expect(admin.get_by_role("status")).to_contain_text("approved: the run goes on")
    await expect(admin.locator(".gate")).to_have_count(0)
    decided = admin.locator("table tr", has_text="deploy")
    await expect(decided).to_contain_text("approved")
    await expect(decided).to_contain_text("admin-user")
    async with live_api.client(tokens["viewer"]) as http:  # type: ignore[index]
        run = await wait_status(http, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded", run["error"]
    await admin.goto(f"/portal/runs/{run_id}")
    await expect(admin.locator("#run-status")).to_have_text("succeeded")
    await expect(admin.locator(f"#gate-{run_id}-gate-1")).to_contain_text("release window open")
    # The run's budget: every step attempt metered (the worker's records); the platform sets no limit.
    attempts = admin.locator("#panel-budget .budget-line[data-dimension=attempts]")
    await expect(attempts).to_have_text(re.compile(r"^attempts: [1-9][0-9]* spent\s+\(metered, no limit\)$"))
    await expect(admin.locator("#budget + p")).to_contain_text(re.compile(r"[1-9][0-9]* step attempt\(s\)"))


async def test_settings_page_changes_and_resets_the_tenant(
        live_api: LiveApi, api_sessions, browser: Browser, shots: Path) -> None:  # type: ignore[no-untyped-def]
    _, tokens = make_tenant(api_sessions)
    admin = await sign_in(browser, live_api, tokens["admin"])  # type: ignore[index]
    await admin.goto("/portal/settings/builder/autofix")
    row = admin.locator("tr[data-setting=max_total_attempts]")
    await expect(row.locator(".source")).to_have_text("platform")
    await admin.get_by_label("Max Total Attempts").fill("8")
    await admin.get_by_label("Enable Auto-Fix v3").select_option("false")
    await admin.get_by_role("button", name="Save").click()
    await expect(admin.get_by_role("status")).to_have_text("saved")
    await expect(row.locator(".effective")).to_have_text("8")
    await expect(row.locator(".source")).to_have_text("tenant")
    await expect(admin.locator("tr[data-setting=autofix_enabled] .effective")).to_have_text("off")
    await admin.screenshot(path=shots / "portal-settings.png", full_page=True)
    async with live_api.client(tokens["viewer"]) as http:  # type: ignore[index]
        me = (await http.get("/api/meta/v3/me")).json()
        body = (await http.get(f"/api/meta/v3/tenants/{me['tenant']}/settings")).json()
    assert body["overrides"] == {"autofix_enabled": False, "max_total_attempts": 8}

    await admin.get_by_label("Max Total Attempts").fill("500")  # the server's bound, not the browser's
    await admin.get_by_role("button", name="Save").click()
    await expect(admin.get_by_role("alert")).to_contain_text("max_total_attempts")
    await admin.go_back()
    await admin.get_by_role("button", name="Reset to platform defaults").click()
    await expect(admin.get_by_role("status")).to_have_text("reset to the platform defaults")
    await expect(row.locator(".source")).to_have_text("platform")


async def test_budgets_page_sets_the_tenants_budgets(
        live_api: LiveApi, api_sessions, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    tenant, tokens = make_tenant(api_sessions)
    admin = await sign_in(browser, live_api, tokens["admin"])  # type: ignore[index]
    await admin.goto("/portal/settings/builder/budgets")
    await admin.get_by_label("USD per day").fill("5")
    await admin.get_by_label("Run attempts budget").fill("12")
    await admin.get_by_role("button", name="Save").click()
    await expect(admin.get_by_role("status")).to_have_text("saved")
    await expect(admin.locator("tr[data-use$='/cost_usd'] >> nth=0")).to_contain_text("5")
    async with live_api.client(tokens["viewer"]) as http:  # type: ignore[index]
        body = (await http.get(f"/api/meta/v4/tenants/{tenant}/budget")).json()
    assert body["settings"] == {"cost_usd_per_day": 5.0, "run": {"attempts": 12.0}}
    assert body["run_defaults"]["attempts"] == 12
    await admin.get_by_label("Concurrent runs").fill("0")  # the server's bound, not the browser's
    await admin.evaluate("document.querySelector('input[name=concurrent_runs]').removeAttribute('min')")
    await admin.get_by_role("button", name="Save").click()
    await expect(admin.get_by_role("alert")).to_contain_text("concurrent_runs")
    await admin.goto("/portal/settings/builder/budgets")
    await admin.get_by_role("button", name="Reset").click()
    await expect(admin.get_by_role("status")).to_have_text("reset: no tenant budgets")


def test_forms_need_the_cookie_s_form_token_and_the_role(live_api: LiveApi, api_sessions) -> None:  # type: ignore[no-untyped-def]
    _, tokens = make_tenant(api_sessions)
    with httpx.Client(base_url=live_api.url, follow_redirects=False, timeout=30) as http:
        assert http.get("/portal/runs").headers["location"] == "/portal/login?next=/portal/runs"
        bad = http.post("/portal/login", data={"token": "mb_nope"})
        assert bad.status_code == 401 and "unknown or revoked token" in bad.text
        # After signing in, `next` only leads inside the portal.
        signed = http.post("/portal/login", data={"token": tokens["viewer"], "next": "https://evil.example/"})  # type: ignore[index]
        assert signed.status_code == 303 and signed.headers["location"] == "/portal/runs"
        cookie = signed.cookies["mb_portal"]
        assert "httponly" in signed.headers["set-cookie"].lower() and "samesite=strict" in signed.headers[
            "set-cookie"].lower()
        http.cookies.set("mb_portal", cookie, path="/portal")
        page = http.get("/portal/approvals")
        assert page.status_code == 200
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', http.get("/portal/settings/builder/autofix").text)
        assert csrf is not None
        stale = http.post("/portal/settings/builder/autofix", data={"csrf": "0" * 32, "max_total_attempts": "3"})
        assert stale.status_code == 409 and "stale" in stale.text
        viewer_post = http.post("/portal/settings/builder/autofix", data={"csrf": csrf[1], "max_total_attempts": "3"})
        assert viewer_post.status_code == 403 and "admin role" in viewer_post.text
        missing = http.get("/portal/runs/no-such-run")
        assert missing.status_code == 404 and "unknown run id" in missing.text and "<html" in missing.text


async def test_breakers_page_lists_the_tenants_breakers_and_an_admin_closes_one(
        live_api: LiveApi, api_sessions, browser: Browser, shots: Path) -> None:  # type: ignore[no-untyped-def]
    tenant, tokens = make_tenant(api_sessions)
    key = BreakerKey(tenant, FailureType.TRANSIENT, "pypi.org:443")
    for ago in (20.0, 15.0, 10.0):
        breakers.change(api_sessions, key, functools.partial(record_failure, now=time.time() - ago,
                                                             policy=BreakerPolicy(threshold=3), run_id="r"))
    breakers.set_waiting(api_sessions, key, "run-waiting-1", "install")
    viewer = await sign_in(browser, live_api, tokens["viewer"])  # type: ignore[index]
    await viewer.goto("/portal/breakers")
    row = viewer.locator("tr[id='breaker-TRANSIENT-pypi.org:443']")
    await expect(row.locator(".status")).to_have_text("open")
    await expect(row).to_contain_text("3 failures within 60s")
    await expect(row).to_contain_text("run-wait")
    await expect(row.get_by_role("button", name="close")).to_have_count(0)  # a viewer may not

    admin = await sign_in(browser, live_api, tokens["admin"])  # type: ignore[index]
    await admin.goto("/portal/breakers")
    await admin.screenshot(path=shots / "portal-breakers.png", full_page=True)
    await admin.locator("tr[id='breaker-TRANSIENT-pypi.org:443']").get_by_role("button", name="close").click()
    await expect(admin.get_by_role("status")).to_have_text("breaker TRANSIENT on pypi.org:443 is closed")
    await expect(admin.locator("tr[id='breaker-TRANSIENT-pypi.org:443'] .status")).to_have_text("closed")


async def test_run_page_follows_a_running_steps_log_and_the_workers_page_shows_who_holds_it(
        live_api: LiveApi, live_worker: LiveWorker, api_sessions, browser: Browser,  # type: ignore[no-untyped-def]
        shots: Path) -> None:
    from tests.api.conftest import workspace

    tenant, tokens = make_tenant(api_sessions)
    release = live_api.root / f"release-{tenant}"  # the rest of the log waits until the page shows its start
    plan = ("name: portal-live\nsteps:\n  - name: talk\n"
            f"    command: echo line 1; echo line 2; while [ ! -f {release} ]; do sleep 0.05; done; "
            "for i in 3 4 5 6 7 8; do echo line $i; sleep 0.2; done\n")
    async with live_api.client(tokens["operator"]) as http:  # type: ignore[index]
        started = await http.post("/api/meta/v3/runs", json={"plan_yaml": plan,
                                                             "workspace": str(workspace(live_api, f"ws-{tenant}"))})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        await wait_status(http, run_id, "running")
        for _ in range(100):  # the step's row is running once its worker holds it
            steps = (await http.get(f"/api/meta/v3/runs/{run_id}")).json()["steps"]
            if steps and steps[0]["status"] == "running":
                break
            time.sleep(0.05)
    viewer = await sign_in(browser, live_api, tokens["viewer"])  # type: ignore[index]
    await viewer.goto("/portal/workers")
    lease = viewer.locator(f"tr[id='lease-{run_id}-0-1']")
    await expect(lease.locator(".status")).to_have_text("held")
    worker_row = viewer.locator("tbody tr").filter(has_text="workflow=4, cpu=4, io=4, llm=4").first
    await expect(worker_row).to_be_visible()
    await expect(worker_row.locator("td").nth(6)).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
    cpu_queue = viewer.locator("tr[id='queue-cpu'] td")  # the queue figures, from Temporal
    await expect(cpu_queue.nth(6)).to_have_text(re.compile(r"^[1-9]\d*$"))  # the live worker polls it
    await expect(cpu_queue.nth(2)).to_have_text(re.compile(r"^\d+$"))
    await viewer.screenshot(path=shots / "portal-workers.png", full_page=True)
    await viewer.goto(f"/portal/runs/{run_id}")
    live = viewer.locator("pre.live-log")
    try:
        await expect(live).to_contain_text("line 2", timeout=10_000)
        partial = await live.text_content()
        assert partial is not None and "line 8" not in partial  # followed while it ran, not after
    finally:
        release.write_text("go")
    await expect(viewer.locator(".live-state")).to_have_text("log complete", timeout=20_000)
    assert (await live.text_content()) == "".join(f"line {i}\n" for i in range(1, 9))
    await viewer.screenshot(path=shots / "portal-live-log.png", full_page=True)
