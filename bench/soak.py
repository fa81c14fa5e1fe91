"""Bounded soak: mixed traffic with misbehaving peers against a real hub process.

    python bench/soak.py [--seconds 60] [--rate 2000] [--report-every 5]

Starts ``airi serve`` on a free loopback port and runs, for at most ``--seconds`` (capped at
600): 2 senders at ``--rate`` events/s in total (1 KB each; they also read what they get, as
real clients do), 6 normal receivers, 1 peer that never reads and reconnects every 15 s (it
must be dropped as a slow consumer), 2 peers sending random malformed frames, 1 peer that
connects, announces and leaves in a loop, 1 peer that resets its TCP connection mid-stream and
reconnects. Every ``--report-every`` seconds it prints delivered events/s, errors answered to
the bad peers, slow-consumer drops seen, and the hub's RSS. It fails (exit 1) if a normal
receiver lost or reordered an event, a bad frame went unanswered, or the hub died.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from tests._hubproc import HubProcess, rss_kib  # noqa: E402

CONFIG = """
[logging]
level = "warn"
[limits]
slow_consumer_grace_ms = 1000
"""


def ident(name: str) -> dict:
    return {"id": f"{name}-1", "kind": "plugin", "plugin": {"id": name}}


async def announced(url: str, name: str, **kw) -> object:
    ws = await connect(url, max_size=None, **kw)
    await ws.send(json.dumps({"type": "module:announce", "data": {"name": name, "identity": ident(name)}}))
    return ws


class Stats:
    def __init__(self) -> None:
        self.delivered = 0
        self.sent = 0
        self.bad_sent = 0
        self.bad_answered = 0
        self.slow_dropped = 0
        self.resets = 0
        self.flaps = 0
        self.failures: list[str] = []


async def receiver(url: str, name: str, st: Stats, stop: asyncio.Event) -> None:
    ws = await announced(url, name)
    last = {"s0": -1, "s1": -1}
    try:
        while not stop.is_set():
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.5)
            except asyncio.TimeoutError:
                continue
            ev = json.loads(frame)["json"]
            if ev["type"] == "soak:chunk":
                src, seq = ev["data"]["src"], ev["data"]["seq"]
                if seq != last[src] + 1:
                    st.failures.append(f"{name}: {src} seq {seq} after {last[src]}")
                last[src] = seq
                st.delivered += 1
            elif ev["type"] == "module:de-announced" and ev["data"]["reason"] == "slow consumer" and name == "r0":
                st.slow_dropped += 1
    except ConnectionClosed as exc:
        st.failures.append(f"{name}: closed {exc}")
    finally:
        await ws.close()


async def sender(url: str, src: str, rate: float, st: Stats, stop: asyncio.Event) -> None:
    ws = await announced(url, f"sender-{src}")

    async def drain() -> None:  # a sender gets the other sender's events: read them, as real clients do
        async for _ in ws:
            pass

    reader = asyncio.create_task(drain())
    seq = 0
    t0 = time.monotonic()
    payload = "y" * 1000
    try:
        while not stop.is_set():
            due = t0 + seq / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(json.dumps({"type": "soak:chunk", "data": {"src": src, "seq": seq, "p": payload}}))
            seq += 1
            st.sent += 1
    except Exception as exc:  # a sender must never stop silently
        st.failures.append(f"sender {src} stopped after {seq} events: {exc!r}")
    finally:
        reader.cancel()
        await ws.close()


async def never_reads(url: str, st: Stats, stop: asyncio.Event) -> None:
    """Announces, then never reads; reconnects after being dropped."""
    while not stop.is_set():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", int(url.split(":")[2].split("/")[0])))
        ws = await connect(url, sock=sock, max_queue=1, max_size=None)
        await ws.send(json.dumps({"type": "module:announce", "data": {"name": "sloth", "identity": ident("sloth")}}))
        try:
            await asyncio.wait_for(stop.wait(), 15)
        except asyncio.TimeoutError:
            pass
        ws.transport.abort()


def garbage(rng: random.Random) -> str | bytes:
    choices = [
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40))),
        lambda: "{" * rng.randint(1, 50),
        lambda: json.dumps({"type": "t", "data": rng.choice([None, [], "x", 3])}),
        lambda: json.dumps({"type": "t", "route": rng.choice([42, "x", {"destinations": 5}])}),
        lambda: json.dumps({"type": rng.choice(["", 5, None])}),
        lambda: json.dumps({"type": "module:announce", "data": {"name": rng.choice(["", 5]), "identity": {}}}),
        lambda: json.dumps({"type": "ui:configure", "data": {"moduleName": rng.choice(["", "nobody"])}}),
        lambda: json.dumps([1, 2, 3]),
    ]
    return rng.choice(choices)()


async def bad_peer(url: str, seed: int, st: Stats, stop: asyncio.Event) -> None:
    rng = random.Random(seed)
    ws = await connect(url, max_size=None)
    answered = 0

    async def read() -> None:
        nonlocal answered
        async for frame in ws:
            ev = json.loads(frame)["json"]
            if ev["type"] == "error":
                answered += 1
                st.bad_answered += 1

    reader = asyncio.create_task(read())
    sent = 0
    try:
        while not stop.is_set():
            await ws.send(garbage(rng))
            sent += 1
            st.bad_sent += 1
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.5)
        if answered != sent:
            st.failures.append(f"bad peer {seed}: {sent} bad frames, {answered} errors")
    finally:
        reader.cancel()
        await ws.close()


async def flapper(url: str, st: Stats, stop: asyncio.Event) -> None:
    while not stop.is_set():
        ws = await announced(url, "flapper")
        t_end = time.monotonic() + 0.2
        try:
            while (left := t_end - time.monotonic()) > 0:
                await asyncio.wait_for(ws.recv(), left)
        except asyncio.TimeoutError:
            pass
        await ws.close()
        st.flaps += 1


async def resetter(url: str, st: Stats, stop: asyncio.Event) -> None:
    while not stop.is_set():
        ws = await announced(url, "resetter")
        await asyncio.sleep(0.5)
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.transport.abort()
        st.resets += 1


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rate", type=float, default=2000, help="events/s from the two senders together")
    ap.add_argument("--report-every", type=float, default=5)
    args = ap.parse_args()
    seconds = min(args.seconds, 600)
    tmp = Path(f"/tmp/airi-soak-{time.time_ns()}")
    tmp.mkdir()
    st = Stats()
    stop = asyncio.Event()
    with HubProcess.serve_text(CONFIG, tmp) as hub:
        url = hub.url
        base_rss = rss_kib(hub.pid)
        print(f"hub pid {hub.pid} on {url}; RSS at start {base_rss} KiB; running {seconds:.0f} s")
        tasks = [asyncio.create_task(receiver(url, f"r{i}", st, stop)) for i in range(6)]
        await asyncio.sleep(0.3)
        stop_senders = asyncio.Event()
        tasks += [asyncio.create_task(sender(url, s, args.rate / 2, st, stop_senders)) for s in ("s0", "s1")]
        tasks += [asyncio.create_task(never_reads(url, st, stop))]
        tasks += [asyncio.create_task(bad_peer(url, seed, st, stop)) for seed in (1, 2)]
        tasks += [asyncio.create_task(flapper(url, st, stop)), asyncio.create_task(resetter(url, st, stop))]
        t0 = time.monotonic()
        last_t, last_d = t0, 0
        peak = base_rss
        print(f"{'t(s)':>6} {'delivered/s':>12} {'sent':>8} {'bad frames':>10} {'answered':>9} {'slow drops':>10} {'resets':>6} {'RSS KiB':>9}")
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(min(args.report_every, seconds - (time.monotonic() - t0)) or 0.01)
            if hub.proc.poll() is not None:
                st.failures.append(f"hub died with {hub.proc.returncode}")
                break
            now = time.monotonic()
            rss = rss_kib(hub.pid)
            peak = max(peak, rss)
            rate = (st.delivered - last_d) / (now - last_t)
            last_t, last_d = now, st.delivered
            print(f"{now - t0:6.1f} {rate:12.0f} {st.sent:8d} {st.bad_sent:10d} {st.bad_answered:9d} {st.slow_dropped:10d} {st.resets:6d} {rss:9d}")
        stop_senders.set()
        # let the receivers take what is still in flight before they stop
        deadline = time.monotonic() + 15
        while st.delivered < st.sent * 6 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
        alive = hub.proc.poll() is None
        final = rss_kib(hub.pid) if alive else 0
    expected = st.sent * 6
    print(f"\nsummary: {st.sent} events sent, {st.delivered} delivered of {expected} expected; "
          f"{st.bad_sent} bad frames, {st.bad_answered} errors; {st.slow_dropped} slow-consumer drops; "
          f"{st.resets} resets, {st.flaps} flaps; RSS start {base_rss} KiB, peak {peak} KiB, end {final} KiB")
    if st.delivered < expected * 0.999:
        st.failures.append(f"delivered {st.delivered} < sent x receivers {expected}")
    for f in st.failures[:20]:
        print("FAIL:", f)
    return 1 if st.failures or not alive else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
