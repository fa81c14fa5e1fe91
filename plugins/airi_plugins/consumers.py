"""``consumers``: one-of-N consumer delivery.

Peers register with ``module:consumer:register {event, mode?, group?, priority?}`` and leave with
``module:consumer:unregister {event, mode?, group?}`` (authenticated peers only; mode defaults to
``consumer-group`` when a group is given, else ``consumer``; ``consumer`` mode always uses the
group ``default``, as does a group-less ``consumer-group``).

An event whose effective delivery (the protocol default for its type, overridden key by key by
``route.delivery``) has mode ``consumer``/``consumer-group`` goes to exactly one registered
consumer of that type and group: never the sender, only authenticated and healthy peers that
pass the route filters (policy, destinations), chosen by ``selection``: ``first``/``priority``
(highest priority, then earliest registration), ``round-robin``, or ``sticky`` with
``stickyKey``. None available: dropped, and with ``required`` the sender gets ``no consumer
registered for requested event delivery``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from airi_core import ACCEPT, Accept, Drop, Event, Hub, Peer, Reject, RouteContext, Targets, errors, hookimpl

#: Protocol default deliveries by event type.
DEFAULT_DELIVERY: dict[str, dict[str, Any]] = {
    t: {"mode": "consumer-group", "group": "chat-ingestion", "selection": "first"}
    for t in ("input:text", "input:text:voice", "input:voice")
}
CONSUMER_MODES = ("consumer", "consumer-group")
DEFAULT_GROUP = "default"

Key = tuple[str, str]


@dataclass(slots=True)
class Registration:
    peer: Peer
    priority: float
    seq: int


def normalize_mode(mode: Any, group: Any) -> str:
    if mode in CONSUMER_MODES:
        return mode  # type: ignore[no-any-return]
    return "consumer-group" if isinstance(group, str) and group else "consumer"


def normalize_group(mode: str, group: Any) -> str:
    if mode == "consumer":
        return DEFAULT_GROUP
    return group if isinstance(group, str) and group else DEFAULT_GROUP


def normalize_priority(priority: Any) -> float:
    if isinstance(priority, bool) or not isinstance(priority, (int, float)):
        return 0
    return priority if math.isfinite(priority) else 0


def resolve_delivery(event: Event) -> dict[str, Any] | None:
    """The protocol default for the event type overridden key by key by ``route.delivery``."""
    default = DEFAULT_DELIVERY.get(event.type)
    route = event.route
    override = route.get("delivery") if route is not None else None
    if not isinstance(override, dict):
        override = None
    if default is None and override is None:
        return None
    return {**(default or {}), **(override or {})}


class ConsumerDelivery:
    def __init__(self) -> None:
        self.registrations: dict[Key, dict[str, Registration]] = {}
        self._by_peer: dict[str, set[Key]] = {}
        self._cursor: dict[Key, int] = {}
        self._sticky: dict[tuple[str, str, str], str] = {}
        self._seq = itertools.count()

    # -- registration ------------------------------------------------------------------------------
    def register(self, peer: Peer, event: str, mode: str, group: Any, priority: Any) -> None:
        key = (event, normalize_group(mode, group))
        regs = self.registrations.setdefault(key, {})
        if peer.id not in regs:
            self._cursor.pop(key, None)
        regs[peer.id] = Registration(peer, normalize_priority(priority), next(self._seq))
        self._by_peer.setdefault(peer.id, set()).add(key)

    def unregister(self, peer: Peer, key: Key) -> None:
        regs = self.registrations.get(key)
        if regs is None or regs.pop(peer.id, None) is None:
            return
        self._cursor.pop(key, None)
        if not regs:
            del self.registrations[key]
        keys = self._by_peer.get(peer.id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_peer[peer.id]
        for sk in [sk for sk, pid in self._sticky.items() if pid == peer.id and sk[:2] == key]:
            del self._sticky[sk]

    @hookimpl
    def airi_event(self, peer: Peer, event: Event) -> Accept | Reject | None:
        etype = event.type
        if etype != "module:consumer:register" and etype != "module:consumer:unregister":
            return None
        if not peer.authenticated:
            return Reject(errors.NOT_AUTHENTICATED)
        data = event.data
        name = data.get("event")
        if not isinstance(name, str) or not name:
            return Reject(errors.MODULE_CONSUMER_EVENT_INVALID)
        mode = normalize_mode(data.get("mode"), data.get("group"))
        if etype == "module:consumer:register":
            self.register(peer, name, mode, data.get("group"), data.get("priority"))
        else:
            self.unregister(peer, (name, normalize_group(mode, data.get("group"))))
        return ACCEPT

    @hookimpl
    def airi_peer_disconnected(self, peer: Peer) -> None:
        for key in list(self._by_peer.get(peer.id, ())):
            self.unregister(peer, key)

    # -- delivery ----------------------------------------------------------------------------------
    @hookimpl(trylast=True)  # after every other route plugin: it picks among what they left
    def airi_route(self, hub: Hub, ctx: RouteContext) -> Drop | Targets | None:
        delivery = resolve_delivery(ctx.event)
        if delivery is None:
            return None
        mode = delivery.get("mode")
        if mode not in CONSUMER_MODES:
            return None
        chosen = self.select(ctx, mode, delivery)
        if chosen is None:
            hub.log.warning("no consumer registered for '%s' delivery (group %s)", ctx.event.type, normalize_group(mode, delivery.get("group")))
            return Drop(
                "no consumer available",
                errors.NO_CONSUMER_REGISTERED if delivery.get("required") else None,
            )
        return Targets((chosen,))

    def select(self, ctx: RouteContext, mode: str, delivery: dict[str, Any]) -> Peer | None:
        key = (ctx.event.type, normalize_group(mode, delivery.get("group")))
        regs = self.registrations.get(key)
        if not regs:
            return None
        sender = ctx.sender
        registry = ctx.hub.registry
        available = sorted(
            (
                r for r in regs.values()
                if r.peer is not sender and r.peer.authenticated and r.peer.healthy
                and r.peer in registry and ctx.accepts(r.peer)
            ),
            key=lambda r: (-r.priority, r.seq),
        )
        if not available:
            return None
        selection = delivery.get("selection") or "first"
        sticky_key = delivery.get("stickyKey")
        if selection == "sticky" and isinstance(sticky_key, str) and sticky_key:
            skey = (key[0], key[1], sticky_key)
            pid = self._sticky.get(skey)
            for r in available:
                if r.peer.id == pid:
                    return r.peer
            self._sticky[skey] = available[0].peer.id
            return available[0].peer
        if selection == "round-robin":
            cursor = self._cursor.get(key, 0)
            chosen = available[cursor % len(available)]
            self._cursor[key] = (cursor + 1) % len(available)
            return chosen.peer
        return available[0].peer
