"""Reloading the configuration of a running hub (``SIGHUP`` to ``airi serve``).

:func:`reload_hub` takes freshly loaded :class:`~airi_core.server.config.Settings` (the same
file, environment and command-line flags as at start), validates every plugin's table again,
and applies what can change live without dropping a connection:

- ``[auth]`` (tokens, clients, throttling), ``[routing.policy]``, ``[routing]``,
  ``[heartbeat]`` and every ``[plugins.<name>]`` table: each plugin takes its new settings in
  its ``airi_reload`` hook (a plugin without one keeps its old settings, reported as needing a
  restart);
- ``[limits]`` but the three fixed per socket when it opens (:data:`RESTART_ONLY`);
  ``max_messages_per_second`` applies to connections opened after the reload;
- ``[logging]`` (level, format...): the caller re-installs the handlers (``configure_logging``);
- ``server.allowed_origins`` / ``builtin_origins`` / ``drain_timeout_ms``,
  ``plugins.hook_timeout_ms``, ``http.metrics_token``.

What cannot change live (:data:`RESTART_ONLY`: address, path, TLS files, the plugin set and
order, the HTTP endpoints' presence, discovery) keeps its old value and is reported as needing a
restart. An invalid new configuration changes nothing: the caller logs the same key-path
messages as at start (:class:`~airi_core.server.config.ConfigError`) and the hub runs on.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .config import ConfigError, Settings
from .plugins import _validate_configs

if TYPE_CHECKING:
    from .kernel import Hub

__all__ = ["RESTART_ONLY", "ReloadReport", "reload_hub"]

log = logging.getLogger("airi")

#: key paths that keep their value until the hub restarts
RESTART_ONLY: tuple[tuple[str, ...], ...] = (
    ("server", "host"),
    ("server", "port"),
    ("server", "path"),
    ("server", "tls"),
    ("server", "instance_id"),
    ("server", "wire_format"),
    ("server", "event_loop"),
    ("limits", "max_frame_bytes"),
    ("limits", "outbound_soft_bytes"),
    ("limits", "close_timeout_ms"),
    ("plugins", "disable"),
    ("plugins", "load"),
    ("plugins", "order"),
    ("plugins", "fail_on_error"),
    ("http", "enabled"),
    ("http", "metrics"),
    ("discovery",),
)

#: the kernel's sections (compared as a whole for ``changed``)
_KERNEL_SECTIONS = ("server", "limits", "logging", "plugins", "http", "discovery")


@dataclass
class ReloadReport:
    """What a reload changed."""

    #: dotted keys of the tables whose values changed (what ``airi_reload`` gets)
    changed: list[str] = field(default_factory=list)
    #: dotted keys that changed but keep their old value until a restart
    restart_needed: list[str] = field(default_factory=list)
    #: plugins whose ``airi_reload`` failed: "name: error"
    failures: list[str] = field(default_factory=list)


def _get(model: Any, path: tuple[str, ...]) -> Any:
    node = model
    for key in path:
        node = getattr(node, key)
    return node


def _set(model: Any, path: tuple[str, ...], value: Any) -> None:
    node = model
    for key in path[:-1]:
        node = getattr(node, key)
    setattr(node, path[-1], value)


def _dump(value: Any) -> Any:
    # python mode: SecretStr values compare by their secret (the json dump masks them all alike)
    return value.model_dump() if isinstance(value, BaseModel) else value


def _plugin_configs(hub: Hub, settings: Settings, origin: str) -> dict[str, BaseModel | None]:
    """Every enabled plugin's table validated again (the plugin set stays as it is); raises
    :class:`ConfigError` with the same messages as at start."""
    infos = hub.plugins.infos
    known = {i.name for i in infos}
    claimed = {i.section: i.name for i in infos if i.section}
    problems = [f"{origin}: plugins.{n}: no installed plugin is named '{n}'" for n in settings.plugins.sections() if n not in known]
    problems += [f"{origin}: {key}: unknown key" for key in settings.plugin_sections() if not any(s[0] == key for s in claimed)]
    if problems:
        raise ConfigError("\n".join(problems))
    return _validate_configs(settings, [i for i in infos if i.enabled and i.obj is not None], claimed, origin)


def _reloaders(hub: Hub) -> dict[str, list[Any]]:
    """Plugin name -> its ``airi_reload`` implementations."""
    out: dict[str, list[Any]] = {}
    caller = getattr(hub.plugins.pm.hook, "airi_reload", None)
    for impl in caller.get_hookimpls() if caller is not None else []:
        name = hub.plugins.pm.get_name(impl.plugin) or impl.plugin_name
        out.setdefault(name, []).append(impl)
    return out


async def reload_hub(
    hub: Hub,
    settings: Settings,
    origin: str | None = None,
    *,
    configure_logging: Callable[[Settings], None] | None = None,
) -> ReloadReport:
    """Apply ``settings`` to the running ``hub`` (see the module docstring). Raises
    :class:`ConfigError` (and changes nothing) when a plugin's table is invalid."""
    origin = origin or settings.origin
    configs = _plugin_configs(hub, settings, origin)  # before anything changes
    old = hub.settings
    report = ReloadReport()

    for path in RESTART_ONLY:
        before, after = _get(old, path), _get(settings, path)
        if _dump(before) != _dump(after):
            report.restart_needed.append(".".join(path))
            _set(settings, path, before)  # the running hub goes on with what it was started with
    for section in _KERNEL_SECTIONS:
        if _dump(getattr(old, section)) != _dump(getattr(settings, section)):
            report.changed.append(section)

    reloaders = _reloaders(hub)
    owners: dict[str, str] = {}
    for info in hub.plugins.infos:
        if not info.enabled or info.name not in configs:
            continue
        key = info.config_key
        owners[key] = info.name
        if _dump(hub.plugins.configs.get(info.name)) == _dump(configs[info.name]):
            continue
        if info.name in reloaders:
            report.changed.append(key)
            hub.plugins.configs[info.name] = configs[info.name]
        else:
            report.restart_needed.append(f"{key} (plugin '{info.name}' has no airi_reload hook)")

    # the kernel's live settings
    hub.settings = settings
    hub._hooks.timeout_s = settings.plugins.hook_timeout_ms / 1000
    hub._transport.reconfigure(settings)
    if hub.http is not None:
        hub.http.configure()
    if configure_logging is not None and "logging" in report.changed:
        configure_logging(settings)

    changed = frozenset(report.changed)
    if changed:
        for name, impls in reloaders.items():
            for impl in impls:
                try:
                    args = {"hub": hub, "changed": changed}
                    res = impl.function(*[args[a] for a in impl.argnames])
                    if inspect.isawaitable(res):
                        await res
                except Exception as exc:
                    hub.stats["plugin_errors"] += 1
                    hub.counts.plugin_failures.add(name, "airi_reload")
                    report.failures.append(f"{name}: {type(exc).__name__}: {exc}")
                    log.error("plugin '%s' failed in airi_reload: %s: %s", name, type(exc).__name__, exc)
    return report
