"""The hub's own notifications (``module:announced``, de-announces) may wait a moment in the
transport's run for more of them (fewer, larger writes in a storm), but each peer's order holds
and nothing waits longer than the gather time. The gather time is stretched here (and asked of
any number of peers, not 100 and more) so that the difference shows over real sockets."""

from __future__ import annotations

import pytest

import airi_core.server.transport as transport

GATHER_S = 2.0


@pytest.fixture
def long_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "RUN_GATHER_PER_PEER_S", GATHER_S)
    monkeypatch.setattr(transport, "RUN_GATHER_MAX_S", GATHER_S)
    monkeypatch.setattr(transport, "RUN_GATHER_MIN_PEERS", 1)


def _index(events: list[dict], type: str, name: str) -> int:
    for i, ev in enumerate(events):
        if ev.get("type") == type and ev.get("data", {}).get("name") == name:
            return i
    return -1


def _pong_after(events: list[dict], start: int) -> int:
    for i, ev in enumerate(events[start:], start):
        if ev.get("type") == "transport:connection:heartbeat" and ev.get("data", {}).get("kind") == "pong":
            return i
    return -1


async def test_what_is_sent_to_a_peer_takes_its_waiting_notifications_along_first(airi_hub, airi_connect, long_gather) -> None:
    watcher = await airi_connect(airi_hub, "watcher", announce=True)
    quiet = await airi_connect(airi_hub, "quiet", announce=True)
    # the newcomer's announce has been handled once its own sync is back: module:announced for
    # the others is in the run, gathering
    await airi_connect(airi_hub, "newcomer", announce=True)
    assert airi_hub._transport._run, "module:announced should be gathering in the run"
    start = len(watcher.received)
    await watcher.send("transport:connection:heartbeat", {"kind": "ping", "message": "order"})
    pong = await watcher.wait_for("transport:connection:heartbeat", lambda e: e["data"].get("kind") == "pong", start=start)
    events = watcher.received
    announced = _index(events, "module:announced", "newcomer")
    assert announced >= 0 and announced < events.index(pong), [e["type"] for e in events]
    # every other peer gets it too (with the registry sync that follows, or when the gather
    # time is over)
    await quiet.wait_for("module:announced", lambda e: e["data"].get("name") == "newcomer", timeout=GATHER_S + 3)


async def test_a_closing_peer_gets_its_waiting_notifications_before_the_close(airi_hub, airi_connect, long_gather) -> None:
    watcher = await airi_connect(airi_hub, "watcher", announce=True)
    await airi_connect(airi_hub, "newcomer", announce=True)
    # the hub closes the watcher while the newcomer's module:announced is still gathering
    peer = next(p for p in airi_hub.registry if p.name == "watcher")
    airi_hub.disconnect(peer, "test", 1000)
    await watcher.wait_closed(timeout=GATHER_S + 3)
    assert _index(watcher.received, "module:announced", "newcomer") >= 0, [e["type"] for e in watcher.received]


async def test_many_notifications_reach_everyone_in_order(airi_hub, airi_connect, long_gather) -> None:
    watcher = await airi_connect(airi_hub, "watcher", announce=True)
    names = [f"m{i}" for i in range(8)]
    for name in names:
        await airi_connect(airi_hub, name, announce=True)
    start = len(watcher.received)
    await watcher.send("transport:connection:heartbeat", {"kind": "ping", "message": "all"})
    await watcher.wait_for("transport:connection:heartbeat", lambda e: e["data"].get("kind") == "pong", start=start)
    order = [e["data"]["name"] for e in watcher.received if e.get("type") == "module:announced"]
    assert order == names


async def test_a_notification_nothing_else_carries_goes_out_when_the_gather_time_is_over(airi_hub_factory, airi_connect, long_gather) -> None:
    # the registry's coalesced sync held back far longer than the gather time: the only thing
    # the quiet peer gets is the newcomer's module:announced, and it gets it on time
    hub = await airi_hub_factory({"plugins": {"registry": {"sync_debounce_ms": 60_000, "sync_max_delay_ms": 60_000}}})
    quiet = await airi_connect(hub, "quiet")
    newcomer = await airi_connect(hub, "newcomer")
    start = len(newcomer.received)
    await newcomer.send("module:announce", {"name": "newcomer", "identity": {"id": "n", "kind": "plugin", "plugin": {"id": "n"}}})
    await newcomer.send("transport:connection:heartbeat", {"kind": "ping", "message": "handled"})
    await newcomer.wait_for("transport:connection:heartbeat", lambda e: e["data"].get("kind") == "pong", start=start)
    assert hub._transport._run
    assert _index(quiet.received, "module:announced", "newcomer") < 0  # still gathering (GATHER_S)
    await quiet.wait_for("module:announced", lambda e: e["data"].get("name") == "newcomer", timeout=GATHER_S + 3)
    assert not hub._transport._run


async def test_a_small_hub_does_not_gather(airi_hub, airi_connect) -> None:
    await airi_connect(airi_hub, "watcher", announce=True)
    await airi_connect(airi_hub, "newcomer", announce=True)
    assert not airi_hub._transport._run  # written at the end of the iteration, as it was queued
