"""A connected peer as plugins see it: identity, state and a place for per-peer plugin data.

The connection behind a peer (socket, outbox, backpressure, rate limit) belongs to the
transport (:mod:`airi_core.server.transport`) and is not part of the plugin API.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from ..protocol.events import canonical
from ..protocol.identity import instance_id_of, labels_of, plugin_id_of

if TYPE_CHECKING:
    from .transport import Connection

__all__ = ["Peer"]

_ids = itertools.count(1)


class Peer:
    """One connected peer.

    What plugins read (change them only through the hub's API):

    - ``id``: connection id, unique in this hub (``peer:ID`` destinations); ``remote``: address;
    - ``authenticated``; ``announced``; ``name`` / ``index``: the announced module (``name`` is
      ``""`` before announcing, ``index`` None when absent);
    - ``identity``: the announced ``ModuleIdentity`` object (None before announcing: what a
      frame's ``metadata.source`` claims never becomes a peer's identity), and what routing
      derives from it: ``labels``, ``plugin_id``, ``instance_id`` (empty before announcing, so
      an unannounced peer matches no ``plugin:``/``instance:``/``label:`` destination, no policy
      allow-list and never counts as devtools; it still receives broadcasts and ``peer:ID``);
    - ``healthy`` (see :meth:`Hub.set_health`); ``last_seen``: ``time.monotonic()`` of the
      peer's last frame (the kernel records it for every frame); ``closed``: the hub has
      detached it and nothing more reaches it.

    ``state`` is a dict where plugins keep per-peer data under their own name
    (``peer.state["my-plugin"] = ...``); it lives as long as the connection.
    """

    __slots__ = (
        "id",
        "remote",
        "authenticated",
        "announced",
        "name",
        "index",
        "identity",
        "labels",
        "plugin_id",
        "instance_id",
        "identity_key",
        "healthy",
        "last_seen",
        "closed",
        "state",
        "_conn",
        "__weakref__",
    )

    def __init__(self, remote: str = "", conn: Connection | None = None) -> None:
        self.id = f"p{next(_ids)}"
        self.remote = remote
        self.authenticated = False
        self.announced = False
        self.name = ""
        self.index: int | None = None
        self.identity: dict[str, Any] | None = None
        self.labels: dict[str, Any] = {}
        self.plugin_id = ""
        self.instance_id = ""
        #: canonical JSON bytes of ``identity`` (what a frame's metadata.source is compared with)
        self.identity_key = b""
        self.healthy = True
        self.last_seen = 0.0
        self.closed = False
        self.state: dict[str, Any] = {}
        self._conn = conn  # the transport's side of this peer; None for a peer without a socket

    def set_identity(self, identity: dict[str, Any] | None) -> None:
        """Adopt ``identity`` and refresh the fields routing derives from it (only the registry
        calls this, when a module announces or leaves; a plugin announces through the registry)."""
        self.identity = identity
        self.labels = labels_of(identity)
        self.plugin_id = plugin_id_of(identity)
        self.instance_id = instance_id_of(identity)
        # a copy: orjson's output keeps a 4 KiB buffer, which would cost every connection 4 KiB
        self.identity_key = bytes(memoryview(canonical(identity))) if identity is not None else b""

    @property
    def display(self) -> str:
        """A short human name for logs: ``name[index]`` or the connection id."""
        if self.name:
            return self.name if self.index is None else f"{self.name}[{self.index}]"
        return self.id

    @property
    def describe(self) -> str:
        """Connection id plus module name when it has one: ``p3 (stage[0])``."""
        return f"{self.id} ({self.display})" if self.name else self.id

    def module_entry(self) -> dict[str, Any]:
        """``{name, index?, identity}`` as registry events carry it (``index`` omitted when unset)."""
        entry: dict[str, Any] = {"name": self.name}
        if self.index is not None:
            entry["index"] = self.index
        entry["identity"] = self.identity
        return entry

    def __repr__(self) -> str:
        return f"<Peer {self.id} {self.display!r} auth={self.authenticated}>"
