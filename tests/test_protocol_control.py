"""PROTOCOL.md "Built-in control events": ui:configure (incl. the improvements: sender must be
authenticated, a single module is found without an index) and consumer (un)registration."""

from __future__ import annotations

import pytest

from airi_core import errors

from .protocol_helpers import (
    assert_alive,
    assert_server_event,
    consumer_register,
    consumer_unregister,
    event_id,
    expect_error,
    identity,
)

MODULE_NOT_FOUND = "module not found, it hasn't announced itself or the name is incorrect"
NAME_EMPTY = "the field 'moduleName' can't be empty for event 'ui:configure'"
INDEX_INVALID = "the field 'moduleIndex' must be a non-negative integer for event 'ui:configure'"
CONSUMER_EVENT_INVALID = "the field 'event' must be a non-empty string for event consumer registration"


# -- ui:configure ------------------------------------------------------------------------------------
async def test_ui_configure_delivers_module_configure_with_original_metadata(airi_hub, airi_connect):
    ui = await airi_connect(airi_hub, "ui", announce=True)
    target = await airi_connect(airi_hub, "discord", announce=True, index=1)
    other = await airi_connect(airi_hub, "discord", announce=True, index=2)
    bystander = await airi_connect(airi_hub, "bystander", announce=True)
    starts = {c: c.mark() for c in (ui, target, other, bystander)}
    config = {"token": "abc", "nested": {"list": [1, 2, {"x": None}]}}
    ev = await ui.send("ui:configure", {"moduleName": "discord", "moduleIndex": 1, "config": config})
    got = await target.wait_for("module:configure", start=starts[target])
    assert got["data"] == {"config": config}
    assert got["metadata"] == ev["metadata"]  # the sender's metadata, untouched
    assert got["metadata"]["source"] == ui.identity
    await ui.expect_silence(start=starts[ui])
    for c in (other, bystander):
        await c.expect_silence(after=[ui], start=starts[c])


async def test_ui_configure_finds_the_only_module_of_that_name_without_index(airi_hub, airi_connect):
    """improvement: with no moduleIndex, a name announced by exactly one peer is found whatever its index."""
    ui = await airi_connect(airi_hub, "ui", announce=True)
    target = await airi_connect(airi_hub, "tts", announce=True, index=7)
    start = target.mark()
    await ui.send("ui:configure", {"moduleName": "tts", "config": {"voice": "a"}})
    got = await target.wait_for("module:configure", start=start)
    assert got["data"] == {"config": {"voice": "a"}}
    assert ui.error_messages() == []


async def test_ui_configure_without_index_finds_module_announced_without_index(airi_hub, airi_connect):
    ui = await airi_connect(airi_hub, "ui", announce=True)
    target = await airi_connect(airi_hub, "tts", announce=True)
    start = target.mark()
    await ui.send("ui:configure", {"moduleName": "tts", "config": {"k": 1}})
    assert (await target.wait_for("module:configure", start=start))["data"] == {"config": {"k": 1}}


async def test_ui_configure_with_index_zero(airi_hub, airi_connect):
    ui = await airi_connect(airi_hub, "ui", announce=True)
    t0 = await airi_connect(airi_hub, "w", announce=True, index=0)
    t1 = await airi_connect(airi_hub, "w", announce=True, index=1)
    s0, s1 = t0.mark(), t1.mark()
    await ui.send("ui:configure", {"moduleName": "w", "moduleIndex": 0, "config": {"n": 0}})
    await t0.wait_for("module:configure", start=s0)
    await t1.expect_silence(after=[ui], start=s1)


async def test_ui_configure_ambiguous_name_without_index_is_not_found(airi_hub, airi_connect):
    """Assumption: two peers announced under one name and no moduleIndex -> not found (as the
    reference, which looks up (name, undefined))."""
    ui = await airi_connect(airi_hub, "ui", announce=True)
    t0 = await airi_connect(airi_hub, "w", announce=True, index=0)
    t1 = await airi_connect(airi_hub, "w", announce=True, index=1)
    start = ui.mark()
    ev = await ui.send("ui:configure", {"moduleName": "w", "config": {}})
    await expect_error(ui, MODULE_NOT_FOUND, start=start, parent=event_id(ev))
    assert [e for e in t0.received + t1.received if e["type"] == "module:configure"] == []


@pytest.mark.parametrize(
    "data",
    [
        {"moduleName": "nobody", "config": {}},
        {"moduleName": "tts", "moduleIndex": 3, "config": {}},
        {"moduleName": "TTS", "config": {}},
        {"moduleName": "ui", "moduleIndex": 0, "config": {}},
    ],
)
async def test_ui_configure_unknown_module(airi_hub, airi_connect, data):
    ui = await airi_connect(airi_hub, "ui", announce=True)
    await airi_connect(airi_hub, "tts", announce=True, index=1)
    start = ui.mark()
    ev = await ui.send("ui:configure", data)
    err = await expect_error(ui, MODULE_NOT_FOUND, start=start, parent=event_id(ev))
    assert err["data"]["message"] == errors.MODULE_NOT_FOUND
    assert_server_event(err, airi_hub, parent=event_id(ev))


@pytest.mark.parametrize("name", ["<missing>", "", None, 3, [], {}])
async def test_ui_configure_module_name_invalid(airi_hub, airi_connect, name):
    ui = await airi_connect(airi_hub, "ui", announce=True)
    data = {"config": {}}
    if name != "<missing>":
        data["moduleName"] = name
    start = ui.mark()
    ev = await ui.send("ui:configure", data)
    err = await expect_error(ui, NAME_EMPTY, start=start, parent=event_id(ev))
    assert err["data"]["message"] == errors.UI_CONFIGURE_MODULE_NAME_INVALID


@pytest.mark.parametrize("index", [-1, 1.5, "0", True, None, [1]])
async def test_ui_configure_module_index_invalid(airi_hub, airi_connect, index):
    ui = await airi_connect(airi_hub, "ui", announce=True)
    await airi_connect(airi_hub, "tts", announce=True, index=1)
    start = ui.mark()
    ev = await ui.send("ui:configure", {"moduleName": "tts", "moduleIndex": index, "config": {}})
    err = await expect_error(ui, INDEX_INVALID, start=start, parent=event_id(ev))
    assert err["data"]["message"] == errors.UI_CONFIGURE_MODULE_INDEX_INVALID


async def test_ui_configure_requires_authentication(airi_hub_factory, airi_connect):
    """improvement: the reference lets an unauthenticated peer configure modules."""
    hub = await airi_hub_factory({"auth": {"token": "t"}})
    target = await airi_connect(hub, "discord", token="t", announce=True)
    eve = await airi_connect(hub, "eve")
    t_start = target.mark()
    start = eve.mark()
    ev = await eve.send("ui:configure", {"moduleName": "discord", "config": {"token": "stolen"}})
    err = await expect_error(eve, "not authenticated", start=start, parent=event_id(ev))
    assert_server_event(err, hub, parent=event_id(ev))
    await target.expect_silence(after=[eve], start=t_start)
    # once authenticated it works
    await eve.authenticate("t")
    await eve.send("ui:configure", {"moduleName": "discord", "config": {"ok": True}})
    got = await target.wait_for("module:configure", start=t_start)
    assert got["data"] == {"config": {"ok": True}}


async def test_ui_configure_is_not_routed_to_anyone_else(airi_hub, airi_connect):
    ui = await airi_connect(airi_hub, "ui", announce=True)
    target = await airi_connect(airi_hub, "tts", announce=True)
    other = await airi_connect(airi_hub, "other", announce=True)
    o_start = other.mark()
    await ui.send("ui:configure", {"moduleName": "tts", "config": {}}, route={"destinations": ["*"]})
    await target.wait_for("module:configure")
    await ui.send("ui:configure", {"moduleName": "nobody", "config": {}})
    await ui.wait_for("error")
    await other.expect_silence(after=[ui], start=o_start)


# -- consumer registration ---------------------------------------------------------------------------
@pytest.mark.parametrize("event", ["<missing>", "", None, 3, ["input:text"]])
@pytest.mark.parametrize("etype", ["module:consumer:register", "module:consumer:unregister"])
async def test_consumer_event_field_invalid(airi_hub, airi_connect, event, etype):
    a = await airi_connect(airi_hub, "a", announce=True)
    data = {"group": "g"}
    if event != "<missing>":
        data["event"] = event
    start = a.mark()
    ev = await a.send(etype, data)
    err = await expect_error(a, CONSUMER_EVENT_INVALID, start=start, parent=event_id(ev))
    assert err["data"]["message"] == errors.MODULE_CONSUMER_EVENT_INVALID
    assert_server_event(err, airi_hub, parent=event_id(ev))


async def test_consumer_registration_is_silent_and_not_routed(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    b_start = b.mark()
    await consumer_register(a, "input:text", group="chat-ingestion", priority=3)
    await consumer_register(a, "custom:event")
    await consumer_unregister(a, "custom:event")
    await consumer_unregister(a, "never:registered", group="x")
    await b.expect_silence(after=[a], start=b_start)


@pytest.mark.parametrize("etype", ["module:consumer:register", "module:consumer:unregister"])
async def test_consumer_registration_requires_authentication(airi_hub_factory, airi_connect, etype):
    hub = await airi_hub_factory({"auth": {"token": "t"}})
    a = await airi_connect(hub, "a")
    start = a.mark()
    ev = await a.send(etype, {"event": "input:text"})
    await expect_error(a, errors.NOT_AUTHENTICATED, start=start, parent=event_id(ev))
    await assert_alive(a)


async def test_consumer_mode_defaults_to_group_when_a_group_is_given(airi_hub, airi_connect):
    sender = await airi_connect(airi_hub, "sender", announce=True)
    c = await airi_connect(airi_hub, "c", announce=True)
    await consumer_register(c, "job:run", group="workers")  # mode defaults to consumer-group
    start = c.mark()
    await sender.send("job:run", {"n": 1}, route={"delivery": {"mode": "consumer-group", "group": "workers", "required": True}})
    await c.wait_for("job:run", start=start)
    assert sender.error_messages() == []


async def test_consumer_group_defaults_to_default(airi_hub, airi_connect):
    sender = await airi_connect(airi_hub, "sender", announce=True)
    c = await airi_connect(airi_hub, "c", announce=True)
    await consumer_register(c, "job:run", mode="consumer-group")  # no group -> "default"
    start = c.mark()
    await sender.send("job:run", {"n": 1}, route={"delivery": {"mode": "consumer-group", "group": "default", "required": True}})
    await c.wait_for("job:run", start=start)
    await sender.send("job:run", {"n": 2}, route={"delivery": {"mode": "consumer", "required": True}})
    await c.wait_for("job:run", lambda e: e["data"]["n"] == 2, start=start)
    assert sender.error_messages() == []


async def test_consumer_unregister_with_group(airi_hub, airi_connect):
    sender = await airi_connect(airi_hub, "sender", announce=True)
    c = await airi_connect(airi_hub, "c", announce=True, identity=identity("c"))
    await consumer_register(c, "job:run", group="workers")
    await consumer_unregister(c, "job:run", group="workers")
    start = sender.mark()
    ev = await sender.send("job:run", {}, route={"delivery": {"mode": "consumer-group", "group": "workers", "required": True}})
    await expect_error(sender, errors.NO_CONSUMER_REGISTERED, start=start, parent=event_id(ev))
