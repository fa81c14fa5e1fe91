"""The ``airi`` command: ``serve``, ``plugins``, ``config check``."""

from __future__ import annotations

import argparse
import asyncio
import json

import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import __version__
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


def _summary(hub: Any, origin: str | None) -> None:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    s = hub.settings
    route = hub.hooks.names("airi_route")
    enabled = [i.name for i in hub.plugins.infos if i.enabled]
    broken = [i for i in hub.plugins.infos if i.error]
    console.print(f"[bold]AIRI hub[/] {__version__} listening on [bold cyan]{hub.url}[/]")
    console.print(f"  config      {origin or '(none: built-in defaults)'}")
    console.print(f"  auth        {'[green]on[/] (token)' if s.auth.secret else '[yellow]off[/] (no token configured)'}")
    console.print(f"  wire format {s.server.wire_format}")
    console.print(f"  heartbeat   read timeout {s.heartbeat.read_timeout_ms} ms, check every {s.heartbeat.interval_ms} ms")
    console.print(f"  plugins     {', '.join(enabled)}")
    console.print(f"  route order {' -> '.join(route) if route else '(none)'}")
    for info in broken:
        console.print(f"  [red]skipped[/]     {info.name} ({info.distribution}): {info.error}", markup=True)


async def _serve(settings: Settings, plugins: PluginSet, origin: str | None) -> int:
    from .hub import Hub

    hub = Hub(settings, plugins)
    # handlers first: a signal that arrives while binding must still mean a clean shutdown
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await hub.start()
    except OSError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] cannot listen on {settings.server.host}:{settings.server.port}: {exc.strerror or exc}")
        return 1
    _summary(hub, origin)
    await stop.wait()
    hub.log.info("shutting down: closing %d peers", len(hub.registry))
    await hub.shutdown()
    hub.log.info("stopped")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings, plugins, origin = _load(args, args.config)
    except ConfigError as exc:
        return _fail(exc)
    from .logs import setup_logging

    lg = settings.logging
    setup_logging(lg.level, lg.format, lg.websocket_level, lg.websocket_format)
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
                "enabled": i.enabled, "essential": i.essential, "route_order": i.route_position, "error": i.error,
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
        table.add_row(i.name, i.distribution or "-", i.version or "-", hooks, enabled, str(i.route_position or "-"))
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
    if settings.auth.secret:
        shown["auth"]["token"] = "***"  # never print the token
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[green]ok[/]: {origin or 'no config file, built-in defaults'}")
    console.print_json(json.dumps(shown))
    return 0


def _run_tool(main: Any) -> int:
    """Run a client tool's coroutine; Ctrl-C exits 130 without a traceback."""
    try:
        return int(asyncio.run(main))
    except KeyboardInterrupt:
        return 130


def cmd_tail(args: argparse.Namespace) -> int:
    """``airi tail``: print events live, one per line."""
    from .client_cli import run_tail

    return _run_tool(run_tail(args))


def cmd_send(args: argparse.Namespace) -> int:
    """``airi send TYPE [JSON]``: send one event and print the replies."""
    from .client_cli import run_send

    return _run_tool(run_send(args, args.parser))


def cmd_modules(args: argparse.Namespace) -> int:
    """``airi modules``: the hub's module registry as a table, with health."""
    from .client_cli import run_modules

    return _run_tool(run_modules(args))


def _add_client_args(p: argparse.ArgumentParser, name: str) -> None:
    """Options shared by ``tail``, ``send`` and ``modules`` (the client code loads only when one
    of them runs)."""
    p.add_argument("--url", default=None, help="hub WebSocket URL (default: $AIRI_HUB_URL or ws://127.0.0.1:6121/ws)")
    p.add_argument("--token", default=None, help="authentication token (default: $AIRI_HUB_TOKEN or $AUTHENTICATION_TOKEN)")
    p.add_argument("--timeout", type=_positive, default=10.0, metavar="SECONDS", help="how long to try reaching the hub (default 10)")
    p.add_argument("--name", default=name, help=f"module name to use (default {name})")


_PREVIEW_CHARS = 120  # default length of the data preview in tail/send lines


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _not_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _add_client_commands(sub: Any) -> None:
    positive, count = _positive, _count

    p = sub.add_parser("tail", help="print the events a hub routes, live, one per line")
    _add_client_args(p, "airi-tail")
    p.add_argument("--type", action="append", metavar="GLOB",
                   help="only event types matching GLOB (repeatable; default: every event but heartbeats)")
    p.add_argument("--json", action="store_true", help="print each event as one line of raw JSON")
    p.add_argument("--count", type=count, metavar="N", help="exit after N events")
    p.add_argument("--seconds", type=positive, metavar="S", help="exit after S seconds")
    p.add_argument("--announce", action="store_true",
                   help="announce as module --name (then module:NAME destinations reach it too)")
    p.add_argument("--preview", type=count, default=_PREVIEW_CHARS, metavar="CHARS", help="data preview length")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("send", help="send one event and print any reply")
    _add_client_args(p, "airi-send")
    p.add_argument("type", metavar="TYPE", help="event type, e.g. input:text")
    p.add_argument("data", metavar="JSON", nargs="?", help="event data, a JSON object (default {})")
    p.add_argument("--to", action="append", metavar="DESTINATION",
                   help="route.destinations entry, e.g. module:NAME, plugin:ID, label:k=v (repeatable)")
    p.add_argument("--route", metavar="JSON", help="the whole route object, e.g. '{\"delivery\": {\"required\": true}}'")
    p.add_argument("--wait", type=_not_negative, default=2.0, metavar="S", help="seconds to wait for replies (default 2; 0: none)")
    p.add_argument("--count", type=count, metavar="N", help="stop after N replies")
    p.add_argument("--all", action="store_true", help="print every event from a module while waiting, not just replies")
    p.add_argument("--json", action="store_true", help="print replies as raw JSON lines")
    p.add_argument("--preview", type=count, default=_PREVIEW_CHARS, metavar="CHARS", help="data preview length")
    p.set_defaults(func=cmd_send, parser=p)

    p = sub.add_parser("modules", help="print the hub's module registry, with health")
    _add_client_args(p, "airi-modules")
    p.add_argument("--wait", type=_not_negative, default=0.5, metavar="S",
                   help="seconds to listen for health reports before printing (default 0.5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_modules)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airi", description="The AIRI hub: a plugin-extensible WebSocket server for AIRI modules.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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

    _add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_CONFIG if args.command is None and argv else 0
    return int(func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
