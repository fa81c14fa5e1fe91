"""The plugin API end to end: every hookspec documented and exercised, async hooks awaited
(including the first-result "async returns None" case pluggy gets wrong), route order from
config, load failures reported, and a raising or hanging plugin isolated."""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from airi_core.server.config import Settings
from airi_core.server.reload import reload_hub
from airi_core import ACCEPT, BROADCAST, Drop, Reject, Targets, hookimpl
from airi_core.server import hookspecs
from airi_core.server.config import ConfigError, Settings
from airi_core.server.hooks import HOOK_ARGS
from airi_core.server.plugins import discover_plugins
from airi_core.testing import connect_client, start_hub


def test_every_hookspec_is_documented() -> None:
    for name in HOOK_ARGS:
        doc = " ".join((inspect.getdoc(getattr(hookspecs, name)) or "").split())
        assert len(doc) > 120, f"{name} needs a real docstring"
        # each docstring says when it is called and what a return value means
        assert "called" in doc.lower(), f"{name}: say when it is called"
        assert "return" in doc.lower(), f"{name}: say what it may return"
        assert ("first result" in doc.lower()) or ("ignored" in doc.lower()) or ("every implementation" in doc.lower()), f"{name}: result rule"


class Recorder:
    """Implements every hook, some of them async, and records the calls."""

    class Model(BaseModel):
        model_config = ConfigDict(extra="forbid")
        greeting: str = "hi"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.claims: list[tuple[str, Any]] = []

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        self.calls.append("airi_config_model")
        return self.Model

    @hookimpl
    async def airi_startup(self, hub: Any) -> None:
        self.calls.append("airi_startup")
        assert hub.plugin_config("recorder").greeting == "hello"

    @hookimpl
    async def airi_shutdown(self) -> None:
        self.calls.append("airi_shutdown")

    @hookimpl
    def airi_peer_connected(self, peer: Any) -> None:
        self.calls.append("airi_peer_connected")

    @hookimpl
    async def airi_peer_disconnected(self, peer: Any, reason: str) -> None:
        self.calls.append("airi_peer_disconnected")

    @hookimpl(tryfirst=True)
    async def airi_authenticate(self, token: str | None) -> Any:
        self.calls.append("airi_authenticate")
        # a second credential; anything else falls through to the token plugin. An async
        # implementation returning None must NOT stop the first-result chain.
        if token is not None and hmac.compare_digest(token, "viewer"):
            return ACCEPT
        return None

    @hookimpl
    def airi_peer_authenticated(self, peer: Any, parent_id: str | None) -> None:
        self.calls.append("airi_peer_authenticated")

    @hookimpl(tryfirst=True)
    async def airi_announce(self, announcement: Any) -> Any:
        self.calls.append("airi_announce")
        if announcement.name == "forbidden":
            return Reject("module name 'forbidden' is reserved")
        return None

    @hookimpl
    def airi_heartbeat(self, kind: str) -> None:
        self.calls.append("airi_heartbeat")

    @hookimpl
    async def airi_reload(self, hub: Any, changed: frozenset[str]) -> None:
        self.calls.append("airi_reload")
        assert "plugins.recorder" in changed
        self.greeting = hub.plugin_config(self).greeting

    @hookimpl
    def airi_peer_health_changed(self, healthy: bool) -> None:
        self.calls.append("airi_peer_health_changed")

    @hookimpl
    def airi_source_claimed(self, peer: Any, source: Any) -> None:
        self.calls.append("airi_source_claimed")
        self.claims.append((peer.name, source.get("id")))

    @hookimpl
    async def airi_event(self, hub: Any, peer: Any, event: Any) -> Any:
        self.calls.append("airi_event")
        if event.type == "recorder:whoami":
            hub.send(peer, "recorder:you", {"id": peer.id, "name": peer.name}, parent_id=event.id)
            return ACCEPT
        return None

    @hookimpl
    def airi_route(self, ctx: Any) -> Any:
        self.calls.append("airi_route")
        if ctx.event.type == "recorder:drop":
            return Drop("recorder drops these", error="dropped by recorder")
        return None


async def test_every_hook_is_exercised_and_async_hooks_are_awaited() -> None:
    rec = Recorder()
    hub = await start_hub(
        {"auth": {"token": "main-token"}, "heartbeat": {"check_interval_ms": 40}, "plugins": {"recorder": {"greeting": "hello"}}},
        extra_plugins=[("recorder", rec)],
    )
    try:
        viewer = await connect_client(hub, "viewer", token="viewer")  # accepted by the async plugin
        main = await connect_client(hub, "main", token="main-token")  # async None fell through
        bad = await connect_client(hub, "bad")
        assert (await bad.authenticate("nope"))["data"]["message"] == "invalid token"

        await viewer.announce()
        await main.announce()
        reply = await main.request("module:announce", {"name": "forbidden", "identity": main.identity})
        assert reply["data"]["message"] == "module name 'forbidden' is reserved"

        pong = await main.request("transport:connection:heartbeat", {"kind": "ping", "message": "x"})
        assert pong["data"]["kind"] == "pong"

        you = await main.request("recorder:whoami")
        assert you["type"] == "recorder:you" and you["data"]["name"] == "main"

        # a frame claiming another source: the plugins hear of it, the identity stays
        claimed = {"id": "someone-else", "kind": "plugin", "plugin": {"id": "else"}}
        await main.send("chat:claim", {"t": 0}, metadata={"source": claimed, "event": {"id": "claim-1"}})
        got = await viewer.next("chat:claim")
        assert got["metadata"]["source"] == main.identity
        assert ("main", "someone-else") in rec.claims

        err = await main.request("recorder:drop", {})
        assert err["data"]["message"] == "dropped by recorder"
        await main.send("chat:text", {"t": 1})
        await viewer.next("chat:text")

        # viewer goes silent: the liveness check marks it unhealthy, then a frame heals it
        await main.wait_for("registry:modules:health:unhealthy", lambda e: e["data"]["name"] == "viewer", timeout=3)
        await viewer.send_raw("ping")
        await main.wait_for("registry:modules:health:healthy", lambda e: e["data"]["name"] == "viewer", timeout=3)

        # a reload hands the plugin its new table (awaited), the connections stay
        settings = {"auth": {"token": "main-token"}, "heartbeat": {"check_interval_ms": 40}, "plugins": {"recorder": {"greeting": "hey"}}}
        report = await reload_hub(hub, Settings.model_validate(settings), "test")
        assert "plugins.recorder" in report.changed and rec.greeting == "hey", report
        await main.fence()

        await viewer.close()
        await main.wait_for("module:de-announced", lambda e: e["data"]["name"] == "viewer")
        await main.close()
        await bad.close()
    finally:
        await hub.shutdown()
    missing = set(HOOK_ARGS) - set(rec.calls)
    assert not missing, f"hooks never called: {missing}"


class Boom:
    """Raises in the hook named by ``where`` for events/peers that ask for it."""

    def __init__(self, where: str) -> None:
        self.where = where

    def _maybe(self, hook: str) -> None:
        if hook == self.where:
            raise RuntimeError(f"boom in {hook}")

    @hookimpl(tryfirst=True)
    def airi_authenticate(self, token: str | None) -> None:
        if token == "explode":
            self._maybe("airi_authenticate")

    @hookimpl(tryfirst=True)
    def airi_announce(self, announcement: Any) -> None:
        if announcement.name == "explode":
            self._maybe("airi_announce")

    @hookimpl
    def airi_heartbeat(self, message: str | None) -> None:
        if message == "explode":
            self._maybe("airi_heartbeat")

    @hookimpl
    def airi_event(self, event: Any) -> None:
        if event.type == "explode":
            self._maybe("airi_event")

    @hookimpl
    def airi_route(self, ctx: Any) -> None:
        if ctx.event.type == "explode:route":
            self._maybe("airi_route")


@pytest.mark.parametrize(
    "hook,trigger",
    [
        ("airi_authenticate", ("module:authenticate", {"token": "explode"})),
        ("airi_announce", ("module:announce", {"name": "explode", "identity": {"id": "x", "kind": "plugin", "plugin": {"id": "x"}}})),
        ("airi_heartbeat", ("transport:connection:heartbeat", {"kind": "ping", "message": "explode"})),
        ("airi_event", ("explode", {})),
        ("airi_route", ("explode:route", {})),
    ],
)
async def test_a_raising_plugin_is_isolated(hook: str, trigger: tuple[str, dict[str, Any]], caplog: pytest.LogCaptureFixture) -> None:
    hub = await start_hub(extra_plugins=[("boom", Boom(hook))])
    try:
        a = await connect_client(hub, "a", announce=True)
        b = await connect_client(hub, "b", announce=True)
        with caplog.at_level(logging.ERROR, logger="airi"):
            reply = await a.request(*trigger)
        assert reply["type"] == "error"
        assert reply["data"]["message"] == f"plugin 'boom' failed in {hook}"
        assert any("boom" in r.getMessage() and hook in r.getMessage() for r in caplog.records)
        # the sender's connection and every other peer carry on
        await a.send("chat:text", {"after": True})
        got = await b.next("chat:text")
        assert got["data"] == {"after": True}
        await b.send("chat:text", {"back": True})
        assert (await a.next("chat:text"))["data"] == {"back": True}
        assert hub.stats["plugin_errors"] == 1
    finally:
        await hub.shutdown()


class Hang:
    @hookimpl
    async def airi_event(self, event: Any) -> None:
        if event.type == "hang":
            await asyncio.Event().wait()  # never resolves


async def test_a_hanging_async_hook_times_out_and_others_carry_on() -> None:
    hub = await start_hub({"plugins": {"hook_timeout_ms": 200}}, extra_plugins=[("hang", Hang())])
    try:
        a = await connect_client(hub, "a", announce=True)
        b = await connect_client(hub, "b", announce=True)
        start = a.mark()
        await a.send("hang", {})
        # b is not blocked while a's hook hangs
        await b.send("chat:text", {"n": 1})
        await a.wait_for("chat:text", start=start, timeout=2)
        err = await a.wait_for("error", start=start, timeout=2)
        assert err["data"]["message"] == "plugin 'hang' failed in airi_event"
        # and a's connection is usable again afterwards
        await a.send("chat:text", {"n": 2})
        assert (await b.next("chat:text"))["data"] == {"n": 2}
    finally:
        await hub.shutdown()


class First:
    @hookimpl
    def airi_route(self, ctx: Any) -> Any:
        if ctx.event.type == "order:test":
            return Drop("first wins")
        return None


class Second:
    @hookimpl
    def airi_route(self, hub: Any, ctx: Any) -> Any:
        if ctx.event.type == "order:test":
            return Targets.of(p for p in hub.registry.authenticated() if p.name == "c")
        return None


@pytest.mark.parametrize("order,expect_delivery", [(["first", "second"], False), (["second", "first"], True)])
async def test_route_plugins_follow_the_configured_order(order: list[str], expect_delivery: bool) -> None:
    hub = await start_hub({"plugins": {"order": order}}, extra_plugins=[("first", First()), ("second", Second())])
    try:
        assert hub.plugins.route_chain()[:2] == order
        a = await connect_client(hub, "a", announce=True)
        b = await connect_client(hub, "b", announce=True)
        c = await connect_client(hub, "c", announce=True)
        start_b, start_c = b.mark(), c.mark()
        await a.send("order:test", {})
        if expect_delivery:
            await c.wait_for("order:test", start=start_c)
        else:
            await c.expect_silence("order:test", after=[a], start=start_c)
        await b.expect_silence("order:test", after=[a], start=start_b)
    finally:
        await hub.shutdown()


def test_default_route_order_comes_from_the_plugins_own_declarations() -> None:
    # destinations and bypass are tryfirst, consumers trylast, policy is a standing filter; nothing
    # in the kernel names them
    ps = discover_plugins(Settings(), extra=[("mine", First())])
    names = ps.route_chain()
    builtin = ["destinations", "bypass", "mine", "consumers"]
    # other installed third-party plugins (e.g. the example) may sit next to "mine"
    assert [n for n in names if n in builtin] == builtin
    assert names[:2] == builtin[:2] and names[-1] == "consumers"
    assert ps.route_wrappers() == []


class AsyncRoute:
    @hookimpl
    async def airi_route(self, ctx: Any) -> None:
        return None


def test_async_route_hook_is_refused_at_load_and_reported() -> None:
    ps = discover_plugins(Settings(), extra=[("slow-route", AsyncRoute())])
    info = ps.info("slow-route")
    assert info is not None and not info.enabled
    assert "airi_route must be a plain function" in (info.error or "")
    with pytest.raises(ConfigError, match="slow-route"):
        discover_plugins(Settings.model_validate({"plugins": {"fail_on_error": True}}), extra=[("slow-route", AsyncRoute())])


def test_plugin_config_is_validated_with_the_key_path() -> None:
    with pytest.raises(ConfigError) as err:
        discover_plugins(Settings.model_validate({"plugins": {"recorder": {"greting": "x"}}}), extra=[("recorder", Recorder())], origin="my.toml")
    assert "my.toml: plugins.recorder.greting: unknown key" in str(err.value)


def test_essential_plugins_cannot_be_disabled() -> None:
    with pytest.raises(ConfigError, match="'auth' is essential"):
        discover_plugins(Settings.model_validate({"plugins": {"disable": ["auth"]}}))


def test_bypass_returning_broadcast_is_exported() -> None:
    assert repr(BROADCAST) == "BROADCAST"


class BadFilter:
    @hookimpl
    def airi_route(self, ctx: Any) -> None:
        if ctx.event.type == "bad:filter":
            ctx.add_filter(lambda peer: 1 / 0)


async def test_a_raising_route_filter_is_answered_and_the_connection_survives() -> None:
    hub = await start_hub(extra_plugins=[("bad-filter", BadFilter())])
    try:
        a = await connect_client(hub, "a", announce=True)
        b = await connect_client(hub, "b", announce=True)
        err = await a.request("bad:filter", {})
        assert err["data"]["message"] == "internal error while handling 'bad:filter'"
        await a.send("chat:text", {"ok": 1})
        assert (await b.next("chat:text"))["data"] == {"ok": 1}
    finally:
        await hub.shutdown()
