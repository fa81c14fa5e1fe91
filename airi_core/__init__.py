"""AIRI hub core: a minimal event loop whose behaviours are pluggy plugins."""

from __future__ import annotations

__version__ = "0.1.0"

from .codec import Event  # noqa: E402
from .decisions import ACCEPT, BROADCAST, Accept, Broadcast, Drop, Reject, Targets  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .peer import Peer  # noqa: E402
from .routing import Announcement, RouteContext  # noqa: E402

__all__ = [
    "__version__",
    "hookimpl",
    "ACCEPT",
    "Accept",
    "Reject",
    "Drop",
    "Targets",
    "BROADCAST",
    "Broadcast",
    "Event",
    "Peer",
    "Announcement",
    "RouteContext",
]
