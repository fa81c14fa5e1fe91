"""PROTOCOL.md "Connection lifecycle" steps 3-4: module:announce validation and order, the
registry broadcasts, re-announce (incl. the identical re-announce improvement), de-announce on
close, and the announced identity being authoritative."""

from __future__ import annotations

import pytest

from airi_core import errors
from airi_core.testing import wait_until

from .protocol_helpers import (
    assert_server_event,
    event_id,
    expect_error,
    identity,
    modules_of,
    probe_one,
)

NAME_INVALID = "the field 'name' must be a non-empty string for event 'module:announce'"
INDEX_INVALID = "the field 'index' must be a non-negative integer for event 'module:announce'"
IDENTITY_INVALID = "module identity must include kind=plugin and a plugin id for event 'module:announce'"


async def _announce_raw(client, data):
    start = client.mark()
    ev = await client.send("module:announce", data)
    return start, event_id(ev)


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [None, "", 5, True, [], {"n": 1}, "<missing>"])
async def test_announce_name_invalid(airi_hub, airi_connect, name):
    a = await airi_connect(airi_hub, "a")
    data = {"identity": identity("a")}
    if name != "<missing>":
        data["name"] = name
    start, eid = await _announce_raw(a, data)
    err = await expect_error(a, NAME_INVALID, start=start, parent=eid)
    assert err["data"]["message"] == errors.MODULE_ANNOUNCE_NAME_INVALID
    assert_server_event(err, airi_hub, parent=eid)


@pytest.mark.parametrize("index", [-1, 1.5, "1", True, False, None, [0], {"i": 0}, -0.5])
async def test_announce_index_invalid(airi_hub, airi_connect, index):
    a = await airi_connect(airi_hub, "a")
    start, eid = await _announce_raw(a, {"name": "a", "index": index, "identity": identity("a")})
    err = await expect_error(a, INDEX_INVALID, start=start, parent=eid)
    assert err["data"]["message"] == errors.MODULE_ANNOUNCE_INDEX_INVALID


@pytest.mark.parametrize(
    "ident",
    [
        "<missing>",
        None,
        "a",
        {},
        {"id": "x", "plugin": {"id": "a"}},
        {"id": "x", "kind": "module", "plugin": {"id": "a"}},
        {"id": "x", "kind": "plugin"},
        {"id": "x", "kind": "plugin", "plugin": "a"},
        {"id": "x", "kind": "plugin", "plugin": {}},
        {"id": "x", "kind": "plugin", "plugin": {"id": ""}},
        {"id": "x", "kind": "plugin", "plugin": {"id": 7}},
    ],
)
async def test_announce_identity_invalid(airi_hub, airi_connect, ident):
    a = await airi_connect(airi_hub, "a")
    data = {"name": "a"}
    if ident != "<missing>":
        data["identity"] = ident
    start, eid = await _announce_raw(a, data)
    err = await expect_error(a, IDENTITY_INVALID, start=start, parent=eid)
    assert err["data"]["message"] == errors.MODULE_ANNOUNCE_IDENTITY_INVALID


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "", "index": -1, "identity": None}, NAME_INVALID),
        ({"index": -1}, NAME_INVALID),
        ({"name": "a", "index": -1, "identity": None}, INDEX_INVALID),
        ({"name": "a", "index": "x"}, INDEX_INVALID),
        ({"name": "a", "index": 0, "identity": {"kind": "nope"}}, IDENTITY_INVALID),
    ],
)
async def test_announce_validation_order(airi_hub, airi_connect, data, message):
    a = await airi_connect(airi_hub, "a")
    start, eid = await _announce_raw(a, data)
    await expect_error(a, message, start=start, parent=eid)
    assert len(a.error_messages(start)) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": ""}, NAME_INVALID),
        ({"name": "a", "index": -3, "identity": identity("a")}, INDEX_INVALID),
        ({"name": "a", "identity": {"kind": "plugin"}}, IDENTITY_INVALID),
        ({"name": "a", "index": 1, "identity": identity("a")}, "must authenticate before announcing"),
    ],
)
async def test_announce_field_checks_come_before_the_authentication_check(airi_hub_factory, airi_connect, data, message):
    hub = await airi_hub_factory({"auth": {"token": "t"}})
    a = await airi_connect(hub, "a")
    start, eid = await _announce_raw(a, data)
    await expect_error(a, message, start=start, parent=eid)


async def test_failed_announce_registers_nothing_and_tells_nobody(airi_hub, airi_connect):
    b = await airi_connect(airi_hub, "b", announce=True)
    a = await airi_connect(airi_hub, "a")
    b_start = b.mark()
    for data in ({"name": ""}, {"name": "a", "index": -1, "identity": identity("a")}, {"name": "a", "identity": {}}):
        await a.send("module:announce", data)
    await a.wait_for("error", lambda e: len(a.error_messages()) == 3)
    await b.expect_silence(after=[a], start=b_start)
    c = await airi_connect(airi_hub, "c")
    assert modules_of(await c.wait_for("registry:modules:sync")) == [("b", None)]


# -- success -----------------------------------------------------------------------------------------
async def test_announce_tells_others_and_syncs_everyone(airi_hub, airi_connect):
    b = await airi_connect(airi_hub, "b", announce=True)
    c = await airi_connect(airi_hub, "c")  # authenticated, not announced
    a = await airi_connect(airi_hub, "a")
    starts = {x.name: x.mark() for x in (a, b, c)}
    ident = identity("stage-web", "proj-airi:stage-web", labels={"env": "dev"}, version="1.2.3")
    ev = await a.send(
        "module:announce",
        {"name": "stage-web", "index": 0, "identity": ident, "possibleEvents": ["input:text"]},
    )
    eid = event_id(ev)
    expected = [("b", None), ("stage-web", 0)]
    for x in (b, c):
        ann = await x.wait_for("module:announced", start=starts[x.name])
        assert ann["data"] == {"name": "stage-web", "index": 0, "identity": ident}
        assert_server_event(ann, airi_hub, parent=eid)
    for x in (a, b, c):
        sync = await x.wait_for("registry:modules:sync", start=starts[x.name])
        assert modules_of(sync) == expected
        assert_server_event(sync, airi_hub)
        for m in sync["data"]["modules"]:
            assert set(m) <= {"name", "index", "identity"}
        # announced comes before the sync for the other peers
        types = [e["type"] for e in x.received[starts[x.name]:]]
        if x is not a:
            assert types.index("module:announced") < types.index("registry:modules:sync")
    # the announcer does not get module:announced about itself
    await a.expect_silence("module:announced", start=starts["a"])
    assert a.error_messages() == []


async def test_announce_without_index_omits_it_and_index_zero_is_kept(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a")
    b = await airi_connect(airi_hub, "b")
    sync = await a.announce("no-index")
    entry = next(m for m in sync["data"]["modules"] if m["name"] == "no-index")
    assert entry.get("index") is None
    start = a.mark()
    await b.announce("zero", index=0)
    sync = await a.wait_for("registry:modules:sync", lambda e: ("zero", 0) in modules_of(e), start=start)
    zero = next(m for m in sync["data"]["modules"] if m["name"] == "zero")
    assert zero["index"] == 0


async def test_two_peers_same_name_different_indexes(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "worker", announce=True, index=0)
    b = await airi_connect(airi_hub, "worker", announce=True, index=1)
    c = await airi_connect(airi_hub, "c")
    sync = await c.wait_for("registry:modules:sync")
    assert sorted(modules_of(sync)) == [("worker", 0), ("worker", 1)]
    assert a.error_messages() == b.error_messages() == []


# -- re-announce -----------------------------------------------------------------------------------
async def test_identical_reannounce_sends_no_de_announce(airi_hub, airi_connect):
    """improvement: the JS SDK announces twice on every no-token connect."""
    a = await airi_connect(airi_hub, "a")
    b = await airi_connect(airi_hub, "b", announce=True)
    await a.announce("stage", index=1)
    a_start, b_start = a.mark(), b.mark()
    for _ in range(3):
        await a.send("module:announce", {"name": "stage", "index": 1, "identity": a.identity})
    # make sure all three were processed (frame order), then check nothing was de-announced
    assert await probe_one(a, [b]) == {"b"}
    for x, start in ((a, a_start), (b, b_start)):
        assert [e for e in x.received[start:] if e["type"] == "module:de-announced"] == []
        assert x.error_messages(start) == []
    c = await airi_connect(airi_hub, "c")
    sync = await c.wait_for("registry:modules:sync")
    assert sorted(modules_of(sync), key=str) == sorted([("b", None), ("stage", 1)], key=str)


@pytest.mark.parametrize(
    "change",
    [
        {"name": "stage-2"},
        {"index": 2},
        {"identity": identity("stage", "other-plugin")},
        {"identity": identity("stage", labels={"devtools": "false"})},
    ],
)
async def test_changed_reannounce_de_announces_first(airi_hub, airi_connect, change):
    a = await airi_connect(airi_hub, "a")
    b = await airi_connect(airi_hub, "b", announce=True)
    old_ident = identity("stage")
    await a.announce("stage", index=1, identity=old_ident)
    b_start = b.mark()
    new = {"name": "stage", "index": 1, "identity": old_ident, **change}
    ev = await a.send("module:announce", new)
    gone = await b.wait_for("module:de-announced", start=b_start)
    assert gone["data"] == {"name": "stage", "index": 1, "identity": old_ident, "reason": "re-announcing"}
    assert_server_event(gone, airi_hub)
    ann = await b.wait_for("module:announced", start=b_start)
    assert ann["data"] == {"name": new["name"], "index": new["index"], "identity": new["identity"]}
    assert_server_event(ann, airi_hub, parent=event_id(ev))
    sync = await b.wait_for("registry:modules:sync", lambda e: (new["name"], new["index"]) in modules_of(e), start=b_start)
    assert sorted(modules_of(sync), key=str) == sorted([("b", None), (new["name"], new["index"])], key=str)
    types = [e["type"] for e in b.received[b_start:]]
    assert types.index("module:de-announced") < types.index("module:announced") < types.index("registry:modules:sync")


# -- de-announce on close ---------------------------------------------------------------------------
async def test_close_de_announces_with_connection_closed(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "stage", announce=True, index=3)
    b = await airi_connect(airi_hub, "b", announce=True)
    c = await airi_connect(airi_hub, "c")
    starts = (b.mark(), c.mark())
    ident = a.identity
    await a.close()
    for x, start in zip((b, c), starts):
        gone = await x.wait_for("module:de-announced", start=start)
        assert gone["data"] == {"name": "stage", "index": 3, "identity": ident, "reason": "connection closed"}
        assert_server_event(gone, airi_hub)
        sync = await x.wait_for("registry:modules:sync", start=start)
        assert modules_of(sync) == [("b", None)]
        types = [e["type"] for e in x.received[start:]]
        assert types.index("module:de-announced") < types.index("registry:modules:sync")


async def test_close_of_unannounced_peer_sends_no_de_announce(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a")
    b = await airi_connect(airi_hub, "b", announce=True)
    b_start = b.mark()
    await a.close()
    # a closed socket cannot fence: wait until the hub has dropped it (its disconnect hooks,
    # which would broadcast a de-announce, run as it leaves the registry)
    await wait_until(lambda: len(airi_hub.registry) == 1, what="the hub to drop a")
    await b.expect_silence("module:de-announced", start=b_start)


async def test_de_announce_not_sent_to_unauthenticated_peers(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"auth": {"token": "t"}})
    eve = await airi_connect(hub, "eve")
    a = await airi_connect(hub, "a", token="t", announce=True)
    b = await airi_connect(hub, "b", token="t", announce=True)
    start = b.mark()
    await a.close()
    await b.wait_for("module:de-announced", start=start)
    await eve.expect_silence(start=0)


# -- identity --------------------------------------------------------------------------------------
async def test_metadata_source_never_becomes_the_identity_before_announcing(airi_hub, airi_connect):
    """Deliberate difference (issue 9): PROTOCOL.md lets an authenticated peer's metadata.source
    be its identity until it announces; here an unannounced peer has no identity to match on.
    It still receives broadcasts and peer:ID, never plugin:/instance:/label: destinations,
    whatever its frames claim."""
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b")
    b.identity = identity("claimed", "claimed-plugin", labels={"role": "x"})
    await b.send("test:hello", {}, route={"destinations": []})
    assert await probe_one(a, [b]) == {"b"}
    b_id = next(p.id for p in airi_hub.registry if p.name == "" and p.authenticated)
    res = [
        await probe_one(a, [b], route={"destinations": [dest]})
        for dest in ("plugin:claimed-plugin", "instance:claimed-instance", "label:role=x", "plugin:b", "*", f"peer:{b_id}")
    ]
    assert res == [set(), set(), set(), set(), {"b"}, {"b"}]
    # once it announces, its announced identity is what destinations match
    await b.announce("b", identity=identity("b", "real-plugin", labels={"role": "y"}))
    res = [
        await probe_one(a, [b], route={"destinations": [dest]})
        for dest in ("plugin:claimed-plugin", "label:role=x", "plugin:real-plugin", "label:role=y")
    ]
    assert res == [set(), set(), {"b"}, {"b"}]


async def test_announced_identity_is_authoritative(airi_hub, airi_connect):
    """improvement: once announced, later metadata.source values do not change the identity."""
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True, identity=identity("b", "real-plugin"))
    b.identity = identity("b", "fake-plugin", instance="fake-instance", labels={"devtools": "true"})
    await b.send("test:spoof", {}, route={"destinations": []})
    await b.send("transport:connection:heartbeat", {"kind": "ping"})
    await b.wait_for("transport:connection:heartbeat")
    results = [
        await probe_one(a, [b], route={"destinations": [dest]})
        for dest in ("plugin:real-plugin", "instance:b-instance", "plugin:fake-plugin", "instance:fake-instance", "label:devtools")
    ]
    assert results == [{"b"}, {"b"}, set(), set(), set()]
    # the registry still lists the announced identity
    c = await airi_connect(airi_hub, "c")
    sync = await c.wait_for("registry:modules:sync")
    entry = next(m for m in sync["data"]["modules"] if m["name"] == "b")
    assert entry["identity"] == identity("b", "real-plugin")
