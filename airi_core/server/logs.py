"""Logging as the reference does it: levels ``trace|debug|log|warn|error``, formats ``pretty``
(rich) and ``json`` (one object a line), and a separate websocket logger whose level and format
default to the app's.

Loggers: ``airi`` (the app, plugins log under ``airi.plugins.<name>``) and ``airi.websocket``
(connections and frames; the ``websockets`` library's own logger follows it); ``asyncio``'s
warnings go through the app's handler too.

What peers send reaches log lines (names, event types, reasons), so every line is guarded:

- control characters (C0 including newlines, DEL, C1, the Unicode line and paragraph separators,
  bidirectional overrides) are escaped (``\\n``, ``\\x1b``, ``\\u2028``) in both formats: one
  record is one line, and no escape sequence reaches a terminal; a traceback's lines are indented
  (a forged line inside an exception message cannot look like a record);
- a message, and each extra value, longer than ``logging.max_message_chars`` is cut with a marker
  ``... (N more characters)``;
- records at level ``log`` and above about one peer (``extra={"peer": id}``, or logged while the
  transport handles that peer's frames: :data:`current_peer`) pass at most
  ``logging.peer_lines_per_second`` a second; the rest are counted and reported in one
  ``suppressed N log lines about <peer>`` line (when the next second starts, or the peer closes);
- ``asyncio``'s repeated complaints (``socket.accept() out of system resource`` when file
  descriptors run out) pass once a second with the count of the others.

Lines about connections opened and closed and modules announced pass at most
``logging.connection_lines_per_second`` a second at level ``log`` (:class:`LifecycleLines`); the
rest go out at level ``debug`` and one line when the second is over counts them by kind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Hashable
from contextvars import ContextVar
from itertools import islice
from typing import Any, TextIO

__all__ = [
    "TRACE",
    "LEVELS",
    "setup_logging",
    "JsonFormatter",
    "PrettyHandler",
    "escape_control",
    "clip",
    "current_peer",
    "release_peer",
    "Throttle",
]

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

_RECORD_ATTRS = tuple(vars(logging.LogRecord("", 0, "", 0, "", (), None)))
_STD_ATTRS = frozenset(_RECORD_ATTRS) | {"message", "asctime", "taskName"}
#: how many attributes ``LogRecord.__init__`` sets (the extra fields come after them)
_N_STD = len(_RECORD_ATTRS)


#: The peer whose frames the running task handles (set by the transport in each connection's
#: task): records logged there without ``extra={"peer": ...}`` still count against that peer.
current_peer: ContextVar[str | None] = ContextVar("airi_current_peer", default=None)

_CONTROL_CODES = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_NAMED = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_ESCAPES = {c: _NAMED.get(c) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROL_CODES}
_CONTROL_RE = re.compile("[" + "".join(re.escape(chr(c)) for c in _CONTROL_CODES) + "]")
#: what json.dumps(ensure_ascii=False) leaves as is: DEL, C1, separators, bidi controls
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in _CONTROL_CODES if c >= 0x7F}
_JSON_RE = re.compile("[" + "".join(re.escape(chr(c)) for c in _JSON_ESCAPES) + "]")


def escape_control(text: str) -> str:
    """``text`` with every control character escaped (``\\n``, ``\\x1b``, ``\\u2028``): one line,
    no terminal escape sequences, no bidirectional overrides."""
    return text.translate(_ESCAPES) if _CONTROL_RE.search(text) else text


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (with a ``... (N more characters)`` marker), then
    control characters escaped."""
    if len(text) > limit:
        return escape_control(text[:limit]) + f"... ({len(text) - limit} more characters)"
    return escape_control(text)


class Throttle:
    """At most ``per_second`` admissions per key in each one-second window (a window starts with
    the first admission after the previous one ended); the rest are counted, and the count is
    handed back with the first admission of the next window."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._windows: dict[Hashable, list[float]] = {}  # key -> [window start, admitted, suppressed]
        self._swept = 0.0

    def admit(self, key: Hashable, now: float) -> tuple[bool, int]:
        """``(admitted, suppressed)``: whether this one passes and, when a new window starts, how
        many were suppressed in the previous one."""
        w = self._windows.get(key)
        if w is None:
            self._windows[key] = [now, 1, 0]
            return True, 0
        if now - w[0] >= 1.0:
            suppressed = int(w[2])
            w[0], w[1], w[2] = now, 1, 0
            return True, suppressed
        if w[1] < self.per_second:
            w[1] += 1
            return True, 0
        w[2] += 1
        return False, 0

    def pop(self, key: Hashable) -> int:
        """Forget ``key``; returns how many were suppressed in its last window."""
        w = self._windows.pop(key, None)
        return int(w[2]) if w is not None else 0

    def sweep(self, now: float, age: float = 2.0) -> list[tuple[Hashable, int]]:
        """Forget keys whose window ended ``age`` seconds ago (at most once a second); returns
        those that had suppressions, with their counts. Keeps the table as small as the set of
        keys seen in the last seconds."""
        if now - self._swept < 1.0:
            return []
        self._swept = now
        stale = [k for k, w in self._windows.items() if now - w[0] >= age]
        out = []
        for k in stale:
            n = self.pop(k)
            if n:
                out.append((k, n))
        return out

    def __len__(self) -> int:
        return len(self._windows)


class PeerLineLimit(logging.Filter):
    """Lets at most ``per_second`` records at level ``log`` and above about one peer through each
    second (shared by every handler, so a peer's budget is one whatever logger it hits); reports
    the suppressed ones in one line per peer and window."""

    def __init__(self, per_second: float) -> None:
        super().__init__()
        self.throttle = Throttle(per_second)
        self.summary_logger = logging.getLogger("airi.websocket")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO or self.throttle.per_second <= 0:
            return True
        verdict = getattr(record, "_airi_admitted", None)
        if verdict is not None:  # a record that reaches several handlers is judged once
            return bool(verdict)
        peer = getattr(record, "peer", None) or current_peer.get()
        if not peer:
            return True
        now = time.monotonic()
        for key, n in self.throttle.sweep(now):
            self.summarize(key, n)
        admitted, suppressed = self.throttle.admit(peer, now)
        if suppressed:
            self.summarize(peer, suppressed)
        record._airi_admitted = admitted
        return admitted

    def summarize(self, peer: Hashable, count: int) -> None:
        self.summary_logger.warning(
            "suppressed %d log lines about %s (logging.peer_lines_per_second = %g)",
            count, peer, self.throttle.per_second,
            extra={"peer": peer, "suppressed": count, "_airi_admitted": True},
        )

    def release(self, peer: str) -> None:
        n = self.throttle.pop(peer)
        if n:
            self.summarize(peer, n)


class RepeatLimit(logging.Filter):
    """For ``asyncio``'s logger: the same complaint (its first line) passes once a second, with
    the count of the repeats it stands for; the repeated ``socket.accept() out of system
    resource`` of a hub out of file descriptors is one line, without its traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.throttle = Throttle(1)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        first = message.split("\n", 1)[0]
        now = time.monotonic()
        self.throttle.sweep(now, age=60.0)
        admitted, suppressed = self.throttle.admit(first, now)
        if not admitted:
            return False
        if "out of system resource" in first:
            exc = record.exc_info[1] if record.exc_info else None
            record.msg = f"{first}: {exc}" if exc is not None else first
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} more like it in the last second(s))"
            record.args = ()
        return True


class LifecycleLines:
    """Lines about connections opened and closed and modules announced: at most ``per_second``
    of them a second at their own level; past that, each goes out at debug and one line a second
    counts them by kind. A hub restart that brings back a thousand modules then writes a screen
    of lines and a summary, not three thousand lines (which also cost ~6% of such a storm's CPU).
    ``0`` = no limit."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self.window = -1.0
        self.admitted = 0
        self.demoted: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def level(self, kind: str, level: int = logging.INFO) -> int:
        """The level to log a ``kind`` line at (``level``, or debug when over the budget)."""
        if self.per_second <= 0:
            return level
        now = time.monotonic()
        if now - self.window >= 1.0:
            self.summarize()
            self.window, self.admitted = now, 0
        if self.admitted < self.per_second:
            self.admitted += 1
            return level
        self.demoted[kind] = self.demoted.get(kind, 0) + 1
        if self._timer is None:  # the count goes out when the second is over, even if all is quiet then
            try:
                self._timer = asyncio.get_running_loop().call_later(self.window + 1.0 - now, self._end_window)
            except RuntimeError:  # no loop: the next line reports it
                pass
        return logging.DEBUG

    def _end_window(self) -> None:
        self._timer = None
        self.summarize()

    def summarize(self) -> None:
        if not self.demoted:
            return
        counts, self.demoted = self.demoted, {}
        logging.getLogger("airi.websocket").info(
            "%d more lines about connections and modules in the last second, at level debug: %s "
            "(logging.connection_lines_per_second = %g)",
            sum(counts.values()), ", ".join(f"{kind} {n}" for kind, n in counts.items()), self.per_second,
            extra={"_airi_admitted": True},
        )

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.summarize()


_lifecycle = LifecycleLines(0)


def flush_lifecycle() -> None:
    """Report the connection lines demoted in the current second now (at shutdown)."""
    _lifecycle.close()


def lifecycle_level(kind: str, level: int = logging.INFO) -> int:
    """The level for a line about a connection or module event of ``kind`` (``connected``,
    ``announced``, ``closed``): ``level`` within ``logging.connection_lines_per_second``, else
    debug (counted in a summary line)."""
    return _lifecycle.level(kind, level)


_peer_limit: PeerLineLimit | None = None


def release_peer(peer: str) -> None:
    """A peer is gone: report what was suppressed about it and forget it (the transport calls it
    when a connection ends)."""
    if _peer_limit is not None:
        _peer_limit.release(peer)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message`` and any ``extra``.

    ``json.dumps`` escapes C0 controls; DEL, C1, the line/paragraph separators and the
    bidirectional controls are escaped too (``\\u2028``); long values are cut."""

    def __init__(self, max_chars: int = 1024) -> None:
        super().__init__()
        self.max_chars = max_chars

    def format(self, record: logging.LogRecord) -> str:
        limit = self.max_chars
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": _NAMES.get(record.levelno, record.levelname.lower()),
            "logger": record.name,
            "message": _cut(record.getMessage(), limit),
        }
        for key, value in _extras(record):
            out[key] = value if isinstance(value, (int, float, bool, type(None))) else _cut(str(value), limit)
        if record.exc_info:
            out["error"] = _cut(self.formatException(record.exc_info), 16 * limit)
        text = json.dumps(out, ensure_ascii=False)
        return text.translate(_JSON_ESCAPES) if _JSON_RE.search(text) else text


def _extras(record: logging.LogRecord) -> list[tuple[str, Any]]:
    """The ``extra=`` fields of ``record`` in the order given (not the standard attributes, not
    ``_private`` ones). A record's standard attributes come first (``LogRecord.__init__`` sets
    them), so only what follows them is looked at."""
    return [(k, v) for k, v in islice(vars(record).items(), _N_STD, None) if k not in _STD_ATTRS and k[:1] != "_"]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


class PrettyHandler(logging.Handler):
    """Human-readable lines, colored with rich's styles when the stream is a terminal:
    ``12:00:01 log   connected p1 from 127.0.0.1:50512 (3 peers)  peer=p1``.

    Styles are rendered once; a line costs a few microseconds (rich's ``RichHandler`` lays out a
    table per record and cost ~500 us a line, which a storm of connections turned into seconds).
    Control characters are escaped and long values cut (see the module's docstring).
    """

    _STYLES = {TRACE: "dim", logging.DEBUG: "blue", logging.INFO: "green", logging.WARNING: "yellow", logging.ERROR: "bold red"}

    def __init__(self, stream: TextIO, max_chars: int = 1024) -> None:
        super().__init__()
        from rich.console import Console
        from rich.style import Style

        self.stream = stream
        self.max_chars = max_chars
        colors = Console(file=stream).color_system

        def paint(text: str, style: str) -> str:
            return Style.parse(style).render(text, color_system=colors) if colors else text  # type: ignore[arg-type]

        self._paint = paint
        self._levels = {lvl: paint(f"{_NAMES[lvl]:<5}", style) for lvl, style in self._STYLES.items()}
        self._dim_open, self._dim_close = (paint("\0", "dim").split("\0") + [""])[:2] if colors else ("", "")
        self._second = -1
        self._stamp = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            limit = self.max_chars
            level = self._levels.get(record.levelno) or self._levels[logging.ERROR if record.levelno > logging.ERROR else logging.INFO]
            second = int(record.created)
            if second != self._second:  # one strftime a second, not one a line
                self._second, self._stamp = second, time.strftime("%H:%M:%S", time.localtime(second))
            line = f"{self._dim_open}{self._stamp}{self._dim_close} {level} {clip(record.getMessage(), limit)}"
            extras = [f"{k}={clip(str(v), limit)}" for k, v in _extras(record)]
            if extras:
                line += f"  {self._dim_open}{' '.join(extras)}{self._dim_close}"
            if record.levelno >= logging.WARNING and record.name != "airi":
                line += f"  {self._dim_open}[{record.name}]{self._dim_close}"
            if record.exc_info:
                trace = logging.Formatter().formatException(record.exc_info)
                # indented: no line of a traceback (an exception message included) looks like a record
                line += "".join("\n    " + clip(part, limit) for part in trace.split("\n"))
            self.stream.write(line + "\n")
            self.stream.flush()
        except Exception:
            self.handleError(record)


def _handler(fmt: str, stream: TextIO, max_chars: int, limit: logging.Filter | None) -> logging.Handler:
    if fmt == "json":
        h: logging.Handler = logging.StreamHandler(stream)
        h.setFormatter(JsonFormatter(max_chars))
    else:
        h = PrettyHandler(stream, max_chars)
    if limit is not None:
        h.addFilter(limit)
    return h


def setup_logging(
    level: str = "log",
    fmt: str = "pretty",
    websocket_level: str | None = None,
    websocket_format: str | None = None,
    stream: TextIO | None = None,
    *,
    max_message_chars: int = 1024,
    peer_lines_per_second: float = 10,
    connection_lines_per_second: float = 0,
) -> None:
    """Configure the ``airi``, ``airi.websocket``, ``websockets`` and ``asyncio`` loggers
    (idempotent)."""
    global _peer_limit, _lifecycle
    stream = stream or sys.stderr
    ws_level = websocket_level or level
    ws_format = websocket_format or fmt
    app = logging.getLogger("airi")
    ws = logging.getLogger("airi.websocket")
    lib = logging.getLogger("websockets")
    aio = logging.getLogger("asyncio")
    for lg in (app, ws, lib, aio):
        for h in list(lg.handlers):
            lg.removeHandler(h)
    limit = PeerLineLimit(peer_lines_per_second)
    _peer_limit = limit
    _lifecycle.close()
    _lifecycle = LifecycleLines(connection_lines_per_second)
    app.setLevel(LEVELS[level])
    app.addHandler(_handler(fmt, stream, max_message_chars, limit))
    app.propagate = False
    ws.setLevel(LEVELS[ws_level])
    ws.addHandler(_handler(ws_format, stream, max_message_chars, limit))
    ws.propagate = False
    # the library logs handshake failures and internal errors; keep it at warn at least
    lib.setLevel(max(LEVELS[ws_level], logging.WARNING))
    lib.addHandler(_handler(ws_format, stream, max_message_chars, limit))
    lib.propagate = False
    # asyncio: unhandled task errors, accept() failures (EMFILE) at most once a second each
    aio.setLevel(max(LEVELS[level], logging.WARNING))
    handler = _handler(fmt, stream, max_message_chars, None)
    handler.addFilter(RepeatLimit())
    aio.addHandler(handler)
    aio.propagate = False
