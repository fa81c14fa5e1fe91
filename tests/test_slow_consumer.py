"""Slow consumer end to end: 9 receivers read normally and 1 never reads its socket while a
sender pushes at full speed; the 9 get everything in order, the slow one is closed with 1008
``slow consumer`` and de-announced with that reason, and the hub's RSS stays bounded."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from airi_core.testing import connect_client

from ._hubproc import HubProcess, rss_kib

CONFIG = """
[limits]
outbound_soft_bytes = 1048576
outbound_hard_bytes = 4194304
slow_consumer_grace_ms = 500
close_timeout_ms = 60000
"""

MESSAGES = 6000
PAYLOAD = "x" * 4000
PUSH_SECONDS = 30  # upper bound on the push phase


def _small_socket(port: int) -> socket.socket:
    """A connected socket with a tiny kernel receive buffer (a peer that is behind at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


def _announce(name: str) -> str:
    identity = {"id": f"{name}-1", "kind": "plugin", "plugin": {"id": name}}
    return json.dumps({"type": "module:announce", "data": {"name": name, "identity": identity}})


async def _join_small(hub: HubProcess, name: str, watcher: Any) -> Any:
    """A raw client on a small socket, announced as ``name`` (``watcher`` has seen it listed)."""
    ws = await connect(hub.url, sock=_small_socket(hub.port), max_queue=1, max_size=None)
    await ws.send(_announce(name))
    await watcher.wait_for("registry:modules:sync", lambda e: any(m["name"] == name for m in e["data"]["modules"]))
    return ws


async def _all_delivered_and_only_dropped(readers: list[Any], count: int, dropped: str, sample: Any = None) -> None:
    """Every reader got ``stream:chunk`` 0..count-1 in order (``sample()`` after each), and the
    only module de-announced is ``dropped``, as a slow consumer."""
    for r in readers:
        await r.wait_for("stream:chunk", lambda e: e["data"]["seq"] == count - 1, timeout=60)
        if sample is not None:
            sample()
        seqs = [e["data"]["seq"] for e in r.received if e.get("type") == "stream:chunk"]
        assert seqs == list(range(count)), f"{r.name} lost or reordered messages"
    gone = await readers[0].wait_for("module:de-announced", lambda e: e["data"]["name"] == dropped, timeout=10)
    assert gone["data"]["reason"] == "slow consumer"
    for r in readers:
        assert not any(e.get("type") == "module:de-announced" and e["data"]["name"] != dropped for e in r.received)


async def _read_until_closed(ws: Any) -> None:
    """The dropped peer finally reads: its backlog, then the close frame."""
    try:
        async with asyncio.timeout(30):
            while True:
                await ws.recv()
    except ConnectionClosed:
        pass


async def test_slow_consumer_is_dropped_and_others_get_everything(tmp_path: Path) -> None:
    with HubProcess.serve_text(CONFIG, tmp_path) as hub:
        baseline = rss_kib(hub.pid)
        receivers = [await connect_client(hub.url, f"r{i}", announce=True) for i in range(9)]

        # the slow peer: a tiny kernel receive buffer and a client that never calls recv()
        slow = await _join_small(hub, "slow", receivers[0])

        sender = await connect_client(hub.url, "sender", announce=True)
        peak = baseline
        t0 = time.monotonic()
        for seq in range(MESSAGES):
            await sender.ws.send(json.dumps({"type": "stream:chunk", "data": {"seq": seq, "p": PAYLOAD}}))
            if seq % 500 == 0:
                peak = max(peak, rss_kib(hub.pid))
            if time.monotonic() - t0 > PUSH_SECONDS:
                break
        sent = seq + 1
        push_s = time.monotonic() - t0

        peaks = [peak]
        await _all_delivered_and_only_dropped(receivers, sent, "slow", lambda: peaks.append(rss_kib(hub.pid)))
        peak = max(peaks)

        # the slow peer finally reads: its backlog, then the close frame with code and reason
        await _read_until_closed(slow)
        assert slow.close_code == 1008
        assert slow.close_reason == "slow consumer"

        after = rss_kib(hub.pid)
        print(
            f"\nslow consumer: {sent} x {len(PAYLOAD)} B to 10 peers in {push_s:.1f} s; "
            f"hub RSS baseline {baseline} KiB, peak {peak} KiB, after {after} KiB"
        )
        # the slow peer alone would have needed ~{sent * 4 KB} of buffering; the bound keeps
        # the hub far below that (generous: 200 MiB)
        assert peak < 200 * 1024
        for r in receivers + [sender]:
            await r.close()
        assert any("slow consumer" in line for line in hub.stderr_lines)


PROGRESS_CONFIG = """
[server]
event_loop = "{loop}"
[limits]
outbound_soft_bytes = 262144
outbound_hard_bytes = 2097152
slow_consumer_grace_ms = 500
close_timeout_ms = 60000
"""
BURST = 1500  # x 4 KB: 6 MB, three times outbound_hard_bytes


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_a_never_reading_peer_is_dropped_while_a_slow_reader_that_progresses_gets_everything(tmp_path: Path, loop: str) -> None:
    """Progress decides, not one timer: with a peer that never reads and a peer that reads, but
    far slower than the sender's burst (which is three times ``outbound_hard_bytes``), the
    never-reading one is closed ``1008 slow consumer`` and de-announced with that reason, while
    the slow reader, like the healthy readers, gets every event in order: the burst waits for
    it (backpressure), not for the stuck one. Under both event loops (uvloop's transports
    report their write buffers and sockets like asyncio's; the hub really runs on uvloop)."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")  # in the test extra: CI runs this
    with HubProcess.serve_text(PROGRESS_CONFIG.format(loop=loop), tmp_path) as hub:
        if loop == "uvloop":
            assert "uvloop" in Path(f"/proc/{hub.pid}/maps").read_text(), "the hub is not running uvloop"
        readers = [await connect_client(hub.url, f"r{i}", announce=True) for i in range(3)]

        stuck = await _join_small(hub, "stuck", readers[0])  # never calls recv()
        got: list[int] = []
        announced, read_all, finish = threading.Event(), threading.Event(), threading.Event()

        async def read_slowly() -> None:
            # its own thread and event loop: the readers' work in this process cannot starve it
            # (a reader that is not scheduled does not read, which the hub rightly calls stuck)
            ws = await connect(hub.url, sock=_small_socket(hub.port), max_queue=1, max_size=None)
            await ws.send(_announce("slow"))
            announced.set()
            async with asyncio.timeout(90):
                # a frame at a time with a pause after each: a few MB/s, far below the burst
                while len(got) < BURST:
                    event = json.loads(await ws.recv())
                    event = event.get("json", event)
                    if event.get("type") == "stream:chunk":
                        got.append(event["data"]["seq"])
                    await asyncio.sleep(0.001)
            read_all.set()
            await asyncio.to_thread(finish.wait, 120)  # stays connected until the checks are done
            await ws.close()

        slow_thread = threading.Thread(target=asyncio.run, args=(read_slowly(),), daemon=True)
        slow_thread.start()
        assert await asyncio.to_thread(announced.wait, 30), "the slow reader did not connect"
        await readers[0].wait_for("registry:modules:sync", lambda e: any(m["name"] == "slow" for m in e["data"]["modules"]))
        sender = await connect_client(hub.url, "sender", announce=True)
        for seq in range(BURST):
            await sender.ws.send(json.dumps({"type": "stream:chunk", "data": {"seq": seq, "p": PAYLOAD}}))

        assert await asyncio.to_thread(read_all.wait, 100), "the slow reader did not get the burst in time"
        assert got == list(range(BURST)), "the slow reader lost or reordered messages"
        await _all_delivered_and_only_dropped(readers, BURST, "stuck")

        await _read_until_closed(stuck)  # its backlog, then the close frame
        assert (stuck.close_code, stuck.close_reason) == (1008, "slow consumer")
        finish.set()
        await asyncio.to_thread(slow_thread.join, 30)
        for r in readers + [sender]:
            await r.close()
