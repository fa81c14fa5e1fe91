"""PROTOCOL.md "Connection lifecycle" steps 1-2 (connect, authenticate) and what an
unauthenticated peer can and cannot do when a token is configured."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from airi_core import errors
from airi_core.testing import HubClient
from .protocol_helpers import (
    assert_alive,
    assert_server_event,
    consumer_register,
    expect_error,
    identity,
    modules_of,
    nonce,
    parent_id,
    probe_one,
)

TOKEN = "s3cret-t\u00f6ken"


@pytest.fixture
async def token_hub(airi_hub_factory):
    return await airi_hub_factory({"auth": {"token": TOKEN}})


# -- no token ------------------------------------------------------------------------------------
async def test_no_token_connect_sends_authenticated_then_sync(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a")
    await a.wait_for("registry:modules:sync")
    first, second = a.received[0], a.received[1]
    assert first["type"] == "module:authenticated"
    assert first["data"] == {"authenticated": True}
    assert second["type"] == "registry:modules:sync"
    assert second["data"] == {"modules": []}
    assert_server_event(first, airi_hub)
    assert_server_event(second, airi_hub)
    assert event_ids_differ(first, second)


def event_ids_differ(*evs):
    ids = [e["metadata"]["event"]["id"] for e in evs]
    return len(set(ids)) == len(ids)


async def test_no_token_connect_sync_lists_already_announced_modules(airi_hub, airi_connect):
    await airi_connect(airi_hub, "stage", announce=True, index=0)
    await airi_connect(airi_hub, "discord", announce=True)
    c = await airi_connect(airi_hub, "c")
    sync = await c.wait_for("registry:modules:sync")
    assert sorted(modules_of(sync), key=str) == sorted([("stage", 0), ("discord", None)], key=str)
    entries = {m["name"]: m for m in sync["data"]["modules"]}
    assert entries["stage"]["identity"] == identity("stage")
    assert set(entries["discord"]) <= {"name", "index", "identity"}


async def test_no_token_peer_is_authenticated_at_once(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a")
    b = await airi_connect(airi_hub, "b")
    assert await probe_one(a, [b]) == {"b"}
    assert a.error_messages() == []


# -- token configured ------------------------------------------------------------------------------
async def test_token_connect_sends_nothing(token_hub, airi_connect):
    a = await airi_connect(token_hub, "a")
    await a.expect_silence(start=0)
    assert a.received == []


async def test_right_token_is_accepted_with_parent_ids(token_hub, airi_connect):
    a = await airi_connect(token_hub, "a")
    start = a.mark()
    ev = await a.send("module:authenticate", {"token": TOKEN})
    eid = ev["metadata"]["event"]["id"]
    sync = await a.wait_for("registry:modules:sync", start=start)
    auth, sync2 = a.received[start], a.received[start + 1]
    assert sync2 is sync
    assert auth["type"] == "module:authenticated" and auth["data"] == {"authenticated": True}
    assert_server_event(auth, token_hub, parent=eid)
    assert_server_event(sync, token_hub, parent=eid)
    assert sync["data"] == {"modules": []}


@pytest.mark.parametrize(
    "data",
    [
        {"token": "wrong"},
        {"token": ""},
        {"token": TOKEN[:-1]},
        {"token": TOKEN + "x"},
        {"token": TOKEN.upper()},
        {"token": " " + TOKEN},
        {"token": 12345},
        {"token": None},
        {"token": [TOKEN]},
        {},
    ],
)
async def test_wrong_token_is_invalid_token_and_socket_stays_open(token_hub, airi_connect, data):
    a = await airi_connect(token_hub, "a")
    start = a.mark()
    ev = await a.send("module:authenticate", data)
    err = await expect_error(a, "invalid token", start=start, parent=ev["metadata"]["event"]["id"])
    assert err["data"]["message"] == errors.INVALID_TOKEN
    assert_server_event(err, token_hub, parent=ev["metadata"]["event"]["id"])
    # still open, still unauthenticated
    await assert_alive(a)
    await a.send("test:x", {})
    await expect_error(a, "not authenticated", start=start + 1)
    # and can still authenticate afterwards
    reply = await a.authenticate(TOKEN)
    assert reply["type"] == "module:authenticated"
    assert a.close_code is None


async def test_wrong_token_many_times_never_closes_without_throttling(airi_hub_factory, airi_connect):
    # the reference's behaviour, with [auth] max_failures = 0; the default throttle (5 failures
    # per address, then "too many failed attempts") is tested in test_security_auth.py
    hub = await airi_hub_factory({"auth": {"token": TOKEN, "max_failures": 0}})
    a = await airi_connect(hub, "a")
    start = a.mark()
    for i in range(20):
        await a.send("module:authenticate", {"token": f"guess-{i}"})
    await assert_alive(a)
    assert a.error_messages(start) == ["invalid token"] * 20


async def test_wrong_token_reaches_nobody_else(token_hub, airi_connect):
    b = await airi_connect(token_hub, "b", token=TOKEN, announce=True)
    a = await airi_connect(token_hub, "a")
    b_start = b.mark()
    await a.send("module:authenticate", {"token": "nope"})
    await a.wait_for("error")
    await b.expect_silence(after=[a], start=b_start)


async def test_authenticated_peer_gets_current_registry(token_hub, airi_connect):
    await airi_connect(token_hub, "stage", token=TOKEN, announce=True, index=2)
    c = await airi_connect(token_hub, "c")
    reply = await c.authenticate(TOKEN)
    assert reply["type"] == "module:authenticated"
    sync = await c.wait_for("registry:modules:sync")
    assert modules_of(sync) == [("stage", 2)]


# -- unauthenticated peers (token configured) ---------------------------------------------------
async def test_unauthenticated_peer_cannot_send_routed_events(token_hub, airi_connect):
    b = await airi_connect(token_hub, "b", token=TOKEN, announce=True)
    a = await airi_connect(token_hub, "a")
    b_start = b.mark()
    for etype, route in [("test:x", None), ("input:text", None), ("test:y", {"destinations": ["*"]})]:
        start = a.mark()
        ev = await a.send(etype, {"text": "hi"}, route=route)
        err = await expect_error(a, "not authenticated", start=start)
        assert err["data"]["message"] == errors.NOT_AUTHENTICATED
        assert_server_event(err, token_hub, parent=ev["metadata"]["event"]["id"])
    # wrapped too
    start = a.mark()
    await a.send("test:z", {}, wrap=True)
    await expect_error(a, errors.NOT_AUTHENTICATED, start=start)
    await b.expect_silence(after=[a], start=b_start)


async def test_unauthenticated_peer_receives_no_routed_events_nor_broadcasts(token_hub, airi_connect):
    eve = await airi_connect(token_hub, "eve")
    a = await airi_connect(token_hub, "a", token=TOKEN, announce=True)
    b = await airi_connect(token_hub, "b", token=TOKEN, announce=True)
    # routed: broadcast, wildcard, explicit, by label/plugin/peer id of eve
    eve_peer = next(p for p in token_hub.registry if not p.authenticated)
    res = await probe_one(a, [b], route={"destinations": ["*"]})
    assert res == {"b"}
    for dest in (["*"], ["eve*"], ["plugin:eve"], [f"peer:{eve_peer.id}"], [{"type": "ids", "ids": [eve_peer.id]}]):
        await a.send("test:to-eve", {"d": dest}, route={"destinations": dest})
    await a.send("test:to-eve", {}, route={"bypass": True})
    await a.send("input:text", {"text": "hello"})
    # broadcasts: a re-announce (de-announce + announced + sync), a close (de-announce + sync)
    await a.announce("a2", identity=identity("a2"))
    await b.close()
    await a.wait_for("module:de-announced", lambda e: e["data"]["name"] == "b")
    await eve.expect_silence(after=[a], start=0)
    assert eve.received == []


async def test_devtools_unauthenticated_peer_cannot_bypass(token_hub, airi_connect):
    b = await airi_connect(token_hub, "b", token=TOKEN, announce=True)
    dev = await airi_connect(token_hub, "devtools")
    dev.identity = identity("devtools", labels={"devtools": "true"})
    b_start = b.mark()
    start = dev.mark()
    await dev.send("test:x", {}, route={"bypass": True, "destinations": ["*"]})
    await expect_error(dev, errors.NOT_AUTHENTICATED, start=start)
    await b.expect_silence(after=[dev], start=b_start)


async def test_unauthenticated_peer_cannot_announce(token_hub, airi_connect):
    b = await airi_connect(token_hub, "b", token=TOKEN, announce=True)
    a = await airi_connect(token_hub, "a")
    b_start = b.mark()
    start = a.mark()
    ev = await a.send("module:announce", {"name": "a", "identity": identity("a")})
    err = await expect_error(a, "must authenticate before announcing", start=start)
    assert err["data"]["message"] == errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING
    assert_server_event(err, token_hub, parent=ev["metadata"]["event"]["id"])
    await b.expect_silence(after=[a], start=b_start)
    assert all(p.name != "a" for p in token_hub.registry)


async def test_unauthenticated_peer_cannot_register_consumers(token_hub, airi_connect):
    a = await airi_connect(token_hub, "a")
    start = a.mark()
    ev = await a.send("module:consumer:register", {"event": "input:text", "group": "chat-ingestion"})
    await expect_error(a, errors.NOT_AUTHENTICATED, start=start, parent=ev["metadata"]["event"]["id"])
    # the registration did not happen: an input:text from an authenticated peer finds nobody
    b = await airi_connect(token_hub, "b", token=TOKEN, announce=True)
    await a.authenticate(TOKEN)
    start_b = b.mark()
    await b.send("input:text", {"text": "x"}, route={"delivery": {"required": True}})
    await expect_error(b, errors.NO_CONSUMER_REGISTERED, start=start_b)


async def test_unauthenticated_peer_gets_pong(token_hub, airi_connect):
    a = await airi_connect(token_hub, "a")
    await assert_alive(a)


async def test_peer_after_authenticating_receives_and_sends(token_hub, airi_connect):
    a = await airi_connect(token_hub, "a", token=TOKEN, announce=True)
    b = await airi_connect(token_hub, "b")
    await b.authenticate(TOKEN)
    await b.announce()
    assert await probe_one(a, [b]) == {"b"}
    assert await probe_one(b, [a]) == {"a"}


async def test_peer_source_before_authentication_is_not_its_identity(token_hub, airi_connect):
    a = await airi_connect(token_hub, "a", token=TOKEN, announce=True)
    b = await airi_connect(token_hub, "b")
    b.identity = identity("pre-auth-claim")
    await b.send("test:x", {})  # unauthenticated: rejected, identity not taken
    await b.wait_for("error")
    b.identity = {}
    start = b.mark()
    await b.send_raw(json.dumps({"type": "module:authenticate", "data": {"token": TOKEN}}))
    await b.wait_for("registry:modules:sync", start=start)
    res = await probe_one(a, [b], route={"destinations": ["plugin:pre-auth-claim"]})
    assert res == set()


async def test_raw_client_with_only_the_socket(token_hub):
    """A client that never sends anything gets nothing and is not closed right away."""
    async with connect(token_hub.url, open_timeout=3) as ws:
        client = HubClient(ws, "raw")
        await asyncio.sleep(0.2)  # the scenario: a peer that stays idle for a while
        assert client.close_code is None
        await client.expect_silence(start=0)  # and the hub had queued nothing for it
        await client.close()


async def test_error_reply_to_unauthenticated_carries_server_metadata(token_hub, airi_connect):
    a = await airi_connect(token_hub, "a")
    eid = nonce("u")
    start = a.mark()
    await a.send_raw(json.dumps({"type": "test:x", "data": {}, "metadata": {"event": {"id": eid}}}))
    err = await a.wait_for("error", start=start)
    assert parent_id(err) == eid
    assert_server_event(err, token_hub, parent=eid)


async def test_consumer_registration_after_authentication_works(token_hub, airi_connect):
    a = await airi_connect(token_hub, "a", token=TOKEN, announce=True)
    b = await airi_connect(token_hub, "b", token=TOKEN, announce=True)
    await consumer_register(b, "input:text", group="chat-ingestion")
    await a.send("input:text", {"text": "x"})
    await b.wait_for("input:text")
