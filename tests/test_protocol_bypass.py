"""PROTOCOL.md "Devtools bypass": who is a devtools peer, what ``route.bypass`` skips (policy,
destinations, delivery rules), ``allow_bypass = false``, and the improvement that an announced
identity cannot be upgraded to devtools through a later ``metadata.source``."""

from __future__ import annotations

import pytest

from airi_core import errors

from .protocol_helpers import (
    ALL,
    build_world,
    consumer_register,
    event_id,
    expect_error,
    identity,
    probe,
    probe_one,
)

NOWHERE = {"destinations": ["module:nobody-at-all"]}


DEVTOOLS_SENDERS = {
    "label-true": ("sender", identity("sender", labels={"devtools": "true"})),
    "label-1": ("sender", identity("sender", labels={"devtools": "1"})),
    "plugin-label": ("sender", identity("sender", plugin_labels={"devtools": "true"})),
    "name": ("proj-airi-devtools-panel", identity("panel")),
    "name-only-devtools": ("devtools", identity("panel")),
}


@pytest.mark.parametrize("kind", list(DEVTOOLS_SENDERS))
async def test_devtools_peer_bypass_skips_destinations(airi_hub, airi_connect, kind):
    name, ident = DEVTOOLS_SENDERS[kind]
    w = await build_world(airi_hub, airi_connect)
    dev = await airi_connect(airi_hub, name, announce=True, identity=ident)
    everyone = [w.sender, *w.clients.values()]
    results = await probe(
        dev,
        everyone,
        [
            {"route": {"bypass": True, **NOWHERE}},
            {"route": {"bypass": True, "destinations": []}},
            {"route": {"bypass": True}, "data": {"destinations": ["module:tts"]}},
            {"route": dict(NOWHERE)},  # without bypass the destinations apply
            {"route": {"bypass": False, "destinations": ["module:tts"]}},
        ],
    )
    assert results == [ALL | {"ui"}, ALL | {"ui"}, ALL | {"ui"}, set(), {"tts"}]
    assert dev.error_messages() == []


NOT_DEVTOOLS = {
    "label-false": ("sender", identity("sender", labels={"devtools": "false"})),
    "label-yes": ("sender", identity("sender", labels={"devtools": "yes"})),
    "label-0": ("sender", identity("sender", labels={"devtools": "0"})),
    "overlay-false": ("sender", identity("sender", plugin_labels={"devtools": "true"}, labels={"devtools": "false"})),
    "plugin-id-only": ("sender", identity("sender", "proj-airi:devtools")),
    "instance-only": ("sender", identity("sender", instance="devtools-1")),
    "other-label": ("sender", identity("sender", labels={"devtool": "true"})),
}


@pytest.mark.parametrize("kind", list(NOT_DEVTOOLS))
async def test_non_devtools_peer_cannot_bypass(airi_hub, airi_connect, kind):
    name, ident = NOT_DEVTOOLS[kind]
    w = await build_world(airi_hub, airi_connect)
    peer = await airi_connect(airi_hub, name, announce=True, identity=ident)
    results = await probe(
        peer,
        [w.sender, *w.clients.values()],
        [{"route": {"bypass": True, **NOWHERE}}, {"route": {"bypass": True, "destinations": ["module:tts"]}}],
    )
    assert results == [set(), {"tts"}]


async def test_bypass_never_reaches_the_sender_or_unauthenticated_peers(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"auth": {"token": "t"}})
    eve = await airi_connect(hub, "eve")
    dev = await airi_connect(hub, "devtools", token="t", announce=True)
    b = await airi_connect(hub, "b", token="t", announce=True)
    res = await probe_one(dev, [b, eve], {"bypass": True, "destinations": ["*"]})
    assert res == {"b"}
    assert [e for e in dev.received if e.get("type") == "test:probe"] == []
    assert [e for e in eve.received if e.get("type") != "transport:connection:heartbeat"] == []


async def test_bypass_skips_the_routing_policy(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"routing": {"policy": {"allow_plugins": ["nobody"], "deny_labels": ["env"]}}})
    w = await build_world(hub, airi_connect)
    dev = await airi_connect(hub, "dev", announce=True, identity=identity("dev", labels={"devtools": "true"}))
    results = await probe(dev, [w.sender, *w.clients.values()], [{"route": {"bypass": True}}, {}])
    assert results == [ALL | {"ui"}, set()]


async def test_bypass_skips_consumer_delivery(airi_hub, airi_connect):
    dev = await airi_connect(airi_hub, "devtools", announce=True)
    c1 = await airi_connect(airi_hub, "c1", announce=True)
    c2 = await airi_connect(airi_hub, "c2", announce=True)
    other = await airi_connect(airi_hub, "other", announce=True)
    await consumer_register(c1, "input:text", group="chat-ingestion")
    await consumer_register(c2, "input:text", group="chat-ingestion")
    res = await probe_one(dev, [c1, c2, other], {"bypass": True}, type="input:text")
    assert res == {"c1", "c2", "other"}
    # required delivery with no consumer: bypass skips delivery rules, so no error either
    res = await probe_one(dev, [c1, c2, other], {"bypass": True, "delivery": {"mode": "consumer", "required": True}}, type="job:none")
    assert res == {"c1", "c2", "other"}
    assert dev.error_messages() == []


async def test_allow_bypass_false_applies_every_rule(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"routing": {"allow_bypass": False}})
    w = await build_world(hub, airi_connect)
    dev = await airi_connect(hub, "devtools", announce=True, identity=identity("devtools", labels={"devtools": "true"}))
    results = await probe(
        dev,
        [w.sender, *w.clients.values()],
        [
            {"route": {"bypass": True, **NOWHERE}},
            {"route": {"bypass": True, "destinations": ["label:env=prod"]}},
            {"route": {"bypass": True}},
        ],
    )
    assert results == [set(), {"ui", "stage-web", "tts"}, ALL | {"ui"}]
    # delivery rules apply too
    c = w.clients["tts"]
    await consumer_register(c, "input:text", group="chat-ingestion")
    res = await probe_one(dev, [w.sender, *w.clients.values()], {"bypass": True}, type="input:text")
    assert res == {"tts"}
    start = dev.mark()
    ev = await dev.send("job:x", {}, route={"bypass": True, "delivery": {"mode": "consumer", "required": True}})
    await expect_error(dev, errors.NO_CONSUMER_REGISTERED, start=start, parent=event_id(ev))


async def test_allow_bypass_false_keeps_the_policy(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"routing": {"allow_bypass": False, "policy": {"deny_plugins": ["acme:tts"]}}})
    w = await build_world(hub, airi_connect)
    dev = await airi_connect(hub, "devtools", announce=True)
    (res,) = await probe(dev, [w.sender, *w.clients.values()], [{"route": {"bypass": True}}])
    assert res == (ALL | {"ui"}) - {"tts"}


async def test_announced_identity_cannot_claim_devtools_later(airi_hub, airi_connect):
    """improvement: after announcing, a metadata.source with a devtools label changes nothing."""
    w = await build_world(airi_hub, airi_connect)
    mallory = await airi_connect(airi_hub, "mallory", announce=True)
    mallory.identity = identity("mallory", labels={"devtools": "true"}, plugin_labels={"devtools": "1"})
    await mallory.send("test:claim", {}, route={"destinations": []})
    results = await probe(
        mallory,
        [w.sender, *w.clients.values()],
        [{"route": {"bypass": True, **NOWHERE}}, {"route": {"bypass": True, "destinations": ["module:tts"]}}],
    )
    assert results == [set(), {"tts"}]


async def test_announced_identity_cannot_claim_devtools_to_skip_policy(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"routing": {"policy": {"deny_plugins": ["acme:tts"]}}})
    w = await build_world(hub, airi_connect)
    mallory = await airi_connect(hub, "mallory", announce=True)
    mallory.identity = identity("mallory", labels={"devtools": "true"})
    (res,) = await probe(mallory, [w.sender, *w.clients.values()], [{"route": {"bypass": True}}])
    assert res == (ALL | {"ui"}) - {"tts"}


async def test_re_announce_is_the_way_to_change_identity(airi_hub, airi_connect):
    w = await build_world(airi_hub, airi_connect)
    peer = await airi_connect(airi_hub, "peer", announce=True)
    assert await probe_one(peer, [w.sender, *w.clients.values()], {"bypass": True, **NOWHERE}) == set()
    await peer.announce("peer", identity=identity("peer", labels={"devtools": "true"}))
    assert await probe_one(peer, [w.sender, *w.clients.values()], {"bypass": True, **NOWHERE}) == ALL | {"ui"}


async def test_unannounced_peer_never_counts_as_devtools_whatever_its_metadata_source(airi_hub, airi_connect):
    """Deliberate difference (issue 9): PROTOCOL.md makes an unannounced peer's metadata.source
    its identity, so claiming the devtools label bypassed the policy. Devtools powers come from
    the announced identity only."""
    w = await build_world(airi_hub, airi_connect)
    dev = await airi_connect(airi_hub, "dev")
    dev.identity = identity("dev", labels={"devtools": "true"})
    assert await probe_one(dev, [w.sender, *w.clients.values()], {"bypass": True, **NOWHERE}) == set()
    dev.identity = identity("devtools-ui", "proj-airi:devtools", labels={"devtools": "1"})
    assert await probe_one(dev, [w.sender, *w.clients.values()], {"bypass": True, **NOWHERE}) == set()
    # the same label, announced, grants it
    await dev.announce("dev", identity=identity("dev", labels={"devtools": "true"}))
    assert await probe_one(dev, [w.sender, *w.clients.values()], {"bypass": True, **NOWHERE}) == ALL | {"ui"}
