"""Plugin discovery (entry points, one at a time) and the cached async-aware hook dispatcher.

pluggy does discovery, hookspec validation and ``tryfirst``/``trylast`` ordering. The runtime
hooks are dispatched by :class:`HookDispatcher`, a small cached caller built from the public
``pm.hook.<name>.get_hookimpls()``: it calls each implementation in pluggy's order, awaits the
result when it is awaitable (pluggy itself cannot: an ``async def`` returning None still hands
back a coroutine and would stop a first-result call), stops at the first non-None result for
first-result hooks and tags every exception with the plugin and hook that raised it.
"""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from . import hookspecs
from .config import ConfigError, Settings, format_validation_error

__all__ = [
    "ENTRY_POINT_GROUP",
    "ESSENTIAL_PLUGINS",
    "DEFAULT_ROUTE_ORDER",
    "PluginError",
    "PluginInfo",
    "HookDispatcher",
    "PluginSet",
    "discover_plugins",
]

log = logging.getLogger("airi.plugins")

ENTRY_POINT_GROUP = "airi.plugins"
#: Plugins without which the hub cannot speak the protocol: they cannot be disabled.
ESSENTIAL_PLUGINS = frozenset({"auth", "registry"})
#: Route plugins' default order; ``*`` stands for every route plugin not named here.
DEFAULT_ROUTE_ORDER = ("bypass", "policy", "destinations", "*", "consumers")
#: Hooks whose implementations must be plain functions.
SYNC_ONLY_HOOKS = frozenset({"airi_route", "airi_config_model", "airi_peer_health_changed"})
#: The hookspec argument names, in the order the dispatcher passes them.
HOOK_ARGS: dict[str, tuple[str, ...]] = {
    name: tuple(inspect.signature(getattr(hookspecs, name)).parameters)
    for name in dir(hookspecs)
    if name.startswith("airi_")
}


class PluginError(Exception):
    """A plugin's hook implementation raised (or timed out); names the plugin and the hook."""

    def __init__(self, plugin: str, hook: str, error: BaseException) -> None:
        super().__init__(f"plugin '{plugin}' failed in {hook}: {type(error).__name__}: {error}")
        self.plugin = plugin
        self.hook = hook
        self.error = error


@dataclass
class PluginInfo:
    """What ``airi plugins`` shows about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    value: str | None = None
    obj: Any = None
    enabled: bool = True
    essential: bool = False
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    route_position: int | None = None


Impl = tuple[str, Callable[..., Any]]


def _bind(fn: Callable[..., Any], argnames: tuple[str, ...], spec_args: tuple[str, ...]) -> Callable[..., Any]:
    """Adapt an implementation that declares a subset of the spec's arguments to be called with
    all of them positionally (the common full-signature case costs nothing)."""
    if argnames == spec_args:
        return fn
    idx = tuple(spec_args.index(a) for a in argnames)
    if not idx:
        return lambda *args: fn()
    if len(idx) == 1:
        (i,) = idx
        return lambda *args: fn(args[i])
    return lambda *args: fn(*[args[i] for i in idx])


class HookDispatcher:
    """Cached, async-aware calls of the runtime hooks.

    ``first(hook, *args)`` and ``each(hook, *args)`` return the result directly when every
    implementation answered synchronously, or an awaitable that finishes the call when one of
    them returned an awaitable. Arguments are passed positionally in hookspec order.
    """

    def __init__(self, pm: pluggy.PluginManager, timeout_s: float, route_order: list[str]) -> None:
        self._pm = pm
        self.timeout_s = timeout_s
        self.route_order = list(route_order)
        self._impls: dict[str, tuple[Impl, ...]] = {}
        self.rebuild()

    def rebuild(self) -> None:
        """Recompute the call lists; call after registering or unregistering a plugin."""
        impls: dict[str, tuple[Impl, ...]] = {}
        for hook, spec_args in HOOK_ARGS.items():
            caller = getattr(self._pm.hook, hook, None)
            if caller is None:
                impls[hook] = ()
                continue
            ordered = list(reversed(caller.get_hookimpls()))  # pluggy calls the list in reverse
            if hook == "airi_route":
                ordered = self._order_route(ordered)
            impls[hook] = tuple(
                (self._pm.get_name(i.plugin) or "?", _bind(i.function, tuple(i.argnames), spec_args))
                for i in ordered
            )
        self._impls = impls

    def _order_route(self, impls: list[Any]) -> list[Any]:
        def name_of(impl: Any) -> str:
            return self._pm.get_name(impl.plugin) or ""

        explicit = {n: i for i, n in enumerate(self.route_order)}
        defaults = {n: i for i, n in enumerate(DEFAULT_ROUTE_ORDER)}
        star = defaults["*"]

        def key(pair: tuple[int, Any]) -> tuple[int, int, int]:
            pos, impl = pair
            n = name_of(impl)
            if n in explicit:
                return (0, explicit[n], pos)
            return (1, defaults.get(n, star), pos)

        return [impl for _, impl in sorted(enumerate(impls), key=key)]

    def names(self, hook: str) -> list[str]:
        """Plugin names implementing ``hook``, in call order."""
        return [name for name, _ in self._impls.get(hook, ())]

    # -- calling -------------------------------------------------------------------------------
    def first(self, hook: str, *args: Any) -> Any:
        impls = self._impls[hook]
        for i, (name, fn) in enumerate(impls):
            try:
                res = fn(*args)
            except Exception as exc:
                raise PluginError(name, hook, exc) from exc
            if res is not None:
                if inspect.isawaitable(res):
                    return self._first_async(hook, impls, i, res, args)
                return res
        return None

    def first_sync(self, hook: str, *args: Any) -> Any:
        """Like :meth:`first` for hooks that must be synchronous (the route hot path)."""
        for name, fn in self._impls[hook]:
            try:
                res = fn(*args)
            except Exception as exc:
                raise PluginError(name, hook, exc) from exc
            if res is not None:
                return res
        return None

    async def _first_async(self, hook: str, impls: tuple[Impl, ...], i: int, pending: Awaitable[Any], args: tuple[Any, ...]) -> Any:
        res = await self._await(impls[i][0], hook, pending)
        if res is not None:
            return res
        for name, fn in impls[i + 1 :]:
            try:
                res = fn(*args)
            except Exception as exc:
                raise PluginError(name, hook, exc) from exc
            if inspect.isawaitable(res):
                res = await self._await(name, hook, res)
            if res is not None:
                return res
        return None

    def each(self, hook: str, *args: Any) -> Awaitable[None] | None:
        """Call every implementation; the first exception stops the call and is raised as a
        :class:`PluginError` (so one broken plugin cannot hide behind another)."""
        pending: list[tuple[str, Awaitable[Any]]] | None = None
        for name, fn in self._impls[hook]:
            try:
                res = fn(*args)
            except Exception as exc:
                raise PluginError(name, hook, exc) from exc
            if res is not None and inspect.isawaitable(res):
                if pending is None:
                    pending = []
                pending.append((name, res))
        if pending is None:
            return None
        return self._each_async(hook, pending)

    async def _each_async(self, hook: str, pending: list[tuple[str, Awaitable[Any]]]) -> None:
        error: PluginError | None = None
        for name, aw in pending:
            try:
                await self._await(name, hook, aw)
            except PluginError as exc:
                error = error or exc
        if error is not None:
            raise error

    async def _await(self, name: str, hook: str, aw: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(aw, self.timeout_s)
        except asyncio.TimeoutError as exc:
            raise PluginError(
                name, hook, TimeoutError(f"did not finish within {int(self.timeout_s * 1000)} ms")
            ) from exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise PluginError(name, hook, exc) from exc


@dataclass
class PluginSet:
    """The result of discovery: a pluggy manager with the enabled plugins registered, the
    per-plugin info for ``airi plugins`` and the validated ``[plugins.<name>]`` settings."""

    pm: pluggy.PluginManager
    infos: list[PluginInfo]
    configs: dict[str, BaseModel | None]

    def info(self, name: str) -> PluginInfo | None:
        return next((i for i in self.infos if i.name == name), None)


def _instantiate(obj: Any) -> Any:
    return obj() if inspect.isclass(obj) else obj


def _check_sync_only(obj: Any) -> None:
    for hook in SYNC_ONLY_HOOKS:
        fn = getattr(obj, hook, None)
        if fn is not None and (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
            raise TypeError(f"{hook} must be a plain function, not async")


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def discover_plugins(
    settings: Settings,
    *,
    extra: Iterable[tuple[str, Any]] = (),
    use_entry_points: bool = True,
    origin: str = "airi.toml",
) -> PluginSet:
    """Load ``airi.plugins`` entry points one at a time and register the enabled ones.

    A plugin that fails to import or register is reported (name, distribution, error) and
    skipped, unless ``[plugins] fail_on_error`` is set. ``extra`` adds ``(name, plugin)`` pairs
    (module, object or class) as if they were entry points, for tests and embedding. Raises
    :class:`ConfigError` for settings that name no plugin, disable an essential one, or fail a
    plugin's own config model.
    """
    pcfg = settings.plugins
    pm = new_plugin_manager()
    infos: list[PluginInfo] = []
    candidates: list[tuple[PluginInfo, Callable[[], Any]]] = []
    seen: set[str] = set()

    if use_entry_points:
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                distribution=dist.name if dist is not None else None,
                version=dist.version if dist is not None else None,
                value=ep.value,
            )
            if ep.name in seen:
                info.enabled = False
                info.error = "another installed plugin already uses this name"
                infos.append(info)
                continue
            seen.add(ep.name)
            candidates.append((info, ep.load))
    for name, obj in extra:
        info = PluginInfo(name=name, distribution="(registered in code)", value=repr(obj))
        if name in seen:
            raise ConfigError(f"plugin name '{name}' is used twice")
        seen.add(name)
        candidates.append((info, lambda obj=obj: obj))

    known = {info.name for info, _ in candidates}
    problems = []
    for key, listing in (("disable", pcfg.disable), ("load", pcfg.load or []), ("order", pcfg.order)):
        for n in listing:
            if n not in known:
                problems.append(f"{origin}: plugins.{key}: no installed plugin is named '{n}' (installed: {', '.join(sorted(known))})")
    for n in pcfg.disable:
        if n in ESSENTIAL_PLUGINS:
            problems.append(f"{origin}: plugins.disable: '{n}' is essential and cannot be disabled")
    for n in pcfg.sections():
        if n not in known:
            problems.append(f"{origin}: plugins.{n}: no installed plugin is named '{n}'")
    if problems:
        raise ConfigError("\n".join(problems))

    allow = set(pcfg.load) | ESSENTIAL_PLUGINS if pcfg.load is not None else None
    for info, load in candidates:
        info.essential = info.name in ESSENTIAL_PLUGINS
        if info.name in pcfg.disable or (allow is not None and info.name not in allow):
            info.enabled = False
            infos.append(info)
            continue
        try:
            obj = _instantiate(load())
            _check_sync_only(obj)
            pm.register(obj, name=info.name)
        except Exception as exc:  # a broken plugin must not make the hub unusable
            info.enabled = False
            info.error = f"{type(exc).__name__}: {exc}"
            infos.append(info)
            if pcfg.fail_on_error or info.essential:
                raise ConfigError(f"plugin '{info.name}' ({info.distribution}) failed to load: {info.error}") from exc
            log.error("plugin %r (%s) failed to load and is skipped: %s", info.name, info.distribution, info.error)
            continue
        info.obj = obj
        info.hooks = sorted(c.name for c in pm.get_hookcallers(obj) or [])
        infos.append(info)

    pm.check_pending()

    configs: dict[str, BaseModel | None] = {}
    errors = []
    for info in infos:
        if not info.enabled:
            continue
        model = None
        fn = getattr(info.obj, "airi_config_model", None)
        if fn is not None and getattr(fn, "airi_impl", None) is not None:
            model = fn()
        section = pcfg.section(info.name)
        if model is None:
            if section:
                errors.append(f"{origin}: plugins.{info.name}: this plugin takes no settings")
            configs[info.name] = None
            continue
        try:
            configs[info.name] = model.model_validate(section)
        except ValidationError as exc:
            errors.append(format_validation_error(exc, origin, prefix=("plugins", info.name)))
    if errors:
        raise ConfigError("\n".join(errors))

    dispatcher = HookDispatcher(pm, 1.0, pcfg.order)
    for pos, n in enumerate(dispatcher.names("airi_route")):
        info = next(i for i in infos if i.name == n)
        info.route_position = pos + 1
    return PluginSet(pm=pm, infos=infos, configs=configs)
