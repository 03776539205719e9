"""``GET /api/meta/v4/canary/stats`` and the run page's canary badge, against the real API process."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.access import Role
from metabuilder.domain.payloads import RunRecord
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.runs import RunStatus
from metabuilder.store import canary, repository
from metabuilder.store.db import transaction
from tests.api.conftest import LiveApi, make_tenant

URL = "/api/meta/v4/canary/stats"
PLAN = parse_plan("name: p\nsteps:\n  - {name: a, command: 'true'}\n")
VERSION = f"9.9.{uuid.uuid4().hex[:6]}"


def _run(sessions: sessionmaker[Session], tenant: str, status: RunStatus) -> str:
    run_id = f"cn-{uuid.uuid4().hex[:10]}"
    with transaction(sessions) as s:
        repository.record_run(s, RunRecord(
            run_id=run_id, tenant=tenant, status=status, plan=PLAN, plan_source="", workflow_id=f"build-run-{run_id}",
            repo_url="/r.git", branch="b", base_commit="a" * 40, head_commit="a" * 40))
        canary.record_sample(s, run_id, "meta-builder", VERSION, status.value)
    return run_id


def test_a_viewer_reads_the_routing_and_the_tenants_samples(live_api: LiveApi,
                                                           api_sessions: sessionmaker[Session]) -> None:
    tenant, tokens = make_tenant(api_sessions)
    _, other_tokens = make_tenant(api_sessions)
    for status in (RunStatus.SUCCEEDED, RunStatus.ROLLED_BACK, RunStatus.RUNNING):
        _run(api_sessions, tenant, status)
    res = httpx.get(live_api.url + URL, headers={"Authorization": f"Bearer {tokens[Role.VIEWER]}"}, timeout=30)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["routing"]["deployment"] == "meta-builder"
    assert body["samples_by_version"] == {VERSION: 2}  # the running one is no sample yet
    assert body["comparison"] is None  # no current version in this deployment to compare with
    other = httpx.get(live_api.url + URL, headers={"Authorization": f"Bearer {other_tokens[Role.VIEWER]}"},
                      timeout=30).json()
    assert VERSION not in other["samples_by_version"]
    bad = httpx.get(live_api.url + URL, params={"candidate": "x" * 201},
                    headers={"Authorization": f"Bearer {tokens[Role.VIEWER]}"}, timeout=30)
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(live_api.url + URL, timeout=30).status_code == 401


def test_the_run_page_shows_the_version_a_run_is_pinned_to(live_api: LiveApi,
                                                          api_sessions: sessionmaker[Session]) -> None:
    tenant, tokens = make_tenant(api_sessions)
    pinned = _run(api_sessions, tenant, RunStatus.RUNNING)
    with transaction(api_sessions) as s:
        repository.record_run(s, RunRecord(
            run_id=f"{pinned}-u", tenant=tenant, status=RunStatus.RUNNING, plan=PLAN, plan_source="",
            workflow_id=f"build-run-{pinned}-u", repo_url="/r.git", branch="b", base_commit="a" * 40,
            head_commit="a" * 40))
    with httpx.Client(base_url=live_api.url, follow_redirects=False, timeout=30) as http:
        signed = http.post("/portal/login", data={"token": tokens[Role.VIEWER]})
        http.cookies.set("mb_portal", signed.cookies["mb_portal"], path="/portal")
        page = http.get(f"/portal/runs/{pinned}").text
        assert 'id="canary-badge"' in page and f"version {VERSION}" in page
        assert 'id="canary-badge"' not in http.get(f"/portal/runs/{pinned}-u").text  # an unversioned worker's run
