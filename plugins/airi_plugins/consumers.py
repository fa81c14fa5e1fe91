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

Bookkeeping costs what changes (``[plugins.consumers]``, :class:`ConsumerSettings`):

- each (event, group) keeps its registrations in selection order, sorted again only after a
  change; ``first``/``priority`` and ``sticky`` stop at the first available consumer;
- sticky assignments are indexed by the consumer they point to, so an unregister or a disconnect
  frees exactly that consumer's assignments;
- a peer holds at most ``max_registrations_per_peer`` registrations, names of at most
  ``max_name_length`` characters; a ``stickyKey`` has at most ``max_sticky_key_length``
  characters; each (event, group) remembers at most ``max_sticky_keys`` assignments and all of
  them together at most ``sticky_bytes`` (least recently used forgotten first: that key is then
  assigned afresh, by priority, on its next event).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airi_core import ACCEPT, Accept, Drop, Event, Hub, Peer, Reject, RouteContext, Targets, errors, hookimpl

#: Protocol default deliveries by event type.
DEFAULT_DELIVERY: dict[str, dict[str, Any]] = {
    t: {"mode": "consumer-group", "group": "chat-ingestion", "selection": "first"}
    for t in ("input:text", "input:text:voice", "input:voice")
}
CONSUMER_MODES = ("consumer", "consumer-group")
DEFAULT_GROUP = "default"

Key = tuple[str, str]

#: Bytes counted against ``sticky_bytes`` for one assignment on top of its key's length: its
#: entries in the per-group, global and per-consumer indexes (measured ~330) and the key's
#: string object (~50).
STICKY_OVERHEAD = 400


class ConsumerSettings(BaseModel):
    """``[plugins.consumers]``."""

    model_config = ConfigDict(extra="forbid")
    #: Registrations (distinct event and group) one peer may hold.
    max_registrations_per_peer: int = Field(256, ge=1)
    #: Characters of the ``event`` and ``group`` of a registration.
    max_name_length: int = Field(256, ge=1)
    #: Characters of a ``route.delivery.stickyKey``.
    max_sticky_key_length: int = Field(256, ge=1)
    #: Sticky assignments remembered per (event, group); the least recently used goes first.
    max_sticky_keys: int = Field(4096, ge=1)
    #: Memory all sticky assignments together may use (key length + STICKY_OVERHEAD each).
    sticky_bytes: int = Field(8 * 1024 * 1024, ge=1024)


def too_many_registrations(limit: int) -> str:
    return f"too many consumer registrations: at most {limit} per peer"


def name_too_long(field: str, limit: int) -> str:
    return f"the field '{field}' is too long for event consumer registration: at most {limit} characters"


def sticky_key_too_long(limit: int) -> str:
    return f"route.delivery.stickyKey is too long: at most {limit} characters"


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
        self.settings = ConsumerSettings()
        self.registrations: dict[Key, dict[str, Registration]] = {}
        self._order: dict[Key, list[Registration]] = {}  # selection order, dropped on change
        self._by_peer: dict[str, set[Key]] = {}
        self._last: dict[Key, str] = {}  # round-robin: the consumer chosen last, per (event, group)
        #: Called as ``listener(key, selection, peer, sticky_key)`` when round-robin picks or sticky
        #: assigns afresh (a cluster shares that state between instances through it).
        self.pick_listeners: list[Callable[[Key, str, Peer, str | None], None]] = []
        self._seq = itertools.count()
        # sticky assignments: per (event, group) stickyKey -> consumer peer id, in LRU order; the
        # same in one global LRU (value: its size); and per (consumer, (event, group)) its keys
        self._sticky: dict[Key, OrderedDict[str, str]] = {}
        self._sticky_lru: OrderedDict[tuple[Key, str], int] = OrderedDict()
        self._sticky_of: dict[tuple[str, Key], set[str]] = {}
        #: What the sticky assignments hold now, in the units of ``sticky_bytes``.
        self.sticky_used_bytes = 0

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return ConsumerSettings

    @hookimpl
    def airi_reload(self, hub: Hub, changed: frozenset[str]) -> None:
        """New settings from the next event on (see airi_startup)."""
        if "plugins.consumers" in changed:
            self.airi_startup(hub)

    @hookimpl
    def airi_startup(self, hub: Hub) -> None:
        settings = hub.plugin_config(self)
        if isinstance(settings, ConsumerSettings):
            self.settings = settings

    # -- registration ------------------------------------------------------------------------------
    def register(self, peer: Peer, event: str, mode: str, group: Any, priority: Any) -> str | None:
        """Register ``peer``; the error message when it holds too many registrations already."""
        key = (event, normalize_group(mode, group))
        keys = self._by_peer.get(peer.id)
        if keys is not None and key not in keys and len(keys) >= self.settings.max_registrations_per_peer:
            return too_many_registrations(self.settings.max_registrations_per_peer)
        regs = self.registrations.setdefault(key, {})
        regs[peer.id] = Registration(peer, normalize_priority(priority), next(self._seq))
        self._order.pop(key, None)
        self._by_peer.setdefault(peer.id, set()).add(key)
        return None

    def unregister(self, peer: Peer, key: Key) -> None:
        regs = self.registrations.get(key)
        if regs is None or regs.pop(peer.id, None) is None:
            return
        self._order.pop(key, None)
        if not regs:
            del self.registrations[key]
            self._last.pop(key, None)
        keys = self._by_peer.get(peer.id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_peer[peer.id]
        for sk in self._sticky_of.pop((peer.id, key), ()):
            self._forget(key, sk, None)

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
        group = data.get("group")
        mode = normalize_mode(data.get("mode"), group)
        if etype == "module:consumer:register":
            limit = self.settings.max_name_length
            if len(name) > limit:
                return Reject(name_too_long("event", limit))
            if isinstance(group, str) and len(group) > limit:
                return Reject(name_too_long("group", limit))
            problem = self.register(peer, name, mode, group, data.get("priority"))
            if problem is not None:
                return Reject(problem)
        else:
            self.unregister(peer, (name, normalize_group(mode, group)))
        return ACCEPT

    @hookimpl
    def airi_peer_disconnected(self, peer: Peer) -> None:
        for key in list(self._by_peer.get(peer.id, ())):
            self.unregister(peer, key)

    # -- sticky assignments ------------------------------------------------------------------------
    def sticky_count(self) -> int:
        """How many sticky assignments are remembered."""
        return len(self._sticky_lru)

    def _forget(self, key: Key, sk: str, owner_keys: set[str] | None) -> None:
        """Drop one assignment (``owner_keys``: its consumer's set, when the caller has not
        removed it already)."""
        group = self._sticky.get(key)
        if group is None:
            return
        pid = group.pop(sk, None)
        if pid is None:
            return
        if not group:
            del self._sticky[key]
        self.sticky_used_bytes -= self._sticky_lru.pop((key, sk), 0)
        if owner_keys is not None:
            owner_keys.discard(sk)
            if not owner_keys:
                self._sticky_of.pop((pid, key), None)

    def _evict(self, key: Key, sk: str) -> None:
        pid = self._sticky[key][sk]
        self._forget(key, sk, self._sticky_of.get((pid, key)))

    def _assign(self, key: Key, sk: str, peer: Peer) -> None:
        settings = self.settings
        group = self._sticky.get(key)
        if group is not None and sk in group:
            self._evict(key, sk)  # it pointed at a consumer that is not available now
        size = len(sk) + STICKY_OVERHEAD
        group = self._sticky.get(key)
        while group and len(group) >= settings.max_sticky_keys:
            self._evict(key, next(iter(group)))
            group = self._sticky.get(key)
        while self._sticky_lru and self.sticky_used_bytes + size > settings.sticky_bytes:
            old_key, old_sk = next(iter(self._sticky_lru))
            self._evict(old_key, old_sk)
        self._sticky.setdefault(key, OrderedDict())[sk] = peer.id
        self._sticky_lru[(key, sk)] = size
        self.sticky_used_bytes += size
        self._sticky_of.setdefault((peer.id, key), set()).add(sk)

    def _picked(self, key: Key, selection: str, peer: Peer, sticky_key: str | None) -> None:
        for listener in self.pick_listeners:
            listener(key, selection, peer, sticky_key)

    def apply_pick(self, key: Key, selection: str, peer: Peer, sticky_key: str | None) -> None:
        """Take a pick made elsewhere (another instance of a cluster) as if made here: the
        round-robin goes on after ``peer``; ``sticky_key`` is assigned to ``peer``."""
        regs = self.registrations.get(key)
        if regs is None or peer.id not in regs:
            return
        if selection == "round-robin":
            self._last[key] = peer.id
        elif selection == "sticky" and sticky_key:
            group = self._sticky.get(key)
            if group is None or group.get(sticky_key) != peer.id:
                self._assign(key, sticky_key, peer)

    # -- delivery ----------------------------------------------------------------------------------
    @hookimpl(trylast=True)  # after every other route plugin: it picks among what they left
    def airi_route(self, hub: Hub, ctx: RouteContext) -> Drop | Targets | None:
        delivery = resolve_delivery(ctx.event)
        if delivery is None:
            return None
        mode = delivery.get("mode")
        if mode not in CONSUMER_MODES:
            return None
        sticky_key = delivery.get("stickyKey")
        if delivery.get("selection") == "sticky" and isinstance(sticky_key, str) and len(sticky_key) > self.settings.max_sticky_key_length:
            message = sticky_key_too_long(self.settings.max_sticky_key_length)
            return Drop(message, message)
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
        order = self._order.get(key)
        if order is None:
            order = self._order[key] = sorted(regs.values(), key=lambda r: (-r.priority, r.seq))
        sender = ctx.sender
        registry = ctx.hub.registry

        def available(r: Registration) -> bool:
            p = r.peer
            return p is not sender and p.authenticated and p.healthy and p in registry and ctx.accepts(p)

        selection = delivery.get("selection") or "first"
        if selection == "round-robin":
            # the next available consumer after the one chosen last, in selection order
            last = self._last.get(key)
            start = 0
            if last is not None:
                start = next((i + 1 for i, r in enumerate(order) if r.peer.id == last), 0)
            count = len(order)
            for step in range(count):
                turn = order[(start + step) % count]
                if available(turn):
                    self._last[key] = turn.peer.id
                    self._picked(key, "round-robin", turn.peer, None)
                    return turn.peer
            return None
        sticky_key = delivery.get("stickyKey")
        if selection == "sticky" and isinstance(sticky_key, str) and sticky_key:
            group = self._sticky.get(key)
            pid = group.get(sticky_key) if group is not None else None
            if pid is not None:
                reg = regs.get(pid)
                if reg is not None and available(reg):
                    group.move_to_end(sticky_key)  # type: ignore[union-attr]
                    self._sticky_lru.move_to_end((key, sticky_key))
                    return reg.peer
            first = next((r for r in order if available(r)), None)
            if first is None:
                return None
            self._assign(key, sticky_key, first.peer)
            self._picked(key, "sticky", first.peer, sticky_key)
            return first.peer
        first = next((r for r in order if available(r)), None)
        return first.peer if first is not None else None
