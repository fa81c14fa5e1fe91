"""The server's commands of ``airi``: ``serve``, ``plugins``, ``config check``, ``discover``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .. import __version__
from .config import ConfigError, Settings, default_config_path, is_loopback, load_settings
from .plugins import PluginSet, discover_plugins

EXIT_CONFIG = 2


def _settings_from(args: argparse.Namespace, path_arg: str | None) -> tuple[Settings, str | None]:
    path: Path | None = Path(path_arg) if path_arg else default_config_path()
    return _settings_at(args, path), str(path) if path is not None else None


def _settings_at(args: argparse.Namespace, path: Path | None) -> Settings:
    """The settings from ``path`` (None: defaults), the environment and the command's flags."""
    overrides: dict[tuple[str, ...], tuple[str, Any]] = {}
    if getattr(args, "host", None) is not None:
        overrides[("server", "host")] = ("--host", args.host)
    if getattr(args, "port", None) is not None:
        overrides[("server", "port")] = ("--port", args.port)
    if getattr(args, "log_level", None) is not None:
        overrides[("logging", "level")] = ("--log-level", args.log_level)
    if getattr(args, "log_format", None) is not None:
        overrides[("logging", "format")] = ("--log-format", args.log_format)
    return load_settings(path, overrides=overrides)


def _load(args: argparse.Namespace, path_arg: str | None, strict: bool = True) -> tuple[Settings, PluginSet, str | None]:
    settings, origin = _settings_from(args, path_arg)
    plugins = discover_plugins(settings, origin=origin or "airi.toml", strict=strict)
    return settings, plugins, origin


def _fail(err: Exception, fmt: str | None = None) -> int:
    if fmt == "json":
        # one JSON object a line, like every other line of a hub started with --log-format json
        from .logs import JsonFormatter

        formatter = JsonFormatter()
        lines = ["invalid configuration", *str(err).splitlines()]
        for line in lines:
            record = logging.LogRecord("airi", logging.ERROR, __file__, 0, line, (), None)
            print(formatter.format(record), file=sys.stderr)
        return EXIT_CONFIG
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print("[bold red]error:[/] invalid configuration", markup=True)
    console.print(str(err), markup=False)
    return EXIT_CONFIG


def _section_config(plugins: PluginSet, section: str) -> Any:
    """The validated settings of the enabled plugin that owns ``[section]``, if any."""
    owner = next((i for i in plugins.infos if i.enabled and i.section == (section,)), None)
    return plugins.configs.get(owner.name) if owner is not None else None


def _summary(hub: Any, origin: str | None) -> None:
    if hub.settings.logging.format == "json":
        _summary_json(hub, origin)
        return
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
    http = hub.settings.http
    if http.enabled:
        base = hub.url.split("://", 1)[1].split("/", 1)[0]
        scheme = "https" if hub.settings.server.tls is not None else "http"
        metrics = (" /metrics" + (" (bearer token)" if http.metrics_token is not None else "")) if http.metrics else ""
        console.print(f"  http        {scheme}://{base} /healthz /readyz{metrics}")
    for label, line in _plugin_summaries(plugins):
        console.print(f"  {label:<11} {line}")


def _plugin_summaries(plugins: PluginSet) -> list[tuple[str, str]]:
    """``(label, line)`` from every registered plugin object with an ``airi_summary()`` (e.g.
    the cluster link: ``cluster  nats://... as instance A: connected, 1 other instance``)."""
    lines = []
    for obj in plugins.pm.get_plugins():
        summary = getattr(obj, "airi_summary", None)
        if callable(summary):
            with contextlib.suppress(Exception):
                label, line = summary()
                lines.append((str(label), str(line)))
    return lines


def _auth_summary(plugins: PluginSet) -> str:
    auth = _section_config(plugins, "auth")
    credentials = ["token"] if getattr(auth, "secret", "") else []
    clients = len(getattr(auth, "clients", None) or ())
    if clients:
        credentials.append(f"{clients} client{'s' if clients != 1 else ''}")
    return f"on ({', '.join(credentials)})" if credentials else "off (no token configured)"


def _summary_json(hub: Any, origin: str | None) -> None:
    """The startup summary as one log record (``--log-format json``): the same facts as fields."""
    plugins: PluginSet = hub.plugins
    heartbeat = _section_config(plugins, "heartbeat")
    http = hub.settings.http
    fields: dict[str, Any] = {
        "url": hub.url,
        "version": __version__,
        "config": origin or "(none: built-in defaults)",
        "auth": _auth_summary(plugins),
        "wire_format": hub.settings.server.wire_format,
        "plugins": ", ".join(i.name for i in plugins.infos if i.enabled),
        "route_order": " -> ".join(plugins.route_chain()) or "(none)",
        "http": ("/healthz /readyz" + (" /metrics" if http.metrics else "")) if http.enabled else "off",
    }
    if heartbeat is not None:
        fields["heartbeat"] = f"read timeout {heartbeat.read_timeout_ms} ms, check every {heartbeat.interval_ms} ms"
    wrappers = plugins.route_wrappers()
    if wrappers:
        fields["route_wrappers"] = ", ".join(wrappers)
    skipped = [f"{i.name} ({i.distribution}): {i.error}" for i in plugins.infos if i.error]
    if skipped:
        fields["skipped"] = "; ".join(skipped)
    for label, line in _plugin_summaries(plugins):
        fields[label] = line
    # printed whatever the level, as the pretty summary is (handle() skips the level check);
    # the URL is followed by a space: "listening on (ws://\S+)" finds it in the JSON line too
    log = logging.getLogger("airi.summary")  # its own logger: not one of the app's leveled lines
    log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "AIRI hub %s listening on %s (startup summary)",
                              (__version__, hub.url), None, extra=fields))


#: Signals whose default action would end the hub without closing anyone: logged and ignored.
#: (SIGHUP reloads the configuration: see _serve.)
IGNORED_SIGNALS: dict[str, str] = {
    "SIGUSR1": "ignoring",
    "SIGUSR2": "ignoring",
}


def _ignored_signals() -> list[tuple[signal.Signals, str]]:
    return [(getattr(signal, name), note) for name, note in IGNORED_SIGNALS.items() if hasattr(signal, name)]


def _listen_error(settings: Settings, exc: OSError) -> str:
    """One line for a failure to bind, with what to do about it."""
    where = f"{settings.server.host}:{settings.server.port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {where}: the address is already in use (another hub?); "
                f"stop that program or choose another port with --port (or [server] port, PORT)")
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied; ports below 1024 need privileges, choose another with --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: no interface has this address; choose another with --host"
    text = exc.strerror or str(exc)
    return f"cannot listen on {where}: {text}"


def setup_logging_from(settings: Settings) -> None:
    """Install the log handlers ``[logging]`` asks for (at start and on reload)."""
    from .logs import setup_logging

    lg = settings.logging
    setup_logging(
        lg.level, lg.format, lg.websocket_level, lg.websocket_format,
        max_message_chars=lg.max_message_chars, peer_lines_per_second=lg.peer_lines_per_second,
        connection_lines_per_second=lg.connection_lines_per_second,
    )


async def _reload(hub: Any, load: Callable[[], Settings], origin: str | None) -> None:
    """SIGHUP: load the configuration again and apply it; an invalid one changes nothing."""
    from .reload import reload_hub

    log = hub.log
    log.info("received SIGHUP: reloading %s", origin or "the environment (no config file)")
    try:
        report = await reload_hub(hub, load(), origin or "defaults", configure_logging=setup_logging_from)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        for line in lines:
            log.error("reload: %s", line)
        log.error("reload refused (%d problem%s): the running configuration is kept", len(lines), "s" if len(lines) != 1 else "")
        return
    for key in report.restart_needed:
        log.warning("reload: %s changed but needs a restart to take effect; the running value is kept", key)
    if report.changed:
        log.info("reloaded: %s", ", ".join(report.changed))
    else:
        log.info("reloaded: nothing changed that can change live")


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


async def _serve(settings: Settings, plugins: PluginSet, origin: str | None, load: Callable[[], Settings] | None = None) -> int:
    from .kernel import Hub

    hub = Hub(settings, plugins)
    # handlers first: a signal that arrives while binding must still mean a clean shutdown
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for sig, note in _ignored_signals():
        loop.add_signal_handler(sig, hub.log.warning, "received %s: %s", sig.name, note)
    if hasattr(signal, "SIGHUP"):
        reloading: list[asyncio.Task[None]] = []

        def on_hup() -> None:
            if hub.readiness.phase != "ready":
                hub.log.warning("received SIGHUP while %s; ignoring", hub.readiness.phase)
                return
            if load is None or any(not t.done() for t in reloading):
                hub.log.warning("received SIGHUP: %s", "a reload is under way; ignoring" if load else "nothing to reload from; ignoring")
                return
            reloading[:] = [loop.create_task(_reload(hub, load, origin))]

        loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await hub.start()
    except OSError as exc:
        hub.log.error("%s", _listen_error(settings, exc))
        return 1
    _summary(hub, origin)
    _tune_process()
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
    from .logs import flush_lifecycle

    flush_lifecycle()  # the count of the last second's connection lines, if any
    hub.log.info("stopped")
    return 0


def _tune_process() -> None:
    """Process-wide settings for a hub that owns its process (``airi serve``), once startup is
    done. Measured on a 1000-module storm (python bench/run.py --quick --scenarios storm):

    * garbage collection: what startup built (modules, plugins, settings) is moved out of the
      collector's way (``gc.freeze``), so that full collections do not walk it again. (A
      youngest generation of 10000 was tried too: no measurable gain in a storm, and the
      fixed-rate p99 latencies of two 5-rep paired fan-out runs were 1.08-1.49x the baseline's
      with it against 0.84-1.16x without: noisy, but no reason to risk longer pauses, so the
      thresholds stay the stdlib's.)
    * log records: no caller lookup, thread, process or task name per record (the logging
      HOWTO's "Optimization"; no hub log format shows them): each connection logs a few lines.
    """
    import gc

    gc.collect()
    gc.freeze()
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):
        logging.logAsyncioTasks = False


def cmd_serve(args: argparse.Namespace) -> int:
    # until the loop's handlers are in place (see _serve), these must not end the process
    for sig, _ in _ignored_signals():
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        settings, origin = _settings_from(args, args.config)
    except ConfigError as exc:
        # the format the user asked for, as far as it is known without a valid configuration
        return _fail(exc, args.log_format or os.environ.get("LOG_FORMAT"))
    # logging first: what plugin discovery reports is in the configured format too
    setup_logging_from(settings)
    try:
        plugins = discover_plugins(settings, origin=origin or "airi.toml")
    except ConfigError as exc:
        return _fail(exc, settings.logging.format)
    raise_fd_limit(logging.getLogger("airi"))
    try:
        factory = loop_factory(settings.server.event_loop)
    except ConfigError as exc:
        return _fail(exc, settings.logging.format)
    path = Path(origin) if origin is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_serve(settings, plugins, origin, lambda: _settings_at(args, path)))


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
    """Exit status: 0, 1 when a plugin failed to load (the table shows why), 2 for an invalid
    configuration."""
    try:
        settings, plugins, _ = _load(args, args.config, strict=False)
    except ConfigError as exc:
        return _fail(exc)
    broken = 1 if any(i.error for i in plugins.infos) else 0
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
        return broken
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
    return broken


def cmd_config_check(args: argparse.Namespace) -> int:
    if args.path and args.config and args.path != args.config:
        return _fail(ConfigError(f"two config files given: {args.path} and --config {args.config}; give one"))
    try:
        settings, plugins, origin = _load(args, args.config or args.path)
    except ConfigError as exc:
        return _fail(exc)
    shown = settings.model_dump(mode="json")
    # computed defaults, as the hub will run with them
    lg = shown["logging"]
    lg["websocket_level"] = lg["websocket_level"] or lg["level"]
    lg["websocket_format"] = lg["websocket_format"] or lg["format"]
    for info in plugins.infos:
        config = plugins.configs.get(info.name) if info.enabled else None
        if config is None:
            continue
        node = shown
        path = info.section or ("plugins", info.name)
        for key in path[:-1]:
            node = node.setdefault(key, {})
        # SecretStr fields (tokens) dump as "**********": never print a secret
        values = config.model_dump(mode="json")
        effective = getattr(config, "effective", None)  # a model may compute defaults (heartbeat)
        if callable(effective):
            values.update(effective())
        node.setdefault(path[-1], {}).update(values)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[green]ok[/]: {origin or 'no config file, built-in defaults'}")
    console.print_json(json.dumps(shown))
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    """``airi discover``: list the hubs advertised on the local network (mDNS, ``_airi._tcp``).
    Exit status 0 when at least one was found, 1 when none was."""
    from .discovery import browse

    try:
        hubs = asyncio.run(browse(args.timeout, args.interface or None))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"error: cannot browse mDNS: {exc.strerror or exc}", markup=False)
        return 1
    if args.json:
        print(json.dumps([h.as_dict() for h in hubs], indent=2))
        return 0 if hubs else 1
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not hubs:
        err.print(f"no AIRI hub found within {args.timeout:g} s (hubs advertise with [discovery] mdns = true)", markup=False)
        return 1
    table = Table(title="AIRI hubs on the local network", title_justify="left")
    for col in ("name", "address", "port", "path", "proto", "auth", "url"):
        table.add_column(col, overflow="fold")
    for h in hubs:
        table.add_row(h.name, ", ".join(h.addresses) or "-", str(h.port), h.path, h.proto, h.auth, h.url)
    console = Console(soft_wrap=False) if sys.stdout.isatty() else Console(width=200, soft_wrap=False)
    console.print(table)
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_server_commands(sub: Any) -> None:
    """Add ``serve``, ``plugins``, ``config check`` and ``discover`` to the ``airi`` parser."""
    p = sub.add_parser(
        "serve", help="run the hub (uses ./airi.toml when present)",
        description="Run the AIRI hub: a WebSocket server AIRI modules connect to (ws://HOST:PORT/ws), with "
                    "/healthz, /readyz and /metrics on the same port. Settings: built-in defaults < airi.toml < "
                    "environment variables < these flags. SIGINT/SIGTERM close every peer and exit 0; SIGHUP "
                    "reloads the configuration without dropping connections.",
    )
    p.add_argument("--config", metavar="PATH", help="config file (default: ./airi.toml if it exists, else built-in defaults)")
    p.add_argument("--host", metavar="ADDRESS", help="address to bind (overrides [server] host and HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, metavar="PORT", help="TCP port, 0 = any free one (overrides [server] port and PORT; default 6121)")
    p.add_argument("--log-level", choices=["trace", "debug", "log", "warn", "error"],
                   help="least severe level logged (overrides [logging] level and LOG_LEVEL; default log)")
    p.add_argument("--log-format", choices=["pretty", "json"],
                   help="pretty lines or one JSON object a line, for every line the hub prints "
                        "(overrides [logging] format and LOG_FORMAT; default pretty)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("plugins", help="list discovered plugins",
                       description="List the installed plugins (entry points of airi.plugins): distribution, version, "
                                   "hooks, whether the configuration enables them, route order. Exit status 1 when one "
                                   "failed to load, 2 for an invalid configuration.")
    p.add_argument("--config", metavar="PATH", help="config file (default: ./airi.toml if it exists)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("config", help="configuration tools", description="Configuration tools.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    c = csub.add_parser("check", help="validate a config file (default ./airi.toml) and print the effective settings",
                        description="Validate a configuration (file, environment variables) with every installed "
                                    "plugin's settings, and print the effective values: defaults and computed "
                                    "defaults included, tokens masked. Exit status 2 when invalid.")
    c.add_argument("path", nargs="?", metavar="PATH", help="config file (same as --config)")
    c.add_argument("--config", metavar="PATH", help="config file (default: ./airi.toml if it exists)")
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("discover", help="find hubs on the local network (mDNS)",
                       description="Browse the local network for AIRI hubs advertised with mDNS/DNS-SD "
                                   "(_airi._tcp.local.; a hub advertises with [discovery] mdns = true) and list them. "
                                   "Exit status 1 when none was found.")
    p.add_argument("--timeout", type=_seconds, default=3.0, metavar="S", help="seconds to listen (default 3)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--interface", action="append", metavar="ADDRESS",
                   help="browse only on the interface with this address, e.g. 127.0.0.1 (repeatable; default all)")
    p.set_defaults(func=cmd_discover)
