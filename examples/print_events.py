#!/usr/bin/env python3
"""Print every event an AIRI hub routes to this module.

A minimal AIRI module written with nothing but the ``websockets`` library: it connects,
authenticates when a token is given, announces itself, sends a heartbeat ping every few seconds
and prints each event it receives, one line per event, until Ctrl-C (or ``--seconds N``).

    python examples/print_events.py                          # ws://127.0.0.1:6121/ws
    python examples/print_events.py ws://127.0.0.1:7000/ws --token secret --seconds 30
    AIRI_HUB_URL=ws://127.0.0.1:7000/ws AUTHENTICATION_TOKEN=secret python examples/print_events.py --json

Routed events go to stdout; the hub's own protocol traffic (registry syncs, announcements) is
only shown with ``--all``; errors from the hub go to stderr. Exit status: 0 when stopped by
Ctrl-C or ``--seconds``, 1 when the hub cannot be reached, refuses us or closes the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

DEFAULT_URL = "ws://127.0.0.1:6121/ws"
HUB_PLUGIN_ID = "proj-airi:server-runtime"
REPLY_TIMEOUT = 5.0  # seconds to wait for the hub to answer authenticate / announce

Event = dict[str, Any]


class Module:
    """One connection to the hub, speaking the AIRI protocol as a module named ``name``."""

    def __init__(self, ws: ClientConnection, name: str, as_json: bool, show_all: bool) -> None:
        self.ws = ws
        self.name = name
        self.identity = {"id": f"{name}-{uuid.uuid4().hex[:8]}", "kind": "plugin", "plugin": {"id": name}}
        self.as_json = as_json
        self.show_all = show_all
        self._waiters: list[tuple[Callable[[Event], bool], asyncio.Future[Event]]] = []

    # -- sending ------------------------------------------------------------------------------
    async def send(self, type: str, data: dict[str, Any], event_id: str | None = None) -> None:
        """Send one event (plain JSON; the hub also accepts superjson)."""
        event_id = event_id or uuid.uuid4().hex
        event = {"type": type, "data": data, "metadata": {"source": self.identity, "event": {"id": event_id}}}
        await self.ws.send(json.dumps(event, ensure_ascii=False))

    async def request(self, type: str, data: dict[str, Any], done: Callable[[Event], bool]) -> Event:
        """Send an event and wait (bounded) for the first reply that ``done`` accepts or for an
        error answering it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Event] = loop.create_future()
        event_id = uuid.uuid4().hex

        def answers(ev: Event) -> bool:
            if ev.get("type") == "error":
                return bool(parent_id(ev) == event_id)
            return done(ev)

        self._waiters.append((answers, future))
        try:
            await self.send(type, data, event_id)
            return await asyncio.wait_for(future, REPLY_TIMEOUT)
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not future]

    async def heartbeats(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await self.send("transport:connection:heartbeat", {"kind": "ping", "message": "\U0001fa75", "at": int(time.time() * 1000)})

    # -- receiving ----------------------------------------------------------------------------
    async def read(self) -> None:
        """Print events until the connection closes."""
        async for frame in self.ws:
            text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
            if text in ("ping", "pong"):  # raw transport heartbeats
                continue
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                print(f"{self.name}: not JSON from the hub: {text[:200]!r}", file=sys.stderr, flush=True)
                continue
            if isinstance(event, dict) and "type" not in event and "json" in event:
                event = event["json"]  # superjson wrapping: {"json": <event>, "meta"?: ...}
            if not isinstance(event, dict):
                continue
            self.handle(event)

    def handle(self, event: Event) -> None:
        for predicate, future in self._waiters:
            if not future.done() and predicate(event):
                future.set_result(event)
        etype = event.get("type")
        if etype == "error":
            message = (event.get("data") or {}).get("message")
            print(f"{self.name}: hub error: {message}", file=sys.stderr, flush=True)
        elif etype == "transport:connection:heartbeat":
            pass
        elif self.show_all or source_plugin(event) != HUB_PLUGIN_ID:
            self.print_event(event)

    def print_event(self, event: Event) -> None:
        if self.as_json:
            print(json.dumps(event, ensure_ascii=False, separators=(",", ":")), flush=True)
            return
        data = json.dumps(event.get("data"), ensure_ascii=False, separators=(",", ":"))
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp}  {event.get('type')}  from {source_plugin(event) or '?'}  {data}", flush=True)


def parent_id(event: Event) -> Any:
    return ((event.get("metadata") or {}).get("event") or {}).get("parentId")


def source_plugin(event: Event) -> Any:
    return (((event.get("metadata") or {}).get("source") or {}).get("plugin") or {}).get("id")


def lists_module(name: str) -> Callable[[Event], bool]:
    def check(event: Event) -> bool:
        if event.get("type") != "registry:modules:sync":
            return False
        modules = (event.get("data") or {}).get("modules") or []
        return any(isinstance(m, dict) and m.get("name") == name for m in modules)

    return check


async def run(args: argparse.Namespace) -> int:
    try:
        ws = await connect(args.url, open_timeout=REPLY_TIMEOUT, ping_interval=None, max_size=None)
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        print(f"{args.name}: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1
    module = Module(ws, args.name, args.json, args.all)
    reader = asyncio.create_task(module.read())
    heartbeat: asyncio.Task[None] | None = None
    try:
        if args.token:
            reply = await module.request("module:authenticate", {"token": args.token}, lambda e: e.get("type") == "module:authenticated")
            if reply.get("type") == "error":
                return 1
        reply = await module.request("module:announce", {"name": args.name, "identity": module.identity}, lists_module(args.name))
        if reply.get("type") == "error":
            if not args.token:
                print(f"{args.name}: the hub may require a token: --token or AUTHENTICATION_TOKEN", file=sys.stderr)
            return 1
        until = f"for {args.seconds:g} s" if args.seconds is not None else "until Ctrl-C"
        print(f"{args.name}: announced on {args.url}; printing events {until}", file=sys.stderr, flush=True)
        heartbeat = asyncio.create_task(module.heartbeats(args.heartbeat))
        done, _ = await asyncio.wait({reader}, timeout=args.seconds)
        if reader in done:
            print(f"{args.name}: the hub closed the connection (code {ws.close_code} {ws.close_reason or ''})".rstrip(), file=sys.stderr)
            return 1
        return 0
    except TimeoutError:
        print(f"{args.name}: no answer from the hub within {REPLY_TIMEOUT:g} s", file=sys.stderr)
        return 1
    except ConnectionClosed as exc:
        print(f"{args.name}: connection lost: {exc}", file=sys.stderr)
        return 1
    finally:
        for task in (heartbeat, reader):
            if task is not None:
                task.cancel()
        await ws.close()
        await asyncio.gather(*(t for t in (heartbeat, reader) if t is not None), return_exceptions=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print every event an AIRI hub routes to this module.")
    parser.add_argument("url", nargs="?", default=os.environ.get("AIRI_HUB_URL") or DEFAULT_URL,
                        help=f"hub WebSocket URL (default: $AIRI_HUB_URL or {DEFAULT_URL})")
    parser.add_argument("--token", default=os.environ.get("AUTHENTICATION_TOKEN") or None,
                        help="authentication token (default: $AUTHENTICATION_TOKEN)")
    parser.add_argument("--name", default="print-events", help="module name and plugin id to announce")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: run until Ctrl-C)")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="seconds between heartbeat pings (default 5)")
    parser.add_argument("--json", action="store_true", help="print each event as one line of JSON")
    parser.add_argument("--all", action="store_true", help="also print the hub's own protocol events")
    args = parser.parse_args(argv)
    if args.seconds is not None and args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.heartbeat <= 0:
        parser.error("--heartbeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
