"""Security of the transport (issue 9, items 3, 9, 10, 11 and part of 12), over real sockets:

- origins: a browser page from an origin that is not allowed gets HTTP 403 before the upgrade;
  the built-in origins (loopback pages, AIRI's own apps) and non-browser clients get in;
  ``[server] allowed_origins`` extends the list; a startup warning for a non-loopback address
  without a token;
- the handshake tells nothing: no ``Server`` header, a 404 body that does not echo the request;
- logs: control characters escaped in both formats, long messages cut, lines about one peer
  rate-limited;
- resources: incomplete frames count against ``limits.max_pending_bytes``; sockets stay below
  the open-file limit, legitimate clients get in while idle sockets hold the rest, ``asyncio``'s
  EMFILE complaint is logged once a second at most; the soft open-file limit is raised;
- signals: SIGHUP (a reload), SIGUSR1 and SIGUSR2 do not end the hub.

Every wait is bounded; hubs run on 127.0.0.1; subprocesses are stopped by their PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import logging
import re
import resource
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from airi_core.server.config import ConfigError, load_settings
from airi_core.server.logs import PrettyHandler, Throttle, clip, current_peer, escape_control, setup_logging
from airi_core.testing import connect_client, start_hub, wait_until

try:
    from . import _hubproc
    from ._hubproc import HubProcess, write_config
except ImportError:  # tests/ is not a package
    import _hubproc  # type: ignore[no-redef]
    from _hubproc import HubProcess, write_config  # type: ignore[no-redef]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


async def _handshake(url: str, origin: str | None = None, headers: list[tuple[str, str]] | None = None) -> int:
    """The HTTP status of a WebSocket handshake (101 when it opened; the socket is then closed)."""
    try:
        async with connect(url, origin=origin, additional_headers=headers, open_timeout=3) as ws:  # type: ignore[arg-type]
            assert ws.response is not None
            return ws.response.status_code
    except InvalidStatus as exc:
        return exc.response.status_code


async def _raw_http(port: int, request: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read the answer until the hub closes (bounded)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _upgrade_request(path: str = "/ws", origin: str | None = None) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _masked_header(length: int) -> bytes:
    """A client's text frame header announcing ``length`` payload bytes (mask all zero)."""
    return struct.pack("!BBQ", 0x81, 0x80 | 127, length) + b"\0\0\0\0"


@contextlib.contextmanager
def _nofile_limit(soft: int, hard: int) -> Iterator[None]:
    """Start the subprocesses created inside the block with RLIMIT_NOFILE = (soft, hard)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    popen = subprocess.Popen
    _hubproc.subprocess.Popen = functools.partial(popen, preexec_fn=limit)  # type: ignore[misc]
    try:
        yield
    finally:
        _hubproc.subprocess.Popen = popen  # type: ignore[misc]


def _port(hub: Any) -> int:
    """The port of an in-process hub (from its URL)."""
    return int(hub.url.rsplit(":", 1)[1].split("/", 1)[0])


def _json_records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --------------------------------------------------------------------------------------------
# item 3: origins
# --------------------------------------------------------------------------------------------

ALLOWED_BY_DEFAULT = [
    None,  # no Origin: a non-browser client
    "http://localhost",
    "http://localhost:5173",
    "https://localhost",  # the mobile app on Android
    "http://127.0.0.1:6121",
    "https://127.0.0.1",
    "http://[::1]:3000",
    "HTTP://LocalHost:8080",  # scheme and host compare case-insensitively
    "file://",  # the desktop app
    "capacitor://localhost",  # the mobile app on iOS
    "https://airi.moeru.ai",  # the hosted web stage
    "https://airi.moeru.ai:443",  # the same origin, default port written out
]
REFUSED_BY_DEFAULT = [
    "https://evil.example",
    "null",
    "",
    "http://airi.moeru.ai",  # another scheme is another origin
    "https://airi.moeru.ai:8443",  # another port too
    "https://airi.moeru.ai.evil.example",
    "https://localhost.evil.example",
    "http://127.0.0.2",
    "capacitor://evil",
    "ftp://localhost",
    "file:///etc/passwd",
    "https://evil.example/ws",
    "*",
]


async def test_default_origin_policy_over_real_handshakes() -> None:
    hub = await start_hub()
    try:
        for origin in ALLOWED_BY_DEFAULT:
            assert await _handshake(hub.url, origin) == 101, origin
        for origin in REFUSED_BY_DEFAULT:
            assert await _handshake(hub.url, origin) == 403, origin
        assert hub.stats["refused_origins"] == len(REFUSED_BY_DEFAULT)
        # two Origin headers: no browser sends that
        assert await _handshake(hub.url, headers=[("Origin", "http://localhost"), ("Origin", "https://evil.example")]) == 403
    finally:
        await hub.shutdown()


async def test_refused_origin_never_becomes_a_peer() -> None:
    """The 403 comes before the upgrade: the page reads nothing, sends nothing, is never a peer."""
    hub = await start_hub()
    try:
        member = await connect_client(hub, "member", announce=True)
        start = member.mark()
        answer = await _raw_http(_port(hub), _upgrade_request(origin="https://evil.example"))  # type: ignore[attr-defined]
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403"), answer
        assert b"evil" not in answer, answer  # the answer does not echo the origin
        assert body == b"origin not allowed\n"
        assert hub.stats["connections"] == 1 and len(hub.registry) == 1
        await member.expect_silence(start=start)  # no announce, no registry change
        await member.close()
    finally:
        await hub.shutdown()


async def test_allowed_origins_extend_the_defaults() -> None:
    hub = await start_hub(
        {"server": {"allowed_origins": ["https://Stage.Example.com", "http://mypc.lan:*", "https://exact.example:8443/"]}}
    )
    try:
        for origin in (
            "https://stage.example.com",
            "https://stage.example.com:443",
            "http://mypc.lan",
            "http://mypc.lan:5173",
            "https://exact.example:8443",
            "http://localhost:5173",  # the built-ins still hold
            "file://",
        ):
            assert await _handshake(hub.url, origin) == 101, origin
        for origin in ("https://stage.example.com:444", "http://stage.example.com", "https://mypc.lan", "https://exact.example", "null"):
            assert await _handshake(hub.url, origin) == 403, origin
    finally:
        await hub.shutdown()


async def test_builtin_origins_can_be_turned_off_and_star_allows_all() -> None:
    hub = await start_hub({"server": {"builtin_origins": False, "allowed_origins": ["https://only.example"]}})
    try:
        assert await _handshake(hub.url, None) == 101
        assert await _handshake(hub.url, "https://only.example") == 101
        for origin in ("http://localhost:5173", "file://", "https://airi.moeru.ai"):
            assert await _handshake(hub.url, origin) == 403, origin
    finally:
        await hub.shutdown()
    hub = await start_hub({"server": {"allowed_origins": ["*"]}})
    try:
        for origin in ("https://evil.example", "null", "http://anything:1"):
            assert await _handshake(hub.url, origin) == 101, origin
    finally:
        await hub.shutdown()


@pytest.mark.parametrize("entry", ["https://example.com/path", "example.com", "https://u@example.com", "https://example.com:99999", "https://example.com?q"])
def test_allowed_origins_reject_what_is_not_an_origin(tmp_path: Path, entry: str) -> None:
    path = write_config(tmp_path, f"[server]\nallowed_origins = [{json.dumps(entry)}]\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "server.allowed_origins: " in str(err.value) and f"{entry!r} is not an origin" in str(err.value)


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [("0.0.0.0", None, True), ("0.0.0.0", "tok-3c1", False), ("127.0.0.1", None, False), ("localhost", None, False)],
)
def test_startup_warning_for_a_reachable_hub_without_token(tmp_path: Path, host: str, token: str | None, warned: bool) -> None:
    config = f'[server]\nhost = "{host}"\n' + (f'[auth]\ntoken = "{token}"\n' if token else "")
    with HubProcess.serve_text(config, tmp_path) as hub:
        hub.wait_for_stderr(r"route order")  # the summary is complete
        hub.send_signal(signal.SIGTERM)
        assert hub.wait_exit(10) == 0, hub.output()
    said = "without a token" in hub.stderr
    assert said is warned, hub.stderr
    if token:
        assert token not in hub.output()


# --------------------------------------------------------------------------------------------
# item 12: what the handshake tells
# --------------------------------------------------------------------------------------------


async def test_no_server_header_and_404_does_not_echo() -> None:
    hub = await start_hub()
    try:
        port = _port(hub)
        answer = await _raw_http(port, _upgrade_request("/ws"))
        assert answer.startswith(b"HTTP/1.1 101"), answer
        assert b"\r\nserver:" not in answer.lower(), answer
        probe = "/probe-<script>alert(1)</script>-7f3a"
        answer = await _raw_http(port, _upgrade_request(probe))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404"), answer
        assert b"probe" not in answer and b"script" not in answer, answer
        assert b"\r\nserver:" not in head.lower(), answer
        assert body == b"no WebSocket endpoint here; use /ws\n"
        # a refused origin and a full hub tell nothing either
        answer = await _raw_http(port, _upgrade_request(origin="null"))
        assert answer.startswith(b"HTTP/1.1 403") and b"\r\nserver:" not in answer.lower(), answer
    finally:
        await hub.shutdown()


# --------------------------------------------------------------------------------------------
# item 11: signals
# --------------------------------------------------------------------------------------------


async def test_hup_usr1_usr2_do_not_end_the_hub(tmp_path: Path) -> None:
    with HubProcess.serve_text("", tmp_path) as hub:
        a = await connect_client(hub.url, "sig-a", announce=True)
        b = await connect_client(hub.url, "sig-b", announce=True)
        try:
            for sig, said in ((signal.SIGHUP, "received SIGHUP: reloading"), (signal.SIGUSR1, "SIGUSR1"), (signal.SIGUSR2, "SIGUSR2")):
                hub.send_signal(sig)
                await hub.await_stderr(re.escape(said), timeout=5)
            assert hub.proc.poll() is None, hub.output()
            # the same peers are still served, and a new one gets in
            start = b.mark()
            await a.send("test:after-signals", {"n": 1})
            await b.wait_for("test:after-signals", start=start)
            c = await connect_client(hub.url, "sig-c", announce=True)
            await c.fence()
            await c.close()
            # and SIGTERM still means a graceful close
            hub.send_signal(signal.SIGTERM)
            for client in (a, b):
                code, reason = await client.wait_closed(timeout=10)
                assert (code, reason) == (1001, "server shutdown"), (client.name, code, reason)
            assert await hub.await_exit(10) == 0, hub.output()
        finally:
            await a.close()
            await b.close()


# --------------------------------------------------------------------------------------------
# item 9: logs
# --------------------------------------------------------------------------------------------

FORGED = "12:00:00 error FORGED LINE"


@pytest.mark.parametrize("fmt", ["pretty", "json"])
async def test_names_cannot_forge_log_lines(tmp_path: Path, fmt: str) -> None:
    """A name with a newline, a carriage return, an escape sequence, a line separator and a
    bidi override: each record stays on one line and no control character reaches the log."""
    evil = f"mod\n{FORGED}\r\x1b[2J\x1b]0;title\x07\u2028{FORGED}\u202e\x85"
    with HubProcess.serve_text(f'[logging]\nformat = "{fmt}"\n', tmp_path) as hub:
        c = await connect_client(hub.url, "evil")
        await c.announce(name=evil)
        await hub.await_stderr(r"announced ", timeout=5)
        await c.close()
        await hub.await_stderr(r"closed ", timeout=5)
        hub.send_signal(signal.SIGTERM)
        assert await hub.await_exit(10) == 0
    raw = hub.stderr  # decoded with errors="replace"; every character of it came from the hub
    lines = raw.split("\n")
    assert not [line for line in lines if line.startswith(FORGED)], raw
    for ch in "\r\x1b\x07\u2028\u202e\x85":
        assert ch not in raw, (repr(ch), raw)
    if fmt == "pretty":
        announced = [line for line in lines if "announced " in line]
        assert announced and "mod\\n12:00:00 error FORGED LINE\\r\\x1b[2J" in announced[0], announced
    else:
        records = _json_records(raw)
        log_lines = [line for line in lines if line.strip() and not line.startswith(("AIRI hub ", "  "))]  # not the summary
        assert len(records) == len(log_lines), raw  # every log line parses
        assert any(evil in r["message"] for r in records if r["message"].startswith("announced ")), records


async def test_flood_of_huge_unconsumed_types_is_bounded(tmp_path: Path) -> None:
    """The finding: a 500 KB event type with consumer delivery and no consumer wrote a 500 KB
    warning every time. Now each line is cut at logging.max_message_chars, and a peer gets at
    most logging.peer_lines_per_second lines a second; the rest is one summary line."""
    with HubProcess.serve_text("", tmp_path) as hub:
        c = await connect_client(hub.url, "flooder", announce=True)
        big = "t" * 500_000
        sent = 60
        t0 = time.monotonic()
        for _ in range(sent):
            await c.send(big, {}, route={"delivery": {"mode": "consumer"}})
        await c.fence(timeout=30)
        elapsed = time.monotonic() - t0
        await c.close()
        await hub.await_stderr(r"closed ", timeout=5)
        hub.send_signal(signal.SIGTERM)
        assert await hub.await_exit(10) == 0
    err = hub.stderr
    warnings = [line for line in err.splitlines() if "no consumer registered" in line]
    assert 1 <= len(warnings) <= 10 * (int(elapsed) + 2), (len(warnings), elapsed)
    assert all(len(line) < 1400 for line in warnings), max(len(line) for line in warnings)
    assert "more characters)" in warnings[0]
    summaries = re.findall(r"suppressed (\d+) log lines about (\S+)", err)
    assert summaries, err[-2000:]
    assert len(warnings) + sum(int(n) for n, _ in summaries) >= sent
    assert len(err.encode()) < 100_000, len(err.encode())  # was 30 MB


async def test_peer_line_limit_keeps_other_peers_lines(tmp_path: Path) -> None:
    """One peer's flood does not cost another peer its lines (the budget is per peer)."""
    with HubProcess.serve_text("[logging]\npeer_lines_per_second = 3\n", tmp_path) as hub:
        flooder = await connect_client(hub.url, "flooder", announce=True)
        for i in range(30):
            await flooder.send(f"flood:{i}", {}, route={"delivery": {"mode": "consumer"}})
        await flooder.fence()
        other = await connect_client(hub.url, "quiet-one", announce=True)
        await other.send("quiet:event", {}, route={"delivery": {"mode": "consumer"}})
        await other.fence()
        await hub.await_stderr(r"no consumer registered for 'quiet:event'", timeout=5)
        await flooder.close()
        await other.close()
        hub.send_signal(signal.SIGTERM)
        assert await hub.await_exit(10) == 0
    err = hub.stderr
    assert len(re.findall(r"no consumer registered for 'flood:", err)) <= 3 * 4, err
    assert re.search(r"announced \S+ \(quiet-one\)", err), err


def test_clip_and_escape() -> None:
    assert escape_control("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
    assert escape_control("a\nb\rc\td\x00e\x1bf\x7fg\x9bh\u2028i\u2029j\u202ek") == "a\\nb\\rc\\td\\x00e\\x1bf\\x7fg\\x9bh\\u2028i\\u2029j\\u202ek"
    assert clip("x" * 2000, 100) == "x" * 100 + "... (1900 more characters)"
    assert clip("\n" * 200, 100) == "\\n" * 100 + "... (100 more characters)"


def test_pretty_traceback_lines_are_indented() -> None:
    buf = io.StringIO()
    handler = PrettyHandler(buf, 1024)
    try:
        raise ValueError(f"bad\n{FORGED}")
    except ValueError:
        import sys

        rec = logging.LogRecord("airi", logging.ERROR, __file__, 1, "failed %s", ("x\ny",), sys.exc_info())
    handler.emit(rec)
    lines = buf.getvalue().splitlines()
    assert "failed x\\ny" in lines[0]
    assert all(line.startswith("    ") for line in lines[1:]), lines
    assert not [line for line in lines if line.startswith(FORGED)]


def test_json_formatter_escapes_what_json_leaves() -> None:
    from airi_core.server.logs import JsonFormatter

    arg = "a\u2028b\x85c\x1bd" + "z" * 3000
    rec = logging.LogRecord("airi", logging.INFO, __file__, 1, "m %s", (arg,), None)
    rec.peer = "p\u2029"
    out = JsonFormatter(1024).format(rec)
    assert "\u2028" not in out and "\x85" not in out and "\u2029" not in out and "\x1b" not in out
    obj = json.loads(out)
    assert obj["message"].startswith("m a\u2028b\x85c\x1bd") and obj["message"].endswith(f"... ({len(arg) + 2 - 1024} more characters)")
    assert obj["peer"] == "p\u2029"


def test_throttle_windows() -> None:
    t = Throttle(2)
    assert [t.admit("k", 0.0), t.admit("k", 0.1), t.admit("k", 0.2), t.admit("k", 0.3)] == [(True, 0), (True, 0), (False, 0), (False, 0)]
    assert t.admit("other", 0.3) == (True, 0)
    assert t.admit("k", 1.05) == (True, 2)  # a new window reports the previous one's count
    assert t.sweep(5.0) == [] and len(t) == 0  # stale keys are forgotten: the table stays small


def test_peer_line_limit_counts_the_task_peer(restore_loggers: None) -> None:
    """A record without extra={"peer": ...} logged while a peer's frames are handled counts
    against that peer (the consumers plugin's warning is such a record)."""
    buf = io.StringIO()
    setup_logging("log", "json", stream=buf, peer_lines_per_second=5)
    log = logging.getLogger("airi.plugins.someone")
    token = current_peer.set("p42")
    try:
        for i in range(50):
            log.warning("line %d", i)
    finally:
        current_peer.reset(token)
    for i in range(20):
        log.warning("hub line %d", i)  # not about a peer: never limited
    from airi_core.server.logs import release_peer

    release_peer("p42")
    records = _json_records(buf.getvalue())
    about = [r for r in records if r["message"].startswith("line ")]
    assert len(about) == 5
    assert len([r for r in records if r["message"].startswith("hub line ")]) == 20
    summary = [r for r in records if r["message"].startswith("suppressed ")]
    assert [(r["peer"], r["suppressed"]) for r in summary] == [("p42", 45)]


def test_asyncio_accept_emfile_logged_once_a_second(restore_loggers: None) -> None:
    """asyncio's own exception handler, as called by its accept loop when descriptors run out."""
    buf = io.StringIO()
    setup_logging("log", "pretty", stream=buf)
    loop = asyncio.new_event_loop()
    try:
        sock = socket.socket()
        for _ in range(1000):
            loop.call_exception_handler(
                {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files"), "socket": sock}
            )
        sock.close()
    finally:
        loop.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "socket.accept() out of system resource: [Errno 24] Too many open files" in lines[0]




# --------------------------------------------------------------------------------------------
# item 10: resources
# --------------------------------------------------------------------------------------------


async def _partial_frame_peer(url: str, declared: int, send: int) -> Any:
    """A connected peer that sends the first ``send`` bytes of a ``declared``-byte frame."""
    ws = await connect(url, max_size=None, open_timeout=3)
    ws.transport.write(_masked_header(declared) + b"\0" * send)
    return ws


async def test_incomplete_frames_count_against_the_global_budget() -> None:
    """8 peers each hold 900 KB of a 1 MiB frame, with a 3 MiB budget: the hub never holds more
    than the budget, the biggest holders are closed 1013, and the other peers carry on."""
    budget = 3 << 20
    hub = await start_hub({"limits": {"max_frame_bytes": 1 << 20, "max_pending_bytes": budget}})
    attackers: list[Any] = []
    try:
        a = await connect_client(hub, "a", announce=True)
        b = await connect_client(hub, "b", announce=True)
        peak = 0
        for _ in range(8):
            attackers.append(await _partial_frame_peer(hub.url, 1 << 20, 900_000))
            await wait_until(lambda: hub._transport.pending_bytes > 0 or hub.stats["pending_overflows"] > 0, 3, "bytes pending")
            peak = max(peak, hub._transport.pending_bytes)
            assert hub._transport.pending_bytes <= budget
        await wait_until(lambda: hub.stats["pending_overflows"] >= 5, 5, "five attackers shed")
        assert peak <= budget
        closed = []
        for ws in attackers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ws.wait_closed(), 5)
            closed.append(ws.close_code)
        assert closed.count(1013) >= 5, closed
        assert hub._transport.pending_bytes <= budget
        # the legitimate peers still exchange events, big ones included
        start = b.mark()
        await a.send("test:big", {"pad": "x" * 500_000})
        await b.wait_for("test:big", start=start, timeout=5)
        await a.close()
        await b.close()
    finally:
        for ws in attackers:
            ws.transport.abort()
        await hub.shutdown()


async def test_incomplete_frames_are_forgotten_when_the_peer_goes() -> None:
    hub = await start_hub({"limits": {"max_pending_bytes": 4 << 20}})
    try:
        ws = await _partial_frame_peer(hub.url, 1 << 20, 500_000)
        await wait_until(lambda: hub._transport.pending_bytes >= 500_000, 3, "500 KB pending")
        ws.transport.abort()
        await wait_until(lambda: hub._transport.pending_bytes == 0, 3, "nothing pending after the peer left")
        # a frame that completes releases its bytes too
        c = await connect_client(hub, "c", announce=True)
        await c.send("test:x", {"pad": "y" * 300_000})
        await c.fence()
        assert hub._transport.pending_bytes == 0
        await c.close()
    finally:
        await hub.shutdown()


def test_max_pending_bytes_must_hold_one_frame(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[limits]\nmax_frame_bytes = 4096\nmax_pending_bytes = 2048\n")
    with pytest.raises(ConfigError, match="max_pending_bytes must be >= max_frame_bytes"):
        load_settings(path)


async def test_idle_sockets_under_a_low_fd_limit_do_not_lock_clients_out(tmp_path: Path) -> None:
    """A hub started with 256 file descriptors (soft = hard: it cannot raise them) and 400 idle
    TCP connections that never send a request: a legitimate client still gets in at once, the
    log stays short (no EMFILE storm), and max_connections is lowered to fit the limit."""
    with _nofile_limit(256, 256):
        hub = HubProcess.serve(write_config(tmp_path, ""))
    idle: list[socket.socket] = []
    try:
        await hub.await_listening()
        await hub.await_stderr(r"max_connections lowered from 10000 to \d+", timeout=5)
        assert hub.port is not None
        for i in range(400):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", hub.port))
            idle.append(s)
            if i % 50 == 49:  # paced: the kernel holds back connections past the listen backlog
                await asyncio.sleep(0.05)
        await hub.await_stderr(r"sockets open \(the open-file limit allows \d+\)", timeout=5)
        t0 = time.monotonic()
        c = await asyncio.wait_for(connect_client(hub.url, "legit", announce=True), 3)
        took = time.monotonic() - t0
        await c.fence()
        await c.close()
        assert took < 2, took
        assert hub.proc.poll() is None
    finally:
        for s in idle:
            s.close()
        hub.stop()
    err = hub.stderr
    assert err.count("out of system resource") <= 3, err[-3000:]
    assert err.count("sockets open") <= 10, err[-3000:]
    assert len(err.splitlines()) < 100, len(err.splitlines())


def test_serve_raises_the_soft_fd_limit(tmp_path: Path) -> None:
    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
    with _nofile_limit(200, hard):
        hub = HubProcess.serve(write_config(tmp_path, ""))
    try:
        hub.wait_listening()
        hub.wait_for_stderr(rf"raised the open-file limit from 200 to {hard}", timeout=5)
        limits = Path(f"/proc/{hub.pid}/limits").read_text()
        row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert row.split()[3:5] == [str(hard), str(hard)], row
        assert "max_connections lowered" not in hub.stderr or hard < 10064
    finally:
        hub.stop()
