"""``airi tail``, ``airi send`` and ``airi modules``: command-line tools built on
:mod:`airi_core.client`.

Common options: ``--url`` (default ``$AIRI_HUB_URL`` or ``ws://127.0.0.1:6121/ws``), ``--token``
(default ``$AIRI_HUB_TOKEN``, then ``$AUTHENTICATION_TOKEN``), ``--timeout`` (seconds to reach the
hub and be ready). Exit status: 0 on success, 1 when the hub cannot be reached, refuses the
token or answers with an error, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..protocol.events import Event, dumps, new_id
from ..protocol.glob import compile_glob
from .client import Client
from .errors import ClientError, ConnectionLostError, ServerError
from .outgoing import DEFAULT_URL, HEARTBEAT
from .states import ClientState, StateChange

PREVIEW_CHARS = 120  # default length of the data preview in tail/send lines


def default_url() -> str:
    return os.environ.get("AIRI_HUB_URL") or DEFAULT_URL


def default_token() -> str | None:
    return os.environ.get("AIRI_HUB_TOKEN") or os.environ.get("AUTHENTICATION_TOKEN") or None


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


# -- formatting ------------------------------------------------------------------------------------
def source_label(client: Client, ev: Event) -> str:
    """Who sent ``ev``: ``hub``, the announced module name (``name[index]``), else its plugin or
    instance id, else ``?``."""
    if ev.from_hub:
        return "hub"
    entry = client.find_module(ev)
    if entry is not None:
        return entry.name if entry.index is None else f"{entry.name}[{entry.index}]"
    return ev.source_plugin_id or ev.source_instance_id or "?"


def preview(data: Any, limit: int = PREVIEW_CHARS) -> str:
    """Compact one-line JSON, cut to ``limit`` characters."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"


def event_line(client: Client, ev: Event, limit: int = PREVIEW_CHARS) -> Text:
    """``HH:MM:SS.mmm  type  source  {data preview}`` as rich text."""
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    line = Text()
    line.append(stamp, style="dim")
    line.append("  ")
    line.append(ev.type, style="bold red" if ev.type == "error" else "bold cyan")
    line.append("  ")
    line.append(source_label(client, ev), style="dim" if ev.from_hub else "green")
    line.append("  ")
    line.append(preview(ev.data, limit))
    return line


def json_line(ev: Event) -> str:
    """The event as received (superjson wrapper removed), as one line of compact JSON."""
    return dumps(ev.body)


def _reporter(err: Console, prefix: str) -> Callable[[BaseException], None]:
    """``on_error`` for the tools: connection failures are summed up once at the end (by
    :func:`_until_ready`), everything else is printed as it happens."""

    def report(exc: BaseException) -> None:
        if isinstance(exc, ConnectionLostError):
            return
        err.print(f"{prefix}: {_describe(exc)}", markup=False)

    return report


def _describe(err: BaseException) -> str:
    if isinstance(err, ServerError):
        return f"the hub answered: {err.message}"
    return str(err) or type(err).__name__


async def _until_ready(client: Client, timeout: float, err: Console) -> bool:
    """Start ``client`` and wait until it is ready; False (with a message) when it is not."""
    try:
        await client.ready(timeout)
        return True
    except TimeoutError:
        why = f": {client.last_error}" if client.last_error else ""
        err.print(f"error: could not reach the hub at {client.url} within {timeout:g} s{why}", markup=False)
    except ClientError as exc:
        err.print(f"error: {_describe(exc)}", markup=False)
    return False


def _install_stop(stop: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return remove


# -- airi tail ----------------------------------------------------------------------------------------
async def run_tail(args: argparse.Namespace) -> int:
    out, err = _stdout(), _stderr()
    patterns: list[str] = args.type or []
    matchers = [compile_glob(p) for p in patterns]  # the protocol's glob dialect: only * is a wildcard

    def wanted(ev: Event) -> bool:
        if matchers:
            return any(match(ev.type) for match in matchers)
        return ev.type != HEARTBEAT

    def on_state(change: StateChange) -> None:
        if change.state is ClientState.RECONNECTING and change.previous is ClientState.READY:
            err.print(f"tail: {change.error or 'connection lost'}; reconnecting", markup=False)
        elif change.state is ClientState.READY and change.attempt:
            err.print("tail: reconnected", markup=False)

    def on_error(exc: BaseException) -> None:
        if isinstance(exc, (ServerError, ConnectionLostError)):
            return  # errors are shown as "error" lines; connection trouble by on_state
        err.print(f"tail: {exc}", markup=False)

    client = Client(args.url or default_url(), name=args.name, token=args.token or default_token(),
                    announce=args.announce, on_state=on_state, on_error=on_error)
    stop = asyncio.Event()
    shown = 0

    @client.on("*")
    def show(ev: Event) -> None:
        nonlocal shown
        if client.state is not ClientState.READY or stop.is_set() or not wanted(ev):
            return
        if args.json:
            print(json_line(ev), flush=True)
        else:
            out.print(event_line(client, ev, args.preview))
        shown += 1
        if args.count is not None and shown >= args.count:
            stop.set()

    remove = _install_stop(stop)
    try:
        if not await _until_ready(client, args.timeout, err):
            return 1
        err.print(
            f"tail: watching {client.url}" + (f" for {', '.join(patterns)}" if patterns else "")
            + (" (announced as " + client.name + ")" if args.announce else "") + "; Ctrl-C to stop",
            markup=False,
        )
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(client.wait_closed())]
        done, pending = await asyncio.wait(waits, timeout=args.seconds, return_when=asyncio.FIRST_COMPLETED)
        for fut in pending:
            fut.cancel()
        if waits[1] in done and waits[1].exception() is not None:
            err.print(f"error: {_describe(waits[1].exception())}", markup=False)  # type: ignore[arg-type]
            return 1
        return 0
    finally:
        remove()
        await client.close()


# -- airi send ----------------------------------------------------------------------------------------
def _json_object(parser: argparse.ArgumentParser, text: str | None, what: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        parser.error(f"{what} is not valid JSON: {exc}")
    if not isinstance(value, dict):
        parser.error(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


async def run_send(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    out, err = _stdout(), _stderr()
    data = _json_object(parser, args.data, "JSON data") or {}
    route = _json_object(parser, args.route, "--route")
    client = Client(args.url or default_url(), name=args.name, token=args.token or default_token(),
                    on_error=_reporter(err, "send"))
    event_id = new_id()
    replies = 0
    enough = asyncio.Event()

    @client.on("*")
    def show(ev: Event) -> None:
        nonlocal replies
        if enough.is_set() or ev.type in (HEARTBEAT, "error"):
            return  # an error answering the event is raised by send(confirm=True)
        if ev.parent_id != event_id and not (args.all and not ev.from_hub):
            return
        if args.json:
            print(json_line(ev), flush=True)
        else:
            out.print(event_line(client, ev, args.preview))
        replies += 1
        if args.count is not None and replies >= args.count:
            enough.set()

    stop = asyncio.Event()
    remove = _install_stop(stop)
    try:
        if not await _until_ready(client, args.timeout, err):
            return 1
        try:
            await client.send(args.type, data, route=route, destinations=args.to, event_id=event_id,
                              confirm=True, timeout=args.timeout)
        except ServerError as exc:
            err.print(f"error: {exc.message}", markup=False)
            return 1
        except ClientError as exc:
            err.print(f"error: {_describe(exc)}", markup=False)
            return 1
        err.print(f"sent {args.type} (id {event_id})" + (f" to {', '.join(args.to)}" if args.to else ""), markup=False)
        if args.wait > 0 and not enough.is_set():
            waits = [asyncio.ensure_future(enough.wait()), asyncio.ensure_future(stop.wait())]
            _, pending = await asyncio.wait(waits, timeout=args.wait, return_when=asyncio.FIRST_COMPLETED)
            for fut in pending:
                fut.cancel()
        if replies == 0 and args.wait > 0:
            err.print(f"no reply within {args.wait:g} s", markup=False)
        return 0
    finally:
        remove()
        await client.close()


# -- airi modules --------------------------------------------------------------------------------------
async def run_modules(args: argparse.Namespace) -> int:
    err = _stderr()
    client = Client(args.url or default_url(), name=args.name, token=args.token or default_token(), announce=False,
                    on_error=_reporter(err, "modules"))
    try:
        if not await _until_ready(client, args.timeout, err):
            return 1
        if args.wait > 0:
            await asyncio.sleep(args.wait)  # health reports and registry changes
        modules = list(client.modules)
        unhealthy = dict(client.unhealthy)
    finally:
        await client.close()
    if args.json:
        rows = [
            {
                "name": m.name, "index": m.index, "identity": m.identity,
                "healthy": m.key not in unhealthy, "reason": unhealthy.get(m.key),
            }
            for m in modules
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    out = Console(highlight=False, soft_wrap=False)
    table = Table(title=f"AIRI modules at {client.url}", title_justify="left")
    for col in ("name", "index", "plugin", "version", "instance", "labels", "health"):
        table.add_column(col, overflow="fold")  # ids are never cut short
    for m in modules:
        plugin = m.identity.get("plugin")
        version = plugin.get("version") if isinstance(plugin, dict) and isinstance(plugin.get("version"), str) else "-"
        labels = ", ".join(f"{k}={v}" for k, v in m.labels.items()) or "-"
        reason = unhealthy.get(m.key)
        health = Text("healthy", style="green") if reason is None else Text(f"unhealthy ({reason})", style="bold red")
        table.add_row(m.name, "-" if m.index is None else str(m.index), m.plugin_id or "-", version,
                      m.instance_id or "-", labels, health)
    out.print(table)
    n = len(modules)
    out.print(f"{n} module{'s' if n != 1 else ''}. The registry listing carries no health: 'unhealthy' means the hub "
              f"reported it (registry:modules:health:unhealthy) while we listened ({args.wait:g} s).",
              style="dim", markup=False, soft_wrap=True)
    return 0


# -- the argument parsers -------------------------------------------------------------------------
def _run_tool(main: Any) -> int:
    """Run a client tool's coroutine; Ctrl-C exits 130 without a traceback."""
    try:
        return int(asyncio.run(main))
    except KeyboardInterrupt:
        return 130


def cmd_tail(args: argparse.Namespace) -> int:
    """``airi tail``: print events live, one per line."""
    return _run_tool(run_tail(args))


def cmd_send(args: argparse.Namespace) -> int:
    """``airi send TYPE [JSON]``: send one event and print the replies."""
    return _run_tool(run_send(args, args.parser))


def cmd_modules(args: argparse.Namespace) -> int:
    """``airi modules``: the hub's module registry as a table, with health."""
    return _run_tool(run_modules(args))


def _add_client_args(p: argparse.ArgumentParser, name: str) -> None:
    """Options shared by ``tail``, ``send`` and ``modules``."""
    p.add_argument("--url", default=None, help="hub WebSocket URL (default: $AIRI_HUB_URL or ws://127.0.0.1:6121/ws)")
    p.add_argument("--token", default=None, help="authentication token (default: $AIRI_HUB_TOKEN or $AUTHENTICATION_TOKEN)")
    p.add_argument("--timeout", type=_positive, default=10.0, metavar="SECONDS", help="how long to try reaching the hub (default 10)")
    p.add_argument("--name", default=name, help=f"module name to use (default {name})")


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


def add_client_commands(sub: Any) -> None:
    """Add ``tail``, ``send`` and ``modules`` to the ``airi`` parser."""
    positive, count = _positive, _count

    p = sub.add_parser("tail", help="print the events a hub routes, live, one per line")
    _add_client_args(p, "airi-tail")
    p.add_argument("--type", action="append", metavar="GLOB",
                   help="only event types matching GLOB, where only * is a wildcard "
                        "(repeatable; default: every event but heartbeats)")
    p.add_argument("--json", action="store_true", help="print each event as one line of raw JSON")
    p.add_argument("--count", type=count, metavar="N", help="exit after N events")
    p.add_argument("--seconds", type=positive, metavar="S", help="exit after S seconds")
    p.add_argument("--announce", action="store_true",
                   help="announce as module --name (then module:NAME destinations reach it too)")
    p.add_argument("--preview", type=count, default=PREVIEW_CHARS, metavar="CHARS", help="data preview length")
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
    p.add_argument("--preview", type=count, default=PREVIEW_CHARS, metavar="CHARS", help="data preview length")
    p.set_defaults(func=cmd_send, parser=p)

    p = sub.add_parser("modules", help="print the hub's module registry, with health")
    _add_client_args(p, "airi-modules")
    p.add_argument("--wait", type=_not_negative, default=0.5, metavar="S",
                   help="seconds to listen for health reports before printing (default 0.5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_modules)
