"""Small helpers shared by the hardening tests (test_limits.py, test_faults.py, test_hardening.py).

Everything here is bounded in time: every wait takes a timeout and fails loudly when it runs out.
Ports, environments and hub subprocesses come from ``_hubproc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from airi_core.server.logs import TRACE
from airi_core.testing import HubClient


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
