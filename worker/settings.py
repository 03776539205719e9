"""Process settings, read once from the environment; a bad value fails at start-up."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from metabuilder.activities.breakers import BreakerSettings
from metabuilder.activities.step_watch import LogSettings
from metabuilder.adapters.llm import LlmSettings
from metabuilder.domain.breakers import parse_policies
from metabuilder.domain.budget_settings import BudgetSettings, platform_budgets
from metabuilder.domain.canary import DEPLOYMENT_NAME, DeploymentSettings, check_build_id, check_deployment_name
from metabuilder.domain.chaos import ChaosSettings, FaultParams, parse_weights
from metabuilder.domain.models_catalogue import ModelSpec
from metabuilder.domain.notifications import WebhookSettings
from metabuilder.domain.policy import AutofixSettings, PolicyError, platform_settings
from metabuilder.domain.privacy import PLATFORM_DEFAULT, Privacy, parse_privacy
from metabuilder.domain.v4 import V4Settings, platform_v4
from metabuilder.telemetry.tracing import TracingMode
from metabuilder.telemetry.tracing import missing_modules as tracing_missing_modules

E = TypeVar("E", bound=StrEnum)

EXTERNAL_TEMPORAL_VARS = ("TEMPORAL_ADDRESS", "TEMPORAL_PROFILE", "TEMPORAL_CONFIG_FILE")
"""Any of these set: connect to that Temporal server instead of the embedded dev server."""


class SettingsError(ValueError):
    """An environment variable has a value Meta-Builder cannot use."""


class Environment(StrEnum):
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


def default_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "metabuilder"


@dataclass(frozen=True)
class Settings:
    home: Path
    """Data directory of the embedded defaults: SQLite file, dev server data, shared repo, artifacts."""
    environment: Environment
    temporal_address: str | None
    """``TEMPORAL_ADDRESS``; unset (and no profile) means the embedded dev server on ``dev_server_port``."""
    temporal_namespace: str
    database_url: str
    shared_repo: str
    artifacts_dir: Path
    cache_dir: Path
    task_queue_prefix: str
    heartbeat_timeout_seconds: float
    sticky_timeout_seconds: float
    dev_server_port: int
    dev_server_ui_port: int
    log_level: str
    log_format: str
    autofix: AutofixSettings
    """Platform level of the auto-fix flags (seed 001 defaults per environment, then env vars)."""
    llm: LlmSettings | None = None
    """The LLM fixer's endpoint; None when ``META_BUILDER_LLM_URL`` is unset."""
    llm_classify: bool = False
    """``META_BUILDER_LLM_CLASSIFY``: also ask the endpoint about failures the classifier leaves UNKNOWN."""
    api_host: str = "127.0.0.1"
    api_port: int = 5001
    api_workers: int = 1
    """``META_BUILDER_API_WORKERS``: API processes sharing the port (``metabuilder api``)."""
    api_access_log: bool = True
    """``META_BUILDER_API_ACCESS_LOG``: a log event per request served by the API."""
    api_url: str | None = None
    """``META_BUILDER_API_URL``: the API the CLI talks to when it has a token (default: ``api_host:api_port``)."""
    api_token: str = ""
    """``META_BUILDER_API_TOKEN``: with it, ``metabuilder approve|reject`` decide through the API."""
    workspace_roots: tuple[Path, ...] = ()
    """Directories the API may start runs from (``META_BUILDER_WORKSPACE_ROOTS``, ``:``-separated)."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    """``/metrics`` of a ``worker`` process (the API serves its own on its port); 0: none."""
    sdk_metrics_port: int = 9109
    """The Temporal SDK's own metrics (workflow/activity task latencies, pollers...) of a ``worker``
    or ``up`` process; 0: none."""
    tracing: TracingMode = TracingMode.OFF
    """``META_BUILDER_TRACING``: OpenTelemetry spans of runs, workflow tasks and activities."""
    breakers: BreakerSettings = field(default_factory=BreakerSettings)
    """``META_V4_BREAKERS_ENABLED`` and ``META_V4_BREAKER_POLICIES``: circuit breakers (``domain.breakers``)."""
    breaker_alert_after_seconds: float = 900.0
    """``META_V4_BREAKER_ALERT_AFTER_SECONDS``: served on ``/metrics`` for the CircuitBreakerOpenTooLong alert."""
    v4: V4Settings = field(default_factory=V4Settings)
    """The platform level of the v4 group: ``FEATURE_META_V4_ENABLED``, ``META_V4_MAX_WORKERS``,
    ``META_V4_FAIRNESS_WEIGHTS`` (``domain.v4``)."""
    chaos: ChaosSettings = field(default_factory=ChaosSettings)
    """``META_V4_CHAOS_*``: fault injection into step attempts (``domain.chaos``); off by default."""
    # Worker lifecycle (issue 16, part B)
    worker_grace_seconds: float = 30.0
    """``META_BUILDER_WORKER_GRACE_SECONDS``: on SIGTERM/SIGINT a worker stops polling and gives the
    steps it runs this long to finish; those still running then are cancelled (their command is
    killed, and Temporal retries the attempt on another worker)."""
    step_logs: LogSettings = field(default_factory=LogSettings)
    """``META_BUILDER_STEP_LOG_DB``, ``..._MAX_BYTES``, ``..._FLUSH_SECONDS``: step logs shipped to the
    database while the step runs (``activities.step_watch``)."""
    tenant_max_active_runs: int = 0
    """``META_BUILDER_TENANT_MAX_ACTIVE_RUNS``: runs one tenant may have open at once; a submission or
    retry beyond it is refused (409). 0: no limit (``service.run_limits``)."""
    privacy: Privacy = PLATFORM_DEFAULT
    """``META_V4_PRIVACY_MODE``, ``META_V4_LLM_ALLOWLIST``, ``META_V4_DOMAIN_ALLOWLIST``, ``META_V4_REDACT_PATTERNS``:
    the platform level of what may leave for an LLM and where outbound calls may go (``domain.privacy``)."""
    budgets: BudgetSettings = field(default_factory=BudgetSettings)
    """``META_V4_DEFAULT_TIME_BUDGET_SECONDS``, ``META_V4_DEFAULT_COST_BUDGET_USD``, ``META_V4_MODEL_CATALOGUE``,
    ``META_V4_CPU_PRICE_PER_SECOND``: the platform level of the budgets (``domain.budget_settings``).
    The catalogue lists the models the LLM fixer may use (name, endpoint, prices, context, tier); a
    run's SLA class and the money left pick one (``domain.models_catalogue``). Empty: the fixer asks
    ``META_BUILDER_LLM_MODEL``, as before."""
    deployment: DeploymentSettings = field(default_factory=DeploymentSettings)
    """``META_BUILDER_WORKER_VERSIONING``, ``META_BUILDER_DEPLOYMENT_NAME``, ``META_BUILDER_BUILD_ID``,
    ``META_V4_CANARY_DRILL_FAIL_PATCH``: the Worker Deployment version this process's workers are
    (``domain.canary``; off: unversioned workers, as before the canary)."""
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    """``META_V4_WEBHOOK_MAX_ATTEMPTS``, ``..._RETRY_SECONDS``, ``..._TIMEOUT_SECONDS``: how notifications
    are delivered (``domain.notifications``)."""
    temporal_env: Mapping[str, str] = field(default_factory=dict)
    """The SDK's environment configuration (``TEMPORAL_*``: address, namespace, TLS, API key,
    ``TEMPORAL_PROFILE`` and ``TEMPORAL_CONFIG_FILE``), read by ``worker.runtime.connect``."""

    @property
    def model_catalogue(self) -> tuple[ModelSpec, ...]:
        """The models of ``META_V4_MODEL_CATALOGUE`` (``budgets.catalogue``)."""
        return self.budgets.catalogue

    @property
    def embedded(self) -> bool:
        return self.temporal_address is None and not any(self.temporal_env.get(n) for n in EXTERNAL_TEMPORAL_VARS)

    @property
    def address(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.dev_server_port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.dev_server_ui_port}" if self.embedded else os.environ.get(
            "TEMPORAL_UI_URL")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("META_BUILDER_HOME") or default_home()).expanduser().resolve()
        environment = _choice(env, "META_BUILDER_ENV", Environment, Environment.DEVELOPMENT)
        port = _int(env, "META_BUILDER_DEV_SERVER_PORT", 7233, 1, 65535)
        log_format = env.get("META_BUILDER_LOG_FORMAT") or (
            "console" if environment is Environment.DEVELOPMENT else "json")
        if log_format not in ("console", "json"):
            raise SettingsError(f"META_BUILDER_LOG_FORMAT={log_format!r}: expected 'console' or 'json'")
        level = (env.get("META_BUILDER_LOG_LEVEL") or "info").lower()
        if level not in ("debug", "info", "warning", "error"):
            raise SettingsError(f"META_BUILDER_LOG_LEVEL={level!r}: expected debug, info, warning or error")
        prefix = env.get("META_BUILDER_TASK_QUEUE_PREFIX") or "metabuilder"
        if not prefix.replace("-", "").replace("_", "").isalnum():
            raise SettingsError(f"META_BUILDER_TASK_QUEUE_PREFIX={prefix!r}: letters, digits, '-' and '_' only")
        try:
            autofix = platform_settings(environment.value, env)
        except PolicyError as err:
            raise SettingsError(str(err)) from None
        roots = env.get("META_BUILDER_WORKSPACE_ROOTS") or str(Path.home())
        tracing = _choice(env, "META_BUILDER_TRACING", TracingMode, TracingMode.OFF)
        if missing := tracing_missing_modules(tracing):
            raise SettingsError(f"META_BUILDER_TRACING={tracing.value} needs {', '.join(missing)}: "
                                "pip install 'meta-builder[tracing]'")
        return cls(
            api_host=env.get("META_BUILDER_API_HOST") or "127.0.0.1",
            api_port=_int(env, "META_BUILDER_API_PORT", 5001, 1, 65535),
            api_workers=_int(env, "META_BUILDER_API_WORKERS", 1, 1, 64),
            api_access_log=_bool(env, "META_BUILDER_API_ACCESS_LOG", True),
            api_url=_api_url(env),
            api_token=(env.get("META_BUILDER_API_TOKEN") or "").strip(),
            metrics_host=env.get("META_BUILDER_METRICS_HOST") or "127.0.0.1",
            metrics_port=_int(env, "META_BUILDER_METRICS_PORT", 9108, 0, 65535),
            sdk_metrics_port=_int(env, "META_BUILDER_SDK_METRICS_PORT", 9109, 0, 65535),
            workspace_roots=tuple(Path(r).expanduser().resolve() for r in roots.split(os.pathsep) if r.strip()),
            autofix=autofix,
            llm=_llm(env),
            llm_classify=_llm_classify(env),
            breakers=_breakers(env),
            v4=_v4(environment, env),
            chaos=_chaos(env, environment),
            deployment=_deployment(env, environment),
            privacy=_privacy(env),
            budgets=_budgets(env),
            webhooks=WebhookSettings(
                max_attempts=_int(env, "META_V4_WEBHOOK_MAX_ATTEMPTS", 8, 1, 100),
                retry_seconds=_float(env, "META_V4_WEBHOOK_RETRY_SECONDS", 5.0, 0.1, 3600.0),
                timeout_seconds=_float(env, "META_V4_WEBHOOK_TIMEOUT_SECONDS", 10.0, 1.0, 300.0),
                expiry_warning_seconds=_float(env, "META_V4_WEBHOOK_EXPIRY_WARNING_SECONDS", 3600.0, 1.0,
                                              30 * 86400.0)),
            breaker_alert_after_seconds=_float(env, "META_V4_BREAKER_ALERT_AFTER_SECONDS", 900.0, 1.0, 7 * 86400.0),
            home=home,
            environment=environment,
            temporal_address=env.get("TEMPORAL_ADDRESS") or None,
            temporal_namespace=env.get("TEMPORAL_NAMESPACE") or "default",
            tracing=tracing,
            temporal_env={k: v for k, v in env.items() if k.startswith("TEMPORAL_") and v},
            worker_grace_seconds=_float(env, "META_BUILDER_WORKER_GRACE_SECONDS", 30.0, 0.0, 86400.0),
            tenant_max_active_runs=_int(env, "META_BUILDER_TENANT_MAX_ACTIVE_RUNS", 0, 0, 1_000_000),
            step_logs=LogSettings(
                enabled=_bool(env, "META_BUILDER_STEP_LOG_DB", True),
                max_bytes=_int(env, "META_BUILDER_STEP_LOG_MAX_BYTES", 16 * 1024 * 1024, 4096, 2**31 - 1),
                flush_seconds=_float(env, "META_BUILDER_STEP_LOG_FLUSH_SECONDS", 0.5, 0.05, 60.0)),
            database_url=_database_url(env, home),
            shared_repo=env.get("META_BUILDER_SHARED_REPO") or str(home / "workspaces.git"),
            artifacts_dir=Path(env.get("META_BUILDER_ARTIFACTS_DIR") or home / "artifacts"),
            cache_dir=Path(env.get("META_BUILDER_CACHE_DIR") or home / "worker-cache"),
            task_queue_prefix=prefix,
            heartbeat_timeout_seconds=_float(env, "META_BUILDER_HEARTBEAT_TIMEOUT_SECONDS", 10.0, 2.0, 3600.0),
            sticky_timeout_seconds=_float(env, "META_BUILDER_STICKY_TIMEOUT_SECONDS", 1.0, 0.5, 60.0),
            dev_server_port=port,
            dev_server_ui_port=_int(env, "META_BUILDER_DEV_SERVER_UI_PORT", port + 1000, 1, 65535),
            log_level=level,
            log_format=log_format,
        )


def _database_url(env: Mapping[str, str], home: Path) -> str:
    url = env.get("DATABASE_URL") or f"sqlite:///{home / 'metabuilder.db'}"
    scheme = url.split(":", 1)[0]
    if scheme in ("postgresql", "postgresql+psycopg2") and importlib.util.find_spec("psycopg2") is None:
        raise SettingsError("DATABASE_URL names PostgreSQL, but its driver is not installed: "
                            "pip install 'meta-builder[postgres]'")
    return url


def _api_url(env: Mapping[str, str]) -> str | None:
    url = (env.get("META_BUILDER_API_URL") or "").strip().rstrip("/")
    if url and not url.startswith(("http://", "https://")):
        raise SettingsError(f"META_BUILDER_API_URL={url!r}: expected an http:// or https:// URL")
    return url or None


def _llm(env: Mapping[str, str]) -> LlmSettings | None:
    url = (env.get("META_BUILDER_LLM_URL") or "").strip()
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"META_BUILDER_LLM_URL={url!r}: expected an http:// or https:// URL")
    model = (env.get("META_BUILDER_LLM_MODEL") or "").strip()
    if not model:
        raise SettingsError("META_BUILDER_LLM_MODEL is required with META_BUILDER_LLM_URL (the model name to ask)")
    return LlmSettings(
        url=url, model=model, api_key=env.get("META_BUILDER_LLM_API_KEY") or "",
        price_in_per_million=_float(env, "META_BUILDER_LLM_PRICE_IN", 0.0, 0.0, 1e4),
        price_out_per_million=_float(env, "META_BUILDER_LLM_PRICE_OUT", 0.0, 0.0, 1e4),
        timeout_seconds=_float(env, "META_BUILDER_LLM_TIMEOUT_SECONDS", 120.0, 1.0, 3600.0),
        temperature=_float(env, "META_BUILDER_LLM_TEMPERATURE", 0.0, 0.0, 2.0),
        max_tokens=_int(env, "META_BUILDER_LLM_MAX_TOKENS", 2048, 1, 1_000_000))


def _budgets(env: Mapping[str, str]) -> BudgetSettings:
    try:
        budgets = platform_budgets(env)
    except ValueError as err:
        raise SettingsError(str(err)) from None
    for i, m in enumerate(budgets.catalogue):
        if m.endpoint and not m.endpoint.startswith(("http://", "https://")):
            raise SettingsError(f"META_V4_MODEL_CATALOGUE[{i}].endpoint={m.endpoint!r}: expected an http:// or "
                                "https:// URL")
    return budgets


def _privacy(env: Mapping[str, str]) -> Privacy:
    names = {"mode": "META_V4_PRIVACY_MODE", "llm_allowlist": "META_V4_LLM_ALLOWLIST",
             "domain_allowlist": "META_V4_DOMAIN_ALLOWLIST", "redact_patterns": "META_V4_REDACT_PATTERNS"}
    raw = {key: env[name].strip() for key, name in names.items() if (env.get(name) or "").strip()}
    try:
        given = parse_privacy(raw, "privacy")
    except ValueError as err:
        field_name = str(err).split(":", 1)[0].removeprefix("privacy.").split("[", 1)[0]
        raise SettingsError(f"{names.get(field_name, 'META_V4_PRIVACY_*')}: {err}") from None
    return replace(PLATFORM_DEFAULT, **{k: v for k, v in vars(given).items() if v is not None})


def _breakers(env: Mapping[str, str]) -> BreakerSettings:
    try:
        policies = parse_policies(env.get("META_V4_BREAKER_POLICIES") or "")
    except ValueError as err:
        raise SettingsError(str(err)) from None
    return BreakerSettings(enabled=_bool(env, "META_V4_BREAKERS_ENABLED", True), policies=policies)


def _v4(environment: Environment, env: Mapping[str, str]) -> V4Settings:
    try:
        return platform_v4(environment.value, env)
    except ValueError as err:
        raise SettingsError(str(err)) from None
def _deployment(env: Mapping[str, str], environment: Environment) -> DeploymentSettings:
    drill = _bool(env, "META_V4_CANARY_DRILL_FAIL_PATCH", False)
    if drill and environment is Environment.PRODUCTION:
        raise SettingsError("META_V4_CANARY_DRILL_FAIL_PATCH=true is refused in the production environment "
                            "(META_BUILDER_ENV=production): it makes every patch rung of this worker fail")
    try:
        name = check_deployment_name((env.get("META_BUILDER_DEPLOYMENT_NAME") or DEPLOYMENT_NAME).strip(),
                                     "META_BUILDER_DEPLOYMENT_NAME")
        build_id = (env.get("META_BUILDER_BUILD_ID") or "").strip()
        if build_id:
            check_build_id(build_id, "META_BUILDER_BUILD_ID")
    except ValueError as err:
        raise SettingsError(str(err)) from None
    return DeploymentSettings(versioning=_bool(env, "META_BUILDER_WORKER_VERSIONING", False), name=name,
                              build_id=build_id or None, drill_fail_patch=drill)


def _chaos(env: Mapping[str, str], environment: Environment) -> ChaosSettings:
    enabled, forced = _bool(env, "META_V4_CHAOS_ENABLED", False), _bool(env, "META_V4_CHAOS_FORCE", False)
    if enabled and environment is Environment.PRODUCTION and not forced:
        raise SettingsError("META_V4_CHAOS_ENABLED=true is refused in the production environment "
                            "(META_BUILDER_ENV=production); set META_V4_CHAOS_FORCE=true to force it")
    weights = env.get("META_V4_CHAOS_WEIGHTS") or ""
    try:
        parsed = parse_weights(weights, "META_V4_CHAOS_WEIGHTS") if weights.strip() else ChaosSettings().weights
    except ValueError as err:
        raise SettingsError(str(err)) from None
    return ChaosSettings(
        enabled=enabled, forced=forced,
        probability=_probability(env, "META_V4_CHAOS_INJECTION_PROBABILITY", 0.1), weights=parsed,
        seed=_int(env, "META_V4_CHAOS_SEED", 0, 0, 2**31 - 1),
        retention_days=_float(env, "META_V4_CHAOS_RETENTION_DAYS", 7.0, 0.001, 3650.0),
        params=FaultParams(
            retry_after_seconds=_float(env, "META_V4_CHAOS_RETRY_AFTER_SECONDS", 2.0, 0.1, 3600.0),
            max_latency_seconds=_float(env, "META_V4_CHAOS_MAX_LATENCY_SECONDS", 3.0, 0.1, 3600.0),
            timeout_cap_seconds=_float(env, "META_V4_CHAOS_TIMEOUT_CAP_SECONDS", 30.0, 1.0, 3600.0)))


def _probability(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{name}={raw!r}: expected a probability from 0 to 1")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise SettingsError(f"{name}={raw!r}: expected true or false")
    return raw in ("true", "1", "yes", "on")


def _llm_classify(env: Mapping[str, str]) -> bool:
    value = _bool(env, "META_BUILDER_LLM_CLASSIFY", False)
    if value and not (env.get("META_BUILDER_LLM_URL") or "").strip():
        raise SettingsError("META_BUILDER_LLM_CLASSIFY=true needs META_BUILDER_LLM_URL (the endpoint to ask)")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={raw!r}: expected a number from {low} to {high}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number of seconds") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={raw!r}: expected a number from {low:g} to {high:g}")
    return value


def _choice(env: Mapping[str, str], name: str, enum: type[E], default: E) -> E:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return enum(raw.lower())
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(e.value for e in enum)}") from None
