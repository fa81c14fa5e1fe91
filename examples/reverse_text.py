#!/usr/bin/env python3
"""A small AIRI module in Python: it reverses text.

It registers as a consumer of ``input:text`` in the ``chat-ingestion`` group (the group the
protocol delivers ``input:text`` to by default, one consumer per message) and answers every
message with ``output:text {text: <reversed>}``, routed back to the module that sent it, with
``parentId`` set to the message's id.

    python examples/reverse_text.py --url ws://127.0.0.1:6121/ws [--token SECRET]

Try it with the CLI in another terminal:

    airi send input:text '{"text": "hello"}' --count 1     # prints output:text {"text":"olleh"}

It reconnects by itself when the hub restarts (and registers as a consumer again). Ctrl-C stops
it. Exit status 1 when the hub refuses the token.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from airi_core.client import Client, ClientError, Event, StateChange

DEFAULT_URL = "ws://127.0.0.1:6121/ws"


def build_client(url: str, token: str | None, name: str) -> Client:
    def on_state(change: StateChange) -> None:
        print(f"{name}: {change.state}", file=sys.stderr, flush=True)

    client = Client(url, name=name, token=token, possible_events=["output:text"], on_state=on_state)

    @client.on("input:text")
    async def reverse(event: Event) -> None:
        text = event.data.get("text")  # data is always a JSON object
        if not isinstance(text, str):
            return  # not ours to judge: input:text without text
        await client.reply(event, "output:text", {"text": text[::-1]})
    return client


async def run(args: argparse.Namespace) -> int:
    client = build_client(args.url, args.token, args.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with client:
            # kept by the client and registered again on every reconnection
            await client.register_consumer("input:text", group="chat-ingestion", priority=args.priority)
            print(f"{args.name}: ready on {args.url}, consuming input:text (group chat-ingestion)", file=sys.stderr, flush=True)
            stopped = asyncio.ensure_future(stop.wait())
            closed = asyncio.ensure_future(client.wait_closed())
            await asyncio.wait({stopped, closed}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if closed.done():
                closed.result()  # raises why the client failed
            closed.cancel()
        return 0
    except ClientError as exc:
        print(f"{args.name}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An AIRI module that answers input:text with the text reversed.")
    parser.add_argument("--url", default=os.environ.get("AIRI_HUB_URL") or DEFAULT_URL, help=f"hub URL (default {DEFAULT_URL})")
    parser.add_argument("--token", default=os.environ.get("AIRI_HUB_TOKEN") or os.environ.get("AUTHENTICATION_TOKEN") or None,
                        help="hub token (default: $AIRI_HUB_TOKEN or $AUTHENTICATION_TOKEN)")
    parser.add_argument("--name", default="reverse-text", help="module name (default reverse-text)")
    parser.add_argument("--priority", type=float, default=0, help="consumer priority (highest wins)")
    parser.add_argument("--verbose", action="store_true", help="log the client's activity")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
