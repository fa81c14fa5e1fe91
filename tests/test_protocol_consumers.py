"""PROTOCOL.md "Routing" -> Delivery: protocol defaults for input events, ``route.delivery``
overrides key by key, consumer and consumer-group modes, selection first / priority /
round-robin / sticky, ``required`` -> error, never the sender, unhealthy consumers excluded
(see also test_protocol_heartbeat), disconnect and unregister."""

from __future__ import annotations

import json

import pytest

from airi_core import errors

from .protocol_helpers import (
    assert_server_event,
    consumer_register,
    consumer_unregister,
    event_id,
    expect_error,
    leave,
    probe,
    probe_one,
)

NO_CONSUMER = "no consumer registered for requested event delivery"
INPUT_TYPES = ["input:text", "input:text:voice", "input:voice"]


async def _peers(connect, hub, *names):
    return [await connect(hub, n, announce=True) for n in names]


def _only(results: list[set[str]]) -> list[str]:
    """Each probe reached exactly one peer: its name."""
    assert all(len(r) == 1 for r in results), results
    return [next(iter(r)) for r in results]


# -- protocol defaults ----------------------------------------------------------------------------
@pytest.mark.parametrize("etype", INPUT_TYPES)
async def test_input_events_go_to_one_chat_ingestion_consumer(airi_hub, airi_connect, etype):
    sender, c1, c2, other = await _peers(airi_connect, airi_hub, "sender", "c1", "c2", "other")
    await consumer_register(c1, etype, group="chat-ingestion")
    await consumer_register(c2, etype, group="chat-ingestion")
    results = await probe(sender, [c1, c2, other], [{"type": etype}] * 4)
    assert _only(results) == ["c1"] * 4  # selection first: earliest registration
    assert sender.error_messages() == []


@pytest.mark.parametrize("etype", INPUT_TYPES)
async def test_input_events_without_consumer_are_dropped_silently(airi_hub, airi_connect, etype):
    sender, a, b = await _peers(airi_connect, airi_hub, "sender", "a", "b")
    assert await probe_one(sender, [a, b], type=etype) == set()
    assert sender.error_messages() == []


@pytest.mark.parametrize("etype", INPUT_TYPES)
async def test_input_events_required_without_consumer_is_an_error(airi_hub, airi_connect, etype):
    sender, a = await _peers(airi_connect, airi_hub, "sender", "a")
    start = sender.mark()
    ev = await sender.send(etype, {"text": "x"}, route={"delivery": {"required": True}})
    err = await expect_error(sender, NO_CONSUMER, start=start, parent=event_id(ev))
    assert err["data"]["message"] == errors.NO_CONSUMER_REGISTERED
    assert_server_event(err, airi_hub, parent=event_id(ev))
    await a.expect_silence(etype, after=[sender], start=0)


async def test_consumer_in_another_group_does_not_get_input_events(airi_hub, airi_connect):
    sender, c_default, c_other = await _peers(airi_connect, airi_hub, "sender", "c-default", "c-other")
    await consumer_register(c_default, "input:text")  # mode consumer, group default
    await consumer_register(c_other, "input:text", group="other")
    assert await probe_one(sender, [c_default, c_other], type="input:text") == set()
    start = sender.mark()
    await sender.send("input:text", {}, route={"delivery": {"required": True}})
    await expect_error(sender, NO_CONSUMER, start=start)


async def test_consumer_of_another_event_type_does_not_get_it(airi_hub, airi_connect):
    sender, c = await _peers(airi_connect, airi_hub, "sender", "c")
    await consumer_register(c, "input:voice", group="chat-ingestion")
    assert await probe_one(sender, [c], type="input:text") == set()


async def test_non_input_events_are_broadcast_without_delivery(airi_hub, airi_connect):
    sender, c, other = await _peers(airi_connect, airi_hub, "sender", "c", "other")
    await consumer_register(c, "output:text", group="chat-ingestion")
    assert await probe_one(sender, [c, other], type="output:text") == {"c", "other"}


# -- route.delivery overrides ----------------------------------------------------------------------
async def test_route_delivery_overrides_the_default_key_by_key(airi_hub, airi_connect):
    sender, c1, c2, alt = await _peers(airi_connect, airi_hub, "sender", "c1", "c2", "alt")
    await consumer_register(c1, "input:text", group="chat-ingestion")
    await consumer_register(c2, "input:text", group="chat-ingestion")
    await consumer_register(alt, "input:text", group="alt")
    results = await probe(
        sender,
        [c1, c2, alt],
        [
            {"type": "input:text", "route": {"delivery": {"group": "alt"}}},  # mode stays consumer-group
            {"type": "input:text", "route": {"delivery": {"selection": "round-robin"}}},  # group stays chat-ingestion
            {"type": "input:text", "route": {"delivery": {"selection": "round-robin"}}},
            {"type": "input:text", "route": {"delivery": {"mode": "broadcast"}}},
            {"type": "input:text", "route": {"delivery": {}}},
        ],
    )
    assert results[0] == {"alt"}
    assert {next(iter(results[1])), next(iter(results[2]))} == {"c1", "c2"}
    assert results[3] == {"c1", "c2", "alt"}
    assert results[4] == {"c1"}


async def test_consumer_mode_for_any_event_type(airi_hub, airi_connect):
    sender, w1, w2, other = await _peers(airi_connect, airi_hub, "sender", "w1", "w2", "other")
    await consumer_register(w1, "job:run", mode="consumer")
    await consumer_register(w2, "job:run")
    results = await probe(sender, [w1, w2, other], [{"type": "job:run", "route": {"delivery": {"mode": "consumer"}}}] * 3)
    assert _only(results) == ["w1"] * 3


async def test_consumer_group_mode_for_any_event_type(airi_hub, airi_connect):
    sender, g1, g2, d = await _peers(airi_connect, airi_hub, "sender", "g1", "g2", "d")
    await consumer_register(g1, "job:run", mode="consumer-group", group="grp")
    await consumer_register(g2, "job:run", group="grp")
    await consumer_register(d, "job:run")
    route = {"delivery": {"mode": "consumer-group", "group": "grp", "selection": "round-robin"}}
    results = await probe(sender, [g1, g2, d], [{"type": "job:run", "route": route}] * 4)
    assert sorted(_only(results)) == ["g1", "g1", "g2", "g2"]


# -- selection ----------------------------------------------------------------------------------------
async def test_selection_priority_highest_first_then_earliest(airi_hub, airi_connect):
    sender, low, high, high2, mid = await _peers(airi_connect, airi_hub, "sender", "low", "high", "high2", "mid")
    await consumer_register(low, "job:p", group="g", priority=-5)
    await consumer_register(high, "job:p", group="g", priority=10.5)
    await consumer_register(high2, "job:p", group="g", priority=10.5)
    await consumer_register(mid, "job:p", group="g", priority=3)
    for selection in ("priority", "first"):
        route = {"delivery": {"mode": "consumer-group", "group": "g", "selection": selection}}
        results = await probe(sender, [low, high, high2, mid], [{"type": "job:p", "route": route}] * 3)
        assert _only(results) == ["high"] * 3
    await leave(high, sender)
    route = {"delivery": {"mode": "consumer-group", "group": "g", "selection": "priority"}}
    assert await probe_one(sender, [low, high2, mid], route, type="job:p") == {"high2"}
    await consumer_unregister(high2, "job:p", group="g")
    assert await probe_one(sender, [low, high2, mid], route, type="job:p") == {"mid"}


async def test_non_numeric_priority_counts_as_zero(airi_hub, airi_connect):
    sender, a, b, c = await _peers(airi_connect, airi_hub, "sender", "a", "b", "c")
    await consumer_register(a, "job:q", group="g", priority="99")
    await consumer_register(b, "job:q", group="g", priority=1)
    await consumer_register(c, "job:q", group="g", priority=-1)
    route = {"delivery": {"mode": "consumer-group", "group": "g"}}
    assert await probe_one(sender, [a, b, c], route, type="job:q") == {"b"}


async def test_re_registering_updates_the_priority(airi_hub, airi_connect):
    sender, a, b = await _peers(airi_connect, airi_hub, "sender", "a", "b")
    await consumer_register(a, "job:r", group="g", priority=5)
    await consumer_register(b, "job:r", group="g", priority=1)
    route = {"delivery": {"mode": "consumer-group", "group": "g"}}
    assert await probe_one(sender, [a, b], route, type="job:r") == {"a"}
    await consumer_register(b, "job:r", group="g", priority=50)
    assert await probe_one(sender, [a, b], route, type="job:r") == {"b"}


async def test_selection_round_robin_cycles(airi_hub, airi_connect):
    sender, a, b, c = await _peers(airi_connect, airi_hub, "sender", "a", "b", "c")
    for x in (a, b, c):
        await consumer_register(x, "input:text", group="chat-ingestion")
    route = {"delivery": {"selection": "round-robin"}}
    order = _only(await probe(sender, [a, b, c], [{"type": "input:text", "route": route}] * 9))
    assert sorted(order[:3]) == ["a", "b", "c"]
    assert order[3:6] == order[:3] and order[6:9] == order[:3]


async def test_round_robin_skips_a_consumer_that_left(airi_hub, airi_connect):
    sender, a, b, c = await _peers(airi_connect, airi_hub, "sender", "a", "b", "c")
    for x in (a, b, c):
        await consumer_register(x, "input:text", group="chat-ingestion")
    route = {"delivery": {"selection": "round-robin"}}
    await leave(b, sender)
    order = _only(await probe(sender, [a, c], [{"type": "input:text", "route": route}] * 4))
    assert sorted(order) == ["a", "a", "c", "c"]
    assert order[0] != order[1] and order[1] != order[2]


async def test_selection_sticky_keeps_the_same_consumer(airi_hub, airi_connect):
    sender, a, b, c = await _peers(airi_connect, airi_hub, "sender", "a", "b", "c")
    for x in (a, b):
        await consumer_register(x, "input:text", group="chat-ingestion")
    sticky = {"delivery": {"selection": "sticky", "stickyKey": "conversation-1"}}
    first = _only(await probe(sender, [a, b, c], [{"type": "input:text", "route": sticky}]))[0]
    # a later, higher-priority consumer does not steal an existing sticky assignment
    await consumer_register(c, "input:text", group="chat-ingestion", priority=100)
    order = _only(await probe(sender, [a, b, c], [{"type": "input:text", "route": sticky}] * 4))
    assert order == [first] * 4
    # a new key goes by priority
    other = {"delivery": {"selection": "sticky", "stickyKey": "conversation-2"}}
    assert _only(await probe(sender, [a, b, c], [{"type": "input:text", "route": other}] * 2)) == ["c", "c"]
    # while the assigned consumer is gone, the key moves and then sticks to the new one
    clients = {"a": a, "b": b}
    await consumer_unregister(clients[first], "input:text", group="chat-ingestion")
    order = _only(await probe(sender, [a, b, c], [{"type": "input:text", "route": sticky}] * 3))
    assert order[0] != first and order == [order[0]] * 3


async def test_sticky_assignment_moves_when_the_consumer_disconnects(airi_hub, airi_connect):
    sender, a, b = await _peers(airi_connect, airi_hub, "sender", "a", "b")
    for x in (a, b):
        await consumer_register(x, "job:s", group="g")
    route = {"delivery": {"mode": "consumer-group", "group": "g", "selection": "sticky", "stickyKey": "k"}}
    assert _only(await probe(sender, [a, b], [{"type": "job:s", "route": route}] * 2)) == ["a", "a"]
    await leave(a, sender)
    assert _only(await probe(sender, [b], [{"type": "job:s", "route": route}] * 2)) == ["b", "b"]


# -- never the sender, required -------------------------------------------------------------------
async def test_never_delivered_back_to_the_sender(airi_hub, airi_connect):
    sender, other = await _peers(airi_connect, airi_hub, "sender", "other")
    await consumer_register(sender, "input:text", group="chat-ingestion", priority=1000)
    await consumer_register(other, "input:text", group="chat-ingestion", priority=0)
    for selection in ("first", "round-robin", "sticky"):
        route = {"delivery": {"selection": selection, "stickyKey": "k"}}
        results = await probe(sender, [other], [{"type": "input:text", "route": route}] * 2)
        assert results == [{"other"}, {"other"}]
    assert [e for e in sender.received if e.get("type") == "input:text"] == []


async def test_required_with_only_the_sender_registered_is_an_error(airi_hub, airi_connect):
    sender, other = await _peers(airi_connect, airi_hub, "sender", "other")
    await consumer_register(sender, "input:text", group="chat-ingestion")
    start = sender.mark()
    ev = await sender.send("input:text", {"text": "x"}, route={"delivery": {"required": True}})
    await expect_error(sender, "no consumer registered for requested event delivery", start=start, parent=event_id(ev))
    await other.expect_silence("input:text", after=[sender], start=0)
    # the other peer sending the same is fine: the sender is a consumer for it
    start = other.mark()
    await other.send("input:text", {"text": "y"}, route={"delivery": {"required": True}})
    await sender.wait_for("input:text")
    assert other.error_messages(start) == []


async def test_required_with_a_consumer_sends_no_error(airi_hub, airi_connect):
    sender, c = await _peers(airi_connect, airi_hub, "sender", "c")
    await consumer_register(c, "job:req", group="g")
    route = {"delivery": {"mode": "consumer-group", "group": "g", "required": True}}
    assert await probe_one(sender, [c], route, type="job:req") == {"c"}
    assert sender.error_messages() == []


async def test_required_is_answered_after_the_consumer_unregistered(airi_hub, airi_connect):
    sender, c = await _peers(airi_connect, airi_hub, "sender", "c")
    await consumer_register(c, "job:req", group="g")
    await consumer_unregister(c, "job:req", group="g")
    start = sender.mark()
    ev = await sender.send("job:req", {}, route={"delivery": {"mode": "consumer-group", "group": "g", "required": True}})
    await expect_error(sender, NO_CONSUMER, start=start, parent=event_id(ev))


async def test_consumer_leaves_on_disconnect(airi_hub, airi_connect):
    sender, c = await _peers(airi_connect, airi_hub, "sender", "c")
    await consumer_register(c, "input:text", group="chat-ingestion")
    await leave(c, sender)
    start = sender.mark()
    await sender.send("input:text", {}, route={"delivery": {"required": True}})
    await expect_error(sender, NO_CONSUMER, start=start)


# -- what the consumer receives ----------------------------------------------------------------------
async def test_consumer_receives_the_senders_frame_verbatim(airi_hub, airi_connect):
    sender, c = await _peers(airi_connect, airi_hub, "sender", "c")
    await consumer_register(c, "input:text", group="chat-ingestion")
    ev = sender.event("input:text", {"text": "h\u00e9", "n": 1.0})
    ev["metadata"]["source"] = sender.identity
    plain = json.dumps(ev, indent=1)
    wrapped = json.dumps({"json": ev, "meta": {"v": 1}}, separators=(" ,", ": "))
    start = c.mark()
    await sender.send_raw(plain)
    await sender.send_raw(wrapped)
    await c.wait_for("input:text", lambda e: len([x for x in c.received[start:] if x["type"] == "input:text"]) == 2, start=start)
    assert c.raw[start:start + 2] == ['{"json":' + plain + "}", wrapped]


async def test_consumers_only_among_authenticated_peers(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"auth": {"token": "t"}})
    sender = await airi_connect(hub, "sender", token="t", announce=True)
    c = await airi_connect(hub, "c", token="t", announce=True)
    eve = await airi_connect(hub, "eve")
    await eve.send("module:consumer:register", {"event": "input:text", "group": "chat-ingestion", "priority": 999})
    await eve.wait_for("error")
    await consumer_register(c, "input:text", group="chat-ingestion")
    assert await probe_one(sender, [c], type="input:text") == {"c"}
    assert [e for e in eve.received if e["type"] == "input:text"] == []
