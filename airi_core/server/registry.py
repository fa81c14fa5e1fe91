"""The peer and module registry: who is connected, who is authenticated, who announced what.

This is plain state with a deliberately narrow interface (add/remove peers, mark authenticated,
register/unregister a module, look modules up, list them). The *behaviour* around it (which events
announce, de-announce and sync produce) lives in the ``registry`` built-in plugin. A later plugin
that spans several hub instances through a broker only has to mirror these calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .peer import Peer

__all__ = ["PeerRegistry"]


class PeerRegistry:
    """Connected peers of one hub, in connection order, plus the announced-module index."""

    def __init__(self) -> None:
        self._peers: dict[str, Peer] = {}
        self._authenticated: dict[str, Peer] = {}
        self._modules: dict[tuple[str, int | None], Peer] = {}
        self._by_name: dict[str, dict[str, Peer]] = {}

    # -- peers -------------------------------------------------------------------------------
    def add(self, peer: Peer) -> None:
        self._peers[peer.id] = peer
        if peer.authenticated:
            self._authenticated[peer.id] = peer

    def remove(self, peer: Peer) -> bool:
        """Forget ``peer`` (and its module); False when it was not registered."""
        if self._peers.pop(peer.id, None) is None:
            return False
        self._authenticated.pop(peer.id, None)
        # keep peer.name/index/identity: disconnect hooks still need to say what left
        self._forget_module(peer)
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

    # -- modules -----------------------------------------------------------------------------
    def register_module(self, peer: Peer, name: str, index: int | None, identity: dict[str, Any]) -> bool:
        """Record that ``peer`` announced ``(name, index)`` with ``identity`` (replacing any
        earlier announcement of the same peer). False, and nothing recorded, when ``peer`` is no
        longer registered (it was dropped while its announce was being handled).

        Several peers may announce the same ``(name, index)``: all are listed, ``module:NAME``
        reaches all of them, and :meth:`find_module` answers with the one that announced it
        first and is still connected (the *holder*). A holder that re-announces the same
        ``(name, index)`` with another identity stays the holder."""
        if self._peers.get(peer.id) is not peer:
            return False
        if peer.announced and peer.name == name and peer.index == index:
            peer.set_identity(identity)  # same place in the announce order: still the holder
            return True
        self.unregister_module(peer)
        peer.name = name
        peer.index = index
        peer.announced = True
        peer.set_identity(identity)
        self._modules.setdefault((name, index), peer)  # an earlier announcer keeps holding it
        self._by_name.setdefault(name, {})[peer.id] = peer
        return True

    def unregister_module(self, peer: Peer) -> bool:
        """Forget ``peer``'s announcement (and its identity); False when it had none."""
        if not peer.announced:
            return False
        self._forget_module(peer)
        peer.announced = False
        peer.name = ""
        peer.index = None
        peer.set_identity(None)
        return True

    def _forget_module(self, peer: Peer) -> None:
        if not peer.announced:
            return
        group = self._by_name.get(peer.name)
        if group is not None:
            group.pop(peer.id, None)
            if not group:
                del self._by_name[peer.name]
        key = (peer.name, peer.index)
        if self._modules.get(key) is peer:
            del self._modules[key]
            # the next holder: the earliest remaining announcer of the same (name, index)
            for other in (group or {}).values():
                if other.index == peer.index:
                    self._modules[key] = other
                    break

    def holder(self, name: str, index: int | None) -> Peer | None:
        """The peer holding ``(name, index)``: the earliest still connected to announce it."""
        return self._modules.get((name, index))

    def find_module(self, name: str, index: int | None = None) -> Peer | None:
        """The module ``ui:configure`` addresses. With ``index``: the holder of ``(name, index)``.
        With ``index`` None: the earliest announcer of ``name`` still connected, when it
        announced without an index or is the only peer under ``name``; else None (ambiguous).
        A later announcer of a name never takes a module's configuration over while the
        earlier one is connected."""
        if index is not None:
            return self._modules.get((name, index))
        group = self._by_name.get(name)
        if not group:
            return None
        first = next(iter(group.values()))
        if first.index is None or len(group) == 1:
            return first
        return None

    def peers_named(self, name: str) -> list[Peer]:
        return list(self._by_name.get(name, {}).values())

    def modules(self) -> list[dict[str, Any]]:
        """Every announced module as ``{name, index?, identity}``, in connection order."""
        return [p.module_entry() for p in self._peers.values() if p.announced]
