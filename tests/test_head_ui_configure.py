"""PROTOCOL-HEAD.md section 7 and decision 15: ``ui:configure`` lookup by family (extension
entries with an extension-module-shaped identity, legacy entries with moduleIndex, a unique name
of either family otherwise), the section 7 name checks, and authentication (PROTOCOL.md)."""

from __future__ import annotations

import pytest

from .head_helpers import (
    MODULE_NOT_FOUND,
    NOT_AUTHENTICATED,
    TOKEN,
    UI_INDEX_INVALID,
    UI_NAME_EMPTY,
    ext_module_announce,
    head_connect,
    mod_identity,
    settings,
)
from .protocol_helpers import event_id, expect_error, identity, nonce


@pytest.fixture
async def hub(airi_hub_factory):
    return await airi_hub_factory(settings())


async def configure(ui, data, *targets):
    """Send ui:configure; returns (event, {target name: module:configure received})."""
    starts = {t: t.mark() for t in targets}
    ev = await ui.send("ui:configure", data)
    await ui.fence()
    for t in targets:
        await t.fence()
    got = {t.name: t.of_type("module:configure", starts[t]) for t in targets}
    return ev, got


async def _population(hub, connect):
    ui = await connect(hub, "ui", announce=True)
    h = await head_connect(connect, hub, "h")
    await ext_module_announce(h, "voice", mod_identity("v-1", "ext-h"))
    await ext_module_announce(h, "shared", mod_identity("s-1", "ext-h"))
    await ext_module_announce(h, "m-id", mod_identity("m-id", "ext-h"))  # name equals id
    leg = await connect(hub, "shared", announce=True, index=0, identity=identity("shared", "legacy-shared"))
    solo = await connect(hub, "solo", announce=True, identity=identity("solo"))
    return ui, h, leg, solo


async def test_extension_module_found_by_identity(hub, airi_connect):
    ui, h, leg, solo = await _population(hub, airi_connect)
    config = {"k": [1, {"x": None}]}
    ev, got = await configure(ui, {"moduleName": "voice", "identity": mod_identity("v-1", "ext-h"), "config": config}, h, leg, solo)
    [cfg] = got["h"]
    assert cfg["data"] == {"config": config} and cfg["metadata"] == ev["metadata"]
    assert not got["shared"] and not got["solo"] and not ui.error_messages()


async def test_identity_without_module_name_finds_by_id(hub, airi_connect):
    ui, h, leg, solo = await _population(hub, airi_connect)
    _, got = await configure(ui, {"identity": mod_identity("v-1", "ext-h"), "config": {"a": 1}}, h, leg)
    assert [e["data"] for e in got["h"]] == [{"config": {"a": 1}}] and not got["shared"]
    _, got = await configure(ui, {"identity": mod_identity("m-id", "ext-h")}, h)
    assert [e["data"] for e in got["h"]] == [{"config": {}}]  # config defaults to {}


async def test_identity_only_looks_at_extension_entries(hub, airi_connect):
    ui, h, leg, solo = await _population(hub, airi_connect)
    # the legacy "shared" (index 0) is not an extension entry; the extension "shared" is s-1
    _, got = await configure(ui, {"moduleName": "shared", "identity": mod_identity("s-1", "ext-h"), "config": {}}, h, leg)
    assert len(got["h"]) == 1 and not got["shared"]
    start = ui.mark()
    await ui.send("ui:configure", {"moduleName": "solo", "identity": mod_identity("solo-instance", "solo"), "config": {}})
    await expect_error(ui, MODULE_NOT_FOUND, start=start)
    start = ui.mark()
    await ui.send("ui:configure", {"moduleName": "voice", "identity": mod_identity("nope", "ext-h"), "config": {}})
    await expect_error(ui, MODULE_NOT_FOUND, start=start)


async def test_module_index_only_looks_at_legacy_entries(hub, airi_connect):
    ui, h, leg, solo = await _population(hub, airi_connect)
    _, got = await configure(ui, {"moduleName": "shared", "moduleIndex": 0, "config": {"z": 1}}, h, leg)
    assert len(got["shared"]) == 1 and not got["h"]
    start = ui.mark()
    await ui.send("ui:configure", {"moduleName": "voice", "moduleIndex": 0, "config": {}})
    await expect_error(ui, MODULE_NOT_FOUND, start=start)


async def test_unique_name_of_either_family_and_shared_name_not_found(hub, airi_connect):
    ui, h, leg, solo = await _population(hub, airi_connect)
    _, got = await configure(ui, {"moduleName": "voice", "config": {}}, h, leg, solo)
    assert len(got["h"]) == 1 and not got["solo"]
    _, got = await configure(ui, {"moduleName": "solo", "config": {}}, h, leg, solo)
    assert len(got["solo"]) == 1 and not got["h"]
    start = ui.mark()
    _, got = await configure(ui, {"moduleName": "shared", "config": {}}, h, leg)
    assert not got["h"] and not got["shared"]
    assert ui.error_messages(start) == [MODULE_NOT_FOUND]


async def test_two_modules_of_one_name_on_one_connection_are_not_found(hub, airi_connect):
    ui = await airi_connect(hub, "ui", announce=True)
    h = await head_connect(airi_connect, hub, "h")
    await ext_module_announce(h, "twin", mod_identity("t-1", "ext-h"))
    await ext_module_announce(h, "twin", mod_identity("t-2", "ext-h"))
    start = ui.mark()
    await ui.send("ui:configure", {"moduleName": "twin", "config": {}})
    await expect_error(ui, MODULE_NOT_FOUND, start=start)
    _, got = await configure(ui, {"moduleName": "twin", "identity": mod_identity("t-2", "ext-h"), "config": {}}, h)
    assert len(got["h"]) == 1


async def test_latest_announcer_of_a_shared_module_is_configured(hub, airi_connect):
    ui = await airi_connect(hub, "ui", announce=True)
    first = await head_connect(airi_connect, hub, "first")
    second = await head_connect(airi_connect, hub, "second")
    ident = mod_identity("dup-1", "ext-d")
    await ext_module_announce(first, "dup", ident)
    await ext_module_announce(second, "dup", ident)
    _, got = await configure(ui, {"moduleName": "dup", "identity": ident, "config": {}}, first, second)
    assert len(got["second"]) == 1 and not got["first"]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"moduleName": "", "identity": mod_identity("v-1", "ext-h")}, UI_NAME_EMPTY),
        ({"config": {}}, UI_NAME_EMPTY),
        ({"identity": {"id": "v-1"}}, UI_NAME_EMPTY),  # not extension-module-shaped
        ({"moduleName": 5, "identity": mod_identity("v-1", "ext-h")}, MODULE_NOT_FOUND),
        ({"moduleName": "voice", "moduleIndex": -1}, UI_INDEX_INVALID),
        ({"moduleName": "voice", "moduleIndex": "0"}, UI_INDEX_INVALID),
    ],
)
async def test_section7_name_and_index_checks(hub, airi_connect, data, message):
    ui, h, leg, solo = await _population(hub, airi_connect)
    start, h_start = ui.mark(), h.mark()
    await ui.send("ui:configure", data)
    await expect_error(ui, message, start=start)
    await h.expect_silence("module:configure", after=[ui], start=h_start)


async def test_unauthenticated_sender_is_refused(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(settings(TOKEN))
    h = await head_connect(airi_connect, hub, "h", token=TOKEN)
    await ext_module_announce(h, "voice", mod_identity("v-1", "ext-h"))
    ui = await airi_connect(hub, "ui")
    start, h_start = ui.mark(), h.mark()
    ev = await ui.send("ui:configure", {"moduleName": "voice", "identity": mod_identity("v-1", "ext-h"), "config": {"n": nonce()}})
    await expect_error(ui, NOT_AUTHENTICATED, start=start, parent=event_id(ev))
    await h.expect_silence("module:configure", after=[ui], start=h_start)


async def test_latest_holder_closing_leaves_the_other_configurable(hub, airi_connect):
    """Decision 15: the latest announcer while two connections hold (name, id); once it is gone
    the one left holds it alone and is found (no stale index)."""
    ui = await airi_connect(hub, "ui", announce=True)
    first = await head_connect(airi_connect, hub, "first")
    second = await head_connect(airi_connect, hub, "second")
    ident = mod_identity("dup-1", "ext-d")
    await ext_module_announce(first, "dup", ident)
    await ext_module_announce(second, "dup", ident)
    start = ui.mark()
    await second.close()
    await ui.wait_for("extension:module:de-announced", start=start)
    _, got = await configure(ui, {"moduleName": "dup", "identity": ident, "config": {"after": 1}}, first)
    assert [e["data"] for e in got["first"]] == [{"config": {"after": 1}}], ui.error_messages(start)
    _, got = await configure(ui, {"moduleName": "dup", "config": {"by": "name"}}, first)
    assert [e["data"] for e in got["first"]] == [{"config": {"by": "name"}}], ui.error_messages(start)
