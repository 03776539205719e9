"""Hostile plans and bodies against the live API process: each gets a 4xx naming what is wrong,
never a 500 (after which the server would drop the keep-alive connection they share here)."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.access import Role
from tests.api.conftest import LiveApi, make_tenant, workspace

STEP = "steps:\n  - {name: a, command: x}\n"
DEEP = {
    "a sequence": "name: p\nsteps: " + "[" * 600 + "]" * 600 + "\n",
    "a flow mapping": "name: p\nsteps: " + "{a: " * 600 + "1" + "}" * 600 + "\n",
    "a block mapping": "name: p\ndescription:\n" + "".join(" " * i + "a:\n" for i in range(1, 200)) + STEP,
}


@pytest.fixture(scope="module")
def tokens(api_sessions: sessionmaker[Session]) -> dict[Role, str]:
    return make_tenant(api_sessions)[1]


@pytest.fixture
def http(live_api: LiveApi, tokens: dict[Role, str]) -> httpx.Client:
    with httpx.Client(base_url=live_api.url, headers={"Authorization": f"Bearer {tokens[Role.OWNER]}"},
                      timeout=60) as client:
        yield client


def refused(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert all(w in detail for w in words), detail


@pytest.mark.parametrize("kind", DEEP)
def test_deep_nesting_is_refused_with_its_line(http: httpx.Client, live_api: LiveApi, kind: str) -> None:
    refused(http.post("/api/meta/v3/plans", json={"yaml": DEEP[kind]}), 422, "nested more than 32 levels")
    body = {"plan_yaml": DEEP[kind], "workspace": str(live_api.root)}
    refused(http.post("/api/meta/v3/runs", json=body), 422, "nested more than 32 levels")


@pytest.mark.parametrize(("name", "words"), [
    ("n" * 5000, ("5000 characters", "at most 128")),
    ("n" * 201, ("201 characters",)),  # over the plan name column on PostgreSQL
    ("../../../tmp/evil", ("'../../../tmp/evil' is not a valid plan name",)),
])
def test_plan_names_are_checked(http: httpx.Client, name: str, words: tuple[str, ...]) -> None:
    refused(http.post("/api/meta/v3/plans", json={"yaml": f"name: {name}\n{STEP}"}), 422, "plan:1: name:", *words)


@pytest.mark.parametrize(("plan", "words"), [
    ('name: p\nsteps:\n  - name: a\n    command: "echo \\0"\n', ("plan:4: steps[0] (a).command", "NUL byte")),
    ("name: p\nsteps:\n  - name: a\n    command: x\n    env: {BIG: " + "v" * 140_000 + "}\n",
     ("plan:5: steps[0] (a).env.BIG", "at most 131071 bytes")),
    ("name: p\nsteps:\n" + "".join(f"  - {{name: s{i}, command: x}}\n" for i in range(501)),
     ("plan:3: steps: 501 steps", "at most 500")),
])
def test_plans_that_could_never_run_are_refused_up_front(http: httpx.Client, plan: str,
                                                         words: tuple[str, ...]) -> None:
    refused(http.post("/api/meta/v3/plans", json={"yaml": plan}), 422, *words)


def test_a_nul_or_a_lone_surrogate_in_the_workspace_is_a_422(http: httpx.Client, live_api: LiveApi) -> None:
    for bad, words in ((f"{live_api.root}/ws\x00x", ("is not a usable path", "null byte")),
                       (f"{live_api.root}/\ud800", ("body.workspace",))):
        body = json.dumps({"plan_yaml": f"name: p\n{STEP}", "workspace": bad})  # ASCII: \\ud800 escaped
        response = http.post("/api/meta/v3/runs", content=body, headers={"content-type": "application/json"})
        refused(response, 422, *words)


def test_a_run_too_big_for_temporal_is_refused_naming_the_limit(http: httpx.Client, live_api: LiveApi) -> None:
    value = "v" * 100_000
    plan = ("name: aliased\nsteps:\n  - name: a\n    command: x\n    env: &e {A: &v " + value + ", B: *v, C: *v}\n"
            + "".join(f"  - {{name: s{i}, command: x, env: *e}}\n" for i in range(3)))
    body = {"plan_yaml": plan, "workspace": str(workspace(live_api, "too-big"))}
    refused(http.post("/api/meta/v3/runs", json=body), 422, "the run's input would be", "limit.blobSize.error")


def test_a_body_over_the_limit_is_413(http: httpx.Client) -> None:
    big = {"yaml": "x" * (5 * 1024 * 1024)}
    refused(http.post("/api/meta/v3/plans", json=big), 413, "at most 4 MiB")
    refused(http.post("/api/meta/v3/classify-failure", json={"logs": "x" * (9 * 1024 * 1024)}), 413, "at most 8 MiB")
    assert http.post("/api/meta/v3/classify-failure", json={"logs": "x" * (2 * 1024 * 1024)}).status_code == 200
