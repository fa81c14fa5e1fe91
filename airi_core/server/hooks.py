"""How the kernel calls plugins: a typed facade over cached, async-aware hook calls that keep
pluggy's semantics.

pluggy does discovery, hookspec validation and ordering, but cannot await: an ``async def``
implementation that returns None still hands back a coroutine, so a first-result call would stop
at it. The kernel therefore calls hooks through :class:`Hooks`, which builds one call plan per
hook from the public ``pm.hook.<name>.get_hookimpls()`` and keeps what plugin authors know from
pytest:

- implementations run in pluggy's order (``tryfirst``/``trylast``, later registration first);
  ``airi_route`` implementations are then ordered by ``[plugins] order``;
- ``@hookimpl(wrapper=True)`` and old-style ``@hookimpl(hookwrapper=True)`` implementations wrap
  the whole call (outermost first, as pluggy nests them), see the result or the exception and may
  replace it;
- first-result hooks stop at the first result that is not None; an awaitable result is awaited
  first (so an ``async def`` that returns None falls through to the next plugin);
- ``pm.register()`` / ``pm.unregister()`` at run time rebuild the plans at once;
- every failure is a :class:`PluginError` naming the plugin and the hook.

A hook without wrappers costs one loop over plain functions (no pluggy call machinery on the
per-message path).
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs

if TYPE_CHECKING:
    from ..protocol.events import Event
    from .decisions import Accept, Reject, RouteDecision
    from .kernel import Hub
    from .peer import Peer
    from .routing import Announcement, RouteContext

__all__ = ["PluginError", "PluginManager", "awaitable", "Hooks", "config_model", "HOOK_ARGS", "FIRST_RESULT_HOOKS", "SYNC_ONLY_HOOKS"]


_AWAITABLE_TYPES: dict[type, bool] = {}


def awaitable(result: Any) -> bool:
    """``inspect.isawaitable(result)``, decided once per type (a type's ``__await__`` or ABC
    registration says it; generators, which carry the answer per object, are asked each time):
    the ABC check cost a third of a microsecond on every hook result, several times a frame."""
    kind = type(result)
    known = _AWAITABLE_TYPES.get(kind)
    if known is None:
        if kind is types.GeneratorType:
            return inspect.isawaitable(result)
        known = _AWAITABLE_TYPES[kind] = inspect.isawaitable(result)
    return known


#: The hookspec argument names, in the order the facade passes them.
HOOK_ARGS: dict[str, tuple[str, ...]] = {
    name: tuple(inspect.signature(getattr(hookspecs, name)).parameters)
    for name in dir(hookspecs)
    if name.startswith("airi_")
}
FIRST_RESULT_HOOKS = frozenset(
    name for name in HOOK_ARGS if getattr(getattr(hookspecs, name), "airi_spec", {}).get("firstresult")
)
#: Hooks whose implementations must be plain functions (the kernel does not await them).
SYNC_ONLY_HOOKS = frozenset({"airi_route", "airi_config_model", "airi_peer_health_changed", "airi_source_claimed"})


class PluginError(Exception):
    """A plugin's hook implementation raised (or timed out); names the plugin and the hook."""

    def __init__(self, plugin: str, hook: str, error: BaseException) -> None:
        super().__init__(f"plugin '{plugin}' failed in {hook}: {type(error).__name__}: {error}")
        self.plugin = plugin
        self.hook = hook
        self.error = error


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, telling its listeners after every ``register`` / ``unregister``."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        result = super().register(plugin, name)
        self._changed()
        return result

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        result = super().unregister(plugin, name)
        self._changed()
        return result


Fn = Callable[..., Any]


def _bind(fn: Fn, argnames: tuple[str, ...], spec_args: tuple[str, ...]) -> Fn:
    """Adapt an implementation that declares a subset of the spec's arguments (pluggy passes
    arguments by name) to be called with all of them positionally; free for the full signature."""
    if argnames == spec_args:
        return fn
    idx = tuple(spec_args.index(a) for a in argnames)
    if not idx:
        return lambda *args: fn()
    if len(idx) == 1:
        (i,) = idx
        return lambda *args: fn(args[i])
    return lambda *args: fn(*[args[i] for i in idx])


@dataclass(slots=True)
class Plan:
    """One hook's implementations, in call order: ``plain`` as ``(plugin name, function)`` and
    ``wrappers`` as ``(plugin name, function, old_style)``, outermost first."""

    hook: str
    firstresult: bool
    plain: tuple[tuple[str, Fn], ...] = ()
    wrappers: tuple[tuple[str, Fn, bool], ...] = field(default_factory=tuple)


class _Blamed(Exception):
    """Carries an exception together with the plugin it came from while wrappers see it."""

    def __init__(self, plugin: str, error: BaseException) -> None:
        self.plugin = plugin
        self.error = error


def config_model(plugin: Any) -> Any:
    """One plugin's own ``airi_config_model`` answer (never another plugin's: the hook is
    first-result, so it is asked of each plugin object directly)."""
    fn = getattr(plugin, "airi_config_model", None)
    if fn is None or getattr(fn, "airi_impl", None) is None:
        return None
    return fn()


class Hooks:
    """The typed facade the kernel calls plugins through (one method per hookspec).

    Methods of hooks that may be async return the result directly when every implementation
    answered synchronously, or an awaitable that finishes the call; ``route`` and
    ``peer_health_changed`` are always synchronous.
    """

    def __init__(self, pm: PluginManager, timeout_s: float, route_order: list[str]) -> None:
        self.pm = pm
        self.timeout_s = timeout_s
        self.route_order = list(route_order)
        self._plans: dict[str, Plan] = {}
        self.rebuild()

    # -- plans ---------------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Recompute every call plan (the hub has its plugin manager call this on every
        registration change)."""
        plans: dict[str, Plan] = {}
        for hook, spec_args in HOOK_ARGS.items():
            caller = getattr(self.pm.hook, hook, None)
            impls = list(reversed(caller.get_hookimpls())) if caller is not None else []  # pluggy's call order
            plain = [i for i in impls if not (i.wrapper or i.hookwrapper)]
            if hook == "airi_route":
                plain = self._order_route(plain)
            name = self._name
            plans[hook] = Plan(
                hook,
                hook in FIRST_RESULT_HOOKS,
                tuple((name(i), _bind(i.function, tuple(i.argnames), spec_args)) for i in plain),
                tuple(
                    (name(i), _bind(i.function, tuple(i.argnames), spec_args), bool(i.hookwrapper))
                    for i in impls
                    if i.wrapper or i.hookwrapper
                ),
            )
        self._plans = plans

    def _name(self, impl: Any) -> str:
        return self.pm.get_name(impl.plugin) or getattr(impl, "plugin_name", None) or "?"

    def _order_route(self, impls: list[Any]) -> list[Any]:
        """``[plugins] order`` first, in that order; every other route plugin after them in
        pluggy's order (which the plugins declare with ``tryfirst`` / ``trylast``)."""
        if not self.route_order:
            return impls
        explicit = {n: i for i, n in enumerate(self.route_order)}
        last = len(explicit)
        return [
            impl
            for _, impl in sorted(enumerate(impls), key=lambda p: (explicit.get(self._name(p[1]), last), p[0]))
        ]

    def names(self, hook: str) -> list[str]:
        """Plugin names implementing ``hook`` (not wrappers), in call order."""
        return [name for name, _ in self._plans[hook].plain]

    def wrapper_names(self, hook: str) -> list[str]:
        """Plugin names wrapping ``hook``, outermost first."""
        return [name for name, _, _ in self._plans[hook].wrappers]

    # -- the facade ----------------------------------------------------------------------------
    def startup(self, hub: Hub) -> Awaitable[None] | None:
        return self._call(self._plans["airi_startup"], (hub,))

    def shutdown(self, hub: Hub) -> Awaitable[None] | None:
        return self._call(self._plans["airi_shutdown"], (hub,))

    def peer_connected(self, hub: Hub, peer: Peer) -> Awaitable[None] | None:
        return self._call(self._plans["airi_peer_connected"], (hub, peer))

    def peer_disconnected(self, hub: Hub, peer: Peer, reason: str) -> Awaitable[None] | None:
        return self._call(self._plans["airi_peer_disconnected"], (hub, peer, reason))

    def authenticate(self, hub: Hub, peer: Peer, token: str | None, event: Event | None) -> Any:
        """``Accept | Reject | None`` or an awaitable of it."""
        return self._call(self._plans["airi_authenticate"], (hub, peer, token, event))

    def peer_authenticated(self, hub: Hub, peer: Peer, parent_id: str | None) -> Awaitable[None] | None:
        return self._call(self._plans["airi_peer_authenticated"], (hub, peer, parent_id))

    def announce(self, hub: Hub, peer: Peer, announcement: Announcement, event: Event) -> Any:
        """``Accept | Reject | None`` or an awaitable of it."""
        return self._call(self._plans["airi_announce"], (hub, peer, announcement, event))

    def heartbeat(self, hub: Hub, peer: Peer, kind: str, message: str | None, event: Event | None) -> Awaitable[None] | None:
        return self._call(self._plans["airi_heartbeat"], (hub, peer, kind, message, event))

    def reload(self, hub: Hub, changed: frozenset[str]) -> Awaitable[None] | None:
        return self._call(self._plans["airi_reload"], (hub, changed))

    def peer_health_changed(self, hub: Hub, peer: Peer, healthy: bool, reason: str) -> None:
        self._call_sync(self._plans["airi_peer_health_changed"], (hub, peer, healthy, reason))

    def source_claimed(self, hub: Hub, peer: Peer, source: dict[str, Any], event: Event) -> None:
        self._call_sync(self._plans["airi_source_claimed"], (hub, peer, source, event))

    def event(self, hub: Hub, peer: Peer, event: Event) -> Accept | Reject | None | Awaitable[Accept | Reject | None]:
        return self._call(self._plans["airi_event"], (hub, peer, event))  # type: ignore[no-any-return]

    def route(self, hub: Hub, ctx: RouteContext) -> tuple[RouteDecision | None, str]:
        """The route decision and the name of the plugin it came from (``""`` for none)."""
        plan = self._plans["airi_route"]
        if plan.wrappers:
            return self._wrapped_sync(plan, (hub, ctx))
        for name, fn in plan.plain:
            try:
                res = fn(hub, ctx)
            except Exception as exc:
                raise PluginError(name, "airi_route", exc) from exc
            if res is not None:
                return res, name
        return None, ""

    # -- calling ---------------------------------------------------------------------------------
    def _call(self, plan: Plan, args: tuple[Any, ...]) -> Any:
        if plan.wrappers:
            return self._wrapped(plan, args)
        return self._plain(plan, args)

    def _call_sync(self, plan: Plan, args: tuple[Any, ...]) -> Any:
        if plan.wrappers:
            return self._wrapped_sync(plan, args)[0]
        res, _ = self._plain_sync(plan, args)
        return res

    def _plain_sync(self, plan: Plan, args: tuple[Any, ...]) -> tuple[Any, str]:
        first = plan.firstresult
        results: list[Any] = []
        for name, fn in plan.plain:
            try:
                res = fn(*args)
            except Exception as exc:
                raise PluginError(name, plan.hook, exc) from exc
            if res is not None:
                if first:
                    return res, name
                results.append(res)
        return (None if first else results), ""

    def _plain(self, plan: Plan, args: tuple[Any, ...]) -> Any:
        """Call the plain implementations; an awaitable result makes the rest of the call async."""
        first = plan.firstresult
        pending: list[tuple[str, Any]] | None = None
        for i, (name, fn) in enumerate(plan.plain):
            try:
                res = fn(*args)
            except Exception as exc:
                raise PluginError(name, plan.hook, exc) from exc
            if res is None:
                continue
            if first:
                if awaitable(res):
                    return self._first_async(plan, i, res, args)
                return res
            if pending is None:
                pending = []
            pending.append((name, res))
        if first:
            return None
        if pending is not None:
            return self._each_async(plan.hook, pending)
        return []  # what pluggy returns for a hook whose implementations all returned None

    async def _first_async(self, plan: Plan, i: int, pending: Awaitable[Any], args: tuple[Any, ...]) -> Any:
        res = await self._await(plan.plain[i][0], plan.hook, pending)
        if res is not None:
            return res
        for name, fn in plan.plain[i + 1 :]:
            try:
                res = fn(*args)
            except Exception as exc:
                raise PluginError(name, plan.hook, exc) from exc
            if awaitable(res):
                res = await self._await(name, plan.hook, res)
            if res is not None:
                return res
        return None

    def _each_async(self, hook: str, pending: list[tuple[str, Any]]) -> Any:
        if not any(awaitable(res) for _, res in pending):
            return [res for _, res in pending]
        return self._each_await(hook, pending)

    async def _each_await(self, hook: str, pending: list[tuple[str, Any]]) -> list[Any]:
        # every pending implementation finishes; the first failure is reported
        error: PluginError | None = None
        results: list[Any] = []
        for name, res in pending:
            try:
                if awaitable(res):
                    res = await self._await(name, hook, res)
            except PluginError as exc:
                error = error or exc
                continue
            if res is not None:
                results.append(res)
        if error is not None:
            raise error
        return results

    async def _await(self, name: str, hook: str, aw: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(aw, self.timeout_s)
        except asyncio.TimeoutError as exc:
            raise PluginError(name, hook, TimeoutError(f"did not finish within {int(self.timeout_s * 1000)} ms")) from exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise PluginError(name, hook, exc) from exc

    # -- wrappers, driven as pluggy drives them ----------------------------------------------------
    def _enter(self, plan: Plan, args: tuple[Any, ...]) -> tuple[list[tuple[str, Generator[Any, Any, Any], bool]], _Blamed | None]:
        entered: list[tuple[str, Generator[Any, Any, Any], bool]] = []
        for name, fn, old in plan.wrappers:
            try:
                gen = fn(*args)
                next(gen)
            except StopIteration:
                return entered, _Blamed(name, RuntimeError("wrapper finished without yielding"))
            except Exception as exc:
                return entered, _Blamed(name, exc)
            entered.append((name, gen, old))
        return entered, None

    def _exit(self, entered: list[tuple[str, Generator[Any, Any, Any], bool]], result: Any, source: str, failure: _Blamed | None, hook: str) -> tuple[Any, str]:
        """Run the wrappers' teardowns, innermost first, handing each the result (or the
        exception); returns the final ``(result, plugin it came from)`` or raises PluginError."""
        for name, gen, old in reversed(entered):
            if old:
                outcome = pluggy.Result(result, failure.error if failure else None)
                try:
                    gen.send(outcome)
                    failure = _Blamed(name, RuntimeError("hookwrapper yielded twice"))
                    gen.close()
                    continue
                except StopIteration:
                    pass
                except Exception as exc:
                    failure = _Blamed(name, exc)
                    continue
                if outcome.exception is not None:
                    if failure is None or outcome.exception is not failure.error:
                        failure = _Blamed(name, outcome.exception)
                else:
                    new = outcome.get_result()
                    if failure is not None or new is not result:
                        source = name
                    result, failure = new, None
                continue
            try:
                if failure is not None:
                    gen.throw(failure.error)
                else:
                    gen.send(result)
                failure = _Blamed(name, RuntimeError("wrapper yielded twice"))
                gen.close()
            except StopIteration as stop:
                if failure is not None or stop.value is not result:
                    source = name
                result, failure = stop.value, None
            except Exception as exc:
                if failure is None or exc is not failure.error:
                    failure = _Blamed(name, exc)
        if failure is not None:
            raise PluginError(failure.plugin, hook, failure.error) from failure.error
        return result, source

    def _wrapped_sync(self, plan: Plan, args: tuple[Any, ...]) -> tuple[Any, str]:
        entered, failure = self._enter(plan, args)
        result: Any = None
        source = ""
        if failure is None:
            try:
                result, source = self._plain_sync(plan, args)
            except PluginError as exc:
                failure = _Blamed(exc.plugin, exc.error)
        return self._exit(entered, result, source, failure, plan.hook)

    def _wrapped(self, plan: Plan, args: tuple[Any, ...]) -> Any:
        entered, failure = self._enter(plan, args)
        result: Any = None
        if failure is None:
            try:
                result = self._plain(plan, args)
            except PluginError as exc:
                failure = _Blamed(exc.plugin, exc.error)
        if failure is None and result is not None and awaitable(result):
            return self._wrapped_async(plan, entered, result)
        return self._exit(entered, result, "", failure, plan.hook)[0]

    async def _wrapped_async(self, plan: Plan, entered: list[tuple[str, Generator[Any, Any, Any], bool]], pending: Awaitable[Any]) -> Any:
        failure: _Blamed | None = None
        result: Any = None
        try:
            result = await pending
        except PluginError as exc:
            failure = _Blamed(exc.plugin, exc.error)
        return self._exit(entered, result, "", failure, plan.hook)[0]
