"""Unit and property tests of destination and label matching (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airi_core.server.peer import Peer
from airi_core.protocol.matching import compile_destinations, compile_expression, glob_matches, is_devtools


def peer(name: str = "stage", plugin: str = "proj-airi:stage-web", instance: str = "inst-1", labels: dict[str, Any] | None = None, plugin_labels: dict[str, Any] | None = None) -> Peer:
    p = Peer(None)
    identity: dict[str, Any] = {"id": instance, "kind": "plugin", "plugin": {"id": plugin}}
    if plugin_labels is not None:
        identity["plugin"]["labels"] = plugin_labels
    if labels is not None:
        identity["labels"] = labels
    p.name = name
    p.announced = True
    p.set_identity(identity, verified=True)
    return p


P = peer(labels={"env": "prod", "devtools": "false"}, plugin_labels={"env": "dev", "tier": "gold"})


@pytest.mark.parametrize(
    "dest,expected",
    [
        ("*", True),
        ("module:stage", True), ("module:other", False), ("source:stage", True),
        ("plugin:proj-airi:stage-web", True), ("plugin:proj-airi", False),
        ("instance:inst-1", True), ("instance:inst-2", False),
        ("label:env=prod", True), ("label:env=dev", False), ("label:tier", True), ("label:nope", False),
        ("label: env = prod ", True),
        ("stage", True), ("st*", True), ("proj-airi:*", True), ("inst-*", True), ("x*", False), ("st?ge", False),
        ({"type": "glob", "glob": "*stage*"}, True),
        ({"type": "plugin", "plugins": ["proj-airi:stage-web"]}, True),
        ({"type": "plugin", "plugins": ["proj-airi:stage-web"], "inverted": True}, False),
        ({"type": "instance", "instances": ["inst-1"]}, True),
        ({"type": "label", "selectors": ["env=prod", "tier=gold"]}, True),
        ({"type": "label", "selectors": ["env=prod", "tier=silver"]}, False),
        ({"type": "module", "modules": ["a", "stage"]}, True),
        ({"type": "source", "sources": ["a"]}, False),
        ({"type": "source", "sources": ["a"], "inverted": True}, True),
        ({"type": "and", "all": ["module:stage", {"type": "label", "selectors": ["env=prod"]}]}, True),
        ({"type": "and", "all": ["module:stage", "label:env=dev"]}, False),
        ({"type": "or", "any": ["module:x", "label:tier=gold"]}, True),
        ({"type": "or", "any": []}, False),
        ({"type": "ids", "ids": ["nope"]}, False),
        ({"type": "weird"}, False), ({"type": "and", "all": 3}, False), ({"type": "label", "selectors": "env"}, False),
        (42, False), (None, False),
    ],
)
def test_destination_forms(dest: Any, expected: bool) -> None:
    assert compile_destinations([dest])(P) is expected


def test_peer_id_destination_and_any_of_list() -> None:
    assert compile_destinations([f"peer:{P.id}"])(P)
    assert compile_destinations([{"type": "ids", "ids": [P.id]}])(P)
    assert compile_destinations(["module:x", "module:stage"])(P)
    assert not compile_destinations([])(P)


def test_unannounced_peer_never_matches_by_empty_name() -> None:
    p = Peer(None)
    assert not compile_destinations(["module:"])(p)
    assert not compile_destinations(["*stage*"])(p)


def test_labels_overlay_and_devtools() -> None:
    assert P.labels == {"env": "prod", "tier": "gold", "devtools": "false"}
    assert not is_devtools(P)
    assert is_devtools(peer(labels={"devtools": "1"}))
    assert is_devtools(peer(labels={"devtools": True}))
    assert is_devtools(peer(name="my-devtools-panel"))


def test_deep_nesting_matches_nobody_without_recursion_error() -> None:
    expr: Any = "module:stage"
    for _ in range(10_000):
        expr = {"type": "and", "all": [expr]}
    assert compile_expression(expr)(P) is False


def test_glob_is_literal_except_star() -> None:
    assert glob_matches("a.b*", "a.bc") and not glob_matches("a.b*", "axbc")
    assert glob_matches("(x)+", "(x)+")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["type", "all", "any", "glob", "ids", "plugins", "instances", "selectors", "modules", "sources", "inverted", "x"]), children, max_size=4),
    max_leaves=25,
)


@given(st.lists(json_values, max_size=5))
@settings(max_examples=400, deadline=None)
def test_matcher_total_over_arbitrary_json(dests: list[Any]) -> None:
    result = compile_destinations(dests)(P)
    assert isinstance(result, bool)


@pytest.mark.parametrize(
    "dests,hint",
    [
        (["module:a"], {"a"}),
        (["module:a", "source:b"], {"a", "b"}),
        (["module:a", "*"], None),
        ([{"type": "and", "all": [{"type": "label", "selectors": ["x"]}, "module:a"]}], {"a"}),
        ([{"type": "or", "any": ["module:a", {"type": "module", "modules": ["b", "c"]}]}], {"a", "b", "c"}),
        ([{"type": "or", "any": ["module:a", "label:x"]}], None),
        ([{"type": "module", "modules": ["a"], "inverted": True}], None),
        (["plugin:a"], None),
        (["module:"], set()),  # an empty name matches nobody
    ],
)
def test_destinations_hint(dests: list[Any], hint: set[str] | None) -> None:
    from airi_core.protocol.matching import destinations_hint

    got = destinations_hint(dests)
    assert (set(got) if got is not None else None) == hint


@given(st.lists(json_values, max_size=4))
@settings(max_examples=300, deadline=None)
def test_hint_never_excludes_a_match(dests: list[Any]) -> None:
    """Whenever a hint exists, every peer that matches the destinations has a hinted name."""
    from airi_core.protocol.matching import destinations_hint

    hint = destinations_hint(dests)
    if hint is None:
        return
    for p in (P, peer(name="other"), peer(name="a"), peer(name="")):
        if compile_destinations(dests)(p):
            assert p.name in hint


# -- the glob dialect: no backtracking, bounded cache ---------------------------------------------
def _regex_oracle(glob: str, value: str) -> bool:
    import re

    return re.fullmatch("".join(".*" if c == "*" else re.escape(c) for c in glob), value, re.S) is not None


@given(st.text(alphabet="ab*", max_size=12), st.text(alphabet="ab", max_size=12))
@settings(max_examples=1500, deadline=None)
def test_glob_agrees_with_the_regex_definition(glob: str, value: str) -> None:
    from airi_core.protocol.glob import compile_glob

    assert compile_glob(glob)(value) is _regex_oracle(glob, value)


def test_hostile_globs_cost_one_find_per_piece() -> None:
    """``********Z`` is one piece after the stars; ``*a*a*...`` calls find once per piece: no
    choice is ever revisited (the regex form of these took seconds to years)."""
    from airi_core.protocol.glob import compile_glob, glob_pieces

    assert glob_pieces("********Z") == ("", "Z")
    assert glob_pieces("a**b***c") == ("a", "b", "c")
    value = "a" * 5000
    for glob in ("*" * 200 + "Z", "*a" * 128 + "Z", "*" + "a*" * 100 + "b", ("*" + "a" * 50) * 4 + "*b"):
        assert compile_glob(glob)(value) is False
        assert compile_glob(glob)(value[:-1] + "Z") is glob.endswith("Z")


def test_long_globs_are_not_cached() -> None:
    from airi_core.protocol import glob as g

    before = g._compile_cached.cache_info().currsize
    long_glob = "x" * g.MAX_CACHED_GLOB + "*"
    assert g.compile_glob(long_glob)("x" * (g.MAX_CACHED_GLOB + 3))
    assert g._compile_cached.cache_info().currsize == before
    short = "y" * (g.MAX_CACHED_GLOB - 1) + "*"
    g.compile_glob(short)
    assert g.compile_glob(short) is g.compile_glob(short)


# -- work bounds -------------------------------------------------------------------------------------
def test_measure_counts_terms_and_costs() -> None:
    from airi_core.protocol.matching import Limits, measure

    lim = Limits()
    assert measure(["module:a"], lim) == measure(["module:a"], lim).__class__(1, 2, None)
    m = measure(["*", "*a*b*", {"type": "or", "any": ["label:x", {"type": "ids", "ids": ["p1", "p2"]}]}], lim)
    # "*" 1; "*a*b*" 1 + 4 values x 4 pieces; or 1 + label 2 + ids leaf 2 (one set lookup);
    # the bare glob also tests every extension module's name and id: 4 per value
    assert (m.terms, m.cost, m.error, m.key_cost) == (7, 1 + 17 + 5, None, 4)
    assert measure(["*"] * 64, lim).error is None
    assert measure(["*"] * 65, lim).error == "too many destinations: at most 64"
    assert measure([{"type": "ids", "ids": ["x"] * 255}], lim).error is None
    assert measure([{"type": "ids", "ids": ["x"] * 256}], lim).error == "destinations too complex: at most 256 terms"
    assert measure(["a" * 256], lim).error is None
    assert measure(["a" * 257], lim).error == "destination too long: at most 256 characters per string"
    assert measure([{"type": "label", "selectors": ["k=" + "v" * 255]}], lim).error == "destination too long: at most 256 characters per string"
    # what compile ignores is not counted (it matches nobody either way)
    assert measure([{"type": "glob", "glob": 42, "junk": ["x"] * 10_000}], lim).error is None


def test_measure_stops_at_the_first_limit() -> None:
    from airi_core.protocol.matching import Limits, measure

    class Counting(list):  # type: ignore[type-arg]
        seen = 0

        def __iter__(self):  # type: ignore[no-untyped-def]
            for item in super().__iter__():
                Counting.seen += 1
                yield item

    huge = Counting(["plugin:x"] * 100_000)
    assert measure([{"type": "plugin", "plugins": huge}], Limits()).error == "destinations too complex: at most 256 terms"
    assert Counting.seen <= 256


@given(st.lists(json_values, max_size=5))
@settings(max_examples=300, deadline=None)
def test_measure_is_total_and_bounded(dests: list[Any]) -> None:
    from airi_core.protocol.matching import Limits, measure

    m = measure(dests, Limits(max_destinations=4, max_terms=10, max_string_length=5))
    assert m.error is not None or (m.terms <= 10 and m.cost >= len(dests))
