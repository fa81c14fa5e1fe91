"""PROTOCOL-HEAD.md section 2 (client->hub events of the 2026-08 generation) and section 5 (their
exact error strings), over real sockets with raw frames: 2.1 peer:authenticate, 2.2
extension:authenticate, 2.3 extension:announce, 2.4 extension:module:announce, 2.5 + decision 1
(module:announce takes the April path), 2.6, 2.7 (plugin-protocol types are routed, hub-sent types
refused), decisions 4, 5 and 14.

Deliberate differences of this hub: errors answering a request may carry parentId where the
HEAD reference leaves it unset (asserted only where the reference sets it); hub-sent types are
refused with the server-only error instead of routed."""

from __future__ import annotations

import pytest

from .head_helpers import (
    APRIL_IDENTITY_INVALID,
    APRIL_NAME_INVALID,
    HEAD_IDENTITY_INVALID,
    HEAD_NAME_INVALID,
    INVALID_TOKEN,
    MUST_AUTH,
    NOT_AUTHENTICATED,
    TOKEN,
    ext_identity,
    ext_module_announce,
    extension_announce,
    head_connect,
    lists,
    mod_identity,
    peer_authenticate,
    send_head,
    server_only,
    settings,
    sync_entry,
    sync_ids,
)
from .protocol_helpers import assert_server_event, event_id, expect_error, identity, parent_id, probe_one


@pytest.fixture
async def hub(airi_hub_factory):
    return await airi_hub_factory(settings())


@pytest.fixture
async def token_hub(airi_hub_factory):
    return await airi_hub_factory(settings(TOKEN))


# -- 2.1 peer:authenticate ------------------------------------------------------------------------
async def test_peer_authenticate_wrong_token(token_hub, airi_connect):
    a = await head_connect(airi_connect, token_hub, "a")
    obs = await airi_connect(token_hub, "obs", token=TOKEN)
    start = a.mark()
    ev = await send_head(a, "peer:authenticate", {"token": "nope", "peerId": "x"})
    await expect_error(a, INVALID_TOKEN, start=start, parent=event_id(ev))
    await a.expect_silence("peer:authenticated", start=start)
    assert a.close_code is None
    # still unauthenticated: a routed event is refused
    s2 = a.mark()
    ev2 = await a.send("test:x", {})
    await expect_error(a, NOT_AUTHENTICATED, start=s2, parent=event_id(ev2))
    await obs.expect_silence(after=[a])


async def test_peer_authenticate_replies_then_syncs_to_the_sender_only(token_hub, airi_connect):
    a = await head_connect(airi_connect, token_hub, "a")
    obs = await airi_connect(token_hub, "obs", token=TOKEN)
    o_start, start = obs.mark(), a.mark()
    ev = await send_head(a, "peer:authenticate", {"token": TOKEN, "peerId": "alias-a"})
    reply = await a.wait_for("peer:authenticated", start=start)
    assert reply["data"] == {"authenticated": True, "peerId": "alias-a"}
    assert_server_event(reply, token_hub, parent=event_id(ev))
    sync = await a.wait_for("registry:modules:sync", start=start)
    assert parent_id(sync) == event_id(ev)
    assert a.received.index(sync) > a.received.index(reply)
    await obs.expect_silence(after=[a], start=o_start)  # nobody else is told
    # authenticated now: its events are routed, and peer:alias-a reaches it
    assert await probe_one(obs, [a], {"destinations": ["peer:alias-a"]}) == {"a"}


async def test_peer_authenticate_alias_defaults_to_connection_id_and_empty_is_kept(hub, airi_connect):
    a = await head_connect(airi_connect, hub, "a")
    b = await head_connect(airi_connect, hub, "b")
    obs = await airi_connect(hub, "obs")
    r = await peer_authenticate(a, "whatever")  # no token configured: any token succeeds
    conn_id = r["data"]["peerId"]
    assert r["data"]["authenticated"] is True and isinstance(conn_id, str) and conn_id
    assert await probe_one(obs, [a, b], {"destinations": [f"peer:{conn_id}"]}) == {"a"}
    r2 = await peer_authenticate(b, peer_id="")
    assert r2["data"] == {"authenticated": True, "peerId": ""}
    r3 = await peer_authenticate(b, peer_id=None)  # null: the connection id
    assert r3["data"]["peerId"] not in ("", None, conn_id)


async def test_peer_aliases_accumulate(hub, airi_connect):
    a = await head_connect(airi_connect, hub, "a")
    obs = await airi_connect(hub, "obs")
    first = await peer_authenticate(a, peer_id="one")
    await peer_authenticate(a, peer_id="two")
    for dest in ("peer:one", "peer:two"):
        assert await probe_one(obs, [a], {"destinations": [dest]}) == {"a"}, dest
    assert first["data"]["peerId"] == "one"


async def test_wrong_token_never_clears_authentication(token_hub, airi_connect):
    a = await head_connect(airi_connect, token_hub, "a")
    obs = await airi_connect(token_hub, "obs", token=TOKEN)
    await peer_authenticate(a, TOKEN, peer_id="keep")
    start = a.mark()
    ev = await send_head(a, "peer:authenticate", {"token": "bad"})
    await expect_error(a, INVALID_TOKEN, start=start, parent=event_id(ev))
    assert await probe_one(obs, [a], {"destinations": ["peer:keep"]}) == {"a"}
    assert await probe_one(a, [obs]) == {"obs"}  # still allowed to send


async def test_non_string_token_counts_as_empty(token_hub, airi_connect):
    a = await head_connect(airi_connect, token_hub, "a")
    start = a.mark()
    ev = await send_head(a, "peer:authenticate", {"token": 123})
    await expect_error(a, INVALID_TOKEN, start=start, parent=event_id(ev))


# -- 2.2 extension:authenticate ---------------------------------------------------------------------
async def test_extension_authenticate_wrong_token(token_hub, airi_connect):
    a = await head_connect(airi_connect, token_hub, "a")
    start = a.mark()
    ev = await send_head(a, "extension:authenticate", {"identity": ext_identity("ext-a"), "token": "bad"})
    await expect_error(a, INVALID_TOKEN, start=start, parent=event_id(ev))
    await a.expect_silence("extension:authenticated", start=start)


async def test_extension_authenticate_echoes_identity_then_syncs(token_hub, airi_connect):
    a = await head_connect(airi_connect, token_hub, "a")
    obs = await airi_connect(token_hub, "obs", token=TOKEN)
    o_start, start = obs.mark(), a.mark()
    ident = ext_identity("ext-a", {"env": "prod"}, version="1.2.3", extra={"x": [1]})
    ev = await send_head(a, "extension:authenticate", {"identity": ident, "token": TOKEN})
    reply = await a.wait_for("extension:authenticated", start=start)
    assert reply["data"] == {"identity": ident, "authenticated": True}
    assert_server_event(reply, token_hub, parent=event_id(ev))
    sync = await a.wait_for("registry:modules:sync", start=start)
    assert parent_id(sync) == event_id(ev) and a.received.index(sync) > a.received.index(reply)
    await obs.expect_silence(after=[a], start=o_start)
    # extensionIdentity set: plugin:<extension id> and its labels reach it
    assert await probe_one(obs, [a], {"destinations": ["plugin:ext-a"]}) == {"a"}
    assert await probe_one(obs, [a], {"destinations": ["label:env=prod"]}) == {"a"}


async def test_extension_authenticate_without_identity(hub, airi_connect):
    """2.2: the identity is not validated and may be missing; the reply then has no identity
    (the hub omits a key rather than send undefined) and is still an object (decision 10)."""
    a = await head_connect(airi_connect, hub, "a")
    start = a.mark()
    ev = await send_head(a, "extension:authenticate", {"token": "x"})
    reply = await a.wait_for("extension:authenticated", start=start)
    assert reply["data"] in ({"authenticated": True}, {"identity": None, "authenticated": True})
    assert parent_id(reply) == event_id(ev)
    assert not a.error_messages(start)


# -- 2.3 extension:announce ---------------------------------------------------------------------------
async def test_extension_announce_errors_in_order(token_hub, airi_connect):
    a = await head_connect(airi_connect, token_hub, "a")
    start = a.mark()
    await send_head(a, "extension:announce", {"identity": {"no": "id"}})  # unauthenticated first
    await expect_error(a, MUST_AUTH, start=start)
    await send_head(a, "module:authenticate", {"token": TOKEN})
    for bad in ({"no": "id"}, {"id": 5}, "ext-a", None):
        s = a.mark()
        await send_head(a, "extension:announce", {"identity": bad})
        await expect_error(a, HEAD_IDENTITY_INVALID, start=s)
    s = a.mark()
    await send_head(a, "extension:announce", {})
    await expect_error(a, HEAD_IDENTITY_INVALID, start=s)


async def test_extension_announce_echoes_to_everyone_without_registry_change(token_hub, airi_connect):
    # its frames' source names the same extension (the adopted identity's extension id wins)
    a = await head_connect(airi_connect, token_hub, "a", "a-mid", "ext-a", token=TOKEN)
    obs = await airi_connect(token_hub, "obs", token=TOKEN)
    unauth = await airi_connect(token_hub, "unauth")
    o_start, u_start, start = obs.mark(), unauth.mark(), a.mark()
    data = {"identity": ext_identity("ext-a", {"team": "x"}), "permissions": {"read": ["*"]}, "other": 1}
    ev = await send_head(a, "extension:announce", data)
    mine = await a.wait_for("extension:announced", start=start)
    assert mine["data"] == data and parent_id(mine) == event_id(ev)
    assert_server_event(mine, token_hub, parent=event_id(ev))
    theirs = await obs.wait_for("extension:announced", start=o_start)
    assert theirs["data"] == data and parent_id(theirs) == event_id(ev)
    await a.expect_silence("registry:modules:sync", start=start)
    await obs.expect_silence("registry:modules:sync", start=o_start)
    await unauth.expect_silence(after=[a], start=u_start)  # only authenticated connections
    assert await probe_one(obs, [a], {"destinations": ["plugin:ext-a"]}) == {"a"}
    # closing it sends nothing: extension:de-announced is never emitted, no module -> no sync
    o2 = obs.mark()
    await a.close()
    await _gone(token_hub, 2)
    await obs.expect_silence(start=o2)


async def _gone(hub, remaining: int) -> None:
    from airi_core.testing import wait_until

    await wait_until(lambda: len(hub.registry) == remaining, 3.0, f"the hub to hold {remaining} connections")


# -- 2.4 extension:module:announce --------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, message",
    [
        ({"identity": mod_identity("m", "e")}, HEAD_NAME_INVALID),
        ({"name": "", "identity": mod_identity("m", "e")}, HEAD_NAME_INVALID),
        ({"name": 7, "identity": mod_identity("m", "e")}, HEAD_NAME_INVALID),
        ({"name": "", "identity": {"bad": 1}}, HEAD_NAME_INVALID),  # name checked first
        ({"name": "n"}, HEAD_IDENTITY_INVALID),
        ({"name": "n", "identity": {"id": "m"}}, HEAD_IDENTITY_INVALID),
        ({"name": "n", "identity": {"id": "m", "extension": {}}}, HEAD_IDENTITY_INVALID),
        ({"name": "n", "identity": {"id": "m", "extension": {"id": 3}}}, HEAD_IDENTITY_INVALID),
        ({"name": "n", "identity": {"id": 4, "extension": {"id": "e"}}}, HEAD_IDENTITY_INVALID),
        ({"name": "n", "identity": {"kind": "plugin", "plugin": {"id": "p"}, "id": "m"}}, HEAD_IDENTITY_INVALID),
    ],
)
async def test_extension_module_announce_validation(hub, airi_connect, data, message):
    a = await head_connect(airi_connect, hub, "a")
    obs = await airi_connect(hub, "obs")
    start, o_start = a.mark(), obs.mark()
    await send_head(a, "extension:module:announce", {"possibleEvents": [], **data})
    await expect_error(a, message, start=start)
    await obs.expect_silence(after=[a], start=o_start)
    await a.expect_silence("registry:modules:sync", start=start)


async def test_extension_module_announce_must_authenticate_first(token_hub, airi_connect):
    a = await head_connect(airi_connect, token_hub, "a")
    start = a.mark()
    await send_head(a, "extension:module:announce", {"name": "", "identity": {}, "possibleEvents": []})
    await expect_error(a, MUST_AUTH, start=start)


async def test_extension_module_must_belong_to_the_connections_extension(hub, airi_connect):
    a = await head_connect(airi_connect, hub, "a")
    await extension_announce(a, ext_identity("ext-a"))
    start = a.mark()
    await send_head(a, "extension:module:announce", {"name": "m", "identity": mod_identity("m-1", "ext-b"), "possibleEvents": []})
    await expect_error(a, HEAD_IDENTITY_INVALID, start=start)
    # a module of ext-a is fine, and then ext-a is the connection's extension
    await ext_module_announce(a, "m", mod_identity("m-1", "ext-a"))
    s2 = a.mark()
    await send_head(a, "extension:module:announce", {"name": "m2", "identity": mod_identity("m-2", "ext-c"), "possibleEvents": []})
    await expect_error(a, HEAD_IDENTITY_INVALID, start=s2)
    # extension:announce with another id changes which extension its modules must belong to
    await extension_announce(a, ext_identity("ext-c"))
    await ext_module_announce(a, "m2", mod_identity("m-2", "ext-c"))


async def test_extension_module_announce_success_sequence(token_hub, airi_connect):
    a = await head_connect(airi_connect, token_hub, "a", "a-mid", "ext-a", token=TOKEN)
    obs = await airi_connect(token_hub, "obs", token=TOKEN)
    unauth = await airi_connect(token_hub, "unauth")
    start, o_start, u_start = a.mark(), obs.mark(), unauth.mark()
    ident = mod_identity("a-mid", "ext-a", {"role": "x"})
    data = {
        "name": "mod-a", "identity": ident, "possibleEvents": ["a:b"], "permissions": {"p": 1},
        "configSchema": {"type": "object"}, "dependencies": [{"x": 1}], "unknownField": True,
    }
    ev = await send_head(a, "extension:module:announce", data)
    # the sender: a sync listing it (no parentId), then the verbatim echo (parentId)
    sync = await a.wait_for("registry:modules:sync", lambda e: lists(e, "mod-a", "a-mid"), start=start)
    echo = await a.wait_for("extension:module:announced", start=start)
    assert a.received.index(sync) < a.received.index(echo)
    assert_server_event(sync, token_hub)
    assert sync["data"]["modules"] == [sync_entry("mod-a", ident)]
    assert "index" not in sync["data"]["modules"][0]
    assert echo["data"] == data
    assert_server_event(echo, token_hub, parent=event_id(ev))
    # others get both (either order)
    o_sync = await obs.wait_for("registry:modules:sync", lambda e: lists(e, "mod-a", "a-mid"), start=o_start)
    o_echo = await obs.wait_for("extension:module:announced", start=o_start)
    assert o_echo["data"] == data and parent_id(o_echo) == event_id(ev)
    assert o_sync["data"]["modules"] == [sync_entry("mod-a", ident)]
    await unauth.expect_silence(after=[a], start=u_start)
    await a.expect_silence("extension:module:de-announced", start=start)


async def test_identical_reannounce_repeats_sync_and_echo_without_de_announce(hub, airi_connect):
    a = await head_connect(airi_connect, hub, "a")
    obs = await airi_connect(hub, "obs")
    ident = mod_identity("m-1", "ext-a")
    await ext_module_announce(a, "m", ident)
    start, o_start = a.mark(), obs.mark()
    await ext_module_announce(a, "m", ident)
    assert len(a.of_type("registry:modules:sync", start)) >= 1
    await obs.wait_for("extension:module:announced", start=o_start)
    await obs.expect_silence("extension:module:de-announced", after=[a], start=o_start)
    await a.expect_silence("extension:module:de-announced", start=start)
    sync = a.of_type("registry:modules:sync", start)[-1]
    assert sync_ids(sync) == [("m", "m-1")]


async def test_reannounce_with_new_name_de_announces_reannounced(hub, airi_connect):
    a = await head_connect(airi_connect, hub, "a")
    obs = await airi_connect(hub, "obs")
    old = mod_identity("m-1", "ext-a", {"v": "1"})
    await ext_module_announce(a, "old-name", old)
    await ext_module_announce(a, "second", mod_identity("m-2", "ext-a"))
    start, o_start = a.mark(), obs.mark()
    new = mod_identity("m-1", "ext-a", {"v": "2"})
    await ext_module_announce(a, "new-name", new)
    for c, s in ((a, start), (obs, o_start)):  # sender included
        de = await c.wait_for("extension:module:de-announced", start=s)
        assert de["data"] == {"name": "old-name", "identity": old, "possibleEvents": [], "reason": "reannounced"}
        assert_server_event(de, hub, parent=None)
        sync = c.of_type("registry:modules:sync", s)[-1]
        assert sorted(sync_ids(sync)) == [("new-name", "m-1"), ("second", "m-2")]


async def test_same_name_reannounce_replaces_in_place(hub, airi_connect):
    a = await head_connect(airi_connect, hub, "a")
    await ext_module_announce(a, "m1", mod_identity("m-1", "ext-a"))
    await ext_module_announce(a, "m2", mod_identity("m-2", "ext-a"))
    start = a.mark()
    changed = mod_identity("m-1", "ext-a", {"new": "label"})
    await ext_module_announce(a, "m1", changed)
    sync = a.of_type("registry:modules:sync", start)[-1]
    assert sync["data"]["modules"] == [sync_entry("m1", changed), sync_entry("m2", mod_identity("m-2", "ext-a"))]
    await a.expect_silence("extension:module:de-announced", start=start)


async def test_many_modules_on_one_connection_and_same_module_on_two(hub, airi_connect):
    a = await head_connect(airi_connect, hub, "a")
    b = await head_connect(airi_connect, hub, "b")
    for i in range(3):
        await ext_module_announce(a, f"mod-{i}", mod_identity(f"id-{i}", "ext-a"))
    start = b.mark()
    await ext_module_announce(b, "mod-1", mod_identity("id-1", "ext-a"))
    sync = b.of_type("registry:modules:sync", start)[-1]
    assert sync_ids(sync) == [("mod-0", "id-0"), ("mod-1", "id-1"), ("mod-2", "id-2"), ("mod-1", "id-1")]


# -- 2.5 / decision 1: module:announce takes the April path --------------------------------------------
async def test_module_announce_registers_on_the_april_path(hub, airi_connect):
    head = await head_connect(airi_connect, hub, "head")
    await ext_module_announce(head, "h", mod_identity("h-1", "head"))
    april = await airi_connect(hub, "april")
    start = head.mark()
    ann = await april.send("module:announce", {"name": "april", "identity": april.identity, "possibleEvents": []})
    got = await head.wait_for("module:announced", start=start)
    assert got["data"]["name"] == "april" and got["data"]["identity"] == april.identity
    assert parent_id(got) == event_id(ann)
    await head.wait_for("registry:modules:sync", lambda e: ("april", april.identity["id"]) in sync_ids(e), start=start)
    await head.expect_silence("module:announce", after=[april], start=start)  # never the raw frame
    assert await probe_one(head, [april], {"destinations": ["module:april"]}) == {"april"}


async def test_module_announce_unauthenticated_gets_april_refusal(token_hub, airi_connect):
    a = await airi_connect(token_hub, "a")
    start = a.mark()
    await a.send("module:announce", {"name": "a", "identity": a.identity})
    await expect_error(a, MUST_AUTH, start=start)


# -- decision 4 / section 5: error wording per family -------------------------------------------------
async def test_error_wording_follows_the_events_family(hub, airi_connect):
    a = await head_connect(airi_connect, hub, "a")
    await ext_module_announce(a, "h", mod_identity("h-1", "a"))  # a HEAD-generation connection
    s = a.mark()
    await a.send("module:announce", {"name": "", "identity": identity("x")})
    await expect_error(a, APRIL_NAME_INVALID, start=s)
    s = a.mark()
    await a.send("module:announce", {"name": "x", "identity": mod_identity("x-1", "a")})
    await expect_error(a, APRIL_IDENTITY_INVALID, start=s)
    april = await airi_connect(hub, "april", announce=True)
    s = april.mark()
    await april.send("extension:module:announce", {"name": "", "identity": {}, "possibleEvents": []})
    await expect_error(april, HEAD_NAME_INVALID, start=s)


# -- decision 14: SDK 0.8.4's default identity ---------------------------------------------------------
async def test_sdk084_default_identity_is_normalised(hub, airi_connect):
    obs = await head_connect(airi_connect, hub, "obs")
    a = await airi_connect(hub, "sdk-default")
    a.identity = {"plugin": "sdk-default", "instanceId": "inst-42"}
    start = obs.mark()
    ann = await a.send("module:announce", {"name": "sdk-default", "identity": a.identity, "possibleEvents": []})
    norm = {"id": "inst-42", "kind": "plugin", "plugin": {"id": "sdk-default"}}
    got = await obs.wait_for("module:announced", start=start)
    assert got["data"]["identity"] == norm and parent_id(got) == event_id(ann)
    sync = await obs.wait_for("registry:modules:sync", lambda e: "sdk-default" in [m["name"] for m in e["data"]["modules"]], start=start)
    [entry] = [m for m in sync["data"]["modules"] if m["name"] == "sdk-default"]
    assert entry["identity"] == norm
    for dest in ("plugin:sdk-default", "instance:inst-42", "module:sdk-default"):
        assert await probe_one(obs, [a], {"destinations": [dest]}) == {"sdk-default"}, dest


# -- 2.6: unchanged events work for a HEAD-shaped client ------------------------------------------------
async def test_module_authenticate_and_heartbeat_unchanged(token_hub, airi_connect):
    a = await head_connect(airi_connect, token_hub, "a")
    start = a.mark()
    ping = await send_head(a, "transport:connection:heartbeat", {"kind": "ping", "message": "\U0001fa75", "at": 1})
    pong = await a.wait_for("transport:connection:heartbeat", start=start)
    assert pong["data"]["kind"] == "pong" and parent_id(pong) == event_id(ping)
    auth = await send_head(a, "module:authenticate", {"token": TOKEN})
    ok = await a.wait_for("module:authenticated", start=start)
    assert ok["data"] == {"authenticated": True} and parent_id(ok) == event_id(auth)
    sync = await a.wait_for("registry:modules:sync", start=start)
    assert parent_id(sync) == event_id(auth)


# -- 2.7: plugin-protocol-only types are routed; hub-sent types refused --------------------------------
ROUTED_27 = [
    ("extension:kit:announce", {"identity": {"id": "kit-1", "ownerExtension": {"id": "e"}}, "capabilities": ["x"]}),
    ("extension:kit:announced", {"identity": {"id": "kit-1"}}),
    ("extension:kit:de-announced", {"identity": {"id": "kit-1"}, "reason": "bye"}),
    ("peer:status", {"peerId": "p", "phase": "connected"}),
    ("peer:de-authenticated", {"peerId": "p", "reason": "r"}),
    ("extension:de-announced", {"identity": {"id": "e"}, "reason": "r"}),
]


@pytest.mark.parametrize("etype, data", ROUTED_27)
async def test_plugin_protocol_only_types_are_routed(token_hub, airi_connect, etype, data):
    a = await head_connect(airi_connect, token_hub, "a")
    b = await airi_connect(token_hub, "b", token=TOKEN)
    start = a.mark()
    ev = await send_head(a, etype, data)
    await expect_error(a, NOT_AUTHENTICATED, start=start, parent=event_id(ev))
    await send_head(a, "module:authenticate", {"token": TOKEN})
    b_start, s2 = b.mark(), a.mark()
    ev2 = await send_head(a, etype, data)
    got = await b.wait_for(etype, start=b_start)
    assert got["data"] == data and event_id(got) == event_id(ev2)
    await a.expect_silence("error", start=s2)


@pytest.mark.parametrize(
    "etype",
    ["peer:authenticated", "extension:authenticated", "extension:announced", "extension:module:announced", "extension:module:de-announced"],
)
async def test_hub_sent_head_types_are_refused(hub, airi_connect, etype):
    a = await head_connect(airi_connect, hub, "a")
    b = await airi_connect(hub, "b")
    start, b_start = a.mark(), b.mark()
    ev = await send_head(a, etype, {"name": "x", "identity": mod_identity("x", "y"), "authenticated": True})
    await expect_error(a, server_only(etype), start=start, parent=event_id(ev))
    await b.expect_silence(after=[a], start=b_start)
