"""``metabuilder demo``: the main job on the embedded defaults.

Makes a workspace from the bundled example, then runs two plans on it:

1. ``plan.yaml`` on the project as committed: it succeeds (the code-generation step commits
   on the run branch).
2. ``heal.yaml`` with known problems, auto-fix on: a lint error fixed by the step's fix command,
   a flaky dependency server (503 twice) retried with backoff, a 429 with Retry-After waited out,
   a missing database table repaired by re-planning (a migration step inserted), and a bug left
   uncommitted in ``calc.py`` that fails the tests: patched when an LLM endpoint is configured
   (``META_BUILDER_LLM_URL``), otherwise the run is rolled back (the seed step's rollback runs).

The demo exits 0 when both runs behaved as designed and the user's branch and files were
never touched.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from metabuilder.adapters.git import git
from metabuilder.domain.payloads import RunView
from metabuilder.domain.runs import RunStatus, StepStatus, web_ui_link
from metabuilder.service.budgets import run_budget
from metabuilder.service.runs import SubmitOptions, resolve_autofix, submit
from metabuilder.service.scheduling import resolve_v4
from metabuilder.service.timeline import run_timeline
from metabuilder.store.db import transaction
from metabuilder.worker.cli.budgets import spend_lines
from metabuilder.worker.cli.follow import follow, print_summary
from metabuilder.worker.devserver import DevServer
from metabuilder.worker.runtime import POOLS, build_workers, connect, prepare_database, running_workers
from metabuilder.worker.settings import Settings, default_home

EXAMPLE = Path(__file__).parent / "examples" / "demo"
BUG = ("    return sum(values) / len(values)", "    return sum(values) / (len(values) + 1)")
STYLE = ("def add(a: int, b: int) -> int:", "def add(a: int, b: int) -> int:   ")
RETRY_AFTER_SECONDS = 2


async def make_workspace(home: Path) -> Path:
    """A fresh git repository with the example project committed on ``main``."""
    workspace = home / "demo" / f"workspace-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6}"
    shutil.copytree(EXAMPLE, workspace)
    await git("init", "--quiet", "--initial-branch=main", cwd=workspace)
    await git("add", "--all", cwd=workspace)
    await git("-c", "user.name=Meta-Builder demo", "-c", "user.email=demo@localhost", "-c", "commit.gpgsign=false",
              "commit", "--quiet", "-m", "demo project", cwd=workspace)
    return workspace


@contextmanager
def flaky_services() -> Iterator[str]:
    """A local HTTP server: ``/deps`` answers 503 twice, then 200; ``/quota`` answers 429 with
    Retry-After once, then 200. Yields its base URL."""
    calls = {"/deps": 0, "/quota": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            calls[self.path] = calls.get(self.path, 0) + 1
            if self.path == "/deps" and calls["/deps"] <= 2:
                self.send_response(503)
            elif self.path == "/quota" and calls["/quota"] <= 1:
                self.send_response(429)
                self.send_header("Retry-After", str(RETRY_AFTER_SECONDS))
            else:
                self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def run_demo(settings: Settings) -> int:
    print(f"Meta-Builder demo · data in {settings.home}")
    sessions = prepare_database(settings)
    client = await connect(settings)
    print(f"Temporal at {settings.address}" + (f"; Web UI {settings.ui_url}" if settings.ui_url else ""))
    workspace = await make_workspace(settings.home)
    user_head = (await git("rev-parse", "HEAD", cwd=workspace)).strip()
    autofix = resolve_autofix(settings.autofix, sessions, "default", {"enabled": True})
    opts = SubmitOptions.of(settings, autofix=autofix, v4=resolve_v4(settings.v4, sessions, "default"))
    views: list[RunView] = []
    with flaky_services() as url:
        async with running_workers(build_workers(client, settings, sessions, POOLS)):
            for title, plan_file in (("1. the project as committed", "plan.yaml"),
                                     ("2. with known problems, self-healing on", "heal.yaml")):
                plan_text = (workspace / plan_file).read_text()
                if plan_file == "heal.yaml":
                    source = (workspace / "calc.py").read_text()
                    (workspace / "calc.py").write_text(source.replace(*BUG).replace(*STYLE))
                    db = settings.home / "demo-data" / f"{workspace.name}.db"
                    db.parent.mkdir(parents=True, exist_ok=True)
                    plan_text = plan_text.replace("@DEMO_URL@", url).replace("@DEMO_DB@", str(db))
                    llm = f"LLM fixer at {settings.llm.url}" if settings.llm else "no LLM configured"
                    print(f"\n   (a lint error and a bug left uncommitted in calc.py, a flaky server, a 429, "
                          f"a database without its table; {llm})")
                print(f"\n== run {title} ==")
                submitted = await submit(client, plan_text, str(workspace / plan_file), workspace, opts)
                print(f"run {submitted.run_id}: plan {submitted.plan.name!r}, workspace {workspace}")
                view = await follow(submitted.handle)
                print_summary(view, repo=settings.shared_repo,
                              ui_link=web_ui_link(settings.ui_url, settings.temporal_namespace, view.run_id))
                with transaction(sessions) as session:
                    spent = run_budget(session, settings.budgets, view.run_id, tenant=None)
                    models = [e.data for e in run_timeline(session, view.run_id, None) if e.kind == "model.chosen"]
                for line in spend_lines(spent, models, settings.llm.model if settings.llm else None):
                    print(line)
                views.append(view)

    good, healed = views
    problems = check_plain(good, await git("ls-tree", "--name-only", good.head_commit,
                                           cwd=settings.shared_repo, check=False))
    problems += check_healing(healed, llm=settings.llm is not None)
    if (await git("rev-parse", "HEAD", cwd=workspace)).strip() != user_head:
        problems.append("the user's branch moved")
    if (workspace / "calc_table.py").exists():
        problems.append("a step wrote into the user's working tree")

    print()
    if problems:
        print("The demo did NOT behave as designed:")
        for p in problems:
            print(f"  - {p}")
        return 1
    print("The demo behaved as designed:")
    print(f"  - run 1 succeeded; its generated calc_table.py was committed on {good.branch}")
    print("  - run 2 healed: lint fixed by its fix command, 503s retried with backoff, the 429's Retry-After "
          "waited out, a migration step inserted before seed-db")
    if settings.llm:
        print("  - the failing test was patched by the LLM fixer and the run succeeded")
    else:
        print("  - the failing test could not be patched without an LLM: the run was rolled back "
              "(seed-db's rollback ran, the branch is back at the last good commit)")
    print(f"  - the user's branch 'main' in {workspace} is still at {user_head[:12]}")
    mb = cli_command(settings)
    if settings.embedded and DevServer.of_home(settings).recorded_here():
        print(f"The dev server keeps running for the Web UI at {settings.ui_url}; "
              f"stop it with `{mb} server stop`.")
    elif settings.embedded:
        print(f"The demo used a Temporal server already listening on {settings.address}, which another "
              f"Meta-Builder home started (not {settings.home}); it keeps running.")
    print("To see these runs in the portal (timeline, diffs, approvals) and on /metrics: stop the dev server, "
          f"run `{mb} up`, make a token with `{mb} tokens create --tenant default --user you "
          f"--role admin`, and open http://{settings.api_host}:{settings.api_port}/portal")
    return 0


def cli_command(settings: Settings) -> str:
    """How to call this CLI again, from here, on the same data: the program as it was started
    (``.venv/bin/metabuilder`` under ``make``) and ``META_BUILDER_HOME`` when it is not the default."""
    program = Path(sys.argv[0])
    on_path = shutil.which("metabuilder")
    if program.name != "metabuilder" or (on_path and Path(on_path).resolve() == program.resolve()):
        shown = "metabuilder"
    else:
        try:
            shown = str(program.resolve().relative_to(Path.cwd()))
        except ValueError:
            shown = str(program)
    if settings.home != default_home().expanduser().resolve():
        shown = f"META_BUILDER_HOME={shlex.quote(str(settings.home))} {shown}"
    return shown


def check_plain(view: RunView, tree: str) -> list[str]:
    problems = []
    if view.status is not RunStatus.SUCCEEDED:
        problems.append(f"run 1 should have succeeded, it is {view.status.value}")
    if "calc_table.py" not in tree.split():
        problems.append("the generate step's calc_table.py is not on run 1's branch")
    return problems


def check_healing(view: RunView, *, llm: bool) -> list[str]:
    """What run 2 must show, read from its timeline."""
    def outcomes(step: str) -> list[tuple[str, str]]:
        return [(e.strategy, e.outcome) for e in view.timeline if e.step == step]

    problems = []
    if ("patch", "fixed") not in outcomes("lint"):
        problems.append(f"lint should have been fixed by its fix command: {outcomes('lint')}")
    deps = [(e.signal_type, e.backoff_seconds) for e in view.timeline if e.step == "fetch-deps"]
    if deps != [("TRANSIENT", 1.0), ("TRANSIENT", 2.0)]:
        problems.append(f"fetch-deps should have been retried twice as TRANSIENT after 1s and 2s: {deps}")
    quota = [(e.signal_type, e.backoff_seconds) for e in view.timeline if e.step == "check-quota"]
    if quota != [("RATE_LIMIT", float(RETRY_AFTER_SECONDS))]:
        problems.append(f"check-quota should have waited out its Retry-After once: {quota}")
    if [(d.kind, d.step) for d in view.plan_deltas] != [("insert_step", "seed-db")]:
        problems.append(f"a migration step should have been inserted before seed-db: {view.plan_deltas}")
    test = next((s for s in view.steps if s.name == "test"), None)
    if llm and (view.status is not RunStatus.SUCCEEDED or test is None or test.status is not StepStatus.SUCCEEDED):
        problems.append(f"with an LLM the test should have been patched; the run is {view.status.value}")
    if not llm and (view.status is not RunStatus.ROLLED_BACK or ("rollback", "rolled_back") not in outcomes("test")):
        problems.append(f"without an LLM the run should have been rolled back; it is {view.status.value}")
    return problems
