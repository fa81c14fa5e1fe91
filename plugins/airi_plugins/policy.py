"""``policy``: the routing policy of ``[routing.policy]``.

A receiver must have its plugin id in ``allow_plugins`` (when set) and not in ``deny_plugins``,
match every selector of ``allow_labels`` (when set), and not match all of ``deny_labels`` (when
set). The policy narrows the candidates and composes with destinations and consumer delivery:
an event goes only to peers that the policy allows AND the destinations match.
"""

from __future__ import annotations

from airi_core import Peer, RouteContext, hookimpl
from airi_core.server.config import PolicyConfig
from airi_core.server.kernel import Hub

from airi_core.protocol.matching import parse_selector, selectors_match


def policy_predicate(policy: PolicyConfig):  # type: ignore[no-untyped-def]
    allow_plugins = frozenset(policy.allow_plugins)
    deny_plugins = frozenset(policy.deny_plugins)
    allow_labels = [parse_selector(s) for s in policy.allow_labels]
    deny_labels = [parse_selector(s) for s in policy.deny_labels]

    def allowed(peer: Peer) -> bool:
        # a peer's verdict only changes with its identity: cache it on the peer
        cached = peer.state.get("policy")
        if cached is not None and cached[0] is peer.identity and cached[1] is policy:
            return cached[2]  # type: ignore[no-any-return]
        ok = judge(peer)
        peer.state["policy"] = (peer.identity, policy, ok)
        return ok

    def judge(peer: Peer) -> bool:
        if allow_plugins and peer.plugin_id not in allow_plugins:
            return False
        if deny_plugins and peer.plugin_id in deny_plugins:
            return False
        if allow_labels and not selectors_match(allow_labels, peer.labels):
            return False
        if deny_labels and selectors_match(deny_labels, peer.labels):
            return False
        return True

    return allowed


class RoutingPolicy:
    def __init__(self) -> None:
        self._predicate = None
        self._for: PolicyConfig | None = None

    @hookimpl
    def airi_route(self, hub: Hub, ctx: RouteContext) -> None:
        policy = hub.settings.routing.policy
        if not policy.active:
            return None
        if self._for is not policy:
            self._predicate = policy_predicate(policy)
            self._for = policy
        ctx.add_filter(self._predicate)  # type: ignore[arg-type]
        return None
