"""Prometheus metrics of one hub, produced by ``prometheus_client``.

Each hub has its own :class:`~prometheus_client.CollectorRegistry` (``hub.metrics.registry``;
never the process-wide default one), so several hubs in one process (tests, embedding) do not
clash. Nothing is counted for the metrics on the per-frame path: the kernel and the plugins
already count in ``hub.stats`` (plain integers) and ``hub.counts`` (labelled, bounded), and
:class:`HubCollector` turns those into metric families when ``/metrics`` is scraped. The only
measurement of its own is hook latency, taken on every call of the hooks that are not per
frame, and for the per-frame ones (``airi_event``, ``airi_route``, ``airi_heartbeat``) on one
call every :data:`SAMPLE_INTERVAL_S`: a one-shot timing wrapper is put on the facade and takes
itself off after that call, so the calls in between run the plain method, at no cost.

Metric names (all prefixed ``airi_``) are listed in :data:`METRICS`; a plugin may register its
own collectors or metrics in ``hub.metrics.registry``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from .hooks import awaitable

if TYPE_CHECKING:
    from .kernel import Hub

__all__ = ["HubMetrics", "HubCollector", "METRICS", "SAMPLE_INTERVAL_S"]

#: the per-frame hooks are timed on one call per this many seconds each
SAMPLE_INTERVAL_S = 0.05
#: hooks timed on every call (none of them runs per frame)
_TIMED_HOOKS = ("startup", "shutdown", "peer_connected", "peer_disconnected", "authenticate",
                "peer_authenticated", "announce", "reload")
_SAMPLED_HOOKS = ("event", "route", "heartbeat")
_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 5.0)

#: hub.stats counters exposed under their own names (the rest: ``airi_stat_total{counter}``)
_STAT_COUNTERS: dict[str, tuple[str, str]] = {
    "connections": ("airi_connections_accepted", "WebSocket connections accepted"),
    "events_routed": ("airi_events_routed", "events routed (a route decision was made and applied)"),
    "deliveries": ("airi_deliveries", "routed events queued to a receiver (one per receiver)"),
    "messages_out": ("airi_messages_sent", "frames queued to peers, routed and the hub's own"),
    "rate_limited": ("airi_rate_limited_frames", "frames dropped by limits.max_messages_per_second"),
    "oversized_frames": ("airi_oversized_frames", "connections closed 1009 for a frame over limits.max_frame_bytes"),
    "slow_consumers": ("airi_slow_consumers", "peers dropped as slow consumers"),
    "auth_failures": ("airi_auth_failures", "failed authentications (wrong token)"),
    "auth_lockouts": ("airi_auth_lockouts", "addresses locked out after too many failed authentications"),
    "auth_refused": ("airi_auth_refused", "authentications refused unchecked from a locked-out address"),
    "auth_timeouts": ("airi_auth_timeouts", "connections closed for not authenticating in time"),
    "permission_denied": ("airi_permission_denied", "actions refused by [[auth.clients]] permissions"),
    "plugin_errors": ("airi_plugin_errors", "plugin failures and internal errors, all together"),
    "pending_overflows": ("airi_pending_overflows", "connections closed 1013 (limits.max_pending_bytes)"),
    "evicted_sockets": ("airi_evicted_sockets", "sockets closed in their handshake to stay under the open-file limit"),
}
_REFUSALS = {"refused_connections": "max_connections", "refused_origins": "origin"}
_FRAME_KINDS = ("frames_heartbeat", "frames_control", "frames_invalid")
_HANDLED = frozenset(_STAT_COUNTERS) | frozenset(_REFUSALS) | frozenset(_FRAME_KINDS) | {"frames_in"}

#: every metric family the hub exports, for the docs and the tests
METRICS: dict[str, str] = {
    "airi_info": "version and instance id",
    "airi_ready": "1 when /readyz answers 200",
    "airi_peers": "connected peers by state: handshake, unauthenticated, authenticated, announced",
    "airi_peers_unhealthy": "peers whose heartbeat is late",
    "airi_modules_announced": "announced modules",
    "airi_frames_received_total": "frames received by kind: heartbeat, control (authenticate, announce), event, invalid",
    "airi_errors_sent_total": "error events sent, by message (its fixed part)",
    "airi_disconnects_total": "peers gone, by reason",
    "airi_connections_refused_total": "handshakes refused, by reason",
    "airi_plugin_failures_total": "plugin failures by plugin and hook",
    "airi_hook_duration_seconds": "hook call latency by hook (airi_event, airi_route, airi_heartbeat: sampled)",
    "airi_outbound_backlog_bytes": "bytes queued to peers and not yet taken, all peers together",
    "airi_peers_behind": "peers whose backlog passed limits.outbound_soft_bytes",
    "airi_pending_bytes": "bytes of incomplete frames held, all connections together",
    "airi_stat_total": "any other hub.stats counter (plugins add their own), by name",
    **{name + "_total": doc for name, doc in _STAT_COUNTERS.values()},
}


class HubCollector(Collector):
    """Reads the hub's counters and state at scrape time."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def describe(self) -> Iterable[Metric]:
        return []  # built at scrape time; names are fixed (METRICS)

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        stats = dict(hub.stats)
        info = InfoMetricFamily("airi", "the hub", labels=["version", "instance_id"])
        info.add_metric([hub.version, hub.instance_id], {})
        yield info
        yield GaugeMetricFamily("airi_ready", METRICS["airi_ready"], value=1 if hub.readiness.reason() is None else 0)

        states = dict.fromkeys(("handshake", "unauthenticated", "authenticated", "announced"), 0)
        unhealthy = backlog = 0
        for peer in list(hub.registry):
            if peer.origin is not None:
                continue  # another instance's connection (a cluster): that instance counts it
            if peer.announced or peer.modules:
                states["announced"] += 1
            elif peer.authenticated:
                states["authenticated"] += 1
            else:
                states["unauthenticated"] += 1
            if not peer.healthy:
                unhealthy += 1
            backlog += hub.backlog(peer)
        transport = hub._transport
        states["handshake"] = len(getattr(transport, "_handshaking", ()))
        peers = GaugeMetricFamily("airi_peers", METRICS["airi_peers"], labels=["state"])
        for state, n in states.items():
            peers.add_metric([state], n)
        yield peers
        yield GaugeMetricFamily("airi_peers_unhealthy", METRICS["airi_peers_unhealthy"], value=unhealthy)
        yield GaugeMetricFamily("airi_modules_announced", METRICS["airi_modules_announced"], value=states["announced"])
        yield GaugeMetricFamily("airi_outbound_backlog_bytes", METRICS["airi_outbound_backlog_bytes"], value=backlog)
        yield GaugeMetricFamily("airi_peers_behind", METRICS["airi_peers_behind"], value=len(getattr(transport, "_behind", ())))
        yield GaugeMetricFamily("airi_pending_bytes", METRICS["airi_pending_bytes"], value=getattr(transport, "pending_bytes", 0))

        frames = CounterMetricFamily("airi_frames_received", "frames received by kind", labels=["kind"])
        total = stats.get("frames_in", 0)
        kinds = {k.removeprefix("frames_"): stats.get(k, 0) for k in _FRAME_KINDS}
        kinds["event"] = max(total - sum(kinds.values()), 0)
        for kind, n in kinds.items():
            frames.add_metric([kind], n)
        yield frames

        for key, (name, doc) in _STAT_COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=stats.get(key, 0))
        refused = CounterMetricFamily("airi_connections_refused", "handshakes refused, by reason", labels=["reason"])
        for key, reason in _REFUSALS.items():
            refused.add_metric([reason], stats.get(key, 0))
        yield refused

        counts = hub.counts
        yield _labelled("airi_errors_sent", "error events sent, by message", ["message"], counts.errors.values)
        yield _labelled("airi_disconnects", "peers gone, by reason", ["reason"], counts.disconnects.values)
        yield _labelled("airi_plugin_failures", "plugin failures by plugin and hook", ["plugin", "hook"], counts.plugin_failures.values)

        other = CounterMetricFamily("airi_stat", "other hub.stats counters, by name", labels=["counter"])
        for key, n in sorted(stats.items()):
            if key not in _HANDLED and isinstance(n, (int, float)):
                other.add_metric([key], n)
        yield other


def _labelled(name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in list(values.items()):
        family.add_metric(list(key), n)
    return family


class HubMetrics:
    """The metrics of one hub: its registry, the collector, and the hook-latency histogram."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(HubCollector(hub))
        self.hook_seconds = Histogram(
            "airi_hook_duration_seconds", METRICS["airi_hook_duration_seconds"], ["hook"],
            registry=self.registry, buckets=_BUCKETS,
        )
        self._instrumented = False

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def instrument(self, hooks: Any) -> None:
        """Time the hub's hook calls: wrap the facade's methods on this instance (``hub._hooks``)."""
        if self._instrumented:
            return
        self._instrumented = True
        for name in _TIMED_HOOKS:
            if hasattr(hooks, name):
                setattr(hooks, name, self._timed(getattr(hooks, name), "airi_" + name))
        for name in _SAMPLED_HOOKS:
            self._arm(hooks, name)

    def _arm(self, hooks: Any, name: str) -> None:
        """Time the next call of ``hooks.<name>`` only: the wrapper removes itself (the class's
        method shows through again) and puts itself back ``SAMPLE_INTERVAL_S`` later."""
        plain = getattr(type(hooks), name).__get__(hooks)
        timed = self._timed(plain, "airi_" + name)

        def once(*args: Any) -> Any:
            try:
                delattr(hooks, name)
            except AttributeError:  # pragma: no cover - already taken off
                pass
            try:
                asyncio.get_running_loop().call_later(SAMPLE_INTERVAL_S, self._arm, hooks, name)
            except RuntimeError:  # no loop (a hub driven by hand): sample no more
                pass
            return timed(*args)

        setattr(hooks, name, once)

    def _timed(self, fn: Callable[..., Any], hook: str) -> Callable[..., Any]:
        observe = self.hook_seconds.labels(hook).observe
        clock = time.perf_counter

        async def finish(pending: Awaitable[Any], started: float) -> Any:
            try:
                return await pending
            finally:
                observe(clock() - started)

        def call(*args: Any) -> Any:
            started = clock()
            res = fn(*args)
            if res is not None and awaitable(res):
                return finish(res, started)
            observe(clock() - started)
            return res

        return call
