"""``airi tail``, ``airi send`` and ``airi modules``: command-line tools built on
:mod:`airi_core.client`.

Common options: ``--url`` (default ``$AIRI_HUB_URL`` or ``ws://127.0.0.1:6121/ws``), ``--token``
(default ``$AIRI_HUB_TOKEN``, then ``$AUTHENTICATION_TOKEN``), ``--timeout`` (seconds to reach the
hub and be ready). Exit status: 0 on success, 1 when the hub cannot be reached, refuses the
token or answers with an error, 2 for bad arguments (a URL that is not ``ws://``/``wss://``).

Failing well: every failure is one line on stderr, printed once (the client library's own log
is silenced here: the tools report what it would say); a first connection attempt that fails
ends the tool at once, with the URL and the reason (nothing retries for ``--timeout`` seconds
in silence); ``airi tail`` reconnects only after it was connected once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from websockets.exceptions import InvalidHandshake

from ..protocol import errors as protocol_errors
from ..protocol.events import Event, dumps, new_id
from ..protocol.glob import compile_glob
from .client import Client
from .errors import AuthenticationError, ClientError, ConnectionLostError, ServerError, TokenRequiredError
from .outgoing import DEFAULT_URL, HEARTBEAT
from .states import ClientState, StateChange

PREVIEW_CHARS = 120  # default length of the data preview in tail/send lines
EXIT_USAGE = 2

#: PROTOCOL.md's default deliveries: these types go to one registered consumer of the group,
#: never to a broadcast listener such as ``airi tail``
CONSUMER_DELIVERED: dict[str, str] = {t: "chat-ingestion" for t in ("input:text", "input:text:voice", "input:voice")}


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


class _Tool:
    """What the tools share: the client, its first connection attempt, and one report per
    failure.

    ``on_error`` (:meth:`report`) prints what happens while the tool runs, but not what ends it:
    a failure that stops the client is raised by ``ready()`` and reported once by
    :meth:`until_ready`; connection trouble before the first success ends the tool at once.
    """

    def __init__(self, prefix: str, err: Console) -> None:
        self.prefix = prefix
        self.err = err
        self.client: Client | None = None
        self.ready_once = False
        self.first_failure: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.on_state_extra: Callable[[StateChange], None] | None = None

    def make(self, args: argparse.Namespace, **kw: Any) -> Client | None:
        """The client for ``args``, or None (reported) when ``--url`` is not a WebSocket URL."""
        url = args.url or default_url()
        try:
            self.client = Client(url, name=args.name, token=args.token or default_token(), on_state=self.on_state,
                                 on_error=self.report, **kw)
        except ValueError as exc:
            if "not a WebSocket URL" in str(exc):
                self.err.print(f"error: {url!r} is not a WebSocket URL: use ws://HOST:PORT/PATH or wss://... "
                               f"(the hub's default is {DEFAULT_URL})", markup=False)
            else:
                self.err.print(f"error: {exc}".splitlines()[0], markup=False)
            return None
        return self.client

    def on_state(self, change: StateChange) -> None:
        if change.state is ClientState.READY:
            self.ready_once = True
        elif change.state in (ClientState.RECONNECTING, ClientState.FAILED) and not self.ready_once:
            if not self.first_failure.done():
                self.first_failure.set_result(change.error)
        if self.on_state_extra is not None:
            self.on_state_extra(change)

    def report(self, exc: BaseException) -> None:
        client = self.client
        state = client.state if client is not None else None
        if isinstance(exc, ConnectionLostError) or (state is not None and state.final):
            return  # reported once by until_ready (or by on_state while tailing)
        if not self.ready_once:
            return  # a failed first attempt ends the tool: until_ready reports it
        self.err.print(f"{self.prefix}: {describe(exc)}", markup=False)

    async def until_ready(self, timeout: float) -> bool:
        """Wait until the client is ready; False (with one line) when it is not."""
        client = self.client
        assert client is not None
        ready: asyncio.Future[Any] = asyncio.ensure_future(client.ready(timeout))
        first: asyncio.Future[Any] = self.first_failure
        await asyncio.wait({ready, first}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            with contextlib.suppress(BaseException):
                await ready
            self._cannot_connect(self.first_failure.result())
            return False
        try:
            ready.result()
            return True
        except TimeoutError:
            why = f": {describe(client.last_error)}" if client.last_error else ""
            self.err.print(f"error: the hub at {client.url} did not answer within {timeout:g} s{why}", markup=False)
        except (AuthenticationError, ServerError) as exc:
            self.err.print(f"error: {describe(exc)}", markup=False)
        except ClientError as exc:
            self._cannot_connect(exc)
        return False

    def _cannot_connect(self, failure: BaseException | None) -> None:
        client = self.client
        assert client is not None
        # the socket's own error says more than "connection lost" around it
        cause = client.last_error if isinstance(failure, ConnectionLostError) and client.last_error is not None else failure
        if isinstance(cause, ServerError):
            self.err.print(f"error: {describe(cause)}", markup=False)
            return
        self.err.print(f"error: cannot connect to {client.url}: {describe(cause) if cause else 'connection failed'}", markup=False)


def describe(err: BaseException) -> str:
    """One line about a failure, saying what to do where there is something to do."""
    if isinstance(err, TokenRequiredError):
        return "the hub requires a token: pass --token or set $AIRI_HUB_TOKEN"
    if isinstance(err, AuthenticationError):
        return f"the hub refused the token ({err.message}): check --token or $AIRI_HUB_TOKEN"
    if isinstance(err, ServerError):
        return f"the hub answered: {err.message}"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (is a hub running there? `airi serve` starts one)"
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host name ({err.strerror or err})"
    if isinstance(err, OSError) and not isinstance(err, TimeoutError):
        return err.strerror or str(err) or type(err).__name__
    if isinstance(err, TimeoutError):
        return "no answer in time"
    if isinstance(err, InvalidHandshake):
        return f"not an AIRI hub's WebSocket endpoint ({err})"
    text = str(err) or type(err).__name__
    if "HTTP 404" in text:
        text += " (wrong path? the hub's default is /ws)"
    return text


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

    tool = _Tool("tail", err)
    tool.on_state_extra = on_state
    made = tool.make(args, announce=args.announce)
    if made is None:
        return EXIT_USAGE
    client = made
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
        if not await tool.until_ready(args.timeout):
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
            err.print(f"error: {describe(waits[1].exception())}", markup=False)  # type: ignore[arg-type]
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


def _consumer_delivery(type: str, route: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """For a type delivered to one consumer (by PROTOCOL.md's defaults or ``--route``), ask the
    hub to answer when nobody takes it (``route.delivery.required``), unless ``--route`` says
    otherwise; returns the route to send and the consumer group (None: not consumer-delivered)."""
    delivery = route.get("delivery") if isinstance(route, dict) else None
    delivery = delivery if isinstance(delivery, dict) else {}
    mode = delivery.get("mode")
    if mode is None and type not in CONSUMER_DELIVERED:
        return route, None
    if mode is not None and mode not in ("consumer", "consumer-group"):
        return route, None
    group = delivery.get("group") or (CONSUMER_DELIVERED.get(type) if mode in (None, "consumer-group") else None) or "default"
    if "required" in delivery:
        return route, str(group) if delivery["required"] else None
    new_route = dict(route or {})
    new_route["delivery"] = {**delivery, "required": True}
    return new_route, str(group)


async def run_send(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    out, err = _stdout(), _stderr()
    data = _json_object(parser, args.data, "JSON data") or {}
    route = _json_object(parser, args.route, "--route")
    route, group = _consumer_delivery(args.type, route)
    tool = _Tool("send", err)
    made = tool.make(args, reconnect=False)
    if made is None:
        return EXIT_USAGE
    client = made
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
        if not await tool.until_ready(args.timeout):
            return 1
        try:
            await client.send(args.type, data, route=route, destinations=args.to, event_id=event_id,
                              confirm=True, timeout=args.timeout)
        except ServerError as exc:
            if group is not None and exc.message == protocol_errors.NO_CONSUMER_REGISTERED:
                err.print(f"error: {exc.message}: nothing took {args.type}, which goes to one registered consumer of "
                          f"group '{group}' and none is connected (airi tail does not see it; run a consumer such as "
                          f"examples/reverse_text.py, or send another type)", markup=False)
            else:
                err.print(f"error: {exc.message}", markup=False)
            return 1
        except TimeoutError:
            err.print(f"error: the hub did not confirm {args.type} within {args.timeout:g} s", markup=False)
            return 1
        except ClientError as exc:
            err.print(f"error: {describe(exc)}", markup=False)
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
    tool = _Tool("modules", err)
    made = tool.make(args, announce=False, reconnect=False)
    if made is None:
        return EXIT_USAGE
    client = made
    try:
        if not await tool.until_ready(args.timeout):
            return 1
        if args.wait > 0:
            await asyncio.sleep(args.wait)  # health reports and registry changes
        modules = list(client.modules)
        unhealthy = dict(client.unhealthy)
    finally:
        await client.close()
    # a clustered hub lists other instances' modules with the hub instance holding them
    hubs = [(m.model_extra or {}).get("instance") for m in modules]
    clustered = any(isinstance(h, str) for h in hubs)
    if args.json:
        rows = [
            {
                "name": m.name, "index": m.index, "identity": m.identity,
                "healthy": m.key not in unhealthy, "reason": unhealthy.get(m.key),
                **({"hub_instance": h if isinstance(h, str) else None} if clustered else {}),
            }
            for m, h in zip(modules, hubs)
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    out = Console(highlight=False, soft_wrap=False)
    table = Table(title=f"AIRI modules at {client.url}", title_justify="left")
    for col in ("name", "index", "plugin", "version", "instance", "labels", "health") + (("hub",) if clustered else ()):
        table.add_column(col, overflow="fold")  # ids are never cut short
    for m, hub_instance in zip(modules, hubs):
        plugin = m.identity.get("plugin")
        version = plugin.get("version") if isinstance(plugin, dict) and isinstance(plugin.get("version"), str) else "-"
        labels = ", ".join(f"{k}={v}" for k, v in m.labels.items()) or "-"
        reason = unhealthy.get(m.key)
        health = Text("healthy", style="green") if reason is None else Text(f"unhealthy ({reason})", style="bold red")
        cells: list[Any] = [m.name, "-" if m.index is None else str(m.index), m.plugin_id or "-", version,
                            m.instance_id or "-", labels, health]
        if clustered:
            cells.append(hub_instance if isinstance(hub_instance, str) else "(this hub)")
        table.add_row(*cells)
    out.print(table)
    n = len(modules)
    out.print(f"{n} module{'s' if n != 1 else ''}. The registry listing carries no health: 'unhealthy' means the hub "
              f"reported it (registry:modules:health:unhealthy) while we listened ({args.wait:g} s).",
              style="dim", markup=False, soft_wrap=True)
    return 0


# -- the argument parsers -------------------------------------------------------------------------
def _run_tool(main: Any) -> int:
    """Run a client tool's coroutine; Ctrl-C exits 130 without a traceback. The client
    library's log is silenced: the tool reports every failure itself, once."""
    client_log = logging.getLogger("airi.client")
    client_log.addHandler(logging.NullHandler())
    client_log.propagate = False
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
