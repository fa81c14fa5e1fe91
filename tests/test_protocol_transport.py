"""PROTOCOL.md "Transport": endpoint, plain/superjson frames, binary frames, heartbeat frames,
the wire format of what the hub sends, byte-identical forwarding and transport-level limits."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from airi_core import errors
from .protocol_helpers import (
    assert_alive,
    assert_server_event,
    expect_error,
    frame_limit_settings,
    got_probe,
    nonce,
    raw_objects,
    send_frame_expect_error,
)


# -- endpoint ---------------------------------------------------------------------------------------
async def test_endpoint_is_ws_path_on_loopback(airi_hub, airi_connect):
    assert airi_hub.url.startswith("ws://127.0.0.1:")
    assert airi_hub.url.endswith("/ws")
    c = await airi_connect(airi_hub, "a")
    await c.wait_for("module:authenticated")


async def test_other_paths_are_not_websocket_endpoints(airi_hub):
    url = airi_hub.url[: -len("/ws")] + "/not-ws"
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, open_timeout=3):
            pass
    assert info.value.response.status_code == 404


# -- inbound frames ---------------------------------------------------------------------------------
async def test_plain_and_wrapped_events_are_both_accepted(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    p1, p2 = nonce(), nonce()
    await a.send("test:plain", {"probe": p1})
    await a.send("test:wrapped", {"probe": p2}, wrap=True)
    ev1 = await b.wait_for("test:plain", lambda e: e["data"]["probe"] == p1)
    ev2 = await b.wait_for("test:wrapped", lambda e: e["data"]["probe"] == p2)
    assert ev1["data"] == {"probe": p1} and ev2["data"] == {"probe": p2}
    assert not [e for e in a.received if e["type"] == "error"]


async def test_wrapped_event_with_superjson_meta_is_accepted_and_forwarded_as_written(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    p = nonce()
    ev = a.event("test:meta", {"probe": p, "when": "2024-01-01T00:00:00.000Z"})
    ev["metadata"]["source"] = a.identity
    text = json.dumps({"json": ev, "meta": {"values": {"data.when": ["Date"]}}})
    start = b.mark()
    await a.send_raw(text)
    await b.wait_for("test:meta", lambda e: e["data"]["probe"] == p, start=start)
    assert b.raw[start] == text


async def test_object_with_both_type_and_json_keys_is_not_unwrapped(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    p = nonce()
    text = json.dumps({"type": "test:both", "json": {"type": "other"}, "data": {"probe": p}, "metadata": {"event": {"id": p}, "source": a.identity}})
    start = b.mark()
    await a.send_raw(text)
    ev = await b.wait_for("test:both", start=start)
    assert ev["data"]["probe"] == p
    assert b.raw[start] == '{"json":' + text + "}"


async def test_binary_frame_is_decoded_as_utf8_text(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    p = nonce()
    ev = a.event("test:binary", {"probe": p, "text": "h\u00e9llo \U0001f49b"})
    ev["metadata"]["source"] = a.identity
    text = json.dumps(ev, ensure_ascii=False)
    start = b.mark()
    await a.send_raw(text.encode("utf-8"))
    got = await b.wait_for("test:binary", start=start)
    assert got["data"]["text"] == "h\u00e9llo \U0001f49b"
    raw = b.raw[start]
    raw_text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    assert raw_text == '{"json":' + text + "}"


async def test_binary_frame_that_is_not_utf8_is_invalid_json(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a")
    err = await send_frame_expect_error(a, b'{"type": "x", "data": "\xff\xfe"}')
    assert err["data"]["message"].startswith("invalid JSON, error: ")
    assert len(err["data"]["message"]) > len("invalid JSON, error: ")
    await assert_alive(a)


@pytest.mark.parametrize("frame", ["ping", "pong", b"ping", b"pong"])
async def test_raw_ping_pong_frames_are_heartbeats_never_errors(airi_hub, airi_connect, frame):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    a_start, b_start = a.mark(), b.mark()
    await a.send_raw(frame)
    await assert_alive(a)
    # nothing came back (the round trip's own pong is not recorded); nothing was routed to b
    assert a.received[a_start:] == []
    await b.expect_silence(after=[a], start=b_start)


# -- outbound wire format ---------------------------------------------------------------------------
async def test_server_frames_are_superjson_wrapped_by_default_without_meta(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    await a.send_raw("{broken")
    await a.wait_for("error")
    await a.request("transport:connection:heartbeat", {"kind": "ping"})  # a recorded pong (a fence's is not)
    objs = raw_objects(a)
    assert len(objs) >= 5  # authenticated, sync, sync after announce, error, pong
    for obj in objs:
        assert set(obj) == {"json"}, obj  # no "meta" for what the server builds
        assert isinstance(obj["json"], dict) and "type" in obj["json"]


async def test_wire_format_json_sends_plain_events(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"server": {"wire_format": "json"}})
    a = await airi_connect(hub, "a", announce=True)
    await a.send_raw("{broken")
    await a.wait_for("error")
    await a.request("transport:connection:heartbeat", {"kind": "ping"})  # a recorded pong (a fence's is not)
    for obj in raw_objects(a):
        assert "json" not in obj and isinstance(obj.get("type"), str), obj
        if obj["type"] != "module:configure":
            assert_server_event(obj, hub)


# -- forwarding -----------------------------------------------------------------------------------
# Byte-identical forwarding holds when the frame's metadata.source is the sender's announced
# identity (as AIRI clients send it); any other source is replaced, see tests/test_security_trust.py
SOURCE_A = '"source":{"id":"a-instance","kind":"plugin","plugin":{"id":"a"}}'


async def test_wrapped_frame_is_forwarded_byte_identical(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    c = await airi_connect(airi_hub, "c", announce=True)
    p = nonce()
    # odd spacing, key order and escapes: any decode/re-encode would change these bytes
    text = (
        '{ "json" :{"metadata":{"event":{"id":"' + p + '"},' + SOURCE_A + '},  "data" : {"probe":"' + p + '",'
        '"u":"\\u00e9\\ud83d\\udc9b", "n": 1.50, "big": 12345678901234567890},"type":"test:fwd" } }'
    )
    starts = (b.mark(), c.mark())
    await a.send_raw(text)
    for client, start in zip((b, c), starts):
        ev = await client.wait_for("test:fwd", start=start)
        assert ev["data"]["probe"] == p
        assert client.raw[start] == text


async def test_plain_frame_is_forwarded_as_json_wrapper_of_raw_text(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    p = nonce()
    text = '{"type" : "test:fwd",\n "data":{"probe":"' + p + '", "x": [1, 2.0, "\\u00e9"]} ,"metadata":{"event":{"id":"' + p + '"},' + SOURCE_A + '}}'
    start = b.mark()
    await a.send_raw(text)
    await b.wait_for("test:fwd", start=start)
    assert b.raw[start] == '{"json":' + text + "}"


async def test_wire_format_json_forwards_plain_events_verbatim(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"server": {"wire_format": "json"}})
    a = await airi_connect(hub, "a", announce=True)
    b = await airi_connect(hub, "b", announce=True)
    p, q = nonce(), nonce()
    plain = '{"type":"test:fwd",  "data":{"probe":"' + p + '"},"metadata":{"event":{"id":"' + p + '"},' + SOURCE_A + '}}'
    inner = {"type": "test:fwd", "data": {"probe": q}, "metadata": {"event": {"id": q}, "source": a.identity}}
    start = b.mark()
    await a.send_raw(plain)
    await a.send_raw(json.dumps({"json": inner}))
    await b.wait_for("test:fwd", lambda e: e["data"]["probe"] == q, start=start)
    assert b.raw[start] == plain
    assert json.loads(b.raw[start + 1]) == inner


# -- transport-level limits ------------------------------------------------------------------------
async def test_oversized_frame_closes_with_1009_and_spares_other_peers(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(frame_limit_settings(1024))
    a = await airi_connect(hub, "a", announce=True)
    b = await airi_connect(hub, "b", announce=True)
    big = json.dumps({"type": "test:big", "data": {"blob": "x" * 4096}})
    b_start = b.mark()
    await a.send_raw(big)
    code, _ = await a.wait_closed()
    assert code == 1009
    gone = await b.wait_for("module:de-announced", start=b_start)
    assert gone["data"]["name"] == "a"
    assert not got_probe(b, "test:big") and not [e for e in b.received[b_start:] if e["type"] == "test:big"]
    await assert_alive(b)
    # the hub keeps serving new peers
    c = await airi_connect(hub, "c", announce=True)
    p = nonce()
    await c.send("test:after", {"probe": p})
    await b.wait_for("test:after", lambda e: e["data"]["probe"] == p)


async def test_frame_just_under_the_limit_is_accepted(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(frame_limit_settings(2048))
    a = await airi_connect(hub, "a", announce=True)
    b = await airi_connect(hub, "b", announce=True)
    await a.send("test:mid", {"blob": "y" * 1500})
    ev = await b.wait_for("test:mid")
    assert len(ev["data"]["blob"]) == 1500
    assert a.close_code is None


async def test_many_errors_never_close_the_socket(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a")
    frames = [
        "{",
        "[]",
        "42",
        '{"type": ""}',
        '{"type": "x", "route": 42}',
        '{"type": "module:announce", "data": {"name": ""}}',
        '{"type": "ui:configure", "data": {"moduleName": "nobody"}}',
        '{"type": "module:consumer:register", "data": {}}',
        b"\xc3\x28",
    ] * 5
    start = a.mark()
    for f in frames:
        await a.send_raw(f)
    await assert_alive(a)
    errs = [e for e in a.received[start:] if e["type"] == "error"]
    assert len(errs) == len(frames)
    assert a.close_code is None


# -- property: any plain event is forwarded as {"json": <raw text>} --------------------------------
_json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.dictionaries(st.text(max_size=8).filter(lambda k: k != "probe"), _json_values, max_size=5),
    ensure_ascii=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
    wrap=st.booleans(),
)
async def test_property_any_event_is_forwarded_without_reencoding(airi_hub, airi_connect, payload, ensure_ascii, indent, wrap):
    # connect lazily: hypothesis reuses the function-scoped fixtures across examples
    hub = airi_hub
    clients = getattr(hub, "_prop_clients", None)
    if clients is None:
        a = await airi_connect(hub, "prop-a", announce=True)
        b = await airi_connect(hub, "prop-b", announce=True)
        clients = hub._prop_clients = (a, b)
    a, b = clients
    p = nonce()
    event = {"type": "test:prop", "data": {**payload, "probe": p}, "metadata": {"event": {"id": p}, "source": a.identity}}
    body = {"json": event} if wrap else event
    text = json.dumps(body, ensure_ascii=ensure_ascii, indent=indent)
    start = b.mark()
    await a.send_raw(text)
    await b.wait_for("test:prop", lambda e: e["data"].get("probe") == p, start=start, timeout=3)
    assert b.raw[start] == (text if wrap else '{"json":' + text + "}")
    assert not [e for e in a.received if e["type"] == "error"]


async def test_errors_are_sent_to_the_sender_only(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    b_start = b.mark()
    err = await send_frame_expect_error(a, "not json at all")
    assert err["data"]["message"].startswith("invalid JSON, error: ")
    start = a.mark()
    await a.send("module:announce", {"name": ""})
    await expect_error(a, errors.MODULE_ANNOUNCE_NAME_INVALID, start=start)
    await b.expect_silence(after=[a], start=b_start)
