"""PROTOCOL-HEAD.md section 4 and decisions 6 and 7: one liveness clock per connection, health
events per extension module (``heartbeat late``; and the ``healthy`` improvement), a connection
without modules only changes state, and the hub pings a peer silent for half the read timeout, so
a HEAD client that only pings after hearing nothing is never dropped."""

from __future__ import annotations

import time

from airi_core.testing import wait_until

from .head_client import HeadClient
from .head_helpers import ext_module_announce, head_connect, mod_identity, peer_authenticate, settings
from .protocol_helpers import assert_server_event, consumer_register, event_id, expect_error, keepalive, parent_id

HB = "transport:connection:heartbeat"
NO_CONSUMER = "no consumer registered for requested event delivery"


async def test_unhealthy_and_healthy_per_extension_module(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(settings(heartbeat={"read_timeout_ms": 60000, "check_interval_ms": 40}))
    a = await head_connect(airi_connect, hub, "a")
    obs = await airi_connect(hub, "obs")
    idents = {"m-a": mod_identity("ida", "ext-a"), "m-b": mod_identity("idb", "ext-a", {"k": "v"})}
    async with keepalive(obs):
        for name, ident in idents.items():
            await ext_module_announce(a, name, ident)
        start = obs.mark()
        await wait_until(lambda: len(obs.of_type("registry:modules:health:unhealthy", start)) >= 2, 3.0, "two unhealthy events")
        bad = obs.of_type("registry:modules:health:unhealthy", start)
        assert sorted(e["data"]["name"] for e in bad) == ["m-a", "m-b"]
        for e in bad:
            assert set(e["data"]) == {"name", "identity", "reason"}, e  # no index
            assert e["data"]["reason"] == "heartbeat late"
            assert e["data"]["identity"]["id"] == idents[e["data"]["name"]]["id"]
            assert e["data"]["identity"]["extension"]["id"] == "ext-a"
            assert_server_event(e, hub, parent=None)
        start = obs.mark()
        await a.send_raw("ping")  # any inbound frame refreshes the clock
        await wait_until(lambda: len(obs.of_type("registry:modules:health:healthy", start)) >= 2, 3.0, "two healthy events")
        good = obs.of_type("registry:modules:health:healthy", start)
        assert sorted(e["data"]["name"] for e in good) == ["m-a", "m-b"]
        for e in good:
            assert "index" not in e["data"] and e["data"]["identity"]["id"] == idents[e["data"]["name"]]["id"]
        assert not obs.of_type("extension:module:de-announced")


async def test_connection_without_modules_only_changes_state(airi_hub_factory, airi_connect):
    """Section 4: no health events for a connection without modules, but it is excluded from
    consumer selection while unhealthy."""
    hub = await airi_hub_factory(settings(heartbeat={"read_timeout_ms": 60000, "check_interval_ms": 40}))
    c = await head_connect(airi_connect, hub, "c")
    await peer_authenticate(c, peer_id="quiet")
    await consumer_register(c, "work:item")
    obs = await airi_connect(hub, "obs")
    async with keepalive(obs):
        start = obs.mark()
        await wait_until(lambda: any(not p.healthy for p in hub.registry), 3.0, "the silent connection to be unhealthy")
        s = obs.mark()
        ev = await obs.send("work:item", {}, route={"delivery": {"mode": "consumer", "required": True}})
        await expect_error(obs, NO_CONSUMER, start=s, parent=event_id(ev))
        assert not obs.of_type("registry:modules:health:unhealthy", start)


async def test_hub_pings_a_silent_peer_at_half_the_read_timeout(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(settings(heartbeat={"read_timeout_ms": 400, "check_interval_ms": 40, "message": "hub-msg"}))
    a = await head_connect(airi_connect, hub, "a")
    await ext_module_announce(a, "m", mod_identity("m-1", "a"))
    start = a.mark()
    t0 = time.monotonic()
    first = await a.wait_for(HB, lambda e: e["data"].get("kind") == "ping", start=start, timeout=3)
    waited = time.monotonic() - t0
    assert 0.1 <= waited, waited  # not before about half the read timeout of silence
    assert set(first["data"]) == {"kind", "message", "at"}
    assert first["data"]["message"] == "hub-msg"
    at = first["data"]["at"]
    assert isinstance(at, int) and not isinstance(at, bool) and abs(at - time.time() * 1000) < 10000
    assert_server_event(first, hub, parent=None)
    # at most once per half read timeout of silence, until the silence rule closes it
    arrivals: list[float] = [time.monotonic()]

    def track() -> bool:
        pings = [e for e in a.of_type(HB, start) if e["data"].get("kind") == "ping"]
        while len(arrivals) < len(pings):
            arrivals.append(time.monotonic())
        return a.close_code is not None

    await wait_until(track, 4.0, "the silent peer to be closed", every=0.005)
    gaps = [b - x for x, b in zip(arrivals, arrivals[1:])]
    assert all(g >= 0.15 for g in gaps), gaps


async def test_answered_hub_pings_keep_a_quiet_head_client_alive(airi_hub_factory, airi_connect):
    """The HEAD SDK pings only after pingInterval of inbound silence; a client that never
    reaches it (ping interval longer than the test) still stays healthy because it answers the
    hub's pings (decision 7)."""
    # the check interval is read_timeout / 5, as decision 6 has it: unhealthy after ~read_timeout
    hub = await airi_hub_factory(settings(heartbeat={"read_timeout_ms": 300, "check_interval_ms": 60}))
    obs = await airi_connect(hub, "obs")
    c = HeadClient(hub.url, "proj-airi:stage-web", ping_interval=60.0, read_timeout=120.0)
    try:
        async with keepalive(obs):
            await c.connect(5)
            start = obs.mark()
            await wait_until(lambda: c.pongs_sent >= 6, 5.0, "six answered hub pings")
            assert c.pings_sent == 0 and c.connections == 1 and c.state == "ready"
            assert not obs.of_type("registry:modules:health:unhealthy", start)
            assert not obs.of_type("extension:module:de-announced", start)
    finally:
        await c.close()


async def test_unanswered_pings_then_expiry(airi_hub_factory, airi_connect):
    """A peer that answers nothing is closed by the silence rule alone (unhealthy first)."""
    hub = await airi_hub_factory(settings(heartbeat={"read_timeout_ms": 400, "check_interval_ms": 30}))
    a = await head_connect(airi_connect, hub, "a")
    obs = await airi_connect(hub, "obs")
    async with keepalive(obs):
        await ext_module_announce(a, "m", mod_identity("m-1", "a"))
        start = obs.mark()
        de = await obs.wait_for("extension:module:de-announced", start=start, timeout=5)
        assert de["data"]["reason"] == "heartbeat expired"
        types = [e["type"] for e in obs.received[start:]]
        assert types.index("registry:modules:health:unhealthy") < types.index("extension:module:de-announced")
    await a.wait_closed(3)
    assert any(e["type"] == HB and e["data"].get("kind") == "ping" and parent_id(e) is None for e in a.received)
