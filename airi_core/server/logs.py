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


class PrettyHandler(logging.Handler):
    """Human-readable lines, colored with rich's styles when the stream is a terminal:
    ``12:00:01 log   connected p1 from 127.0.0.1:50512 (3 peers)  peer=p1``.

    Styles are rendered once; a line costs a few microseconds (rich's ``RichHandler`` lays out a
    table per record and cost ~500 us a line, which a storm of connections turned into seconds).
    """

    _STYLES = {TRACE: "dim", logging.DEBUG: "blue", logging.INFO: "green", logging.WARNING: "yellow", logging.ERROR: "bold red"}

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        from rich.console import Console
        from rich.style import Style

        self.stream = stream
        colors = Console(file=stream).color_system

        def paint(text: str, style: str) -> str:
            return Style.parse(style).render(text, color_system=colors) if colors else text  # type: ignore[arg-type]

        self._paint = paint
        self._levels = {lvl: paint(f"{_NAMES[lvl]:<5}", style) for lvl, style in self._STYLES.items()}
        self._dim_open, self._dim_close = (paint("\0", "dim").split("\0") + [""])[:2] if colors else ("", "")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = self._levels.get(record.levelno) or self._levels[logging.ERROR if record.levelno > logging.ERROR else logging.INFO]
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            line = f"{self._dim_open}{stamp}{self._dim_close} {level} {record.getMessage()}"
            extras = [f"{k}={v}" for k, v in vars(record).items() if k not in _STD_ATTRS and not k.startswith("_")]
            if extras:
                line += f"  {self._dim_open}{' '.join(extras)}{self._dim_close}"
            if record.levelno >= logging.WARNING and record.name != "airi":
                line += f"  {self._dim_open}[{record.name}]{self._dim_close}"
            if record.exc_info:
                line += "\n" + logging.Formatter().formatException(record.exc_info)
            self.stream.write(line + "\n")
            self.stream.flush()
        except Exception:
            self.handleError(record)


def _handler(fmt: str, stream: TextIO) -> logging.Handler:
    if fmt == "json":
        h: logging.Handler = logging.StreamHandler(stream)
        h.setFormatter(JsonFormatter())
        return h
    return PrettyHandler(stream)


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
