"""A tenant's patterns through the API (validated with line numbers) and a person's correction
of a failed step becoming one of the tenant's patterns."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.access import Role
from metabuilder.domain.payloads import RunRecord
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.runs import RunStatus
from metabuilder.store import knowledge, repository
from metabuilder.store.db import transaction
from metabuilder.store.models import BuildStep
from tests.api.conftest import LiveApi, make_tenant

V3 = "/api/meta/v3"
PLAN = "name: k\nsteps:\n  - name: licences\n    command: 'false'\n"
GOOD = """\
- id: team.fixture-slow
  class: TRANSIENT
  pattern: 'fixture server not ready'
  weight: 0.9
"""
BAD = """\
- id: team.ok
  class: LINT
  pattern: 'fine'
  weight: 0.5
- id: team.broken
  class: NOT_A_CLASS
  pattern: '('
  weight: 2
"""


def _client(api: LiveApi, token: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_patterns_crud_with_line_numbered_errors(live_api: LiveApi, api_sessions: sessionmaker[Session]) -> None:
    tenant, tokens = make_tenant(api_sessions)
    with _client(live_api, tokens[Role.ADMIN]) as http:
        base = f"{V3}/tenants/{tenant}/patterns"
        assert http.get(base).json() == {"tenant": tenant, "entries": [], "yaml": ""}

        bad = http.post(base, json={"yaml": BAD})
        assert bad.status_code == 422, bad.text
        body = bad.json()
        assert "line 6" in body["detail"] and "NOT_A_CLASS" in body["detail"]
        assert "line 7" in body["detail"] and "line 8" in body["detail"]
        assert {tuple(e["loc"]) for e in body["errors"]} >= {("body", "yaml", 6), ("body", "yaml", 7)}
        assert http.get(base).json()["entries"] == []  # nothing of a refused post is kept

        clash = http.post(base, json={"yaml": GOOD.replace("team.fixture-slow", "disk.full")})
        assert clash.status_code == 422 and "bundled entry" in clash.json()["detail"]

        added = http.post(base, json={"yaml": GOOD})
        assert added.status_code == 200, added.text
        assert [e["id"] for e in added.json()["entries"]] == ["team.fixture-slow"]
        assert "fixture server not ready" in added.json()["yaml"]

        replaced = http.put(f"{base}/team.fixture-slow", json={"yaml": GOOD.replace("TRANSIENT", "INFRA")})
        assert replaced.status_code == 200 and replaced.json()["failure_type"] == "INFRA"
        wrong_id = http.put(f"{base}/team.other", json={"yaml": GOOD})
        assert wrong_id.status_code == 422 and "team.other" in wrong_id.json()["detail"]

        assert http.delete(f"{base}/team.fixture-slow").json()["entries"] == []
        assert http.delete(f"{base}/team.fixture-slow").status_code == 404
    with _client(live_api, tokens[Role.OPERATOR]) as http:
        assert http.post(f"{V3}/tenants/{tenant}/patterns", json={"yaml": GOOD}).status_code == 403


def _failed_run(live_api: LiveApi, api_sessions: sessionmaker[Session], tenant: str) -> str:
    """A failed run of ``tenant`` whose step ``licences`` failed on a message no pattern knows."""
    run_id = f"run-{tenant}"
    log = live_api.root / f"{tenant}.log"
    log.write_text("checking licences\nlicence-gate: component frobnicate-2.1 carries a clause we refuse\n"
                   "gate finished with status 3\n")
    with transaction(api_sessions) as session:
        repository.record_run(session, RunRecord(
            run_id=run_id, tenant=tenant, status=RunStatus.FAILED, plan=parse_plan(PLAN), plan_source=PLAN,
            workflow_id=f"build-run-{run_id}", repo_url="/nowhere.git", branch="b", base_commit="a" * 40,
            head_commit="a" * 40))
        session.add(BuildStep(run_id=run_id, step_index=0, attempt=1, name="licences", queue="cpu", command="false",
                              status="failed", exit_code=3, commit_before="a" * 40, log_path=str(log),
                              signal_type="UNKNOWN", started_at=datetime.now(UTC)))
    return run_id


def test_a_correction_becomes_a_pattern_used_for_the_tenant(live_api: LiveApi,
                                                           api_sessions: sessionmaker[Session]) -> None:
    tenant, tokens = make_tenant(api_sessions)
    run_id = _failed_run(live_api, api_sessions, tenant)

    with _client(live_api, tokens[Role.OPERATOR]) as http:
        missing = http.post(f"{V3}/runs/{run_id}/corrections", json={"step": "deploy", "failure_type": "POLICY"})
        assert missing.status_code == 409 and "deploy" in missing.json()["detail"]
        made = http.post(f"{V3}/runs/{run_id}/corrections",
                         json={"step": "licences", "failure_type": "POLICY", "note": "our licence gate"})
        assert made.status_code == 200, made.text
        correction = made.json()
        assert (correction["predicted"], correction["corrected"], correction["status"]) == ("UNKNOWN", "POLICY", "open")
        assert any("clause we refuse" in line for line in correction["log_window"])
        assert "clause we refuse" in correction["proposed_pattern"]
        assert http.post(f"{V3}/tenants/{tenant}/corrections/{correction['id']}/accept").status_code == 403
        listed = http.get(f"{V3}/tenants/{tenant}/corrections").json()
        assert [c["id"] for c in listed] == [correction["id"]]

    with _client(live_api, tokens[Role.ADMIN]) as http:
        accepted = http.post(f"{V3}/tenants/{tenant}/corrections/{correction['id']}/accept")
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["failure_type"] == "POLICY"
        again = http.post(f"{V3}/tenants/{tenant}/corrections/{correction['id']}/accept")
        assert again.status_code == 409
        assert [e["failure_type"] for e in http.get(f"{V3}/tenants/{tenant}/patterns").json()["entries"]] == ["POLICY"]

    # The tenant's knowledge base now says POLICY for the same message in another build.
    from metabuilder.domain.classifier import classify

    with transaction(api_sessions) as session:
        kb = knowledge.tenant_knowledge_base(session, tenant)
    other_build = b"licence-gate: component other-9.9 carries a clause we refuse\n"
    assert classify(other_build.replace(b"other-9.9", b"frobnicate-2.1"), kb=kb).type.value == "POLICY"


@contextmanager
def _portal(api: LiveApi, token: str) -> Iterator[tuple[httpx.Client, str]]:
    """A portal session signed in with ``token``, and its form token."""
    with httpx.Client(base_url=api.url, follow_redirects=False, timeout=30) as http:
        signed = http.post("/portal/login", data={"token": token})
        assert signed.status_code == 303, signed.text
        http.cookies.set("mb_portal", signed.cookies["mb_portal"], path="/portal")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', http.get("/portal/settings/builder/autofix").text)
        assert csrf is not None
        yield http, csrf[1]


def test_the_portal_takes_a_correction_and_an_admin_accepts_its_pattern(
        live_api: LiveApi, api_sessions: sessionmaker[Session]) -> None:
    tenant, tokens = make_tenant(api_sessions)
    run_id = _failed_run(live_api, api_sessions, tenant)
    with _portal(live_api, tokens[Role.VIEWER]) as (viewer, viewer_csrf):
        assert 'id="correct"' not in viewer.get(f"/portal/runs/{run_id}").text  # no form for a viewer
        refused = viewer.post(f"/portal/runs/{run_id}/corrections",
                              data={"csrf": viewer_csrf, "step": "licences", "failure_type": "POLICY"})
        assert refused.status_code == 403 and "operator role" in refused.text

    with _portal(live_api, tokens[Role.OPERATOR]) as (operator, csrf):
        run_page = operator.get(f"/portal/runs/{run_id}").text
        assert 'id="correct"' in run_page and "<option>licences</option>" in run_page
        bad = operator.post(f"/portal/runs/{run_id}/corrections",
                            data={"csrf": csrf, "step": "licences", "failure_type": "NOT_A_CLASS"})
        assert bad.status_code == 422 and "failure_type" in bad.text
        made = operator.post(f"/portal/runs/{run_id}/corrections",
                             data={"csrf": csrf, "step": "licences", "failure_type": "POLICY", "note": "our gate"})
        assert made.status_code == 303 and made.headers["location"].startswith("/portal/corrections?notice=")
        listed = operator.get(made.headers["location"]).text
        assert "recorded as POLICY" in listed and "clause we refuse" in listed and "our gate" in listed
        assert "Accept the pattern" not in listed  # an operator proposes, an admin accepts
        (correction_id,) = re.findall(r'id="correction-([^"]+)"', listed)

    with _portal(live_api, tokens[Role.ADMIN]) as (admin, admin_csrf):
        assert "Accept the pattern" in admin.get("/portal/corrections").text
        accepted = admin.post(f"/portal/corrections/{correction_id}/accept", data={"csrf": admin_csrf})
        assert accepted.status_code == 303, accepted.text
        after = admin.get(accepted.headers["location"]).text
        assert "counts from the next failed step on" in after and "Accept the pattern" not in after
        assert admin.post(f"/portal/corrections/{correction_id}/accept", data={"csrf": admin_csrf}).status_code == 409
    with _client(live_api, tokens[Role.VIEWER]) as http:
        entries = http.get(f"{V3}/tenants/{tenant}/patterns").json()["entries"]
        assert [e["failure_type"] for e in entries] == ["POLICY"]
