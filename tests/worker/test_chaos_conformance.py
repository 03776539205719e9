"""``metabuilder chaos conformance`` as CI runs it: the real command, a real dev server, real step
worker processes (one of them killed by its probe), PostgreSQL; and that a row which does not
hold fails the table."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from metabuilder.domain.taxonomy import FailureType
from metabuilder.store import audit
from metabuilder.store.db import make_engine, session_factory, transaction
from metabuilder.worker.cli.conformance import TENANT, Expectation, Observation, Report, check, render
from tests.worker.test_cli import metabuilder

CLASSES = ("TRANSIENT", "RATE_LIMIT", "INFRA", "SCHEMA_MIGRATION", "SECURITY")


@pytest.fixture(scope="module")
def conformance(tmp_path_factory: pytest.TempPathFactory, pg_url: str, dev_server) -> dict:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("conformance")
    report = home / "conformance.json"
    env = {"TEMPORAL_ADDRESS": dev_server.address, "META_BUILDER_HOME": str(home / "home"), "DATABASE_URL": pg_url}
    res = metabuilder("chaos", "conformance", "--json", str(report), env=env, timeout=300)
    return {"res": res, "report": report, "pg_url": pg_url}


@pytest.mark.timeout(360)
def test_every_class_gets_the_policys_reaction(conformance: dict) -> None:  # type: ignore[type-arg]
    res = conformance["res"]
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[1].split()[:3] == ["class", "expected", "holds"]
    for cls in CLASSES:
        [row] = [line for line in lines if line.startswith(cls + " ")]
        assert "  yes  " in row, row
    assert "every row holds" in res.stdout
    data = json.loads(Path(conformance["report"]).read_text())
    assert data["holds"] is True and len(data["observations"]) == 5
    # Each probe's chaos scope was turned on and off again, in the audit log.
    sessions = session_factory(make_engine(conformance["pg_url"], pooled=False))
    with transaction(sessions) as session:
        events = [(e.event, e.run_id) for e in audit.audit_events(session, tenant=TENANT, event="chaos.*")]
    run_ids = {o["run_id"] for o in data["observations"]}
    assert {r for e, r in events if e == "chaos.enabled"} >= run_ids
    assert {r for e, r in events if e == "chaos.disabled"} >= run_ids


def _observations(conformance: dict) -> tuple[list[Observation], Expectation]:  # type: ignore[type-arg]
    data = json.loads(Path(conformance["report"]).read_text())
    exp = data["expectation"]
    return ([Observation.from_json(o) for o in data["observations"]],
            Expectation(tuple(exp["transient_delays"]), exp["retry_after_seconds"], exp["tolerance_seconds"]))


@pytest.mark.timeout(360)
def test_a_deliberately_wrong_expectation_fails_its_row_and_the_table(conformance: dict) -> None:  # type: ignore[type-arg]
    observations, exp = _observations(conformance)
    assert all(check(o, exp).holds for o in observations)
    wrong = replace(exp, transient_delays=tuple(d * 2 for d in exp.transient_delays))
    rows = [check(o, wrong) for o in observations]
    assert [r.failure_class for r in rows if not r.holds] == [FailureType.TRANSIENT]
    assert not Report(rows, observations, wrong).holds
    out = io.StringIO()
    render(rows, out)
    [row] = [line for line in out.getvalue().splitlines() if line.startswith("TRANSIENT ")]
    assert "  NO  " in row and "retried after 2s, 4s" in row


@pytest.mark.timeout(360)
@pytest.mark.parametrize(("cls", "doctor"), [
    ("SECURITY", lambda o: replace(o, attempts=o.attempts * 2)),                      # retried
    ("SECURITY", lambda o: replace(o, status="failed", open_gates=0)),                # not escalated
    ("INFRA", lambda o: replace(o, attempts=[o.attempts[0], replace(o.attempts[-1], worker=o.attempts[0].worker)])),
    ("INFRA", lambda o: replace(o, killed_workers=[])),                               # its worker did not die
    ("SCHEMA_MIGRATION", lambda o: replace(o, plan_deltas=[])),                       # not re-planned
    ("RATE_LIMIT", lambda o: replace(o, attempts=[o.attempts[0], replace(  # retried before its Retry-After
        o.attempts[1], started_at=o.attempts[0].finished_at + 0.5)])),
    ("TRANSIENT", lambda o: replace(o, status="failed")),
])
def test_a_reaction_other_than_the_policys_does_not_hold(conformance: dict, cls: str, doctor) -> None:  # type: ignore[no-untyped-def,type-arg]
    observations, exp = _observations(conformance)
    [obs] = [o for o in observations if o.failure_class == cls]
    assert check(obs, exp).holds
    assert not check(doctor(obs), exp).holds
