"""The optional LLM classifier: asks the LLM endpoint about a failure that the patterns and the
learned model leave UNKNOWN (``META_BUILDER_LLM_CLASSIFY=true`` with ``META_BUILDER_LLM_URL``).

Answers are cached per worker by the masked failure window, so the same failure costs one call.
Any error (unreachable, timeout, an unusable answer) keeps the UNKNOWN: the classifier never
depends on it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import httpx

from metabuilder.adapters.llm import LlmSettings
from metabuilder.domain.llm_classify import build_messages, cache_key, read_answer
from metabuilder.domain.privacy import EffectivePrivacy, llm_refusal, redact_messages
from metabuilder.domain.signals import FailureSignal

CACHE_ENTRIES = 1024


class LlmClassifier:
    def __init__(self, settings: LlmSettings) -> None:
        self.settings = settings
        self.calls = 0
        self.refused = 0
        """Calls the privacy settings refused (nothing was sent)."""
        self._answers: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def _ask(self, messages: list[dict[str, str]]) -> str:
        body = {"model": self.settings.model, "temperature": 0, "messages": messages}
        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        url = self.settings.url.rstrip("/") + "/chat/completions"
        self.calls += 1
        with httpx.Client(timeout=min(self.settings.timeout_seconds, 60.0)) as client:
            resp = client.post(url, json=body, headers=headers)
        resp.raise_for_status()
        return str(resp.json()["choices"][0]["message"]["content"] or "")

    def classify(self, signal: FailureSignal, step_name: str, exit_code: int | None,
                 window: Sequence[str], privacy: EffectivePrivacy | None = None) -> FailureSignal:
        """``signal`` as the LLM reads it, when ``signal`` is UNKNOWN; else ``signal`` itself (also
        when the tenant's privacy mode or allowlists refuse the call: nothing is sent then)."""
        if signal.type.value != "UNKNOWN" or not window:
            return signal
        if privacy is not None and llm_refusal(privacy, self.settings.url):
            self.refused += 1
            return signal
        key = cache_key(step_name, exit_code, window)
        with self._lock:
            content = self._answers.get(key)
            if content is not None:
                self._answers.move_to_end(key)
        if content is None:
            try:
                messages = build_messages(step_name, exit_code, signal, window)
                if privacy is not None:
                    messages, _ = redact_messages(privacy, messages)
                content = self._ask(messages)
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
                return signal  # not cached: the next failure may find the endpoint back
            with self._lock:
                self._answers[key] = content
                while len(self._answers) > CACHE_ENTRIES:
                    self._answers.popitem(last=False)
        return read_answer(content, signal)
