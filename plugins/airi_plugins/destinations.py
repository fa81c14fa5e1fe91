"""``destinations``: ``route.destinations`` when the key is present (an empty list means nobody),
else ``data.destinations`` when it is a non-empty list, else no restriction. See
:mod:`airi_plugins.matching` for every form a destination may take."""

from __future__ import annotations

from airi_core import Drop, RouteContext, hookimpl
from airi_core.hub import Hub

from .matching import compile_destinations, destinations_hint


class Destinations:
    @hookimpl
    def airi_route(self, hub: Hub, ctx: RouteContext) -> Drop | None:
        event = ctx.event
        route = event.route
        if route is not None and "destinations" in route:
            dests = route["destinations"]
            if not dests:
                return Drop("route.destinations is empty")
        else:
            dests = event.data.get("destinations")
            if not isinstance(dests, list) or not dests:
                return None
        hint = destinations_hint(dests)
        if hint is not None:
            # e.g. module:NAME: look the few possible peers up instead of testing all of them
            registry = hub.registry
            ctx.narrow(p for name in hint for p in registry.peers_named(name))
            if all(isinstance(d, str) for d in dests):
                return None  # plain module:/source: strings: the index answers exactly
        ctx.add_filter(compile_destinations(dests))
        return None
