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
    def register_module(self, peer: Peer, name: str, index: int | None, identity: dict[str, Any]) -> None:
        """Record that ``peer`` announced ``(name, index)`` with ``identity`` (replacing any
        earlier announcement of the same peer)."""
        self.unregister_module(peer)
        peer.name = name
        peer.index = index
        peer.announced = True
        peer.set_identity(identity)
        self._modules[(name, index)] = peer
        self._by_name.setdefault(name, {})[peer.id] = peer

    def unregister_module(self, peer: Peer) -> bool:
        """Forget ``peer``'s announcement; False when it had none."""
        if not peer.announced:
            return False
        self._forget_module(peer)
        peer.announced = False
        peer.name = ""
        peer.index = None
        return True

    def _forget_module(self, peer: Peer) -> None:
        if not peer.announced:
            return
        key = (peer.name, peer.index)
        if self._modules.get(key) is peer:
            del self._modules[key]
            # another peer may still hold the same (name, index): keep it findable
            for other in self._by_name.get(peer.name, {}).values():
                if other is not peer and other.index == peer.index:
                    self._modules[key] = other
                    break
        group = self._by_name.get(peer.name)
        if group is not None:
            group.pop(peer.id, None)
            if not group:
                del self._by_name[peer.name]

    def find_module(self, name: str, index: int | None = None) -> Peer | None:
        """The peer announced as ``(name, index)``. With ``index`` None: the peer announced with
        no index, else the only peer announced under ``name`` whatever its index."""
        found = self._modules.get((name, index))
        if found is not None or index is not None:
            return found
        group = self._by_name.get(name)
        if group and len(group) == 1:
            return next(iter(group.values()))
        return None

    def peers_named(self, name: str) -> list[Peer]:
        return list(self._by_name.get(name, {}).values())

    def modules(self) -> list[dict[str, Any]]:
        """Every announced module as ``{name, index?, identity}``, in connection order."""
        return [p.module_entry() for p in self._peers.values() if p.announced]
