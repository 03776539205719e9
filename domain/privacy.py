"""Privacy modes and allowlists: what may leave Meta-Builder for an LLM, and where any outbound
call may go. Pure rules; the activities that call out ask them before every call.

Modes (platform -> tenant precedence, like the auto-fix settings):

- ``none``: no code or log leaves for an LLM; every LLM call is refused;
- ``local``: only LLM endpoints whose host is on the tenant's LLM allowlist;
- ``redacted``: secrets (the patch sandbox's patterns) and the tenant's own patterns are masked
  in every prompt before it is sent;
- ``open``: prompts are sent as gathered.

Whatever the mode, the domain allowlist governs every outbound call: a host must be on the
platform's list and, when the tenant has one, on the tenant's too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from metabuilder.domain.sandbox import SECRET_PATTERNS


class PrivacyMode(StrEnum):
    NONE = "none"
    LOCAL = "local"
    REDACTED = "redacted"
    OPEN = "open"


MASK = "[REDACTED]"
MAX_PATTERNS = 50
HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)*|\*")


@dataclass(frozen=True)
class Privacy:
    """One level's privacy settings; None: not set at this level (the level below applies)."""

    mode: PrivacyMode | None = None
    llm_allowlist: tuple[str, ...] | None = None
    """Hosts an LLM call may go to under ``local``."""
    domain_allowlist: tuple[str, ...] | None = None
    """Hosts any outbound call may go to (``*``: any; ``*.example.com``: its subdomains)."""
    redact_patterns: tuple[str, ...] | None = None
    """Regular expressions masked in prompts under ``redacted``, with the secret patterns."""


@dataclass(frozen=True)
class EffectivePrivacy:
    mode: PrivacyMode
    llm_allowlist: tuple[str, ...]
    platform_domains: tuple[str, ...]
    tenant_domains: tuple[str, ...] | None
    redact_patterns: tuple[str, ...]
    sources: dict[str, str] = field(default_factory=dict)
    """Setting -> the level it comes from (platform, tenant or run)."""
    run_llm: tuple[str, ...] | None = None
    """The run's own LLM allowlist: a host must be on it too (None: the run sets none)."""
    run_domains: tuple[str, ...] | None = None
    """The run's own domain allowlist: a host must be on it too."""


PLATFORM_DEFAULT = Privacy(mode=PrivacyMode.REDACTED, llm_allowlist=(), domain_allowlist=("*",), redact_patterns=())


def effective_privacy(platform: Privacy, tenant: Privacy | None) -> EffectivePrivacy:
    """The settings a tenant's calls get: each from the tenant where it sets it, else the platform.
    The domain allowlist is kept per level: a host must be on both."""
    tenant = tenant or Privacy()
    sources: dict[str, str] = {}

    def pick(name: str) -> Any:
        value = getattr(tenant, name)
        sources[name] = "tenant" if value is not None else "platform"
        return value if value is not None else getattr(platform, name)

    mode, llm, patterns = pick("mode"), pick("llm_allowlist"), pick("redact_patterns")
    sources["domain_allowlist"] = "tenant" if tenant.domain_allowlist is not None else "platform"
    return EffectivePrivacy(mode=mode or PrivacyMode.REDACTED, llm_allowlist=tuple(llm or ()),
                            platform_domains=tuple(platform.domain_allowlist or ("*",)),
                            tenant_domains=tenant.domain_allowlist, redact_patterns=tuple(patterns or ()),
                            sources=sources)


STRICTNESS = (PrivacyMode.NONE, PrivacyMode.LOCAL, PrivacyMode.REDACTED, PrivacyMode.OPEN)
"""Strictest first."""


def run_loosening(base: EffectivePrivacy, run: Privacy) -> str | None:
    """Why a run's own settings are refused: a run may only tighten what its tenant allows (the
    person who starts a run need not be the admin who set the tenant's privacy). Allowlists and
    patterns always tighten (a host must be on every level's list; patterns add up), so only a
    looser mode is refused."""
    if run.mode is not None and STRICTNESS.index(run.mode) > STRICTNESS.index(base.mode):
        return (f"privacy mode {run.mode.value!r} would loosen the tenant's {base.mode.value!r}: "
                "a run may only tighten its privacy (none, local, redacted, open: strictest first)")
    return None


def with_run(base: EffectivePrivacy, run: Privacy | None) -> EffectivePrivacy:
    """What a run's calls obey: its tenant's settings, tightened by the run's own (the stricter
    mode, every allowlist at once, the patterns of both)."""
    if run is None or run == Privacy():
        return base
    sources = dict(base.sources)
    mode = base.mode
    if run.mode is not None and STRICTNESS.index(run.mode) < STRICTNESS.index(base.mode):
        mode, sources["mode"] = run.mode, "run"
    for name in ("llm_allowlist", "domain_allowlist", "redact_patterns"):
        if getattr(run, name) is not None:
            sources[name] = "run"
    return replace(base, mode=mode, run_llm=run.llm_allowlist, run_domains=run.domain_allowlist,
                   redact_patterns=base.redact_patterns + tuple(run.redact_patterns or ()), sources=sources)


def parse_privacy(raw: Mapping[str, Any], where: str) -> Privacy:
    """A level's settings from JSON (a body, the DB, a flag); ``ValueError`` naming ``where`` and the field."""
    unknown = sorted(set(raw) - {"mode", "llm_allowlist", "domain_allowlist", "redact_patterns"})
    if unknown:
        raise ValueError(f"{where}: unknown privacy setting(s) {', '.join(unknown)} "
                         "(expected mode, llm_allowlist, domain_allowlist, redact_patterns)")
    mode = raw.get("mode")
    if mode is not None and mode not in set(PrivacyMode):
        raise ValueError(f"{where}.mode: {mode!r} is not one of none, local, redacted, open")
    patterns = _strings(raw, "redact_patterns", where)
    for i, pattern in enumerate(patterns or ()):
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"{where}.redact_patterns[{i}]: {pattern!r} is not a regular expression: {err}") from None
    return Privacy(mode=PrivacyMode(mode) if mode is not None else None,
                   llm_allowlist=_hosts(raw, "llm_allowlist", where),
                   domain_allowlist=_hosts(raw, "domain_allowlist", where), redact_patterns=patterns)


def privacy_fields(p: Privacy) -> dict[str, Any]:
    """A level's settings as JSON, leaving out what it does not set."""
    out: dict[str, Any] = {}
    if p.mode is not None:
        out["mode"] = p.mode.value
    for name in ("llm_allowlist", "domain_allowlist", "redact_patterns"):
        if (value := getattr(p, name)) is not None:
            out[name] = list(value)
    return out


def _strings(raw: Mapping[str, Any], name: str, where: str) -> tuple[str, ...] | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}.{name}: expected a list of strings")
    if len(value) > MAX_PATTERNS:
        raise ValueError(f"{where}.{name}: at most {MAX_PATTERNS} entries")
    return tuple(v.strip() for v in value)


def _hosts(raw: Mapping[str, Any], name: str, where: str) -> tuple[str, ...] | None:
    hosts = _strings(raw, name, where)
    for i, host in enumerate(hosts or ()):
        if not HOST.fullmatch(host.lower()):
            raise ValueError(f"{where}.{name}[{i}]: {host!r} is not a host name (e.g. llm.internal, "
                             "*.example.com, 127.0.0.1 or *)")
    return tuple(h.lower() for h in hosts) if hosts is not None else None


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _listed(host: str, allowlist: Iterable[str]) -> bool:
    for entry in allowlist:
        if entry == "*" or entry == host or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def egress_refusal(privacy: EffectivePrivacy, url: str) -> str | None:
    """Why an outbound call to ``url`` is refused by the domain allowlist (None: it may go)."""
    host = host_of(url)
    if not _listed(host, privacy.platform_domains):
        return f"{host!r} is not on the platform's domain allowlist ({', '.join(privacy.platform_domains)})"
    if privacy.tenant_domains is not None and not _listed(host, privacy.tenant_domains):
        return f"{host!r} is not on the tenant's domain allowlist ({', '.join(privacy.tenant_domains) or 'empty'})"
    if privacy.run_domains is not None and not _listed(host, privacy.run_domains):
        return f"{host!r} is not on the run's domain allowlist ({', '.join(privacy.run_domains) or 'empty'})"
    return None


def llm_refusal(privacy: EffectivePrivacy, url: str) -> str | None:
    """Why an LLM call to ``url`` may not be made (None: it may, redacted under ``redacted``)."""
    if privacy.mode is PrivacyMode.NONE:
        return "privacy mode 'none': no code or log leaves for an LLM"
    host = host_of(url)
    if privacy.mode is PrivacyMode.LOCAL and not _listed(host, privacy.llm_allowlist):
        listed = ", ".join(privacy.llm_allowlist) or "empty"
        return f"privacy mode 'local': LLM endpoint {host!r} is not on the tenant's LLM allowlist ({listed})"
    if privacy.mode is PrivacyMode.LOCAL and privacy.run_llm is not None and not _listed(host, privacy.run_llm):
        listed = ", ".join(privacy.run_llm) or "empty"
        return f"privacy mode 'local': LLM endpoint {host!r} is not on the run's LLM allowlist ({listed})"
    return egress_refusal(privacy, url)


def redact(text: str, patterns: Iterable[str] = ()) -> tuple[str, int]:
    """``text`` with every secret (the patch sandbox's patterns) and every match of ``patterns``
    masked; and how many were."""
    count = 0
    for pattern in [p for _, p in SECRET_PATTERNS] + [re.compile(p) for p in patterns]:
        text, n = pattern.subn(MASK, text)
        count += n
    return text, count


def redact_messages(privacy: EffectivePrivacy, messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
    """The messages to send under ``privacy`` (redacted unless the mode is ``open``), and how many
    matches were masked."""
    if privacy.mode is PrivacyMode.OPEN:
        return messages, 0
    total, out = 0, []
    for m in messages:
        content, n = redact(m["content"], privacy.redact_patterns)
        total += n
        out.append({**m, "content": content})
    return out, total
