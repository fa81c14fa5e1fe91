"""``heartbeat``: pong replies and liveness (``[heartbeat]``).

Every ``transport:connection:heartbeat`` ping is answered with ``{kind: "pong", message, at}``
(``[heartbeat] message``, default 💛), before authentication too. A check runs every
``[heartbeat] check_interval_ms`` (default ``max(5000, read_timeout_ms / 5)``); a peer silent for
5 checks in a row is marked unhealthy (``heartbeat late``), for 10 it is closed and de-announced
with ``heartbeat expired``. Any frame from the peer counts as activity: the kernel records its
time in ``peer.last_seen`` and marks an unhealthy peer healthy again when one arrives.

The hub also pings: an authenticated peer silent for half the read timeout gets
``transport:connection:heartbeat {kind: "ping", message, at}``, at most once per half read
timeout of silence. Both SDK generations answer with a pong (the 2026-08 one only once ready),
which is activity; an unanswered ping is never held against a peer (only silence counts). It
keeps a busy hub from dropping 2026-08 clients that only ping when they hear nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airi_core import Event, Hub, Peer, hookimpl

MISSES_UNHEALTHY = 5
MISSES_DEAD = MISSES_UNHEALTHY * 2


class HeartbeatSettings(BaseModel):
    """``[heartbeat]``."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
    read_timeout_ms: int = Field(60000, gt=0)
    message: str = "\U0001f49b"
    check_interval_ms: int | None = Field(None, gt=0)

    @property
    def interval_ms(self) -> int:
        """The liveness check interval: configured, else ``max(5000, read_timeout_ms / 5)``."""
        if self.check_interval_ms is not None:
            return self.check_interval_ms
        return max(5000, self.read_timeout_ms // 5)

    def effective(self) -> dict[str, Any]:
        """Computed defaults, as ``airi config check`` shows them."""
        return {"check_interval_ms": self.interval_ms}


def check_liveness(hub: Hub, now: float, interval_s: float) -> None:
    """One liveness check over every peer (the timer calls this each interval): count the
    checks in a row that found the peer silent for longer than an interval."""
    for peer in hub.registry:
        if peer.origin is not None:
            continue  # another instance's connection: its own hub watches it
        missed = peer.state.get("heartbeat", 0) + 1 if now - peer.last_seen > interval_s else 0
        peer.state["heartbeat"] = missed
        if missed >= MISSES_DEAD:
            hub.disconnect(peer, "heartbeat expired", 1001)
        elif missed >= MISSES_UNHEALTHY and peer.healthy:
            hub.set_health(peer, False, "heartbeat late")


def ping_silent(hub: Hub, now: float, half_s: float, message: str) -> None:
    """Ping every authenticated peer silent for ``half_s`` that was not pinged in the last
    ``half_s`` (the ping timer calls this a few times per ``half_s``)."""
    for peer in hub.registry.authenticated():
        if peer.origin is not None:
            continue
        if now - peer.last_seen >= half_s and now - peer.state.get("heartbeat-ping", 0.0) >= half_s:
            peer.state["heartbeat-ping"] = now
            hub.send(
                peer,
                "transport:connection:heartbeat",
                {"kind": "ping", "message": message, "at": int(time.time() * 1000)},
            )


class Heartbeat:
    airi_config_section = "heartbeat"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self.settings = HeartbeatSettings()

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return HeartbeatSettings

    @hookimpl
    def airi_heartbeat(self, hub: Hub, peer: Peer, kind: str, event: Event | None) -> None:
        if event is not None and kind == "ping":
            hub.send(
                peer,
                "transport:connection:heartbeat",
                {"kind": "pong", "message": self.settings.message, "at": int(time.time() * 1000)},
                event.id,
            )

    @hookimpl
    def airi_startup(self, hub: Hub) -> None:
        self.settings = hub.plugin_config(self) or HeartbeatSettings()  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(hub))
        self._pinger = loop.create_task(self._ping(hub))

    @hookimpl
    async def airi_reload(self, hub: Hub, changed: frozenset[str]) -> None:
        """New message and timeouts; the liveness and ping timers restart when their periods changed."""
        if "heartbeat" not in changed:
            return
        before = (self.settings.interval_ms, self.settings.read_timeout_ms)
        self.settings = hub.plugin_config(self) or HeartbeatSettings()  # type: ignore[assignment]
        if (self.settings.interval_ms, self.settings.read_timeout_ms) != before and self._task is not None:
            await self.airi_shutdown()  # both timers restart with the new periods
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(hub))
            self._pinger = loop.create_task(self._ping(hub))

    @hookimpl
    async def airi_shutdown(self) -> None:
        for task in (self._task, self._pinger):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._pinger = None

    async def _ping(self, hub: Hub) -> None:
        half = self.settings.read_timeout_ms / 2000
        while True:
            await asyncio.sleep(max(half / 4, 0.05))
            try:
                ping_silent(hub, time.monotonic(), half, self.settings.message)
            except Exception:  # never let the timer die silently
                hub.log.exception("heartbeat ping failed")

    async def _run(self, hub: Hub) -> None:
        interval = self.settings.interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                check_liveness(hub, time.monotonic(), interval)
            except Exception:  # never let the timer die silently
                hub.log.exception("liveness check failed")
