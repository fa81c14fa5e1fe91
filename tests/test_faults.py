"""Hardening, part 2: hostile and broken peers, end to end on real sockets (127.0.0.1).

* a flood of deterministic malformed frames from 3 bad peers while 2 good peers talk;
* peers vanishing with a TCP reset while a sender broadcasts;
* SIGTERM to a hub subprocess under load.

Every wait is bounded; the whole file runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import struct
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from airi_core.testing import HubClient, connect_client, start_hub, wait_until

from ._hubproc import HubProcess, free_port
from .hardening_helpers import (
    airi_logs_captured,
    seqs,
)
from .malformed_frames import JSON_PREFIX, generate, matches

TOKEN = "flood-test-token"
GOOD_EVENTS = 300
BAD_FRAMES = 1000
SEED = 20240607


def _abort_with_rst(client: HubClient) -> None:
    """Close ``client``'s TCP connection with a reset: SO_LINGER (on, 0 s), then close."""
    sock = client.ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert struct.unpack("ii", sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)) == (1, 0)
    client.ws.transport.abort()  # closes the socket now: with linger 0 the kernel sends RST
    client._reader.cancel()


# -- malformed input ---------------------------------------------------------------------------------
async def test_malformed_flood_is_answered_frame_by_frame_and_hurts_nobody(caplog: pytest.LogCaptureFixture) -> None:
    with airi_logs_captured(caplog, logging.INFO):
        hub = await start_hub({"auth": {"token": TOKEN, "timeout_ms": 0, "max_failures": 0}})  # a flood of wrong tokens: not throttled here
        clients: list[HubClient] = []
        try:
            await _flood(hub, clients)
        finally:
            for c in clients:
                with contextlib.suppress(Exception):
                    await c.close()
            await hub.shutdown()
        problems = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records
                    if r.name.startswith("airi") and r.levelno >= logging.ERROR]
        assert not problems, problems


async def _flood(hub, clients: list[HubClient]) -> None:
    loop = asyncio.get_running_loop()
    a = await connect_client(hub, "good-a", token=TOKEN, announce=True)
    b = await connect_client(hub, "good-b", token=TOKEN, announce=True)
    clients += [a, b]
    await asyncio.sleep(0.05)
    base_tasks = len(asyncio.all_tasks())
    assert len(hub._tasks) == 0

    bad = [await connect_client(hub, f"bad-{i}") for i in range(3)]
    clients += bad
    reply = await bad[2].authenticate(TOKEN)  # the third bad peer is authenticated, never announced
    assert reply["type"] == "module:authenticated"
    plans = [generate(random.Random(SEED + i), BAD_FRAMES, authenticated=(i == 2)) for i in range(3)]
    marks = [c.mark() for c in bad]
    a0, b0 = a.mark(), b.mark()

    async def run_bad(client: HubClient, plan) -> None:
        for k, (frame, _) in enumerate(plan):
            await client.send_raw(frame)
            if k % 20 == 0:
                await asyncio.sleep(0)

    async def run_good(sender: HubClient, tag: str) -> None:
        for i in range(GOOD_EVENTS):
            await sender.send("test:good", {"from": tag, "seq": i}, wrap=bool(i % 2))
            if i == GOOD_EVENTS // 2:
                # a parseable but absurdly deep destination expression from a good peer: no error
                deep = '{"type":"or","any":[' * 200 + '"*"' + "]}" * 200
                ev = sender.event("test:deep", {"from": tag})
                text = json.dumps(ev)[:-1] + ',"route":{"destinations":[' + deep + "]}}"
                await sender.send_raw(text)
            if i % 10 == 0:
                await asyncio.sleep(0.001)

    t0 = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(run_good(a, "a"), run_good(b, "b"), *(run_bad(c, p) for c, p in zip(bad, plans))), 30
    )
    send_s = time.monotonic() - t0

    # fences: a ping's pong comes after the replies to every earlier frame of that peer
    for c in bad:
        await c.fence(timeout=10)
    for receiver, sender_tag in ((b, "a"), (a, "b")):
        await receiver.wait_for(
            "test:good", lambda e, t=sender_tag: e["data"] == {"from": t, "seq": GOOD_EVENTS - 1}, timeout=10
        )
    flood_s = time.monotonic() - t0

    # every good event arrived, in order, exactly once
    for receiver, sender_tag, start in ((b, "a", b0), (a, "b", a0)):
        got = [e["data"]["seq"] for e in receiver.of_type("test:good", start) if e["data"].get("from") == sender_tag]
        assert got == list(range(GOOD_EVENTS)), f"{receiver.name}: {len(got)} events, first gaps near {_first_gap(got)}"
        # nothing of the bad peers' traffic reached a good peer, and no error
        types = {e.get("type") for e in receiver.received[start:]}
        assert types <= {"test:good", "test:deep"}, types
    assert a.error_messages() == [] and b.error_messages() == []

    # every bad frame but a raw ping/pong got exactly one error, in frame order, with the right text
    figures = []
    for i, (client, plan, mark) in enumerate(zip(bad, plans, marks)):
        expected = [exp for _, exp in plan if exp is not None]
        got_errors = client.error_messages(mark)
        allowed = {"error", "transport:connection:heartbeat"} | ({"test:good", "test:deep"} if i == 2 else set())
        others = [e.get("type") for e in client.received[mark:] if e.get("type") not in allowed]
        assert not others, f"bad-{i} received unexpected events: {others[:10]}"
        assert len(got_errors) == len(expected), (
            f"bad-{i}: {len(expected)} bad frames (+{len(plan) - len(expected)} raw ping/pong) but "
            f"{len(got_errors)} errors"
        )
        for k, (msg, exp) in enumerate(zip(got_errors, expected)):
            assert matches(msg, exp), f"bad-{i} error #{k}: expected {exp!r}, got {msg!r}"
        figures.append((len(plan), len(expected), sum(len(f) for f, _ in plan)))
        assert client.close_code is None, f"bad-{i} was disconnected: {client.close_code} {client.close_reason}"

    assert hub.stats["plugin_errors"] == 0, "an exception escaped into the hub while handling malformed input"

    # the hub is alive: a newcomer authenticates and the good peers still talk
    late = await connect_client(hub, "late", token=TOKEN, announce=True)
    clients.append(late)
    s = late.mark()
    await a.send("test:after", {"n": 1})
    await late.wait_for("test:after", start=s, timeout=3)
    await b.wait_for("test:after", timeout=3)

    # no leaked tasks once the bad peers are gone (one leaves with a TCP reset)
    await late.close()
    clients.remove(late)
    _abort_with_rst(bad[1])
    for c in (bad[0], bad[2]):
        await c.close()
    for c in bad:
        clients.remove(c)
    await wait_until(lambda: len(hub.registry) == 2, 3, "the hub to forget the bad peers")
    await wait_until(lambda: len(hub._tasks) == 0, 3, "hub._tasks to drain")
    settle = await wait_until(lambda: len(asyncio.all_tasks(loop)) <= base_tasks, 3,
                              f"asyncio tasks back to the baseline of {base_tasks}")
    print(
        f"\nmalformed flood: {sum(f[0] for f in figures)} bad frames ({sum(f[2] for f in figures) / 1e6:.1f} MB, "
        f"{sum(f[1] for f in figures)} errors) + {2 * GOOD_EVENTS} good events; sent in {send_s:.2f}s, "
        f"all answered in {flood_s:.2f}s; tasks {len(asyncio.all_tasks(loop))}/{base_tasks} after {settle * 1000:.0f} ms"
    )


def _first_gap(seq: list[int]) -> int | None:
    for i, v in enumerate(seq):
        if v != i:
            return i
    return None


# -- TCP reset ---------------------------------------------------------------------------------------
async def test_tcp_reset_peers_are_de_announced_and_others_get_everything(caplog: pytest.LogCaptureFixture) -> None:
    with airi_logs_captured(caplog, logging.INFO):
        hub = await start_hub()
        clients: list[HubClient] = []
        try:
            sender = await connect_client(hub, "sender", announce=True)
            r1 = await connect_client(hub, "r1", announce=True)
            r2 = await connect_client(hub, "r2", announce=True)
            v1 = await connect_client(hub, "victim-1", announce=True)
            v2 = await connect_client(hub, "victim-2", announce=True)
            clients += [sender, r1, r2, v1, v2]
            marks = {c.name: c.mark() for c in clients}

            sent = 0
            reset_at: dict[str, int] = {}
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.2:
                await sender.send("test:stream", {"seq": sent, "pad": "p" * 200})
                sent += 1
                elapsed = time.monotonic() - t0
                if "victim-1" not in reset_at and elapsed > 0.3:
                    _abort_with_rst(v1)
                    reset_at["victim-1"] = sent
                if "victim-2" not in reset_at and elapsed > 0.6:
                    _abort_with_rst(v2)
                    reset_at["victim-2"] = sent
                if sent % 5 == 0:
                    await asyncio.sleep(0.001)
            await sender.send("test:end", {"seq": sent})

            for r in (r1, r2):
                await r.wait_for("test:end", start=marks[r.name], timeout=5)
                got = seqs(r, "test:stream", start=marks[r.name])
                assert got == list(range(sent)), f"{r.name}: {len(got)}/{sent}, first gap at {_first_gap(got)}"
                for victim in ("victim-1", "victim-2"):
                    ev = await r.wait_for(
                        "module:de-announced", lambda e, v=victim: e["data"]["name"] == v, start=marks[r.name], timeout=3
                    )
                    assert ev["data"]["reason"] == "connection closed", ev["data"]
                    assert ev["data"]["identity"]["plugin"]["id"] == victim
            # the sender heard about it too, and never got an error
            for victim in ("victim-1", "victim-2"):
                await sender.wait_for("module:de-announced", lambda e, v=victim: e["data"]["name"] == v, timeout=3)
            assert sender.error_messages() == []

            # the hub lives: the registry lists exactly the three survivors, a newcomer is served
            await wait_until(lambda: len(hub.registry) == 3, 3, "the hub to forget the reset peers")
            assert sorted(p.name for p in hub.registry) == ["r1", "r2", "sender"]
            late = await connect_client(hub, "late", announce=True)
            clients.append(late)
            s = late.mark()
            await sender.send("test:after", {})
            await late.wait_for("test:after", start=s, timeout=3)
            await sender.fence()
            assert hub.stats["plugin_errors"] == 0
            closed = [r.getMessage() for r in caplog.records if r.name == "airi.websocket" and r.getMessage().startswith("closed")]
            assert any("victim-1" in m and "code=1006" in m for m in closed), closed
            assert any("victim-2" in m and "code=1006" in m for m in closed), closed
            print(f"\nTCP reset: {sent} events broadcast, victims reset after #{reset_at['victim-1']} and "
                  f"#{reset_at['victim-2']}; r1/r2 got all {sent} in order")
        finally:
            for c in clients:
                with contextlib.suppress(Exception):
                    await c.close()
            await hub.shutdown()
        assert hub._tasks == set() or all(t.done() for t in hub._tasks)


# -- SIGTERM under load ----------------------------------------------------------------------------------
DRAIN_MS = 3000
EXIT_MARGIN_S = 3.0


async def test_sigterm_under_load_closes_everyone_with_1001_and_exits_0(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "airi.toml"
    config.write_text(f"[server]\ndrain_timeout_ms = {DRAIN_MS}\n[logging]\nlevel = \"log\"\n", encoding="utf-8")
    hub = HubProcess(["serve", "--config", str(config), "--port", str(port)], cwd=tmp_path)
    clients: list[HubClient] = []
    pusher: asyncio.Task[int] | None = None
    try:
        line = (await hub.await_stderr("listening on", timeout=20)).string
        url = f"ws://127.0.0.1:{port}/ws"
        assert url in line, line
        peers = [await connect_client(url, f"peer-{i}", announce=True) for i in range(5)]
        sender = await connect_client(url, "sender", announce=True)
        clients += [*peers, sender]

        async def push() -> int:
            n = 0
            try:
                while True:
                    await sender.send("test:load", {"seq": n, "pad": "q" * 500})
                    n += 1
                    if n % 10 == 0:
                        await asyncio.sleep(0.001)
            except ConnectionClosed:
                return n

        pusher = asyncio.get_running_loop().create_task(push())
        await wait_until(lambda: all(len(p.of_type("test:load")) >= 200 for p in peers), 5, "load to reach every peer")
        await asyncio.sleep(0.5)  # full load for a while
        assert not pusher.done(), "the sender stopped before SIGTERM"

        t0 = time.monotonic()
        hub.proc.send_signal(signal.SIGTERM)  # our own child, by its PID
        results = await asyncio.gather(*(c.wait_closed(timeout=DRAIN_MS / 1000 + 3) for c in clients))
        closed_s = time.monotonic() - t0
        for c, (code, reason) in zip(clients, results):
            assert (code, reason) == (1001, "server shutdown"), f"{c.name}: {code} {reason!r}"
        pushed = await asyncio.wait_for(pusher, 3)
        rc = await hub.await_exit(DRAIN_MS / 1000 + EXIT_MARGIN_S)
        exit_s = time.monotonic() - t0
        assert rc == 0, f"exit status {rc} ({exit_s:.2f}s after SIGTERM)\nstderr:\n{hub.stderr}"
        assert exit_s <= DRAIN_MS / 1000 + EXIT_MARGIN_S
        assert "Traceback" not in hub.stderr, hub.stderr
        assert "Traceback" not in hub.stdout, hub.stdout
        received = [len(p.of_type("test:load")) for p in peers]
        # each peer got a gapless prefix of the sender's stream
        for p in peers:
            got = seqs(p, "test:load")
            assert got == list(range(len(got))), f"{p.name}: gap at {_first_gap(got)}"
        print(f"\nSIGTERM: {pushed} events pushed, peers received {min(received)}-{max(received)}; all 6 closed "
              f"1001 in {closed_s * 1000:.0f} ms, exit 0 after {exit_s * 1000:.0f} ms (drain {DRAIN_MS} ms)")
    finally:
        if pusher is not None and not pusher.done():
            pusher.cancel()
            with contextlib.suppress(BaseException):
                await pusher
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()
        await asyncio.to_thread(hub.stop)
