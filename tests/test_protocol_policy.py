"""PROTOCOL.md "Routing policy": allow/deny plugins and labels, and the improvement that a policy
composes with destinations (an event goes only to peers the policy allows AND the destinations
match) and with consumer delivery."""

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
    leave,
    probe,
)

async def _world(factory, connect, **policy):
    hub = await factory({"routing": {"policy": policy}})
    return await build_world(hub, connect)


POLICY_CASES = [
    ({"allow_plugins": ["proj-airi:stage-web", "acme:tts"]}, {"stage-web", "tts"}),
    ({"allow_plugins": ["nobody"]}, set()),
    ({"deny_plugins": ["acme:tts"]}, ALL - {"tts"}),
    ({"deny_plugins": ["acme:tts", "odd"]}, ALL - {"tts", "odd:name"}),
    ({"allow_labels": ["env=prod"]}, {"stage-web", "tts"}),
    ({"allow_labels": ["env=prod", "tier"]}, {"stage-web"}),  # allow needs all selectors
    ({"allow_labels": ["env"]}, {"stage-web", "discord-bot", "tts"}),
    ({"allow_labels": ["env=dev"]}, {"discord-bot"}),  # plugin.labels count
    ({"allow_labels": ["platform=discord"]}, {"discord-bot"}),  # identity.labels overlay plugin.labels
    ({"allow_labels": ["platform=chat"]}, set()),
    ({"deny_labels": ["env=prod"]}, {"discord-bot", "odd:name"}),
    ({"deny_labels": ["env=prod", "tier=front"]}, ALL - {"stage-web"}),  # deny needs all to match
    ({"deny_labels": ["env=prod", "tier=back"]}, ALL),
    ({"deny_labels": ["platform"]}, ALL - {"discord-bot"}),
    ({"allow_plugins": ["proj-airi:stage-web", "acme:tts", "odd"], "deny_labels": ["tier=front"]}, {"tts", "odd:name"}),
    ({"allow_labels": ["env"], "deny_plugins": ["proj-airi:discord"]}, {"stage-web", "tts"}),
]


@pytest.mark.parametrize(("policy", "expected"), POLICY_CASES, ids=[str(i) for i in range(len(POLICY_CASES))])
async def test_policy_filters_receivers(airi_hub_factory, airi_connect, policy, expected):
    w = await _world(airi_hub_factory, airi_connect, **policy)
    (res,) = await probe(w.sender, w.clients.values(), [{}])
    assert res == expected
    assert w.sender.error_messages() == []


async def test_policy_and_destinations_compose(airi_hub_factory, airi_connect):
    """improvement: the reference lets a policy decision silently discard the destinations."""
    w = await _world(airi_hub_factory, airi_connect, allow_labels=["env=prod"])
    results = await probe(
        w.sender,
        w.clients.values(),
        [
            {"route": {"destinations": ["module:tts", "module:discord-bot"]}},
            {"route": {"destinations": ["*"]}},
            {"route": {"destinations": ["module:discord-bot"]}},
            {"route": {"destinations": []}},
            {"route": {"destinations": [{"type": "plugin", "plugins": ["acme:tts"], "inverted": True}]}},
            {"data": {"destinations": ["plugin:proj-airi:stage-web", "odd*"]}},
            {},
        ],
    )
    assert results == [{"tts"}, {"stage-web", "tts"}, set(), set(), {"stage-web"}, {"stage-web"}, {"stage-web", "tts"}]


async def test_deny_policy_and_destinations_compose(airi_hub_factory, airi_connect):
    w = await _world(airi_hub_factory, airi_connect, deny_plugins=["acme:tts"])
    results = await probe(
        w.sender,
        w.clients.values(),
        [
            {"route": {"destinations": ["module:tts"]}},
            {"route": {"destinations": ["label:env=prod"]}},
        ],
    )
    assert results == [set(), {"stage-web"}]


async def test_policy_does_not_restrict_senders(airi_hub_factory, airi_connect):
    w = await _world(airi_hub_factory, airi_connect, allow_plugins=["proj-airi:ui"])
    # tts is not allowed to receive, but may send; only the sender (plugin proj-airi:ui) receives
    others = [w.sender, *[c for n, c in w.clients.items() if n != "tts"]]
    (res,) = await probe(w.clients["tts"], others, [{}])
    assert res == {"ui"}


async def test_policy_with_non_devtools_bypass_still_applies(airi_hub_factory, airi_connect):
    """Only devtools peers may bypass (assumption: a plain peer's ``bypass: true`` is ignored)."""
    w = await _world(airi_hub_factory, airi_connect, deny_plugins=["acme:tts"])
    (res,) = await probe(w.sender, w.clients.values(), [{"route": {"bypass": True}}])
    assert res == ALL - {"tts"}


async def test_policy_narrows_consumer_delivery(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"routing": {"policy": {"deny_labels": ["role=blocked"]}}})
    sender = await airi_connect(hub, "sender", announce=True)
    blocked = await airi_connect(hub, "blocked", announce=True, identity=identity("blocked", labels={"role": "blocked"}))
    ok = await airi_connect(hub, "ok", announce=True)
    await consumer_register(blocked, "input:text", group="chat-ingestion", priority=100)
    await consumer_register(ok, "input:text", group="chat-ingestion", priority=1)
    b0, o0 = blocked.mark(), ok.mark()
    await sender.send("input:text", {"text": "hi"})
    await ok.wait_for("input:text", start=o0)
    await blocked.expect_silence("input:text", after=[sender], start=b0)
    # when the only consumer is excluded by the policy, a required delivery errors
    await leave(ok, sender)
    start = sender.mark()
    ev = await sender.send("input:text", {"text": "again"}, route={"delivery": {"required": True}})
    await expect_error(sender, errors.NO_CONSUMER_REGISTERED, start=start, parent=event_id(ev))
    await blocked.expect_silence("input:text", after=[sender], start=b0)


async def test_policy_with_destinations_and_consumers_all_compose(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"routing": {"policy": {"allow_labels": ["zone=eu"]}}})
    sender = await airi_connect(hub, "sender", announce=True)
    us = await airi_connect(hub, "us", announce=True, identity=identity("us", labels={"zone": "us"}))
    eu1 = await airi_connect(hub, "eu1", announce=True, identity=identity("eu1", labels={"zone": "eu"}))
    eu2 = await airi_connect(hub, "eu2", announce=True, identity=identity("eu2", labels={"zone": "eu"}))
    for prio, c in ((30, us), (20, eu1), (10, eu2)):
        await consumer_register(c, "job:run", group="w", priority=prio)
    marks = {c.name: c.mark() for c in (us, eu1, eu2)}
    # policy removes us; destinations remove eu1: eu2 is the one consumer left
    await sender.send(
        "job:run", {"n": 1},
        route={"destinations": ["module:us", "module:eu2"], "delivery": {"mode": "consumer-group", "group": "w"}},
    )
    await eu2.wait_for("job:run", start=marks["eu2"])
    for c in (us, eu1):
        await c.expect_silence("job:run", after=[sender], start=marks[c.name])
