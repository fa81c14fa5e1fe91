"""The server's commands of ``airi``: ``serve``, ``plugins``, ``config check``."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .. import __version__
from .config import ConfigError, Settings, default_config_path, load_settings
from .plugins import PluginSet, discover_plugins

EXIT_CONFIG = 2


def _settings_from(args: argparse.Namespace, path_arg: str | None) -> tuple[Settings, str | None]:
    path: Path | None = Path(path_arg) if path_arg else default_config_path()
    overrides: dict[tuple[str, ...], tuple[str, Any]] = {}
    if getattr(args, "host", None) is not None:
        overrides[("server", "host")] = ("--host", args.host)
    if getattr(args, "port", None) is not None:
        overrides[("server", "port")] = ("--port", args.port)
    if getattr(args, "log_level", None) is not None:
        overrides[("logging", "level")] = ("--log-level", args.log_level)
    if getattr(args, "log_format", None) is not None:
        overrides[("logging", "format")] = ("--log-format", args.log_format)
    settings = load_settings(path, overrides=overrides)
    return settings, str(path) if path is not None else None


def _load(args: argparse.Namespace, path_arg: str | None) -> tuple[Settings, PluginSet, str | None]:
    settings, origin = _settings_from(args, path_arg)
    plugins = discover_plugins(settings, origin=origin or "airi.toml")
    return settings, plugins, origin


def _fail(err: Exception) -> int:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print("[bold red]error:[/] invalid configuration", markup=True)
    console.print(str(err), markup=False)
    return EXIT_CONFIG


def _section_config(plugins: PluginSet, section: str) -> Any:
    """The validated settings of the enabled plugin that owns ``[section]``, if any."""
    owner = next((i for i in plugins.infos if i.enabled and i.section == (section,)), None)
    return plugins.configs.get(owner.name) if owner is not None else None


def _summary(hub: Any, origin: str | None) -> None:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    plugins: PluginSet = hub.plugins
    route = plugins.route_chain()
    wrappers = plugins.route_wrappers()
    enabled = [i.name for i in plugins.infos if i.enabled]
    broken = [i for i in plugins.infos if i.error]
    auth = _section_config(plugins, "auth")
    heartbeat = _section_config(plugins, "heartbeat")
    console.print(f"[bold]AIRI hub[/] {__version__} listening on [bold cyan]{hub.url}[/]")
    console.print(f"  config      {origin or '(none: built-in defaults)'}")
    credentials = ["token"] if getattr(auth, "secret", "") else []
    clients = len(getattr(auth, "clients", None) or ())  # [[auth.clients]]
    if clients:
        credentials.append(f"{clients} client{'s' if clients != 1 else ''}")
    auth_line = f"[green]on[/] ({', '.join(credentials)})" if credentials else "[yellow]off[/] (no token configured)"
    console.print(f"  auth        {auth_line}")
    console.print(f"  wire format {hub.settings.server.wire_format}")
    if heartbeat is not None:
        console.print(f"  heartbeat   read timeout {heartbeat.read_timeout_ms} ms, check every {heartbeat.interval_ms} ms")
    console.print(f"  plugins     {', '.join(enabled)}")
    if wrappers:
        console.print(f"  route wrap  {', '.join(wrappers)} (around every route plugin)")
    console.print(f"  route order {' -> '.join(route) if route else '(none)'}")
    for info in broken:
        console.print(f"  [red]skipped[/]     {info.name} ({info.distribution}): {info.error}", markup=True)


#: Signals whose default action would end the hub without closing anyone: logged and ignored.
#: (SIGHUP will mean "reload the configuration" once that exists.)
IGNORED_SIGNALS: dict[str, str] = {
    "SIGHUP": "reload is not supported yet; ignoring",
    "SIGUSR1": "ignoring",
    "SIGUSR2": "ignoring",
}


def _ignored_signals() -> list[tuple[signal.Signals, str]]:
    return [(getattr(signal, name), note) for name, note in IGNORED_SIGNALS.items() if hasattr(signal, name)]


def raise_fd_limit(log: logging.Logger) -> None:
    """Raise the soft limit on open files to the hard limit (each connection is a file
    descriptor; distributions often start processes with a soft limit of 1024)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        log.debug("open-file limit: %s (hard %s)", soft, hard)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return
    log.info("raised the open-file limit from %d to %d", soft, hard)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only reaches this machine (``0.0.0.0``, ``::`` and names other
    than ``localhost`` do not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _serve(settings: Settings, plugins: PluginSet, origin: str | None) -> int:
    from .kernel import Hub

    hub = Hub(settings, plugins)
    # handlers first: a signal that arrives while binding must still mean a clean shutdown
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for sig, note in _ignored_signals():
        loop.add_signal_handler(sig, hub.log.warning, "received %s: %s", sig.name, note)
    try:
        await hub.start()
    except OSError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] cannot listen on {settings.server.host}:{settings.server.port}: {exc.strerror or exc}")
        return 1
    _summary(hub, origin)
    auth = _section_config(plugins, "auth")
    if not is_loopback(settings.server.host) and not getattr(auth, "enabled", getattr(auth, "secret", "")):
        hub.log.warning(
            "listening on %s without a token: anyone who can reach this address can join, read "
            "every broadcast and send as any module; set [auth] token (or AUTHENTICATION_TOKEN), "
            "or bind 127.0.0.1",
            settings.server.host,
        )
    await stop.wait()
    hub.log.info("shutting down: closing %d peers", len(hub.registry))
    await hub.shutdown()
    hub.log.info("stopped")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # until the loop's handlers are in place (see _serve), these must not end the process
    for sig, _ in _ignored_signals():
        signal.signal(sig, signal.SIG_IGN)
    try:
        settings, plugins, origin = _load(args, args.config)
    except ConfigError as exc:
        return _fail(exc)
    from .logs import setup_logging

    lg = settings.logging
    setup_logging(
        lg.level, lg.format, lg.websocket_level, lg.websocket_format,
        max_message_chars=lg.max_message_chars, peer_lines_per_second=lg.peer_lines_per_second,
    )
    raise_fd_limit(logging.getLogger("airi"))
    try:
        factory = loop_factory(settings.server.event_loop)
    except ConfigError as exc:
        return _fail(exc)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_serve(settings, plugins, origin))


def loop_factory(choice: str) -> Any:
    """The event loop for ``[server] event_loop``: ``asyncio`` (the stdlib's), ``uvloop``
    (must be installed: ``pip install 'airi-hub[uvloop]'``) or ``auto`` (uvloop when installed)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("server.event_loop: 'uvloop' is not installed (pip install 'airi-hub[uvloop]')") from None
        return None
    return uvloop.new_event_loop


def cmd_plugins(args: argparse.Namespace) -> int:
    try:
        settings, plugins, _ = _load(args, args.config)
    except ConfigError as exc:
        return _fail(exc)
    if args.json:
        rows = [
            {
                "name": i.name, "distribution": i.distribution, "version": i.version, "hooks": i.hooks,
                "enabled": i.enabled, "essential": i.essential, "route_order": i.route_position,
                "route_wrapper": i.route_wrapper, "config": i.config_key, "error": i.error,
            }
            for i in plugins.infos
        ]
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="AIRI hub plugins", title_justify="left")
    for col in ("name", "distribution", "version"):
        table.add_column(col, no_wrap=True)
    table.add_column("hooks", overflow="fold")
    table.add_column("enabled", no_wrap=True)
    table.add_column("order", no_wrap=True)
    for i in plugins.infos:
        hooks = ", ".join(h.removeprefix("airi_") for h in i.hooks) or "-"
        enabled = "[red]failed[/]" if i.error else ("yes" + (" (essential)" if i.essential else "") if i.enabled else "[dim]no[/]")
        table.add_row(i.name, i.distribution or "-", i.version or "-", hooks, enabled, "wraps" if i.route_wrapper else str(i.route_position or "-"))
    # not a terminal (a pipe, a CI log): do not squeeze names into 80 columns
    console = Console(soft_wrap=False) if sys.stdout.isatty() else Console(width=200, soft_wrap=False)
    console.print(table)
    for i in plugins.infos:
        if i.error:
            console.print(f"[red]{i.name}[/] ({i.distribution}): {i.error}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        settings, plugins, origin = _load(args, args.path)
    except ConfigError as exc:
        return _fail(exc)
    shown = settings.model_dump(mode="json")
    for info in plugins.infos:
        config = plugins.configs.get(info.name) if info.enabled else None
        if config is None:
            continue
        node = shown
        path = info.section or ("plugins", info.name)
        for key in path[:-1]:
            node = node.setdefault(key, {})
        # SecretStr fields (tokens) dump as "**********": never print a secret
        node.setdefault(path[-1], {}).update(config.model_dump(mode="json"))
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[green]ok[/]: {origin or 'no config file, built-in defaults'}")
    console.print_json(json.dumps(shown))
    return 0


def add_server_commands(sub: Any) -> None:
    """Add ``serve``, ``plugins`` and ``config check`` to the ``airi`` parser."""
    p = sub.add_parser("serve", help="run the hub (uses ./airi.toml when present)")
    p.add_argument("--config", metavar="PATH", help="config file (default: ./airi.toml if it exists)")
    p.add_argument("--host", help="address to bind (overrides [server] host and HOST)")
    p.add_argument("--port", type=int, help="TCP port (overrides [server] port and PORT)")
    p.add_argument("--log-level", choices=["trace", "debug", "log", "warn", "error"])
    p.add_argument("--log-format", choices=["pretty", "json"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("plugins", help="list discovered plugins")
    p.add_argument("--config", metavar="PATH")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    c = csub.add_parser("check", help="validate a config file (default ./airi.toml) and print the effective settings")
    c.add_argument("path", nargs="?")
    c.set_defaults(func=cmd_config_check)
