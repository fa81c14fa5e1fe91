"""PROTOCOL.md "Routing (every other event type)": candidates and every destination form (strings,
objects, inverted leaves, the first-colon split improvement), route vs data destinations."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from airi_core.testing import connect_client, start_hub

from .protocol_helpers import ALL, World, build_world, probe, probe_one

# One hub and one population of modules for the whole module (the probes do not change them):
# every test runs on the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> AsyncIterator[World]:
    hub = await start_hub()
    w = await build_world(hub, connect_client)
    yield w
    for c in [w.sender, *w.clients.values()]:
        await c.close()
    await hub.shutdown()


STRING_CASES = [
    (["*"], ALL),
    (["module:stage-web"], {"stage-web"}),
    (["source:stage-web"], {"stage-web"}),
    (["module:stage"], set()),
    (["module:odd:name"], {"odd:name"}),  # split at the first colon only
    (["source:odd:name"], {"odd:name"}),
    (["plugin:proj-airi:stage-web"], {"stage-web"}),  # improvement: second colon kept
    (["plugin:proj-airi:discord"], {"discord-bot"}),
    (["plugin:proj-airi"], set()),
    (["plugin:acme:tts"], {"tts"}),
    (["plugin:tts"], set()),
    (["instance:tts-1"], {"tts"}),
    (["instance:tts"], set()),
    (["label:env=prod"], {"stage-web", "tts"}),
    (["label:env=dev"], {"discord-bot"}),  # plugin.labels
    (["label:platform=discord"], {"discord-bot"}),  # identity.labels overlays plugin.labels
    (["label:platform=chat"], set()),
    (["label:platform"], {"discord-bot"}),
    (["label:env"], {"stage-web", "discord-bot", "tts"}),
    (["label:tier=back"], set()),
    (["stage-*"], {"stage-web"}),  # glob on the module name
    (["proj-airi:*"], {"stage-web", "discord-bot"}),  # unknown prefix: a glob on the plugin id
    (["*-inst*"], {"stage-web", "discord-bot"}),  # glob on the identity id
    (["tts"], {"tts"}),
    (["t*s"], {"tts"}),
    (["odd:name"], {"odd:name"}),
    (["odd:*"], {"odd:name"}),
    (["nomatch*"], set()),
    (["module:stage-web", "instance:tts-1"], {"stage-web", "tts"}),
    (["label:env=dev", "plugin:odd"], {"discord-bot", "odd:name"}),
    (["module:ui"], set()),  # the sender itself: never
    ([], set()),  # an explicit empty list means nobody
]


@pytest.mark.parametrize(("dests", "expected"), STRING_CASES, ids=[repr(c[0]) for c in STRING_CASES])
async def test_string_destinations(world, dests, expected):
    assert await world.reach({"destinations": dests}) == expected
    assert world.sender.error_messages() == []


OBJECT_CASES = [
    ({"type": "glob", "glob": "*-bot"}, {"discord-bot"}),
    ({"type": "glob", "glob": "proj-airi:*"}, {"stage-web", "discord-bot"}),
    ({"type": "glob", "glob": "*", "inverted": True}, set()),
    ({"type": "plugin", "plugins": ["acme:tts", "proj-airi:stage-web"]}, {"tts", "stage-web"}),
    ({"type": "plugin", "plugins": ["acme:tts"], "inverted": True}, ALL - {"tts"}),
    ({"type": "instance", "instances": ["discord-inst"]}, {"discord-bot"}),
    ({"type": "instance", "instances": ["tts-1"], "inverted": True}, ALL - {"tts"}),
    ({"type": "label", "selectors": ["env=prod", "tier=front"]}, {"stage-web"}),
    ({"type": "label", "selectors": ["env=prod", "tier"]}, {"stage-web"}),
    ({"type": "label", "selectors": ["env=prod"]}, {"stage-web", "tts"}),
    ({"type": "label", "selectors": ["env=prod"], "inverted": True}, {"discord-bot", "odd:name"}),
    ({"type": "module", "modules": ["tts", "odd:name"]}, {"tts", "odd:name"}),
    ({"type": "module", "modules": ["tts"], "inverted": True}, ALL - {"tts"}),
    ({"type": "source", "sources": ["discord-bot"]}, {"discord-bot"}),
    ({"type": "source", "sources": ["discord-bot"], "inverted": True}, ALL - {"discord-bot"}),
    (
        {"type": "and", "all": [{"type": "label", "selectors": ["env=prod"]}, {"type": "plugin", "plugins": ["acme:tts"], "inverted": True}]},
        {"stage-web"},
    ),
    (
        {"type": "or", "any": [{"type": "module", "modules": ["tts"]}, {"type": "glob", "glob": "discord*"}]},
        {"tts", "discord-bot"},
    ),
    (
        {
            "type": "or",
            "any": [
                {"type": "and", "all": [{"type": "label", "selectors": ["env"]}, {"type": "label", "selectors": ["env=prod"], "inverted": True}]},
                {"type": "instance", "instances": ["odd-1"]},
            ],
        },
        {"discord-bot", "odd:name"},
    ),
    (
        {"type": "and", "all": [{"type": "glob", "glob": "*"}, {"type": "source", "sources": ["stage-web", "tts"], "inverted": True}]},
        {"discord-bot", "odd:name"},
    ),
]


@pytest.mark.parametrize(("expr", "expected"), OBJECT_CASES, ids=[str(i) for i in range(len(OBJECT_CASES))])
async def test_object_destinations(world, expr, expected):
    assert await world.reach({"destinations": [expr]}) == expected
    assert world.sender.error_messages() == []


async def test_mixed_string_and_object_destinations(world):
    res = await world.reach({"destinations": ["module:tts", {"type": "plugin", "plugins": ["proj-airi:discord"]}]})
    assert res == {"tts", "discord-bot"}


async def test_peer_id_destinations(world):
    tts = world.peer_id("tts")
    stage = world.peer_id("stage-web")
    assert await world.reach({"destinations": [f"peer:{tts}"]}) == {"tts"}
    assert await world.reach({"destinations": [{"type": "ids", "ids": [tts, stage]}]}) == {"tts", "stage-web"}
    assert await world.reach({"destinations": [{"type": "ids", "ids": [tts], "inverted": True}]}) == ALL - {"tts"}
    assert await world.reach({"destinations": ["peer:nope"]}) == set()


async def test_no_destinations_means_every_authenticated_peer_but_the_sender(world):
    plain = await connect_client(world.hub, "plain")  # authenticated, never announced
    try:
        res = await probe_one(world.sender, [*world.clients.values(), plain])
    finally:
        await plain.close()
    assert res == ALL | {"plain"}
    assert await world.reach({}) == ALL  # a route without destinations
    assert await world.reach({"bypass": False}) == ALL


async def test_data_destinations_are_used_without_route_destinations(world):
    results = await probe(
        world.sender,
        world.clients.values(),
        [
            {"data": {"destinations": ["module:tts"]}},
            {"data": {"destinations": []}},  # empty data.destinations: unrestricted
            {"data": {"destinations": ["label:env=prod"]}, "route": {}},
            {"data": {"destinations": [{"type": "module", "modules": ["stage-web"]}]}},
            {"data": {"destinations": ["module:stage-web"]}, "route": {"destinations": ["module:tts"]}},
            {"data": {"destinations": ["*"]}, "route": {"destinations": []}},
        ],
    )
    assert results == [{"tts"}, ALL, {"stage-web", "tts"}, {"stage-web"}, {"tts"}, set()]


async def test_wrapped_events_are_routed_the_same(world):
    results = await probe(
        world.sender,
        world.clients.values(),
        [
            {"route": {"destinations": ["plugin:proj-airi:stage-web"]}, "wrap": True},
            {"route": {"destinations": [{"type": "label", "selectors": ["env=prod"], "inverted": True}]}, "wrap": True},
        ],
    )
    assert results == [{"stage-web"}, {"discord-bot", "odd:name"}]


async def test_destinations_never_include_the_sender(world):
    results = await probe(
        world.sender,
        world.clients.values(),
        [
            {"route": {"destinations": ["*", "module:ui", "plugin:proj-airi:ui"]}},
            {"route": {"destinations": [{"type": "label", "selectors": ["env=prod"]}]}},
        ],
    )
    assert results == [ALL, {"stage-web", "tts"}]
    assert [e for e in world.sender.received if e.get("type") == "test:probe"] == []


async def test_each_receiver_gets_a_routed_event_once(world):
    start = {n: c.mark() for n, c in world.clients.items()}
    res = await world.reach({"destinations": ["*", "module:tts", "label:env", {"type": "glob", "glob": "*"}]})
    assert res == ALL
    for n, c in world.clients.items():
        assert len([e for e in c.received[start[n]:] if e["type"] == "test:probe"]) == 1
