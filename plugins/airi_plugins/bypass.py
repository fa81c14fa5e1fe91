"""``bypass``: a devtools peer (label ``devtools`` = ``true``/``1`` or ``devtools`` in its module
name) sending ``route.bypass: true`` skips policy, destinations and delivery rules: the event goes
to every authenticated peer. Off with ``[routing] allow_bypass = false``."""

from __future__ import annotations

from airi_core import BROADCAST, Broadcast, RouteContext, hookimpl
from airi_core.server.kernel import Hub

from airi_core.protocol.matching import is_devtools


class DevtoolsBypass:
    @hookimpl
    def airi_route(self, hub: Hub, ctx: RouteContext) -> Broadcast | None:
        route = ctx.event.route
        if route is None or not route.get("bypass"):
            return None
        if not hub.settings.routing.allow_bypass or not is_devtools(ctx.sender):
            return None
        ctx.bypass = True
        return BROADCAST
