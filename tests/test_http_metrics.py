"""Issue 12 item 1: /healthz, /readyz and /metrics on the hub's own port (no second server),
Prometheus metrics from prometheus_client with a registry per hub, [http] settings.

Every test starts a real hub on 127.0.0.1 and asks it over a real socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from airi_core import Drop, hookimpl
from airi_core.testing import connect_client, start_hub


async def http_get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP/1.1 GET on 127.0.0.1:port; (status, headers lower-cased, body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in (headers or {}).items()), "", ""]
        writer.write("\r\n".join(lines).encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)  # the hub closes after answering
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(status_line.split()[1]), hdrs, body


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels): parsed by prometheus_client."""
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


async def scrape(port: int, **headers: str) -> dict[Any, float]:
    status, hdrs, body = await http_get(port, "/metrics", headers)
    assert status == 200, body
    assert hdrs["content-type"].startswith("text/plain; version="), hdrs
    return samples(body)


async def test_health_and_ready_answer_json_on_the_hub_port() -> None:
    hub = await start_hub()
    try:
        status, hdrs, body = await http_get(hub.port, "/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        assert hdrs["content-type"] == "application/json" and "server" not in hdrs
        status, _, body = await http_get(hub.port, "/readyz?verbose=1")
        assert (status, json.loads(body)) == (200, {"status": "ready"})
        # other paths are still 404, and the WebSocket path still upgrades
        status, _, body = await http_get(hub.port, "/health")
        assert status == 404 and body == b"no WebSocket endpoint here; use /ws\n"
        c = await connect_client(hub, "still-ws")
        await c.fence()
        await c.close()
    finally:
        await hub.shutdown()


async def test_readyz_is_503_with_the_reason_of_a_failing_check() -> None:
    hub = await start_hub()
    try:
        broker = {"up": False}
        hub.readiness.add_check("cluster", lambda: None if broker["up"] else "broker disconnected")
        status, _, body = await http_get(hub.port, "/readyz")
        assert (status, json.loads(body)) == (503, {"status": "not ready", "reason": "broker disconnected"})
        assert value(await scrape(hub.port), "airi_ready") == 0
        broker["up"] = True
        status, _, _ = await http_get(hub.port, "/readyz")
        assert status == 200
        assert value(await scrape(hub.port), "airi_ready") == 1
    finally:
        await hub.shutdown()
    assert hub.readiness.reason() == "draining"


class HoldShutdown:
    """Holds the hub in its draining phase (a disconnect hook that waits) so /readyz can be asked then."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    @hookimpl
    async def airi_peer_disconnected(self, reason: str) -> None:
        if reason == "server shutdown":
            self.entered.set()
            await asyncio.wait_for(self.release.wait(), 5)


async def test_readyz_says_draining_during_shutdown() -> None:
    hold = HoldShutdown()
    hub = await start_hub(extra_plugins=[("hold", hold)])
    c = await connect_client(hub, "stays")
    # a TCP connection opened before the shutdown, whose request is read during it
    port = hub.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    stopping = asyncio.ensure_future(hub.shutdown())
    try:
        await asyncio.wait_for(hold.entered.wait(), 5)
        writer.write(f"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
        assert raw.startswith(b"HTTP/1.1 503"), raw
        assert json.loads(raw.partition(b"\r\n\r\n")[2]) == {"status": "not ready", "reason": "draining"}
    finally:
        hold.release.set()
        writer.close()
        await asyncio.wait_for(stopping, 10)
        await c.close()


class FailingPlugin:
    @hookimpl
    def airi_route(self, ctx: Any) -> Any:
        if ctx.event.type == "test:explode":
            raise RuntimeError("boom")
        if ctx.event.type == "test:drop":
            return Drop("dropped")
        return None


async def test_metrics_before_and_after_traffic() -> None:
    hub = await start_hub(
        {"auth": {"token": "good"}, "limits": {"max_messages_per_second": 20}},
        extra_plugins=[("failing", FailingPlugin())],
    )
    try:
        before = await scrape(hub.port)
        assert value(before, "airi_peers", state="announced") == 0
        assert value(before, "airi_frames_received_total", kind="event") == 0
        assert value(before, "airi_info", version=hub.version, instance_id=hub.instance_id) == 1

        a = await connect_client(hub, "a", token="good", announce=True)
        b = await connect_client(hub, "b", token="good", announce=True)
        await a.send("test:hello", {"n": 1})
        await b.wait_for("test:hello")
        await a.send_raw("{not json")
        await a.wait_for("error")
        await a.send("test:explode", {})
        await a.wait_for("error", lambda e: "failed in airi_route" in e["data"]["message"])
        bad = await connect_client(hub, "bad")
        assert (await bad.authenticate("wrong"))["data"]["message"] == "invalid token"
        # over the rate limit: dropped and answered once
        start = b.mark()
        for i in range(30):
            await b.send("test:flood", {"i": i})
        await b.wait_for("error", lambda e: e["data"]["message"].startswith("rate limit exceeded"), start=start)
        await bad.close()

        after = await scrape(hub.port)
        assert value(after, "airi_peers", state="announced") == 2
        assert value(after, "airi_modules_announced") == 2
        assert value(after, "airi_frames_received_total", kind="event") >= 2
        assert value(after, "airi_frames_received_total", kind="invalid") == 1
        assert value(after, "airi_frames_received_total", kind="control") >= 5  # 3 authenticates, 2 announces
        assert value(after, "airi_events_routed_total") >= 1
        assert value(after, "airi_deliveries_total") >= 1
        assert value(after, "airi_errors_sent_total", message="invalid JSON, error") == 1
        assert value(after, "airi_errors_sent_total", message="invalid token") == 1
        assert value(after, "airi_errors_sent_total", message="rate limit exceeded") == 1
        assert value(after, "airi_auth_failures_total") == 1
        assert value(after, "airi_rate_limited_frames_total") >= 1
        assert value(after, "airi_plugin_failures_total", plugin="failing", hook="airi_route") == 1
        assert value(after, "airi_disconnects_total", reason="connection closed") == 1  # bad
        assert value(after, "airi_hook_duration_seconds_count", hook="airi_authenticate") >= 3
        assert value(after, "airi_hook_duration_seconds_count", hook="airi_peer_connected") == 3
        assert value(after, "airi_hook_duration_seconds_count", hook="airi_route") >= 1  # sampled: 1 call per 50 ms
        assert ("airi_outbound_backlog_bytes", ()) in after
        # a plugin's own hub.stats counters appear too
        hub.stats["my_plugin_things"] = 7
        assert value(await scrape(hub.port), "airi_stat_total", counter="my_plugin_things") == 7
        assert all(name.startswith("airi_") for name, _ in after)
        await a.close()
        await b.close()
    finally:
        await hub.shutdown()


async def test_metrics_bearer_token_and_no_secret_in_output() -> None:
    hub = await start_hub({"http": {"metrics_token": "scrape-secret"}, "auth": {"token": "peer-secret"}})
    try:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic scrape-secret"}):
            status, hdrs, body = await http_get(hub.port, "/metrics", headers)
            assert status == 401, (headers, body)
            assert hdrs["www-authenticate"].startswith("Bearer")
            assert b"secret" not in body.replace(b"metrics_token", b"")
        status, _, body = await http_get(hub.port, "/metrics", {"Authorization": "Bearer scrape-secret"})
        assert status == 200
        assert b"scrape-secret" not in body and b"peer-secret" not in body
        # health needs no token
        assert (await http_get(hub.port, "/healthz"))[0] == 200
    finally:
        await hub.shutdown()


async def test_http_section_switches_endpoints_off() -> None:
    hub = await start_hub({"http": {"metrics": False}})
    try:
        assert (await http_get(hub.port, "/metrics"))[0] == 404
        assert (await http_get(hub.port, "/healthz"))[0] == 200
        assert hub.metrics is None
    finally:
        await hub.shutdown()
    hub = await start_hub({"http": {"enabled": False}})
    try:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await http_get(hub.port, path))[0] == 404, path
    finally:
        await hub.shutdown()


async def test_two_hubs_in_one_process_keep_their_own_metrics() -> None:
    one = await start_hub()
    two = await start_hub()
    try:
        c = await connect_client(one, "only-on-one")
        await c.send("test:x", {})
        await c.fence()
        m1, m2 = await scrape(one.port), await scrape(two.port)
        assert value(m1, "airi_connections_accepted_total") == 1
        assert value(m2, "airi_connections_accepted_total") == 0
        assert value(m1, "airi_info", version=one.version, instance_id=one.instance_id) == 1
        assert ("airi_info", (("instance_id", one.instance_id), ("version", one.version))) not in m2
        await c.close()
    finally:
        await one.shutdown()
        await two.shutdown()
