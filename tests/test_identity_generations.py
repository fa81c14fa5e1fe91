"""Pure identity logic of the two protocol generations (airi_core.protocol.identity)."""

from __future__ import annotations

from typing import Any

import pytest

from airi_core.protocol import errors
from airi_core.protocol.identity import (
    extension_labels_view,
    extension_module_announce_error,
    extension_source,
    is_extension_identity,
    is_extension_module_identity,
    label_count,
    normalize_identity,
    source_consistent,
    sync_identity,
)
from airi_core.protocol.matching import compile_destinations
from airi_core.server.peer import Peer
from airi_core.server.registry import PeerRegistry

MOD = {"id": "m1", "extension": {"id": "ext", "labels": {"a": "1"}}, "labels": {"b": "2"}}


@pytest.mark.parametrize(
    "value,ext,mod",
    [
        ({"id": "x"}, True, False),
        ({"id": 5}, False, False),
        ({"id": "x", "extension": {"id": "e"}}, True, True),
        ({"id": "x", "extension": {"id": 1}}, True, False),
        ({"kind": "plugin", "id": "x", "extension": {"id": "e"}, "plugin": {"id": "e"}}, True, True),
        ("x", False, False),
        (None, False, False),
    ],
)
def test_shape_tests(value: Any, ext: bool, mod: bool) -> None:
    assert is_extension_identity(value) is ext
    assert is_extension_module_identity(value) is mod


def test_the_published_sdk_default_identity_is_normalised_and_nothing_else() -> None:
    assert normalize_identity({"plugin": "bot", "instanceId": "i-1"}) == {"id": "i-1", "kind": "plugin", "plugin": {"id": "bot"}}
    explicit = {"id": "i", "kind": "plugin", "plugin": {"id": "bot"}}
    assert normalize_identity(explicit) is explicit
    assert normalize_identity({"plugin": "bot"}) == {"kind": "plugin", "plugin": {"id": "bot"}}
    assert normalize_identity(7) == 7


def test_extension_module_announce_checks_in_order() -> None:
    ok = {"name": "n", "identity": {"id": "m", "extension": {"id": "e"}}}
    assert extension_module_announce_error(ok, None) is None
    assert extension_module_announce_error({**ok, "name": ""}, None) == errors.EXTENSION_MODULE_ANNOUNCE_NAME_INVALID
    assert extension_module_announce_error({"name": 3, "identity": 1}, None) == errors.EXTENSION_MODULE_ANNOUNCE_NAME_INVALID
    assert extension_module_announce_error({**ok, "identity": {"id": "m"}}, None) == errors.EXTENSION_MODULE_ANNOUNCE_IDENTITY_INVALID
    assert extension_module_announce_error(ok, {"id": "e"}) is None
    assert extension_module_announce_error(ok, {"id": "other"}) == errors.EXTENSION_MODULE_ANNOUNCE_IDENTITY_INVALID
    assert extension_module_announce_error(ok, {"no": "id"}) is None  # not an extension identity: nothing to hold to


def test_labels_overlay_in_the_decided_order() -> None:
    conn = {"id": "ext", "labels": {"a": "conn", "c": "conn"}}
    ident = {"id": "m", "extension": {"id": "ext", "labels": {"a": "ext", "d": "ext"}}, "plugin": {"id": "p", "labels": {"d": "plugin"}}, "labels": {"e": "own"}}
    assert extension_labels_view(conn, ident) == {"a": "ext", "c": "conn", "d": "plugin", "e": "own"}
    assert label_count(ident) == 4


def test_sync_identity_adds_kind_and_plugin_only_where_absent() -> None:
    assert sync_identity(MOD) == {**MOD, "kind": "plugin", "plugin": {"id": "ext"}}
    assert "kind" not in MOD  # the stored identity stays verbatim
    full = {"id": "m", "extension": {"id": "e"}, "kind": "plugin", "plugin": {"id": "p"}}
    assert sync_identity(full) is full


def test_the_sdk_hybrid_source_is_consistent_and_a_claim_beyond_it_is_not() -> None:
    hybrid = extension_source(MOD)
    assert hybrid == {"kind": "plugin", "id": "m1", "extension": MOD["extension"], "labels": {"b": "2"}, "plugin": {"id": "ext"}}
    assert source_consistent(hybrid, MOD)
    assert source_consistent(dict(reversed(list(hybrid.items()))), MOD)
    assert source_consistent(MOD, MOD)
    assert not source_consistent({**hybrid, "labels": {"b": "2", "devtools": "true"}}, MOD)
    assert not source_consistent({**hybrid, "id": "m2"}, MOD)


def test_registry_keys_modules_per_connection_and_routes_module_names_and_ids() -> None:
    reg = PeerRegistry()
    a, b = Peer(), Peer()
    for p in (a, b):
        reg.add(p)
        reg.mark_authenticated(p)
    assert reg.register_module(a, "legacy", None, {"id": "i", "kind": "plugin", "plugin": {"id": "p"}})
    first = reg.register_extension_module(b, "voice", {"id": "v1", "extension": {"id": "e"}})
    second = reg.register_extension_module(b, "ears", {"id": "v2", "extension": {"id": "e"}})
    assert first is not None and second is not None and first[1] is None
    assert [m["name"] for m in reg.modules()] == ["legacy", "voice", "ears"]
    assert "index" not in reg.modules()[1]
    assert reg.peers_named("voice") == [b] and reg.peers_named("v2") == [b] and reg.peers_named("legacy") == [a]
    assert compile_destinations(["module:v1"])(b) and not compile_destinations(["module:v1"])(a)
    assert compile_destinations(["plugin:p"])(a) and not compile_destinations(["source:voice"])(b)
    # same id again with a new name: replaced in place, the old one returned
    again = reg.register_extension_module(b, "speech", {"id": "v1", "extension": {"id": "e"}})
    assert again is not None and again[1] is not None and again[1].name == "voice"
    assert [m["name"] for m in reg.modules()] == ["legacy", "speech", "ears"]
    assert reg.peers_named("voice") == [] and reg.extension_module_count() == 2
    assert reg.find_named("speech") is b and reg.find_named("legacy") is a
    reg.remove(b)
    assert reg.peers_named("v1") == [] and reg.extension_module_count() == 0
    assert [m["name"] for m in reg.modules()] == ["legacy"]
    assert [m.name for m in b.modules.values()] == ["speech", "ears"]  # kept for the de-announces


def test_the_latest_announcer_of_an_extension_module_is_found_and_the_other_remains() -> None:
    reg = PeerRegistry()
    old, new = Peer(), Peer()
    for p in (old, new):
        reg.add(p)
    ident = {"id": "same", "extension": {"id": "stage"}}
    reg.register_extension_module(old, "stage", ident)
    reg.register_extension_module(new, "stage", ident)
    found = reg.find_extension_module("same")
    assert found is not None and found.peer is new
    assert reg.find_named("stage") is None  # two modules share the name
    reg.remove(new)
    found = reg.find_extension_module("same", "stage")
    assert found is not None and found.peer is old
