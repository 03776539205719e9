"""The LLM client against the local OpenAI-protocol server: what is retried, Retry-After, the
temperature and max_tokens sent, and the usage read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from metabuilder.adapters.llm import LlmError, LlmSettings, propose, retry_after_seconds
from metabuilder.domain.outcomes import Fixer
from metabuilder.domain.payloads import FixInput, RunRef
from metabuilder.domain.plans import Step
from tests.fakes.openai_server import fake_openai

FIX = FixInput(run=RunRef("r1", "acme", "/nowhere.git", "b"), step_index=0, step=Step("test", "pytest -q"),
               commit="a" * 40, fixer=Fixer.LLM, log_tail="E   assert 1 == 2\n")


async def test_usage_temperature_and_max_tokens(tmp_path: Path) -> None:
    with fake_openai() as (fake, url):
        fake.usage = (321, 45)
        settings = LlmSettings(url=url, model="m", price_in_per_million=1.0, price_out_per_million=2.0,
                               temperature=0.7, max_tokens=512)
        got = await propose(settings, FIX, tmp_path)
    [body] = fake.requests
    assert (body["temperature"], body["max_tokens"], body["model"]) == (0.7, 512, "m")
    assert (got.model, got.tokens_in, got.tokens_out) == ("m", 321, 45)
    assert got.cost_usd == pytest.approx((321 * 1.0 + 45 * 2.0) / 1e6)


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (401, False), (404, False), (422, False),
                                                   (408, True), (429, True), (500, True), (503, True)])
async def test_only_408_429_and_5xx_are_retried(tmp_path: Path, status: int, retryable: bool) -> None:
    with fake_openai() as (fake, url):
        fake.errors.append((status, {}))
        with pytest.raises(LlmError) as err:
            await propose(LlmSettings(url=url, model="m"), FIX, tmp_path)
    assert err.value.retryable is retryable and f"answered {status}" in str(err.value)
    assert err.value.retry_after is None


async def test_a_429_says_how_long_to_wait(tmp_path: Path) -> None:
    with fake_openai() as (fake, url):
        fake.errors.append((429, {"Retry-After": "7"}))
        with pytest.raises(LlmError) as err:
            await propose(LlmSettings(url=url, model="m"), FIX, tmp_path)
        assert err.value.retryable and err.value.retry_after == 7
        got = await propose(LlmSettings(url=url, model="m"), FIX, tmp_path)  # the next answer is normal
    assert got.tokens_in == 1000


def test_retry_after_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("20") == 20
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now.timestamp()) == 90
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=5), usegmt=True), now.timestamp()) == 0
    assert retry_after_seconds("86400") == 600  # capped
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
