"""pluggy's semantics hold on every hook (wrappers, run-time registration, tryfirst/trylast,
failures named), the routing policy holds whatever a route plugin decides, and a plugin declares
what the kernel used to know about built-ins (essential, its config section). Over real sockets,
silence checked with heartbeat fences (tests/protocol_helpers.probe)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from airi_core import Drop, Reject, Targets, hookimpl
from airi_core.server.config import ConfigError, Settings
from airi_core.server.plugins import discover_plugins
from airi_core.testing import connect_client, start_hub

from .protocol_helpers import identity, probe_one


async def world(hub: Any, *names: str, **identities: dict[str, Any]) -> dict[str, Any]:
    return {n: await connect_client(hub, n, announce=True, identity=identities.get(n) or identity(n)) for n in names}


def named(hub: Any, name: str) -> list[Any]:
    return hub.registry.peers_named(name)


# -- wrappers ----------------------------------------------------------------------------------------
class NewStyleWrapper:
    """Sees every route decision; turns ``wrap:drop`` into a Drop and ``wrap:to-c`` into a
    redirect to c."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl(wrapper=True)
    def airi_route(self, hub: Any, ctx: Any) -> Generator[None, Any, Any]:
        result = yield
        self.seen.append((ctx.event.type, result))
        if ctx.event.type == "wrap:drop":
            return Drop("dropped by the wrapper", error="wrapped drop")
        if ctx.event.type == "wrap:to-c":
            return Targets.of(named(hub, "c"))
        return result


async def test_new_style_wrapper_on_route_observes_and_replaces_the_result() -> None:
    wrapper = NewStyleWrapper()
    hub = await start_hub(extra_plugins=[("wrapper", wrapper)])
    try:
        assert hub.plugins.route_wrappers() == ["wrapper"] and "wrapper" not in hub.plugins.route_chain()
        w = await world(hub, "a", "b", "c")
        a, b, c = w["a"], w["b"], w["c"]
        # ordinary events are still delivered (the old dispatcher made them undeliverable)
        assert await probe_one(a, [b, c], type="chat:text") == {"b", "c"}
        assert await probe_one(a, [b, c], type="wrap:to-c") == {"c"}
        err = await a.request("wrap:drop", {})
        assert err["data"]["message"] == "wrapped drop"
        assert await probe_one(a, [b, c], type="wrap:drop") == set()
        # it saw the inner result: consumers delivery chose one consumer for input:text
        types = [t for t, _ in wrapper.seen]
        assert "chat:text" in types and "wrap:to-c" in types
    finally:
        await hub.shutdown()


class OldStyleWrapper:
    @hookimpl(hookwrapper=True)
    def airi_route(self, hub: Any, ctx: Any) -> Generator[None, Any, None]:
        outcome = yield
        if ctx.event.type == "old:to-b":
            outcome.force_result(Targets.of(named(hub, "b")))


async def test_old_style_hookwrapper_can_force_the_result() -> None:
    hub = await start_hub(extra_plugins=[("old", OldStyleWrapper())])
    try:
        w = await world(hub, "a", "b", "c")
        assert await probe_one(w["a"], [w["b"], w["c"]], type="old:to-b") == {"b"}
        assert await probe_one(w["a"], [w["b"], w["c"]], type="chat:text") == {"b", "c"}
    finally:
        await hub.shutdown()


class EventWrapper:
    """Wraps the async-capable ``airi_event`` hook: refuses ``guarded:*`` unless claimed."""

    @hookimpl(wrapper=True)
    def airi_event(self, event: Any) -> Generator[None, Any, Any]:
        result = yield
        if result is None and event.type.startswith("guarded:"):
            return Reject("guarded types need a handler")
        return result


class AsyncClaimer:
    @hookimpl
    async def airi_event(self, hub: Any, peer: Any, event: Any) -> Any:
        if event.type == "guarded:hello":
            hub.send(peer, "guarded:hi", {}, parent_id=event.id)
            return True  # any non-None result claims the event
        return None


async def test_wrapper_around_an_async_hook_sees_the_awaited_result() -> None:
    hub = await start_hub(extra_plugins=[("event-wrapper", EventWrapper()), ("claimer", AsyncClaimer())])
    try:
        w = await world(hub, "a", "b")
        reply = await w["a"].request("guarded:hello", {})
        assert reply["type"] == "guarded:hi"
        err = await w["a"].request("guarded:other", {})
        assert err["data"]["message"] == "guarded types need a handler"
    finally:
        await hub.shutdown()


class RaisingRoute:
    @hookimpl
    def airi_route(self, ctx: Any) -> None:
        if ctx.event.type == "raise:inner":
            raise ValueError("inner failure")


class CatchingWrapper:
    """Turns the inner plugin's ValueError into a silent drop; raises itself on ``raise:outer``."""

    def __init__(self) -> None:
        self.caught: list[BaseException] = []

    @hookimpl(wrapper=True)
    def airi_route(self, ctx: Any) -> Generator[None, Any, Any]:
        if ctx.event.type == "raise:outer":
            raise KeyError("outer failure")
        try:
            return (yield)
        except ValueError as exc:
            self.caught.append(exc)
            return Drop("recovered")


async def test_wrappers_see_inner_exceptions_and_failures_name_the_plugin() -> None:
    catcher = CatchingWrapper()
    hub = await start_hub(extra_plugins=[("raiser", RaisingRoute()), ("catcher", catcher)])
    try:
        w = await world(hub, "a", "b")
        # the wrapper recovered from the inner failure: no error, nothing delivered
        assert await probe_one(w["a"], [w["b"]], type="raise:inner") == set()
        assert [str(e) for e in catcher.caught] == ["inner failure"]
        assert hub.stats["plugin_errors"] == 0
        err = await w["a"].request("raise:outer", {})
        assert err["data"]["message"] == "plugin 'catcher' failed in airi_route"
    finally:
        await hub.shutdown()


async def test_an_unhandled_inner_failure_is_blamed_on_the_inner_plugin() -> None:
    hub = await start_hub(extra_plugins=[("raiser", RaisingRoute()), ("observer", NewStyleWrapper())])
    try:
        w = await world(hub, "a", "b")
        err = await w["a"].request("raise:inner", {})
        assert err["data"]["message"] == "plugin 'raiser' failed in airi_route"
    finally:
        await hub.shutdown()


class Nonsense:
    @hookimpl
    def airi_route(self, ctx: Any) -> Any:
        return "nonsense" if ctx.event.type == "bad:decision" else None


async def test_a_wrong_route_decision_names_the_plugin_that_returned_it() -> None:
    hub = await start_hub(extra_plugins=[("nonsense", Nonsense())])
    try:
        w = await world(hub, "a", "b")
        err = await w["a"].request("bad:decision", {})
        assert err["data"]["message"] == "plugin 'nonsense' failed in airi_route"
    finally:
        await hub.shutdown()


# -- registration at run time, tryfirst / trylast ------------------------------------------------------
class DropEverything:
    @hookimpl(tryfirst=True)
    def airi_route(self, ctx: Any) -> Drop:
        return Drop("dropper")


async def test_register_and_unregister_at_run_time_take_effect_at_once() -> None:
    hub = await start_hub()
    try:
        w = await world(hub, "a", "b")
        assert await probe_one(w["a"], [w["b"]], type="chat:text") == {"b"}
        hub.plugins.register(DropEverything(), "dropper")
        assert await probe_one(w["a"], [w["b"]], type="chat:text") == set()
        hub.plugins.unregister("dropper")
        assert await probe_one(w["a"], [w["b"]], type="chat:text") == {"b"}
        # the pluggy manager itself works too: it is the same machinery
        hub.plugins.pm.register(DropEverything(), name="dropper2")
        assert await probe_one(w["a"], [w["b"]], type="chat:text") == set()
        hub.plugins.pm.unregister(name="dropper2")
        assert await probe_one(w["a"], [w["b"]], type="chat:text") == {"b"}
        with pytest.raises(ValueError, match="essential"):
            hub.plugins.unregister("auth")
    finally:
        await hub.shutdown()


class ToB:
    @hookimpl(trylast=True)
    def airi_route(self, hub: Any, ctx: Any) -> Any:
        return Targets.of(named(hub, "b")) if ctx.event.type == "order:x" else None


class ToC:
    @hookimpl(tryfirst=True)
    def airi_route(self, hub: Any, ctx: Any) -> Any:
        return Targets.of(named(hub, "c")) if ctx.event.type == "order:x" else None


async def test_tryfirst_and_trylast_are_honoured() -> None:
    # registered in the opposite order of the markers: the markers win
    hub = await start_hub(extra_plugins=[("to-c", ToC()), ("to-b", ToB())])
    try:
        chain = hub.plugins.route_chain()
        assert chain.index("to-c") < chain.index("to-b")
        w = await world(hub, "a", "b", "c")
        assert await probe_one(w["a"], [w["b"], w["c"]], type="order:x") == {"c"}
    finally:
        await hub.shutdown()


# -- the policy holds whatever a route plugin decides ----------------------------------------------------
class Redirect:
    """Redirects ``redirect:*`` to the module named in data.to (like the example plugin)."""

    @hookimpl
    def airi_route(self, hub: Any, ctx: Any) -> Any:
        if ctx.event.type.startswith("redirect:"):
            return Targets.of(named(hub, ctx.event.data["to"]))
        return None


POLICY = {"routing": {"policy": {"deny_plugins": ["acme:secret"]}}}


@pytest.mark.parametrize(
    "order",
    [[], ["redirect"], ["redirect", "policy", "destinations"], ["redirect", "bypass", "destinations", "consumers"]],
)
async def test_a_redirect_to_a_policy_denied_peer_delivers_nothing_in_any_order(order: list[str]) -> None:
    hub = await start_hub({**POLICY, "plugins": {"order": order}}, extra_plugins=[("redirect", Redirect())])
    try:
        w = await world(hub, "a", "secret", "open", secret=identity("secret", "acme:secret"))
        a, secret, other = w["a"], w["secret"], w["open"]
        assert await probe_one(a, [secret, other], type="redirect:x", data={"to": "secret"}) == set()
        assert await probe_one(a, [secret, other], type="redirect:x", data={"to": "open"}) == {"open"}
        assert await probe_one(a, [secret, other], type="chat:text") == {"open"}
    finally:
        await hub.shutdown()


async def test_without_the_policy_the_redirect_reaches_that_peer() -> None:
    hub = await start_hub({**POLICY, "plugins": {"disable": ["policy"]}}, extra_plugins=[("redirect", Redirect())])
    try:
        w = await world(hub, "a", "secret", secret=identity("secret", "acme:secret"))
        assert await probe_one(w["a"], [w["secret"]], type="redirect:x", data={"to": "secret"}) == {"secret"}
    finally:
        await hub.shutdown()


@pytest.mark.parametrize("order", [[], ["redirect", "destinations", "bypass"]])
async def test_only_the_devtools_bypass_skips_the_policy(order: list[str]) -> None:
    hub = await start_hub({**POLICY, "plugins": {"order": order}}, extra_plugins=[("redirect", Redirect())])
    try:
        w = await world(
            hub, "devtools-panel", "secret", "open",
            secret=identity("secret", "acme:secret"),
        )
        dev, secret, other = w["devtools-panel"], w["secret"], w["open"]
        got = await probe_one(dev, [secret, other], route={"bypass": True, "destinations": ["module:nobody"]}, type="dev:x")
        assert got == {"secret", "open"}
        # without asking for the bypass, the devtools peer is held to the policy like anyone
        assert await probe_one(dev, [secret, other], type="dev:x") == {"open"}
    finally:
        await hub.shutdown()


# -- what a plugin declares ---------------------------------------------------------------------------
class Essential:
    airi_essential = True

    @hookimpl
    def airi_route(self, ctx: Any) -> None:
        return None


def test_a_third_party_plugin_can_declare_itself_essential() -> None:
    with pytest.raises(ConfigError, match="'guard' is essential"):
        discover_plugins(Settings.model_validate({"plugins": {"disable": ["guard"]}}), extra=[("guard", Essential)])
    ps = discover_plugins(Settings.model_validate({"plugins": {"load": ["heartbeat"]}}), extra=[("guard", Essential)])
    assert ps.info("guard").enabled and ps.info("guard").essential  # type: ignore[union-attr]


class OwnSectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = "hi"


class OwnSection:
    airi_config_section = "greeter"

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return OwnSectionSettings

    @hookimpl
    def airi_event(self, hub: Any, peer: Any, event: Any) -> Any:
        if event.type == "greet":
            hub.send(peer, "greeting", {"text": hub.plugin_config(self).greeting}, parent_id=event.id)
            return True
        return None


async def test_a_plugin_may_own_a_top_level_section_like_the_built_ins() -> None:
    hub = await start_hub({"greeter": {"greeting": "hello"}}, extra_plugins=[("greeter", OwnSection())])
    try:
        c = await connect_client(hub, "c")
        assert (await c.request("greet"))["data"] == {"text": "hello"}
    finally:
        await hub.shutdown()
    with pytest.raises(ConfigError, match="greeter.greting: unknown key"):
        discover_plugins(Settings.model_validate({"greeter": {"greting": "x"}}), extra=[("greeter", OwnSection())], origin="t.toml")
    with pytest.raises(ConfigError, match="nobody: unknown key"):
        discover_plugins(Settings.model_validate({"nobody": {"x": 1}}), origin="t.toml")
    with pytest.raises(ConfigError, match=r"plugins.greeter: this plugin reads its settings from \[greeter\]"):
        discover_plugins(Settings.model_validate({"plugins": {"greeter": {"greeting": "x"}}}), extra=[("greeter", OwnSection())], origin="t.toml")


def test_a_disabled_plugin_that_cannot_be_read_is_reported_not_fatal() -> None:
    settings = Settings.model_validate({"plugins": {"disable": ["broken"], "fail_on_error": True}})
    ps = discover_plugins(settings, extra=[("broken", _Unreadable())])
    info = ps.info("broken")
    assert info is not None and not info.enabled and "cannot read" in (info.error or "")
    # enabled, the same plugin stops the hub when failures are fatal, and is skipped otherwise
    with pytest.raises(ConfigError, match="broken"):
        discover_plugins(Settings.model_validate({"plugins": {"fail_on_error": True}}), extra=[("broken", _Unreadable())])


class _Unreadable:
    """A plugin whose declarations cannot even be read (as when its import fails half-way)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"cannot read {name}")
