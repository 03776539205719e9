"""`metabuilder breakers`: list them, open, close and reset one, as an operator would."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from metabuilder.domain.breakers import BreakerKey, BreakerPolicy, BreakerState, record_failure
from metabuilder.domain.taxonomy import FailureType
from metabuilder.migrations import upgrade
from metabuilder.store import breakers, repository
from metabuilder.store.db import make_engine, session_factory, transaction
from metabuilder.worker.settings import Settings
from tests.worker.test_cli import metabuilder


def test_list_override_and_audit(tmp_path: Path) -> None:
    env = {"META_BUILDER_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    settings = Settings.from_env(env)
    upgrade(settings.database_url)
    sessions = session_factory(make_engine(settings.database_url))
    assert metabuilder("breakers", env=env).stdout.strip() == "no circuit breakers yet"

    key = BreakerKey("default", FailureType.TRANSIENT, "pypi.org:443")
    for t in (1.0, 2.0, 3.0):
        breakers.change(sessions, key, functools.partial(record_failure, now=t, policy=BreakerPolicy(threshold=3),
                                                         run_id="r"))
    listed = metabuilder("breakers", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "pypi.org:443" in listed.stdout and " open " in listed.stdout and "3 failures within 60s" in listed.stdout
    [row] = json.loads(metabuilder("breakers", "--json", env=env).stdout)
    assert (row["state"], row["trips"], row["tenant"]) == ("open", 1, "default")

    closed = metabuilder("breakers", "close", "transient", "pypi.org:443", "--user", "ops", env=env)
    assert closed.returncode == 0, closed.stderr
    assert closed.stdout.strip() == "breaker default/TRANSIENT/pypi.org:443 is closed"
    assert breakers.get(sessions, key).state is BreakerState.CLOSED
    forced = metabuilder("breakers", "open", "TRANSIENT", "pypi.org:443", env=env)
    assert "forced: no probes until closed or reset" in forced.stdout
    with transaction(sessions) as s:
        events = [(e.event, e.actor) for e in repository.audit_events(s, tenant="default", event="breaker.*")]
    assert events[0] == ("breaker.close", "cli:ops") and events[1][0] == "breaker.open"


def test_bad_overrides_name_what_is_wrong(tmp_path: Path) -> None:
    env = {"META_BUILDER_HOME": str(tmp_path / "home")}
    for args, why in ((("close",), "needs a FAILURE_CLASS and a DEPENDENCY"),
                      (("close", "LINT", "x:1"), "LINT has no circuit breaker"),
                      (("reset", "TRANSIENT", "a b"), "dependency: ")):
        res = metabuilder("breakers", *args, env=env)
        assert res.returncode == 2 and why in res.stderr and "Traceback" not in res.stderr, res.stderr
