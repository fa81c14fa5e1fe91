"""``heartbeat``: pong replies and liveness.

Every ``transport:connection:heartbeat`` ping is answered with ``{kind: "pong", message, at}``
(``[heartbeat] message``, default 💛), before authentication too. A check runs every
``[heartbeat] check_interval_ms`` (default ``max(5000, read_timeout_ms / 5)``); a peer silent for
5 checks is marked unhealthy (``heartbeat late``), for 10 checks it is closed and de-announced
with ``heartbeat expired``. Any frame from the peer counts as activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from airi_core import Event, Peer, hookimpl
from airi_core.server.kernel import Hub

MISSES_UNHEALTHY = 5
MISSES_DEAD = MISSES_UNHEALTHY * 2


def check_liveness(hub: Hub, now: float, interval_s: float) -> None:
    """One liveness check over every peer (the timer calls this each interval)."""
    for peer in hub.registry:
        if now - peer.last_seen > interval_s:
            peer.missed_checks += 1
        else:
            peer.missed_checks = 0
        if peer.missed_checks >= MISSES_DEAD:
            hub.disconnect(peer, "heartbeat expired", 1001)
        elif peer.missed_checks >= MISSES_UNHEALTHY and peer.healthy:
            hub.set_health(peer, False, "heartbeat late")


class Heartbeat:
    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    @hookimpl
    def airi_heartbeat(self, hub: Hub, peer: Peer, kind: str, event: Event | None) -> None:
        if event is not None and kind == "ping":
            hub.send(
                peer,
                "transport:connection:heartbeat",
                {"kind": "pong", "message": hub.settings.heartbeat.message, "at": int(time.time() * 1000)},
                event.id,
            )

    @hookimpl
    def airi_startup(self, hub: Hub) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(hub))

    @hookimpl
    async def airi_shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, hub: Hub) -> None:
        interval = hub.settings.heartbeat.interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                check_liveness(hub, time.monotonic(), interval)
            except Exception:  # never let the timer die silently
                hub.log.exception("liveness check failed")
