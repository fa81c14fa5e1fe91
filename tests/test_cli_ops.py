"""Issue 12 items 2, 4 and 5 through the real ``airi`` command: ``airi discover`` against a hub
advertising over mDNS on the loopback interface, the client tools' error paths, and ``serve`` /
``plugins`` / ``config check`` polish. Every process is started here and stopped by its PID."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from airi_core.cli import build_parser
from airi_core.server.discovery import txt_record
from airi_core.testing import connect_client, start_hub

from ._hubproc import HubProcess, airi_cmd, free_port, hub_env, run_cli, write_config

BAD_TRACES = ("Traceback", "Task was destroyed", "was never awaited", "Event loop is closed")


def assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    out = proc.stdout + proc.stderr
    for bad in BAD_TRACES:
        assert bad not in out, out


async def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, list(args), env=env, timeout=timeout)


# -- airi discover ---------------------------------------------------------------------------------
async def test_discover_finds_a_hub_advertised_over_loopback_then_not_after_shutdown(tmp_path: Path) -> None:
    instance = f"disc-{os.getpid()}-{time.monotonic_ns() % 100000}"
    hub = await start_hub({
        "server": {"instance_id": instance},
        "auth": {"token": "tok"},
        "discovery": {"mdns": True, "name": f"test hub {instance}", "interfaces": ["127.0.0.1"]},
    })
    try:
        assert hub.advertiser is not None
        await asyncio.wait_for(hub.advertiser.registered.wait(), 15)
        assert hub.advertiser.error is None
        found: list[dict[str, Any]] = []
        for _ in range(3):  # bounded: mDNS on a busy machine may miss one window
            proc = await cli("discover", "--interface", "127.0.0.1", "--timeout", "2", "--json")
            assert_clean(proc)
            found = [h for h in json.loads(proc.stdout or "[]") if h["id"] == instance]
            if found:
                break
        assert found, proc.stdout + proc.stderr
        (h,) = found
        assert h["name"] == f"test hub {instance}"
        assert h["addresses"] == ["127.0.0.1"] and h["port"] == hub.port
        assert (h["path"], h["proto"], h["auth"], h["txtvers"]) == ("/ws", "ws", "token", "1")
        assert h["url"] == f"ws://127.0.0.1:{hub.port}/ws"
        for _ in range(3):  # the table form, with the same bound for a missed window
            table = await cli("discover", "--interface", "127.0.0.1", "--timeout", "2")
            assert_clean(table)
            if table.returncode == 0 and f"test hub {instance}" in table.stdout:
                break
        assert table.returncode == 0 and f"test hub {instance}" in table.stdout, table.stdout + table.stderr
    finally:
        await hub.shutdown()
    # withdrawn on shutdown (goodbye packets): no longer listed
    proc = await cli("discover", "--interface", "127.0.0.1", "--timeout", "2", "--json")
    assert_clean(proc)
    assert not [h for h in json.loads(proc.stdout or "[]") if h["id"] == instance], proc.stdout


async def test_advertising_a_loopback_bind_warns_and_txt_says_no_auth(caplog: pytest.LogCaptureFixture) -> None:
    hub = await start_hub({"discovery": {"mdns": True, "name": f"loop {os.getpid()}"}})
    try:
        assert txt_record(hub) == {"txtvers": "1", "path": "/ws", "proto": "ws", "auth": "none", "id": hub.instance_id}
        await asyncio.wait_for(hub.advertiser.registered.wait(), 15)
        assert any("loopback address" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    finally:
        await hub.shutdown()


def test_discover_finding_nothing_exits_1() -> None:
    proc = run_cli(["discover", "--interface", "127.0.0.1", "--timeout", "0.5"])
    assert_clean(proc)
    # other hubs may be advertised on this machine: only "nothing found" must say so
    if proc.returncode == 1:
        assert proc.stderr.strip().startswith("no AIRI hub found within 0.5 s")
    else:
        assert proc.returncode == 0 and "AIRI hubs" in proc.stdout


# -- the client tools fail well ----------------------------------------------------------------
async def test_client_tools_error_paths_one_line_each() -> None:
    hub = await start_hub({"auth": {"token": "right"}})
    refused_url = f"ws://127.0.0.1:{free_port()}/ws"
    try:
        cases: list[tuple[list[str], int, str]] = [
            (["send", "test:x", "--url", f"http://127.0.0.1:{hub.port}/ws"], 2,
             f"error: 'http://127.0.0.1:{hub.port}/ws' is not a WebSocket URL: use ws://HOST:PORT/PATH"),
            (["send", "test:x", "--url", refused_url], 1, f"error: cannot connect to {refused_url}: connection refused"),
            (["tail", "--url", refused_url], 1, f"error: cannot connect to {refused_url}: connection refused"),
            (["modules", "--url", refused_url], 1, f"error: cannot connect to {refused_url}: connection refused"),
            (["send", "test:x", "--url", hub.url, "--token", "wrong"], 1,
             "error: the hub refused the token (invalid token): check --token or $AIRI_HUB_TOKEN"),
            (["tail", "--url", hub.url, "--token", "wrong"], 1, "error: the hub refused the token (invalid token)"),
            (["modules", "--url", hub.url, "--token", "wrong"], 1, "error: the hub refused the token (invalid token)"),
            (["send", "test:x", "--url", hub.url], 1, "error: the hub requires a token: pass --token"),
            (["modules", "--url", f"ws://127.0.0.1:{hub.port}/nope", "--token", "right"], 1,
             f"error: cannot connect to ws://127.0.0.1:{hub.port}/nope: the hub refused the WebSocket connection: HTTP 404 (wrong path?"),
        ]
        for args, rc, first in cases:
            started = time.monotonic()
            proc = await cli(*args, "--timeout", "10")
            took = time.monotonic() - started
            assert_clean(proc)
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert proc.returncode == rc, (args, proc.stderr)
            assert len(lines) == 1 and lines[0].startswith(first), (args, proc.stderr)  # one line, printed once
            assert took < 8, (args, took)  # fast: nothing waits for --timeout 10
    finally:
        await hub.shutdown()


async def test_client_tool_timeout_is_one_line() -> None:
    # a listening socket that never answers the WebSocket handshake
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}/ws"
        proc = await cli("modules", "--url", url, "--timeout", "1")
    assert_clean(proc)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines == [f"error: the hub at {url} did not answer within 1 s"], proc.stderr


async def test_send_tells_when_a_consumer_delivered_type_reached_nobody() -> None:
    hub = await start_hub()
    try:
        proc = await cli("send", "input:text", '{"text": "hello"}', "--url", hub.url, "--wait", "0")
        assert_clean(proc)
        assert proc.returncode == 1, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert "nothing took input:text" in line and "'chat-ingestion'" in line
        # with a consumer registered, the README example is delivered and exits 0
        consumer = await connect_client(hub, "consumer", announce=True)
        await consumer.send("module:consumer:register", {"event": "input:text", "group": "chat-ingestion"})
        await consumer.fence()
        assert not consumer.error_messages()
        start = consumer.mark()
        proc = await cli("send", "input:text", '{"text": "hello"}', "--url", hub.url, "--wait", "0")
        assert_clean(proc)
        assert proc.returncode == 0, proc.stderr
        got = await consumer.wait_for("input:text", start=start)
        assert got["data"]["text"] == "hello"
        await consumer.close()
    finally:
        await hub.shutdown()


async def test_modules_with_an_announced_module_prints_no_asyncio_warning() -> None:
    hub = await start_hub()
    try:
        mod = await connect_client(hub, "some-module", announce=True)
        for tool in (["modules"], ["modules", "--json"], ["tail", "--seconds", "0.3"], ["send", "test:x", "--wait", "0.2"]):
            proc = await cli(*tool, "--url", hub.url)
            assert_clean(proc)
            assert proc.returncode == 0, (tool, proc.stderr)
        assert "some-module" in (await cli("modules", "--url", hub.url)).stdout
        await mod.close()
    finally:
        await hub.shutdown()


# -- serve, plugins, config check -----------------------------------------------------------------
def test_port_in_use_is_one_line_with_a_port_hint(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for fmt in ("pretty", "json"):
            proc = run_cli(["serve", "--port", str(port), "--log-format", fmt], cwd=tmp_path)
            assert proc.returncode == 1
            lines = [line for line in proc.stderr.splitlines() if "cannot listen" in line]
            assert len(lines) == 1, proc.stderr
            line = lines[0] if fmt == "pretty" else json.loads(lines[0])["message"]
            assert "already in use" in line and "--port" in line, line
            assert line.count(str(port)) == 1, line  # the address once
            assert_clean(proc)


def _broken_plugin_site(tmp_path: Path) -> dict[str, str]:
    """An installed distribution whose ``airi.plugins`` entry point fails to import."""
    site = tmp_path / "site"
    dist = site / "airi_broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: airi-broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[airi.plugins]\nbroken = airi_broken_mod:Plugin\n")
    (site / "airi_broken_mod.py").write_text("raise ImportError('needs a module that is not installed')\n")
    return {"PYTHONPATH": str(site)}


def test_a_broken_plugin_named_in_the_config_stops_serve_with_exit_2(tmp_path: Path) -> None:
    env = _broken_plugin_site(tmp_path)
    for text in ('[plugins]\norder = ["broken"]\n', '[plugins]\nload = ["broken"]\n', "[plugins.broken]\nx = 1\n"):
        path = write_config(tmp_path, text)
        proc = run_cli(["serve", "--config", str(path), "--port", "0"], env=env)
        assert proc.returncode == 2, (text, proc.stderr)
        assert "plugin 'broken'" in proc.stderr and "failed to load" in proc.stderr and "needs a module" in proc.stderr
        assert "listening on" not in proc.stderr
        assert_clean(proc)
    # airi plugins shows it and exits non-zero, named or not
    for text in ('[plugins]\norder = ["broken"]\n', ""):
        path = write_config(tmp_path, text)
        proc = run_cli(["plugins", "--config", str(path)], env=env)
        assert proc.returncode == 1 and "broken" in proc.stdout and "needs a module" in proc.stdout, proc.stdout + proc.stderr
        proc = run_cli(["plugins", "--config", str(path), "--json"], env=env)
        assert proc.returncode == 1
        assert [r["error"] for r in json.loads(proc.stdout) if r["name"] == "broken"][0].startswith("ImportError")
    assert run_cli(["plugins"], cwd=tmp_path).returncode == 0  # nothing broken: 0


async def test_json_format_covers_every_line_including_summary_and_plugin_warnings(tmp_path: Path) -> None:
    env = {**_broken_plugin_site(tmp_path), "LOG_FORMAT": "json"}
    path = write_config(tmp_path, "[http]\nmetrics = true\n")
    with HubProcess.serve(path, env=env) as hub:
        await hub.await_listening()
        c = await connect_client(hub.url, "j", announce=True)
        await c.close()
        await hub.await_stderr('"closed ', timeout=10)
    lines = [line for line in hub.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    summary = [r for r in records if "startup summary" in r["message"]]
    assert len(summary) == 1 and summary[0]["url"] == hub.url and "auth" in summary[0] and "route_order" in summary[0]
    assert "broken" in summary[0]["skipped"]
    assert any(r["logger"] == "airi.plugins" and "broken" in r["message"] for r in records)


def test_config_check_takes_config_and_shows_computed_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[heartbeat]\nread_timeout_ms = 60000\n\n[auth]\ntoken = "hidden-token"\n', name="custom.toml")
    for args in (["config", "check", "--config", str(path)], ["config", "check", str(path)]):
        proc = run_cli(args)
        assert proc.returncode == 0, proc.stderr
        assert_clean(proc)
        shown = json.loads(proc.stdout.split("\n", 1)[1])
        assert shown["heartbeat"]["check_interval_ms"] == 12000  # max(5000, 60000 / 5), as serve uses
        assert shown["logging"]["websocket_level"] == "log" and shown["logging"]["websocket_format"] == "pretty"
        assert shown["plugins"]["registry"]["announce_burst"] == 10  # plugin tables with their defaults
        assert shown["http"] == {"enabled": True, "metrics": True, "metrics_token": None}
        assert shown["discovery"]["mdns"] is False
        assert "hidden-token" not in proc.stdout
    other = write_config(tmp_path, "", name="other.toml")
    proc = run_cli(["config", "check", str(path), "--config", str(other)])
    assert proc.returncode == 2 and "two config files" in proc.stderr


def test_every_option_of_every_command_has_help() -> None:
    parser = build_parser()
    missing = []

    def walk(p: argparse.ArgumentParser, where: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
                continue
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if not action.help:
                missing.append(f"{where}: {'/'.join(action.option_strings) or action.dest}")

    walk(parser, "airi")
    assert not missing, missing
    serve = run_cli(["serve", "--help"])
    assert serve.returncode == 0 and "Run the AIRI hub" in serve.stdout


def test_serve_help_runs_without_a_hub() -> None:
    proc = subprocess.run(airi_cmd("discover", "--help"), env=hub_env(), capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0 and "_airi._tcp" in proc.stdout
    assert re.search(r"--timeout S\s+seconds to listen", proc.stdout)


def test_json_format_covers_configuration_errors_too(tmp_path: Path) -> None:
    env = _broken_plugin_site(tmp_path)
    named = write_config(tmp_path, '[plugins]\norder = ["broken"]\n')
    for args, extra_env in ((["serve", "--port", "99999", "--log-format", "json"], {}),
                            (["serve", "--port", "0", "--config", str(named)], {**env, "LOG_FORMAT": "json"})):
        proc = run_cli(args, cwd=tmp_path, env=extra_env)
        assert proc.returncode == 2, proc.stderr
        records = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
        assert records and all(r["level"] == "error" for r in records), proc.stderr
        assert any("server.port" in r["message"] or "plugin 'broken'" in r["message"] for r in records)
