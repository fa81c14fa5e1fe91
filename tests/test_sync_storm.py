"""The coalesced registry sync during a storm of connections: while many connections that
authenticated lately have not announced yet, the sync waits for them (at most
``sync_max_delay_ms`` after the first change) instead of going out in every lull, a full listing
to every peer each time. The deltas (``module:announced``) are never held back."""

from __future__ import annotations

import asyncio

from airi_plugins.registry import STORM_AUTHENTICATIONS

SETTINGS = {"plugins": {"registry": {"sync_debounce_ms": 10, "sync_max_delay_ms": 5000}}}


def _identity(name: str) -> dict:
    return {"id": name, "kind": "plugin", "plugin": {"id": name}}


async def _pong(client, start: int) -> None:
    await client.send("transport:connection:heartbeat", {"kind": "ping", "message": "fence"})
    await client.wait_for("transport:connection:heartbeat", lambda e: e["data"].get("kind") == "pong", start=start)


async def test_a_storm_gets_one_sync_once_it_has_announced(airi_hub_factory, airi_connect) -> None:
    hub = await airi_hub_factory(SETTINGS)
    clients = [await airi_connect(hub, f"s{i}") for i in range(STORM_AUTHENTICATIONS + 4)]
    watcher = clients[0]
    start = len(watcher.received)
    first = clients[1]
    await first.send("module:announce", {"name": "s1", "identity": _identity("s1")})
    await watcher.wait_for("module:announced", lambda e: e["data"]["name"] == "s1", start=start)  # the delta: at once
    await asyncio.sleep(0.3)  # 30 debounce periods: a lull that used to send a sync
    await _pong(watcher, start)
    assert not watcher.of_type("registry:modules:sync", start), "the sync should wait for the storm"
    for i, c in enumerate(clients[2:], 2):
        await c.send("module:announce", {"name": f"s{i}", "identity": _identity(f"s{i}")})
    # the rest announced: fewer than STORM_AUTHENTICATIONS are left waiting, the sync goes out
    want = {f"s{i}" for i in range(1, len(clients))}
    sync = await watcher.wait_for(
        "registry:modules:sync", lambda e: want <= {m["name"] for m in e["data"]["modules"]}, start=start, timeout=3
    )
    assert sync is watcher.of_type("registry:modules:sync", start)[0], "one sync, listing everyone"


async def test_a_few_quiet_connections_do_not_hold_the_sync(airi_hub_factory, airi_connect) -> None:
    hub = await airi_hub_factory(SETTINGS)
    quiet = [await airi_connect(hub, f"q{i}") for i in range(3)]
    start = len(quiet[0].received)
    announcer = await airi_connect(hub, "a")
    await announcer.send("module:announce", {"name": "a", "identity": _identity("a")})
    await quiet[0].wait_for("registry:modules:sync", lambda e: "a" in {m["name"] for m in e["data"]["modules"]}, start=start, timeout=1)


async def test_a_storm_that_never_announces_holds_the_sync_no_longer_than_the_max_delay(airi_hub_factory, airi_connect) -> None:
    hub = await airi_hub_factory({"plugins": {"registry": {"sync_debounce_ms": 10, "sync_max_delay_ms": 600}}})
    clients = [await airi_connect(hub, f"s{i}") for i in range(STORM_AUTHENTICATIONS + 2)]
    watcher = clients[0]
    start = len(watcher.received)
    await clients[1].send("module:announce", {"name": "lone", "identity": _identity("lone")})
    await watcher.wait_for("registry:modules:sync", lambda e: "lone" in {m["name"] for m in e["data"]["modules"]}, start=start, timeout=3)
