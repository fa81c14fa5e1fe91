"""Logging as the reference does it: levels ``trace|debug|log|warn|error``, formats ``pretty``
(rich) and ``json`` (one object a line), and a separate websocket logger whose level and format
default to the app's.

Loggers: ``airi`` (the app, plugins log under ``airi.plugins.<name>``) and ``airi.websocket``
(connections and frames; the ``websockets`` library's own logger follows it).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["TRACE", "LEVELS", "setup_logging", "JsonFormatter"]

TRACE = 5
logging.addLevelName(TRACE, "TRACE")
LEVELS: dict[str, int] = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "log": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
_NAMES = {TRACE: "trace", logging.DEBUG: "debug", logging.INFO: "log", logging.WARNING: "warn", logging.ERROR: "error", logging.CRITICAL: "error"}

_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message`` and any ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": _NAMES.get(record.levelno, record.levelname.lower()),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _PrettyFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        extras = [f"{k}={v}" for k, v in vars(record).items() if k not in _STD_ATTRS and not k.startswith("_")]
        if extras:
            msg = f"{msg}  [dim]{' '.join(extras)}[/dim]" if getattr(record, "markup", False) else f"{msg}  {' '.join(extras)}"
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return msg


def _handler(fmt: str, stream: TextIO) -> logging.Handler:
    if fmt == "json":
        h: logging.Handler = logging.StreamHandler(stream)
        h.setFormatter(JsonFormatter())
        return h
    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(file=stream, stderr=stream is sys.stderr, soft_wrap=True)
    rh = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False, log_time_format="%H:%M:%S")
    rh.setFormatter(_PrettyFormatter())
    return rh


def setup_logging(
    level: str = "log",
    fmt: str = "pretty",
    websocket_level: str | None = None,
    websocket_format: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure the ``airi`` and ``airi.websocket`` loggers (idempotent)."""
    stream = stream or sys.stderr
    ws_level = websocket_level or level
    ws_format = websocket_format or fmt
    app = logging.getLogger("airi")
    ws = logging.getLogger("airi.websocket")
    lib = logging.getLogger("websockets")
    for lg in (app, ws, lib):
        for h in list(lg.handlers):
            lg.removeHandler(h)
    app.setLevel(LEVELS[level])
    app.addHandler(_handler(fmt, stream))
    app.propagate = False
    ws.setLevel(LEVELS[ws_level])
    ws.addHandler(_handler(ws_format, stream))
    ws.propagate = False
    # the library logs handshake failures and internal errors; keep it at warn at least
    lib.setLevel(max(LEVELS[ws_level], logging.WARNING))
    lib.addHandler(_handler(ws_format, stream))
    lib.propagate = False
