"""Any worker on any host: two worker hosts in network namespaces of their own, sharing no path
with the test or each other, reach Temporal, PostgreSQL and the shared repository over the
network only. The host running a step loses power mid-step; the run goes on on the other one.

Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2; CI runs as root.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowFailureError

from metabuilder.domain.runs import RunStatus, StepStatus
from metabuilder.migrations import upgrade
from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.service.step_logs import read_piece
from metabuilder.service.workers import list_workers
from metabuilder.store import hosts, repository
from metabuilder.store.db import make_engine, session_factory, transaction
from metabuilder.store.hosts import AttemptKey
from metabuilder.worker.devserver import DevServer, ensure_search_attributes
from tests.conftest import fresh_pg_database, git
from tests.integration.hosts import Host, Network, NetworkError, forward_tcp, free_port, serve_git, stop

HEARTBEAT = 3.0

PLAN = """\
name: two-hosts
steps:
  - name: prep
    command: echo prep > prep.txt
  - name: long
    command: echo started; [ $METABUILDER_ATTEMPT = 1 ] && sleep 60; echo done > long.txt
  - name: after
    command: test -f prep.txt && test -f long.txt && sleep 2 && echo checked
"""


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    try:
        net = Network(tmp_path / "hosts")
    except NetworkError as err:
        pytest.fail(f"the two-host test needs network namespaces (root, iproute2): {err}")
    try:
        try:
            net.add_host("mb-host-a")
            net.add_host("mb-host-b")
        except NetworkError as err:
            pytest.fail(f"the two-host test needs network namespaces (root, iproute2): {err}")
        yield net
    finally:
        net.remove()


def _host_of(worker: str) -> str:
    return worker.rsplit(":", 1)[0]


@dataclass
class Cluster:
    """Temporal, PostgreSQL and a git daemon on the test's side of the links, and a worker on each host."""

    network: Network
    client: Client
    sessions: sessionmaker[Session]
    repo_url: str
    prefix: str

    async def submit(self, user_repo: Path, plan: str):  # type: ignore[no-untyped-def]
        return await submit(self.client, plan, "plan.yaml", user_repo,
                            SubmitOptions(shared_repo=self.repo_url, task_queue_prefix=self.prefix,
                                          heartbeat_timeout_seconds=HEARTBEAT))


@pytest.fixture
async def cluster(network: Network, tmp_path: Path) -> AsyncIterator[Cluster]:
    services = network.service_address
    # The dev server's own services dial its frontend on 127.0.0.1 (with `--ip <veth address>` they
    # fail), so it listens on loopback behind a TCP forwarder on the link, as behind a load balancer.
    server = DevServer(tmp_path / "temporal", port=free_port("127.0.0.1"), ui=False)
    server.start(detach=False)
    helpers: list[subprocess.Popen[bytes]] = []
    try:
        await server.wait_ready()
        temporal_proxy, temporal_port = forward_tcp(services, ("127.0.0.1", server.port))
        helpers.append(temporal_proxy)
        temporal_address = f"{services}:{temporal_port}"
        with fresh_pg_database() as url:
            pg = make_url(url)
            forwarder, pg_port = forward_tcp(services, (pg.host or "127.0.0.1", pg.port or 5432))
            helpers.append(forwarder)
            # The test itself (the client) uses the same addresses as the hosts.
            db_url = pg.set(host=services, port=pg_port).render_as_string(hide_password=False)
            upgrade(db_url)
            repos = tmp_path / "git"
            git(tmp_path, "init", "--quiet", "--bare", str(repos / "shared.git"))
            daemon, git_base = serve_git(repos, services, tmp_path / "git-daemon.log")
            helpers.append(daemon)
            repo_url = f"{git_base}/shared.git"
            prefix = f"t-{uuid.uuid4().hex[:12]}"
            client = await Client.connect(temporal_address)
            await ensure_search_attributes(client, "default")
            env = {"TEMPORAL_ADDRESS": temporal_address, "DATABASE_URL": db_url, "META_BUILDER_SHARED_REPO": repo_url,
                   "META_BUILDER_TASK_QUEUE_PREFIX": prefix, "META_BUILDER_LOG_LEVEL": "warning",
                   "META_BUILDER_METRICS_PORT": "0", "META_BUILDER_SDK_METRICS_PORT": "0"}
            for host in network.hosts:
                host.start_worker(env, tmp_path / f"{host.name}.log")
            engine = make_engine(db_url)
            try:
                sessions = session_factory(engine)
                async with asyncio.timeout(60):  # both workers up (each reports itself as it starts)
                    while True:
                        with transaction(sessions) as s:
                            up = {w.host for w in hosts.workers(s, prefix) if w.stopped_at is None}
                        if up == {h.name for h in network.hosts}:
                            break
                        await asyncio.sleep(0.2)
                yield Cluster(network, client, sessions, repo_url, prefix)
            finally:
                network.remove()  # the hosts' processes first: nothing holds the database then
                engine.dispose()
    finally:
        for proc in helpers:
            stop(proc)
        server.stop()


async def test_a_run_goes_on_on_another_host_when_its_host_dies(
        cluster: Cluster, tmp_path: Path, user_repo: Path) -> None:
    network, client, sessions, repo_url, prefix = (cluster.network, cluster.client, cluster.sessions,
                                                   cluster.repo_url, cluster.prefix)
    run = await cluster.submit(user_repo, PLAN)
    victim = await _host_running(network, sessions, run.run_id, "long", tmp_path)
    # Its log reaches the database while it runs (read here, off the victim's disk), and
    # the victim's worker holds the attempt's lease.
    long_1 = AttemptKey(run.run_id, 1, 1)
    async with asyncio.timeout(30):
        while "started" not in _log_text(sessions, long_1):
            await asyncio.sleep(0.1)
    with transaction(sessions) as s:
        held = [(x.step_name, x.attempt, x.status, x.worker) for x in hosts.leases(s, run_id=run.run_id)]
    assert len(held) == 1 and held[0][:3] == ("long", 1, "held")
    assert held[0][3].endswith(f"@{victim.name}")
    views, _ = await list_workers(sessions, client, prefix)
    assert {v.host for v in views if v.state == "running"} == {h.name for h in network.hosts}
    assert all(v.pools == {"workflow": 4, "cpu": 4, "io": 4, "llm": 4} for v in views)
    victim.power_off()
    survivor = next(h for h in network.hosts if h is not victim)

    # The retry takes over on the survivor; the lost attempt's lease says so while the run
    # goes on (the run's end removes its leases).
    async with asyncio.timeout(60):
        while True:
            with transaction(sessions) as s:
                leases = [(x.step_name, x.attempt, x.status) for x in hosts.leases(s, run_id=run.run_id)]
            if ("long", 1, "lost") in leases:
                break
            await asyncio.sleep(0.1)
    async with asyncio.timeout(120):
        view = await run.handle.result()
    assert view.status is RunStatus.SUCCEEDED, _logs(tmp_path)
    assert [s.status for s in view.steps] == [StepStatus.SUCCEEDED] * 3
    assert view.steps[1].attempt == 2

    # The same records as when a worker dies on one host (tests/integration/test_resilience.py).
    with transaction(sessions) as s:
        rows = repository.run_steps(s, run.run_id)
        got = [(r.name, r.attempt, r.status) for r in rows]
        lost_reason = rows[1].log_tail
        workers = {(r.name, r.attempt): _host_of(r.worker) for r in rows}
        commits = {(r.name, r.attempt): (r.commit_before, r.commit_after) for r in rows}
        run_row = repository.get_run(s, run.run_id)
        assert run_row is not None
        head, status = run_row.head_commit, run_row.status
    assert got == [("prep", 1, "succeeded"), ("long", 1, "lost"), ("long", 2, "succeeded"),
                   ("after", 1, "succeeded")]
    assert status == "succeeded"
    # Its log is on the dead machine: whether the command started counts as unknown (so a
    # step marked idempotent: false would stop at StepOutcomeUnknown, not run twice).
    assert f"its worker was lost on {victim.name}" in lost_reason
    assert workers[("long", 1)] == victim.name and workers[("long", 2)] == survivor.name
    # From its last commit: the retry starts where prep left the branch.
    assert commits[("long", 2)][0] == commits[("prep", 1)][1]
    assert head == commits[("long", 2)][1]

    # Nothing is held once the run has ended; both attempts' logs are in the database: the
    # lost one up to where its host died, the retry's whole.
    with transaction(sessions) as s:
        assert hosts.leases(s, run_id=run.run_id) == []
    assert _log_text(sessions, long_1) == "started\n"
    assert _log_text(sessions, AttemptKey(run.run_id, 1, 2)) == "started\n"
    with transaction(sessions) as s:
        assert read_piece(s, AttemptKey(run.run_id, 1, 2)).done
        assert not read_piece(s, long_1).done

    # The same branch: the run branch of the shared repository (read over git://) is at the
    # run's head, and its tree is what the plan makes of the user's files on one machine.
    remote = git(tmp_path, "ls-remote", repo_url, f"refs/heads/{run.workspace.branch}").split()
    assert remote and remote[0] == head
    git(user_repo, "fetch", "--quiet", repo_url, f"refs/heads/{run.workspace.branch}")
    log = git(user_repo, "log", "--format=%s", "FETCH_HEAD").splitlines()
    assert log[:2] == [f"metabuilder: long (run {run.run_id})", f"metabuilder: prep (run {run.run_id})"]
    (user_repo / "prep.txt").write_text("prep\n")
    (user_repo / "long.txt").write_text("done\n")
    git(user_repo, "add", "--all")
    assert git(user_repo, "rev-parse", "FETCH_HEAD^{tree}") == git(user_repo, "write-tree")

    # Nothing of the run is on the test's disk, and each host kept its own artifacts.
    assert not (tmp_path / "home").exists()
    assert list((survivor.home / "metabuilder" / "artifacts" / run.run_id).iterdir())


async def _host_running(network: Network, sessions, run_id: str, step: str,  # type: ignore[no-untyped-def]
                        tmp_path: Path) -> Host:
    """The host whose worker runs the first attempt of ``step``, once its row says so."""
    async with asyncio.timeout(60):
        while True:
            with transaction(sessions) as s:
                rows = [r for r in repository.run_steps(s, run_id) if r.name == step and r.status == "running"]
            if rows:
                name = _host_of(rows[0].worker)
                return next(h for h in network.hosts if h.name == name)
            await asyncio.sleep(0.1)


def _log_text(sessions, key: AttemptKey) -> str:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        return read_piece(s, key).text


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("mb-host-*.log")))


async def test_a_step_marked_not_idempotent_is_not_run_again_on_another_host(
        cluster: Cluster, tmp_path: Path, user_repo: Path) -> None:
    """The other host cannot see whether the dead host's command ran (its log is there): it counts
    as started, so a step that must not run twice stops the run for a person instead."""
    plan = ("name: deploy-once\nsteps:\n  - name: deploy\n    idempotent: false\n"
            "    command: echo started; sleep 60; echo deployed > deployed.txt\n")
    run = await cluster.submit(user_repo, plan)
    victim = await _host_running(cluster.network, cluster.sessions, run.run_id, "deploy", tmp_path)
    async with asyncio.timeout(30):
        while "started" not in _log_text(cluster.sessions, AttemptKey(run.run_id, 0, 1)):
            await asyncio.sleep(0.1)
    victim.power_off()
    async with asyncio.timeout(120):
        with pytest.raises(WorkflowFailureError) as failed:
            await run.handle.result()
    assert "was not run again: it is marked idempotent: false" in str(failed.value.cause)
    with transaction(cluster.sessions) as s:
        rows = [(r.attempt, r.status, r.log_tail) for r in repository.run_steps(s, run.run_id)]
        run_row = repository.get_run(s, run.run_id)
        assert run_row is not None and run_row.status == "failed"
    # The first attempt is lost; every later one refuses (a refusal that reaches Temporal after
    # the attempt's heartbeat timeout is retried, and the retry refuses again): never run twice.
    assert rows[0][:2] == (1, "lost") and f"its worker was lost on {victim.name}" in rows[0][2]
    assert len(rows) >= 2 and all(st == "error" and "was not run again: it is marked idempotent: false" in tail
                                  for _, st, tail in rows[1:]), rows
    assert "deployed" not in _log_text(cluster.sessions, AttemptKey(run.run_id, 0, 1))
