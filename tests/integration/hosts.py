"""Worker "hosts" for tests: network namespaces of their own, joined to this one by veth pairs.

Each host is a network namespace (``ip netns``) with one veth link to the test's namespace, an
address in a private range the test picks, and a UTS namespace of its own (its own hostname, so
its workers name themselves after it). Processes started on a host get their own home directory
and nothing else of the test's: they reach Temporal, PostgreSQL and the shared git repository
only over the link. Everything made here is removed by :meth:`Network.remove`.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


class NetworkError(RuntimeError):
    """The namespaces could not be made (not root, no ``ip``, no CAP_NET_ADMIN/CAP_SYS_ADMIN)."""


def _ip(*args: str) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NetworkError("the `ip` command (iproute2) is not installed") from None
    if done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Host:
    name: str
    """Its hostname (and the name its workers report)."""
    netns: str
    address: str
    """Its own address, inside its namespace."""
    gateway: str
    """The test namespace's end of its link."""
    veth: str
    home: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        """A clean environment: PATH, its own HOME and temporary directory, and ``extra``."""
        (self.home / "tmp").mkdir(parents=True, exist_ok=True)
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(self.home),
                "TMPDIR": str(self.home / "tmp"), "META_BUILDER_HOME": str(self.home / "metabuilder"),
                "XDG_DATA_HOME": str(self.home / ".local" / "share"),
                "XDG_CACHE_HOME": str(self.home / ".cache"), **extra}

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this host (its network and hostname), in its home directory."""
        wrapped = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--",
                   "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *argv]
        with log.open("ab") as out:
            proc = subprocess.Popen(wrapped, cwd=self.home, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    def start_worker(self, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
        return self.start([sys.executable, "-m", "metabuilder.worker.cli", "worker", *args], self.env(env), log)

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def power_off(self) -> None:
        """SIGKILL every process of the host at once, as a machine that loses power: its worker
        and whatever step command it was running."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


class Network:
    """Hosts on links of their own to this namespace, in a private /24 per link."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tag = uuid.uuid4().hex[:5]
        self.hosts: list[Host] = []
        used = _ip("-4", "-o", "addr", "show")
        for _ in range(50):
            self.base = random.randrange(0, 250, 2)
            if f" 10.231.{self.base}." not in used and f" 10.231.{self.base + 1}." not in used:
                break
        else:
            raise NetworkError("no free 10.231.x.0/24 pair for the test's links")

    @property
    def service_address(self) -> str:
        """Where the test's servers listen: this namespace's end of the first link (the other hosts
        reach it through their default route)."""
        return self.hosts[0].gateway

    def add_host(self, name: str) -> Host:
        i = len(self.hosts)
        netns, veth, peer = f"mb{self.tag}{i}", f"mb{self.tag}{i}h", f"mb{self.tag}{i}n"
        net = f"10.231.{self.base + i}"
        home = self.root / name
        home.mkdir(parents=True)
        host = Host(name=name, netns=netns, address=f"{net}.2", gateway=f"{net}.1", veth=veth, home=home)
        _ip("netns", "add", netns)
        self.hosts.append(host)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", netns)
        _ip("addr", "add", f"{host.gateway}/24", "dev", veth)
        _ip("link", "set", veth, "up")
        for args in (("addr", "add", f"{host.address}/24", "dev", peer), ("link", "set", peer, "up"),
                     ("link", "set", "lo", "up"), ("route", "add", "default", "via", host.gateway)):
            _ip("netns", "exec", netns, "ip", *args)
        return host

    def remove(self) -> None:
        for host in self.hosts:
            host.power_off()
            with contextlib.suppress(NetworkError):
                _ip("link", "del", host.veth)  # deletes its peer too
            with contextlib.suppress(NetworkError):
                _ip("netns", "del", host.netns)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def wait_port(address: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {address}:{port} after {timeout:g}s")


def serve_git(base: Path, address: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``git daemon`` serving the repositories under ``base`` (read and push) on ``address``;
    returns the process and the URL prefix (``git://address:port``)."""
    port = free_port(address)
    with log.open("ab") as out:  # its own session: `git daemon` forks the daemon, killed with its group
        proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", f"--listen={address}", f"--port={port}", f"--base-path={base}",
             "--export-all", "--enable=receive-pack", "--informative-errors", str(base)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_port(address, port)
    return proc, f"git://{address}:{port}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a helper started here and whatever it forked (its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def forward_tcp(address: str, target: tuple[str, int]) -> tuple[subprocess.Popen[bytes], int]:
    """A forwarder from ``address`` (a free port) to ``target``; returns it and its port."""
    port = free_port(address)
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("tcp_forward.py")), address, str(port),
                             target[0], str(target[1])], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise NetworkError(f"the TCP forwarder to {target[0]}:{target[1]} did not start")
    return proc, port
