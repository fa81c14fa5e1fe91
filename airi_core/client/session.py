"""One WebSocket connection to the hub and what the client learnt on it."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .errors import ConnectionLostError
from .outgoing import encode

__all__ = ["Session", "close_info"]


class Session:
    """One WebSocket connection and what happened on it. Everything tied to a connection
    (consumer registrations, session-scoped waiters) ends with it."""

    def __init__(self, ws: ClientConnection, wrap: bool) -> None:
        self.ws = ws
        self.wrap = wrap
        self.last_rx = asyncio.get_running_loop().time()
        self.ready = False
        self.wake = asyncio.Event()  # set when the hub asks to re-authenticate or sent a terminal error
        self.reauth_requested = False
        self.terminal: BaseException | None = None
        self.auth_seen = asyncio.Event()  # a module:authenticated {authenticated: true} arrived
        self.synced = asyncio.Event()  # a registry:modules:sync arrived
        self.consumers: set[tuple[str, str]] = set()
        self.ended = False
        self.dead_reason: str | None = None

    async def send(self, event: dict[str, Any]) -> None:
        """Send one event, superjson-wrapped (``{"json": event}``) if the session wraps."""
        text = encode({"json": event} if self.wrap else event)
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            raise ConnectionLostError(f"connection lost while sending '{event.get('type')}'", *close_info(exc)) from exc

    def lost_error(self) -> ConnectionLostError:
        """Why this connection is gone, as the error to give whoever waited on it."""
        if self.dead_reason is not None:
            return ConnectionLostError(self.dead_reason)
        code = self.ws.close_code
        reason = self.ws.close_reason
        detail = f" (code {code}{' ' + reason if reason else ''})" if code is not None else ""
        return ConnectionLostError(f"connection lost{detail}", code, reason)


def close_info(exc: ConnectionClosed) -> tuple[int | None, str | None]:
    """(code, reason) of the close frame received (or else sent), if any."""
    frame = exc.rcvd or exc.sent
    return (frame.code, frame.reason) if frame is not None else (None, None)
