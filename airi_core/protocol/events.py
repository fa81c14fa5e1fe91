"""Events on the wire: frame decoding (plain or superjson-wrapped JSON), envelope validation,
encoding, and ids.

Each frame is parsed exactly once. The decoded :class:`Event` keeps the sender's raw text so a
routed event can be forwarded without re-encoding it per receiver (see :meth:`Event.forward_text`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from . import errors
from .identity import SERVER_PLUGIN_ID, instance_id_of, plugin_id_of

__all__ = ["Event", "DecodeError", "decode_frame", "dumps", "new_id", "HEARTBEAT_FRAMES"]

#: Raw text frames that are transport heartbeats, not events.
HEARTBEAT_FRAMES = frozenset({"ping", "pong"})

_decoder = json.JSONDecoder()

_fast_loads: Callable[[str], Any]
_FastError: type[Exception]
try:  # orjson parses a frame ~2.5-3x faster (bench/json_libs.py): +8-14% hub throughput
    from orjson import JSONDecodeError as _FastError
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - a platform without orjson wheels
    _fast_loads = _decoder.decode
    _FastError = json.JSONDecodeError
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Compact JSON text, UTF-8 kept as is (the reference's JSON.stringify style)."""
    return _encoder.encode(value)


def new_id() -> str:
    """A fresh random event/instance id (URL-safe, 21 characters like nanoid)."""
    return secrets.token_urlsafe(16)[:21]


class DecodeError(Exception):
    """A frame that is not an AIRI event; ``message`` is the exact protocol error text."""

    def __init__(self, message: str, parent_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: ``metadata.event.id`` of the rejected frame when it could still be read
        self.parent_id = parent_id


class Event:
    """One decoded event, as a peer sent it: the one event model of hub, plugins and client.

    ``type``, ``data`` (an object; ``{}`` when absent), ``metadata`` and ``route`` (``None``
    when absent) are the validated envelope fields; ``raw`` is the frame text, ``wrapped`` tells
    whether it came superjson-wrapped and ``meta`` is superjson's ``meta`` then (values such as
    ``Date`` stay in their JSON form in ``data``). ``body`` is the event object as received.
    Treat an Event as read-only: the hub hands the same object to every hook.
    """

    __slots__ = ("type", "data", "metadata", "route", "raw", "wrapped", "body", "meta", "_plain", "_wrapped_text")

    def __init__(
        self,
        type: str,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        route: dict[str, Any] | None = None,
        raw: str | None = None,
        wrapped: bool = False,
        body: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.type = type
        self.data = data
        self.metadata = metadata
        self.route = route
        if body is None:
            body = {"type": type, "data": data}
            if metadata is not None:
                body["metadata"] = metadata
            if route is not None:
                body["route"] = route
        self.body = body
        self.raw = raw if raw is not None else dumps(body)
        self.wrapped = wrapped
        self.meta = meta
        self._plain: str | None = None
        self._wrapped_text: str | None = None

    def _event_ref(self) -> dict[str, Any] | None:
        md = self.metadata
        return md.get("event") if md is not None else None

    @property
    def id(self) -> str | None:
        """``metadata.event.id`` when the sender gave one (used as ``parentId`` of replies)."""
        ev = self._event_ref()
        value = ev.get("id") if ev is not None else None
        return value if isinstance(value, str) else None

    @property
    def parent_id(self) -> str | None:
        """``metadata.event.parentId``: the id of the event this one answers."""
        ev = self._event_ref()
        value = ev.get("parentId") if ev is not None else None
        return value if isinstance(value, str) else None

    @property
    def source(self) -> dict[str, Any] | None:
        """``metadata.source`` when present: the identity the sender claimed."""
        md = self.metadata
        return md.get("source") if md is not None else None

    @property
    def source_plugin_id(self) -> str:
        """``metadata.source.plugin.id``, or ``""``."""
        return plugin_id_of(self.source)

    @property
    def source_instance_id(self) -> str:
        """``metadata.source.id``, or ``""``."""
        return instance_id_of(self.source)

    @property
    def from_hub(self) -> bool:
        """True for events whose source is the hub itself (registry syncs, errors, pongs...)."""
        return self.source_plugin_id == SERVER_PLUGIN_ID

    @property
    def error_message(self) -> str | None:
        """``data.message`` of an ``error`` event, else None."""
        if self.type != "error":
            return None
        msg = self.data.get("message")
        return msg if isinstance(msg, str) else None

    def __repr__(self) -> str:
        return f"<Event {self.type!r} id={self.id!r}>"

    def forward_text(self, wrap: bool) -> str:
        """The text to forward to receivers, computed once per event.

        ``wrap=True`` (the default wire format): the sender's frame as written when it came
        wrapped, else ``{"json": <raw>}``. ``wrap=False``: plain JSON; a wrapped frame is
        re-encoded once.
        """
        if wrap:
            text = self._wrapped_text
            if text is None:
                text = self.raw if self.wrapped else '{"json":' + self.raw + "}"
                self._wrapped_text = text
            return text
        text = self._plain
        if text is None:
            text = dumps(self.body) if self.wrapped else self.raw
            self._plain = text
        return text


def _as_text(frame: str | bytes) -> str:
    if isinstance(frame, str):
        return frame
    try:
        return bytes(frame).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(errors.invalid_json(f"frame is not valid UTF-8 ({exc.reason} at byte {exc.start})")) from None


def decode_frame(frame: str | bytes) -> Event:
    """Decode one text or binary frame into an :class:`Event`.

    Raises :class:`DecodeError` carrying the exact PROTOCOL.md message: ``invalid JSON, error:
    ...`` for text that does not parse, ``invalid event format`` for JSON that is not an event.
    Heartbeat frames (``ping``/``pong``) must be filtered out before calling this.
    """
    text = _as_text(frame)
    try:
        try:
            obj = _fast_loads(text)
        except _FastError:
            # what orjson refuses, the stdlib decides: it accepts what the hub always accepted
            # (integers beyond 64 bits, lone surrogates) and words the error the same way
            obj = _decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(errors.invalid_json(str(exc))) from None
    except RecursionError:
        raise DecodeError(errors.invalid_json("nesting too deep")) from None
    except ValueError as exc:  # e.g. integer string too long to convert
        raise DecodeError(errors.invalid_json(str(exc))) from None
    if type(obj) is not dict:
        raise DecodeError(errors.INVALID_EVENT_FORMAT)
    wrapped = False
    meta = None
    if "type" not in obj and "json" in obj:
        meta = obj.get("meta")
        obj = obj["json"]
        wrapped = True
        if type(obj) is not dict:
            raise DecodeError(errors.INVALID_EVENT_FORMAT)
    try:
        event = _envelope(obj, text, wrapped)
    except DecodeError as exc:
        exc.parent_id = _readable_id(obj)
        raise
    if type(meta) is dict:
        event.meta = meta
    return event


def _readable_id(obj: dict[str, Any]) -> str | None:
    md = obj.get("metadata")
    ev = md.get("event") if type(md) is dict else None
    eid = ev.get("id") if type(ev) is dict else None
    return eid if type(eid) is str else None


def _envelope(obj: dict[str, Any], text: str, wrapped: bool) -> Event:
    etype = obj.get("type")
    if type(etype) is not str or not etype:
        raise DecodeError(errors.INVALID_EVENT_FORMAT)
    data = obj.get("data", _MISSING)
    if data is _MISSING:
        data = {}
    elif type(data) is not dict:
        raise DecodeError(errors.INVALID_EVENT_FORMAT)
    # A JSON null metadata/route/source/event reads as absent, as it does for the reference.
    metadata = obj.get("metadata")
    if metadata is not None:
        if type(metadata) is not dict:
            raise DecodeError(errors.INVALID_EVENT_FORMAT)
        for key in ("event", "source"):
            sub = metadata.get(key)
            if sub is not None and type(sub) is not dict:
                raise DecodeError(errors.INVALID_EVENT_FORMAT)
    route = obj.get("route")
    if route is not None:
        if type(route) is not dict:
            raise DecodeError(errors.INVALID_EVENT_FORMAT)
        dests = route.get("destinations", _MISSING)
        if dests is not _MISSING and type(dests) is not list:
            raise DecodeError(errors.INVALID_EVENT_FORMAT)
    return Event(etype, data, metadata, route, text, wrapped, obj)


_MISSING: Any = object()
