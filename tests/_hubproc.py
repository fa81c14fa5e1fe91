"""Helpers for tests that run the real ``airi`` CLI in a subprocess: the one place for free
ports, the subprocess environment, the hub process itself and its RSS (``bench/soak.py`` uses
it too).

Every process is started by these helpers, tracked by its PID and stopped by that PID only
(SIGTERM, then SIGKILL after a timeout). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The reference's environment variables, and the cluster's broker URL (a developer's shell may
#: point it at a broker): cleared for every subprocess unless a test sets them.
HUB_ENV_VARS = ("HOST", "PORT", "SERVER_INSTANCE_ID", "AUTHENTICATION_TOKEN", "LOG_LEVEL", "LOG_FORMAT", "AIRI_CLUSTER_URL")

LISTENING_RE = re.compile(r"listening on (ws://\S+)")


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a hub subprocess: ours minus the hub's variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in HUB_ENV_VARS}
    env["COLUMNS"] = "250"  # rich: no truncated table cells, no wrapped summary lines
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


def checkout_env(checkout: str | os.PathLike[str] | None) -> dict[str, str]:
    """Extra environment that makes ``python -m airi_core`` import the hub (and its built-in
    plugins) from another checkout of this repository, e.g. the commit before a change, for
    before/after measurements (``bench/run.py --baseline``, ``bench/attack_*.py --baseline``).
    Start such a hub from a directory outside any checkout: ``python -m`` puts the working
    directory first on ``sys.path``. None: the installed tree, no extra environment."""
    if checkout is None:
        return {}
    root = os.fspath(checkout)
    return {"PYTHONPATH": os.pathsep.join((root, os.path.join(root, "plugins")))}


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB, from ``/proc/PID/status`` (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS line for pid {pid}")


def terminate(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """Stop ``proc`` by its PID: SIGTERM, then SIGKILL if it is still running after ``timeout``
    seconds. Returns its exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    return proc.returncode


def airi_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "airi_core", *args]


def run_cli(
    args: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m airi_core <args>`` to completion (bounded) and capture its output."""
    return subprocess.run(
        airi_cmd(*args),
        cwd=cwd,
        env=hub_env(env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )


class HubProcess:
    """An ``airi serve`` subprocess whose stdout and stderr are collected line by line.

    Also a context manager: leaving the ``with`` block stops it (see :meth:`stop`).
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args = list(args)
        #: The port it was told to listen on, when known (set by :meth:`serve`).
        self.port: int | None = None
        self.proc = subprocess.Popen(
            airi_cmd(*args),
            cwd=cwd,
            env=hub_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self.pid = self.proc.pid
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines), daemon=True),
        ]
        for t in self._readers:
            t.start()

    @classmethod
    def serve(
        cls,
        config: str | os.PathLike[str],
        *,
        port: int | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> HubProcess:
        """Start ``airi serve --config CONFIG --port PORT`` (a free port unless given); does
        not wait for it to listen."""
        port = free_port() if port is None else port
        hub = cls(["serve", "--config", os.fspath(config), "--port", str(port)], cwd=cwd, env=env)
        hub.port = port
        return hub

    @classmethod
    def serve_text(
        cls,
        config_text: str,
        directory: Path,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 15.0,
    ) -> HubProcess:
        """Write ``config_text`` to ``directory/airi.toml``, :meth:`serve` it on a free port and
        return once the hub is listening (stopping it first if it does not within ``timeout``).

        ``with HubProcess.serve_text(toml, tmp_path) as hub: ... hub.url, hub.port, hub.pid``
        """
        hub = cls.serve(write_config(directory, config_text), env=env)
        try:
            hub.wait_listening(timeout)
        except BaseException:
            hub.stop()
            raise
        return hub

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT/ws`` for a hub started by :meth:`serve`."""
        if self.port is None:
            raise AttributeError("url: this hub was not started with a known port (use HubProcess.serve)")
        return f"ws://127.0.0.1:{self.port}/ws"

    def __enter__(self) -> HubProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _pump(self, stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._lock:
                sink.append(line.rstrip("\n"))

    # -- output -------------------------------------------------------------------------------
    @property
    def stdout(self) -> str:
        with self._lock:
            return "\n".join(self.stdout_lines)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "\n".join(self.stderr_lines)

    def output(self) -> str:
        return self.stdout + "\n" + self.stderr

    def _find(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        with self._lock:
            lines = list(self.stderr_lines)
        for line in lines:
            m = pattern.search(line)
            if m:
                return m
        return None

    def wait_for_stderr(self, pattern: str | re.Pattern[str], timeout: float = 15.0) -> re.Match[str]:
        """Block until a stderr line matches ``pattern`` (fails if the process exits first)."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self._find(rx)
            if m:
                return m
            if self.proc.poll() is not None:
                self._drain()
                m = self._find(rx)
                if m:
                    return m
                raise AssertionError(
                    f"hub exited with {self.proc.returncode} before printing {rx.pattern!r}\n"
                    f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
                )
            time.sleep(0.02)
        raise AssertionError(f"no stderr line matching {rx.pattern!r} within {timeout}s\nstderr:\n{self.stderr}")

    async def await_stderr(self, pattern: str | re.Pattern[str], timeout: float = 15.0) -> re.Match[str]:
        return await asyncio.to_thread(self.wait_for_stderr, pattern, timeout)

    def wait_listening(self, timeout: float = 15.0) -> str:
        """The hub's ``ws://`` URL, once it printed the ``listening on`` line."""
        return self.wait_for_stderr(LISTENING_RE, timeout).group(1)

    async def await_listening(self, timeout: float = 15.0) -> str:
        return await asyncio.to_thread(self.wait_listening, timeout)

    # -- lifecycle ----------------------------------------------------------------------------
    def _drain(self) -> None:
        for t in self._readers:
            t.join(timeout=5)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit status, or None if the process is still running after ``timeout``."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._drain()
        return rc

    async def await_exit(self, timeout: float) -> int | None:
        return await asyncio.to_thread(self.wait_exit, timeout)

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate this process (by its PID): SIGTERM, then SIGKILL after ``timeout``."""
        terminate(self.proc, timeout)
        self._drain()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def write_config(directory: Path, text: str, name: str = "airi.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path
