"""PROTOCOL-HEAD.md section 6 and decisions 8-13 and 16: widened destinations over both families
(plugin = extension id, module = any extension module's name or id, first-colon split, instance,
peer aliases, labels in overlay order, bare globs vs {glob}, empty values and ``?``), identity
adoption, ``data.destinations: []`` and frames without ``data`` by the sender's generation, the
policy synonyms, non-unique aliases, non-array destinations."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from airi_core.testing import connect_client, start_hub

from .head_helpers import (
    INVALID_FORMAT,
    adopt,
    ext_identity,
    ext_module_announce,
    extension_announce,
    head_connect,
    hybrid,
    mod_identity,
    peer_authenticate,
    send_head,
    settings,
)
from .protocol_helpers import expect_error, identity, nonce, probe_one

# -- section 6 / decision 11: one population, many probes ----------------------------------------
WORLD = frozenset({"h1", "h2", "e", "legacy", "p"})


class HeadWorld:
    def __init__(self, hub, sender, clients):
        self.hub, self.sender, self.clients = hub, sender, clients

    async def reach(self, dests) -> set[str]:
        return await probe_one(self.sender, self.clients.values(), {"destinations": dests})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> AsyncIterator[HeadWorld]:
    hub = await start_hub(settings())

    async def connect(h, name, **kw):
        return await connect_client(h, name, **kw)

    sender = await connect_client(hub, "ui", announce=True, identity=identity("ui", "proj-airi:ui"))
    h1 = await head_connect(connect, hub, "h1", "sw-1", "proj-airi:stage-web")
    for name, mid in (("proj-airi:stage-web", "sw-1"), ("voice", "v-1"), ("ab", "ab-1")):
        await ext_module_announce(h1, name, mod_identity(mid, "proj-airi:stage-web"))
    h2 = await head_connect(connect, hub, "h2", "b-1", "ext-b")
    await send_head(h2, "extension:authenticate", {"identity": ext_identity("ext-b", {"k": "1"})})
    await ext_module_announce(h2, "b-mod", mod_identity("b-1", ext_identity("ext-b", {"k": "2", "tier": "gold"}), {"k": "3", "role": "x"}))
    await adopt(h2, hybrid("b-1", "ext-b"))
    e = await head_connect(connect, hub, "e", "e-mid", "ext-c")
    await extension_announce(e, ext_identity("ext-c", {"team": "red"}))
    legacy = await connect_client(hub, "legacy", announce=True, identity=identity("legacy", "legacy-plugin", instance="leg-1", labels={"k": "1"}))
    p = await head_connect(connect, hub, "p", "p-mid", "p")
    await peer_authenticate(p, peer_id="alias-1")
    clients = {"h1": h1, "h2": h2, "e": e, "legacy": legacy, "p": p}
    yield HeadWorld(hub, sender, clients)
    for c in [sender, *clients.values()]:
        await c.close()
    await hub.shutdown()


CASES = [
    (["*"], WORLD),
    (["plugin:proj-airi:stage-web"], {"h1"}),  # extension id, second colon kept
    (["plugin:legacy-plugin"], {"legacy"}),
    (["plugin:ext-b"], {"h2"}),
    (["plugin:ext-c"], {"e"}),  # extensionIdentity.id (extension:announce only)
    (["plugin:proj-airi"], set()),
    (["module:voice"], {"h1"}),  # any extension module's name...
    (["module:v-1"], {"h1"}),  # ...or identity id
    (["module:proj-airi:stage-web"], {"h1"}),  # first-colon split
    (["module:b-1"], {"h2"}),
    (["module:legacy"], {"legacy"}),
    (["module:"], set()),  # empty values match nothing
    (["source:"], set()),
    (["module"], set()),  # bare "module" is a name glob
    (["source"], set()),
    (["source:legacy"], {"legacy"}),
    (["source:voice"], set()),  # source: is the legacy name only
    (["instance:sw-1"], {"h1"}),  # identity.id (the adopted source)
    (["instance:v-1"], set()),
    (["instance:b-1"], {"h2"}),
    (["instance:leg-1"], {"legacy"}),
    (["peer:alias-1"], {"p"}),
    (["label:k=3"], {"h2"}),  # identity.labels win over identity.extension / extensionIdentity labels
    (["label:k=2"], set()),
    (["label:k=1"], {"legacy"}),
    (["label:tier=gold"], {"h2"}),  # identity.extension.labels
    (["label:role=x"], {"h2"}),
    (["label:team=red"], {"e"}),  # extensionIdentity.labels
    (["proj-airi:*"], {"h1"}),  # bare glob: extension id / module names
    (["voice"], {"h1"}),  # module name
    (["v-*"], {"h1"}),  # module id
    (["ab-1"], {"h1"}),
    (["b-mod"], {"h2"}),
    (["legacy"], {"legacy"}),
    (["leg-*"], {"legacy"}),  # identity.id
    (["ext-*"], {"h2", "e"}),  # extension ids
    (["a?b"], set()),  # "?" is literal (h1 has a module named "ab")
    ([{"type": "glob", "glob": "voice"}], set()),  # {glob} leaves out module names and ids
    ([{"type": "glob", "glob": "v-1"}], set()),
    ([{"type": "glob", "glob": "proj-airi:stage-web"}], {"h1"}),
    ([{"type": "glob", "glob": "sw-*"}], {"h1"}),
    ([{"type": "glob", "glob": "ext-c"}], {"e"}),
    ([{"type": "module", "modules": ["voice"]}], {"h1"}),
    ([{"type": "module", "modules": ["b-1", "legacy"]}], {"h2", "legacy"}),
    ([{"type": "module", "modules": [""]}], set()),
    ([{"type": "plugin", "plugins": ["ext-b"]}], {"h2"}),
    ([{"type": "plugin", "plugins": [""]}], set()),
    ([{"type": "instance", "instances": ["b-1"]}], {"h2"}),
    ([{"type": "instance", "instances": [""]}], set()),
    ([{"type": "ids", "ids": ["alias-1"]}], {"p"}),
    ([{"type": "source", "sources": ["legacy"]}], {"legacy"}),
    ([{"type": "label", "selectors": ["tier=gold", "role=x"]}], {"h2"}),
    ([{"type": "module", "modules": ["voice"], "inverted": True}], WORLD - {"h1"}),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("dests, expected", CASES, ids=[json.dumps(c[0]) for c in CASES])
async def test_head_destinations(world, dests, expected):
    assert await world.reach(dests) == set(expected)


@pytest.mark.asyncio(loop_scope="module")
async def test_peer_destination_by_connection_id(world):
    peer_ids = {p.id for p in world.hub.registry}
    # the alias holder's own connection id works too (connection id or any alias)
    r = await peer_authenticate(world.clients["p"], peer_id=None)
    conn_id = r["data"]["peerId"]
    assert conn_id in peer_ids
    assert await world.reach([f"peer:{conn_id}"]) == {"p"}
    assert await world.reach(["peer:alias-1"]) == {"p"}  # aliases accumulate


# -- decision 13: aliases need not be unique ------------------------------------------------------
async def test_shared_alias_reaches_every_holder(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(settings())
    a = await head_connect(airi_connect, hub, "a")
    b = await head_connect(airi_connect, hub, "b")
    c = await head_connect(airi_connect, hub, "c")
    obs = await airi_connect(hub, "obs")
    for x in (a, b):
        r = await peer_authenticate(x, peer_id="dup")
        assert r["data"] == {"authenticated": True, "peerId": "dup"}
    assert await probe_one(obs, [a, b, c], {"destinations": ["peer:dup"]}) == {"a", "b"}
    assert await probe_one(obs, [a, b, c], {"destinations": [{"type": "ids", "ids": ["dup"]}]}) == {"a", "b"}


# -- decision 8: identity adoption ----------------------------------------------------------------
async def test_identity_adoption_before_and_after_announce(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(settings())
    obs = await airi_connect(hub, "obs")
    x = await airi_connect(hub, "x")
    y = await airi_connect(hub, "y")
    z = await head_connect(airi_connect, hub, "z", "z-1", "ext-z")
    # before any announce: an extension-module-shaped source becomes the identity
    await adopt(x, {"id": "pre-1", "extension": {"id": "ext-x", "labels": {"team": "blue"}}})
    for dest in ("instance:pre-1", "plugin:ext-x", "label:team=blue"):
        assert await probe_one(obs, [x, y, z], {"destinations": [dest]}) == {"x"}, dest
    # a legacy-only source never does
    await adopt(y, identity("y", "plugin-y", instance="y-inst"))
    for dest in ("instance:y-inst", "plugin:plugin-y"):
        assert await probe_one(obs, [x, y, z], {"destinations": [dest]}) == set(), dest
    # after an extension announce: only a source naming one of its module ids, and then that
    # module's identity as announced
    await ext_module_announce(z, "first", mod_identity("z-1", "ext-z"))
    await ext_module_announce(z, "second", mod_identity("z-2", "ext-z", {"role": "second"}))
    assert await probe_one(obs, [x, y, z], {"destinations": ["instance:z-1"]}) == {"z"}
    await adopt(z, {"id": "z-2", "extension": {"id": "ext-z"}, "labels": {"devtools": "true", "role": "forged"}})
    assert await probe_one(obs, [x, y, z], {"destinations": ["instance:z-2"]}) == {"z"}
    assert await probe_one(obs, [x, y, z], {"destinations": ["instance:z-1"]}) == set()
    assert await probe_one(obs, [x, y, z], {"destinations": ["label:role=second"]}) == {"z"}
    assert await probe_one(obs, [x, y, z], {"destinations": ["label:devtools"]}) == set()
    assert await probe_one(obs, [x, y, z], {"destinations": ["label:role=forged"]}) == set()
    await adopt(z, {"id": "rogue", "extension": {"id": "ext-z"}})
    assert await probe_one(obs, [x, y, z], {"destinations": ["instance:rogue"]}) == set()
    assert await probe_one(obs, [x, y, z], {"destinations": ["instance:z-2"]}) == {"z"}


async def test_devtools_bypass_needs_an_announced_identity(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(settings(routing={"policy": {"deny_plugins": ["target"]}}))
    target = await airi_connect(hub, "target", announce=True, identity=identity("target", "target"))
    d = await airi_connect(hub, "d")
    src = {"id": "d-1", "extension": {"id": "dev"}, "labels": {"devtools": "true"}}
    md = lambda: {"source": src, "event": {"id": nonce()}}  # noqa: E731
    assert await probe_one(d, [target], {"bypass": True}, metadata=md()) == set()
    d.identity = hybrid("d-1", "dev")
    await ext_module_announce(d, "devtools-panel", mod_identity("d-1", "dev", {"devtools": "true"}))
    assert await probe_one(d, [target], {"bypass": True}, metadata=md()) == {"target"}
    assert await probe_one(d, [target], {}, metadata=md()) == set()  # no bypass: the policy holds


# -- decision 9: data.destinations [] by the sender's generation ----------------------------------
async def test_empty_data_destinations_by_generation(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(settings())
    rx = [await airi_connect(hub, f"rx{i}", announce=True) for i in range(2)]
    names = {"rx0", "rx1"}
    april = await airi_connect(hub, "april", announce=True)
    plain = await airi_connect(hub, "plain")
    head = await head_connect(airi_connect, hub, "head")
    await ext_module_announce(head, "head", mod_identity("head-mid", "head"))
    peer = await head_connect(airi_connect, hub, "peer")
    await peer_authenticate(peer, peer_id="pp")
    both = await head_connect(airi_connect, hub, "both")
    await ext_module_announce(both, "both-ext", mod_identity("both-mid", "both"))
    await both.announce("both")
    status = await head_connect(airi_connect, hub, "status")
    await status.send("peer:status", {"peerId": "status", "phase": "connected"}, route={"destinations": []})
    kit = await head_connect(airi_connect, hub, "kit")
    await kit.send("extension:kit:announce", {"identity": {"id": "kit-1"}}, route={"destinations": []})
    empty = {"destinations": []}
    # any event whose type starts with peer: or extension: makes the sender HEAD-generation
    assert await probe_one(status, rx, data=empty) == set()
    assert await probe_one(kit, rx, data=empty) == set()
    assert await probe_one(april, rx, data=empty) == names
    assert await probe_one(plain, rx, data=empty) == names
    assert await probe_one(head, rx, data=empty) == set()
    assert await probe_one(peer, rx, data=empty) == set()
    assert await probe_one(both, rx, data=empty) == names
    assert await probe_one(head, rx, data={"destinations": ["module:rx1"]}) == {"rx1"}
    for sender in (april, head):
        assert await probe_one(sender, rx, {"destinations": []}) == set()  # route.destinations: [] is nobody


# -- decision 10: frames without data ---------------------------------------------------------------
async def test_frame_without_data_by_generation(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(settings())
    rx = await airi_connect(hub, "rx", announce=True)
    april = await airi_connect(hub, "april", announce=True)
    head = await head_connect(airi_connect, hub, "head")
    await ext_module_announce(head, "head", mod_identity("head-mid", "head"))
    # April: forwarded with "data": {} added
    start = rx.mark()
    eid = nonce("nodata")
    await april.send_raw(json.dumps({"type": "test:nodata", "metadata": {"event": {"id": eid}}}))
    got = await rx.wait_for("test:nodata", start=start)
    assert got["data"] == {} and got["metadata"]["event"]["id"] == eid
    # HEAD: invalid event format, nothing routed
    start, s = rx.mark(), head.mark()
    await head.send_raw(json.dumps({"json": {"type": "test:nodata", "metadata": {"event": {"id": nonce()}}}}))
    await expect_error(head, INVALID_FORMAT, start=s)
    await rx.expect_silence(after=[head], start=start)


@pytest.mark.parametrize("data", [[], "text", None, 5, [1, {"a": 1}]])
async def test_non_object_data_is_invalid_for_everyone(airi_hub_factory, airi_connect, data):
    hub = await airi_hub_factory(settings())
    rx = await airi_connect(hub, "rx", announce=True)
    april = await airi_connect(hub, "april", announce=True)
    head = await head_connect(airi_connect, hub, "head")
    await ext_module_announce(head, "head", mod_identity("head-mid", "head"))
    start = rx.mark()
    for sender in (april, head):
        s = sender.mark()
        await sender.send_raw(json.dumps({"type": "test:bad", "data": data, "metadata": {"event": {"id": nonce()}}}))
        await expect_error(sender, INVALID_FORMAT, start=s)
    await rx.expect_silence(after=[april, head], start=start)


# -- decision 16: non-array destinations ------------------------------------------------------------
@pytest.mark.parametrize(
    "where, value",
    [("route", None), ("route", "*"), ("route", {"a": 1}), ("route", 5), ("data", "*"), ("data", {"a": 1}), ("data", None), ("data", 7)],
)
async def test_non_array_destinations_are_invalid(airi_hub_factory, airi_connect, where, value):
    hub = await airi_hub_factory(settings())
    rx = await airi_connect(hub, "rx", announce=True)
    head = await head_connect(airi_connect, hub, "head")
    await ext_module_announce(head, "head", mod_identity("head-mid", "head"))
    april = await airi_connect(hub, "april", announce=True)
    start = rx.mark()
    for sender in (april, head):
        ev = {"type": "test:dest", "data": {"x": 1}, "metadata": {"event": {"id": nonce()}}}
        if where == "route":
            ev["route"] = {"destinations": value}
        else:
            ev["data"]["destinations"] = value
        s = sender.mark()
        await sender.send_raw(json.dumps(ev))
        await expect_error(sender, INVALID_FORMAT, start=s)
        assert sender.close_code is None
    await rx.expect_silence(after=[april, head], start=start)
    assert await probe_one(april, [rx]) == {"rx"}  # the hub is still up and routing


# -- decision 12: policy synonyms ---------------------------------------------------------------------
async def _policy_world(airi_hub_factory, airi_connect, policy):
    hub = await airi_hub_factory(settings(routing={"policy": policy}))
    sender = await airi_connect(hub, "sender", announce=True)
    # like the HEAD SDK, each sends with a source whose id is its module id (decision 8)
    ok = await head_connect(airi_connect, hub, "head-ok", "ok-1", "ext-ok")
    await ext_module_announce(ok, "head-ok", mod_identity("ok-1", "ext-ok"))
    no = await head_connect(airi_connect, hub, "head-no", "no-1", "ext-no")
    await ext_module_announce(no, "head-no", mod_identity("no-1", "ext-no"))
    leg_ok = await airi_connect(hub, "leg-ok", announce=True, identity=identity("leg-ok", "ext-ok"))
    leg_p1 = await airi_connect(hub, "leg-p1", announce=True, identity=identity("leg-p1", "p1"))
    leg_other = await airi_connect(hub, "leg-other", announce=True, identity=identity("leg-other", "other"))
    return await probe_one(sender, [ok, no, leg_ok, leg_p1, leg_other])


@pytest.mark.parametrize(
    "policy, expected",
    [
        ({"allow_extensions": ["ext-ok"]}, {"head-ok", "leg-ok"}),
        ({"allow_plugins": ["ext-ok"]}, {"head-ok", "leg-ok"}),
        ({"deny_extensions": ["ext-no", "p1"]}, {"head-ok", "leg-ok", "leg-other"}),
        ({"deny_plugins": ["ext-no"]}, {"head-ok", "leg-ok", "leg-p1", "leg-other"}),
        ({"allow_plugins": ["p1"], "allow_extensions": ["ext-ok"]}, {"head-ok", "leg-ok", "leg-p1"}),
        ({"allow_extensions": ["ext-ok", "ext-no"], "deny_plugins": ["ext-no"]}, {"head-ok", "leg-ok"}),
    ],
)
async def test_policy_extension_synonyms(airi_hub_factory, airi_connect, policy, expected):
    assert await _policy_world(airi_hub_factory, airi_connect, policy) == expected
