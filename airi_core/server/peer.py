"""A connected peer as plugins see it: identity, state and a place for per-peer plugin data.

The connection behind a peer (socket, outbox, backpressure, rate limit) belongs to the
transport (:mod:`airi_core.server.transport`) and is not part of the plugin API.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from ..protocol.events import canonical, dumps_bytes
from ..protocol.identity import (
    devtools_label,
    extension_id_of,
    extension_labels_view,
    instance_id_of,
    plugin_id_of,
    sync_identity,
)

if TYPE_CHECKING:
    from .transport import Connection

__all__ = ["Peer", "Module"]

_ids = itertools.count(1)


class Module:
    """One announced module: a registry entry. An April connection holds at most one
    (``module:announce``, family ``"module"``: ``name``, ``index``, ``identity``); a 2026-08
    connection any number (``extension:module:announce``, family ``"extension"``: ``name`` and
    an ``ExtensionModuleIdentity``, keyed by ``identity.id``; ``index`` is None).

    ``entry`` is what ``registry:modules:sync`` lists, ``notice`` what the family's
    notifications (de-announced, health) carry; ``key`` is the canonical JSON of ``identity``."""

    __slots__ = ("peer", "family", "name", "index", "identity", "key", "entry", "notice", "id", "_entry_text")

    def __init__(self, peer: Peer, family: str, name: str, index: int | None, identity: dict[str, Any]) -> None:
        self.peer = peer
        self.family = family
        self.name = name
        self.index = index
        self.identity = identity
        self.id = instance_id_of(identity)
        self.key = bytes(memoryview(canonical(identity)))
        notice: dict[str, Any] = {"name": name}
        if family == "module":
            if index is not None:
                notice["index"] = index
            notice["identity"] = identity
            self.entry = notice
        else:
            notice["identity"] = identity
            self.entry = {"name": name, "identity": sync_identity(identity)}
            if peer.origin is not None:
                self.entry["instance"] = peer.origin
        self.notice = notice
        self._entry_text: bytes | None = None

    def entry_text(self) -> bytes:
        """``entry`` as compact JSON (encoded once: a module's entry never changes)."""
        if self._entry_text is None:
            self._entry_text = bytes(memoryview(dumps_bytes(self.entry)))
        return self._entry_text

    @property
    def extension(self) -> bool:
        return self.family == "extension"

    def __repr__(self) -> str:
        return f"<Module {self.family} {self.name!r} {self.id!r} of {self.peer.id}>"


class Peer:
    """One connected peer (a connection).

    What plugins read (change them only through the hub's API or ``hub.registry``):

    - ``id``: connection id, unique in this hub (``peer:ID`` destinations); ``remote``: address;
      ``aliases``: the ids it claimed with ``peer:authenticate`` (``peer:ID`` reaches them too;
      not unique across connections);
    - ``authenticated``; ``generation``: ``"april"``, or ``"head"`` once it sent an
      ``extension:*``/``peer:*`` event without having used ``module:announce`` (decides what
      ``data.destinations: []`` and a frame without ``data`` mean);
    - the April module: ``announced`` (it used ``module:announce``), ``name`` / ``index`` (``""``
      / None otherwise), :meth:`module_entry`; the 2026-08 modules: ``modules`` (identity id ->
      :class:`Module`, in first-registration order); ``extension``: its extension identity
      (``extension:authenticate`` / ``extension:announce`` / each extension module announce);
    - ``identity``: who it is for routing: the identity it announced with ``module:announce``;
      else the extension module its latest frame's ``metadata.source`` named by id; else, before
      any announce, an extension-module-shaped ``metadata.source`` it sent (never an April-shaped
      one: an unannounced April peer has no identity); ``verified`` tells whether it came from an
      announce (only then can it be devtools). What routing derives from it: ``labels``,
      ``plugin_id`` (the April ``plugin.id``), ``extension_id``, ``instance_id`` (``identity.id``),
      ``module_keys`` (every extension module's name and id). ``source`` is the
      ``metadata.source`` stamped on what it sends (``identity`` for an April module);
    - ``healthy`` (see :meth:`Hub.set_health`); ``last_seen``: ``time.monotonic()`` of the
      peer's last frame; ``closed``: the hub has detached it and nothing more reaches it;
      ``origin``: None, or the instance that holds the connection when this is a mirror of
      another instance's peer (a cluster).

    ``state`` is a dict where plugins keep per-peer data under their own name
    (``peer.state["my-plugin"] = ...``); it lives as long as the connection.
    """

    __slots__ = (
        "id",
        "remote",
        "authenticated",
        "generation",
        "announced",
        "name",
        "index",
        "modules",
        "extension",
        "aliases",
        "identity",
        "source",
        "verified",
        "devtools",
        "labels",
        "plugin_id",
        "extension_id",
        "instance_id",
        "module_keys",
        "identity_key",
        "healthy",
        "last_seen",
        "closed",
        "state",
        "origin",
        "_entry_text",
        "_conn",
        "__weakref__",
    )

    def __init__(self, remote: str = "", conn: Connection | None = None) -> None:
        self.id = f"p{next(_ids)}"
        self.remote = remote
        self.authenticated = False
        self.generation = "april"
        self.announced = False
        self.name = ""
        self.index: int | None = None
        self.modules: dict[str, Module] = {}
        self.extension: dict[str, Any] | None = None
        self.aliases: frozenset[str] = frozenset()
        self.identity: dict[str, Any] | None = None
        self.source: dict[str, Any] | None = None
        self.verified = False
        self.devtools = False
        self.labels: dict[str, Any] = {}
        self.plugin_id = ""
        self.extension_id = ""
        self.instance_id = ""
        self.module_keys: frozenset[str] = frozenset()
        #: canonical JSON bytes of ``source`` (what a frame's metadata.source is compared with)
        self.identity_key = b""
        self.healthy = True
        self.last_seen = 0.0
        self.closed = False
        self.state: dict[str, Any] = {}
        #: None for a connection of this hub; the instance id of the hub that holds it for a
        #: mirror of another instance's connection (a cluster plugin's, ``Hub.add_remote_peer``)
        self.origin: str | None = None
        self._entry_text: bytes | None = None  # module_entry() as JSON, until the module changes
        self._conn = conn  # the transport's side of this peer; None for a peer without a socket

    def set_identity(
        self, identity: dict[str, Any] | None, source: dict[str, Any] | None = None, verified: bool = False
    ) -> None:
        """Adopt ``identity`` (stamping ``source``, default ``identity``, on what the peer sends)
        and refresh what routing derives from it. Only the registry calls this."""
        self.identity = identity
        self._entry_text = None
        self.source = source if source is not None else identity
        self.verified = verified and identity is not None
        # a copy: orjson's output keeps a 4 KiB buffer, which would cost every connection 4 KiB
        self.identity_key = bytes(memoryview(canonical(self.source))) if self.source is not None else b""
        self.refresh()

    def refresh(self) -> None:
        """Recompute the routing view (labels, ids, module keys) from ``identity``,
        ``extension`` and ``modules``."""
        identity = self.identity
        self.labels = extension_labels_view(self.extension, identity)
        self.plugin_id = plugin_id_of(identity)
        self.extension_id = extension_id_of(identity) or extension_id_of({"extension": self.extension})
        self.instance_id = instance_id_of(identity)
        self.devtools = self.verified and devtools_label(identity)
        if self.modules:
            keys = set(self.modules)
            keys.update(m.name for m in self.modules.values())
            self.module_keys = frozenset(keys)
        else:
            self.module_keys = frozenset()

    @property
    def display(self) -> str:
        """A short human name for logs: ``name[index]``, the first extension module's name, or
        the connection id."""
        if self.name:
            return self.name if self.index is None else f"{self.name}[{self.index}]"
        if self.modules:
            first = next(iter(self.modules.values())).name
            return first if len(self.modules) == 1 else f"{first} (+{len(self.modules) - 1})"
        return self.id

    @property
    def describe(self) -> str:
        """Connection id plus module name when it has one: ``p3 (stage[0])``."""
        return f"{self.id} ({self.display})" if self.name or self.modules else self.id

    def module_entry(self) -> dict[str, Any]:
        """The April module as registry events carry it: ``{name, index?, identity}`` (``index``
        omitted when unset)."""
        entry: dict[str, Any] = {"name": self.name}
        if self.index is not None:
            entry["index"] = self.index
        entry["identity"] = self.identity
        if self.origin is not None:
            entry["instance"] = self.origin  # a module on another instance of a cluster
        return entry

    def entry_text(self) -> bytes:
        """:meth:`module_entry` as compact JSON, encoded once until the announcement changes."""
        if self._entry_text is None:
            self._entry_text = bytes(memoryview(dumps_bytes(self.module_entry())))
        return self._entry_text

    def __repr__(self) -> str:
        return f"<Peer {self.id} {self.display!r} auth={self.authenticated}>"
