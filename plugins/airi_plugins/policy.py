"""``policy``: the routing policy of ``[routing.policy]``.

A receiver must have its plugin id in ``allow_plugins`` (when set) and not in ``deny_plugins``,
where a receiver's plugin id is its April ``plugin.id`` or its 2026-08 extension id (either
matches; ``allow_extensions`` / ``deny_extensions``, the 2026-08 names, are synonyms merged into
the same lists), match every selector of ``allow_labels`` (when set), and not match all of ``deny_labels`` (when
set). The plugin adds its predicate as a standing route filter of the hub
(``hub.add_route_filter``) rather than implementing ``airi_route``: it then holds for every
routed event whatever the route plugins decide (broadcast, destinations, consumer delivery, a
plugin's ``Targets`` redirect) and in any ``[plugins] order``, and an inactive policy costs
nothing per event. Only the devtools bypass skips it.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from airi_core import Hub, Peer, hookimpl
from airi_core.protocol.matching import parse_selector, selectors_match


class PolicySettings(BaseModel):
    """``[routing.policy]``."""

    model_config = ConfigDict(extra="forbid")
    allow_plugins: list[str] = []
    deny_plugins: list[str] = []
    #: The 2026-08 names of ``allow_plugins`` / ``deny_plugins`` (merged into them).
    allow_extensions: list[str] = []
    deny_extensions: list[str] = []
    allow_labels: list[str] = []
    deny_labels: list[str] = []

    @property
    def active(self) -> bool:
        return bool(
            self.allow_plugins or self.deny_plugins or self.allow_extensions or self.deny_extensions
            or self.allow_labels or self.deny_labels
        )


def policy_predicate(policy: PolicySettings) -> Callable[[Peer], bool]:
    """Whether the policy lets a peer receive events; the verdict is cached on the peer until
    its identity changes."""
    allow_plugins = frozenset(policy.allow_plugins) | frozenset(policy.allow_extensions)
    deny_plugins = frozenset(policy.deny_plugins) | frozenset(policy.deny_extensions)
    allow_labels = [parse_selector(s) for s in policy.allow_labels]
    deny_labels = [parse_selector(s) for s in policy.deny_labels]

    def allowed(peer: Peer) -> bool:
        cached = peer.state.get("policy")
        if cached is not None and cached[0] is peer.labels and cached[1] is policy:
            return cached[2]  # type: ignore[no-any-return]
        ok = judge(peer)
        peer.state["policy"] = (peer.labels, policy, ok)  # a new labels object on every change
        return ok

    def judge(peer: Peer) -> bool:
        ids = {peer.plugin_id, peer.extension_id} - {""}
        if allow_plugins and ids.isdisjoint(allow_plugins):
            return False
        if deny_plugins and not ids.isdisjoint(deny_plugins):
            return False
        if allow_labels and not selectors_match(allow_labels, peer.labels):
            return False
        if deny_labels and selectors_match(deny_labels, peer.labels):
            return False
        return True

    return allowed


class RoutingPolicy:
    airi_config_section = "routing.policy"

    def __init__(self) -> None:
        self.allowed: Callable[[Peer], bool] | None = None

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return PolicySettings

    @hookimpl
    def airi_startup(self, hub: Hub) -> None:
        policy = hub.plugin_config(self)
        if isinstance(policy, PolicySettings) and policy.active:
            self.allowed = policy_predicate(policy)
            hub.add_route_filter(self.allowed)

    @hookimpl
    def airi_reload(self, hub: Hub, changed: frozenset[str]) -> None:
        """The new policy holds from the next routed event on."""
        if "routing.policy" in changed:
            self.airi_shutdown(hub)
            self.airi_startup(hub)

    @hookimpl
    def airi_shutdown(self, hub: Hub) -> None:
        if self.allowed is not None:
            hub.remove_route_filter(self.allowed)
            self.allowed = None
