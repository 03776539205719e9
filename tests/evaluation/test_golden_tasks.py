"""The shipped golden tasks: each loads, and together they cover every class, rung and language."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from metabuilder.domain.outcomes import Strategy
from metabuilder.domain.taxonomy import FailureType
from metabuilder.evaluation.recorded_llm import NO_PATCH, RecordedModel, recorded_llm
from metabuilder.evaluation.services import fixture_service, parse_answer
from metabuilder.evaluation.tasks import load_tasks

TASKS = load_tasks()


def test_there_are_at_least_30_tasks_over_every_class_rung_and_language() -> None:
    assert len(TASKS) >= 30
    assert {t.expected.failure_class for t in TASKS} == set(FailureType)
    assert {t.expected.strategy for t in TASKS} == set(Strategy) - {Strategy.CLASSIFY}
    assert {t.expected.language for t in TASKS} >= {"python", "javascript", "shell"}


def test_security_and_policy_tasks_expect_an_escalation_and_the_three_unsafe_diffs_are_there() -> None:
    for t in TASKS:
        if t.expected.failure_class in (FailureType.SECURITY, FailureType.POLICY):
            assert (t.expected.strategy, t.expected.status) == (Strategy.ESCALATE, "escalated"), t.name
    unsafe = {t.name: "\n".join(r.answer for r in t.responses) for t in TASKS if t.expected.unsafe}
    assert any(".github/workflows/" in a for a in unsafe.values())
    assert any("sk-live-" in a for a in unsafe.values())
    assert any("+++ b/../" in a for a in unsafe.values())


@pytest.mark.parametrize("task", [t for t in TASKS if t.expected.fixer == "llm"], ids=lambda t: t.name)
def test_a_task_fixed_by_the_llm_has_a_recorded_answer(task) -> None:  # type: ignore[no-untyped-def]
    assert task.responses, f"{task.name} expects an LLM patch but records no answer"


def test_the_recorded_endpoint_answers_by_task_and_no_patch_otherwise() -> None:
    model = RecordedModel([r for t in TASKS for r in t.responses])
    [median] = [t for t in TASKS if t.name == "py-median-even"]
    with recorded_llm(model) as url:
        def ask(text: str) -> dict[str, object]:
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
            req = urllib.request.Request(url + "/chat/completions", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.load(resp)  # type: ignore[no-any-return]

        hit = ask("FAIL: test_median_of_even_count (test_stats.Stats)")
        miss = ask("something else entirely")
    assert hit["choices"][0]["message"]["content"] == median.responses[0].answer  # type: ignore[index]
    assert miss["choices"][0]["message"]["content"] == NO_PATCH  # type: ignore[index]
    assert [e.task for e in model.exchanges] == ["py-median-even", None]
    assert hit["usage"]["prompt_tokens"] > 0  # type: ignore[index]


def test_fixture_routes_answer_in_order_then_repeat_the_last_and_each_run_counts_apart() -> None:
    with fixture_service() as service:
        a = service.register("a", {"/x": ["503", "429 retry-after=2 slow down", "200 done"]}, "t")
        b = service.register("b", {"/x": ["200 fine"]}, "t")

        def get(url: str) -> tuple[int, str, str | None]:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    return resp.status, resp.read().decode(), None
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode(), err.headers.get("Retry-After")

        got = [get(a + "/x") for _ in range(4)]
        assert get(b + "/x") == (200, "fine", None)
    assert got == [(503, "ok", None), (429, "slow down", "2"), (200, "done", None), (200, "done", None)]


@pytest.mark.parametrize("bad", ["teapot", "20 x", "delay=x 200"])
def test_a_bad_fixture_answer_is_refused_naming_where(bad: str) -> None:
    with pytest.raises(ValueError, match="^t: /p: "):
        parse_answer(bad, "t: /p")
