"""AIRI hub core: a minimal kernel whose behaviours are pluggy plugins.

This top-level package is the plugin API: everything a plugin needs is importable from here
(the hook marker, the decisions hooks return, the objects hooks receive). The layers beneath:
:mod:`airi_core.protocol` (the wire protocol, shared), :mod:`airi_core.server` (kernel,
transport, plugin machinery, config) and :mod:`airi_core.client` (the Python client SDK).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .protocol import errors  # noqa: E402
from .protocol.events import Event  # noqa: E402
from .server.decisions import ACCEPT, BROADCAST, Accept, Broadcast, Drop, Reject, RouteDecision, Targets  # noqa: E402
from .server.hookspecs import hookimpl  # noqa: E402
from .server.kernel import Hub  # noqa: E402
from .server.peer import Module, Peer  # noqa: E402
from .server.routing import Announcement, RouteContext  # noqa: E402

__all__ = [
    "__version__",
    "hookimpl",
    "errors",
    "Hub",
    "Peer",
    "Module",
    "Event",
    "Announcement",
    "RouteContext",
    "ACCEPT",
    "Accept",
    "Reject",
    "Drop",
    "Targets",
    "BROADCAST",
    "Broadcast",
    "RouteDecision",
]
