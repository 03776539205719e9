"""The portal's Settings hub and diagnostics page in real Chromium, against the running API: an
admin turns v4 off for the tenant, sets and resets its privacy, adds a webhook (its secret shown
once) and deletes it, each change audited; the diagnostics page shows doctor's checks green or
red with their reasons; a viewer sees no forms and no diagnostics."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from tests.api.conftest import LiveApi, make_tenant
from tests.api.test_portal import browser, shots, sign_in  # noqa: F401 - the fixtures


async def test_an_admin_manages_the_tenants_settings_from_the_hub(
        live_api: LiveApi, api_sessions, browser: Browser, shots: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    tenant, tokens = make_tenant(api_sessions)
    admin = await sign_in(browser, live_api, tokens["admin"])  # type: ignore[index]
    await admin.get_by_role("link", name="Settings", exact=True).click()
    await expect(admin.get_by_role("heading", name="Settings", exact=True)).to_be_visible()
    flags = admin.locator("#flags")
    await expect(flags.locator("tr[data-setting=autofix_enabled] .source")).to_have_text("platform")
    v4 = flags.locator("tr[data-setting=v4_enabled]")
    await expect(v4.locator(".effective")).to_have_text("on")  # staging's default
    await admin.get_by_label("v4 scheduling").select_option("false")
    await admin.get_by_role("button", name="Save v4").click()
    await expect(admin.get_by_role("status")).to_have_text("v4 scheduling saved")
    await expect(v4.locator(".effective")).to_have_text("off")
    await expect(v4.locator(".source")).to_have_text("tenant")
    # The platform-only v4 settings, read-only: the API process's values (its environment's defaults).
    platform = admin.locator("#platform-settings")
    await expect(platform.locator("tr[data-setting=META_V4_MAX_WORKERS] .effective")).to_have_text(
        str(live_api.settings.v4.max_workers))
    await expect(platform.locator("tr[data-setting=META_V4_SLA_CLASSES] .effective")).to_contain_text(
        "fast: high priority, 600 s, economy models, depth 1, 1 candidate(s)")
    await expect(platform.locator("tr[data-setting=META_V4_CHAOS_ENABLED] .effective")).to_have_text(
        "off, probability 0.1")
    await expect(platform.locator("form")).to_have_count(0)

    privacy = admin.locator("#privacy")
    await admin.get_by_label("Privacy mode").select_option("local")
    await admin.get_by_label("LLM allowlist (under local)").fill("llm.internal, *.corp.example")
    await admin.get_by_role("button", name="Save privacy").click()
    await expect(admin.get_by_role("status")).to_have_text("privacy saved")
    await expect(privacy.locator("tr[data-setting=mode] .effective")).to_have_text("local")
    await expect(privacy.locator("tr[data-setting=mode] .source")).to_have_text("tenant")
    await expect(privacy.locator("tr[data-setting=llm_allowlist] .effective")).to_have_text(
        "llm.internal, *.corp.example")
    await admin.get_by_label("Domain allowlist (every outbound call)").fill("not a host")
    await admin.get_by_role("button", name="Save privacy").click()
    await expect(admin.get_by_role("alert")).to_contain_text("form.domain_allowlist[0]: 'not a host' is not a host")
    await admin.go_back()
    await admin.reload()
    await admin.get_by_role("button", name="Reset privacy to the platform's").click()
    await expect(admin.get_by_role("status")).to_have_text("privacy reset to the platform's")
    await expect(privacy.locator("tr[data-setting=mode] .source")).to_have_text("platform")

    await admin.get_by_label("Webhook URL").fill("https://hooks.example/mb")
    await admin.get_by_label("Webhook format").select_option("slack")
    await admin.get_by_label("run.rolled_back").uncheck()
    await admin.get_by_role("button", name="Add webhook").click()
    await expect(admin.locator("#new-secret")).to_contain_text("shown this once")
    secret = (await admin.locator("#new-secret code").inner_text()).strip()
    assert len(secret) >= 32 and secret not in admin.url
    row = admin.locator("#webhooks tbody tr").first
    await expect(row).to_contain_text("https://hooks.example/mb")
    await expect(row).to_contain_text("gate.opened, gate.expiring, run.failed")
    await admin.screenshot(path=shots / "portal-settings-hub.png", full_page=True)
    await admin.goto("/portal/settings")
    await expect(admin.locator("#new-secret")).to_have_count(0)  # never shown again
    await row.get_by_role("button", name="Delete").click()
    await expect(admin.get_by_role("status")).to_contain_text("deleted")
    await expect(admin.locator("#webhooks")).to_contain_text("No webhooks")

    async with live_api.client(tokens["admin"]) as http:  # type: ignore[index]
        assert (await http.get(f"/api/meta/v4/tenants/{tenant}/settings")).json()["overrides"] == {"enabled": False}
        audit = (await http.get("/api/meta/v3/audit", params={"limit": 100})).json()
    changes = [(a["event"], a["actor"]) for a in audit if a["event"] != "tenant.created"]
    assert changes == [("settings.tenant_v4_changed", "admin-user"), ("privacy.changed", "admin-user"),
                       ("privacy.changed", "admin-user"), ("webhook.created", "admin-user"),
                       ("webhook.deleted", "admin-user")], changes


async def test_the_diagnostics_page_shows_doctors_checks_to_admins_only(
        live_api: LiveApi, api_sessions, browser: Browser, shots: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _, tokens = make_tenant(api_sessions)
    async with live_api.client(tokens["admin"]) as http:  # type: ignore[index]
        forced = await http.post("/api/meta/v4/circuit-breakers", json={
            "failure_class": "TRANSIENT", "dependency": "cache.internal:6379", "action": "open"})
        assert forced.status_code == 200, forced.text
    admin = await sign_in(browser, live_api, tokens["admin"])  # type: ignore[index]
    await admin.get_by_role("link", name="Diagnostics").click()
    checks = admin.locator("#checks")
    for name in ("version.metabuilder", "version.temporal_server", "temporal.connection", "temporal.namespace",
                 "database.reachable", "database.migrations"):
        await expect(checks.locator(f"tr[data-check='{name}'] .status")).to_have_text("green")
    await expect(checks.locator("tr[data-check='database.reachable']")).to_contain_text("postgresql")
    # This tenant's breaker, forced open above: red, naming it.
    opened = checks.locator("tr[data-check='breakers']")
    await expect(opened.locator(".status")).to_have_text("red")
    await expect(opened).to_contain_text("not closed: TRANSIENT/cache.internal:6379")
    # Whether a worker polls the API's queues depends on the tests before; the state and the reason agree.
    cpu = checks.locator("tr[data-check='temporal.pollers.cpu']")
    state = (await cpu.locator(".status").inner_text()).strip()
    await expect(cpu).to_contain_text("polling" if state == "green" else "metabuilder worker --queues cpu")
    await expect(admin.locator("#verdict")).to_contain_text("something is red")
    await expect(admin.locator("#monitoring a[href='/metrics']")).to_be_visible()
    await admin.screenshot(path=shots / "portal-diagnostics.png", full_page=True)

    viewer = await sign_in(browser, live_api, tokens["viewer"])  # type: ignore[index]
    await expect(viewer.get_by_role("link", name="Diagnostics")).to_have_count(0)
    await viewer.goto("/portal/settings")
    await expect(viewer.locator("#flags tr[data-setting=v4_enabled] .source")).to_have_text("platform")
    await expect(viewer.get_by_role("button", name="Save v4")).to_have_count(0)
    await expect(viewer.get_by_role("button", name="Add webhook")).to_have_count(0)
    answer = await viewer.goto("/portal/diagnostics")
    assert answer is not None and answer.status == 403
    await expect(viewer.get_by_role("main")).to_contain_text("needs the admin role")
