"""A test client that speaks the 2026-08 ("HEAD") protocol generation the way the HEAD SDK
(``@proj-airi/server-sdk`` 0.11.3) does, as ``../shared/PROTOCOL-HEAD.md`` section 8 describes it.

Written from the protocol description and the wire transcripts, not from the SDK's code.

Default ``handshake="module"`` (what the stage apps use)::

    idle -> connecting -> (authenticating) -> announcing -> ready
                 ^                                 |
                 +--------- reconnecting <---------+   (any failure; "invalid token": failed)

* with a token: ``module:authenticate {token}``, then wait for ``module:authenticated`` with
  ``authenticated === true`` (never ``peer:authenticate``);
* ``extension:module:announce {name, identity: {id, extension: {id: name}}, possibleEvents,
  configSchema (undefined), dependencies: []}``, ready on the first ``registry:modules:sync``
  listing (name, identity.id) or ``extension:module:announced`` about it;
* an ``error`` frame during the handshake fails it: reconnect with backoff 1 s, 2 s, 4 s ... 30 s
  (reset on ready), except ``invalid token`` (state ``failed``, no more attempts); each wait is
  bounded by ``connect_timeout`` (15 s);
* every frame it sends is superjson-wrapped, with the hybrid ``metadata.source`` ``{kind:
  "plugin", id: <module id>, extension: {id}, plugin: {id: <extension id>}}`` and a fresh event id;
* the module identity id is made once per client object and kept across reconnects;
* once ready: a ``transport:connection:heartbeat`` ping (message 🩵) after ``ping_interval`` of
  inbound silence; no inbound frame within ``read_timeout`` after a ping: reconnect; a hub ping
  is answered with a pong (💛) only when ready;
* a malformed incoming frame (binary, not JSON, no string ``type``, ``data`` not an object) is a
  transport error: drop the socket and reconnect;
* :meth:`send` is refused (returns False) until ready.

``handshake="manual"``: ready as soon as the socket opens; the test sends what it wants
(:meth:`send_event`, :meth:`send_raw`), e.g. ``peer:authenticate`` or ``extension:announce``.

Everything a test waits for is bounded; every frame received is kept (parsed) in
:attr:`received`, with the connection number it came on in :attr:`received_conn`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import string
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

HEARTBEAT = "transport:connection:heartbeat"
PING_MESSAGE = "\U0001fa75"  # 🩵
PONG_MESSAGE = "\U0001f49b"  # 💛

STATES = ("idle", "connecting", "authenticating", "announcing", "ready", "reconnecting", "failed", "closed")


# -- pure helpers (unit-tested in tests/test_head_client_unit.py) ---------------------------------
def _base36(n: int) -> str:
    digits = string.digits + string.ascii_lowercase
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def _rand(k: int) -> str:
    return "".join(random.choices(string.digits + string.ascii_lowercase, k=k))


def make_module_id() -> str:
    """``<base36 ms time>-<6 random chars>``, the shape of the SDK's default module identity id."""
    return f"{_base36(int(time.time() * 1000))}-{_rand(6)}"


def make_event_id() -> str:
    return f"{_base36(int(time.time() * 1000))}-{_rand(8)}"


def backoff_delay(attempt: int, base: float = 1.0, cap: float = 30.0) -> float:
    """The delay before reconnect attempt ``attempt`` (1-based): min(base * 2^(n-1), cap)."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    return min(base * 2 ** (attempt - 1), cap)


def unwrap(obj: Any) -> Any:
    """The event inside a superjson document (``{"json": ..., "meta"?}`` with no ``type``)."""
    if isinstance(obj, dict) and "type" not in obj and "json" in obj:
        return obj["json"]
    return obj


def parse_frame(frame: str | bytes) -> dict[str, Any] | None:
    """The event in ``frame``, or None when the HEAD SDK would treat it as malformed: a binary
    frame, unparseable text, no string ``type``, or ``data`` that is not a non-array object."""
    if not isinstance(frame, str):
        return None
    try:
        obj = unwrap(json.loads(frame))
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return None
    if not isinstance(obj.get("data"), dict):
        return None
    return obj


def lists_module(event: dict[str, Any], name: str, module_id: str) -> bool:
    """Does ``event`` make a client announcing (name, module_id) ready? A sync listing it or an
    ``extension:module:announced`` about it, matched on ``name`` and ``identity.id``."""
    def same(entry: Any) -> bool:
        return (
            isinstance(entry, dict)
            and entry.get("name") == name
            and isinstance(entry.get("identity"), dict)
            and entry["identity"].get("id") == module_id
        )

    data = event.get("data")
    if event.get("type") == "registry:modules:sync" and isinstance(data, dict):
        modules = data.get("modules")
        return isinstance(modules, list) and any(same(m) for m in modules)
    if event.get("type") == "extension:module:announced":
        return same(data)
    return False


def hybrid_source(module_id: str, extension: dict[str, Any], labels: dict[str, Any] | None = None) -> dict[str, Any]:
    """The HEAD SDK's default ``metadata.source``: passes both the legacy and the extension-module
    shape tests."""
    src: dict[str, Any] = {"kind": "plugin", "id": module_id, "extension": extension}
    if labels is not None:
        src["labels"] = labels
    src["plugin"] = {"id": extension["id"]}
    return src


def superjson_frame(event: dict[str, Any], meta: dict[str, Any] | None = None) -> str:
    doc: dict[str, Any] = {"json": event}
    if meta:
        doc["meta"] = meta
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class HandshakeError(Exception):
    def __init__(self, message: str, terminal: bool = False) -> None:
        super().__init__(message)
        self.terminal = terminal


class _Reconnect(Exception):
    """The connection is dropped on purpose (malformed frame, read timeout)."""


# -- the client ------------------------------------------------------------------------------
class HeadClient:
    def __init__(
        self,
        url: str,
        name: str,
        *,
        token: str | None = None,
        handshake: str = "module",
        possible_events: list[str] | None = None,
        module_id: str | None = None,
        labels: dict[str, Any] | None = None,
        ping_interval: float | None = None,
        read_timeout: float = 30.0,
        connect_timeout: float = 15.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        auto_reconnect: bool | None = None,
    ) -> None:
        if handshake not in ("module", "manual"):
            raise ValueError(f"unknown handshake {handshake!r}")
        self.url = url
        self.name = name
        self.token = token
        self.handshake = handshake
        self.possible_events = list(possible_events or [])
        self.extension: dict[str, Any] = {"id": name}
        # generated once per client object: reconnects announce the same (name, id)
        self.module_id = module_id or make_module_id()
        self.labels = labels
        self.identity: dict[str, Any] = {"id": self.module_id, "extension": self.extension}
        if labels is not None:
            self.identity["labels"] = labels
        self.source = hybrid_source(self.module_id, self.extension, labels)
        self.read_timeout = read_timeout
        self.ping_interval = ping_interval if ping_interval is not None else min(max(1.0, read_timeout / 2), read_timeout)
        self.connect_timeout = connect_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.auto_reconnect = (handshake == "module") if auto_reconnect is None else auto_reconnect

        self.state = "idle"
        self.states: list[str] = ["idle"]
        self.connections = 0  # sockets opened (a reconnect adds one)
        self.ready_count = 0
        self.attempt = 0  # failed attempts since the last ready
        self.delays: list[float] = []  # the reconnect delays waited
        self.failures: list[str] = []  # why each connection ended / handshake failed
        self.received: list[dict[str, Any]] = []
        self.received_conn: list[int] = []
        self.raw: list[str | bytes] = []
        self.sent: list[dict[str, Any]] = []
        self.sent_frames: list[str] = []
        self.pings_sent = 0
        self.pongs_sent = 0
        self.ws: ClientConnection | None = None
        self._cond: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._fences: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._last_inbound = 0.0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting in the background (like the SDK's autoConnect)."""
        if self._task is None:
            self._cond = asyncio.Condition()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"head-client-{self.name}")

    async def connect(self, timeout: float = 5.0) -> HeadClient:
        """Start and wait (bounded) until ready."""
        self.start()
        await self.wait_ready(timeout)
        return self

    async def close(self) -> None:
        """Close for good (state ``closed``): close the socket without a code, stop the loop."""
        self._closing = True
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 3.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 3.0)
        self._set_state("closed")

    async def drop(self) -> None:
        """Abort the TCP connection without a close handshake (the hub notices only later):
        the client goes on reconnecting."""
        ws = self.ws
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    # -- waiting ----------------------------------------------------------------------------
    async def _notify(self) -> None:
        assert self._cond is not None
        async with self._cond:
            self._cond.notify_all()

    async def _wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        assert self._cond is not None, "start() the client first"

        async def waiter() -> None:
            assert self._cond is not None
            async with self._cond:
                while not pred():
                    await self._cond.wait()

        try:
            await asyncio.wait_for(waiter(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"{self.name}: timed out after {timeout} s waiting for {what}; state {self.state}, "
                f"states {self.states}, failures {self.failures}, received {[e.get('type') for e in self.received]}"
            ) from None

    async def wait_state(self, state: str, timeout: float = 5.0, count: int = 1) -> None:
        """Wait until the client has been in ``state`` ``count`` times (bounded)."""
        await self._wait(lambda: self.states.count(state) >= count, timeout, f"state {state!r} x{count}")

    async def wait_ready(self, timeout: float = 5.0, count: int | None = None) -> None:
        """Wait until ready (``count``: until it has been ready that many times)."""
        if count is None:
            await self._wait(lambda: self.state == "ready", timeout, "ready")
        else:
            await self._wait(lambda: self.ready_count >= count, timeout, f"ready x{count}")

    def mark(self) -> int:
        return len(self.received)

    def of_type(self, type: str | None, start: int = 0) -> list[dict[str, Any]]:
        return [e for e in self.received[start:] if type is None or e.get("type") == type]

    async def wait_for(
        self,
        type: str | None = None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 3.0,
        start: int = 0,
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def find() -> bool:
            for ev in self.received[start:]:
                if (type is None or ev.get("type") == type) and (predicate is None or predicate(ev)):
                    found.append(ev)
                    return True
            return False

        await self._wait(find, timeout, f"a {type or 'event'}")
        return found[0]

    # -- sending ----------------------------------------------------------------------------
    def build(self, type: str, data: Any, *, route: Any = None, source: Any = ..., event_id: str | None = None) -> dict[str, Any]:
        ev: dict[str, Any] = {"type": type, "data": data}
        if route is not None:
            ev["route"] = route
        ev["metadata"] = {"source": self.source if source is ... else source, "event": {"id": event_id or make_event_id()}}
        if source is None:
            del ev["metadata"]["source"]
        return ev

    async def _send_event(self, ev: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        ws = self.ws
        if ws is None:
            raise ConnectionError(f"{self.name}: not connected")
        frame = superjson_frame(ev, meta)
        self.sent.append(ev)
        self.sent_frames.append(frame)
        await ws.send(frame)

    async def send(self, type: str, data: Any = None, *, route: Any = None, meta: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """An application event; refused (None) unless ready, like the SDK's ``send()``.
        ``meta``: a superjson ``meta`` for the frame (e.g. ``{"values": {"data.at": ["Date"]}, "v": 1}``)."""
        if self.state != "ready" or self.ws is None:
            return None
        ev = self.build(type, {} if data is None else data, route=route)
        try:
            await self._send_event(ev, meta)
        except Exception:
            return None
        return ev

    async def send_event(self, type: str, data: Any = None, **kw: Any) -> dict[str, Any]:
        """Any event, whatever the state (for manual-mode and protocol tests)."""
        ev = self.build(type, {} if data is None else data, **kw)
        await self._send_event(ev)
        return ev

    async def send_raw(self, frame: str | bytes) -> None:
        assert self.ws is not None, f"{self.name}: not connected"
        await self.ws.send(frame)

    async def fence(self, timeout: float = 3.0) -> dict[str, Any]:
        """A heartbeat round trip (no source): when it returns, every frame the hub queued for
        this client before the pong has been received. The pong is not recorded."""
        ev = self.build(HEARTBEAT, {"kind": "ping", "message": PING_MESSAGE}, source=None, event_id=f"hfence-{make_event_id()}")
        eid = ev["metadata"]["event"]["id"]
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._fences[eid] = fut
        try:
            assert self.ws is not None, f"{self.name}: not connected"
            await self.ws.send(json.dumps(ev))
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name}: no pong to fence {eid} within {timeout} s") from None
        finally:
            self._fences.pop(eid, None)

    async def expect_silence(self, type: str | None = None, *, after: Any = (), start: int | None = None, timeout: float = 3.0) -> None:
        begin = self.mark() if start is None else start
        for c in after:
            if c is not self:
                await c.fence(timeout)
        await self.fence(timeout)
        got = [e for e in self.of_type(type, begin) if not _is_hub_ping(e)]
        assert not got, f"{self.name}: expected no {type or 'event'}, got {got}"

    # -- internals --------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        assert state in STATES, state
        if self.state != state:
            self.state = state
            self.states.append(state)
        cond = self._cond
        if cond is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._notify())

    async def _recv(self, timeout: float) -> dict[str, Any]:
        """The next inbound event (recorded); raises TimeoutError, _Reconnect on a malformed
        frame, ConnectionError when the socket closes."""
        assert self.ws is not None
        while True:
            try:
                async with asyncio.timeout(timeout):
                    frame = await self.ws.recv()
            except Exception as exc:
                if isinstance(exc, TimeoutError):
                    raise
                raise ConnectionError(f"socket closed: {exc!r}") from None
            self._last_inbound = time.monotonic()
            self.raw.append(frame)
            ev = parse_frame(frame)
            if ev is None:
                raise _Reconnect(f"malformed frame {frame!r:.200}")
            pid = ((ev.get("metadata") or {}).get("event") or {}).get("parentId")
            fence = self._fences.pop(pid, None) if isinstance(pid, str) else None
            if fence is not None:
                if not fence.done():
                    fence.set_result(ev)
                continue
            self.received.append(ev)
            self.received_conn.append(self.connections)
            await self._notify()
            return ev

    async def _on_hub_ping(self, ev: dict[str, Any]) -> None:
        if ev.get("type") == HEARTBEAT and ev["data"].get("kind") == "ping" and self.state == "ready":
            pong = self.build(HEARTBEAT, {"kind": "pong", "message": PONG_MESSAGE, "at": int(time.time() * 1000)})
            self.pongs_sent += 1
            await self._send_event(pong)

    async def _await_frame(self, pred: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Handshake wait: the first frame satisfying ``pred``; an ``error`` fails the handshake."""
        deadline = time.monotonic() + self.connect_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HandshakeError(f"timed out waiting for {what}")
            try:
                ev = await self._recv(left)
            except TimeoutError:
                raise HandshakeError(f"timed out waiting for {what}") from None
            if ev["type"] == "error":
                message = ev["data"].get("message")
                raise HandshakeError(f"error during handshake: {message}", terminal=message == "invalid token")
            if pred(ev):
                return ev

    async def _handshake(self) -> None:
        if self.handshake == "manual":
            return
        if self.token is not None:
            self._set_state("authenticating")
            await self._send_event(self.build("module:authenticate", {"token": self.token}))
            await self._await_frame(
                lambda e: e["type"] == "module:authenticated" and e["data"].get("authenticated") is True,
                "module:authenticated",
            )
        self._set_state("announcing")
        data = {
            "name": self.name,
            "identity": self.identity,
            "possibleEvents": self.possible_events,
            "configSchema": None,
            "dependencies": [],
        }
        meta = {
            "values": {"data.configSchema": ["undefined"]},
            "referentialEqualities": {"data.identity.extension": ["metadata.source.extension"]},
            "v": 1,
        }
        await self._send_event(self.build("extension:module:announce", data), meta)
        await self._await_frame(lambda e: lists_module(e, self.name, self.module_id), "a listing of this module")

    async def _serve(self) -> None:
        """The ready loop: pings after ping_interval of inbound silence, reconnect when nothing
        arrives within read_timeout after a ping."""
        pinged = False
        while True:
            try:
                ev = await self._recv(self.read_timeout if pinged else self.ping_interval)
            except TimeoutError:
                if pinged:
                    raise _Reconnect("read timeout after a ping") from None
                ping = self.build(HEARTBEAT, {"kind": "ping", "message": PING_MESSAGE, "at": int(time.time() * 1000)})
                self.pings_sent += 1
                await self._send_event(ping)
                pinged = True
                continue
            pinged = False
            await self._on_hub_ping(ev)

    async def _run(self) -> None:
        while not self._closing:
            self._set_state("connecting")
            self.connections += 1
            try:
                self.ws = await asyncio.wait_for(
                    connect(self.url, max_size=None, compression=None, close_timeout=1), self.connect_timeout
                )
                await self._handshake()
                self.attempt = 0
                self.ready_count += 1
                self._set_state("ready")
                await self._serve()
            except asyncio.CancelledError:
                raise
            except HandshakeError as exc:
                self.failures.append(str(exc))
                if exc.terminal:
                    await self._drop_socket()
                    self._set_state("failed")
                    return
            except (_Reconnect, ConnectionError, OSError, asyncio.TimeoutError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            await self._drop_socket()
            if self._closing or not self.auto_reconnect:
                self._set_state("closed")
                return
            self.attempt += 1
            self._set_state("reconnecting")
            delay = backoff_delay(self.attempt, self.backoff_base, self.backoff_cap)
            self.delays.append(delay)
            await asyncio.sleep(delay)

    async def _drop_socket(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        for fut in self._fences.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"{self.name}: connection closed during a fence"))
        self._fences.clear()


def _is_hub_ping(ev: dict[str, Any]) -> bool:
    return ev.get("type") == HEARTBEAT and isinstance(ev.get("data"), dict) and ev["data"].get("kind") == "ping"
