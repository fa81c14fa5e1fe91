"""PROTOCOL.md "Event envelope" and "Envelope validation": invalid JSON, invalid event format,
frame-order replies, and a bad frame changing nothing else."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airi_core import errors
from .protocol_helpers import (
    assert_alive,
    assert_server_event,
    nonce,
    parent_id,
    probe_one,
    send_frame_expect_error,
)

INVALID_JSON_PREFIX = "invalid JSON, error: "


def test_error_strings_are_the_protocol_literals():
    # hard-coded on purpose: a rewording in airi_core.protocol.errors must fail here
    assert errors.INVALID_EVENT_FORMAT == "invalid event format"
    assert errors.invalid_json("boom") == "invalid JSON, error: boom"
    assert errors.INVALID_TOKEN == "invalid token"
    assert errors.NOT_AUTHENTICATED == "not authenticated"
    assert errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING == "must authenticate before announcing"
    assert errors.MODULE_ANNOUNCE_IDENTITY_INVALID == (
        "module identity must include kind=plugin and a plugin id for event 'module:announce'"
    )
    assert errors.MODULE_ANNOUNCE_INDEX_INVALID == (
        "the field 'index' must be a non-negative integer for event 'module:announce'"
    )
    assert errors.MODULE_ANNOUNCE_NAME_INVALID == (
        "the field 'name' must be a non-empty string for event 'module:announce'"
    )
    assert errors.MODULE_CONSUMER_EVENT_INVALID == (
        "the field 'event' must be a non-empty string for event consumer registration"
    )
    assert errors.MODULE_NOT_FOUND == "module not found, it hasn't announced itself or the name is incorrect"
    assert errors.NO_CONSUMER_REGISTERED == "no consumer registered for requested event delivery"
    assert errors.UI_CONFIGURE_MODULE_INDEX_INVALID == (
        "the field 'moduleIndex' must be a non-negative integer for event 'ui:configure'"
    )
    assert errors.UI_CONFIGURE_MODULE_NAME_INVALID == "the field 'moduleName' can't be empty for event 'ui:configure'"


# -- invalid JSON -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "frame",
    ["{", "not json", '{"type": }', "", "{'type': 'x'}", '{"type": "x",}', "[1, 2", "nul", '"unterminated'],
)
async def test_invalid_json_is_answered_with_parser_message(airi_hub, airi_connect, frame):
    a = await airi_connect(airi_hub, "a", announce=True)
    err = await send_frame_expect_error(a, frame)
    msg = err["data"]["message"]
    assert msg.startswith(INVALID_JSON_PREFIX), msg
    assert msg[len(INVALID_JSON_PREFIX):].strip(), "the parser message is missing"
    assert err["type"] == "error" and set(err["data"]) == {"message"}
    assert_server_event(err, airi_hub)
    await assert_alive(a)


# -- invalid event format ---------------------------------------------------------------------------
INVALID_FORMAT_FRAMES = [
    "[]",
    "42",
    '"text"',
    "null",
    "true",
    "{}",
    '{"data": {}}',
    '{"type": ""}',
    '{"type": 5}',
    '{"type": null}',
    '{"type": ["x"]}',
    '{"type": {"t": 1}}',
    '{"type": "x", "metadata": 5}',
    '{"type": "x", "metadata": "m"}',
    '{"type": "x", "metadata": []}',
    '{"type": "x", "metadata": {"event": 5}}',
    '{"type": "x", "metadata": {"event": "id"}}',
    '{"type": "x", "metadata": {"source": "me"}}',
    '{"type": "x", "metadata": {"source": []}}',
    '{"type": "x", "route": 42}',
    '{"type": "x", "route": "all"}',
    '{"type": "x", "route": []}',
    '{"type": "x", "route": {"destinations": "*"}}',
    '{"type": "x", "route": {"destinations": {"type": "glob", "glob": "*"}}}',
    '{"type": "x", "route": {"destinations": 1}}',
    '{"json": 5}',
    '{"json": []}',
    '{"json": "x"}',
    '{"json": {"data": {}}}',
    '{"json": {"type": ""}}',
    '{"json": {"type": "x", "route": 42}}',
    '{"json": {"type": "x", "metadata": {"event": 1}}, "meta": {}}',
]


@pytest.mark.parametrize("frame", INVALID_FORMAT_FRAMES)
async def test_invalid_event_format(airi_hub, airi_connect, frame):
    a = await airi_connect(airi_hub, "a", announce=True)
    err = await send_frame_expect_error(a, frame)
    assert err["data"] == {"message": "invalid event format"}
    assert err["data"]["message"] == errors.INVALID_EVENT_FORMAT
    assert_server_event(err, airi_hub)
    await assert_alive(a)


@pytest.mark.parametrize("frame", INVALID_FORMAT_FRAMES[:8])
async def test_invalid_event_format_also_in_binary_frames(airi_hub, airi_connect, frame):
    a = await airi_connect(airi_hub, "a")
    err = await send_frame_expect_error(a, frame.encode())
    assert err["data"]["message"] == errors.INVALID_EVENT_FORMAT


async def test_route_42_is_answered_and_the_hub_keeps_serving(airi_hub, airi_connect):
    """improvement: the reference crashes its whole process on ``route: 42``."""
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    b_start = b.mark()
    for _ in range(3):
        err = await send_frame_expect_error(a, json.dumps({"type": "test:x", "data": {}, "route": 42}))
        assert err["data"]["message"] == "invalid event format"
    await b.expect_silence("test:x", after=[a], start=b_start)
    assert await probe_one(a, [b]) == {"b"}
    assert await probe_one(b, [a]) == {"a"}
    c = await airi_connect(airi_hub, "c", announce=True)
    assert await probe_one(c, [a, b]) == {"a", "b"}


@pytest.mark.parametrize(
    "body",
    [
        {"type": "test:x", "route": 42},
        {"type": "test:x", "route": {"destinations": "*"}},
        {"type": "", "data": {}},
        {"type": "test:x", "metadata": {"event": {"id": "@ID@"}, "source": "me"}},
    ],
)
async def test_invalid_event_format_reply_carries_parent_id_when_the_id_is_readable(airi_hub, airi_connect, body):
    """improvement "parentId on every direct reply where a triggering event id exists": the frame is
    rejected, but its ``metadata.event.id`` is still readable, so the error answers it."""
    a = await airi_connect(airi_hub, "a")
    eid = nonce("bad")
    body = json.loads(json.dumps(body).replace("@ID@", eid))
    body.setdefault("metadata", {"event": {"id": eid}})
    err = await send_frame_expect_error(a, json.dumps(body))
    assert err["data"]["message"] == errors.INVALID_EVENT_FORMAT
    assert_server_event(err, airi_hub, parent=eid)


async def test_null_optional_fields_are_absent_not_errors(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    p = nonce()
    start = b.mark()
    await a.send_raw(json.dumps({"type": "test:nulls", "data": {"probe": p}, "route": None, "metadata": {"event": {"id": p}, "source": None}}))
    ev = await b.wait_for("test:nulls", start=start)
    assert ev["data"]["probe"] == p
    assert a.error_messages() == []


# -- ordering and isolation ------------------------------------------------------------------------
def _frame(type: str, data: dict, eid: str, route: dict | None = None) -> str:
    body: dict = {"type": type, "data": data, "metadata": {"event": {"id": eid}}}
    if route is not None:
        body["route"] = route
    return json.dumps(body)


async def test_replies_go_out_in_frame_order(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a")
    await a.wait_for("registry:modules:sync")
    expected: list[tuple[str, str | None]] = []
    frames: list[str | bytes] = []
    for round_ in range(15):
        ids = [nonce(f"r{round_}") for _ in range(7)]
        frames += [
            "{oops",
            _frame("transport:connection:heartbeat", {"kind": "ping", "message": "x"}, ids[0]),
            _frame("module:announce", {"name": ""}, ids[1]),
            _frame("ui:configure", {"moduleName": "nobody", "config": {}}, ids[2]),
            _frame("module:consumer:register", {"event": ""}, ids[3]),
            _frame("module:authenticate", {"token": "whatever"}, ids[4]),
            _frame("module:announce", {"name": "a", "index": -1}, ids[5]),
            _frame("input:text", {"text": "hi"}, ids[6], route={"delivery": {"required": True}}),
        ]
        expected += [
            ("error", None),
            ("transport:connection:heartbeat", ids[0]),
            ("error", ids[1]),
            ("error", ids[2]),
            ("error", ids[3]),
            ("module:authenticated", ids[4]),
            ("registry:modules:sync", ids[4]),
            ("error", ids[5]),
            ("error", ids[6]),
        ]
    start = a.mark()
    for f in frames:
        await a.send_raw(f)
    await a.wait_for(predicate=lambda e: len(a.received) - start >= len(expected), start=start)
    await a.fence()  # and nothing more than expected
    got = [(e["type"], parent_id(e)) for e in a.received[start:]]
    assert got == expected
    msgs = [e["data"]["message"] for e in a.received[start:start + 9] if e["type"] == "error"]
    assert msgs[0].startswith(INVALID_JSON_PREFIX)
    assert msgs[1:] == [
        errors.MODULE_ANNOUNCE_NAME_INVALID,
        errors.MODULE_NOT_FOUND,
        errors.MODULE_CONSUMER_EVENT_INVALID,
        errors.MODULE_ANNOUNCE_INDEX_INVALID,
        errors.NO_CONSUMER_REGISTERED,
    ]


async def test_replies_stay_in_frame_order_with_token_auth(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"auth": {"token": "tok"}})
    a = await airi_connect(hub, "a")
    ids = [nonce("t") for _ in range(6)]
    frames = [
        _frame("module:authenticate", {"token": "bad"}, ids[0]),
        _frame("test:x", {}, ids[1]),
        _frame("module:authenticate", {"token": "tok"}, ids[2]),
        _frame("transport:connection:heartbeat", {"kind": "ping"}, ids[3]),
        _frame("module:authenticate", {"token": "bad again"}, ids[4]),
        _frame("ui:configure", {"moduleName": "x"}, ids[5]),
    ]
    start = a.mark()
    for f in frames:
        await a.send_raw(f)
    expected = [
        ("error", ids[0]),
        ("error", ids[1]),
        ("module:authenticated", ids[2]),
        ("registry:modules:sync", ids[2]),
        ("transport:connection:heartbeat", ids[3]),
        ("error", ids[4]),
        ("error", ids[5]),
    ]
    await a.wait_for(predicate=lambda e: len(a.received) - start >= len(expected), start=start)
    await a.fence()  # and nothing more than expected
    assert [(e["type"], parent_id(e)) for e in a.received[start:]] == expected
    assert [e["data"]["message"] for e in a.received[start:] if e["type"] == "error"] == [
        "invalid token",
        "not authenticated",
        "invalid token",
        errors.MODULE_NOT_FOUND,
    ]


async def test_bad_frames_change_nothing_and_affect_no_other_peer(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    c = await airi_connect(airi_hub, "c", announce=True)
    b_start, c_start = b.mark(), c.mark()

    async def spam() -> None:
        for f in ["{", "[]", '{"type": 1}', '{"type": "x", "route": 42}', b"\xff\xff", '{"json": 3}'] * 10:
            await a.send_raw(f)

    async def chat() -> list[str]:
        sent = []
        for _ in range(20):
            p = nonce()
            sent.append(p)
            await b.send("test:chat", {"probe": p}, route={"destinations": ["module:c"]})
        return sent

    _, sent = await asyncio.gather(spam(), chat())
    await assert_alive(a)
    for p in sent:
        await c.wait_for("test:chat", lambda e, p=p: e["data"]["probe"] == p, start=c_start)
    # c and b saw nothing caused by a's bad frames: no errors, no registry changes
    for client, start in ((b, b_start), (c, c_start)):
        assert [e["type"] for e in client.received[start:] if e["type"] != "test:chat"] == []
    # a is still announced and routable
    assert await probe_one(b, [a, c], route={"destinations": ["module:a"]}) == {"a"}
    assert len(a.error_messages()) == 60


# -- property: arbitrary frames only ever produce protocol errors, never a closed socket --------
_KNOWN_ERRORS = {
    errors.INVALID_EVENT_FORMAT,
    errors.NOT_AUTHENTICATED,
}
_scalar = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5)
_value = st.recursive(_scalar, lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=4), i, max_size=3), max_leaves=6)
_envelope = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["test:fuzz", "", 1, None, []]),
        "data": _value,
        "metadata": _value | st.fixed_dictionaries({}, optional={"event": _value, "source": _value}),
        "route": _value | st.fixed_dictionaries({}, optional={"destinations": _value}),
        "json": _value,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=st.one_of(st.text(max_size=30), st.binary(max_size=30), _value.map(json.dumps), _envelope.map(json.dumps)))
async def test_property_any_frame_leaves_the_socket_open(airi_hub, airi_connect, frame):
    clients = getattr(airi_hub, "_fuzz_clients", None)
    if clients is None:
        clients = airi_hub._fuzz_clients = (await airi_connect(airi_hub, "fuzz-a", announce=True),)
    (a,) = clients
    start = a.mark()
    await a.send_raw(frame)
    await assert_alive(a)
    for e in a.received[start:]:
        if e["type"] == "error":
            m = e["data"]["message"]
            assert m in _KNOWN_ERRORS or m.startswith(INVALID_JSON_PREFIX), m
        else:
            assert e["type"] == "transport:connection:heartbeat"
