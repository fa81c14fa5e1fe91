"""The client's connection states and the record of one transition."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["ClientState", "StateChange"]


class ClientState(str, Enum):
    """``connecting -> authenticating -> announcing -> ready``; ``reconnecting`` after a lost
    connection; ``closed`` after :meth:`Client.close`; ``failed`` when retrying cannot help.
    ``closed`` and ``failed`` are final."""

    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    ANNOUNCING = "announcing"
    READY = "ready"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        return self in (ClientState.CLOSED, ClientState.FAILED)


@dataclass(frozen=True)
class StateChange:
    """One state transition. ``attempt`` counts reconnect attempts since the client was last
    ready (0 until a connection is lost); ``error`` is why the previous state ended (a lost connection, the
    failure); ``delay`` is the backoff before the next attempt (``reconnecting`` only: that
    state is reported once per scheduled attempt)."""

    state: ClientState
    previous: ClientState | None
    attempt: int = 0
    error: BaseException | None = None
    delay: float | None = None
    at: float = field(default_factory=time.time)
