"""The ``airi`` command: ``plugins``, ``serve`` (startup summary, defaults, signals), ``--version``."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from airi_core import __version__
from airi_core.testing import HubClient, connect_client

try:
    from ._hubproc import HubProcess, free_port, port_accepts, run_cli, write_config
except ImportError:  # tests/ is not a package
    from _hubproc import HubProcess, free_port, port_accepts, run_cli, write_config  # type: ignore[no-redef]

BUILTINS = ["auth", "registry", "heartbeat", "bypass", "policy", "destinations", "consumers", "ui-configure"]
#: route plugins in their default order (each declares tryfirst/trylast); policy is not one
ROUTE_BUILTINS = ["destinations", "bypass", "consumers"]
SECRET = "cli-Tok-3f9a-shutdown-secret"


# --------------------------------------------------------------------------------------------
# airi plugins
# --------------------------------------------------------------------------------------------


def _table_rows(out: str) -> dict[str, list[str]]:
    """The first line of each row of rich's table, split into cells, keyed by plugin name."""
    rows: dict[str, list[str]] = {}
    for line in out.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells and cells[0]:
            rows[cells[0]] = cells
    return rows


def test_plugins_table_lists_builtins(tmp_path: Path) -> None:
    r = run_cli(["plugins"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    header = next(line for line in out.splitlines() if "name" in line and "distribution" in line)
    for col in ("name", "distribution", "version", "hooks", "enabled", "order"):
        assert col in header
    rows = _table_rows(out)
    for name in BUILTINS:
        assert name in rows, f"{name} missing from:\n{out}"
        cells = rows[name]
        assert cells[1] == "airi-hub", cells
        assert cells[2] == __version__
        assert cells[3] and cells[3] != "-", f"{name} shows no hooks: {cells}"
        assert cells[4].startswith("yes"), cells
    assert "essential" in rows["auth"][4] and "essential" in rows["registry"][4]
    assert "authenticate" in rows["auth"][3]
    assert "route" in rows["bypass"][3]
    positions = [int(rows[n][5]) for n in ROUTE_BUILTINS]
    assert positions == sorted(positions), positions
    assert rows["policy"][5] == "-"  # a standing route filter, not a route plugin
    for name in ("auth", "registry", "heartbeat", "ui-configure"):
        assert rows[name][5] == "-"  # not a route plugin


def test_plugins_table_full_hook_names_in_wide_terminal(tmp_path: Path) -> None:
    r = run_cli(["plugins"], cwd=tmp_path)
    assert r.returncode == 0
    assert "peer_disconnected" in r.stdout  # registry / consumers, not truncated at 250 columns
    assert "heartbeat" in r.stdout


def test_plugins_json_parses(tmp_path: Path) -> None:
    r = run_cli(["plugins", "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert isinstance(rows, list)
    by_name = {row["name"]: row for row in rows}
    for name in BUILTINS:
        row = by_name[name]
        assert {"name", "distribution", "version", "hooks", "enabled", "essential", "route_order", "error"} <= set(row)
        assert row["distribution"] == "airi-hub"
        assert row["version"] == __version__
        assert row["enabled"] is True
        assert row["error"] is None
        assert row["hooks"] and all(h.startswith("airi_") for h in row["hooks"])
        assert row["essential"] is (name in ("auth", "registry"))
    assert "airi_authenticate" in by_name["auth"]["hooks"]
    assert "airi_announce" in by_name["registry"]["hooks"]
    assert "airi_heartbeat" in by_name["heartbeat"]["hooks"]
    assert "airi_event" in by_name["ui-configure"]["hooks"]
    order = [by_name[n]["route_order"] for n in ROUTE_BUILTINS]
    assert all(isinstance(o, int) for o in order) and order == sorted(order)
    assert order[0] == 1  # destinations is consulted first by default
    assert by_name["auth"]["route_order"] is None
    assert by_name["policy"]["route_order"] is None and by_name["policy"]["route_wrapper"] is False


def test_plugins_reflects_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[plugins]\ndisable = ["ui-configure"]\norder = ["consumers", "bypass"]\n')
    r = run_cli(["plugins", "--json", "--config", str(path)])
    assert r.returncode == 0, r.stderr
    by_name = {row["name"]: row for row in json.loads(r.stdout)}
    assert by_name["ui-configure"]["enabled"] is False
    assert by_name["consumers"]["route_order"] == 1
    assert by_name["bypass"]["route_order"] == 2
    # and the table says "no" for the disabled one
    r = run_cli(["plugins", "--config", str(path)])
    assert _table_rows(r.stdout)["ui-configure"][4] == "no"


def test_plugins_uses_cwd_airi_toml(tmp_path: Path) -> None:
    write_config(tmp_path, '[plugins]\ndisable = ["heartbeat"]\n')
    r = run_cli(["plugins", "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert {row["name"]: row for row in json.loads(r.stdout)}["heartbeat"]["enabled"] is False


def test_plugins_with_invalid_config_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[plugins]\ndisable = ["auth"]\n')
    r = run_cli(["plugins", "--config", str(path)])
    assert r.returncode == 2
    assert str(path) in r.stderr and "plugins.disable" in r.stderr


# --------------------------------------------------------------------------------------------
# --version, help
# --------------------------------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    r = run_cli(["--version"], cwd=tmp_path)
    assert r.returncode == 0
    assert __version__ in r.stdout
    assert re.fullmatch(r"airi \d+\.\d+\.\d+\S*\n", r.stdout), r.stdout


def test_console_script_version(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "airi"
    assert script.exists(), "the `airi` console script is not installed next to the interpreter"
    import subprocess

    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=20, cwd=tmp_path)
    assert r.returncode == 0 and __version__ in r.stdout


def test_help_lists_commands(tmp_path: Path) -> None:
    r = run_cli(["--help"], cwd=tmp_path)
    assert r.returncode == 0
    for cmd in ("serve", "plugins", "config"):
        assert cmd in r.stdout


# --------------------------------------------------------------------------------------------
# airi serve: startup summary and defaults
# --------------------------------------------------------------------------------------------


def _summary_field(stderr: str, field: str) -> str:
    m = re.search(rf"^\s*{field}\s+(.*)$", stderr, re.M)
    assert m, f"no {field!r} line in the startup summary:\n{stderr}"
    return m.group(1).strip()


def test_serve_summary_with_config_file(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(
        tmp_path,
        f'[server]\nport = {port}\n[auth]\ntoken = "{SECRET}"\n[heartbeat]\nread_timeout_ms = 30000\n',
    )
    hub = HubProcess(["serve", "--config", str(path)])
    try:
        url = hub.wait_listening()
        assert url == f"ws://127.0.0.1:{port}/ws"
        hub.wait_for_stderr(r"route order")
        err = hub.stderr
        assert _summary_field(err, "config") == str(path)
        auth = _summary_field(err, "auth")
        assert auth.startswith("on"), auth
        plugins = [p.strip() for p in _summary_field(err, "plugins").split(",")]
        for name in BUILTINS:
            assert name in plugins
        route = [p.strip() for p in _summary_field(err, "route order").split("->")]
        assert route[:2] == ["destinations", "bypass"] and route[-1] == "consumers", route
        assert "6000 ms" in _summary_field(err, "heartbeat")
        assert SECRET not in hub.output()
    finally:
        hub.stop()
    assert "Traceback" not in hub.output()


def test_serve_summary_auth_off_and_route_order_from_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[plugins]\norder = ["destinations"]\ndisable = ["policy"]\n')
    hub = HubProcess(["serve", "--config", str(path), "--port", "0"])
    try:
        hub.wait_listening()
        hub.wait_for_stderr(r"route order")
        err = hub.stderr
        assert _summary_field(err, "auth").startswith("off")
        route = [p.strip() for p in _summary_field(err, "route order").split("->")]
        assert route[0] == "destinations" and "policy" not in route and route[-1] == "consumers", route
        assert "policy" not in [p.strip() for p in _summary_field(err, "plugins").split(",")]
    finally:
        hub.stop()


def test_serve_without_config_in_empty_cwd_runs_on_defaults(tmp_path: Path) -> None:
    port = free_port()
    hub = HubProcess(["serve", "--port", str(port)], cwd=tmp_path)
    try:
        assert hub.wait_listening() == f"ws://127.0.0.1:{port}/ws"
        hub.wait_for_stderr(r"route order")
        err = hub.stderr
        assert "none" in _summary_field(err, "config") and "default" in _summary_field(err, "config")
        assert _summary_field(err, "auth").startswith("off")
        assert _summary_field(err, "wire format") == "superjson"
        assert "60000 ms" in _summary_field(err, "heartbeat") and "12000 ms" in _summary_field(err, "heartbeat")

        async def talk() -> None:
            c = await connect_client(f"ws://127.0.0.1:{port}/ws", "defaults-probe")
            try:
                # no token configured: authenticated at once, then a registry sync
                await c.wait_for("module:authenticated")
                await c.wait_for("registry:modules:sync")
            finally:
                await c.close()

        asyncio.run(talk())
    finally:
        hub.stop()
    assert list(tmp_path.iterdir()) == []  # serve wrote nothing into the cwd


def test_serve_host_and_port_from_env(tmp_path: Path) -> None:
    port = free_port()
    try:  # any 127.0.0.0/8 address is loopback on Linux; use one that differs from the default
        with socket.socket() as s:
            s.bind(("127.0.0.2", port))
        host = "127.0.0.2"
    except OSError:
        host = "127.0.0.1"
    hub = HubProcess(["serve"], cwd=tmp_path, env={"HOST": host, "PORT": str(port)})
    try:
        assert hub.wait_listening() == f"ws://{host}:{port}/ws"
        assert port_accepts(port, host)
    finally:
        hub.stop()


def test_serve_flag_beats_env(tmp_path: Path) -> None:
    env_port, flag_port = free_port(), free_port()
    hub = HubProcess(["serve", "--port", str(flag_port), "--host", "127.0.0.1"], cwd=tmp_path, env={"PORT": str(env_port), "HOST": "0.0.0.0"})
    try:
        assert hub.wait_listening() == f"ws://127.0.0.1:{flag_port}/ws"
        assert not port_accepts(env_port)
    finally:
        hub.stop()


def test_serve_busy_port_fails_cleanly(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        hub = HubProcess(["serve", "--port", str(port)], cwd=tmp_path)
        try:
            rc = hub.wait_exit(15)
            assert rc not in (None, 0), hub.output()
            assert "cannot listen" in hub.stderr and str(port) in hub.stderr
            assert "Traceback" not in hub.output()
        finally:
            hub.stop()


# --------------------------------------------------------------------------------------------
# airi serve: shutdown on SIGTERM / SIGINT
# --------------------------------------------------------------------------------------------


async def _wait_closed(client: HubClient, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while client.close_code is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert client.close_code is not None, f"{client.name}: not closed within {timeout}s"
    await asyncio.wait_for(asyncio.shield(client._reader), timeout)  # every frame before the close is recorded


def _de_announced(client: HubClient, name: str) -> list[dict]:
    return [e for e in client.received if e.get("type") == "module:de-announced" and e["data"].get("name") == name]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serve_graceful_shutdown(tmp_path: Path, sig: signal.Signals) -> None:
    path = write_config(tmp_path, "[server]\ndrain_timeout_ms = 3000\n")
    hub = HubProcess(["serve", "--config", str(path), "--port", "0"])
    clients: list[HubClient] = []
    try:
        url = await hub.await_listening()
        announced = [await connect_client(url, f"mod-{i}", announce=True) for i in range(3)]
        silent = await connect_client(url, "not-announced")  # authenticated (no token), never announced
        clients = [*announced, silent]
        for c in clients:
            await c.wait_for("registry:modules:sync", lambda e: len(e["data"]["modules"]) == 3, start=0)

        sent_at = time.monotonic()
        hub.send_signal(sig)
        for c in clients:
            await _wait_closed(c)
        rc = await hub.await_exit(10)
        elapsed = time.monotonic() - sent_at
        assert rc == 0, hub.output()
        assert elapsed < 5, f"hub took {elapsed:.1f}s to stop"

        for c in clients:
            assert c.close_code == 1001, (c.name, c.close_code)
            assert c.close_reason == "server shutdown", (c.name, c.close_reason)
        # every announced peer's de-announce reached every other peer, before its close frame
        missing = []
        for gone in announced:
            for other in clients:
                if other is gone:
                    continue
                evs = _de_announced(other, gone.name)
                if not evs:
                    missing.append(f"{other.name} got no de-announce of {gone.name}")
                    continue
                assert evs[-1]["data"]["reason"] == "server shutdown", evs
                assert evs[-1]["data"].get("index") is None
                assert evs[-1]["data"]["identity"]["plugin"]["id"] == gone.name
        assert not missing, "\n".join(missing)
        out = hub.output()
        assert "Traceback" not in out, out
        assert "Exception" not in hub.stderr and "Error" not in hub.stderr, hub.stderr
    finally:
        for c in clients:
            await c.close()
        hub.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serve_shutdown_closes_unauthenticated_peers_too(tmp_path: Path, sig: signal.Signals) -> None:
    path = write_config(tmp_path, f'[auth]\ntoken = "{SECRET}"\n')
    hub = HubProcess(["serve", "--config", str(path), "--port", "0"])
    clients: list[HubClient] = []
    try:
        url = await hub.await_listening()
        stranger = await connect_client(url, "stranger")  # never authenticates
        member = await connect_client(url, "member", token=SECRET, announce=True)
        clients = [stranger, member]
        await asyncio.sleep(0.1)
        hub.send_signal(sig)
        for c in clients:
            await _wait_closed(c)
        assert await hub.await_exit(10) == 0, hub.output()
        for c in clients:
            assert (c.close_code, c.close_reason) == (1001, "server shutdown"), c.name
        # the unauthenticated peer learns nothing about the registry
        assert not [e for e in stranger.received if e.get("type", "").startswith(("module:", "registry:"))]
        assert "Traceback" not in hub.output()
        assert SECRET not in hub.output()
    finally:
        for c in clients:
            await c.close()
        hub.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_idle_shutdown(tmp_path: Path, sig: signal.Signals) -> None:
    hub = HubProcess(["serve", "--port", "0"], cwd=tmp_path)
    try:
        url = hub.wait_listening()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        started = time.monotonic()
        hub.send_signal(sig)
        assert hub.wait_exit(10) == 0, hub.output()
        assert time.monotonic() - started < 3
        assert not port_accepts(port)
        assert "Traceback" not in hub.output() and "KeyboardInterrupt" not in hub.output()
    finally:
        hub.stop()


def test_serve_shutdown_is_bounded_when_a_peer_never_answers(tmp_path: Path) -> None:
    """A peer that completed the handshake but never reads nor answers the close frame cannot
    keep the hub alive: it exits 0 after the drain timeout, and the port is released."""
    path = write_config(tmp_path, "[server]\ndrain_timeout_ms = 1000\n[limits]\nclose_timeout_ms = 500\n")
    hub = HubProcess(["serve", "--config", str(path), "--port", "0"])
    try:
        url = hub.wait_listening()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(
                (
                    f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = raw.recv(4096)
                assert chunk, "connection closed during the handshake"
                head += chunk
            assert head.startswith(b"HTTP/1.1 101"), head
            hub.wait_for_stderr(r"connected")
            started = time.monotonic()
            hub.send_signal(signal.SIGTERM)
            rc = hub.wait_exit(15)
            elapsed = time.monotonic() - started
        assert rc == 0, hub.output()
        assert elapsed < 6, f"hub took {elapsed:.1f}s to stop"
        assert not port_accepts(port)
        assert "Traceback" not in hub.output()
    finally:
        hub.stop()
