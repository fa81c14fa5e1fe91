"""The Python client (``airi_core.client``) against the real hub over real sockets.

Every wait is bounded; every client is closed by its test (the reconnect loop is unlimited by
default, so a test that leaves one open would leave a task retrying forever).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from websockets.asyncio.server import serve

from airi_core import Reject, errors, hookimpl
from airi_core.client import (
    AuthenticationError,
    Client,
    ClientClosedError,
    ClientState,
    ConnectionLostError,
    HandlerError,
    NoConsumerError,
    ProtocolError,
    ServerError,
    StateChange,
    TokenRequiredError,
    backoff_delay,
    classify_error,
)
from airi_core.client.handlers import type_matcher
from airi_core.protocol.events import Event, decode_frame
from airi_core.protocol.identity import SERVER_PLUGIN_ID
from airi_core.protocol.models import ModuleIdentity, RegistrySync, data_as, protocol_data
from airi_core.server.config import Settings
from airi_core.server.kernel import Hub
from airi_core.testing import start_hub, wait_until
from ._hubproc import free_port

TOKEN = "client-test-t0ken"
FAST = dict(initial_delay=0.02, max_delay=0.2, heartbeat_interval=0.5, read_timeout=5.0, handshake_timeout=3.0)


class StateLog:
    """Collects every state change of a client (via ``on_state``)."""

    def __init__(self) -> None:
        self.changes: list[StateChange] = []

    def __call__(self, change: StateChange) -> None:
        self.changes.append(change)

    @property
    def states(self) -> list[str]:
        return [c.state.value for c in self.changes]


class ErrorLog:
    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def __call__(self, err: BaseException) -> None:
        self.errors.append(err)


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Client]]:
    """``make(url, name=..., **kw)`` -> Client; every client is closed at teardown."""
    made: list[Client] = []

    def make(url: str, **kw: Any) -> Client:
        c = Client(url, **{**FAST, **kw})
        made.append(c)
        return c

    yield make
    for c in made:
        await asyncio.wait_for(c.close(), 5)


@pytest.fixture
def raw(airi_connect: Callable[..., Any]) -> Callable[..., Any]:
    """Raw protocol clients (airi_core.testing's airi_connect), closed at teardown."""
    return airi_connect


def token_settings(token: str | None, **more: Any) -> dict[str, Any]:
    s: dict[str, Any] = dict(more)
    if token:
        s.setdefault("auth", {})["token"] = token
    return s


# -- ready semantics -------------------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
async def test_ready_means_authenticated_and_announced(airi_hub_factory: Any, clients: Any, raw: Any, token: str | None) -> None:
    hub = await airi_hub_factory(token_settings(token))
    watcher = await raw(hub, "watcher", token=token, announce=True)
    mark = watcher.mark()
    states = StateLog()
    c = clients(hub.url, name="ready-mod", token=token, possible_events=["test:out"], on_state=states,
                identity={"id": "ready-1", "kind": "plugin", "plugin": {"id": "ready-plugin", "version": "1.2.3", "labels": {"team": "py"}}})
    assert c.state is None
    async with asyncio.timeout(5):
        await c.ready()
    assert c.state is ClientState.READY and c.is_ready
    assert states.states == ["connecting", "authenticating", "announcing", "ready"]
    # at the moment ready() returns, the hub has it registered with exactly our identity
    peer = hub.registry.find_module("ready-mod")
    assert peer is not None and peer.authenticated and peer.announced
    assert peer.identity == {"id": "ready-1", "kind": "plugin", "plugin": {"id": "ready-plugin", "version": "1.2.3", "labels": {"team": "py"}}}
    assert peer.labels == {"team": "py"}
    # ... and the client has seen the registry sync listing itself
    assert [(m.name, m.instance_id, m.plugin_id) for m in c.modules if m.name == "ready-mod"] == [("ready-mod", "ready-1", "ready-plugin")]
    # others were told, with possibleEvents in the announce
    ann = await watcher.wait_for("module:announced", start=mark)
    assert ann["data"]["name"] == "ready-mod" and ann["data"]["identity"]["id"] == "ready-1"
    assert hub.stats["errors_sent"] == 0
    assert c.connections == 1
    await c.close()
    assert c.state is ClientState.CLOSED
    assert states.states[-1] == "closed"
    await watcher.wait_for("module:de-announced", lambda e: e["data"]["name"] == "ready-mod", start=mark)
    with pytest.raises(ClientClosedError):
        await c.ready()


async def test_async_with_and_state_iterator(airi_hub: Hub, clients: Any) -> None:
    c = clients(airi_hub.url, name="iter-mod")
    seen: list[str] = []

    async def watch() -> None:
        async for change in c.states():
            seen.append(change.state.value)

    watcher = asyncio.create_task(watch())
    async with asyncio.timeout(5):
        async with c:
            assert c.is_ready
            assert airi_hub.registry.find_module("iter-mod") is not None
        await watcher  # the iterator ends after "closed"
    assert seen == ["connecting", "authenticating", "announcing", "ready", "closed"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "x", "index": -1},
        {"name": "x", "identity": {"id": "i", "kind": "module", "plugin": {"id": "p"}}},
        {"name": "x", "identity": {"id": "i", "kind": "plugin", "plugin": {}}},
        {"name": "x", "identity": {"id": "i", "kind": "plugin", "plugin": {"id": ""}}},
        {"name": "x", "identity": {"id": "i", "kind": "plugin"}},
        {"name": "x", "identity": {"id": 7, "kind": "plugin", "plugin": {"id": "p"}}},
        {"name": "x", "possible_events": [1]},
    ],
    ids=["empty-name", "negative-index", "kind", "no-plugin-id", "empty-plugin-id", "no-plugin", "id-type", "possible-events"],
)
async def test_identity_validated_before_anything_is_sent(airi_hub: Hub, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Client(airi_hub.url, **kwargs)
    await asyncio.sleep(0.05)
    assert airi_hub.stats["connections"] == 0


def test_identity_defaults_and_models() -> None:
    c = Client(name="defaults")
    assert c.identity.kind == "plugin" and c.identity.plugin.id == "defaults" and c.identity.id.startswith("defaults-")
    c2 = Client(name="m", identity={"kind": "plugin", "plugin": {"id": "p"}})  # id generated
    assert c2.identity.id.startswith("m-")
    c3 = Client(name="m", identity=ModuleIdentity(id="i", plugin={"id": "p", "labels": {"a": "b"}}, labels={"c": "d"}))
    assert c3.identity.all_labels == {"a": "b", "c": "d"}
    with pytest.raises(ValueError):
        Client("http://not-a-websocket", name="m")
    with pytest.raises(ValueError):
        Client(name="m", heartbeat_interval=5, read_timeout=5)


# -- handlers, sending, waiting ----------------------------------------------------------------------
async def test_handlers_sync_async_glob_and_failures(airi_hub: Hub, clients: Any, raw: Any) -> None:
    errs = ErrorLog()
    c = clients(airi_hub.url, name="handlers", on_error=errs)
    sync_got: list[Any] = []
    async_got: list[Any] = []
    glob_got: list[str] = []

    @c.on("test:hello")
    def on_hello(ev: Event) -> None:
        sync_got.append((ev.data, ev.source_plugin_id, ev.id))

    @c.on("test:hello")
    async def on_hello_async(ev: Event) -> None:
        await asyncio.sleep(0.01)
        async_got.append(ev.data)

    @c.on("test:*")
    def on_any_test(ev: Event) -> None:
        glob_got.append(ev.type)

    @c.on("test:boom")
    def boom(ev: Event) -> None:
        raise RuntimeError("handler exploded")

    @c.on("test:boom")
    async def boom_async(ev: Event) -> None:
        raise KeyError("async handler exploded")

    async with asyncio.timeout(5):
        await c.ready()
        sender = await raw(airi_hub, "sender", announce=True)
        sent = await sender.send("test:hello", {"n": 1})
        await sender.send("test:boom", {})
        await sender.send("other:type", {})
        await wait_until(lambda: len(async_got) == 1 and len(errs.errors) == 2, what="handlers")
    assert sync_got == [({"n": 1}, "sender", sent["metadata"]["event"]["id"])]
    assert async_got == [{"n": 1}]
    assert glob_got == ["test:hello", "test:boom"]
    assert all(isinstance(e, HandlerError) for e in errs.errors)
    assert sorted(type(e.__cause__).__name__ for e in errs.errors) == ["KeyError", "RuntimeError"]
    # a failing handler does not hurt the client
    assert c.is_ready
    c.off("test:hello", on_hello)
    await sender.send("test:hello", {"n": 2})
    async with asyncio.timeout(3):
        await wait_until(lambda: len(async_got) == 2)
    assert len(sync_got) == 1


async def test_send_routes_to_destinations_as_plain_json(clients: Any, raw: Any) -> None:
    seen: list[tuple[str, str, bool]] = []

    class Recorder:
        @hookimpl
        def airi_event(self, peer: Any, event: Any) -> None:
            seen.append((peer.name, event.type, event.wrapped))

    hub = await start_hub(extra_plugins=[("recorder", Recorder())])
    try:
        a = await raw(hub, "dest-a", announce=True)
        b = await raw(hub, "dest-b", announce=True)
        c = clients(hub.url, name="sender-py")
        c_sj = clients(hub.url, name="sender-sj", wire_format="superjson")
        async with asyncio.timeout(5):
            await c.ready()
            await c_sj.ready()
            eid = await c.send("test:note", {"text": "for a"}, destinations=["module:dest-a"], parent_id="p-1")
            got = await a.wait_for("test:note")
            await c_sj.send("test:wrapped", {"x": 1}, route={"destinations": ["module:dest-b"]})
            got_b = await b.wait_for("test:wrapped")
        assert got["data"] == {"text": "for a"}
        assert got["route"] == {"destinations": ["module:dest-a"]}
        assert got["metadata"]["event"] == {"id": eid, "parentId": "p-1"}
        assert got["metadata"]["source"] == c.identity.wire()
        assert got_b["data"] == {"x": 1}
        await b.expect_silence("test:note")  # a already got it: b's copy, if any, was queued then
        # plain JSON by default; superjson-wrapped on request
        assert ("sender-py", "test:note", False) in seen
        assert ("sender-sj", "test:wrapped", True) in seen
        # a payload that is not JSON is refused locally
        with pytest.raises(TypeError):
            await c.send("test:bad", {"x": object()})
        with pytest.raises(ValidationError):
            await c.send("test:bad", {}, route={"destinations": "not-a-list"})
    finally:
        await hub.shutdown()


@pytest.mark.parametrize("wire", ["superjson", "json"])
async def test_parses_superjson_wrapped_and_plain_frames(airi_hub_factory: Any, clients: Any, raw: Any, wire: str) -> None:
    hub = await airi_hub_factory({"server": {"wire_format": wire}})
    c = clients(hub.url, name="parser")
    async with asyncio.timeout(5):
        await c.ready()
        peer = await raw(hub, "peer", announce=True)
        first = c.wait_for("test:plain")
        await peer.send("test:plain", {"a": 1})
        ev = await first
        assert ev.data == {"a": 1} and ev.wrapped is (wire == "superjson")
        # a superjson frame with meta (a Date), as the JS SDK sends them
        second = c.wait_for("test:dated")
        frame = {"json": {"type": "test:dated", "data": {"when": "2024-05-06T07:08:09.010Z"},
                          "metadata": {"source": peer.identity, "event": {"id": "d-1"}}},
                 "meta": {"values": {"data.when": ["Date"]}, "v": 1}}
        await peer.send_raw(json.dumps(frame))
        ev2 = await second
    assert ev2.data == {"when": "2024-05-06T07:08:09.010Z"} and ev2.id == "d-1"
    if wire == "superjson":
        assert ev2.meta == {"values": {"data.when": ["Date"]}, "v": 1}
    # protocol events are typed
    sync = RegistrySync.model_validate({"modules": [m.wire() for m in c.modules]})
    assert {m.name for m in sync.modules} == {"parser", "peer"}


async def test_wait_for_registered_at_call_and_bounded(airi_hub: Hub, clients: Any, raw: Any) -> None:
    c = clients(airi_hub.url, name="waiter")
    async with asyncio.timeout(5):
        await c.ready()
        peer = await raw(airi_hub, "peer", announce=True)
        fut = c.wait_for("test:*", lambda e: e.data.get("n") == 2)
        await peer.send("test:n", {"n": 1})
        await peer.send("test:n", {"n": 2})
        ev = await fut
        assert ev.data == {"n": 2}
        with pytest.raises(TimeoutError):
            await c.wait_for("test:never", timeout=0.1)


async def test_request_and_reply(airi_hub: Hub, clients: Any) -> None:
    responder = clients(airi_hub.url, name="responder")
    asker = clients(airi_hub.url, name="asker")

    @responder.on("test:question")
    async def answer(ev: Event) -> None:
        await responder.reply(ev, "test:answer", {"answer": ev.data["q"] * 2})

    async with asyncio.timeout(5):
        await responder.ready()
        await asker.ready()
        await wait_until(lambda: asker.find_module(responder.identity.wire()) is not None and responder.find_module(asker.identity.wire()) is not None)
        reply = await asker.request("test:question", {"q": 21}, destinations=["module:responder"], reply_type="test:answer", timeout=3)
    assert reply.data == {"answer": 42}
    assert reply.route == {"destinations": ["module:asker"]}
    assert reply.source == responder.identity.wire()


async def test_type_patterns_are_protocol_globs(airi_hub: Hub, clients: Any, raw: Any) -> None:
    # the protocol's one glob dialect: only "*" is a wildcard; "?" and "[...]" match themselves
    c = clients(airi_hub.url, name="globs")
    got: dict[str, list[str]] = {"?": [], "[ab]": [], "*": []}
    c.on("test:?", lambda e: got["?"].append(e.type))
    c.on("test:[ab]", lambda e: got["[ab]"].append(e.type))
    c.on("test:*b*", lambda e: got["*"].append(e.type))
    async with asyncio.timeout(5):
        await c.ready()
        peer = await raw(airi_hub, "globber", announce=True)
        last = c.wait_for("test:?", lambda e: e.data.get("last") is True)
        for t in ("test:a", "test:b", "test:?", "test:[ab]"):
            await peer.send(t, {})
        await peer.send("test:?", {"last": True})
        await last
    assert got["?"] == ["test:?", "test:?"]
    assert got["[ab]"] == ["test:[ab]"]
    assert got["*"] == ["test:b", "test:[ab]"]
    assert type_matcher("test:?")("test:a") is False and type_matcher(None)("anything") is True


async def test_frames_that_are_not_events_are_reported(clients: Any) -> None:
    """A frame the client cannot decode goes to on_error as a ProtocolError; the connection
    stays up. (A stand-in hub: ours never sends such frames.)"""
    garbage = ["not json", "[1, 2]", '{"type": "test:x", "data": [1]}', '{"json": 5}', '{"data": {}}']
    hub_identity = {"id": "fake-hub", "kind": "plugin", "plugin": {"id": SERVER_PLUGIN_ID}}

    def event(type: str, data: dict[str, Any], parent_id: str | None = None) -> str:
        ref = {"id": f"hub-{type}"} if parent_id is None else {"id": "hub-pong", "parentId": parent_id}
        return json.dumps({"type": type, "data": data, "metadata": {"source": hub_identity, "event": ref}})

    async def fake_hub(ws: Any) -> None:
        await ws.send(event("module:authenticated", {"authenticated": True}))
        async for frame in ws:
            ev = json.loads(frame)
            if ev["type"] == "module:announce":
                d = ev["data"]
                await ws.send(event("registry:modules:sync", {"modules": [{"name": d["name"], "identity": d["identity"]}]}))
            elif ev["type"] == "transport:connection:heartbeat" and ev["data"]["kind"] == "ping":
                await ws.send(event("transport:connection:heartbeat", {"kind": "pong"}, ev["metadata"]["event"]["id"]))
            elif ev["type"] == "test:garbage":
                for text in garbage:
                    await ws.send(text)
                await ws.send(event("test:after", {"ok": True}))

    errs = ErrorLog()
    async with serve(fake_hub, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        c = clients(f"ws://127.0.0.1:{port}/ws", name="strict", on_error=errs)
        async with asyncio.timeout(5):
            await c.ready()
            after = c.wait_for("test:after")
            await c.send("test:garbage")
            assert (await after).data == {"ok": True}
            assert c.is_ready and c.connections == 1
            await c.close()
    assert [type(e) for e in errs.errors] == [ProtocolError] * len(garbage), errs.errors
    assert "(invalid JSON, error: " in str(errs.errors[0]) and "'not json'" in str(errs.errors[0])
    assert all("(invalid event format)" in str(e) for e in errs.errors[1:])


def test_typed_payload_accessors() -> None:
    sync = decode_frame(json.dumps({"type": "registry:modules:sync", "data": {"modules": [
        {"name": "m", "index": 1, "identity": {"id": "i", "kind": "plugin", "plugin": {"id": "p", "labels": {"a": "1"}}, "labels": {"b": "2"}}}]}}))
    model = protocol_data(sync)
    assert isinstance(model, RegistrySync) and model.modules[0].key == ("m", 1)
    assert model.modules[0].labels == {"a": "1", "b": "2"} and model.modules[0].plugin_id == "p"
    plain = decode_frame('{"type": "test:point", "data": {"x": 1}}')
    assert protocol_data(plain) is None

    class Point(BaseModel):
        x: int

    assert data_as(plain, Point) == Point(x=1)
    with pytest.raises(ValidationError):
        protocol_data(decode_frame('{"type": "error", "data": {}}'))


# -- consumers ---------------------------------------------------------------------------------------
async def test_consumer_delivery_to_python_consumers(airi_hub: Hub, clients: Any, raw: Any) -> None:
    hi = clients(airi_hub.url, name="consumer-hi")
    lo = clients(airi_hub.url, name="consumer-lo")
    got: dict[str, list[str]] = {"hi": [], "lo": []}
    hi.on("input:text", lambda e: got["hi"].append(e.data["text"]))
    lo.on("input:text", lambda e: got["lo"].append(e.data["text"]))
    async with asyncio.timeout(8):
        # registered before the client is even connected: done during its handshake
        reg_lo = asyncio.create_task(lo.register_consumer("input:text", group="chat-ingestion", priority=1))
        await lo.ready()
        await reg_lo
        await hi.ready()
        await hi.register_consumer("input:text", group="chat-ingestion", priority=10)
        assert [(r.event, r.group, r.priority) for r in hi.consumers] == [("input:text", "chat-ingestion", 10)]
        sender = await raw(airi_hub, "chat", announce=True)
        for text in ("one", "two"):
            await sender.send("input:text", {"text": text})
        await wait_until(lambda: got["hi"] == ["one", "two"], what="delivery to the high-priority consumer")
        await asyncio.sleep(0.1)
        assert got["lo"] == []
        await hi.unregister_consumer("input:text", group="chat-ingestion")
        assert hi.consumers == []
        await sender.send("input:text", {"text": "three"})
        await wait_until(lambda: got["lo"] == ["three"], what="delivery to the remaining consumer")
    assert got["hi"] == ["one", "two"]
    with pytest.raises(ValidationError):
        await hi.register_consumer("", group="x")


async def test_server_errors_raised_or_reported(airi_hub: Hub, clients: Any) -> None:
    errs = ErrorLog()
    c = clients(airi_hub.url, name="errs", on_error=errs)
    async with asyncio.timeout(5):
        await c.ready()
        # awaited: raised to the caller, with the exact text
        with pytest.raises(NoConsumerError) as info:
            await c.send("input:text", {"text": "x"}, delivery={"required": True}, confirm=True)
        assert info.value.message == errors.NO_CONSUMER_REGISTERED
        assert info.value.code == "no-consumer-registered"
        assert errs.errors == []
        # not awaited: reported to on_error, never silently dropped
        await c.send("input:text", {"text": "y"}, delivery={"required": True})
        await wait_until(lambda: len(errs.errors) == 1)
        await c.send("ui:configure", {"moduleName": "nobody", "config": {}})
        await wait_until(lambda: len(errs.errors) == 2)
    assert isinstance(errs.errors[0], NoConsumerError)
    assert isinstance(errs.errors[1], ServerError) and errs.errors[1].message == errors.MODULE_NOT_FOUND
    assert c.is_ready and c.connections == 1


def test_error_classification() -> None:
    assert type(classify_error(errors.INVALID_TOKEN)).__name__ == "AuthenticationError"
    assert isinstance(classify_error(errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING, have_token=False), TokenRequiredError)
    assert type(classify_error(errors.NOT_AUTHENTICATED)).__name__ == "NotAuthenticatedError"
    assert type(classify_error(errors.MODULE_ANNOUNCE_NAME_INVALID)).__name__ == "AnnounceError"
    assert type(classify_error(errors.MODULE_CONSUMER_EVENT_INVALID)).__name__ == "ConsumerRegistrationError"
    assert type(classify_error(errors.MODULE_NOT_FOUND)).__name__ == "UnknownModuleError"
    e = classify_error(errors.invalid_json("Expecting value: line 1 column 1 (char 0)"))
    assert type(e) is ServerError and e.code == "invalid-json"
    assert classify_error("something new").code is None


# -- authentication ----------------------------------------------------------------------------------
async def test_invalid_token_is_terminal(airi_hub_factory: Any, clients: Any) -> None:
    hub = await airi_hub_factory(token_settings(TOKEN))
    states = StateLog()
    errs = ErrorLog()
    c = clients(hub.url, name="bad-token", token="wrong", on_state=states, on_error=errs)
    async with asyncio.timeout(5):
        with pytest.raises(AuthenticationError) as info:
            async with c:
                pytest.fail("entered the body with a wrong token")
    assert info.value.message == "invalid token"
    assert c.state is ClientState.FAILED and c.failure is info.value
    assert states.states == ["connecting", "authenticating", "failed"]
    await asyncio.sleep(0.3)  # far longer than the backoff: no retry happens
    assert hub.stats["connections"] == 1 and c.connections == 1
    with pytest.raises(AuthenticationError):
        await c.ready()
    with pytest.raises(AuthenticationError):
        await c.send("test:x", {})
    with pytest.raises(AuthenticationError):
        await c.wait_closed()
    assert any(isinstance(e, AuthenticationError) for e in errs.errors)


async def test_missing_token_is_terminal(airi_hub_factory: Any, clients: Any) -> None:
    hub = await airi_hub_factory(token_settings(TOKEN))
    c = clients(hub.url, name="no-token")
    async with asyncio.timeout(5):
        with pytest.raises(TokenRequiredError):
            await c.ready()
    assert c.state is ClientState.FAILED
    await asyncio.sleep(0.2)
    assert hub.stats["connections"] == 1


class Deauth:
    """Test plugin: ``test:deauth`` makes the hub forget that the sender authenticated and answers
    ``not authenticated`` (as after a token rotation on a hub that re-checks)."""

    @hookimpl
    def airi_event(self, hub: Hub, peer: Any, event: Any) -> Any:
        if event.type != "test:deauth":
            return None
        peer.authenticated = False
        hub.registry._authenticated.pop(peer.id, None)
        return Reject(errors.NOT_AUTHENTICATED)


@pytest.mark.parametrize("token", [TOKEN, None], ids=["token", "no-token"])
async def test_not_authenticated_triggers_reauthentication(clients: Any, raw: Any, token: str | None) -> None:
    hub = await start_hub(token_settings(token), extra_plugins=[("deauth", Deauth())])
    try:
        states = StateLog()
        errs = ErrorLog()
        c = clients(hub.url, name="reauth", token=token, on_state=states, on_error=errs)
        got: list[Any] = []
        c.on("test:after", lambda e: got.append(e.data))
        async with asyncio.timeout(8):
            await c.ready()
            await c.register_consumer("input:text", group="chat-ingestion")
            mark = len(states.changes)
            await c.send("test:deauth", {})
            await wait_until(lambda: states.states[mark:][-1:] == ["ready"] and len(states.changes) > mark + 1, what="ready again")
            peer = hub.registry.find_module("reauth")
            assert peer is not None and peer.authenticated
            if token:
                # same connection: authenticate again, re-announce
                assert states.states[mark:] == ["authenticating", "announcing", "ready"]
                assert hub.stats["connections"] == 1
            else:
                # nothing to re-send without a token: a fresh connection authenticates
                assert states.states[mark:] == ["reconnecting", "authenticating", "announcing", "ready"]
                assert hub.stats["connections"] == 2
            other = await raw(hub, "other", token=token, announce=True)
            await other.send("test:after", {"ok": True})
            await other.send("input:text", {"text": "still a consumer"})
            msg = await c.wait_for("input:text", timeout=3)
            await wait_until(lambda: got == [{"ok": True}])
        assert msg.data == {"text": "still a consumer"}
        assert not [e for e in errs.errors if isinstance(e, ServerError)], errs.errors
    finally:
        await hub.shutdown()


# -- heartbeats ----------------------------------------------------------------------------------------
async def test_heartbeats_keep_the_module_alive(airi_hub_factory: Any, clients: Any, raw: Any) -> None:
    # the hub checks every 40 ms: silent for 5 checks = unhealthy, 10 = dropped
    hub = await airi_hub_factory({"heartbeat": {"read_timeout_ms": 1000, "check_interval_ms": 40}})
    c = clients(hub.url, name="pinger", heartbeat_interval=0.05, read_timeout=1.0)
    async with asyncio.timeout(5):
        await c.ready()
        silent = await raw(hub, "silent", announce=True)
        await asyncio.sleep(0.8)
    assert silent.close_code == 1001 and silent.close_reason == "heartbeat expired"
    peer = hub.registry.find_module("pinger")
    assert peer is not None and peer.healthy
    assert c.connections == 1 and c.is_ready
    assert c.unhealthy == {}


async def test_read_timeout_declares_the_connection_dead(airi_hub: Hub, clients: Any) -> None:
    states = StateLog()
    c = clients(airi_hub.url, name="stalled", heartbeat_interval=0.05, read_timeout=0.3, on_state=states)
    async with asyncio.timeout(8):
        await c.ready()
        session = c._session
        assert session is not None
        # no frame at all reaches the client any more (as from a hub that stalled): its socket
        # stops being read, while its pings still go out
        session.ws.transport.pause_reading()
        await wait_until(lambda: "reconnecting" in states.states, what="the read timeout")
        lost = next(ch for ch in states.changes if ch.state is ClientState.RECONNECTING)
        assert isinstance(lost.error, ConnectionLostError) and "read timeout" in str(lost.error)
        # it comes back by itself on a fresh connection
        await wait_until(lambda: states.states[-1] == "ready" and c.connections == 2, what="ready again")
        assert c._session is not session


# -- reconnects ----------------------------------------------------------------------------------------
def test_backoff_delay() -> None:
    assert [backoff_delay(n, 0.5, 30, 2, 0) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(10_000, 0.5, 30, 2, 0) == 30
    for n in range(10):
        base = min(30, 0.5 * 2**n)
        assert backoff_delay(n, 0.5, 30, 2, 0.25, rand=lambda: 1.0) == pytest.approx(base * 0.75)
        assert base * 0.75 <= backoff_delay(n, 0.5, 30, 2, 0.25) <= base


async def _start_fixed(port: int, token: str | None) -> Hub:
    settings = Settings.model_validate(token_settings(token))
    hub = Hub(settings)
    await hub.start(host="127.0.0.1", port=port)
    return hub


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
async def test_hub_restart_reconnects_and_restores_everything(clients: Any, raw: Any, token: str | None) -> None:
    port = free_port()
    hub1 = await _start_fixed(port, token)
    hub2: Hub | None = None
    try:
        states = StateLog()
        c = clients(f"ws://127.0.0.1:{port}/ws", name="survivor", token=token, on_state=states,
                    initial_delay=0.02, max_delay=0.16, jitter=0.25)
        pings: list[Any] = []
        texts: list[str] = []
        c.on("test:ping", lambda e: pings.append(e.data))

        @c.on("input:text")
        async def on_text(ev: Event) -> None:
            texts.append(ev.data["text"])

        async with asyncio.timeout(15):
            await c.ready()
            await c.register_consumer("input:text", group="chat-ingestion")
            p1 = await raw(hub1, "peer1", token=token, announce=True)
            await p1.send("test:ping", {"hub": 1})
            await p1.send("input:text", {"text": "before"})
            await wait_until(lambda: pings == [{"hub": 1}] and texts == ["before"], what="delivery on hub 1")

            mark = len(states.changes)
            await hub1.shutdown()
            await wait_until(lambda: c.state is ClientState.RECONNECTING, what="reconnecting")
            lost = states.changes[mark]
            assert lost.state is ClientState.RECONNECTING
            assert isinstance(lost.error, ConnectionLostError) and lost.error.code == 1001, lost.error
            await asyncio.sleep(0.6)  # the hub stays down for several attempts
            assert c.state is ClientState.RECONNECTING

            hub2 = await _start_fixed(port, token)
            await c.ready(timeout=5)  # by itself: nothing done on the client
            assert hub2.registry.find_module("survivor") is not None
            p2 = await raw(hub2, "peer2", token=token, announce=True)
            await p2.send("test:ping", {"hub": 2})
            await p2.send("input:text", {"text": "after"})
            await wait_until(lambda: pings == [{"hub": 1}, {"hub": 2}] and texts == ["before", "after"], what="delivery on hub 2")

        after = states.changes[mark:]
        names = [ch.state.value for ch in after]
        assert names[-3:] == ["authenticating", "announcing", "ready"], names
        retries = [ch for ch in after if ch.state is ClientState.RECONNECTING]
        assert len(retries) >= 4, names  # many attempts while the hub was down
        assert [ch.attempt for ch in retries] == list(range(1, len(retries) + 1))
        for ch in retries:
            base = min(0.16, 0.02 * 2 ** (ch.attempt - 1))
            assert ch.delay is not None and base * 0.75 - 1e-9 <= ch.delay <= base + 1e-9, (ch.attempt, ch.delay)
        assert all(isinstance(ch.error, (ConnectionLostError, OSError)) for ch in retries[1:]), [ch.error for ch in retries]
        assert c.connections == 2
        assert hub2.stats["errors_sent"] == 0
    finally:
        for h in (hub1, hub2):
            if h is not None:
                await h.shutdown()


async def test_close_stops_the_reconnect_loop(clients: Any) -> None:
    port = free_port()  # nothing listens there
    states = StateLog()
    errs = ErrorLog()
    c = clients(f"ws://127.0.0.1:{port}/ws", name="lonely", on_state=states, on_error=errs, initial_delay=0.01, max_delay=0.05)
    c.start()
    async with asyncio.timeout(5):
        await wait_until(lambda: states.states.count("reconnecting") >= 3)
        with pytest.raises(TimeoutError):
            await c.ready(timeout=0.05)
        waiting = asyncio.create_task(c.ready())
        await asyncio.sleep(0)
        await c.close()
        with pytest.raises(ClientClosedError):
            await waiting
    assert c.state is ClientState.CLOSED
    assert c.connections == 0 and isinstance(c.last_error, OSError)
    assert errs.errors  # connection failures are reported, not swallowed
    n = len(states.changes)
    await asyncio.sleep(0.2)
    assert len(states.changes) == n


async def test_max_attempts_gives_up(clients: Any) -> None:
    port = free_port()
    c = clients(f"ws://127.0.0.1:{port}/ws", name="giving-up", max_attempts=3, initial_delay=0.01, max_delay=0.02)
    async with asyncio.timeout(5):
        with pytest.raises(ConnectionLostError, match="gave up after 3 attempts"):
            await c.ready()
    assert c.state is ClientState.FAILED


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
async def test_observer_client_does_not_announce(airi_hub_factory: Any, clients: Any, raw: Any, token: str | None) -> None:
    hub = await airi_hub_factory(token_settings(token))
    module = await raw(hub, "listed", token=token, announce=True)
    obs = clients(hub.url, name="observer", token=token, announce=False)
    states = StateLog()
    obs.on_state = states
    async with asyncio.timeout(5):
        await obs.ready()
        assert states.states == ["connecting", "authenticating", "ready"]
        assert [m.name for m in obs.modules] == ["listed"]  # the listing, without itself
        assert hub.registry.find_module("observer") is None
        assert hub.registry.authenticated_count() == 2
        got = obs.wait_for("test:broadcast")
        await module.send("test:broadcast", {"b": 1})
        assert (await got).data == {"b": 1}
        # consumers need authentication only
        await obs.register_consumer("input:text", group="chat-ingestion")
        await module.send("input:text", {"text": "to the observer"})
        assert (await obs.wait_for("input:text", timeout=3)).data == {"text": "to the observer"}


async def test_observer_without_token_on_a_token_hub_fails(airi_hub_factory: Any, clients: Any) -> None:
    hub = await airi_hub_factory(token_settings(TOKEN))
    obs = clients(hub.url, name="observer", announce=False)
    async with asyncio.timeout(5):
        with pytest.raises(TokenRequiredError):
            await obs.ready()
    assert obs.state is ClientState.FAILED
