"""Events on the wire: frame decoding (plain or superjson-wrapped JSON), envelope validation,
encoding, sender attribution, and ids.

Each frame is parsed exactly once. The decoded :class:`Event` keeps the sender's raw text so a
routed event can be forwarded without re-encoding it per receiver (see :meth:`Event.forward_text`).
Only strict JSON is accepted: ``NaN``, ``Infinity``, ``-Infinity`` and lone UTF-16 surrogates
(``"\\ud800"``) are refused with ``invalid JSON, error: ...``, since receivers with a strict
parser (I-JSON, RFC 7493) could not read a frame carrying them, and the hub could not re-encode it.

:meth:`Event.attributed` is how receivers can trust ``metadata.source``: the hub forwards an
event with the sender's announced identity as its source (byte-identical when the frame already
says so), and confines the sender's superjson ``meta`` to ``data`` (see :func:`confine_meta`).
"""

from __future__ import annotations

import json
import os
import secrets
from base64 import urlsafe_b64encode
from collections.abc import Callable
from typing import Any

from . import errors
from .identity import SERVER_PLUGIN_ID, instance_id_of, plugin_id_of

__all__ = [
    "Event",
    "DecodeError",
    "decode_frame",
    "dumps",
    "dumps_bytes",
    "Encoded",
    "canonical",
    "same_json",
    "confine_meta",
    "new_id",
    "HEARTBEAT_FRAMES",
    "SERVER_EVENT_TYPES",
    "is_server_event_type",
    "HANDSHAKE_EVENT_TYPES",
]

#: Raw text frames that are transport heartbeats, not events.
HEARTBEAT_FRAMES = frozenset({"ping", "pong"})

#: Event types only the server originates; a peer sending one is refused (besides these, every
#: ``registry:*`` type, see :func:`is_server_event_type`).
SERVER_EVENT_TYPES = frozenset(
    {
        "error", "module:authenticated", "module:announced", "module:de-announced", "module:configure",
        # the 2026-08 generation's replies and notifications (the hub sends them, never a peer)
        "peer:authenticated", "extension:authenticated", "extension:announced",
        "extension:module:announced", "extension:module:de-announced",
    }
)


#: The 2026-08 generation's handshake events, handled by the ``extensions`` plugin (like
#: ``module:authenticate`` / ``module:announce``, they are not "sent" to anyone).
HANDSHAKE_EVENT_TYPES = frozenset(
    {"peer:authenticate", "extension:authenticate", "extension:announce", "extension:module:announce"}
)


def is_server_event_type(type: str) -> bool:
    """True for the types only the server sends: :data:`SERVER_EVENT_TYPES` and ``registry:*``."""
    return type in SERVER_EVENT_TYPES or type.startswith("registry:")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON value")


# the stdlib decides what orjson refuses (integers beyond 64 bits, nesting deeper than 1024),
# minus NaN/Infinity, which no strict JSON parser reads
_decoder = json.JSONDecoder(parse_constant=_refuse_constant)

_fast_loads: Callable[[str], Any]
_FastError: type[Exception]
_fast_dumps: Callable[..., bytes] | None
_FAST_OPTS = 0
try:  # orjson parses a frame ~2.5-3x faster (bench/json_libs.py): +8-14% hub throughput
    from orjson import JSONDecodeError as _FastError
    from orjson import dumps as _fast_dumps
    from orjson import loads as _fast_loads

    # what orjson would serialize where the stdlib refuses (dataclasses, datetimes) or writes
    # differently (str/int/dict/list subclasses, e.g. enums) goes to the stdlib instead
    from orjson import OPT_PASSTHROUGH_DATACLASS, OPT_PASSTHROUGH_DATETIME, OPT_PASSTHROUGH_SUBCLASS

    _FAST_OPTS = OPT_PASSTHROUGH_DATACLASS | OPT_PASSTHROUGH_DATETIME | OPT_PASSTHROUGH_SUBCLASS
    from orjson import Fragment as _Fragment
except ImportError:  # pragma: no cover - a platform without orjson wheels
    _fast_loads = _decoder.decode
    _FastError = json.JSONDecodeError
    _fast_dumps = None
    _Fragment = None


class Encoded:
    """A JSON value already encoded by :func:`dumps_bytes`, embedded as it is wherever it stands
    in a value later given to :func:`dumps_bytes` (or :meth:`Hub.send`/:meth:`Hub.broadcast`):
    a part that many events share is encoded once (the registry listing every sync carries)."""

    __slots__ = ("text", "_fragment")

    def __init__(self, value: Any = None, *, text: bytes | None = None) -> None:
        #: the compact JSON text; ``text=`` must come from :func:`dumps_bytes` (it is trusted)
        self.text: bytes = dumps_bytes(value) if text is None else text
        self._fragment = _Fragment(self.text) if _Fragment is not None else None

    def value(self) -> Any:
        """The value decoded again (what the stdlib encoder writes in its place)."""
        return _decoder.decode(self.text.decode())

    def __len__(self) -> int:
        return len(self.text)

    def __repr__(self) -> str:
        return f"<Encoded {len(self.text)} bytes>"


def _zero(o: Any) -> Any:
    if type(o) is Encoded:
        return 0
    raise TypeError


class _StdEncoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, Encoded):
            return o.value()
        return super().default(o)


# allow_nan=False: the hub never writes NaN/Infinity (a plugin that tries gets an error)
_encoder = _StdEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON text, UTF-8 kept as is (the reference's JSON.stringify style)."""
    return _encoder.encode(value)


def _dumps_fast(value: Any) -> str:
    """:func:`dumps` through orjson when it can (2-4x faster; same text for what the hub decoded:
    it refuses NaN and lone surrogates, so only integers beyond 64 bits take the slow way)."""
    if _fast_dumps is not None:
        try:
            return _fast_dumps(value).decode()
        except TypeError:
            pass
    return _encoder.encode(value)


def dumps_bytes(value: Any) -> bytes:
    """:func:`dumps` as UTF-8 bytes, through orjson when it writes the same JSON (3-10x faster on
    a registry sync, ``python bench/json_libs.py``). orjson writes NaN and Infinity as ``null``
    where the stdlib refuses them, so a text with ``null`` in it is left to the stdlib (which
    raises for them); integers beyond 64 bits, non-string keys and types orjson would serialize
    but the stdlib refuses go to the stdlib too. Floats may be spelled differently (``1e16``
    for ``1e+16``): the same number."""
    if _fast_dumps is not None:
        embedded = False

        def fragment(o: Any) -> Any:
            nonlocal embedded
            if type(o) is Encoded:
                embedded = True
                return o._fragment
            raise TypeError

        try:
            out = _fast_dumps(value, fragment, _FAST_OPTS)
        except TypeError:
            pass
        else:
            # an Encoded part was checked when it was encoded: only the rest is looked at
            if b"null" not in (_fast_dumps(value, _zero, _FAST_OPTS) if embedded else out):
                return out
    return _encoder.encode(value).encode()


def canonical(value: Any) -> bytes:
    """Compact JSON bytes of ``value`` with its keys in their order: two decoded values are the
    same JSON (``true`` is not ``1``, ``1`` is not ``1.0``) exactly when these bytes are equal.
    Used to compare a frame's ``metadata.source`` with the sender's announced identity."""
    if _fast_dumps is not None:
        try:
            return _fast_dumps(value)
        except TypeError:
            pass
    return _encoder.encode(value).encode()


_ID_POOL_BYTES = 16 * 256  # random bytes fetched at once: one getrandom() per 256 ids


class _IdPool:
    __slots__ = ("bytes", "pos")

    def __init__(self) -> None:
        self.bytes = b""
        self.pos = 0


_ids = _IdPool()
if hasattr(os, "register_at_fork"):  # a forked child must not hand out its parent's next ids
    os.register_at_fork(after_in_child=lambda: setattr(_ids, "pos", len(_ids.bytes)))


def new_id() -> str:
    """A fresh random event/instance id (URL-safe, 21 characters like nanoid): 126 bits from the
    OS's cryptographic random source, as ``secrets.token_urlsafe(16)[:21]`` gives, taken from a
    pool filled 4 KiB at a time (a getrandom() call per id was 1-2% of a connection storm)."""
    pool = _ids
    pos = pool.pos
    if pos + 16 > len(pool.bytes):
        pool.bytes, pos = secrets.token_bytes(_ID_POOL_BYTES), 0
    pool.pos = pos + 16
    return urlsafe_b64encode(pool.bytes[pos : pos + 16])[:21].decode()


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

    On the hub, hooks that see a peer's event after authentication and announce handling
    (``airi_event``, ``airi_route``) get it :meth:`attributed`: ``metadata.source`` is the
    sender's announced identity (absent for a peer that has not announced) and ``raw`` the text
    the hub forwards (the sender's frame byte for byte when it already said so).
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

    def attributed(
        self, identity: dict[str, Any] | None, key: bytes | None = None, source_key: bytes | None = None
    ) -> Event:
        """This event as the hub forwards it from a sender whose announced identity is
        ``identity`` (None: the sender has not announced, so it has no identity to claim).

        Returns ``self`` (forwarded byte for byte) when ``metadata.source`` is already exactly
        ``identity`` as JSON (absent for None) and the superjson ``meta``, if any, annotates
        nothing outside ``data``. Otherwise a copy re-encoded once: ``metadata.source`` set to
        ``identity`` (removed for None), ``meta`` confined (:func:`confine_meta`), every other
        field as sent (an absent ``data`` is written as ``{}``: every frame the hub sends has an
        object ``data``). ``key`` is ``canonical(identity)`` when the caller keeps it,
        ``source_key`` ``canonical(metadata.source)`` when the caller computed it already."""
        md = self.metadata
        src = md.get("source") if md is not None else None
        if src is None:
            same = identity is None
        elif identity is None:
            same = False
        else:
            same = (
                src is identity
                or (source_key if source_key is not None else canonical(src)) == (key if key is not None else canonical(identity))
                or same_json(src, identity)  # the same object with its keys in another order
            )
        if "data" not in self.body:
            same = False
        meta = self.meta
        confined = None
        if meta is not None:
            confined = confine_meta(meta)
            same = same and confined is meta
        if same:
            return self
        metadata = dict(md) if md is not None else {}
        if identity is None:
            if metadata.get("source") is not None:  # a null source reads as absent: left as sent
                del metadata["source"]
        else:
            metadata["source"] = identity
        body = dict(self.body)
        body.setdefault("data", self.data)
        if metadata or md is not None:
            body["metadata"] = metadata
        else:
            metadata = None  # type: ignore[assignment]  # nothing to say: keep it absent
        if self.wrapped:
            outer: dict[str, Any] = {"json": body}
            if confined:
                outer["meta"] = confined
            raw = _dumps_fast(outer)
        else:
            raw = _dumps_fast(body)
        return Event(self.type, self.data, metadata, self.route, raw, self.wrapped, body, confined)

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


def same_json(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are the same JSON value, object keys in any order (``true`` is not ``1``,
    ``1`` is not ``1.0``, unlike Python's ``==``)."""
    if a != b:
        return False
    return _strict_equal(a, b)


def _strict_equal(a: Any, b: Any) -> bool:
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is dict:
        return len(a) == len(b) and all(k in b and _strict_equal(v, b[k]) for k, v in a.items())
    if ta is list:
        return len(a) == len(b) and all(map(_strict_equal, a, b))
    return bool(a == b)


def _in_data(path: Any) -> bool:
    # a superjson path ("a.b", dots inside a key escaped as "\\.") whose first key is "data"
    return type(path) is str and (path == "data" or path.startswith("data."))


def _confine_paths(paths: Any) -> Any:
    if type(paths) is not list:
        return None
    kept = [p for p in paths if _in_data(p)]
    return paths if len(kept) == len(paths) else kept


def _confine_refs(refs: Any) -> Any:
    if type(refs) is dict:
        out: dict[str, Any] = {}
        changed = False
        for rep, paths in refs.items():
            kept = _confine_paths(paths)
            if kept is not paths:
                changed = True
            if kept:
                out[rep] = kept
        return out if changed else refs
    if type(refs) is list and 1 <= len(refs) <= 2:
        root = _confine_paths(refs[0])
        other = _confine_refs(refs[1]) if len(refs) == 2 and type(refs[1]) is dict else None
        if root is refs[0] and (len(refs) == 1 or other is refs[1]):
            return refs
        if other:
            return [root or [], other]
        return [root] if root else None
    return None


def confine_meta(meta: Any) -> dict[str, Any] | None:
    """The sender's superjson ``meta`` as the hub forwards it: ``meta`` itself when every path it
    annotates lies inside ``data``, else a copy without the annotations that reach outside it
    (None when nothing is left).

    superjson applies ``meta`` to the whole event on the receiving side: ``values`` converts the
    value at a path (``["undefined"]`` erases it) and ``referentialEqualities`` copies one path's
    object to others, so an unchecked ``meta`` could rewrite ``metadata.source`` or ``type``
    after the hub attributed them. Type annotations inside ``data`` (a ``Date``, a ``Map``...) and
    equalities written into ``data`` pass unchanged; ``v`` is kept; anything else is dropped."""
    if type(meta) is not dict:
        return None
    out: dict[str, Any] = {}
    changed = False
    for k, v in meta.items():
        if k == "values":
            if type(v) is dict:
                kept = {p: t for p, t in v.items() if _in_data(p)}
                if len(kept) != len(v):
                    changed = True
                if kept:
                    out[k] = kept
            else:  # a root annotation ([type, children]) or garbage: the root is the event itself
                changed = True
        elif k == "referentialEqualities":
            refs = _confine_refs(v)
            if refs is not v:
                changed = True
            if refs:
                out[k] = refs
        elif k == "v":
            out[k] = v
        else:
            changed = True
    if not changed:
        return meta
    return out or None


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
        except _FastError as fast:
            if "surrogate" in str(fast):  # a lone UTF-16 surrogate: no strict parser reads it
                raise DecodeError(errors.invalid_json(str(fast))) from None
            # what else orjson refuses, the stdlib decides: integers beyond 64 bits and deep
            # nesting pass, NaN/Infinity do not; its error wording is the hub's usual one
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
        data = {}  # April clients may leave it out; the hub forwards it as {} (see Event.attributed)
    elif type(data) is not dict:
        raise DecodeError(errors.INVALID_EVENT_FORMAT)
    else:
        dests = data.get("destinations", _MISSING)
        if dests is not _MISSING and type(dests) is not list:  # both references crash on some
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
