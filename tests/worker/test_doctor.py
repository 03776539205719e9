"""``metabuilder doctor`` against the real dev server and database: red (exit 1, with reasons)
while no worker polls the pools, green once workers run; the LLM endpoint checked under the
tenant's privacy mode (not contacted under ``none``)."""

from __future__ import annotations

import asyncio
import json

from tests.fakes.openai_server import fake_openai
from tests.store.test_store import HEAD_REVISION
from tests.worker.test_cli import env, metabuilder  # noqa: F401 - the env fixture


def checks(res) -> dict[str, dict]:  # type: ignore[no-untyped-def, type-arg]
    return {c["name"]: c for c in json.loads(res.stdout)}


async def test_doctor_names_what_is_red_and_turns_green(env: dict[str, str]) -> None:  # noqa: F811
    fresh = checks(await asyncio.to_thread(metabuilder, "doctor", "--json", env=env))["database.migrations"]
    assert not fresh["ok"] and f"at None, head is {HEAD_REVISION}" in fresh["reason"]  # a new SQLite file
    assert (await asyncio.to_thread(metabuilder, "db", "upgrade", env=env)).returncode == 0
    res = await asyncio.to_thread(metabuilder, "doctor", "--json", env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    found = checks(res)
    for name in ("version.metabuilder", "version.temporal_sdk", "version.temporal_server", "temporal.connection",
                 "temporal.namespace", "temporal.search_attributes", "database.reachable", "database.migrations",
                 "llm.endpoint", "breakers"):
        assert found[name]["ok"], found[name]
    assert not found["temporal.pollers.cpu"]["ok"]
    assert "no worker polls" in found["temporal.pollers.cpu"]["reason"]
    assert f"at head {HEAD_REVISION}" in found["database.migrations"]["reason"]
    assert "no LLM endpoint configured" in found["llm.endpoint"]["reason"]
    assert found["canary"]["ok"] and "worker versioning is off" in found["canary"]["reason"]
    versioned = {**env, "META_BUILDER_WORKER_VERSIONING": "true", "META_BUILDER_DEPLOYMENT_NAME": "mb-doctor-none"}
    canary = checks(await asyncio.to_thread(metabuilder, "doctor", "--json", env=versioned))["canary"]
    assert canary["ok"] and canary["reason"] == "deployment 'mb-doctor-none': no version is current yet", canary
    text = await asyncio.to_thread(metabuilder, "doctor", env=env)
    assert "RED    temporal.pollers.workflow" in text.stdout and "green  database.reachable" in text.stdout

    with fake_openai() as (fake, url):
        llm = {**env, "META_BUILDER_LLM_URL": url, "META_BUILDER_LLM_MODEL": "m", "META_V4_PRIVACY_MODE": "none"}
        refused = checks(await asyncio.to_thread(metabuilder, "doctor", "--json", env=llm))["llm.endpoint"]
        assert refused["ok"] and "not contacted" in refused["reason"] and fake.connections == 0
        llm["META_V4_PRIVACY_MODE"] = "redacted"
        reached = checks(await asyncio.to_thread(metabuilder, "doctor", "--json", env=llm))["llm.endpoint"]
        assert reached["ok"] and "answered 501" in reached["reason"] and fake.connections == 1  # no GET: it answers


async def test_doctor_is_green_with_workers_polling(env: dict[str, str], workers) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    res = await asyncio.to_thread(metabuilder, "doctor", "--json", env=env)
    found = checks(res)
    assert res.returncode == 0, [c for c in found.values() if not c["ok"]]
    assert "1 worker(s) polling" in found["temporal.pollers.llm"]["reason"]
