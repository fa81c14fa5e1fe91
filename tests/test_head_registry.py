"""PROTOCOL-HEAD.md section 3 (registry:modules:sync and the extension de-announce), 3.1 (reasons)
and decisions 2, 3 and 5: one registry keyed per module, both families listed (legacy first, then
extension entries without ``index`` whose identity gains ``kind``/``plugin``), each family's
notifications to every authenticated connection, one sync after a close, no broadcast for a
connection without modules."""

from __future__ import annotations

import pytest

from airi_core.testing import wait_until

from .head_helpers import (
    TOKEN,
    ext_module_announce,
    head_connect,
    mod_identity,
    settings,
    sync_entry,
    sync_ids,
)
from .protocol_helpers import assert_server_event, identity, keepalive


@pytest.fixture
async def hub(airi_hub_factory):
    return await airi_hub_factory(settings())


async def _count(hub, n: int) -> None:
    await wait_until(lambda: len(hub.registry) == n, 3.0, f"{n} connections left on the hub")


async def test_sync_lists_legacy_first_then_extension_modules_in_order(hub, airi_connect):
    h1 = await head_connect(airi_connect, hub, "h1")
    await ext_module_announce(h1, "x1", mod_identity("x1-id", "ext-1"))
    april = await airi_connect(hub, "april", announce=True, identity=identity("april", "april-plugin"))
    await ext_module_announce(h1, "x2", mod_identity("x2-id", "ext-1", {"l": "v"}))
    h3 = await head_connect(airi_connect, hub, "h3")
    start = h3.mark()
    await ext_module_announce(h3, "y", mod_identity("y-id", "ext-3"))
    sync = h3.of_type("registry:modules:sync", start)[-1]
    assert sync["data"]["modules"] == [
        {"name": "april", "identity": april.identity},  # legacy: April shape (no index announced)
        sync_entry("x1", mod_identity("x1-id", "ext-1")),
        sync_entry("x2", mod_identity("x2-id", "ext-1", {"l": "v"})),
        sync_entry("y", mod_identity("y-id", "ext-3")),
    ]
    for m in sync["data"]["modules"][1:]:
        assert "index" not in m and m["identity"]["kind"] == "plugin"
    # the April client sees the same listing
    a_sync = await april.wait_for("registry:modules:sync", lambda e: len(e["data"]["modules"]) == 4)
    assert a_sync["data"]["modules"] == sync["data"]["modules"]


async def test_legacy_entry_with_index_keeps_it(hub, airi_connect):
    h = await head_connect(airi_connect, hub, "h")
    await ext_module_announce(h, "x", mod_identity("x-id", "e"))
    start = h.mark()
    await airi_connect(hub, "tts", announce=True, index=0, identity=identity("tts"))
    sync = await h.wait_for("registry:modules:sync", lambda e: len(e["data"]["modules"]) == 2, start=start)
    assert sync["data"]["modules"][0] == {"name": "tts", "index": 0, "identity": identity("tts")}


async def test_close_de_announces_each_module_then_one_sync(hub, airi_connect):
    a = await head_connect(airi_connect, hub, "a")
    obs = await airi_connect(hub, "obs", announce=True)
    idents = [mod_identity(f"m-{i}", "ext-a") for i in range(2)]
    for i, ident in enumerate(idents):
        await ext_module_announce(a, f"mod-{i}", ident)
    start = obs.mark()
    await a.close()
    await wait_until(lambda: len(obs.of_type("registry:modules:sync", start)) >= 1, 3.0, "the sync after the close")
    await obs.expect_silence("registry:modules:sync", start=len(obs.received))
    des = obs.of_type("extension:module:de-announced", start)
    assert [d["data"] for d in des] == [
        {"name": f"mod-{i}", "identity": ident, "possibleEvents": [], "reason": "connection closed"} for i, ident in enumerate(idents)
    ]
    for d in des:
        assert_server_event(d, hub, parent=None)
    syncs = obs.of_type("registry:modules:sync", start)
    assert len(syncs) == 1, syncs
    assert obs.received.index(syncs[0]) > obs.received.index(des[-1])
    assert sync_ids(syncs[0]) == [("obs", "obs-instance")]
    assert not obs.of_type("module:de-announced", start)  # no cross-family translation (decision 2)


async def test_a_connection_without_modules_closes_silently(hub, airi_connect):
    a = await head_connect(airi_connect, hub, "a")
    obs = await airi_connect(hub, "obs")
    await a.send("extension:announce", {"identity": {"id": "ext-a"}}, wrap=True)
    await a.fence()
    start = obs.mark()
    await a.close()
    await _count(hub, 1)
    await obs.expect_silence(start=start)


async def test_mixed_connection_de_announces_each_family(hub, airi_connect):
    """A connection holding a legacy module and extension modules: on close each module in its own
    family (decision 3), then one sync."""
    a = await head_connect(airi_connect, hub, "a")
    obs = await airi_connect(hub, "obs")
    await ext_module_announce(a, "ext-mod", mod_identity("e-1", "ext-a"))
    leg = identity("legacy-mod", "legacy-plugin")
    s0 = obs.mark()
    await a.send("module:announce", {"name": "legacy-mod", "identity": leg})
    await obs.wait_for("module:announced", start=s0)
    sync = await obs.wait_for("registry:modules:sync", lambda e: len(e["data"]["modules"]) == 2, start=s0)
    assert sync_ids(sync) == [("legacy-mod", leg["id"]), ("ext-mod", "e-1")]
    start = obs.mark()
    await a.close()
    await wait_until(lambda: len(obs.of_type("registry:modules:sync", start)) >= 1, 3.0, "the sync after the close")
    await obs.expect_silence("registry:modules:sync", start=len(obs.received))
    [leg_de] = obs.of_type("module:de-announced", start)
    assert leg_de["data"]["name"] == "legacy-mod" and leg_de["data"]["reason"] == "connection closed"
    [ext_de] = obs.of_type("extension:module:de-announced", start)
    assert ext_de["data"]["name"] == "ext-mod" and ext_de["data"]["reason"] == "connection closed"
    assert len(obs.of_type("registry:modules:sync", start)) == 1
    assert obs.of_type("registry:modules:sync", start)[0]["data"]["modules"] == []


async def test_both_families_reach_every_authenticated_connection(airi_hub_factory, airi_connect):
    """Decision 2: legacy notifications reach HEAD connections, extension ones reach April ones;
    unauthenticated connections get neither."""
    hub = await airi_hub_factory(settings(TOKEN))
    head = await head_connect(airi_connect, hub, "head", token=TOKEN)
    april = await airi_connect(hub, "april", token=TOKEN)
    unauth = await airi_connect(hub, "unauth")
    u0 = unauth.mark()
    h0, a0 = head.mark(), april.mark()
    await ext_module_announce(head, "hm", mod_identity("hm-1", "head"))
    await april.wait_for("extension:module:announced", start=a0)
    await april.announce("april")
    await head.wait_for("module:announced", lambda e: e["data"]["name"] == "april", start=h0)
    await head.close()
    await april.wait_for("extension:module:de-announced", start=a0)
    await unauth.expect_silence(start=u0)


async def test_heartbeat_expired_reason(airi_hub_factory, airi_connect):
    """3.1: a silent connection closed by the liveness check de-announces its modules with
    ``heartbeat expired``."""
    hub = await airi_hub_factory(settings(heartbeat={"read_timeout_ms": 60000, "check_interval_ms": 30}))
    a = await head_connect(airi_connect, hub, "a")
    obs = await airi_connect(hub, "obs")
    async with keepalive(obs):
        await ext_module_announce(a, "quiet", mod_identity("q-1", "ext-q"))
        start = obs.mark()
        de = await obs.wait_for("extension:module:de-announced", start=start, timeout=5)
    assert de["data"] == {"name": "quiet", "identity": mod_identity("q-1", "ext-q"), "possibleEvents": [], "reason": "heartbeat expired"}
    await a.wait_closed()
