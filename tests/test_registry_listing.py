"""The registry listing encoded once (``PeerRegistry.listing()``) and ``protocol.events.Encoded``:
what a sync carries is always exactly ``modules()`` encoded, whatever changed before (unit)."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from airi_core.protocol import events
from airi_core.protocol.events import Encoded, dumps, dumps_bytes
from airi_core.server.peer import Peer
from airi_core.server.registry import PeerRegistry


def _identity(rnd: random.Random, i: int) -> dict[str, Any]:
    ident: dict[str, Any] = {"id": f"i{rnd.randrange(5)}", "kind": "plugin", "plugin": {"id": f"p{i}"}}
    if rnd.random() < 0.3:
        ident["plugin"]["labels"] = {"role": rnd.choice(["a", "b"]), "note": None}
    return ident


def _check(reg: PeerRegistry) -> None:
    assert json.loads(reg.listing().text) == reg.modules()
    assert reg.listing() is reg.listing()  # kept until the modules change


@pytest.mark.parametrize("seed", range(20))
def test_listing_is_modules_encoded_after_any_sequence_of_changes(seed: int) -> None:
    rnd = random.Random(seed)
    reg = PeerRegistry()
    peers: list[Peer] = []
    for step in range(200):
        op = rnd.random()
        if op < 0.15 or not peers:
            p = Peer()
            if rnd.random() < 0.2:
                p.origin = "other-instance"  # a mirror: its entries say where it lives
            reg.add(p)
            reg.mark_authenticated(p)
            peers.append(p)
        elif op < 0.40:
            p = rnd.choice(peers)
            reg.register_module(p, f"m{rnd.randrange(4)}", rnd.choice([None, 0, 1]), _identity(rnd, step))
        elif op < 0.50:
            reg.unregister_module(rnd.choice(peers))
        elif op < 0.70:
            p = rnd.choice(peers)
            reg.register_extension_module(p, f"x{rnd.randrange(4)}", {"id": f"e{rnd.randrange(3)}", "extension": {"id": "ext"}})
        elif op < 0.80:
            p = rnd.choice(peers)
            reg.adopt(p, _identity(rnd, step), verified=True)
        elif op < 0.90:
            p = peers.pop(rnd.randrange(len(peers)))
            reg.remove(p)
        _check(reg)


def test_an_unchanged_registry_hands_out_the_same_listing_and_a_change_a_new_one() -> None:
    reg = PeerRegistry()
    a = Peer()
    reg.add(a)
    empty = reg.listing()
    assert empty.text == b"[]"
    reg.register_module(a, "stage", None, {"id": "s", "kind": "plugin", "plugin": {"id": "stage"}})
    first = reg.listing()
    assert first is not empty and json.loads(first.text) == [{"name": "stage", "identity": {"id": "s", "kind": "plugin", "plugin": {"id": "stage"}}}]
    b = Peer()
    reg.add(b)  # a connection without a module changes nothing listed
    assert reg.listing() is first
    reg.register_module(a, "stage", None, {"id": "s2", "kind": "plugin", "plugin": {"id": "stage"}})
    assert json.loads(reg.listing().text)[0]["identity"]["id"] == "s2"


def test_encoded_parts_are_embedded_verbatim() -> None:
    part = Encoded([{"a": None, "b": "null", "c": "ü"}])
    assert part.text == b'[{"a":null,"b":"null","c":"\xc3\xbc"}]'
    assert dumps_bytes({"modules": part, "n": 1}) == b'{"modules":' + part.text + b',"n":1}'
    assert dumps_bytes({"modules": part, "x": None}).endswith(b',"x":null}')
    assert json.loads(dumps({"modules": part})) == {"modules": part.value()}
    assert Encoded(text=b"[1,2]").value() == [1, 2] and len(Encoded(text=b"[1,2]")) == 5


def test_what_is_not_embedded_is_still_checked() -> None:
    part = Encoded([None])
    with pytest.raises(ValueError):
        dumps_bytes({"modules": part, "bad": math.nan})
    with pytest.raises(ValueError):
        Encoded([math.inf])
    big = 2**70  # beyond orjson: the stdlib writes it, the embedded part decoded back
    assert json.loads(dumps_bytes({"modules": part, "big": big})) == {"modules": [None], "big": big}


def test_without_orjson_the_stdlib_writes_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    part = Encoded([{"name": "m", "identity": {"id": "i"}}, None])
    fast = dumps_bytes({"modules": part})
    monkeypatch.setattr(events, "_fast_dumps", None)
    assert dumps_bytes({"modules": part}) == fast
