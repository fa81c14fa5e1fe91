"""PROTOCOL.md "Heartbeats and liveness": ping/pong replies, transport heartbeat frames, and the
unhealthy / healthy / expired cycle (checked every 50 ms here so it all happens in well under 2 s)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from .protocol_helpers import (
    assert_server_event,
    consumer_register,
    event_id,
    keepalive,
    modules_of,
)

FAST = {"heartbeat": {"check_interval_ms": 50}}
HB = "transport:connection:heartbeat"


@pytest.fixture
async def fast_hub(airi_hub_factory):
    return await airi_hub_factory(FAST)


# -- ping / pong -----------------------------------------------------------------------------------
async def test_ping_is_answered_with_pong(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    before = int(time.time() * 1000)
    ev = await a.send(HB, {"kind": "ping", "message": "\U0001fa75", "at": before})
    reply = await a.wait_for(HB, lambda e: e["metadata"]["event"].get("parentId") == event_id(ev))
    after = int(time.time() * 1000)
    assert reply["data"]["kind"] == "pong"
    assert reply["data"]["message"] == "\U0001f49b"  # 💛
    assert isinstance(reply["data"]["at"], int) and not isinstance(reply["data"]["at"], bool)
    assert before - 1000 <= reply["data"]["at"] <= after + 1000
    assert set(reply["data"]) == {"kind", "message", "at"}
    assert_server_event(reply, airi_hub, parent=event_id(ev))


async def test_ping_without_message_or_at_is_answered(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a")
    reply = await a.request(HB, {"kind": "ping"})
    assert reply["data"]["kind"] == "pong"


async def test_wrapped_ping_is_answered(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a")
    start = a.mark()
    ev = await a.send(HB, {"kind": "ping", "message": "x"}, wrap=True)
    reply = await a.wait_for(HB, start=start)
    assert_server_event(reply, airi_hub, parent=event_id(ev))


async def test_pong_message_is_configurable(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"heartbeat": {"message": "still here"}})
    a = await airi_connect(hub, "a")
    reply = await a.request(HB, {"kind": "ping", "message": "\U0001fa75"})
    assert reply["data"]["message"] == "still here"


async def test_ping_is_answered_before_authentication(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"auth": {"token": "t"}})
    a = await airi_connect(hub, "a")
    reply = await a.request(HB, {"kind": "ping", "message": "\U0001fa75"})
    assert reply["data"]["kind"] == "pong"
    assert_server_event(reply, hub, parent=reply["metadata"]["event"]["parentId"])
    assert a.error_messages() == []


async def test_pong_heartbeat_is_not_answered(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    a_start, b_start = a.mark(), b.mark()
    await a.send(HB, {"kind": "pong", "message": "\U0001f49b", "at": 1})
    await a.send_raw("pong")
    await a.send_raw("ping")
    await a.expect_silence(start=a_start)
    await b.expect_silence(after=[a], start=b_start)


async def test_heartbeats_are_never_routed(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    b_start = b.mark()
    await a.request(HB, {"kind": "ping"})
    await a.send(HB, {"kind": "pong"})
    await a.send(HB, {"kind": "weird"})
    await a.request(HB, {"kind": "ping"})  # a's frames above are handled
    mine = await b.request(HB, {"kind": "ping"})  # anything routed to b arrived before this
    assert [e for e in b.received[b_start:]] == [mine]


# -- liveness ------------------------------------------------------------------------------------
async def test_silent_peer_goes_unhealthy_then_healthy_again(fast_hub, airi_connect):
    obs = await airi_connect(fast_hub, "observer", announce=True)
    a = await airi_connect(fast_hub, "stage", announce=True, index=2)
    ident = a.identity
    async with keepalive(obs):
        start = obs.mark()
        t0 = time.monotonic()
        bad = await obs.wait_for("registry:modules:health:unhealthy", start=start, timeout=2)
        assert time.monotonic() - t0 < 1.5
        assert bad["data"] == {"name": "stage", "index": 2, "identity": ident, "reason": "heartbeat late"}
        assert_server_event(bad, fast_hub)
        start = obs.mark()
        await a.send_raw("ping")
        good = await obs.wait_for("registry:modules:health:healthy", start=start, timeout=2)
        assert good["data"]["name"] == "stage" and good["data"]["index"] == 2
        assert good["data"]["identity"] == ident
        assert_server_event(good, fast_hub)
        # the peer was never de-announced
        assert [e for e in obs.received if e["type"] == "module:de-announced"] == []


async def test_silent_peer_expires_and_is_de_announced(fast_hub, airi_connect):
    obs = await airi_connect(fast_hub, "observer", announce=True)
    a = await airi_connect(fast_hub, "stage", announce=True)
    ident = a.identity
    async with keepalive(obs):
        start = obs.mark()
        gone = await obs.wait_for("module:de-announced", start=start, timeout=2.5)
        assert gone["data"] == {"name": "stage", "identity": ident, "reason": "heartbeat expired"} or gone["data"] == {
            "name": "stage", "index": None, "identity": ident, "reason": "heartbeat expired"
        }
        assert_server_event(gone, fast_hub)
        types = [e["type"] for e in obs.received[start:]]
        assert types.index("registry:modules:health:unhealthy") < types.index("module:de-announced")
        sync = await obs.wait_for("registry:modules:sync", start=start + types.index("module:de-announced"))
        assert modules_of(sync) == [("observer", None)]
    await a.wait_closed(timeout=2)
    assert a.close_code is not None


BEATS = {
    "raw-ping": "ping",
    "raw-pong": "pong",
    "hb-pong": json.dumps({"type": HB, "data": {"kind": "pong"}}),
    "hb-ping": json.dumps({"type": HB, "data": {"kind": "ping"}}),
    "bad-json": "{not json",  # any frame counts as activity, even a bad one
    "routed": json.dumps({"type": "test:chatter", "data": {}, "route": {"destinations": []}}),
}


async def test_any_frame_keeps_a_peer_alive(fast_hub, airi_connect):
    obs = await airi_connect(fast_hub, "observer", announce=True)
    peers = {name: await airi_connect(fast_hub, name, announce=True) for name in BEATS}
    start = obs.mark()

    async def beat(name):
        for _ in range(18):
            await peers[name].send_raw(BEATS[name])
            await asyncio.sleep(0.04)

    async with keepalive(obs):
        # ~0.7 s: a silent peer would be unhealthy after ~0.3 s and gone after ~0.55 s
        await asyncio.gather(*(beat(n) for n in BEATS))
    health = [
        (e["type"], e["data"].get("name")) for e in obs.received[start:]
        if e["type"].startswith("registry:modules:health") or e["type"] == "module:de-announced"
    ]
    assert health == []
    assert all(p.close_code is None for p in peers.values())


async def test_unhealthy_broadcast_reaches_every_authenticated_peer_only(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({**FAST, "auth": {"token": "t"}})
    eve = await airi_connect(hub, "eve")
    obs1 = await airi_connect(hub, "o1", token="t", announce=True)
    obs2 = await airi_connect(hub, "o2", token="t")  # authenticated, not announced
    a = await airi_connect(hub, "stage", token="t", announce=True)
    async with keepalive(obs1, obs2, eve):
        s1, s2 = obs1.mark(), obs2.mark()
        await obs1.wait_for("registry:modules:health:unhealthy", lambda e: e["data"]["name"] == "stage", start=s1, timeout=2)
        await obs2.wait_for("registry:modules:health:unhealthy", lambda e: e["data"]["name"] == "stage", start=s2, timeout=2)
    assert [e for e in eve.received if e["type"] != HB] == []
    assert a is not None


async def test_unannounced_silent_peer_causes_no_registry_broadcasts(fast_hub, airi_connect):
    """Health and de-announce events are about announced modules only (whether a silent
    unannounced peer is closed is not specified; it must not be announced as anything)."""
    obs = await airi_connect(fast_hub, "observer", announce=True)
    await airi_connect(fast_hub, "lurker")
    start = obs.mark()
    async with keepalive(obs):
        await asyncio.sleep(0.7)
    gone = [e for e in obs.received[start:] if e["type"] != "registry:modules:sync"]
    assert gone == []


async def test_unhealthy_consumer_is_skipped_until_it_is_active_again(fast_hub, airi_connect):
    sender = await airi_connect(fast_hub, "sender", announce=True)
    top = await airi_connect(fast_hub, "top", announce=True)
    low = await airi_connect(fast_hub, "low", announce=True)
    await consumer_register(top, "input:text", group="chat-ingestion", priority=10)
    await consumer_register(low, "input:text", group="chat-ingestion", priority=1)
    async with keepalive(sender, low):
        start = sender.mark()
        await sender.wait_for("registry:modules:health:unhealthy", lambda e: e["data"]["name"] == "top", start=start, timeout=2)
        l0, t0 = low.mark(), top.mark()
        await sender.send("input:text", {"text": "while top is late"})
        await low.wait_for("input:text", start=l0)
        assert [e for e in top.received[t0:] if e["type"] == "input:text"] == []
        # top is active again -> healthy -> preferred again
        await top.send_raw("ping")
        await sender.wait_for("registry:modules:health:healthy", lambda e: e["data"]["name"] == "top", start=start, timeout=2)
        l0, t0 = low.mark(), top.mark()
        await sender.send("input:text", {"text": "top is back"})
        await top.wait_for("input:text", start=t0)
        assert [e for e in low.received[l0:] if e["type"] == "input:text"] == []
