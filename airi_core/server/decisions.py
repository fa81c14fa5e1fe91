"""Values that hooks return to tell the core what to do.

Authentication and announce hooks answer like devpi's auth hook: ``None`` means "not mine, ask
the next plugin", :data:`ACCEPT` accepts, a :class:`Reject` refuses with a protocol error.
Route hooks return ``None`` (no decision, ask the next plugin) or one of :class:`Drop`,
:class:`Targets`, :class:`Broadcast`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .peer import Peer

__all__ = ["Accept", "ACCEPT", "Reject", "Drop", "Targets", "Broadcast", "BROADCAST", "RouteDecision"]


class Accept:
    """Accept the request (authentication, announce). Use the :data:`ACCEPT` singleton."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ACCEPT"


ACCEPT: Final = Accept()


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse: the sender gets an ``error`` event with ``message`` (use the exact protocol strings)."""

    message: str


@dataclass(frozen=True, slots=True)
class Drop:
    """Deliver the event to nobody. With ``error`` set, the sender gets that error."""

    reason: str = "dropped"
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Targets:
    """Deliver only to these peers (still only authenticated peers, never the sender, and only
    those that pass every filter added to the route context)."""

    peers: tuple[Peer, ...]

    @classmethod
    def of(cls, peers: Iterable[Peer]) -> Targets:
        return cls(tuple(peers))


class Broadcast:
    """Stop consulting route plugins and deliver to every candidate that passes the filters
    added so far. Use the :data:`BROADCAST` singleton."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "BROADCAST"


BROADCAST: Final = Broadcast()

RouteDecision = Drop | Targets | Broadcast
