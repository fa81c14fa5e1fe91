"""A deterministic generator of malformed AIRI frames, each with the reply the hub owes it.

``generate(rng, n, authenticated)`` returns ``n`` ``(frame, expect)`` pairs. ``frame`` is a ``str``
(text frame) or ``bytes`` (binary frame); ``expect`` is:

* ``None``: no reply at all (raw ``ping``/``pong`` transport heartbeats);
* ``JSON``: one ``error`` whose message starts with ``invalid JSON, error: ``;
* ``DECODE``: one ``error`` that is either ``invalid JSON, error: ...`` or ``invalid event format``
  (random text that may or may not parse);
* any other string: one ``error`` with exactly that message.

With ``authenticated=False`` the sender is a connected, unauthenticated peer of a hub that has a
token; with ``authenticated=True`` it is authenticated but never announces. The generator only
produces frames that must be answered by exactly one error for that sender (an authenticated
peer's well-formed event would be routed, so those are never generated for it).
"""

from __future__ import annotations

import json
import random
from typing import Any

from airi_core import errors

JSON = "<invalid JSON>"
DECODE = "<invalid JSON or invalid event format>"
JSON_PREFIX = "invalid JSON, error: "

#: Module names no good peer uses: ui:configure of these must answer "module not found".
UNKNOWN_MODULE_PREFIX = "nope-"

_TEXT_ALPHABET = "abcxyz019{}[],:.-+ \t\n\\/éß漢💛\u0000\u2028"
_SPECIAL_TYPES = (
    "module:authenticate",
    "module:announce",
    "ui:configure",
    "module:consumer:register",
    "module:consumer:unregister",
    "transport:connection:heartbeat",
    "input:text",
    "registry:modules:sync",
)
# JSON values of the wrong type for an object field / a string field / a list field
_NOT_OBJECTS: tuple[Any, ...] = (None, [], [1, 2], "x", "", 0, 42, -1.5, True, False)
_NOT_OBJECTS_NULL_OK: tuple[Any, ...] = tuple(v for v in _NOT_OBJECTS if v is not None)
_NOT_STRINGS: tuple[Any, ...] = (None, 0, 7, -3.25, True, [], ["a"], {}, {"a": 1})
_NOT_LISTS: tuple[Any, ...] = (None, 0, 42, "x", "*", "", True, {}, {"type": "glob", "glob": "*"})
_BAD_INDEXES: tuple[Any, ...] = (-1, -7, 1.5, "0", "1", True, False, None, [], {}, [0])


class Generator:
    def __init__(self, rng: random.Random, authenticated: bool) -> None:
        self.rng = rng
        self.auth = authenticated
        self.n = 0

    # -- small pieces --------------------------------------------------------------------------
    def word(self, lo: int = 1, hi: int = 12) -> str:
        return "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_:") for _ in range(self.rng.randint(lo, hi)))

    def text(self, lo: int, hi: int) -> str:
        return "".join(self.rng.choice(_TEXT_ALPHABET) for _ in range(self.rng.randint(lo, hi)))

    def junk(self, depth: int = 0) -> Any:
        """A random JSON value (small)."""
        r = self.rng.random()
        if depth > 3 or r < 0.5:
            return self.rng.choice([None, True, False, 0, -1, 3.5, 10**30, "", self.word(), "💛" * 3])
        if r < 0.75:
            return [self.junk(depth + 1) for _ in range(self.rng.randint(0, 4))]
        return {self.word(): self.junk(depth + 1) for _ in range(self.rng.randint(0, 4))}

    def event_id(self) -> str:
        self.n += 1
        return f"bad-{self.n}-{self.word(4, 8)}"

    def envelope(self, type: str, data: Any) -> dict[str, Any]:
        ev: dict[str, Any] = {"type": type, "data": data, "metadata": {"event": {"id": self.event_id()}}}
        if self.rng.random() < 0.3:
            ev["metadata"]["source"] = {"id": self.word(), "kind": "plugin", "plugin": {"id": self.word()}}
        return ev

    def dump(self, ev: Any, *, allow_wrap: bool = True) -> str | bytes:
        """Serialize: plain or superjson-wrapped, text or (valid UTF-8) binary frame."""
        if allow_wrap and isinstance(ev, dict) and "type" in ev and self.rng.random() < 0.3:
            ev = {"json": ev, "meta": {"values": {}}} if self.rng.random() < 0.5 else {"json": ev}
        text = json.dumps(ev, ensure_ascii=self.rng.random() < 0.5)
        return text.encode("utf-8") if self.rng.random() < 0.15 else text

    def huge_labels(self) -> dict[str, str]:
        return {f"k{i}-{self.word(2, 6)}": self.word(0, 10) for i in range(self.rng.randint(2000, 6000))}

    def deep_destinations(self, depth: int) -> list[Any]:
        """``depth`` nested and/or expressions around a ``*`` leaf, built as text (no recursion)."""
        opens = []
        for i in range(depth):
            opens.append('{"type":"and","all":[' if i % 2 else '{"type":"or","any":[')
        closes = "]}" * depth
        return ["".join(opens) + '"*"' + closes]  # a one-element list holding raw JSON text

    # -- categories -------------------------------------------------------------------------------
    def raw_bytes(self) -> tuple[bytes, str]:
        # not valid UTF-8 by construction: starts with a continuation byte / an invalid lead byte
        lead = self.rng.choice([b"\xff", b"\xfe", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80"])
        body = bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(0, 300)))
        return lead + body, JSON

    def random_text(self) -> tuple[str | bytes, str | None]:
        text = self.text(1, 200)
        if text in ("ping", "pong"):
            return text, None
        return (text.encode() if self.rng.random() < 0.3 else text), DECODE

    def truncated(self) -> tuple[str, str]:
        ev = self.envelope(self.rng.choice(("bad:x", *_SPECIAL_TYPES)), {"k": self.junk()})
        text = json.dumps(ev)
        return text[: self.rng.randint(0, len(text) - 1)], JSON

    def bad_envelope(self) -> tuple[str | bytes, str]:
        """Valid JSON, invalid envelope: one to three fields of the wrong type."""
        rng = self.rng
        ev: Any = self.envelope(rng.choice(("bad:" + self.word(), *_SPECIAL_TYPES)), {"k": self.junk()})
        if rng.random() < 0.3:
            ev["route"] = {"destinations": ["*"]}
        mutations = rng.sample(range(9), rng.randint(1, 3))
        for m in mutations:
            if m == 0:
                ev = rng.choice([[ev], 1, "str", None, True, [], 3.25])
                break  # not an object at all
            if m == 8:
                # wrapped and broken: {"json": <not an event object>}
                ev = {"json": rng.choice([None, 1, "x", [], [ev], True])}
                break
            if m == 1:
                if rng.random() < 0.3:
                    del ev["type"]
                else:
                    ev["type"] = rng.choice(("", 0, 5, None, [], ["a"], {}, True, 1.5))
            elif m == 2:
                ev["data"] = rng.choice((None, [], [1], "x", "", 0, 3, True, False))
            elif m == 3:
                ev["metadata"] = rng.choice(_NOT_OBJECTS_NULL_OK)
            elif m in (4, 5):
                if not isinstance(ev.get("metadata"), dict):
                    ev["metadata"] = {}
                ev["metadata"]["event" if m == 4 else "source"] = rng.choice(_NOT_OBJECTS_NULL_OK)
            elif m == 6:
                ev["route"] = rng.choice(_NOT_OBJECTS_NULL_OK)
            elif m == 7:
                ev["route"] = {"destinations": rng.choice(_NOT_LISTS), "bypass": True}
        # a wrapped envelope must still be rejected: never wrap a top-level non-object
        return self.dump(ev, allow_wrap=isinstance(ev, dict) and "type" in ev), errors.INVALID_EVENT_FORMAT

    def too_deep(self) -> tuple[str, str]:
        """A 10,000-deep destination expression (or data array): too deep to parse at all."""
        depth = 10_000
        if self.rng.random() < 0.5:
            dests = self.deep_destinations(depth)[0]
            text = '{"type":"bad:deep","data":{},"route":{"destinations":[' + dests + "]}}"
        else:
            text = '{"type":"bad:deep","data":{"x":' + "[" * depth + "]" * depth + "}}"
        assert len(text.encode()) < 1 << 20
        return text, JSON

    def announce(self) -> tuple[str | bytes, str]:
        rng = self.rng
        identity: Any = {"id": self.word(), "kind": "plugin", "plugin": {"id": self.word()}}
        if rng.random() < 0.15:
            identity["plugin"]["labels"] = self.huge_labels()
            identity["labels"] = {"devtools": "true", **{f"x{i}": "y" for i in range(200)}}
        data: dict[str, Any] = {"name": self.word(), "identity": identity}
        if rng.random() < 0.5:
            data["index"] = rng.randint(0, 5)
        if rng.random() < 0.3:
            data["possibleEvents"] = rng.choice((5, "x", None, [1, 2], {"a": 1}))
        which = rng.randint(0, 3) if not self.auth else rng.randint(0, 2)
        if which == 0:  # bad name (validated first, whatever else is wrong)
            choice = rng.randint(0, 1)
            if choice:
                del data["name"]
            else:
                data["name"] = rng.choice(("", *_NOT_STRINGS))
            if rng.random() < 0.5:
                data["index"] = rng.choice(_BAD_INDEXES)
            expect = errors.MODULE_ANNOUNCE_NAME_INVALID
        elif which == 1:  # good name, bad index
            data["index"] = rng.choice(_BAD_INDEXES)
            if rng.random() < 0.5:
                data["identity"] = rng.choice(("x", None, 5))
            expect = errors.MODULE_ANNOUNCE_INDEX_INVALID
        elif which == 2:  # good name and index, bad identity
            data["identity"] = rng.choice(
                (
                    None, "x", 5, [], {},
                    {"kind": "module", "plugin": {"id": "p"}},
                    {"kind": "plugin"},
                    {"kind": "plugin", "plugin": "p"},
                    {"kind": "plugin", "plugin": {"id": ""}},
                    {"kind": "plugin", "plugin": {"id": 5}},
                    {"kind": "plugin", "plugin": {"id": None, "labels": self.huge_labels() if rng.random() < 0.2 else {}}},
                    {"kind": 1, "plugin": {"id": "p"}},
                )
            )
            expect = errors.MODULE_ANNOUNCE_IDENTITY_INVALID
        else:  # a valid announce, but the peer has not authenticated
            expect = errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING
        return self.dump(self.envelope("module:announce", data)), expect

    def ui_configure(self) -> tuple[str | bytes, str]:
        rng = self.rng
        data: dict[str, Any] = {"moduleName": UNKNOWN_MODULE_PREFIX + self.word(), "config": self.junk()}
        which = rng.randint(0, 2)
        if which == 0:
            if rng.random() < 0.3:
                del data["moduleName"]
            else:
                data["moduleName"] = rng.choice(("", *_NOT_STRINGS))
            expect = errors.UI_CONFIGURE_MODULE_NAME_INVALID
        elif which == 1:
            data["moduleIndex"] = rng.choice(_BAD_INDEXES)
            expect = errors.UI_CONFIGURE_MODULE_INDEX_INVALID
        else:
            if rng.random() < 0.5:
                data["moduleIndex"] = rng.randint(0, 3)
            expect = errors.MODULE_NOT_FOUND
        if not self.auth:
            expect = errors.NOT_AUTHENTICATED
        return self.dump(self.envelope("ui:configure", data)), expect

    def consumer(self) -> tuple[str | bytes, str]:
        rng = self.rng
        etype = rng.choice(("module:consumer:register", "module:consumer:unregister"))
        data: dict[str, Any] = {
            "mode": rng.choice(("consumer", "consumer-group", 5, None, [], "weird")),
            "group": rng.choice(("g", "", 5, None, {}, ["g"])),
            "priority": rng.choice((1, -1, "high", None, [], float("1e308"), True)),
        }
        if rng.random() < 0.3:
            pass  # no event at all
        else:
            data["event"] = rng.choice(("", *_NOT_STRINGS))
        expect = errors.MODULE_CONSUMER_EVENT_INVALID if self.auth else errors.NOT_AUTHENTICATED
        if not self.auth and rng.random() < 0.5:
            data["event"] = "input:text"  # valid registration, still refused before authentication
        return self.dump(self.envelope(etype, data)), expect

    def authenticate(self) -> tuple[str | bytes, str]:
        token = self.rng.choice((None, 0, 42, [], {}, True, "", "wrong-" + self.word(), "x" * 5000))
        data: Any = {} if self.rng.random() < 0.2 else {"token": token}
        return self.dump(self.envelope("module:authenticate", data)), errors.INVALID_TOKEN

    def routed(self) -> tuple[str | bytes, str]:
        """A well-formed event with odd contents; an unauthenticated sender is refused (a
        ``data.destinations`` that is not a list is an invalid envelope, for anyone)."""
        assert not self.auth
        rng = self.rng
        dests = self.junk()
        ev = self.envelope("bad:" + self.word(), {"k": self.junk(), "destinations": dests})
        refused = errors.NOT_AUTHENTICATED if isinstance(dests, list) else errors.INVALID_EVENT_FORMAT
        r = rng.random()
        if r < 0.3:
            ev["route"] = {"destinations": [self.junk(), {"type": "label", "selectors": 5}], "bypass": True,
                           "delivery": self.junk()}
        elif r < 0.45:
            ev["route"] = {"delivery": {"mode": "consumer", "required": True}}
        elif r < 0.55:
            ev["type"] = rng.choice(("input:text", "input:voice"))
        elif r < 0.65:
            # parseable but far deeper than any sane expression
            text = json.dumps(ev)[:-1] + ',"route":{"destinations":[' + self.deep_destinations(200)[0] + "]}}"
            return text, refused
        elif r < 0.7:
            ev["data"]["blob"] = "z" * rng.randint(10_000, 100_000)
        return self.dump(ev), refused

    def heartbeat_frame(self) -> tuple[str | bytes, None]:
        frame = self.rng.choice(("ping", "pong"))
        return (frame.encode() if self.rng.random() < 0.3 else frame), None

    # -- the mix -----------------------------------------------------------------------------------
    def one(self) -> tuple[str | bytes, str | None]:
        rng = self.rng
        r = rng.random()
        if r < 0.10:
            return self.raw_bytes()
        if r < 0.20:
            return self.random_text()
        if r < 0.28:
            return self.truncated()
        if r < 0.50:
            return self.bad_envelope()
        if r < 0.52:
            return self.too_deep()
        if r < 0.64:
            return self.announce()
        if r < 0.72:
            return self.ui_configure()
        if r < 0.80:
            return self.consumer()
        if r < 0.85:
            return self.authenticate()
        if r < 0.87:
            return self.heartbeat_frame()
        if not self.auth:
            return self.routed()
        return self.bad_envelope()


def generate(rng: random.Random, n: int, authenticated: bool) -> list[tuple[str | bytes, str | None]]:
    gen = Generator(rng, authenticated)
    return [gen.one() for _ in range(n)]


def matches(message: str, expect: str) -> bool:
    if expect == JSON:
        return message.startswith(JSON_PREFIX)
    if expect == DECODE:
        return message.startswith(JSON_PREFIX) or message == errors.INVALID_EVENT_FORMAT
    return message == expect
