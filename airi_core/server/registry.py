"""The peer and module registry: who is connected, who is authenticated, who announced what.

This is plain state with a deliberately narrow interface (add/remove peers, mark authenticated,
register modules, adopt identities, look modules up, list them). The *behaviour* around it
(which events announce, de-announce and sync produce) lives in the ``registry`` built-in plugin.
A later plugin that spans several hub instances through a broker only has to mirror these calls.

The registry is keyed per module, since a 2026-08 connection may hold many: at most one April
module per connection (``module:announce``: ``(name, index)``) and any number of extension
modules (``extension:module:announce``: one per ``identity.id``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..protocol.events import Encoded
from .peer import Module, Peer

__all__ = ["PeerRegistry", "Module"]


def _push(index: dict[str, dict[Peer, int]], key: str, peer: Peer) -> None:
    group = index.setdefault(key, {})
    group[peer] = group.get(peer, 0) + 1


def _pop(index: dict[str, dict[Peer, int]], key: str, peer: Peer) -> None:
    group = index.get(key)
    if group is None or peer not in group:
        return
    if group[peer] > 1:
        group[peer] -= 1
        return
    del group[peer]
    if not group:
        del index[key]


class PeerRegistry:
    """Connected peers of one hub, in connection order, plus the announced-module indexes."""

    def __init__(self) -> None:
        self._peers: dict[str, Peer] = {}
        self._authenticated: dict[str, Peer] = {}
        # April modules: the holder of each (name, index), and the announcers of each name
        self._holders: dict[tuple[str, int | None], Peer] = {}
        self._by_name: dict[str, dict[str, Peer]] = {}
        # extension modules by identity id and by name, in announce order (the last is the latest)
        self._ext_by_id: dict[str, list[Module]] = {}
        self._ext_by_name: dict[str, list[Module]] = {}
        self._ext_count = 0
        # routing: every name and id ``module:X`` reaches -> the peers holding it
        self._keys: dict[str, dict[Peer, int]] = {}
        self._listing: Encoded | None = None  # listing(), until the modules change

    # -- peers -------------------------------------------------------------------------------
    def add(self, peer: Peer) -> None:
        self._peers[peer.id] = peer
        if peer.authenticated:
            self._authenticated[peer.id] = peer

    def remove(self, peer: Peer) -> bool:
        """Forget ``peer`` (and its modules); False when it was not registered."""
        if self._peers.pop(peer.id, None) is None:
            return False
        self._authenticated.pop(peer.id, None)
        if peer.announced or peer.modules:
            self._listing = None
        # keep peer.name/index/identity/modules: disconnect hooks still need to say what left
        self._forget_module(peer)
        for module in peer.modules.values():
            self._unindex_extension(module)
        return True

    def get(self, peer_id: str) -> Peer | None:
        return self._peers.get(peer_id)

    def __contains__(self, peer: object) -> bool:
        return isinstance(peer, Peer) and self._peers.get(peer.id) is peer

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self._peers.values()))

    def __len__(self) -> int:
        return len(self._peers)

    def mark_authenticated(self, peer: Peer) -> None:
        peer.authenticated = True
        if peer.id in self._peers:
            self._authenticated[peer.id] = peer

    def authenticated(self) -> Iterator[Peer]:
        """Authenticated peers in connection order (a live view: do not mutate while iterating)."""
        return iter(self._authenticated.values())

    def authenticated_count(self) -> int:
        return len(self._authenticated)

    # -- identities ------------------------------------------------------------------------------
    def adopt(self, peer: Peer, identity: dict[str, Any] | None, source: dict[str, Any] | None = None,
              verified: bool = False) -> None:
        """Make ``identity`` ``peer``'s identity for routing, stamping ``source`` (default
        ``identity``) on what it sends; ``verified`` when it is an announced identity."""
        peer.set_identity(identity, source, verified)
        if peer.announced:
            self._listing = None

    def set_extension(self, peer: Peer, extension: dict[str, Any] | None) -> None:
        """Set ``peer``'s extension identity (its labels and id count for routing)."""
        peer.extension = extension
        peer.refresh()

    def add_alias(self, peer: Peer, alias: str) -> None:
        """``peer:alias`` reaches ``peer`` from now on (aliases are not unique)."""
        if alias not in peer.aliases:
            peer.aliases = peer.aliases | {alias}

    # -- April modules -------------------------------------------------------------------------
    def register_module(self, peer: Peer, name: str, index: int | None, identity: dict[str, Any]) -> bool:
        """Record that ``peer`` announced ``(name, index)`` with ``identity`` (replacing any
        earlier ``module:announce`` of the same peer). False, and nothing recorded, when ``peer``
        is no longer registered (it was dropped while its announce was being handled).

        Several peers may announce the same ``(name, index)``: all are listed, ``module:NAME``
        reaches all of them, and :meth:`find_module` answers with the one that announced it
        first and is still connected (the *holder*). A holder that re-announces the same
        ``(name, index)`` with another identity stays the holder."""
        if self._peers.get(peer.id) is not peer:
            return False
        self._listing = None
        if peer.announced and peer.name == name and peer.index == index:
            peer.set_identity(identity, verified=True)  # same place in the announce order: still the holder
            return True
        self.unregister_module(peer)
        peer.name = name
        peer.index = index
        peer.announced = True
        peer.generation = "april"
        peer.set_identity(identity, verified=True)
        self._holders.setdefault((name, index), peer)  # an earlier announcer keeps holding it
        self._by_name.setdefault(name, {})[peer.id] = peer
        _push(self._keys, name, peer)
        return True

    def unregister_module(self, peer: Peer) -> bool:
        """Forget ``peer``'s April announcement (and its identity); False when it had none."""
        if not peer.announced:
            return False
        self._listing = None
        self._forget_module(peer)
        peer.announced = False
        peer.name = ""
        peer.index = None
        peer.set_identity(None)
        return True

    def _forget_module(self, peer: Peer) -> None:
        if not peer.announced:
            return
        _pop(self._keys, peer.name, peer)
        group = self._by_name.get(peer.name)
        if group is not None:
            group.pop(peer.id, None)
            if not group:
                del self._by_name[peer.name]
        key = (peer.name, peer.index)
        if self._holders.get(key) is peer:
            del self._holders[key]
            # the next holder: the earliest remaining announcer of the same (name, index)
            for other in (group or {}).values():
                if other.index == peer.index:
                    self._holders[key] = other
                    break

    def holder(self, name: str, index: int | None) -> Peer | None:
        """The peer holding ``(name, index)``: the earliest still connected to announce it."""
        return self._holders.get((name, index))

    def find_module(self, name: str, index: int | None = None) -> Peer | None:
        """The April module ``ui:configure`` addresses. With ``index``: the holder of ``(name,
        index)``. With ``index`` None: the earliest announcer of ``name`` still connected, when
        it announced without an index or is the only peer under ``name``; else None (ambiguous).
        A later announcer of a name never takes a module's configuration over while the
        earlier one is connected."""
        if index is not None:
            return self._holders.get((name, index))
        group = self._by_name.get(name)
        if not group:
            return None
        first = next(iter(group.values()))
        if first.index is None or len(group) == 1:
            return first
        return None

    # -- extension modules ---------------------------------------------------------------------
    def register_extension_module(
        self, peer: Peer, name: str, identity: dict[str, Any]
    ) -> tuple[Module, Module | None] | None:
        """Record that ``peer`` announced the extension module ``identity`` under ``name``:
        ``(module, replaced)``, where ``replaced`` is the module the peer held under the same
        identity id before (kept in the same place of the listing), or None when ``peer`` is no
        longer registered. The announcer becomes the latest holder of that id."""
        if self._peers.get(peer.id) is not peer:
            return None
        self._listing = None
        module = Module(peer, "extension", name, None, identity)
        old = peer.modules.get(module.id)
        if old is not None:
            self._unindex_extension(old)
        peer.modules[module.id] = module  # a replacement keeps its place (dict order)
        self._ext_by_id.setdefault(module.id, []).append(module)
        self._ext_by_name.setdefault(name, []).append(module)
        self._ext_count += 1
        _push(self._keys, name, peer)
        _push(self._keys, module.id, peer)
        peer.refresh()
        return module, old

    def _unindex_extension(self, module: Module) -> None:
        for index, key in ((self._ext_by_id, module.id), (self._ext_by_name, module.name)):
            group = index.get(key)
            if group is not None and module in group:
                group.remove(module)
                if not group:
                    del index[key]
        self._ext_count -= 1
        _pop(self._keys, module.name, module.peer)
        _pop(self._keys, module.id, module.peer)

    def find_extension_module(self, module_id: str, name: str | None = None) -> Module | None:
        """The extension module ``module_id`` (named ``name`` when given) announced last by a
        connection still here (a reconnecting client's new connection, not its old one)."""
        for module in reversed(self._ext_by_id.get(module_id, ())):
            if name is None or module.name == name:
                return module
        return None

    def find_named(self, name: str) -> Peer | None:
        """``ui:configure`` by name alone: the one module of either family with that name. April
        modules alone follow :meth:`find_module`; a name held by several modules (an extension
        module among them) finds nothing."""
        extensions = self._ext_by_name.get(name, ())
        if not extensions:
            return self.find_module(name)
        if len(extensions) == 1 and name not in self._by_name:
            return extensions[0].peer
        return None

    def extension_module_count(self) -> int:
        return self._ext_count

    # -- listings ------------------------------------------------------------------------------
    def peers_named(self, name: str) -> list[Peer]:
        """The peers ``module:NAME`` reaches: an April module named ``name``, or an extension
        module whose name or identity id is ``name``."""
        return list(self._keys.get(name, ()))

    def modules(self) -> list[dict[str, Any]]:
        """Every announced module as ``registry:modules:sync`` lists it: the April modules
        ``{name, index?, identity}`` in connection order, then the extension modules ``{name,
        identity}`` in connection order, each connection's in first-registration order."""
        peers = self._peers.values()
        listed = [p.module_entry() for p in peers if p.announced]
        if self._ext_count:
            listed.extend(m.entry for p in peers if p.modules for m in p.modules.values())
        return listed

    def listing(self) -> Encoded:
        """:meth:`modules` encoded (``hub.send(peer, "registry:modules:sync", {"modules":
        registry.listing()})``), built from each module's entry encoded once and kept until the
        modules change: a storm of N authentications costs N joins, not N^2 entry encodings."""
        listing = self._listing
        if listing is None:
            peers = self._peers.values()
            parts = [p.entry_text() for p in peers if p.announced]
            if self._ext_count:
                parts.extend(m.entry_text() for p in peers if p.modules for m in p.modules.values())
            listing = self._listing = Encoded(text=b"[" + b",".join(parts) + b"]")
        return listing
