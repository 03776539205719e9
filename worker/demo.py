"""``metabuilder demo``: the main job on the embedded defaults.

Makes a workspace from the bundled example, then runs its plan twice: once as
committed (it succeeds; the code-generation step commits on the run branch), and
once with a bug left uncommitted in the working tree (the test step fails with its
exit code and log). The demo exits 0 when both runs behaved as designed and the
user's branch and files were never touched.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from activities.git import git
from domain.payloads import RunView
from domain.runs import RunStatus, StepStatus
from service.runs import SubmitOptions, submit
from worker.follow import follow, print_summary, web_ui_link
from worker.runtime import POOLS, build_workers, connect, prepare_database, running_workers
from worker.settings import Settings

EXAMPLE = Path(__file__).parent / "examples" / "demo"
BUG = ("    return sum(values) / len(values)", "    return sum(values) / (len(values) + 1)")


async def make_workspace(home: Path) -> Path:
    """A fresh git repository with the example project committed on ``main``."""
    workspace = home / "demo" / f"workspace-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6}"
    shutil.copytree(EXAMPLE, workspace)
    await git("init", "--quiet", "--initial-branch=main", cwd=workspace)
    await git("add", "--all", cwd=workspace)
    await git("-c", "user.name=Meta-Builder demo", "-c", "user.email=demo@localhost", "-c", "commit.gpgsign=false",
              "commit", "--quiet", "-m", "demo project", cwd=workspace)
    return workspace


async def run_demo(settings: Settings) -> int:
    print(f"Meta-Builder demo · data in {settings.home}")
    sessions = prepare_database(settings)
    client = await connect(settings)
    print(f"Temporal at {settings.address}" + (f"; Web UI {settings.ui_url}" if settings.ui_url else ""))
    workspace = await make_workspace(settings.home)
    user_head = (await git("rev-parse", "HEAD", cwd=workspace)).strip()
    plan_path = workspace / "plan.yaml"
    plan_text = plan_path.read_text()
    opts = SubmitOptions(shared_repo=settings.shared_repo, task_queue_prefix=settings.task_queue_prefix,
                         heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds)
    problems: list[str] = []
    views: list[RunView] = []

    async with running_workers(build_workers(client, settings, sessions, POOLS)):
        for title, broken in (("1. the project as committed", False),
                              ("2. with a bug left uncommitted in calc.py", True)):
            if broken:
                source = (workspace / "calc.py").read_text()
                (workspace / "calc.py").write_text(source.replace(*BUG))
            print(f"\n== run {title} ==")
            submitted = await submit(client, plan_text, str(plan_path), workspace, opts)
            print(f"run {submitted.run_id}: plan {submitted.plan.name!r}, workspace {workspace}")
            view = await follow(submitted.handle)
            print_summary(view, repo=settings.shared_repo,
                          ui_link=web_ui_link(settings.ui_url, settings.temporal_namespace, view.run_id))
            views.append(view)

    good, bad = views
    if good.status is not RunStatus.SUCCEEDED:
        problems.append(f"run 1 should have succeeded, it is {good.status.value}")
    generated = await git("ls-tree", "--name-only", good.head_commit, cwd=settings.shared_repo, check=False)
    if "calc_table.py" not in generated.split():
        problems.append("the generate step's calc_table.py is not on run 1's branch")
    failed = next((s for s in bad.steps if s.status is StepStatus.FAILED), None)
    if bad.status is not RunStatus.FAILED or failed is None or failed.name != "test" or failed.exit_code != 1:
        problems.append(f"run 2 should have failed at step 'test' with exit code 1; it is {bad.status.value}"
                        f" at {failed.name if failed else None}")
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
    print(f"  - run 2 failed at step 'test' with exit code {failed.exit_code if failed else '?'} "
          "(the uncommitted bug was built, the user's files were not changed)")
    print(f"  - the user's branch 'main' in {workspace} is still at {user_head[:12]}")
    if settings.embedded:
        print(f"The dev server keeps running for the Web UI at {settings.ui_url}; "
              "stop it with `metabuilder server stop`.")
    return 0
