"""Attacks on the hub's transport (issue 9: findings 4, 9, 10, 11 and part of 12), measured.

Each scenario starts a fresh hub subprocess on a loopback port (its log goes to a file), attacks
it, measures, and stops it by its PID:

- ``origin``: WebSocket handshakes with ``Origin: https://evil.example`` and ``null``: the HTTP
  status; when the hub lets them in, whether the page reads a broadcast and injects
  ``input:text`` into a chat consumer;
- ``logname``: a module announces a name holding a newline and a forged log line: forged lines
  in the pretty log;
- ``logflood``: one peer sends N events whose type is 500 KB, with consumer delivery and no
  consumer: log bytes and time;
- ``partial``: P peers each send all but one byte of a 1 MiB frame: the hub's RSS before,
  at its peak, and what the peers were told;
- ``fds``: the hub started with RLIMIT_NOFILE = 1024 (soft = hard), 1100 idle TCP connections
  that never send a request, then one legitimate client: how long it took to get in, and the
  EMFILE lines in the log;
- ``signals``: SIGHUP, SIGUSR1, SIGUSR2 sent to a hub with one announced client: is the hub still
  there, what close code did the client get;
- ``headers``: the ``Server`` header and the body of a 404 for a path holding markup.

``--baseline DIR`` runs the hub from another checkout (``PYTHONPATH=DIR:DIR/plugins``), for
before/after numbers::

    python bench/attack_transport.py                         # this tree
    python bench/attack_transport.py --baseline /work/base   # an older checkout
    python bench/attack_transport.py --scenarios partial,fds --peers 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import InvalidStatus  # noqa: E402

from airi_core.testing import connect_client  # noqa: E402
from tests._hubproc import checkout_env, free_port, hub_env, rss_kib  # noqa: E402

SCENARIOS = ("origin", "logname", "logflood", "partial", "fds", "signals", "headers")


class Hub:
    """``python -m airi_core serve`` on a free port, its stderr in a file; stopped by its PID."""

    def __init__(self, baseline: str | None, config: str = "", nofile: tuple[int, int] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="airi-attack-"))
        (self.dir / "airi.toml").write_text(config, encoding="utf-8")
        self.port = free_port()
        self.log_path = self.dir / "hub.log"
        env = hub_env(checkout_env(baseline))

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        self.log_file = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airi_core", "serve", "--config", str(self.dir / "airi.toml"), "--port", str(self.port)],
            cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=self.log_file,
            preexec_fn=limit,
        )
        self.pid = self.proc.pid
        self.url = f"ws://127.0.0.1:{self.port}/ws"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size

    async def listening(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while "listening on" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hub did not start:\n{self.log()}")
            await asyncio.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log_file.close()


async def _status(url: str, origin: str | None) -> tuple[int, Any]:
    try:
        ws = await connect(url, origin=origin, open_timeout=5)  # type: ignore[arg-type]
    except InvalidStatus as exc:
        return exc.response.status_code, None
    return 101, ws


async def origin(args: argparse.Namespace) -> dict[str, Any]:
    hub = Hub(args.baseline)
    out: dict[str, Any] = {}
    try:
        await hub.listening()
        chat = await connect_client(hub.url, "chat", announce=True)
        await chat.send("module:consumer:register", {"event": "input:text", "mode": "consumer-group", "group": "chat-ingestion"})
        await chat.fence()
        member = await connect_client(hub.url, "member", announce=True)
        for page in ("https://evil.example", "null"):
            status, ws = await _status(hub.url, page)
            row: dict[str, Any] = {"status": status}
            if ws is not None:
                await ws.send(json.dumps({"type": "module:announce", "data": {"name": "page", "identity": {"kind": "plugin", "plugin": {"id": "page"}}}, "metadata": {"event": {"id": "a1"}}}))
                start = chat.mark()
                await member.send("test:broadcast", {"secret": 1})
                got = False
                with contextlib.suppress(asyncio.TimeoutError):
                    while not got:
                        frame = await asyncio.wait_for(ws.recv(), 2)
                        got = "test:broadcast" in frame
                row["read_broadcast"] = got
                await ws.send(json.dumps({"type": "input:text", "data": {"text": "injected"}, "metadata": {"event": {"id": "i1"}}}))
                with contextlib.suppress(AssertionError):
                    await chat.wait_for("input:text", start=start, timeout=2)
                row["injected_input_text"] = bool(chat.of_type("input:text", start))
                await ws.close()
            out[page] = row
        await chat.close()
        await member.close()
    finally:
        hub.stop()
    return out


FORGED = "12:00:00 error FORGED by a module name"


async def logname(args: argparse.Namespace) -> dict[str, Any]:
    hub = Hub(args.baseline)
    try:
        await hub.listening()
        c = await connect_client(hub.url, "x")
        await c.announce(name=f"mod\n{FORGED}\x1b[2J")
        await c.close()
        await asyncio.sleep(0.3)
    finally:
        hub.stop()
    lines = hub.log().split("\n")
    return {"forged_lines": sum(1 for line in lines if line.startswith(FORGED)), "escape_sequences": hub.log().count("\x1b[2J")}


async def logflood(args: argparse.Namespace) -> dict[str, Any]:
    hub = Hub(args.baseline)
    try:
        await hub.listening()
        c = await connect_client(hub.url, "flooder", announce=True)
        before = hub.log_bytes()
        big = "t" * 500_000
        t0 = time.monotonic()
        for _ in range(args.events):
            await c.send(big, {}, route={"delivery": {"mode": "consumer"}})
        await c.fence(timeout=120)
        elapsed = time.monotonic() - t0
        after = hub.log_bytes()
        await c.close()
    finally:
        hub.stop()
    return {"events": args.events, "seconds": round(elapsed, 2), "log_bytes": after - before, "warning_lines": hub.log().count("no consumer registered")}


async def partial(args: argparse.Namespace) -> dict[str, Any]:
    hub = Hub(args.baseline)
    peers: list[Any] = []
    try:
        await hub.listening()
        await asyncio.sleep(0.5)
        rss0 = rss_kib(hub.pid)
        peak = rss0
        n = 1 << 20
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n) + b"\0\0\0\0"
        payload = b"\0" * (n - 1)
        t0 = time.monotonic()
        for i in range(args.peers):
            ws = await connect(hub.url, max_size=None, open_timeout=10)
            ws.transport.write(head + payload)
            peers.append(ws)
            if i % 25 == 0:
                peak = max(peak, rss_kib(hub.pid))
        for _ in range(20):  # let the hub read what was sent (~2 s)
            await asyncio.sleep(0.1)
            peak = max(peak, rss_kib(hub.pid))
        elapsed = time.monotonic() - t0
        codes: dict[str, int] = {}
        for ws in peers:
            code = str(ws.close_code) if ws.close_code is not None else "open"
            codes[code] = codes.get(code, 0) + 1
        # a legitimate client still gets in and is served
        t1 = time.monotonic()
        c = await connect_client(hub.url, "legit", announce=True)
        legit = time.monotonic() - t1
        await c.close()
        rss_end = rss_kib(hub.pid)
    finally:
        for ws in peers:
            ws.transport.abort()
        hub.stop()
    return {
        "peers": args.peers, "rss_before_mb": round(rss0 / 1024, 1), "rss_peak_mb": round(peak / 1024, 1),
        "rss_end_mb": round(rss_end / 1024, 1), "seconds": round(elapsed, 1), "peers_by_close_code": codes,
        "legit_connect_s": round(legit, 3), "log_lines": hub.log().count("\n"),
    }


async def fds(args: argparse.Namespace) -> dict[str, Any]:
    hub = Hub(args.baseline, nofile=(args.nofile, args.nofile))
    idle: list[socket.socket] = []
    try:
        await hub.listening()
        t0 = time.monotonic()
        for i in range(args.idle):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", hub.port))
            idle.append(s)
            if i % 50 == 49:  # paced: past the listen backlog, the kernel would hold them back
                await asyncio.sleep(0.05)
        await asyncio.sleep(args.settle)
        hub_fds = len(os.listdir(f"/proc/{hub.pid}/fd"))
        t1 = time.monotonic()
        try:
            c = await asyncio.wait_for(connect_client(hub.url, "legit", announce=True), 30)
            legit: float | str = round(time.monotonic() - t1, 3)
            await c.close()
        except Exception as exc:  # noqa: BLE001 - reported
            legit = f"failed after {time.monotonic() - t1:.1f} s: {type(exc).__name__}"
        await asyncio.sleep(1)
        opened = time.monotonic() - t0
    finally:
        for s in idle:
            s.close()
        hub.stop()
    text = hub.log()
    return {
        "nofile": args.nofile, "idle_sockets": args.idle, "hub_fds_before_legit": hub_fds, "legit_connect_s": legit, "window_s": round(opened, 1),
        "emfile_lines": text.count("out of system resource"), "log_lines": text.count("\n"), "log_bytes": len(text.encode()),
    }


async def signals(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        hub = Hub(args.baseline)
        try:
            await hub.listening()
            c = await connect_client(hub.url, "sig", announce=True)
            os.kill(hub.pid, sig)
            await asyncio.sleep(0.5)
            alive = hub.alive()
            row: dict[str, Any] = {"hub_alive": alive}
            if alive:
                await c.fence()
                row["client_still_served"] = True
            else:
                with contextlib.suppress(Exception):
                    await c.wait_closed(3)
                row["client_close_code"] = c.close_code
                row["exit_status"] = hub.proc.returncode
            await c.close()
        finally:
            hub.stop()
        out[sig.name] = row
    return out


async def headers(args: argparse.Namespace) -> dict[str, Any]:
    hub = Hub(args.baseline)
    try:
        await hub.listening()
        out: dict[str, Any] = {}
        for path in ("/ws", "/<script>probe</script>"):
            reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            answer = await asyncio.wait_for(reader.read(65536), 5)
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            server = re.search(rb"(?im)^server: *(.*?)\r?$", head)
            out[path] = {"status": head.split(b" ", 2)[1].decode(), "server_header": server.group(1).decode() if server else None, "body": body.decode(errors="replace")}
    finally:
        hub.stop()
    return out


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", metavar="DIR", help="run the hub from this checkout instead (PYTHONPATH=DIR:DIR/plugins)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {','.join(SCENARIOS)}")
    p.add_argument("--events", type=int, default=200, help="logflood: events sent (default 200)")
    p.add_argument("--peers", type=int, default=500, help="partial: peers holding an incomplete 1 MiB frame (default 500)")
    p.add_argument("--nofile", type=int, default=1024, help="fds: the hub's RLIMIT_NOFILE (default 1024)")
    p.add_argument("--idle", type=int, default=1100, help="fds: idle sockets (default 1100)")
    p.add_argument("--settle", type=float, default=1.0, help="fds: seconds between opening the idle sockets and the legitimate client (default 1)")
    args = p.parse_args()
    want = [s for s in args.scenarios.split(",") if s]
    results: dict[str, Any] = {"hub": args.baseline or "this tree"}
    for name in want:
        if name not in SCENARIOS:
            p.error(f"unknown scenario {name!r}")
        t0 = time.monotonic()
        results[name] = await globals()[name](args)
        print(f"{name} ({time.monotonic() - t0:.1f} s): {json.dumps(results[name])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
