"""``bypass``: the devtools bypass (``[routing] allow_bypass``, default true).

A devtools peer (label ``devtools`` = ``true``/``1`` in its announced identity, April or
2026-08, or ``devtools`` in its April module name) that sends ``route.bypass: true`` skips the routing policy, destinations and delivery
rules: the event goes to every authenticated peer but the sender. It grants that by setting
``ctx.bypass``, the one way past the filters other route plugins add.

Only an announced identity counts: a peer that has not announced is never devtools, whatever
its frames' ``metadata.source`` says (an adopted 2026-08 source is not an announce), and a later
``metadata.source`` cannot add the label (only a re-announce changes an announced identity).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from airi_core import BROADCAST, Broadcast, RouteContext, hookimpl
from airi_core.protocol.matching import is_devtools


class RoutingSettings(BaseModel):
    """``[routing]`` (its ``[routing.policy]`` table belongs to the ``policy`` plugin)."""

    model_config = ConfigDict(extra="forbid")
    allow_bypass: bool = True


class DevtoolsBypass:
    airi_config_section = "routing"

    def __init__(self) -> None:
        self.allow = True

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return RoutingSettings

    @hookimpl
    def airi_reload(self, hub, changed: frozenset[str]) -> None:  # type: ignore[no-untyped-def]
        """New settings from the next event on (see airi_startup)."""
        if "routing" in changed:
            self.airi_startup(hub)

    @hookimpl
    def airi_startup(self, hub) -> None:  # type: ignore[no-untyped-def]
        settings = hub.plugin_config(self)
        self.allow = settings.allow_bypass if isinstance(settings, RoutingSettings) else True

    @hookimpl(tryfirst=True)
    def airi_route(self, ctx: RouteContext) -> Broadcast | None:
        route = ctx.event.route
        if route is None or not route.get("bypass"):
            return None
        sender = ctx.sender
        if not self.allow or not is_devtools(sender):
            return None
        ctx.bypass = True
        return BROADCAST
