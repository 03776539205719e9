"""The portal's Settings hub and diagnostics page.

The hub shows a tenant's feature flags (auto-fix v3, v4 scheduling) with each value's source,
its privacy mode and allowlists, and its webhooks; admins and owners change them with forms that
call the same service functions as the API (so every change is validated and audited alike).
Below them, the v4 settings only the platform sets (its environment), read-only.
The diagnostics page (admins and owners) runs ``metabuilder doctor``'s checks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from metabuilder.api.config import ApiConfig
from metabuilder.api.deps import ConfigDep, SessionDep, TemporalDep
from metabuilder.api.portal import PREFIX, User, back, check_form, page, require
from metabuilder.api.routes import settings as settings_routes
from metabuilder.domain.access import Principal, Role
from metabuilder.domain.notifications import NotificationEvent
from metabuilder.domain.policy import ENV_VARS
from metabuilder.service import notifications, privacy, scheduling
from metabuilder.service.diagnostics import run_checks

router = APIRouter(prefix=PREFIX, include_in_schema=False)
HUB = PREFIX + "/settings"


@router.get("/settings", response_class=HTMLResponse)
def hub(request: Request, principal: User, session: SessionDep, config: ConfigDep) -> Response:
    """Every setting of the tenant with its source; forms for admins."""
    return _hub(request, principal, session, config)


def _hub(request: Request, principal: Principal, session: Session, config: ApiConfig, **extra: Any) -> Response:
    tenant = principal.tenant
    autofix = settings_routes.tenant_settings(tenant, principal, session, config)
    return page(request, "settings_hub.html", principal, autofix=autofix,
                v4=scheduling.tenant_v4(session, config.v4, tenant, tenant=tenant),
                privacy=privacy.tenant_privacy(session, config.privacy, tenant, tenant=tenant),
                webhooks=notifications.list_webhooks(session, tenant, tenant=tenant),
                events=[e.value for e in NotificationEvent], env_vars=ENV_VARS, platform=platform_settings(config),
                **extra)


def platform_settings(config: ApiConfig) -> list[tuple[str, str, str]]:
    """The v4 settings that only the platform's environment sets, as (variable, value, what it
    does), for the hub to show read-only: the API process's values (the workers read the same
    variables; a deployment keeps them alike)."""
    v4, chaos, budgets, canary = config.v4, config.chaos, config.budgets, config.v4.canary

    def money(x: float | None) -> str:
        return "unset (metered only)" if x is None else f"{x:g}"

    sla = "; ".join(f"{name}: {p.priority} priority, {p.time_budget_seconds:g} s, {p.model_tier} models, "
                    f"depth {p.repair_depth}, {p.candidates} candidate(s)" for name, p in v4.sla_classes.items())
    models = "; ".join(f"{m.name} ({m.tier}, ${m.price_in_per_million:g}/${m.price_out_per_million:g} per M "
                       f"tokens in/out)" for m in budgets.catalogue) or "empty (the LLM settings' one model)"
    breakers = "; ".join(f"{c}: {p.threshold} in {p.window_seconds:g} s, cooldown {p.cooldown_seconds:g} s"
                         for c, p in config.breaker_policies.items())
    weights = ", ".join(f"{t}={w:g}" for t, w in sorted(v4.fairness_weights.items())) or "unset (every tenant 1)"
    return [
        ("META_V4_MAX_WORKERS", str(v4.max_workers), "step executions one worker process runs at once"),
        ("META_V4_FAIRNESS_WEIGHTS", weights, "each tenant's share when pools are contended"),
        ("META_V4_SLA_CLASSES", sla, "what each SLA class sets for a run"),
        ("META_V4_MODEL_CATALOGUE", models, "the models an SLA tier chooses from, with their prices"),
        ("META_V4_DEFAULT_TIME_BUDGET_SECONDS", money(budgets.default_time_seconds), "a run's time limit"),
        ("META_V4_DEFAULT_COST_BUDGET_USD", money(budgets.default_cost_usd), "a run's cost limit"),
        ("META_V4_BREAKER_POLICIES", breakers, "when a circuit breaker opens, per failure class"),
        ("META_V4_CHAOS_ENABLED", f"{'on' if chaos.enabled else 'off'}, probability {chaos.probability:g}",
         "fault injection into step attempts of a chaos scope"),
        ("FEATURE_META_V4_CANARY_PERCENT", f"{canary.percent}%",
         "the default share `canary ramp` sends to a candidate"),
        ("META_V4_CANARY_MIN_SAMPLES", f"{canary.min_samples} per version, alpha {canary.alpha:g}, "
         f"auto-act {'on' if canary.auto_act else 'off'}", "what the canary comparison needs before it recommends"),
    ]


@router.post("/settings/v4")
def change_v4(request: Request, principal: User, session: SessionDep, config: ConfigDep,
              csrf: Annotated[str, Form(max_length=64)] = "",
              enabled: Annotated[str, Form(max_length=10)] = "") -> Response:
    """The tenant's v4 flag: on, off, or empty (the platform's)."""
    check_form(request, csrf)
    require(principal, Role.ADMIN, "changing settings")
    changes = {} if enabled == "" else {"enabled": enabled}
    scheduling.change_tenant_v4(session, config.v4, principal.tenant, changes, merge=False, where="form",
                                tenant=principal.tenant, actor=principal.user)
    return back(HUB, "v4 scheduling saved" if changes else "v4 scheduling follows the platform")


@router.post("/settings/privacy")
def change_privacy(request: Request, principal: User, session: SessionDep, config: ConfigDep,
                   csrf: Annotated[str, Form(max_length=64)] = "",
                   action: Annotated[str, Form(max_length=10)] = "save",
                   mode: Annotated[str, Form(max_length=10)] = "",
                   llm_allowlist: Annotated[str, Form(max_length=4000)] = "",
                   domain_allowlist: Annotated[str, Form(max_length=4000)] = "",
                   redact_patterns: Annotated[str, Form(max_length=8000)] = "") -> Response:
    """The tenant's privacy settings (a field left empty follows the platform), or reset them all."""
    check_form(request, csrf)
    require(principal, Role.ADMIN, "changing settings")
    fields = {"mode": mode, "llm_allowlist": llm_allowlist, "domain_allowlist": domain_allowlist}
    changes: dict[str, object] = {k: v.strip() for k, v in fields.items() if v.strip()}
    if redact_patterns.strip():  # one per line: a pattern may hold a comma
        changes["redact_patterns"] = [p.strip() for p in redact_patterns.splitlines() if p.strip()]
    privacy.change_tenant_privacy(session, config.privacy, principal.tenant, {} if action == "reset" else changes,
                                  where="form", tenant=principal.tenant, actor=principal.user)
    return back(HUB, "privacy reset to the platform's" if action == "reset" else "privacy saved")


@router.post("/settings/webhooks")
def add_webhook(request: Request, principal: User, session: SessionDep, config: ConfigDep,
                csrf: Annotated[str, Form(max_length=64)] = "",
                url: Annotated[str, Form(max_length=2000)] = "",
                format: Annotated[str, Form(max_length=10)] = "json",
                events: Annotated[list[str] | None, Form()] = None) -> Response:
    """Add a webhook; the answer (a page, not a redirect: the secret stays out of URLs) shows its
    signing secret once."""
    check_form(request, csrf)
    require(principal, Role.ADMIN, "adding a webhook")
    raw: dict[str, object] = {"url": url, "format": format}
    if events:
        raw["events"] = events
    made = notifications.create_webhook(session, principal.tenant, raw, where="form", tenant=principal.tenant,
                                        actor=principal.user)
    return _hub(request, principal, session, config, secret=made.secret, added=made.id,
                notice=f"webhook {made.id} added")


@router.post("/settings/webhooks/{webhook_id}/delete")
def delete_webhook(request: Request, webhook_id: str, principal: User, session: SessionDep,
                   csrf: Annotated[str, Form(max_length=64)] = "") -> Response:
    check_form(request, csrf)
    require(principal, Role.ADMIN, "deleting a webhook")
    notifications.delete_webhook(session, principal.tenant, webhook_id, tenant=principal.tenant,
                                 actor=principal.user)
    return back(HUB, f"webhook {webhook_id} deleted")


@router.get("/diagnostics", response_class=HTMLResponse)
async def diagnostics(request: Request, principal: User, config: ConfigDep, temporal: TemporalDep) -> Response:
    """``metabuilder doctor``'s checks for this tenant, each green or red with its reason."""
    require(principal, Role.ADMIN, "the diagnostics page")
    checks = [] if config.diagnostics is None else await run_checks(
        replace(config.diagnostics, connect=temporal.client), principal.tenant)  # the API's own client
    return page(request, "diagnostics.html", principal, checks=checks, configured=config.diagnostics is not None,
                ui_url=config.ui_url, healthy=all(c.ok for c in checks))
