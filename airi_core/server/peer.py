"""A connected peer: its session state as the hub sees it."""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

from ..protocol.identity import instance_id_of, labels_of, plugin_id_of

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

__all__ = ["Peer"]

_ids = itertools.count(1)


class Peer:
    """One WebSocket connection.

    Attributes plugins read: ``id`` (connection id, used by ``peer:ID`` destinations),
    ``authenticated``, ``name``/``index`` (announced module, ``name`` is ``""`` before announcing),
    ``identity`` (``ModuleIdentity`` dict or None), ``labels``, ``plugin_id``, ``instance_id``,
    ``healthy``, ``remote`` (address string). ``state`` is a dict where plugins keep per-peer
    data under their own name.
    """

    __slots__ = (
        "id",
        "conn",
        "authenticated",
        "announced",
        "name",
        "index",
        "identity",
        "labels",
        "plugin_id",
        "instance_id",
        "healthy",
        "last_seen",
        "missed_checks",
        "remote",
        "closed",
        "state",
        "progress_at",
        "sent_bytes",
        "drained_mark",
        "pressing",
        "outbox",
        "tokens",
        "tokens_at",
        "rate_error_at",
        "timer",
        "__weakref__",
    )

    def __init__(self, conn: ServerConnection | None, remote: str = "") -> None:
        self.id = f"p{next(_ids)}"
        self.conn = conn
        self.authenticated = False
        self.announced = False
        self.name = ""
        self.index: int | None = None
        self.identity: dict[str, Any] | None = None
        self.labels: dict[str, Any] = {}
        self.plugin_id = ""
        self.instance_id = ""
        self.healthy = True
        self.last_seen = time.monotonic()
        self.missed_checks = 0
        self.remote = remote
        self.closed = False
        self.state: dict[str, Any] = {}
        # outbound backpressure (see Hub._throttle): bytes queued so far, bytes known drained,
        # and when the peer last made progress draining its backlog
        self.sent_bytes = 0
        self.drained_mark = 0
        self.progress_at = 0.0
        self.pressing = False  # an event this peer sent reached a peer that is behind
        self.outbox: list[bytes] = []  # frames queued for the next flush (see Hub._write)
        # inbound rate limit (token bucket)
        self.tokens = 0.0
        self.tokens_at = 0.0
        self.rate_error_at = 0.0
        self.timer: Any = None  # the authentication deadline, when one runs

    def set_identity(self, identity: dict[str, Any] | None) -> None:
        """Adopt ``identity`` and refresh the derived fields used by routing."""
        self.identity = identity
        self.labels = labels_of(identity)
        self.plugin_id = plugin_id_of(identity)
        self.instance_id = instance_id_of(identity)

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
