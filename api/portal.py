"""Portal pages, rendered on the server from the same data and rules as the JSON API.

Signing in takes an API token (``metabuilder tokens create``) and keeps it in an HttpOnly,
SameSite=Strict cookie; every page checks it as the API checks a bearer token, with the same
roles. Forms that change something also carry a token derived from the cookie's, so that
another site cannot post them. Pages read through the API's own route functions, so a page
shows exactly what the API answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from temporalio.service import RPCError

from metabuilder.api import charts
from metabuilder.api.deps import AsyncSessionDep, ConfigDep, SessionDep, TemporalDep, principal_of
from metabuilder.api.errors import PORTAL_PREFIX, ApiError
from metabuilder.api.routes import breakers as breaker_routes
from metabuilder.api.routes import budgets as budget_routes
from metabuilder.api.routes import hosts as host_routes
from metabuilder.api.routes import knowledge as knowledge_routes
from metabuilder.api.routes import promote as promote_routes
from metabuilder.api.routes import runs as run_routes
from metabuilder.api.routes import settings as settings_routes
from metabuilder.api.routes import stats as stats_routes
from metabuilder.api.routes.views import gate_out, run_out
from metabuilder.api.schemas import SettingsIn
from metabuilder.api.settings_body import overrides_of
from metabuilder.domain.access import Principal, Role
from metabuilder.domain.approvals import Decision, GateStatus
from metabuilder.domain.policy import ENV_VARS
from metabuilder.domain.runs import RunStatus
from metabuilder.domain.taxonomy import FailureType
from metabuilder.service.approvals import decide_gate
from metabuilder.service.budgets import run_budget
from metabuilder.service.errors import Conflict, Unavailable
from metabuilder.service.promote import approvals as promotion_approvals
from metabuilder.service.queues import PoolStats, queue_stats
from metabuilder.service.run_panel import run_panel
from metabuilder.service.settings import change_tenant_settings
from metabuilder.service.tenancy import own_run
from metabuilder.store import approvals
from metabuilder.store import runs as run_rows
from metabuilder.store.db import transaction

PREFIX = PORTAL_PREFIX
COOKIE = "mb_portal"
DECISION_SHOWN_WITHIN = 5.0
"""Seconds a decision waits for the run to record it, so that the next page shows it decided."""

M = TypeVar("M", bound=BaseModel)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def shown(value: object) -> str:
    """A setting's value as the page shows it: on/off, 60 rather than 60.0."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


templates.env.filters["shown"] = shown
router = APIRouter(prefix=PREFIX, include_in_schema=False)


class SignIn(Exception):
    """The page needs a signed-in user."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def csrf_token(api_token: str) -> str:
    return hmac.new(api_token.encode(), b"metabuilder-portal-form", hashlib.sha256).hexdigest()[:32]


def portal_user(request: Request, config: ConfigDep) -> Principal:
    token = request.cookies.get(COOKIE, "")
    principal = principal_of(config, token)
    if principal is None:
        raise SignIn(request.url.path)
    request.state.csrf = csrf_token(token)
    return principal


User = Annotated[Principal, Depends(portal_user)]


def check_form(request: Request, csrf: str) -> None:
    if not hmac.compare_digest(csrf, getattr(request.state, "csrf", "")):
        raise Conflict("the form is stale or came from another site: reload the page and try again")


def require(principal: Principal, role: Role, doing: str) -> None:
    """403 unless ``principal`` has ``role`` or above, saying what needed it."""
    if not principal.role.allows(role):
        raise ApiError(403, f"{doing} needs the {role} role or above; {principal.user!r} is {principal.role}")


def form_body(model: type[M], data: dict[str, Any]) -> M:
    """A form's fields as the API's body model; invalid, answered like an API body: 422 naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise RequestValidationError(err.errors()) from None


def page(request: Request, name: str, principal: Principal | None, status_code: int = 200, **context: Any) -> Response:
    return templates.TemplateResponse(request, name, {
        "user": principal, "can_decide": bool(principal and principal.role.allows(Role.ADMIN)),
        "csrf": getattr(request.state, "csrf", ""), "notice": request.query_params.get("notice"), **context,
    }, status_code=status_code)


def back(path: str, notice: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?notice={quote(notice)}", status_code=303)


# --- signing in ---------------------------------------------------------------------------------

@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = PREFIX + "/runs") -> Response:
    return page(request, "login.html", None, next=_local(next))


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, config: ConfigDep, token: Annotated[str, Form(max_length=200)] = "",
          next: Annotated[str, Form(max_length=500)] = PREFIX + "/runs") -> Response:
    principal = principal_of(config, token.strip())
    if principal is None:
        return page(request, "login.html", None, status_code=401, next=_local(next),
                    error="unknown or revoked token")
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", path=PREFIX,
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse(PREFIX + "/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


def _local(path: str) -> str:
    """Only paths of the portal are followed after signing in (no open redirect)."""
    return path if path.startswith(PREFIX + "/") and "//" not in path and "\\" not in path else PREFIX + "/runs"


# --- runs ---------------------------------------------------------------------------------------

@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
def home() -> Response:
    return RedirectResponse(PREFIX + "/runs", status_code=303)


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, principal: User, session: SessionDep, config: ConfigDep,
              status: str | None = None) -> Response:
    rows = run_rows.list_runs(session, tenant=principal.tenant, status=status or None, limit=100)
    pending = approvals.list_gates(session, tenant=principal.tenant, status=GateStatus.PENDING.value)
    return page(request, "runs.html", principal, runs=[run_out(r, config) for r in rows],
                status=status or "", pending=len(pending))


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, principal: User, session: SessionDep, config: ConfigDep) -> Response:
    run = run_routes.get_run(run_id, principal, session, config)
    autofix = run_routes.autofix_history(run_id, principal, session)
    settings = settings_routes.run_settings(run_id, principal, session)
    failed_steps = list(dict.fromkeys(s.name for s in run.steps if s.exit_code not in (None, 0)))
    row = own_run(session, run_id, principal.tenant)
    budget = run_budget(session, config.budgets, run_id, tenant=principal.tenant)
    return page(request, "run.html", principal, run=run, autofix=autofix, settings=settings,
                deltas=run_routes.plan_deltas(run_id, principal, session),
                diffs=[a for a in autofix.repair_attempts if a.diff], failed_steps=failed_steps,
                can_correct=principal.role.allows(Role.OPERATOR), classes=[t.value for t in FailureType],
                budget=budget, panel=run_panel(session, row, budget["dimensions"]),
                final=RunStatus(run.status).is_final, source_branch=row.source_branch,
                risk_approvals=promotion_approvals(session, run_id),
                can_promote=principal.role.allows(Role.ADMIN) and run.status == RunStatus.SUCCEEDED)


@router.post("/runs/{run_id}/promote")
async def promote_run(request: Request, run_id: str, principal: User, config: ConfigDep,
                      csrf: Annotated[str, Form(max_length=64)] = "",
                      target_branch: Annotated[str, Form(max_length=200)] = "",
                      approve_risks: Annotated[str, Form(max_length=10)] = "",
                      reason: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Fast-forward the run's target branch to its head (admin; POST /api/meta/v4/runs/{id}/promote from a form)."""
    check_form(request, csrf)
    require(principal, Role.ADMIN, "promoting a run")
    body = form_body(promote_routes.PromoteIn, {"target_branch": target_branch.strip() or None,
                                                "approve_risks": bool(approve_risks), "reason": reason.strip()})
    done = await promote_routes.promote_run(run_id, principal, config, body)
    was = f"from {done.previous[:12]}" if done.previous else "(a new branch)"
    return back(f"{PREFIX}/runs/{run_id}", f"promoted: {done.target_branch} is at {done.commit[:12]} {was}")


# --- statistics ---------------------------------------------------------------------------------

STATS_WINDOWS = {"24h": 24, "7d": 24 * 7, "30d": 24 * 30}


@router.get("/stats", response_class=HTMLResponse)
async def stats_page(request: Request, principal: User, config: ConfigDep, window: str = "7d") -> Response:
    """The tenant's run statistics as charts drawn on the server (SVG; no script)."""
    if window not in STATS_WINDOWS:
        raise ApiError(422, f"window {window!r}: one of {', '.join(STATS_WINDOWS)}")
    stats = await asyncio.to_thread(stats_routes.read_run_stats, config, principal.tenant, STATS_WINDOWS[window])
    return page(request, "stats.html", principal, stats=stats, window=window, windows=list(STATS_WINDOWS),
                charts=charts.stats_charts(stats))


# --- corrections of the classifier --------------------------------------------------------------

@router.post("/runs/{run_id}/corrections")
def correct(request: Request, run_id: str, principal: User, session: SessionDep,
            csrf: Annotated[str, Form(max_length=64)] = "", step: Annotated[str, Form(max_length=64)] = "",
            failure_type: Annotated[str, Form(max_length=32)] = "",
            note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Say what a failed step's failure really was (POST /runs/{id}/corrections, from a form)."""
    check_form(request, csrf)
    require(principal, Role.OPERATOR, "correcting the classifier")
    body = form_body(knowledge_routes.CorrectionIn, {"step": step, "failure_type": failure_type, "note": note.strip()})
    row = knowledge_routes.correct(run_id, body, principal, session)
    proposed = "; a pattern is proposed for an admin to accept" if row.proposed_pattern else ""
    return back(PREFIX + "/corrections", f"step {row.step} of run {run_id[:8]} recorded as {row.corrected}{proposed}")


@router.get("/corrections", response_class=HTMLResponse)
def corrections_page(request: Request, principal: User, session: SessionDep) -> Response:
    rows = knowledge_routes.list_corrections(principal.tenant, principal, session)
    return page(request, "corrections.html", principal, corrections=rows)


@router.post("/corrections/{correction_id}/accept")
def accept_correction(request: Request, correction_id: str, principal: User, session: SessionDep,
                      csrf: Annotated[str, Form(max_length=64)] = "") -> Response:
    """Make a correction's proposed pattern one of the tenant's patterns (admin)."""
    check_form(request, csrf)
    require(principal, Role.ADMIN, "accepting a pattern")
    entry = knowledge_routes.accept_correction(principal.tenant, correction_id, principal, session)
    return back(PREFIX + "/corrections", f"pattern {entry.id} added: it counts from the next failed step on")


# --- circuit breakers ---------------------------------------------------------------------------

@router.get("/breakers", response_class=HTMLResponse)
def breakers_page(request: Request, principal: User, config: ConfigDep) -> Response:
    return page(request, "breakers.html", principal, breakers=breaker_routes.list_breakers(principal, config))


@router.post("/breakers")
def override_breaker(request: Request, principal: User, config: ConfigDep,
                     csrf: Annotated[str, Form(max_length=64)] = "",
                     failure_class: Annotated[str, Form(max_length=32)] = "",
                     dependency: Annotated[str, Form(max_length=255)] = "",
                     action: Annotated[str, Form(max_length=16)] = "") -> Response:
    """Force a breaker open or closed, or reset it (admin; POST /api/meta/v4/circuit-breakers from a form)."""
    check_form(request, csrf)
    require(principal, Role.ADMIN, "overriding a circuit breaker")
    body = form_body(breaker_routes.BreakerOverrideIn,
                     {"failure_class": failure_class, "dependency": dependency, "action": action})
    after = breaker_routes.override_breaker(body, principal, config)
    return back(PREFIX + "/breakers", f"breaker {after.failure_class} on {after.dependency} is {after.state}")


# --- workers and step logs ----------------------------------------------------------------------

@router.get("/workers", response_class=HTMLResponse)
async def workers_page(request: Request, principal: User, config: ConfigDep, temporal: TemporalDep) -> Response:
    shown_workers = await host_routes.list_workers(principal, config, temporal)
    queues: list[PoolStats] = []
    if shown_workers.temporal:
        with contextlib.suppress(Unavailable, RPCError):
            queues = await queue_stats(await temporal.client(), config.task_queue_prefix)
    return page(request, "workers.html", principal, workers=shown_workers.workers, leases=shown_workers.leases,
                temporal=shown_workers.temporal, queues=queues)


@router.get("/runs/{run_id}/steps/{step}/log")
async def step_log(run_id: str, step: str, principal: User, config: ConfigDep, attempt: int | None = None,
                   follow: bool = False) -> Response:
    """The API's step log (plain text, or with ``follow=1`` server-sent events) for the signed-in
    user: a browser's EventSource carries the cookie, not a bearer token."""
    return await host_routes.step_log(run_id, step, principal, config, attempt=attempt, follow=follow)


# --- approvals ----------------------------------------------------------------------------------

@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(request: Request, principal: User, session: SessionDep) -> Response:
    pending = approvals.list_gates(session, tenant=principal.tenant, status=GateStatus.PENDING.value)
    decided = approvals.recent_decisions(session, tenant=principal.tenant, limit=20)
    return page(request, "approvals.html", principal, pending=[gate_out(g) for g in pending],
                decided=[gate_out(g) for g in decided])


@router.post("/approvals/{gate_id}/{decision}")
async def decide(request: Request, gate_id: str, decision: Decision, principal: User, config: ConfigDep,
                 temporal: TemporalDep, csrf: Annotated[str, Form(max_length=64)] = "",
                 reason: Annotated[str, Form(max_length=2000)] = "",
                 back_to: Annotated[str, Form(max_length=500)] = PREFIX + "/approvals") -> Response:
    check_form(request, csrf)
    require(principal, Role.ADMIN, "deciding a gate")
    gate = await decide_gate(temporal.client, config.sessions, gate_id, decision, by=principal.user,
                             reason=reason.strip(), tenant=principal.tenant)
    await _until_recorded(config, gate_id)
    verb = "approved" if decision is Decision.APPROVE else "rejected"
    return back(_local(back_to), f"gate {gate.gate_id} {verb}: the run goes on" if decision is Decision.APPROVE
                else f"gate {gate.gate_id} {verb}: the run stops")


async def _until_recorded(config: ConfigDep, gate_id: str) -> None:
    """The run accepted the decision; wait (briefly) until its bookkeeping shows it in the DB."""

    def status() -> str | None:
        with transaction(config.sessions) as session:
            row = approvals.get_gate(session, gate_id)
            return row.status if row else None

    deadline = asyncio.get_running_loop().time() + DECISION_SHOWN_WITHIN
    while await run_in_threadpool(status) == GateStatus.PENDING and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)


# --- settings -----------------------------------------------------------------------------------

@router.get("/settings/builder/autofix", response_class=HTMLResponse)
def settings_page(request: Request, principal: User, session: SessionDep, config: ConfigDep) -> Response:
    current = settings_routes.tenant_settings(principal.tenant, principal, session, config)
    platform = {key: getattr(config.platform, key) for key in ENV_VARS}
    return page(request, "settings.html", principal, settings=current, platform=platform, env_vars=ENV_VARS)


@router.post("/settings/builder/autofix")
def change_settings(request: Request, principal: User, session: SessionDep, config: ConfigDep,
                    csrf: Annotated[str, Form(max_length=64)] = "",
                    action: Annotated[str, Form(max_length=10)] = "save",
                    autofix_enabled: Annotated[str, Form(max_length=10)] = "",
                    max_total_attempts: Annotated[str, Form(max_length=10)] = "",
                    max_per_step_attempts: Annotated[str, Form(max_length=10)] = "",
                    backoff_cap_seconds: Annotated[str, Form(max_length=20)] = "") -> Response:
    """Save the tenant's overrides (a field left empty follows the platform), or reset them all."""
    check_form(request, csrf)
    require(principal, Role.ADMIN, "changing settings")
    path = PREFIX + "/settings/builder/autofix"
    if action == "reset":
        change_tenant_settings(session, config.platform, principal.tenant, {}, merge=False, where="form",
                               tenant=principal.tenant, actor=principal.user)
        return back(path, "reset to the platform defaults")
    fields = {"autofix_enabled": autofix_enabled, "max_total_attempts": max_total_attempts,
              "max_per_step_attempts": max_per_step_attempts, "backoff_cap_seconds": backoff_cap_seconds}
    body = form_body(SettingsIn, {k: v.strip() for k, v in fields.items() if v.strip()})
    change_tenant_settings(session, config.platform, principal.tenant, overrides_of(body), merge=False, where="form",
                           tenant=principal.tenant, actor=principal.user)
    return back(path, "saved")


BUDGET_FIELDS = {"cost_usd_per_day": "USD per day", "cost_usd_per_month": "USD per month",
                 "tokens_per_day": "Tokens per day", "tokens_per_month": "Tokens per month",
                 "concurrent_runs": "Concurrent runs", "run.time_seconds": "Run time budget (seconds)",
                 "run.cost_usd": "Run cost budget (USD)", "run.attempts": "Run attempts budget"}
"""The tenant budget's fields on the Budgets settings page (``run.*``: the defaults of its runs)."""


@router.get("/settings/builder/budgets", response_class=HTMLResponse)
def budgets_page(request: Request, principal: User, session: SessionDep, config: ConfigDep) -> Response:
    current = budget_routes.get_tenant_budget(principal.tenant, principal, session, config)
    saved = {**{k: v for k, v in current.settings.items() if k != "run"},
             **{f"run.{k}": v for k, v in (current.settings.get("run") or {}).items()}}
    return page(request, "budgets.html", principal, budget=current, saved=saved, fields=BUDGET_FIELDS)


@router.post("/settings/builder/budgets")
async def change_budgets(request: Request, principal: User, session: AsyncSessionDep,
                         config: ConfigDep) -> Response:
    """Save the tenant's budgets (a field left empty: no limit at the tenant's level), or reset them."""
    form = await request.form()
    check_form(request, str(form.get("csrf", "")))
    require(principal, Role.ADMIN, "changing budgets")
    path = PREFIX + "/settings/builder/budgets"
    data: dict[str, Any] = {}
    if form.get("action") != "reset":
        for key in BUDGET_FIELDS:
            raw = str(form.get(key, "")).strip()[:30]
            if raw:
                head, _, rest = key.partition(".")
                (data.setdefault("run", {}) if rest else data)[rest or head] = raw
    body = form_body(budget_routes.TenantBudgetIn, data)
    await run_in_threadpool(lambda: budget_routes.replace_tenant_budget(principal.tenant, body, principal, session,
                                                                        config))
    return back(path, "reset: no tenant budgets" if form.get("action") == "reset" else "saved")


# --- errors -------------------------------------------------------------------------------------

def install(app: FastAPI) -> None:
    app.include_router(router)

    async def sign_in(request: Request, err: Exception) -> Response:
        assert isinstance(err, SignIn)
        return RedirectResponse(f"{PREFIX}/login?next={quote(err.next_path)}", status_code=303)

    app.add_exception_handler(SignIn, sign_in)
    app.state.error_page = error_page


def error_page(request: Request, status: int, detail: str) -> Response:
    """An error on a portal page, as a page (the API's handlers call this for ``/portal`` paths)."""
    return page(request, "error.html", None, status_code=status, status=status, detail=detail)
