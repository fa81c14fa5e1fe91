"""The HEAD test client itself (tests/head_client.py): its pure logic, and its handshake,
reconnect and heartbeat rules against a scripted stand-in hub (a few lines of websockets server
here, so a client bug cannot hide behind a hub bug). PROTOCOL-HEAD.md sections 0, 4.1, 8."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from .head_client import (
    HeadClient,
    backoff_delay,
    hybrid_source,
    lists_module,
    make_event_id,
    make_module_id,
    parse_frame,
    unwrap,
)


# -- pure logic ----------------------------------------------------------------------------------
def test_backoff_doubles_from_one_second_and_caps_at_thirty():
    assert [backoff_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(3, base=0.05, cap=1) == 0.2
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_ids_have_the_sdk_shape_and_differ():
    ids = {make_module_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"[0-9a-z]+-[0-9a-z]{6}", i) for i in ids)
    assert re.fullmatch(r"[0-9a-z]+-[0-9a-z]{8}", make_event_id())


@pytest.mark.parametrize(
    "frame, ok",
    [
        ('{"json":{"type":"x","data":{}}}', True),
        ('{"type":"x","data":{"a":1}}', True),
        (b'{"type":"x","data":{}}', False),  # binary
        ("not json", False),
        ('{"json":{"data":{}}}', False),  # no type
        ('{"type":5,"data":{}}', False),
        ('{"type":"x"}', False),  # no data
        ('{"type":"x","data":[]}', False),
        ('{"type":"x","data":null}', False),
        ('{"type":"x","data":"s"}', False),
        ("[1,2]", False),
    ],
)
def test_malformed_frames_are_recognised(frame, ok):
    assert (parse_frame(frame) is not None) is ok


def test_unwrap_only_superjson_documents():
    assert unwrap({"json": {"type": "a"}}) == {"type": "a"}
    assert unwrap({"type": "a", "json": 1}) == {"type": "a", "json": 1}


def test_ready_matching_needs_name_and_identity_id():
    sync = lambda mods: {"type": "registry:modules:sync", "data": {"modules": mods}}  # noqa: E731
    assert lists_module(sync([{"name": "n", "identity": {"id": "i"}}]), "n", "i")
    assert not lists_module(sync([{"name": "n", "identity": {"id": "other"}}]), "n", "i")
    assert not lists_module(sync([{"name": "m", "identity": {"id": "i"}}]), "n", "i")
    assert not lists_module(sync([]), "n", "i")
    ann = {"type": "extension:module:announced", "data": {"name": "n", "identity": {"id": "i", "extension": {"id": "n"}}}}
    assert lists_module(ann, "n", "i")
    assert not lists_module({**ann, "type": "module:announced"}, "n", "i")


def test_hybrid_source_passes_both_shape_tests():
    src = hybrid_source("m-1", {"id": "proj-airi:stage-web"})
    assert src == {"kind": "plugin", "id": "m-1", "extension": {"id": "proj-airi:stage-web"}, "plugin": {"id": "proj-airi:stage-web"}}


def test_client_identity_is_made_once_and_send_is_refused_before_ready():
    c = HeadClient("ws://127.0.0.1:9/ws", "proj-airi:stage-web")
    assert c.identity == {"id": c.module_id, "extension": {"id": "proj-airi:stage-web"}}
    assert c.source["id"] == c.module_id and c.state == "idle"
    assert asyncio.run(c.send("x", {})) is None
    assert c.ping_interval == 15.0  # SDK default: readTimeout 30 s, interval max(1 s, readTimeout/2)


# -- against a scripted stand-in hub ----------------------------------------------------------------
Script = Callable[[ServerConnection, int, "Stub"], Awaitable[None]]


class Stub:
    """A stand-in hub: ``script(ws, n, stub)`` runs for the n-th connection (1-based); frames
    received are kept per connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.frames: dict[int, list[dict[str, Any]]] = {}
        self.count = 0
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        self.count += 1
        n = self.count
        self.frames[n] = []
        with contextlib.suppress(Exception):
            await self.script(ws, n, self)

    async def recv(self, ws: ServerConnection, n: int, timeout: float = 3.0) -> dict[str, Any]:
        ev = unwrap(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
        self.frames[n].append(ev)
        return ev


def reply(type: str, data: Any, parent: str | None = None) -> str:
    md: dict[str, Any] = {"event": {"id": make_event_id()}, "source": {"kind": "plugin", "plugin": {"id": "stub"}, "id": "stub"}}
    if parent:
        md["event"]["parentId"] = parent
    return json.dumps({"json": {"type": type, "data": data, "metadata": md}})


def listing(ev: dict[str, Any]) -> str:
    return reply("registry:modules:sync", {"modules": [{"name": ev["data"]["name"], "identity": ev["data"]["identity"]}]})


@contextlib.asynccontextmanager
async def stub_hub(script: Script) -> AsyncIterator[Stub]:
    stub = Stub(script)
    async with serve(stub.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        stub.url = f"ws://127.0.0.1:{port}/ws"
        yield stub


@contextlib.asynccontextmanager
async def client(stub: Stub, name: str = "proj-airi:stage-web", **kw: Any) -> AsyncIterator[HeadClient]:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("connect_timeout", 2.0)
    c = HeadClient(stub.url, name, **kw)
    c.start()
    try:
        yield c
    finally:
        await c.close()


async def idle(ws: ServerConnection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.wait_closed(), 5)


async def test_token_handshake_order_and_frame_shape():
    async def script(ws, n, stub):
        auth = await stub.recv(ws, n)
        await ws.send(reply("module:authenticated", {"authenticated": True}, auth["metadata"]["event"]["id"]))
        ann = await stub.recv(ws, n)
        await ws.send(listing(ann))
        await idle(ws)

    async with stub_hub(script) as stub, client(stub, token="s3cret", possible_events=["a:b"]) as c:
        await c.wait_ready(3)
        assert c.states[:5] == ["idle", "connecting", "authenticating", "announcing", "ready"]
        auth, ann = stub.frames[1]
        assert auth["type"] == "module:authenticate" and auth["data"] == {"token": "s3cret"}
        assert ann["type"] == "extension:module:announce"
        assert ann["data"] == {
            "name": "proj-airi:stage-web",
            "identity": {"id": c.module_id, "extension": {"id": "proj-airi:stage-web"}},
            "possibleEvents": ["a:b"], "configSchema": None, "dependencies": [],
        }
        for ev in (auth, ann):
            assert ev["metadata"]["source"] == c.source and ev["metadata"]["event"]["id"]
        assert json.loads(c.sent_frames[1])["meta"]["values"] == {"data.configSchema": ["undefined"]}


async def test_no_token_announces_first_and_a_listing_of_another_id_is_not_ready():
    async def script(ws, n, stub):
        await ws.send(reply("module:authenticated", {"authenticated": True}))
        await ws.send(reply("registry:modules:sync", {"modules": []}))
        ann = await stub.recv(ws, n)
        other = {**ann["data"]["identity"], "id": "someone-else"}
        await ws.send(reply("registry:modules:sync", {"modules": [{"name": ann["data"]["name"], "identity": other}]}))
        await ws.send(reply("extension:module:announced", ann["data"], ann["metadata"]["event"]["id"]))
        await idle(ws)

    async with stub_hub(script) as stub, client(stub) as c:
        await c.wait_ready(3)
        assert "authenticating" not in c.states
        assert stub.frames[1][0]["type"] == "extension:module:announce"
        assert c.received[-1]["type"] == "extension:module:announced"  # what made it ready


async def test_invalid_token_is_terminal():
    async def script(ws, n, stub):
        auth = await stub.recv(ws, n)
        await ws.send(reply("error", {"message": "invalid token"}, auth["metadata"]["event"]["id"]))
        await idle(ws)

    async with stub_hub(script) as stub, client(stub, token="wrong") as c:
        await c.wait_state("failed", 3)
        assert stub.count == 1 and c.connections == 1 and c.state == "failed"


async def test_other_handshake_error_reconnects_with_backoff_and_same_identity():
    async def script(ws, n, stub):
        ann = await stub.recv(ws, n)
        if n < 3:
            await ws.send(reply("error", {"message": "must authenticate before announcing"}))
        else:
            await ws.send(listing(ann))
        await idle(ws)

    async with stub_hub(script) as stub, client(stub) as c:
        await c.wait_ready(5)
        assert c.connections == 3 and stub.count == 3
        assert c.delays == [0.01, 0.02]  # base * 2^(n-1)
        ids = {stub.frames[n][0]["data"]["identity"]["id"] for n in (1, 2, 3)}
        assert ids == {c.module_id}
        assert c.attempt == 0  # reset on ready


async def test_handshake_timeout_reconnects():
    async def script(ws, n, stub):
        ann = await stub.recv(ws, n)
        if n >= 2:
            await ws.send(listing(ann))
        await idle(ws)

    async with stub_hub(script) as stub, client(stub, connect_timeout=0.3) as c:
        await c.wait_ready(5)
        assert c.connections == 2 and "timed out" in c.failures[0]


@pytest.mark.parametrize("bad", [b"\x00binary", '{"json":{"data":{}}}', '{"json":{"type":"x","data":[1]}}', "garbage"])
async def test_malformed_frame_after_ready_drops_and_reconnects(bad):
    async def script(ws, n, stub):
        ann = await stub.recv(ws, n)
        await ws.send(listing(ann))
        if n == 1:
            await ws.send(bad)
        await idle(ws)

    async with stub_hub(script) as stub, client(stub) as c:
        await c.wait_ready(5, count=2)
        assert c.connections == 2 and "malformed" in c.failures[0]


async def test_pings_only_after_silence_and_pongs_only_when_ready():
    got_ping: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def script(ws, n, stub):
        # a hub ping during the handshake is not answered
        await ws.send(reply("transport:connection:heartbeat", {"kind": "ping", "message": "hub", "at": 1}))
        ann = await stub.recv(ws, n)
        await ws.send(listing(ann))
        await ws.send(reply("transport:connection:heartbeat", {"kind": "ping", "message": "hub", "at": 2}))
        pong = await stub.recv(ws, n)
        ping = await stub.recv(ws, n)
        got_ping.set_result({"pong": pong, "ping": ping})
        await ws.send(reply("transport:connection:heartbeat", {"kind": "pong", "message": "x", "at": 3}, ping["metadata"]["event"]["id"]))
        await idle(ws)

    async with stub_hub(script) as stub, client(stub, ping_interval=0.2, read_timeout=2.0) as c:
        got = await asyncio.wait_for(got_ping, 5)
        assert got["pong"]["type"] == "transport:connection:heartbeat"
        assert got["pong"]["data"]["kind"] == "pong" and got["pong"]["data"]["message"] == "\U0001f49b"
        assert got["ping"]["data"]["kind"] == "ping" and got["ping"]["data"]["message"] == "\U0001fa75"
        assert isinstance(got["ping"]["data"]["at"], int)
        assert c.pongs_sent == 1 and [e["type"] for e in stub.frames[1]][0] == "extension:module:announce"


async def test_read_timeout_after_ping_reconnects():
    async def script(ws, n, stub):
        ann = await stub.recv(ws, n)
        await ws.send(listing(ann))
        await idle(ws)  # never answers the ping

    async with stub_hub(script) as stub, client(stub, ping_interval=0.1, read_timeout=0.2) as c:
        await c.wait_ready(5, count=2)
        assert "read timeout" in c.failures[0] and c.pings_sent >= 1


async def test_manual_mode_is_ready_on_open_and_sends_what_it_is_told():
    async def script(ws, n, stub):
        ev = await stub.recv(ws, n)
        await ws.send(reply("peer:authenticated", {"authenticated": True, "peerId": ev["data"]["peerId"]}, ev["metadata"]["event"]["id"]))
        await idle(ws)

    async with stub_hub(script) as stub, client(stub, handshake="manual") as c:
        await c.wait_ready(3)
        assert c.auto_reconnect is False
        sent = await c.send_event("peer:authenticate", {"peerId": "alias"})
        got = await c.wait_for("peer:authenticated")
        assert got["metadata"]["event"]["parentId"] == sent["metadata"]["event"]["id"]
