"""Small helpers shared by the hardening tests (test_limits.py, test_faults.py, test_hardening.py).

Everything here is bounded in time: every wait takes a timeout and fails loudly when it runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from airi_core.logs import TRACE
from airi_core.testing import HubClient

#: Environment variables the hub reads; cleared for hub subprocesses.
HUB_ENV_VARS = ("HOST", "PORT", "SERVER_INSTANCE_ID", "AUTHENTICATION_TOKEN", "LOG_LEVEL", "LOG_FORMAT")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.01) -> float:
    """Poll ``predicate`` until true; returns the time it took. Fails after ``timeout`` seconds."""
    start = time.monotonic()
    deadline = start + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - start


async def wait_closed(client: HubClient, timeout: float = 3.0) -> tuple[int | None, str | None]:
    """Wait (bounded) until ``client``'s socket is closed; returns (code, reason)."""
    await asyncio.wait_for(client.ws.wait_closed(), timeout)
    return client.ws.close_code, client.ws.close_reason


def of_type(client: HubClient, type: str, start: int = 0) -> list[dict[str, Any]]:
    return [e for e in client.received[start:] if e.get("type") == type]


def error_messages(client: HubClient, start: int = 0) -> list[str]:
    return [e["data"]["message"] for e in of_type(client, "error", start)]


def seqs(client: HubClient, type: str, key: str = "seq", start: int = 0) -> list[Any]:
    """``data[key]`` of every received event of ``type``, in arrival order."""
    return [e["data"].get(key) for e in of_type(client, type, start)]


async def ping_roundtrip(client: HubClient, timeout: float = 3.0) -> dict[str, Any]:
    """A heartbeat ping answered by the hub. Replies to one peer go out in frame order, so when
    this returns, the replies to everything ``client`` sent before have arrived."""
    reply = await client.request(
        "transport:connection:heartbeat", {"kind": "ping", "message": "\U0001fa75"}, timeout=timeout
    )
    assert reply["type"] == "transport:connection:heartbeat" and reply["data"]["kind"] == "pong", reply
    return reply


@contextlib.contextmanager
def airi_logs_captured(caplog: Any, level: int = logging.DEBUG) -> Iterator[None]:
    """Make sure records of the ``airi`` loggers reach ``caplog`` at ``level`` even if some other
    test configured them in-process (``setup_logging`` turns propagation off)."""
    names = ("airi", "airi.websocket")
    saved = {n: (logging.getLogger(n).propagate, logging.getLogger(n).level) for n in names}
    try:
        for n in names:
            logging.getLogger(n).propagate = True
        logging.getLogger("airi.websocket").setLevel(logging.NOTSET)
        caplog.set_level(level, logger="airi")
        yield
    finally:
        for n, (prop, lvl) in saved.items():
            logging.getLogger(n).propagate = prop
            logging.getLogger(n).setLevel(lvl)


TRACE_LEVEL = TRACE


def hub_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in HUB_ENV_VARS}
    env["COLUMNS"] = "250"
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_COLOR"] = "1"
    env.pop("FORCE_COLOR", None)
    env.update(extra or {})
    return env


class HubSubprocess:
    """``python -m airi_core serve`` as an asyncio subprocess; stdout and stderr are drained
    continuously into lists so the pipes never fill. Stopped by its own PID only."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._pumps = [
            loop.create_task(self._pump(proc.stdout, self.stdout_lines)),
            loop.create_task(self._pump(proc.stderr, self.stderr_lines)),
        ]

    @classmethod
    async def start(cls, args: list[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> HubSubprocess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "airi_core", *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=hub_env(env),
            cwd=cwd,
        )
        return cls(proc)

    async def _pump(self, stream: asyncio.StreamReader | None, sink: list[str]) -> None:
        if stream is None:
            return
        while True:
            line = await stream.readline()
            if not line:
                break
            sink.append(line.decode("utf-8", "replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    @property
    def stdout(self) -> str:
        return "\n".join(self.stdout_lines)

    async def wait_stderr(self, needle: str, timeout: float = 15.0) -> str:
        """The first stderr line containing ``needle`` (fails on timeout or early exit)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.stderr_lines:
                if needle in line:
                    return line
            if self._pumps[1].done():
                raise AssertionError(f"hub exited (rc={self.proc.returncode}) before printing {needle!r}:\n{self.stderr}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} on stderr within {timeout}s:\n{self.stderr}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit status, or None if still running after ``timeout`` seconds."""
        try:
            rc = await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._pumps), 5)
        return rc

    async def stop(self) -> None:
        """Make sure the process is gone: SIGKILL by PID if it still runs (cleanup only)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 10)
        for t in self._pumps:
            if not t.done():
                t.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
