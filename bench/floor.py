"""The bare relay floor: the least a WebSocket relay built on the same library has to do.

    python bench/floor.py --port P [--host 127.0.0.1]

Same ``websockets`` server settings as the hub (``compression=None``, ``ping_interval=None``,
``max_size`` 1 MiB). For every text frame it parses the JSON once, only to read ``type``, and:

* ``module:authenticate``: answers ``{"type":"module:authenticated"}`` (no token check);
* ``module:announce``: remembers ``data.name`` for this connection, answers nothing;
* ``transport:connection:heartbeat``: answers a tiny pong (the load generator uses it to know its
  earlier frames were processed);
* anything else: when ``route.destinations`` is present, forwards the raw text to the connection
  announced under the first ``module:NAME`` found in it (a plain scan; no policy, no expression
  evaluation); otherwise to every other connection. Forwarding is
  ``websockets.asyncio.server.broadcast()`` of the frame exactly as received.

No backpressure, no validation, no registry events: this is a floor to compare against, not a
server anyone should run. It prints ``listening on ws://HOST:PORT/ws`` to stderr when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve

AUTHENTICATED = '{"type":"module:authenticated","data":{"authenticated":true}}'
PONG = '{"type":"transport:connection:heartbeat","data":{"kind":"pong"}}'

conns: set[ServerConnection] = set()
by_name: dict[str, ServerConnection] = {}


def first_module(dests: Any, depth: int = 0) -> str | None:
    """The name of the first ``module:NAME`` string anywhere in ``dests`` (lists / dicts)."""
    if depth > 8:
        return None
    if isinstance(dests, str):
        return dests[7:] if dests.startswith("module:") else None
    if isinstance(dests, list):
        items: Any = dests
    elif isinstance(dests, dict):
        items = dests.values()
    else:
        return None
    for item in items:
        found = first_module(item, depth + 1)
        if found is not None:
            return found
    return None


async def handler(ws: ServerConnection) -> None:
    conns.add(ws)
    name = None
    try:
        async for msg in ws:
            try:
                obj = json.loads(msg)
                if "type" not in obj and "json" in obj:
                    obj = obj["json"]
                etype = obj.get("type")
            except Exception:
                continue
            if etype == "module:announce":
                name = obj.get("data", {}).get("name")
                if isinstance(name, str):
                    by_name[name] = ws
                continue
            if etype == "transport:connection:heartbeat":
                await ws.send(PONG)
                continue
            if etype == "module:authenticate":
                await ws.send(AUTHENTICATED)
                continue
            route = obj.get("route")
            if route and "destinations" in route:
                target = by_name.get(first_module(route["destinations"]) or "")
                if target is not None and target is not ws:
                    broadcast((target,), msg)
                continue
            broadcast([c for c in conns if c is not ws], msg)
    finally:
        conns.discard(ws)
        if name is not None and by_name.get(name) is ws:
            del by_name[name]


async def main(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(handler, host, port, compression=None, ping_interval=None, max_size=1 << 20, max_queue=16) as server:
        bound = server.sockets[0].getsockname()
        print(f"floor listening on ws://{bound[0]}:{bound[1]}/ws", file=sys.stderr, flush=True)
        await stop.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    asyncio.run(main(args.host, args.port))
