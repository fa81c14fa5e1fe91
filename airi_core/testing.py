"""Test helpers for the hub and for plugin authors (registered as the ``airi`` pytest plugin).

Fixtures (async: they need ``pytest-asyncio``, in strict or auto mode)::

    async def test_my_plugin(airi_hub_factory, airi_connect):
        hub = await airi_hub_factory({"plugins": {"my-plugin": {"drop_types": ["x"]}}},
                                     extra_plugins=[("my-plugin", MyPlugin)])
        a = await airi_connect(hub, name="a")
        b = await airi_connect(hub, name="b")
        start = b.mark()
        await a.send("x", {})
        await b.expect_silence("x", after=[a], start=start)

:class:`HubClient` is a tiny raw-protocol client: it unwraps superjson frames and keeps every
received event so tests can wait for a type or assert that nothing arrived.

Nothing here sleeps to prove that something did *not* happen. The hub handles each peer's frames
in order and writes what it routes without waiting, so a heartbeat round trip is a fence
(:meth:`HubClient.fence`): once the pong to a ping arrives, the hub has handled every frame the
peer sent before the ping, and every event it queued for that peer before the pong has been
received. :func:`connect_client` ends with one, so the connect-time events are in
:attr:`HubClient.received` before the test takes its first :meth:`HubClient.mark`;
:meth:`HubClient.expect_silence` fences the senders and then the receiver.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from .server.config import Settings
from .server.kernel import Hub

try:  # strict mode needs async fixtures declared through pytest-asyncio; never a hard dependency
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - exercised by tests/test_testing_toolkit.py in a subprocess
    _async_fixture = pytest.fixture  # type: ignore[assignment]

__all__ = [
    "HEARTBEAT",
    "FENCE_MESSAGE",
    "HubClient",
    "start_hub",
    "connect_client",
    "wait_until",
    "airi_hub_factory",
    "airi_hub",
    "airi_connect",
]

#: The event type of heartbeats (pings and pongs).
HEARTBEAT = "transport:connection:heartbeat"
#: ``data.message`` of the pings :meth:`HubClient.fence` sends.
FENCE_MESSAGE = "\U0001fa75"

_ids = itertools.count(1)


async def start_hub(settings: Settings | dict[str, Any] | None = None, **kwargs: Any) -> Hub:
    """Start a hub on 127.0.0.1 and a free port; stop it with ``await hub.shutdown()``."""
    if settings is None:
        settings = Settings()
    elif isinstance(settings, dict):
        settings = Settings.model_validate(settings)
    hub = Hub(settings, **kwargs)
    await hub.start(host="127.0.0.1", port=0)
    return hub


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 3.0, what: str = "condition", every: float = 0.01
) -> float:
    """Poll ``predicate`` until it is true and return how long that took; fail with an
    AssertionError naming ``what`` after ``timeout`` seconds. For state that no event announces
    (a counter, a process exit); to wait for an event use :meth:`HubClient.wait_for`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)
    return loop.time() - start


def _parent_id(obj: Any) -> Any:
    if not isinstance(obj, dict):
        return None
    md = obj.get("metadata")
    ev = md.get("event") if isinstance(md, dict) else None
    return ev.get("parentId") if isinstance(ev, dict) else None


class HubClient:
    """A raw AIRI protocol client for tests.

    Every event the hub sends is appended to :attr:`received` (and its frame to :attr:`raw`, at
    the same index), except the answers to this client's own :meth:`fence` pings: those are
    consumed by the fence, so a fence never shows up in what a test inspects.
    """

    def __init__(self, ws: ClientConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.identity: dict[str, Any] = {"id": f"{name}-instance", "kind": "plugin", "plugin": {"id": name}}
        self.received: list[dict[str, Any]] = []
        self.raw: list[str | bytes] = []
        self._cond = asyncio.Condition()
        self._fences: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                obj = json.loads(frame)
                if isinstance(obj, dict) and "type" not in obj and "json" in obj:
                    obj = obj["json"]
                pid = _parent_id(obj) if self._fences else None
                fence = self._fences.pop(pid, None) if isinstance(pid, str) else None
                if fence is not None:
                    if not fence.done():
                        fence.set_result(obj)
                    continue
                async with self._cond:
                    self.raw.append(frame)
                    self.received.append(obj)
                    self._cond.notify_all()
        except Exception:
            pass
        finally:
            for fence in self._fences.values():
                if not fence.done():
                    fence.set_exception(ConnectionError(f"{self.name}: connection closed during a fence"))
            self._fences.clear()
            async with self._cond:
                self._cond.notify_all()

    @staticmethod
    def event(type: str, data: Any = None, *, route: Any = None, metadata: Any = None, event_id: str | None = None) -> dict[str, Any]:
        ev: dict[str, Any] = {"type": type, "data": {} if data is None else data}
        ev["metadata"] = metadata if metadata is not None else {"event": {"id": event_id or f"evt-{next(_ids)}"}}
        if route is not None:
            ev["route"] = route
        return ev

    async def send(self, type: str, data: Any = None, *, wrap: bool = False, **kw: Any) -> dict[str, Any]:
        """Send an event (plain JSON, or superjson-wrapped with ``wrap=True``); returns it."""
        ev = self.event(type, data, **kw)
        if "metadata" not in kw and self.identity:
            ev["metadata"]["source"] = self.identity
        await self.ws.send(json.dumps({"json": ev} if wrap else ev))
        return ev

    async def send_raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def fence(self, timeout: float = 3.0) -> dict[str, Any]:
        """A heartbeat round trip: send a ``transport:connection:heartbeat`` ping and wait for the
        pong whose ``metadata.event.parentId`` is the ping's id; returns the pong.

        When it returns, the hub has handled every frame this client sent before (and queued
        whatever it routes from them), and every event the hub queued for this client before the
        pong is in :attr:`received`. The pong itself is not recorded. Works whether or not this
        client is authenticated (the hub answers pings before authentication too)."""
        # no metadata.source: a fence must not claim an identity for a peer that has not announced
        ev = self.event(HEARTBEAT, {"kind": "ping", "message": FENCE_MESSAGE}, event_id=f"fence-{next(_ids)}")
        eid = ev["metadata"]["event"]["id"]
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._fences[eid] = fut
        try:
            if self._reader.done():
                raise ConnectionError(f"{self.name}: connection closed, cannot fence")
            await self.ws.send(json.dumps(ev))
            reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name}: no answer to the fence ping {eid} within {timeout}s") from None
        finally:
            self._fences.pop(eid, None)
        assert reply.get("type") == HEARTBEAT and (reply.get("data") or {}).get("kind") == "pong", (
            f"{self.name}: expected a pong to the fence ping {eid}, got {reply}"
        )
        return reply

    async def wait_for(self, type: str | None = None, predicate: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 3.0, start: int = 0) -> dict[str, Any]:
        """The first received event (from index ``start``) of ``type`` matching ``predicate``."""
        def find() -> dict[str, Any] | None:
            for ev in self.received[start:]:
                if (type is None or ev.get("type") == type) and (predicate is None or predicate(ev)):
                    return ev
            return None

        async def waiter() -> dict[str, Any]:
            async with self._cond:
                while True:
                    found = find()
                    if found is not None:
                        return found
                    if self._reader.done():
                        raise ConnectionError(f"{self.name}: connection closed while waiting for {type}")
                    await self._cond.wait()

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except asyncio.TimeoutError:
            seen = [e.get("type") for e in self.received[start:]]
            raise AssertionError(f"{self.name}: no {type or 'event'} within {timeout}s; got {seen}") from None

    async def next(self, type: str | None = None, timeout: float = 3.0, **kw: Any) -> dict[str, Any]:
        """Wait for an event that arrives from now on."""
        return await self.wait_for(type, start=len(self.received), timeout=timeout, **kw)

    def mark(self) -> int:
        """An index into :attr:`received`; pass it as ``start`` to only look at later events."""
        return len(self.received)

    def of_type(self, type: str | None, start: int = 0) -> list[dict[str, Any]]:
        """The received events (from index ``start``) of ``type`` (every event for None)."""
        return [e for e in self.received[start:] if type is None or e.get("type") == type]

    def error_messages(self, start: int = 0) -> list[Any]:
        """``data.message`` of every ``error`` received from index ``start``."""
        return [(e.get("data") or {}).get("message") for e in self.of_type("error", start)]

    async def expect_silence(
        self,
        type: str | None = None,
        *,
        after: Iterable[Any] = (),
        start: int | None = None,
        timeout: float = 3.0,
    ) -> None:
        """Assert that no event (of ``type``) arrived since ``start``, without sleeping.

        First every client in ``after`` (the senders whose events must not arrive here; anything
        with an async ``fence()``) does a heartbeat round trip: its pong proves the hub has
        handled its earlier frames and queued whatever it routes from them. Then this client does
        one: its pong comes after anything queued for it before. Events the hub produces on a
        timer (debounced registry syncs, liveness checks) are not covered by the fence.

        ``start`` defaults to :meth:`mark` at call time; when the silence concerns events sent
        before the call, take the mark *before* sending and pass it. ``timeout`` bounds each
        round trip.
        """
        begin = self.mark() if start is None else start
        senders = [c for c in dict.fromkeys(after) if c is not self]
        if senders:
            await asyncio.gather(*(c.fence(timeout) for c in senders))
        await self.fence(timeout)
        got = self.of_type(type, begin)
        assert not got, f"{self.name}: expected no {type or 'event'}, got {got}"

    async def request(self, type: str, data: Any = None, reply: str | None = None, timeout: float = 3.0, **kw: Any) -> dict[str, Any]:
        """Send an event and wait for the reply whose parentId is its id."""
        start = self.mark()
        ev = await self.send(type, data, **kw)
        eid = ev["metadata"]["event"]["id"]
        return await self.wait_for(reply, lambda e: _parent_id(e) == eid, timeout, start)

    async def authenticate(self, token: str) -> dict[str, Any]:
        return await self.request("module:authenticate", {"token": token})

    async def announce(self, name: str | None = None, index: int | None = None, identity: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """Announce and wait for the registry sync that lists this module."""
        name = name or self.name
        if identity is not None:
            self.identity = identity
        data: dict[str, Any] = {"name": name, "identity": self.identity, **extra}
        if index is not None:
            data["index"] = index
        start = self.mark()
        await self.send("module:announce", data)
        return await self.wait_for(
            "registry:modules:sync",
            lambda e: any(m.get("name") == name and m.get("index") == index for m in e["data"]["modules"]),
            start=start,
        )

    async def wait_closed(self, timeout: float = 3.0) -> tuple[int | None, str | None]:
        """Wait (bounded) until the socket is closed; returns ``(close_code, close_reason)``."""
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code, self.ws.close_reason

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        try:
            await self._reader
        except (asyncio.CancelledError, Exception):
            pass

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self.ws.close_reason


async def connect_client(
    hub_or_url: Hub | str,
    name: str = "client",
    *,
    token: str | None = None,
    announce: bool = False,
    fence: bool = True,
    **announce_kw: Any,
) -> HubClient:
    """Connect a :class:`HubClient`; authenticate with ``token`` when given (and require
    ``module:authenticated``), announce when ``announce=True`` (``announce_kw`` go to
    :meth:`HubClient.announce`).

    Then, unless ``fence=False`` (for a hub that does not answer heartbeats), a heartbeat round
    trip: the hub queues the connect-time events (``module:authenticated`` and the registry sync
    when it accepts at connect) before it reads the peer's first frame, so afterwards every one
    of them is in :attr:`HubClient.received` and a following :meth:`HubClient.mark` excludes
    them, whether or not the hub has a token."""
    url = hub_or_url.url if isinstance(hub_or_url, Hub) else hub_or_url
    ws = await connect(url, max_size=None, compression=None)
    client = HubClient(ws, name)
    try:
        if token is not None:
            reply = await client.authenticate(token)
            assert reply["type"] == "module:authenticated", reply
        if announce:
            await client.announce(**announce_kw)
        if fence:
            await client.fence()
    except BaseException:
        await client.close()
        raise
    return client


@_async_fixture
async def airi_hub_factory() -> AsyncIterator[Callable[..., Any]]:
    """``await airi_hub_factory(settings=None, **Hub kwargs)`` starts a hub (e.g. with
    ``extra_plugins=[("name", Plugin)]``) on a free loopback port; all stop at teardown."""
    hubs: list[Hub] = []

    async def make(settings: Settings | dict[str, Any] | None = None, **kwargs: Any) -> Hub:
        hub = await start_hub(settings, **kwargs)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.shutdown()


@_async_fixture
async def airi_hub(airi_hub_factory: Callable[..., Any]) -> Hub:
    """A hub on built-in defaults (no token) on a free loopback port."""
    return await airi_hub_factory()  # type: ignore[no-any-return]


@_async_fixture
async def airi_connect() -> AsyncIterator[Callable[..., Any]]:
    """``await airi_connect(hub_or_url, name, token=None, announce=False, **announce_kw)`` ->
    :class:`HubClient` (see :func:`connect_client`: its connect-time events have arrived);
    every client is closed at teardown."""
    clients: list[HubClient] = []

    async def make(hub_or_url: Hub | str, name: str = "client", **kw: Any) -> HubClient:
        c = await connect_client(hub_or_url, name, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()
