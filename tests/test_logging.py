"""Logging: the reference's levels and formats, the separate websocket logger, no token leaks."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
from pathlib import Path

import pytest

from airi_core.server.logs import LEVELS, TRACE, JsonFormatter, setup_logging
from airi_core.testing import HubClient, connect_client, wait_until

try:
    from ._hubproc import HubProcess, write_config
except ImportError:  # tests/ is not a package
    from _hubproc import HubProcess, write_config  # type: ignore[no-redef]

TOKEN = "log-T0ken-7c1e-do-not-print"
WRONG = "wr0ng-guess-b52d-also-secret"
PRETTY_LOG_LINE = re.compile(r"^\s*(\[?\d\d:\d\d:\d\d\]?)?\s*(TRACE|DEBUG|INFO|WARNING|ERROR|CRITICAL)\s")




def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --------------------------------------------------------------------------------------------
# levels
# --------------------------------------------------------------------------------------------


def test_level_names_map_to_logging_levels() -> None:
    assert LEVELS == {
        "trace": TRACE,
        "debug": logging.DEBUG,
        "log": logging.INFO,
        "warn": logging.WARNING,
        "error": logging.ERROR,
    }
    assert TRACE < logging.DEBUG
    assert logging.getLevelName(TRACE) == "TRACE"


@pytest.mark.parametrize("level", ["trace", "debug", "log", "warn", "error"])
def test_setup_logging_sets_levels_and_filters(level: str, restore_loggers: None) -> None:
    buf = io.StringIO()
    setup_logging(level, "json", stream=buf)
    app = logging.getLogger("airi")
    ws = logging.getLogger("airi.websocket")
    assert app.level == LEVELS[level] and ws.level == LEVELS[level]
    plugin = logging.getLogger("airi.plugins.some-plugin")
    for name, lvl in LEVELS.items():
        app.log(lvl, "app at %s", name)
        ws.log(lvl, "ws at %s", name)
        plugin.log(lvl, "plugin at %s", name)
    got = _json_lines(buf.getvalue())
    emitted = {(r["logger"], r["message"]) for r in got}
    for name, lvl in LEVELS.items():
        shown = lvl >= LEVELS[level]
        assert (("airi", f"app at {name}") in emitted) is shown, (level, name)
        assert (("airi.websocket", f"ws at {name}") in emitted) is shown, (level, name)
        assert (("airi.plugins.some-plugin", f"plugin at {name}") in emitted) is shown, (level, name)
    # the JSON "level" field uses the reference's names
    for r in got:
        assert r["level"] == r["message"].rsplit(" ", 1)[1]


def test_json_formatter_level_names() -> None:
    fmt = JsonFormatter()
    for name, lvl in LEVELS.items():
        rec = logging.LogRecord("airi", lvl, __file__, 1, "m %s", ("x",), None)
        out = json.loads(fmt.format(rec))
        assert out["level"] == name
        assert out["message"] == "m x" and out["logger"] == "airi"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", out["time"])
    rec = logging.LogRecord("airi", logging.CRITICAL, __file__, 1, "boom", (), None)
    assert json.loads(fmt.format(rec))["level"] == "error"


def test_json_formatter_extras_and_exceptions() -> None:
    fmt = JsonFormatter()
    rec = logging.LogRecord("airi.websocket", logging.INFO, __file__, 1, "connected %s", ("p1",), None)
    rec.peer = "p1"
    rec.obj = object()
    out = json.loads(fmt.format(rec))
    assert out["peer"] == "p1" and isinstance(out["obj"], str)
    try:
        raise ValueError("bad thing")
    except ValueError:
        import sys

        rec = logging.LogRecord("airi", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = fmt.format(rec)
    assert "\n" not in line  # still one line
    assert "ValueError: bad thing" in json.loads(line)["error"]


# --------------------------------------------------------------------------------------------
# websocket logger: defaults to the app's level/format, may differ
# --------------------------------------------------------------------------------------------


def _formatters(name: str) -> list[type]:
    return [type(h.formatter) for h in logging.getLogger(name).handlers]


def test_websocket_logger_defaults_to_app(restore_loggers: None) -> None:
    setup_logging("warn", "json", stream=io.StringIO())
    assert logging.getLogger("airi.websocket").level == logging.WARNING
    assert _formatters("airi") == [JsonFormatter]
    assert _formatters("airi.websocket") == [JsonFormatter]
    setup_logging("debug", "pretty", stream=io.StringIO())
    assert logging.getLogger("airi.websocket").level == logging.DEBUG
    assert JsonFormatter not in _formatters("airi.websocket")


def test_websocket_logger_can_differ(restore_loggers: None) -> None:
    buf = io.StringIO()
    setup_logging("error", "pretty", websocket_level="debug", websocket_format="json", stream=buf)
    app, ws = logging.getLogger("airi"), logging.getLogger("airi.websocket")
    assert app.level == logging.ERROR and ws.level == logging.DEBUG
    assert _formatters("airi.websocket") == [JsonFormatter]
    assert JsonFormatter not in _formatters("airi")
    ws.debug("frame from %s", "p9")
    app.info("app info hidden")
    app.error("app error shown")
    text = buf.getvalue()
    lines = text.splitlines()
    js = _json_lines(text)
    assert [(r["logger"], r["level"], r["message"]) for r in js] == [("airi.websocket", "debug", "frame from p9")]
    assert "app info hidden" not in text
    assert any("app error shown" in line and not line.startswith("{") for line in lines)


def test_setup_logging_is_idempotent(restore_loggers: None) -> None:
    buf = io.StringIO()
    for _ in range(3):
        setup_logging("log", "json", stream=buf)
    assert len(logging.getLogger("airi").handlers) == 1
    assert len(logging.getLogger("airi.websocket").handlers) == 1
    logging.getLogger("airi").info("once")
    assert len(_json_lines(buf.getvalue())) == 1


# --------------------------------------------------------------------------------------------
# a real hub process
# --------------------------------------------------------------------------------------------


async def _session(hub: HubProcess, token: str | None = None) -> None:
    """Connect two peers, announce, route a few events, close one, then stop the hub."""
    url = await hub.await_listening()
    a = await connect_client(url, "log-a", token=token, announce=True)
    b = await connect_client(url, "log-b", token=token, announce=True)
    try:
        await a.send("custom:event", {"n": 1})
        await b.wait_for("custom:event")
        await a.send_raw("not json")
        await a.wait_for("error")
    finally:
        await a.close()
        await b.wait_for("module:de-announced")
        await b.close()
    await wait_until(lambda: hub.stderr.count("closed ") >= 2, 10, "two 'closed ' log lines", every=0.05)
    hub.send_signal(signal.SIGTERM)
    assert await hub.await_exit(10) == 0, hub.output()


async def test_json_format_one_object_per_line(tmp_path: Path) -> None:
    hub = HubProcess(["serve", "--port", "0"], cwd=tmp_path, env={"LOG_FORMAT": "json"})
    try:
        await _session(hub)
    finally:
        hub.stop()
    err = hub.stderr
    records = _json_lines(err)  # every line that starts with "{" must parse
    assert records, err
    for r in records:
        assert {"time", "level", "logger", "message"} <= set(r), r
        assert r["level"] in LEVELS
    ws = [r for r in records if r["logger"] == "airi.websocket"]
    connected = [r for r in ws if r["message"].startswith("connected ")]
    closed = [r for r in ws if r["message"].startswith("closed ")]
    assert len(connected) >= 2 and len(closed) >= 2, [r["message"] for r in ws]
    assert all(r.get("peer") for r in connected + closed)  # structured extras survive
    assert any(r["logger"] == "airi" and r["message"].startswith("announced ") for r in records)
    assert any(r["message"].startswith("shutting down") for r in records)
    # no log line in the pretty format slipped through
    assert not [line for line in err.splitlines() if PRETTY_LOG_LINE.match(line)], err
    assert "Traceback" not in err


async def test_pretty_format_logs_connections(tmp_path: Path) -> None:
    hub = HubProcess(["serve", "--port", "0"], cwd=tmp_path)
    try:
        await _session(hub)
    finally:
        hub.stop()
    err = hub.stderr
    assert not _json_lines(err)
    assert re.search(r"connected \S+ from 127\.0\.0\.1:\d+", err), err
    assert re.search(r"closed \S+ ", err), err


async def test_websocket_format_and_level_from_config(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[logging]\nlevel = "log"\nformat = "pretty"\nwebsocket_format = "json"\n',
    )
    hub = HubProcess(["serve", "--config", str(path), "--port", "0"])
    try:
        await _session(hub)
    finally:
        hub.stop()
    records = _json_lines(hub.stderr)
    assert records and all(r["logger"] == "airi.websocket" for r in records), records
    assert any(r["message"].startswith("connected ") for r in records)
    # the app logger stays pretty
    assert re.search(r"^(?!\{).*announced \S+", hub.stderr, re.M), hub.stderr


async def test_websocket_level_quieter_than_app(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[logging]\nlevel = "log"\nwebsocket_level = "error"\n')
    hub = HubProcess(["serve", "--config", str(path), "--port", "0"], env={"LOG_FORMAT": "json"})
    try:
        url = await hub.await_listening()
        c = await connect_client(url, "quiet", announce=True)
        await hub.await_stderr(r"announced ", timeout=10)
        await c.close()
        hub.send_signal(signal.SIGTERM)
        assert await hub.await_exit(10) == 0
    finally:
        hub.stop()
    records = _json_lines(hub.stderr)
    assert not [r for r in records if r["logger"] == "airi.websocket"], records
    assert [r for r in records if r["logger"] == "airi" and r["message"].startswith("announced ")]


async def test_websocket_level_louder_than_app(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[logging]\nlevel = "error"\nwebsocket_level = "log"\nformat = "json"\n')
    hub = HubProcess(["serve", "--config", str(path), "--port", "0"])
    try:
        url = await hub.await_listening()
        c = await connect_client(url, "loud", announce=True)
        await hub.await_stderr(r'"connected ', timeout=10)
        await c.close()
        await hub.await_stderr(r'"closed ', timeout=10)
        hub.send_signal(signal.SIGTERM)
        assert await hub.await_exit(10) == 0
    finally:
        hub.stop()
    records = _json_lines(hub.stderr)
    assert [r for r in records if r["logger"] == "airi.websocket" and r["message"].startswith("connected ")]
    assert not [r for r in records if r["logger"] == "airi" and r["level"] in ("log", "debug", "trace")], records


async def test_log_level_env_and_flag(tmp_path: Path) -> None:
    """LOG_LEVEL=error hides connection lines; --log-level log (a flag) brings them back."""
    for extra, expect_lines in (([], False), (["--log-level", "log"], True)):
        hub = HubProcess(["serve", "--port", "0", *extra], cwd=tmp_path, env={"LOG_LEVEL": "error", "LOG_FORMAT": "json"})
        try:
            url = await hub.await_listening()
            c = await connect_client(url, "lvl", announce=True)
            await c.close()
            await asyncio.sleep(0.2)
            hub.send_signal(signal.SIGTERM)
            assert await hub.await_exit(10) == 0
        finally:
            hub.stop()
        msgs = [r["message"] for r in _json_lines(hub.stderr)]
        assert any(m.startswith("connected ") for m in msgs) is expect_lines, (extra, msgs)


# --------------------------------------------------------------------------------------------
# the token never reaches the output
# --------------------------------------------------------------------------------------------


async def _auth_session(hub: HubProcess) -> None:
    url = await hub.await_listening()
    intruder = await connect_client(url, "intruder")
    member: HubClient | None = None
    try:
        reply = await intruder.authenticate(WRONG)
        assert reply["type"] == "error" and reply["data"]["message"] == "invalid token"
        # a wrong token sent in other shapes too
        await intruder.send("module:authenticate", {"token": [WRONG]})
        await intruder.send("module:announce", {"name": "intruder", "identity": {"kind": "plugin", "plugin": {"id": "x"}}})
        await intruder.wait_for("error", lambda e: "must authenticate" in e["data"]["message"])
        member = await connect_client(url, "member", token=TOKEN, announce=True)
        await member.send("custom:ping", {"hello": 1})
        await intruder.send("custom:ping", {})
        await intruder.wait_for("error", lambda e: e["data"]["message"] == "not authenticated")
    finally:
        await intruder.close()
        if member is not None:
            await member.close()
    await asyncio.sleep(0.2)
    hub.send_signal(signal.SIGTERM)
    assert await hub.await_exit(10) == 0, hub.output()


@pytest.mark.parametrize("fmt", ["pretty", "json"])
async def test_token_never_logged_from_file(tmp_path: Path, fmt: str) -> None:
    path = write_config(tmp_path, f'[auth]\ntoken = "{TOKEN}"\n')
    hub = HubProcess(["serve", "--config", str(path), "--port", "0"], env={"LOG_LEVEL": "trace", "LOG_FORMAT": fmt})
    try:
        await _auth_session(hub)
    finally:
        hub.stop()
    out = hub.output()
    assert "authentication failed" in out and "authenticated" in out  # logging was on
    for secret in (TOKEN, WRONG):
        assert secret not in out, f"{secret} printed:\n{out}"


async def test_token_never_logged_from_env(tmp_path: Path) -> None:
    hub = HubProcess(["serve", "--port", "0"], cwd=tmp_path, env={"AUTHENTICATION_TOKEN": TOKEN, "LOG_LEVEL": "trace"})
    try:
        await _auth_session(hub)
    finally:
        hub.stop()
    out = hub.output()
    assert "on" in re.search(r"auth\s+(\S+)", hub.stderr).group(1)
    assert TOKEN not in out and WRONG not in out, out


async def test_token_never_logged_with_websocket_trace(tmp_path: Path) -> None:
    path = write_config(tmp_path, f'[auth]\ntoken = "{TOKEN}"\n[logging]\nlevel = "trace"\nwebsocket_level = "trace"\nformat = "json"\n')
    hub = HubProcess(["serve", "--config", str(path), "--port", "0"])
    try:
        await _auth_session(hub)
    finally:
        hub.stop()
    out = hub.output()
    assert _json_lines(hub.stderr)
    assert TOKEN not in out and WRONG not in out, out


async def test_a_burst_of_connection_lines_is_counted_not_lost(tmp_path: Path) -> None:
    """Over logging.connection_lines_per_second, connection and announce lines go to debug and a
    line a second counts them: every one is either logged or counted."""
    path = write_config(tmp_path, '[logging]\nformat = "json"\nconnection_lines_per_second = 2\n')
    hub = HubProcess(["serve", "--config", str(path), "--port", "0"])
    try:
        url = await hub.await_listening()
        clients = [await connect_client(url, f"burst-{i}", announce=True) for i in range(6)]
        await wait_until(lambda: "more lines about connections and modules" in hub.stderr, 10, "the count of demoted lines", every=0.05)
        for c in clients:
            await c.close()
        hub.send_signal(signal.SIGTERM)
        assert await hub.await_exit(10) == 0, hub.output()
    finally:
        hub.stop()
    records = _json_lines(hub.stderr)
    logged = {kind: 0 for kind in ("connected", "announced", "closed")}
    counted = dict(logged)
    for r in records:
        message = r["message"]
        for kind in logged:
            if message.startswith(kind + " "):
                logged[kind] += 1
        m = re.match(r"(\d+) more lines about connections and modules in the last second, at level debug: (.*) \(", message)
        if m:
            parts = dict(p.rsplit(" ", 1) for p in m.group(2).split(", "))
            assert sum(int(n) for n in parts.values()) == int(m.group(1)), message
            for kind, n in parts.items():
                counted[kind] += int(n)
    assert sum(counted.values()) > 0, records
    assert {kind: logged[kind] + counted[kind] for kind in logged} == {"connected": 6, "announced": 6, "closed": 6}, (logged, counted)
