"""Plugin discovery: entry points loaded one at a time, plugin settings validated, the result
kept in a :class:`PluginSet`.

A plugin may declare two things as attributes of its class (or module), read before anything is
instantiated:

- ``airi_essential = True``: the hub cannot run without it, so ``[plugins] disable`` and
  ``load`` cannot leave it out, and a failure to load it is fatal;
- ``airi_config_section = "auth"``: its settings (validated by the model its
  ``airi_config_model`` hook returns) are read from that table of ``airi.toml`` (a dotted path
  such as ``routing.policy`` names a sub-table) instead of ``[plugins.<name>]``.

The kernel names no plugin: built-ins use these declarations like any third-party plugin.
"""

from __future__ import annotations

import importlib.metadata as md
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from .config import ConfigError, Settings, format_validation_error
from .hooks import SYNC_ONLY_HOOKS, Hooks, PluginManager, config_model

__all__ = ["ENTRY_POINT_GROUP", "PluginInfo", "PluginSet", "discover_plugins", "is_essential", "config_section"]

log = logging.getLogger("airi.plugins")

ENTRY_POINT_GROUP = "airi.plugins"


def is_essential(obj: Any) -> bool:
    """Whether a plugin declares itself essential (``airi_essential = True``)."""
    return getattr(obj, "airi_essential", False) is True


def config_section(obj: Any) -> tuple[str, ...] | None:
    """The ``airi.toml`` table a plugin declares as its own (``airi_config_section``), as a key path."""
    section = getattr(obj, "airi_config_section", None)
    return tuple(section.split(".")) if isinstance(section, str) and section else None


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
    section: tuple[str, ...] | None = None
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    route_position: int | None = None
    route_wrapper: bool = False

    @property
    def config_key(self) -> str:
        """Where its settings live in ``airi.toml``: ``auth``, ``plugins.<name>``..."""
        return ".".join(self.section) if self.section else f"plugins.{self.name}"


@dataclass
class PluginSet:
    """The result of discovery: a plugin manager with the enabled plugins registered, what
    ``airi plugins`` shows about each, and each plugin's validated settings."""

    pm: PluginManager
    infos: list[PluginInfo]
    configs: dict[str, BaseModel | None]
    #: ``[plugins] order``
    order: list[str] = field(default_factory=list)

    def route_chain(self) -> list[str]:
        """The plugins implementing ``airi_route``, in the order they are asked."""
        return Hooks(self.pm, 1.0, self.order).names("airi_route")

    def route_wrappers(self) -> list[str]:
        """The plugins wrapping every ``airi_route`` call (``wrapper=True``), outermost first."""
        return Hooks(self.pm, 1.0, self.order).wrapper_names("airi_route")

    def info(self, name: str) -> PluginInfo | None:
        return next((i for i in self.infos if i.name == name), None)

    def get(self, name: str) -> Any:
        """The plugin object registered as ``name`` (None when there is none): how one plugin
        reaches another's public methods (the cluster link uses ``consumers`` and ``auth``)."""
        return self.pm.get_plugin(name)

    def config_of(self, plugin: str | object) -> BaseModel | None:
        """The validated settings of a plugin given by name or by the registered object."""
        name = plugin if isinstance(plugin, str) else self.pm.get_name(plugin)
        return self.configs.get(name) if name is not None else None

    def register(self, plugin: Any, name: str) -> None:
        """Register a plugin object at run time; the hub calls it from the next hook call on.
        (Its settings, if it declares a model, take their defaults.)"""
        _check_sync_only(plugin)
        self.pm.register(plugin, name=name)
        model = config_model(plugin)
        self.configs[name] = model() if model is not None else None
        info = PluginInfo(name=name, distribution="(registered at run time)", obj=plugin, essential=is_essential(plugin))
        info.hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
        self.infos.append(info)

    def unregister(self, name: str) -> None:
        """Unregister a plugin at run time (an essential one cannot be)."""
        info = self.info(name)
        if info is not None and info.essential:
            raise ValueError(f"plugin '{name}' is essential and cannot be unregistered")
        self.pm.unregister(name=name)
        self.configs.pop(name, None)
        if info is not None:
            info.enabled = False


def _given(obj: Any) -> Callable[[], Any]:
    return lambda: obj


def _instantiate(obj: Any) -> Any:
    return obj() if inspect.isclass(obj) else obj


def _check_sync_only(obj: Any) -> None:
    for hook in SYNC_ONLY_HOOKS:
        fn = getattr(obj, hook, None)
        if fn is not None and (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
            raise TypeError(f"{hook} must be a plain function, not async")


def _table(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def discover_plugins(
    settings: Settings,
    *,
    extra: Iterable[tuple[str, Any]] = (),
    use_entry_points: bool = True,
    origin: str | None = None,
    strict: bool = True,
) -> PluginSet:
    """Load ``airi.plugins`` entry points one at a time and register the enabled ones.

    A plugin that fails to import or register is reported (name, distribution, error) and
    skipped, unless ``[plugins] fail_on_error`` is set, it is essential, or (with ``strict``,
    the default) the configuration names it in ``[plugins] order`` or ``load`` or has a
    ``[plugins.<name>]`` table for it. ``extra`` adds
    ``(name, plugin)`` pairs (module, object or class) as if they were entry points, for tests
    and embedding; one with the name of an installed entry point replaces it. Raises
    :class:`ConfigError` for settings that name no plugin, leave out an essential one, fail a
    plugin's settings model, or are read by no plugin.
    """
    origin = origin or settings.origin
    pcfg = settings.plugins
    pm = PluginManager()
    candidates: dict[str, tuple[PluginInfo, Callable[[], Any]]] = {}
    infos: list[PluginInfo] = []

    if use_entry_points:
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, dist.name if dist is not None else None, dist.version if dist is not None else None, ep.value)
            if ep.name in candidates:
                info.enabled = False
                info.error = "another installed plugin already uses this name"
                infos.append(info)
                continue
            candidates[ep.name] = (info, ep.load)
    extra_names: set[str] = set()
    for name, obj in extra:
        if name in extra_names:
            raise ConfigError(f"plugin name '{name}' is used twice")
        extra_names.add(name)
        candidates[name] = (PluginInfo(name, "(registered in code)", value=repr(obj)), _given(obj))

    # what each candidate declares (importing it, but instantiating nothing yet)
    loaded: dict[str, Any] = {}
    for name, (info, load) in candidates.items():
        try:
            loaded[name] = obj = load()
            info.essential = is_essential(obj)
            info.section = config_section(obj)
        except Exception as exc:  # a broken plugin must not make the hub unusable
            info.error = f"{type(exc).__name__}: {exc}"

    known = set(candidates)
    problems = []
    for key, listing in (("disable", pcfg.disable), ("load", pcfg.load or []), ("order", pcfg.order)):
        for n in listing:
            if n not in known:
                problems.append(f"{origin}: plugins.{key}: no installed plugin is named '{n}' (installed: {', '.join(sorted(known))})")
    for n in pcfg.disable:
        if n in candidates and candidates[n][0].essential:
            problems.append(f"{origin}: plugins.disable: '{n}' is essential and cannot be disabled")
    for n in pcfg.sections():
        if n not in known:
            problems.append(f"{origin}: plugins.{n}: no installed plugin is named '{n}'")
    claimed = {info.section: info.name for info, _ in candidates.values() if info.section}
    for key in settings.plugin_sections():
        if not any(section[0] == key for section in claimed):
            problems.append(f"{origin}: {key}: unknown key")
    if problems:
        raise ConfigError("\n".join(problems))

    # where airi.toml names each plugin: a named plugin that fails to load is fatal (strict)
    named: dict[str, list[str]] = {}
    for key, listing in (("plugins.order", pcfg.order), ("plugins.load", pcfg.load or [])):
        for n in listing:
            named.setdefault(n, []).append(key)
    for n in pcfg.sections():
        named.setdefault(n, []).append(f"[plugins.{n}]")
    for name, (info, _) in candidates.items():
        infos.append(info)
        if not info.essential and (name in pcfg.disable or (pcfg.load is not None and name not in pcfg.load)):
            info.enabled = False  # (a disabled plugin that failed to import is only reported)
            continue
        if info.error is not None:
            info.enabled = False
            if strict and name in named:
                # the operator asked for this plugin: serving without it would drop the rules
                # they configured
                raise ConfigError(
                    f"{origin}: plugin '{name}' ({info.distribution}) is named in the configuration "
                    f"({', '.join(named[name])}) but failed to load: {info.error}"
                )
            if pcfg.fail_on_error or name in extra_names:
                raise ConfigError(f"plugin '{name}' ({info.distribution}) failed to load: {info.error}")
            log.error("plugin %r (%s) failed to load and is skipped: %s", name, info.distribution, info.error)
            continue
        try:
            obj = _instantiate(loaded[name])
            _check_sync_only(obj)
            pm.register(obj, name=name)
        except Exception as exc:
            info.enabled = False
            info.error = f"{type(exc).__name__}: {exc}"
            if pcfg.fail_on_error or info.essential:
                raise ConfigError(f"plugin '{name}' ({info.distribution}) failed to load: {info.error}") from exc
            log.error("plugin %r (%s) failed to load and is skipped: %s", name, info.distribution, info.error)
            continue
        info.obj = obj
        info.hooks = sorted(c.name for c in pm.get_hookcallers(obj) or [])
    pm.check_pending()

    plugins = PluginSet(pm, infos, _validate_configs(settings, infos, claimed, origin), list(pcfg.order))
    route = plugins.route_chain()
    wrappers = plugins.route_wrappers()
    for info in infos:
        if info.name in route:
            info.route_position = route.index(info.name) + 1
        info.route_wrapper = info.name in wrappers
    return plugins


def _validate_configs(
    settings: Settings, infos: list[PluginInfo], claimed: dict[tuple[str, ...], str], origin: str
) -> dict[str, BaseModel | None]:
    """Each enabled plugin's settings, validated by the model it declares."""
    configs: dict[str, BaseModel | None] = {}
    errors = []
    raw = settings.plugin_sections()
    for info in infos:
        if not info.enabled:
            continue
        model = config_model(info.obj)
        path = info.section or ("plugins", info.name)
        if info.section and settings.plugins.section(info.name):
            errors.append(f"{origin}: plugins.{info.name}: this plugin reads its settings from [{'.'.join(info.section)}]")
        table = _table(raw, info.section) if info.section else settings.plugins.section(info.name)
        if table is None:
            table = {}
        elif isinstance(table, dict):
            # a sub-table another plugin owns (routing.policy inside routing) is not ours
            table = {k: v for k, v in table.items() if path + (k,) not in claimed}
        if model is None:
            if table:
                errors.append(f"{origin}: {'.'.join(path)}: this plugin takes no settings")
            configs[info.name] = None
            continue
        try:
            configs[info.name] = model.model_validate(table)
        except ValidationError as exc:
            errors.append(format_validation_error(exc, origin, settings.sources, prefix=path))
    if errors:
        raise ConfigError("\n".join(errors))
    return configs
