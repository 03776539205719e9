"""The CLI's changes are audited (as ``cli:<user>``, with the invocation's request id), and
``metabuilder audit export`` writes a tenant's events of a time range as JSON lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.worker.test_cli import env, metabuilder  # noqa: F401 - the env fixture


def export(env: dict[str, str], *args: str) -> list[dict]:  # type: ignore[type-arg]  # noqa: F811
    res = metabuilder("audit", "export", *args, env=env)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_cli_changes_are_audited_and_exported_by_tenant_and_time(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    start = datetime.now(UTC) - timedelta(seconds=1)
    assert metabuilder("tenants", "create", "acme", env=env).returncode == 0
    created = metabuilder("tokens", "create", "--tenant", "acme", "--user", "ann", "--role", "admin", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[1]
    token_id = created.stdout.split("id ")[1].split(":")[0]
    assert metabuilder("settings", "--tenant", "acme", "--set", "max_total_attempts=4", env=env).returncode == 0
    assert metabuilder("tokens", "revoke", token_id, env=env).returncode == 0
    middle = datetime.now(UTC)

    events = export(env, "--tenant", "acme", "--since", start.isoformat())
    assert [e["event"] for e in events] == ["tenant.created", "token.created", "settings.tenant_changed",
                                            "token.revoked"]
    assert all(e["actor"].startswith("cli:") and e["tenant"] == "acme" and e["request_id"].startswith("cli-")
               for e in events)
    assert len({e["request_id"] for e in events}) == 4  # one per invocation
    assert events[1]["target"] == f"token:{token_id}" and events[1]["after"]["role"] == "admin"
    assert token not in json.dumps(events)  # the token itself is never written, only its prefix
    assert (events[2]["before"], events[2]["after"]) == ({}, {"max_total_attempts": 4})
    assert (events[3]["before"]["revoked"], events[3]["after"]["revoked"]) == (False, True)

    assert export(env, "--tenant", "acme", "--since", middle.isoformat()) == []
    assert export(env, "--tenant", "acme", "--until", start.isoformat()) == []
    assert export(env, "--tenant", "other") == []
    out = tmp_path / "audit.jsonl"
    res = metabuilder("audit", "export", "--tenant", "acme", "-o", str(out), env=env)
    assert res.returncode == 0 and "4 audit events written" in res.stderr
    assert len(out.read_text().splitlines()) == 4
    bad = metabuilder("audit", "export", "--since", "yesterday", env=env)
    assert bad.returncode == 2 and "--since 'yesterday': expected an ISO 8601 time" in bad.stderr


def test_privacy_is_shown_and_set_from_the_cli_and_audited(env: dict[str, str]) -> None:  # noqa: F811
    shown = metabuilder("privacy", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["mode"] == "redacted" and json.loads(shown.stdout)["sources"]["mode"] == "platform"
    changed = metabuilder("privacy", "set", "--mode", "local", "--llm-allow", "llm.internal,127.0.0.1", "--json",
                          env=env)
    assert changed.returncode == 0, changed.stderr
    body = json.loads(changed.stdout)
    assert (body["mode"], body["llm_allowlist"], body["sources"]["mode"]) == (
        "local", ["llm.internal", "127.0.0.1"], "tenant")
    bad = metabuilder("privacy", "set", "--llm-allow", "not a host!", env=env)
    assert bad.returncode == 2 and "is not a host name" in bad.stderr
    bad_env = metabuilder("privacy", "show", env={**env, "META_V4_PRIVACY_MODE": "secret"})
    assert bad_env.returncode == 2 and "META_V4_PRIVACY_MODE" in bad_env.stderr
    [event] = [e for e in export(env) if e["event"] == "privacy.changed"]
    assert event["before"] == {} and event["after"]["mode"] == "local" and event["target"] == "tenant:default/privacy"
