"""Unit and property tests of frame decoding (pure logic, no sockets)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airi_core import errors
from airi_core.protocol.events import DecodeError, decode_frame

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


def _decode(obj: object) -> object:
    return decode_frame(json.dumps(obj))


def test_plain_and_wrapped_decode_to_the_same_event() -> None:
    ev = {"type": "a:b", "data": {"x": 1}, "metadata": {"event": {"id": "e1"}}}
    plain = decode_frame(json.dumps(ev))
    wrapped = decode_frame(json.dumps({"json": ev, "meta": {"values": {}}}))
    assert (plain.type, plain.data, plain.id) == (wrapped.type, wrapped.data, wrapped.id) == ("a:b", {"x": 1}, "e1")
    assert not plain.wrapped and wrapped.wrapped


def test_forward_text_never_reencodes_the_wrapped_frame() -> None:
    text = '{"json":{"type":"t","data":{"a":"é"}},"meta":{"values":{"data.d":["Date"]}}}'
    ev = decode_frame(text)
    assert ev.forward_text(wrap=True) is text
    plain = '{"type": "t", "data": {}}'
    assert decode_frame(plain).forward_text(wrap=True) == '{"json":' + plain + "}"
    assert decode_frame(plain).forward_text(wrap=False) is plain
    assert json.loads(ev.forward_text(wrap=False)) == {"type": "t", "data": {"a": "é"}}


@pytest.mark.parametrize(
    "frame",
    [
        "[]", "1", '"s"', "null", '{"data": {}}', '{"type": ""}', '{"type": 5}', '{"type": "t", "data": null}',
        '{"type": "t", "data": []}', '{"type": "t", "data": "x"}', '{"type": "t", "metadata": "m"}',
        '{"type": "t", "metadata": {"event": 1}}', '{"type": "t", "metadata": {"source": []}}',
        '{"type": "t", "route": 42}', '{"type": "t", "route": {"destinations": "module:a"}}',
        '{"type": "t", "route": {"destinations": 7}}', '{"json": 1}', '{"json": {"data": {}}}',
    ],
)
def test_invalid_event_format(frame: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_frame(frame)
    assert err.value.message == errors.INVALID_EVENT_FORMAT == "invalid event format"


@pytest.mark.parametrize("frame", ["{", "hello", b"\xff\xfe{}", "[" * 100_000])
def test_invalid_json(frame: str | bytes) -> None:
    with pytest.raises(DecodeError) as err:
        decode_frame(frame)
    assert err.value.message.startswith("invalid JSON, error: ")


def test_binary_utf8_frames_decode() -> None:
    assert decode_frame('{"type": "t", "data": {"s": "ü"}}'.encode()).data == {"s": "ü"}


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_decoder_never_raises_anything_but_decode_error(value: object) -> None:
    for candidate in (value, {"type": "t", "data": value}, {"json": value}, {"type": "t", "route": value}, {"type": "t", "metadata": value}):
        try:
            ev = _decode(candidate)
        except DecodeError as err:
            assert err.message == "invalid event format" or err.message.startswith("invalid JSON, error: ")
        else:
            assert isinstance(ev.type, str) and ev.type and isinstance(ev.data, dict)


@given(st.binary(max_size=64))
@settings(max_examples=200, deadline=None)
def test_arbitrary_bytes_are_answered(blob: bytes) -> None:
    try:
        decode_frame(blob)
    except DecodeError:
        pass
