"""What the API process needs, built by its entry point (``metabuilder api`` or a test)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from metabuilder.domain.breakers import DEFAULT_POLICIES, BreakerPolicy
from metabuilder.domain.budget_settings import BudgetSettings
from metabuilder.domain.chaos import ChaosSettings
from metabuilder.domain.policy import AutofixSettings
from metabuilder.domain.privacy import PLATFORM_DEFAULT, Privacy
from metabuilder.domain.taxonomy import FailureType
from metabuilder.domain.v4 import V4Settings
from metabuilder.service.diagnostics import Deployment


@dataclass(frozen=True)
class ApiConfig:
    sessions: sessionmaker[Session]
    connect: Callable[[], Awaitable[Client]]
    """Opens the Temporal client; called on the first request that needs Temporal."""
    platform: AutofixSettings
    """The platform level of the auto-fix settings."""
    shared_repo: str
    task_queue_prefix: str = "metabuilder"
    heartbeat_timeout_seconds: float = 10.0
    namespace: str = "default"
    search_attributes: bool = True
    workspace_roots: list[Path] = field(default_factory=list)
    """Directories a run may be started from (``POST /runs`` with a ``workspace``)."""
    ui_url: str | None = None
    """The Temporal Web UI, for links from runs to their workflows."""
    max_in_flight: int = 16
    """Requests served at once; more are refused with 503 and ``Retry-After`` (``/healthz`` never is)."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body (413 beyond it): room for a 256 K-character plan even JSON-escaped at
    worst (12 bytes a character); ``POST .../classify-failure`` takes up to 8 MiB of logs."""
    breaker_policies: Mapping[FailureType, BreakerPolicy] = field(default_factory=lambda: dict(DEFAULT_POLICIES))
    """The circuit breakers' policies (``META_V4_BREAKER_POLICIES``), for overrides through the API."""
    breaker_alert_after_seconds: float = 900.0
    privacy: Privacy = PLATFORM_DEFAULT
    """The platform level of the privacy mode and allowlists (``META_V4_PRIVACY_MODE``...)."""
    """Served on ``/metrics`` for the CircuitBreakerOpenTooLong alert."""
    v4: V4Settings = field(default_factory=V4Settings)
    """The platform level of the v4 settings (priority and fairness of the runs it starts)."""
    chaos: ChaosSettings = field(default_factory=ChaosSettings)
    """``META_V4_CHAOS_*``: the retention window and scope defaults of ``/api/meta/v4/chaos/stats``."""
    budgets: BudgetSettings = field(default_factory=BudgetSettings)
    """The platform level of the budgets (``META_V4_DEFAULT_*_BUDGET_*``, the model catalogue)."""
    tenant_max_active_runs: int = 0
    """Runs one tenant may have open at once (``META_BUILDER_TENANT_MAX_ACTIVE_RUNS``; 0: no limit)."""
    deployment_name: str = "meta-builder"
    """The Worker Deployment of the workers (``META_BUILDER_DEPLOYMENT_NAME``): ``/api/meta/v4/canary/stats``."""
    token_cache_seconds: float = 2.0
    """How long the API keeps who a token stands for (0: ask the DB on every request); a token
    revoked with ``metabuilder tokens revoke`` is refused at most this long after."""
    diagnostics: Deployment | None = None
    """What the portal's diagnostics page checks (``metabuilder doctor``'s checks; None: no page)."""
