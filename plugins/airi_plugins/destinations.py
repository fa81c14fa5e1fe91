"""``destinations``: ``route.destinations`` when the key is present (an empty list means nobody),
else ``data.destinations`` when it is a non-empty list, else no restriction. See
:mod:`airi_core.protocol.matching` for every form a destination may take."""

from __future__ import annotations

from typing import Any

from airi_core import Hub, RouteContext, hookimpl

from airi_core.protocol.matching import Predicate, compile_destinations, destinations_hint


#: How many distinct destination lists keep their compiled form.
CACHE_SIZE = 4096

Compiled = tuple[Predicate | None, frozenset[str] | None]


def compile_route(dests: list[Any]) -> Compiled:
    """``(predicate, module names)`` for a destination list: the names (when the destinations
    imply them) let routing look peers up by name; the predicate is None when the names alone
    answer exactly (plain ``module:``/``source:`` strings)."""
    hint = destinations_hint(dests)
    if hint is not None and all(isinstance(d, str) for d in dests):
        return None, hint
    return compile_destinations(dests), hint


class Destinations:
    def __init__(self) -> None:
        # senders repeat the same destinations: compile each distinct list once
        self._cache: dict[str, Compiled] = {}

    def compiled(self, dests: list[Any]) -> Compiled:
        key = _key(dests)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            found = self._cache[key] = compile_route(dests)
        return found

    @hookimpl(tryfirst=True)  # before plugins that decide (a redirect) so its filter holds for them
    def airi_route(self, hub: Hub, ctx: RouteContext) -> None:
        event = ctx.event
        route = event.route
        if route is not None and "destinations" in route:
            dests = route["destinations"]
            if not dests:
                ctx.narrow(())  # nobody (a filter, so that the devtools bypass still works)
                return None
        else:
            dests = event.data.get("destinations")
            if not isinstance(dests, list) or not dests:
                return None
        predicate, hint = self.compiled(dests)
        if hint is not None:
            # e.g. module:NAME: look the few possible peers up instead of testing all of them
            registry = hub.registry
            ctx.narrow(p for name in hint for p in registry.peers_named(name))
        if predicate is not None:
            ctx.add_filter(predicate)
        return None


_key = repr  # equal lists give equal keys; cheaper than JSON-encoding them
