"""Test helpers for the hub and for plugin authors (registered as the ``airi`` pytest plugin).

Fixtures (need ``pytest-asyncio``)::

    async def test_my_plugin(airi_hub_factory, airi_connect):
        hub = await airi_hub_factory({"plugins": {"my-plugin": {"drop_types": ["x"]}}},
                                     extra_plugins=[("my-plugin", MyPlugin)])
        a = await airi_connect(hub, name="a")
        b = await airi_connect(hub, name="b")
        await a.send("x", {})
        await b.expect_silence()

:class:`HubClient` is a tiny raw-protocol client: it unwraps superjson frames and keeps every
received event so tests can wait for a type or assert that nothing arrived.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from .server.config import Settings
from .server.kernel import Hub

__all__ = ["HubClient", "start_hub", "wait_until", "airi_hub_factory", "airi_hub", "airi_connect"]

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


class HubClient:
    """A raw AIRI protocol client for tests."""

    def __init__(self, ws: ClientConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.identity: dict[str, Any] = {"id": f"{name}-instance", "kind": "plugin", "plugin": {"id": name}}
        self.received: list[dict[str, Any]] = []
        self.raw: list[str | bytes] = []
        self._cond = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.raw.append(frame)
                obj = json.loads(frame)
                if isinstance(obj, dict) and "type" not in obj and "json" in obj:
                    obj = obj["json"]
                async with self._cond:
                    self.received.append(obj)
                    self._cond.notify_all()
        except Exception:
            pass
        finally:
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

    async def expect_silence(self, type: str | None = None, within: float = 0.3, start: int | None = None) -> None:
        """Assert that no event (of ``type``) arrives within ``within`` seconds."""
        begin = self.mark() if start is None else start
        await asyncio.sleep(within)
        got = [e for e in self.received[begin:] if type is None or e.get("type") == type]
        assert not got, f"{self.name}: expected no {type or 'event'}, got {got}"

    async def request(self, type: str, data: Any = None, reply: str | None = None, timeout: float = 3.0, **kw: Any) -> dict[str, Any]:
        """Send an event and wait for the reply whose parentId is its id."""
        start = self.mark()
        ev = await self.send(type, data, **kw)
        eid = ev["metadata"]["event"]["id"]
        return await self.wait_for(reply, lambda e: e.get("metadata", {}).get("event", {}).get("parentId") == eid, timeout, start)

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


async def connect_client(hub_or_url: Hub | str, name: str = "client", *, token: str | None = None, announce: bool = False, **announce_kw: Any) -> HubClient:
    url = hub_or_url.url if isinstance(hub_or_url, Hub) else hub_or_url
    ws = await connect(url, max_size=None, compression=None)
    client = HubClient(ws, name)
    if token is not None:
        reply = await client.authenticate(token)
        assert reply["type"] == "module:authenticated", reply
    if announce:
        await client.announce(**announce_kw)
    return client


@pytest.fixture
async def airi_hub_factory() -> AsyncIterator[Callable[..., Any]]:
    """``await airi_hub_factory(settings=None, **Hub kwargs)`` starts a hub; all stop at teardown."""
    hubs: list[Hub] = []

    async def make(settings: Settings | dict[str, Any] | None = None, **kwargs: Any) -> Hub:
        hub = await start_hub(settings, **kwargs)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.shutdown()


@pytest.fixture
async def airi_hub(airi_hub_factory: Callable[..., Any]) -> Hub:
    """A hub on built-in defaults (no token) on a free loopback port."""
    return await airi_hub_factory()  # type: ignore[no-any-return]


@pytest.fixture
async def airi_connect() -> AsyncIterator[Callable[..., Any]]:
    """``await airi_connect(hub_or_url, name, token=None, announce=False)`` -> :class:`HubClient`."""
    clients: list[HubClient] = []

    async def make(hub_or_url: Hub | str, name: str = "client", **kw: Any) -> HubClient:
        c = await connect_client(hub_or_url, name, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()
