"""Objects the kernel hands to announce and route hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..protocol.events import Event
    from .kernel import Hub
    from .peer import Peer

__all__ = ["Announcement", "RouteContext", "PeerFilter"]

PeerFilter = Callable[["Peer"], bool]


@dataclass(slots=True)
class Announcement:
    """A module announce that passed the protocol checks: ``name``, ``index`` (None when
    absent), ``identity``, ``possible_events`` and the raw ``data``. ``family`` is ``"module"``
    for an April ``module:announce`` (``identity`` a ``ModuleIdentity``, normalised when the
    published SDK 0.8.4 sent its default ``{plugin, instanceId}``) and ``"extension"`` for a
    2026-08 ``extension:module:announce`` (``identity`` an ``ExtensionModuleIdentity``, no
    index)."""

    name: str
    index: int | None
    identity: dict[str, Any]
    possible_events: list[Any] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    family: str = "module"

    @property
    def event_type(self) -> str:
        """The announce event's type: ``module:announce`` or ``extension:module:announce``."""
        return "module:announce" if self.family == "module" else "extension:module:announce"


class RouteContext:
    """One routing decision in the making, passed to every ``airi_route`` implementation.

    - ``sender`` (the authenticated :class:`Peer` that sent it) and ``event`` (the
      :class:`Event`): do not reassign them.
    - :meth:`add_filter` / :meth:`narrow`: restrict who may receive the event. Every filter
      applies to every decision (``BROADCAST``, ``Targets``, no decision): a plugin that
      redirects with ``Targets`` cannot reach a peer another plugin filtered out. ``filters``
      starts with the hub's standing filters (:meth:`Hub.add_route_filter`, e.g. the policy).
    - ``bypass``: set by the plugin that grants the protocol's devtools bypass (the built-in
      ``bypass``); the event then goes to every authenticated peer but the sender, ignoring
      filters and the decision (except ``Drop``). Nothing else should set it.
    """

    __slots__ = ("hub", "sender", "event", "filters", "pool", "bypass")

    def __init__(self, hub: Hub, sender: Peer, event: Event, filters: Iterable[PeerFilter] = ()) -> None:
        self.hub = hub
        self.sender = sender
        self.event = event
        self.filters: list[PeerFilter] = list(filters)
        #: When set, only these peers can receive the event (see :meth:`narrow`).
        self.pool: dict[Peer, None] | None = None
        self.bypass = False

    def add_filter(self, predicate: PeerFilter) -> None:
        """Only peers for which ``predicate(peer)`` is true may receive this event."""
        self.filters.append(predicate)

    def narrow(self, peers: Iterable[Peer]) -> None:
        """Only these peers can receive the event (intersected with any earlier narrowing).

        A shortcut for filters that an index can answer (e.g. ``module:NAME`` through the
        registry): the kernel then looks at these peers only instead of testing every peer."""
        if self.pool is None:
            self.pool = dict.fromkeys(peers)
        else:
            keep = set(peers)
            self.pool = {p: None for p in self.pool if p in keep}

    def accepts(self, peer: Peer) -> bool:
        """Whether ``peer`` is in the pool (if narrowed) and passes every filter added so far."""
        if self.pool is not None and peer not in self.pool:
            return False
        for f in self.filters:
            if not f(peer):
                return False
        return True

    def candidates(self) -> list[Peer]:
        """Authenticated peers other than the sender that pass every filter added so far."""
        sender = self.sender
        filters = self.filters
        pool = self.pool
        if pool is not None:
            # a detached peer is marked closed at once, so this also means "still registered"
            source: Iterable[Peer] = [p for p in pool if p.authenticated and not p.closed]
        else:
            source = self.hub.registry.authenticated()
        if not filters:
            return [p for p in source if p is not sender]
        if len(filters) == 1:
            only = filters[0]
            return [p for p in source if p is not sender and only(p)]
        return [p for p in source if p is not sender and all(f(p) for f in filters)]
