"""The optional LLM classifier against a local OpenAI-protocol server: asked only about what
the classifier leaves UNKNOWN, cached by the failure window, and never needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metabuilder.activities.steps import StepActivities
from metabuilder.activities.workspace import Workspace
from metabuilder.adapters.git import WorkspaceCache
from metabuilder.adapters.llm import LlmSettings
from metabuilder.domain.taxonomy import FailureType
from metabuilder.migrations import upgrade
from metabuilder.store.db import make_engine, session_factory
from tests.fakes.openai_server import fake_openai

UNCLEAR = b"step 1 of 3\nfrobnicator: quux not reticulated (code 7)\n"
CLEAR = b"E   assert 1 == 2\n"


@pytest.fixture
def sessions(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'mb.db'}"
    upgrade(url)
    engine = make_engine(url, pooled=False)
    yield session_factory(engine)
    engine.dispose()


def _steps(tmp_path: Path, sessions, url: str | None) -> StepActivities:
    llm = LlmSettings(url=url, model="classifier-test", timeout_seconds=5) if url else None
    return StepActivities(Workspace(tmp_path, WorkspaceCache(tmp_path / "w")), sessions, llm_classifier=llm)


def _log(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_an_unknown_failure_is_asked_once_and_the_answer_cached(tmp_path: Path, sessions) -> None:
    with fake_openai() as (fake, url):
        fake.replies.append(json.dumps({"class": "INFRA", "confidence": 0.8,
                                        "line": "frobnicator: quux not reticulated (code 7)"}))
        steps = _steps(tmp_path, sessions, url)
        first = steps._classify(_log(tmp_path, "a.log", UNCLEAR), 1, "build", "acme")
        assert first.type is FailureType.INFRA and first.confidence == 0.8
        assert "llm" in first.patterns and first.evidence[0].pattern == "llm.infra"
        prompt = fake.requests[0]["messages"][1]["content"]
        assert "quux not reticulated" in prompt and "Exit code: 1" in prompt
        # The same failure in another run (another number in it): no second call.
        again = steps._classify(_log(tmp_path, "b.log", UNCLEAR.replace(b"1 of 3", b"2 of 3")), 1, "build", "acme")
        assert again.type is FailureType.INFRA and len(fake.requests) == 1
        # What the patterns decide never reaches the endpoint.
        assert steps._classify(_log(tmp_path, "c.log", CLEAR), 1, "test", "acme").type is FailureType.TEST_ASSERT
        assert len(fake.requests) == 1


@pytest.mark.parametrize("reply", ["not json at all", '{"class": "NOPE", "confidence": 0.9}',
                                   '{"class": "POLICY", "confidence": 0.3}', '{"class": "UNKNOWN", "confidence": 1}'])
def test_an_unusable_or_unsure_answer_keeps_unknown(tmp_path: Path, sessions, reply: str) -> None:
    with fake_openai() as (fake, url):
        fake.replies.append(reply)
        signal = _steps(tmp_path, sessions, url)._classify(_log(tmp_path, "a.log", UNCLEAR), 1, "build", "acme")
        assert signal.type is FailureType.UNKNOWN and len(fake.requests) == 1


def test_an_unreachable_endpoint_keeps_unknown(tmp_path: Path, sessions) -> None:
    steps = _steps(tmp_path, sessions, "http://127.0.0.1:9/v1")
    assert steps._classify(_log(tmp_path, "a.log", UNCLEAR), 1, "build", "acme").type is FailureType.UNKNOWN
    assert steps.llm_classifier is not None and steps.llm_classifier.calls == 1
    assert _steps(tmp_path, sessions, None)._classify(_log(tmp_path, "b.log", UNCLEAR), 1, "build",
                                                      "acme").type is FailureType.UNKNOWN


def test_the_setting_needs_an_endpoint_and_says_so() -> None:
    from metabuilder.worker.settings import Settings, SettingsError

    llm = {"META_BUILDER_LLM_URL": "http://127.0.0.1:9/v1", "META_BUILDER_LLM_MODEL": "m"}
    assert Settings.from_env({**llm, "META_BUILDER_LLM_CLASSIFY": "true"}).llm_classify
    assert not Settings.from_env(llm).llm_classify
    with pytest.raises(SettingsError, match="needs META_BUILDER_LLM_URL"):
        Settings.from_env({"META_BUILDER_LLM_CLASSIFY": "true"})
    with pytest.raises(SettingsError, match="expected true or false"):
        Settings.from_env({**llm, "META_BUILDER_LLM_CLASSIFY": "sometimes"})
