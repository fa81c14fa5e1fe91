"""PROTOCOL.md "Event envelope": the metadata of every event the server originates (source, a
fresh event id, parentId on the listed replies and, as an improvement, on every direct reply),
in both wire formats."""

from __future__ import annotations

import json

import pytest

from airi_core import errors

from .protocol_helpers import (
    SERVER_TYPES,
    assert_server_event,
    consumer_register,
    event_id,
    identity,
    keepalive,
    parent_id,
    raw_objects,
)

HB = "transport:connection:heartbeat"


async def _scenario(hub, connect):
    """Make the hub send every kind of event it originates; returns the clients."""
    obs = await connect(hub, "observer", token="tok", announce=True)
    a = await connect(hub, "a")
    await a.send("test:unauth", {})  # not authenticated
    await a.send("module:authenticate", {"token": "bad"})  # invalid token
    await a.authenticate("tok")  # module:authenticated + sync
    await a.announce("a", index=0)  # module:announced (to obs) + syncs
    await a.send("module:announce", {"name": "a", "index": 1, "identity": a.identity})  # de-announce re-announcing
    await a.request(HB, {"kind": "ping"})  # pong
    await a.send_raw("{")  # invalid JSON
    await a.send_raw('{"type": 1}')  # invalid event format
    await a.send("ui:configure", {"moduleName": "nobody"})
    await a.send("input:text", {}, route={"delivery": {"required": True}})
    await a.send("module:consumer:register", {})
    await a.request(HB, {"kind": "ping"})
    async with keepalive(obs):
        await obs.wait_for("registry:modules:health:unhealthy", timeout=2)
        await a.send_raw("ping")
        await obs.wait_for("registry:modules:health:healthy", timeout=2)
        await a.close()
        await obs.wait_for("module:de-announced", lambda e: e["data"]["reason"] == "connection closed", timeout=2)
    return obs, a


@pytest.mark.parametrize("wire_format", ["superjson", "json"])
async def test_every_server_event_carries_server_metadata(airi_hub_factory, airi_connect, wire_format):
    hub = await airi_hub_factory(
        {"server": {"instance_id": "hub-under-test", "wire_format": wire_format}, "auth": {"token": "tok"}, "heartbeat": {"check_interval_ms": 50}}
    )
    assert hub.instance_id == "hub-under-test"
    obs, a = await _scenario(hub, airi_connect)
    seen_types = set()
    for client in (obs, a):
        ids = []  # one broadcast is one event (one id) for all its receivers: check per receiver
        for obj, ev in zip(raw_objects(client), client.received):
            if wire_format == "superjson":
                assert set(obj) == {"json"}, obj
            else:
                assert "json" not in obj and obj == ev
            assert ev["type"] in SERVER_TYPES, ev
            assert ev["metadata"]["source"] == {
                "kind": "plugin",
                "plugin": {"id": "proj-airi:server-runtime", "version": hub.version},
                "id": "hub-under-test",
            }
            assert_server_event(ev, hub)
            seen_types.add(ev["type"])
            ids.append(event_id(ev))
        assert len(ids) == len(set(ids)), "server event ids must be fresh"
    assert seen_types == SERVER_TYPES


async def test_default_instance_id_is_random_per_hub_and_stable(airi_hub_factory, airi_connect):
    h1 = await airi_hub_factory()
    h2 = await airi_hub_factory()
    a = await airi_connect(h1, "a")
    b = await airi_connect(h2, "b")
    await a.request(HB, {"kind": "ping"})
    src_a = {e["metadata"]["source"]["id"] for e in a.received}
    src_b = {e["metadata"]["source"]["id"] for e in b.received}
    assert len(src_a) == 1 and len(src_b) == 1 and src_a != src_b
    assert src_a == {h1.instance_id} and isinstance(h1.instance_id, str) and h1.instance_id


async def test_connect_time_events_have_no_parent(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a")
    for ev in a.received[:2]:
        assert_server_event(ev, airi_hub, parent=None)


def _direct_replies():
    """(name, event type, data, expected reply type, expected error message) for every direct reply."""
    return [
        ("invalid-token", "module:authenticate", {"token": "bad"}, "error", errors.INVALID_TOKEN),
        ("authenticated", "module:authenticate", {"token": "tok"}, "module:authenticated", None),
        ("not-authenticated", "test:x", {}, "error", errors.NOT_AUTHENTICATED),
        ("pong", HB, {"kind": "ping"}, HB, None),
        ("must-auth", "module:announce", {"name": "a", "identity": identity("a")}, "error", errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING),
        ("name", "module:announce", {"name": ""}, "error", errors.MODULE_ANNOUNCE_NAME_INVALID),
        ("index", "module:announce", {"name": "a", "index": -1}, "error", errors.MODULE_ANNOUNCE_INDEX_INVALID),
        ("identity", "module:announce", {"name": "a"}, "error", errors.MODULE_ANNOUNCE_IDENTITY_INVALID),
        ("ui-unauth", "ui:configure", {"moduleName": "x"}, "error", errors.NOT_AUTHENTICATED),
        ("consumer-unauth", "module:consumer:register", {"event": "x"}, "error", errors.NOT_AUTHENTICATED),
    ]


@pytest.mark.parametrize("case", _direct_replies(), ids=[c[0] for c in _direct_replies()])
async def test_direct_replies_before_authentication_carry_parent_id(airi_hub_factory, airi_connect, case):
    _, etype, data, reply_type, message = case
    hub = await airi_hub_factory({"auth": {"token": "tok"}})
    a = await airi_connect(hub, "a")
    start = a.mark()
    ev = await a.send(etype, data)
    reply = await a.wait_for(reply_type, start=start)
    assert_server_event(reply, hub, parent=event_id(ev))
    if message is not None:
        assert reply["data"] == {"message": message}


AUTHENTICATED_REPLIES = [
    ("ui-name", "ui:configure", {"config": {}}, errors.UI_CONFIGURE_MODULE_NAME_INVALID),
    ("ui-index", "ui:configure", {"moduleName": "x", "moduleIndex": -1}, errors.UI_CONFIGURE_MODULE_INDEX_INVALID),
    ("ui-not-found", "ui:configure", {"moduleName": "x"}, errors.MODULE_NOT_FOUND),
    ("consumer-event", "module:consumer:register", {"event": ""}, errors.MODULE_CONSUMER_EVENT_INVALID),
    ("consumer-unregister-event", "module:consumer:unregister", {}, errors.MODULE_CONSUMER_EVENT_INVALID),
]


@pytest.mark.parametrize("case", AUTHENTICATED_REPLIES, ids=[c[0] for c in AUTHENTICATED_REPLIES])
async def test_direct_error_replies_carry_parent_id(airi_hub, airi_connect, case):
    _, etype, data, message = case
    a = await airi_connect(airi_hub, "a", announce=True)
    start = a.mark()
    ev = await a.send(etype, data)
    reply = await a.wait_for("error", start=start)
    assert reply["data"] == {"message": message}
    assert_server_event(reply, airi_hub, parent=event_id(ev))


async def test_required_delivery_error_carries_parent_id(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    start = a.mark()
    ev = await a.send("job:x", {}, route={"delivery": {"mode": "consumer", "required": True}})
    reply = await a.wait_for("error", start=start)
    assert reply["data"] == {"message": "no consumer registered for requested event delivery"}
    assert_server_event(reply, airi_hub, parent=event_id(ev))


async def test_announced_carries_the_announce_id_and_sync_after_auth_the_auth_id(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"auth": {"token": "tok"}})
    obs = await airi_connect(hub, "obs", token="tok", announce=True)
    a = await airi_connect(hub, "a")
    start = a.mark()
    auth = await a.send("module:authenticate", {"token": "tok"})
    sync = await a.wait_for("registry:modules:sync", start=start)
    assert parent_id(sync) == event_id(auth)
    o_start = obs.mark()
    ann = await a.send("module:announce", {"name": "a", "identity": a.identity})
    announced = await obs.wait_for("module:announced", start=o_start)
    assert_server_event(announced, hub, parent=event_id(ann))


async def test_wrapped_request_replies_carry_parent_id(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    for etype, data in ((HB, {"kind": "ping"}), ("ui:configure", {"moduleName": "x"})):
        start = a.mark()
        ev = await a.send(etype, data, wrap=True)
        reply = await a.wait_for(start=start)
        assert parent_id(reply) == event_id(ev)


async def test_reply_to_event_without_id_has_no_parent_and_no_null(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    start = a.mark()
    await a.send_raw(json.dumps({"type": HB, "data": {"kind": "ping"}}))
    await a.send_raw(json.dumps({"type": "ui:configure", "data": {"moduleName": "x"}, "metadata": {"event": {}}}))
    await a.wait_for("error", start=start)
    for ev in a.received[start:]:
        assert_server_event(ev, airi_hub, parent=None)
    raw = a.raw[start:]
    assert all("null" not in (r if isinstance(r, str) else r.decode()) for r in raw)


async def test_module_configure_keeps_the_senders_metadata_not_the_servers(airi_hub, airi_connect):
    ui = await airi_connect(airi_hub, "ui", announce=True)
    t = await airi_connect(airi_hub, "t", announce=True)
    ev = await ui.send("ui:configure", {"moduleName": "t", "config": {}})
    got = await t.wait_for("module:configure")
    assert got["metadata"] == ev["metadata"]
    assert got["metadata"]["source"]["plugin"]["id"] != "proj-airi:server-runtime"


async def test_forwarded_events_keep_the_senders_metadata(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    await consumer_register(b, "input:text", group="chat-ingestion")
    ev1 = await a.send("test:x", {"k": 1})
    ev2 = await a.send("input:text", {"text": "t"})
    got1 = await b.wait_for("test:x")
    got2 = await b.wait_for("input:text")
    assert got1["metadata"] == ev1["metadata"] and got2["metadata"] == ev2["metadata"]
