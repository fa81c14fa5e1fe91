"""The ``airi`` command: the server's commands (:mod:`airi_core.server.cli`) and the client
tools (:mod:`airi_core.client.cli`)."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .client.cli import add_client_commands
from .server.cli import EXIT_CONFIG, add_server_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airi", description="The AIRI hub: a plugin-extensible WebSocket server for AIRI modules.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_server_commands(sub)
    add_client_commands(sub)
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
