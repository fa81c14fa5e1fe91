"""Routing attacks of issue 9 (findings 1, 2 and 7), measured against a real hub process.

    python bench/attack_routing.py [--baseline DIR] [--only glob,destmem,consumers,sticky] [--json FILE]

Each scenario starts ``airi serve`` fresh on a free loopback port (logging at ``error``), attacks
it over real sockets and prints what it cost the hub. With ``--baseline DIR`` the same scenario
runs first against the checkout in DIR (``PYTHONPATH=DIR:DIR/plugins``, as ``bench/run.py
--baseline`` does), then against this tree. ``--hub-config TOML`` appends settings to this
tree's config only (``\\n`` for a new line), e.g. to raise
``[plugins.consumers] max_registrations_per_peer`` for the one-peer 20k x 20k case.

- ``glob`` (finding 1): 50 announced modules and a monitor that pings the hub every 20 ms. An
  attacker sends ``{"type":"o:x","data":{"destinations":["<k stars>Z"]}}`` for each ``--stars``
  count, then a 50k-glob list and three lists within the count limits (64 four-piece globs; an
  ``or`` of 250 globs; 64 globs of 128 pieces, refused by the default work budget). Per step: how long until the hub answered the attacker's next
  ping (the time the event loop was blocked) and the monitor's worst ping round trip meanwhile.
- ``destmem`` (finding 2): an attacker sends ``--lists`` distinct 45k-entry ``label:`` lists
  (~865 KB each), then (valid everywhere) ``--small-lists`` distinct 64-entry lists of 250-char
  globs; hub RSS before, after each phase and after the attacker left.
- ``consumers`` (finding 7a): ``--consumer-peers`` peers register ``--per-peer`` consumers each
  (distinct event types) and a sender gives every registration a sticky key; then every consumer
  disconnects at once. Hub CPU seconds (utime + stime from /proc) spent until an observer's ping
  is answered after all the de-announces, and the observer's worst ping round trip.
- ``sticky`` (finding 7b): one consumer stays connected while a sender sends ``--sticky-events``
  events to it, each with a distinct ``--sticky-len``-character ``stickyKey``; hub RSS growth.
  Run it with ``--sticky-len 1000`` (the finding: 100k x 1 KB) and ``--sticky-len 200`` (under
  the hub's key length limit, so the bound on the number of keys is what shows).

Every wait is bounded (``--step-timeout``, default 30 s): a hub that does not answer in time is
reported as ``> timeout`` and stopped (by its PID). Keep runs short on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import connect  # noqa: E402

from tests._hubproc import HubProcess, checkout_env, rss_kib, write_config  # noqa: E402

CONFIG = """
[logging]
level = "error"
[limits]
slow_consumer_grace_ms = 30000
outbound_hard_bytes = 268435456
"""

HEARTBEAT = "transport:connection:heartbeat"
_ids = itertools.count(1)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


class Conn:
    """A raw client: counts what it gets, answers nothing, resolves its own pings' pongs."""

    def __init__(self, ws: Any, name: str) -> None:
        self.ws = ws
        self.name = name
        self.types: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self._pongs: dict[str, asyncio.Future[float]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, url: str, name: str, announce: bool = True) -> Conn:
        ws = await connect(url, max_size=None, compression=None, open_timeout=30, ping_interval=None)
        c = cls(ws, name)
        if announce:
            ident = {"id": f"{name}-instance-{next(_ids):06d}", "kind": "plugin", "plugin": {"id": f"acme:{name}"}}
            await c.send({"type": "module:announce", "data": {"name": name, "identity": ident}})
        await c.ping()
        return c

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                obj = json.loads(frame)
                if "type" not in obj and "json" in obj:
                    obj = obj["json"]
                t = obj.get("type")
                self.types[t] = self.types.get(t, 0) + 1
                if t == "error":
                    msg = str(obj.get("data", {}).get("message"))[:80]
                    self.errors[msg] = self.errors.get(msg, 0) + 1
                elif t == HEARTBEAT:
                    pid = ((obj.get("metadata") or {}).get("event") or {}).get("parentId")
                    fut = self._pongs.pop(pid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(time.perf_counter())
        except Exception:
            pass

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("metadata", {"event": {"id": f"e-{next(_ids)}"}})
        await self.ws.send(json.dumps(event))

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)

    async def ping(self, timeout: float = 30.0) -> float:
        """Round trip of one heartbeat ping (raises TimeoutError after ``timeout``)."""
        eid = f"ping-{next(_ids)}"
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pongs[eid] = fut
        t0 = time.perf_counter()
        await self.ws.send(json.dumps({"type": HEARTBEAT, "data": {"kind": "ping"}, "metadata": {"event": {"id": eid}}}))
        try:
            return await asyncio.wait_for(fut, timeout) - t0
        finally:
            self._pongs.pop(eid, None)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), 5)
        except Exception:
            pass
        self._reader.cancel()


class Monitor:
    """Pings the hub every ``every`` seconds and keeps (start time, round trip) pairs."""

    def __init__(self, conn: Conn, every: float = 0.02) -> None:
        self.conn = conn
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self.pending_since: float | None = None
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            self.pending_since = t0
            try:
                rtt = await self.conn.ping(timeout=120)
            except Exception:
                return
            self.pending_since = None
            self.samples.append((t0, rtt))
            await asyncio.sleep(self.every)

    def worst_since(self, t0: float) -> float:
        worst = max((rtt for start, rtt in self.samples if start + rtt >= t0), default=0.0)
        if self.pending_since is not None:
            worst = max(worst, time.perf_counter() - self.pending_since)
        return worst

    async def stop(self) -> None:
        self._task.cancel()


def start_hub(tmp: Path, baseline: str | None, extra: str = "") -> HubProcess:
    hub = HubProcess.serve(write_config(tmp, CONFIG + extra), cwd=str(tmp), env=checkout_env(baseline))
    hub.wait_listening(30)
    return hub


async def timed(conn: Conn, payload: str, timeout: float) -> float | None:
    """Send ``payload``, then a ping: seconds until its pong (None after ``timeout``)."""
    t0 = time.perf_counter()
    await conn.send_text(payload)
    try:
        await conn.ping(timeout)
    except (asyncio.TimeoutError, TimeoutError):
        return None
    return time.perf_counter() - t0


def fmt_s(v: float | None, timeout: float) -> str:
    return f"> {timeout:g} s" if v is None else f"{v:.3f} s"


# -- scenarios ------------------------------------------------------------------------------------
async def scenario_glob(url: str, hub: HubProcess, args: argparse.Namespace) -> dict[str, Any]:
    mods = [await Conn.open(url, f"module-{i:02d}") for i in range(50)]
    mon = Monitor(await Conn.open(url, "monitor"))
    attacker = await Conn.open(url, "attacker")
    rows: list[dict[str, Any]] = []
    steps: list[tuple[str, str]] = []
    for k in args.stars:
        steps.append((f"{k} stars + Z", json.dumps({"type": "o:x", "data": {"destinations": ["*" * k + "Z"]}})))
    steps.append(("50k-glob list", json.dumps({"type": "o:x", "data": {"destinations": [f"*{i}*Z" for i in range(50_000)]}})))
    # the heaviest lists the hub still accepts by default, and one it refuses as too costly
    steps.append(("64 x *x*y*z*", json.dumps({"type": "o:x", "data": {"destinations": [f"*x{j}*y*z*" for j in range(64)]}})))
    steps.append(("or of 250 globs", json.dumps({"type": "o:x", "data": {"destinations": [{"type": "or", "any": [f"*{j}*Z" for j in range(250)]}]}})))
    steps.append(("64 x (*a)x127", json.dumps({"type": "o:x", "data": {"destinations": ["*a" * 127 + "Z"] * 64}})))
    for label, payload in steps:
        t0 = time.perf_counter()
        took = await timed(attacker, payload, args.step_timeout)
        worst = mon.worst_since(t0)
        rows.append({"step": label, "frame_bytes": len(payload), "answered_after_s": took, "monitor_worst_rtt_s": round(worst, 4), "errors": dict(attacker.errors)})
        print(f"    {label:16} frame {len(payload):>7} B: hub answered after {fmt_s(took, args.step_timeout)}, monitor's worst ping {worst:.3f} s, errors {attacker.errors}", flush=True)
        attacker.errors.clear()
        if took is None:
            break
    await mon.stop()
    for c in [*mods, attacker, mon.conn]:
        await c.close()
    return {"rows": rows}


async def scenario_destmem(url: str, hub: HubProcess, args: argparse.Namespace) -> dict[str, Any]:
    receivers = [await Conn.open(url, f"r{i}") for i in range(3)]
    attacker = await Conn.open(url, "attacker")
    rss0 = rss_kib(hub.pid)
    sent = 0
    t0 = time.perf_counter()
    for i in range(args.lists):
        dests = [f"label:k{j}=v{i}" for j in range(45_000)]
        text = json.dumps({"type": "o:x", "data": {"destinations": dests}})
        sent += len(text)
        await attacker.send_text(text)
        if i % 10 == 9:
            await attacker.ping(args.step_timeout)
    await attacker.ping(args.step_timeout)
    took_big = time.perf_counter() - t0
    rss1 = rss_kib(hub.pid)
    sent_small = 0
    for i in range(args.small_lists):
        dests = [f"{i:06d}-{j:02d}-" + "x" * 236 + "*" for j in range(64)]
        text = json.dumps({"type": "o:y", "data": {"destinations": dests}})
        sent_small += len(text)
        await attacker.send_text(text)
        if i % 100 == 99:
            await attacker.ping(args.step_timeout)
    await attacker.ping(args.step_timeout)
    rss2 = rss_kib(hub.pid)
    errors = dict(attacker.errors)
    await attacker.close()
    await receivers[0].ping()
    await asyncio.sleep(1.0)  # let the hub finish the disconnect
    await receivers[0].ping()
    rss3 = rss_kib(hub.pid)
    for c in receivers:
        await c.close()
    out = {
        "big_lists": args.lists, "big_bytes_sent": sent, "big_seconds": round(took_big, 2),
        "small_lists": args.small_lists, "small_bytes_sent": sent_small,
        "rss_mib": {"before": mib(rss0), "after_big": mib(rss1), "after_small": mib(rss2), "after_left": mib(rss3)},
        "errors": errors,
    }
    print(f"    {args.lists} lists of 45k label: entries ({sent / 1e6:.0f} MB sent, {took_big:.1f} s): RSS {mib(rss0)} -> {mib(rss1)} MiB", flush=True)
    print(f"    + {args.small_lists} distinct 64 x 250-char glob lists ({sent_small / 1e6:.0f} MB): RSS -> {mib(rss2)} MiB; after the sender left: {mib(rss3)} MiB", flush=True)
    print(f"    errors to the sender: {errors}", flush=True)
    return out


async def scenario_consumers(url: str, hub: HubProcess, args: argparse.Namespace) -> dict[str, Any]:
    observer = await Conn.open(url, "observer")
    sender = await Conn.open(url, "sender")
    consumers = [await Conn.open(url, f"consumer-{c:02d}") for c in range(args.consumer_peers)]
    for c, conn in enumerate(consumers):
        for i in range(args.per_peer):
            await conn.send({"type": "module:consumer:register", "data": {"event": f"ev:{c}:{i}", "mode": "consumer"}})
        await conn.ping(args.step_timeout)
    for c in range(args.consumer_peers):
        for i in range(args.per_peer):
            await sender.send({"type": f"ev:{c}:{i}", "data": {}, "route": {"delivery": {"mode": "consumer", "selection": "sticky", "stickyKey": f"key-{c}-{i}"}}})
        await sender.ping(args.step_timeout)
    delivered = sum(conn.types.get(f"ev:{c}:{i}", 0) for c, conn in enumerate(consumers) for i in range(1))
    total = args.consumer_peers * args.per_peer
    mon = Monitor(observer)
    await asyncio.sleep(0.1)
    cpu0 = cpu_seconds(hub.pid)
    t0 = time.perf_counter()
    for conn in consumers:
        await conn.close()
    # wait (bounded) until the hub has handled every disconnect: the observer's pings queue up
    # behind the hook that does the bookkeeping
    deadline = time.monotonic() + args.step_timeout
    while observer.types.get("module:de-announced", 0) < args.consumer_peers and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    done = observer.types.get("module:de-announced", 0) >= args.consumer_peers
    await observer.ping(args.step_timeout)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(hub.pid) - cpu0
    worst = mon.worst_since(t0)
    await mon.stop()
    await sender.close()
    await observer.close()
    print(f"    {args.consumer_peers} peers x {args.per_peer} registrations = {total}, {total} sticky keys (spot check delivered: {delivered}); all consumers leave:", flush=True)
    print(f"    hub CPU {cpu:.2f} s, wall {wall:.2f} s{'' if done else ' (timed out)'}, observer's worst ping {worst:.3f} s", flush=True)
    return {"registrations": total, "sticky_keys": total, "hub_cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "observer_worst_rtt_s": round(worst, 4), "completed": done}


async def scenario_sticky(url: str, hub: HubProcess, args: argparse.Namespace) -> dict[str, Any]:
    consumer = await Conn.open(url, "consumer")
    sender = await Conn.open(url, "sender")
    await consumer.send({"type": "module:consumer:register", "data": {"event": "job:run", "mode": "consumer"}})
    await consumer.ping()
    rss0 = rss_kib(hub.pid)
    t0 = time.perf_counter()
    pad = "k" * max(0, args.sticky_len - 8)
    for i in range(args.sticky_events):
        key = f"{pad}{i:08d}"
        await sender.send({"type": "job:run", "data": {}, "route": {"delivery": {"mode": "consumer", "selection": "sticky", "stickyKey": key}}})
        if i % 1000 == 999:
            await sender.ping(args.step_timeout)
    await sender.ping(args.step_timeout)
    await consumer.ping(args.step_timeout)
    took = time.perf_counter() - t0
    rss1 = rss_kib(hub.pid)
    got = consumer.types.get("job:run", 0)
    errors = dict(sender.errors)
    # the consumer unregisters: its sticky assignments must be freed
    await consumer.send({"type": "module:consumer:unregister", "data": {"event": "job:run", "mode": "consumer"}})
    await consumer.ping(args.step_timeout)
    rss2 = rss_kib(hub.pid)
    await sender.close()
    await consumer.close()
    print(f"    {args.sticky_events} events with distinct {args.sticky_len}-char stickyKeys ({took:.1f} s), {got} delivered: RSS {mib(rss0)} -> {mib(rss1)} MiB (+{mib(rss1 - rss0)}); after unregister {mib(rss2)} MiB", flush=True)
    print(f"    errors to the sender: {errors}", flush=True)
    return {"events": args.sticky_events, "key_len": args.sticky_len, "delivered": got, "seconds": round(took, 2), "rss_mib": {"before": mib(rss0), "after": mib(rss1), "growth": mib(rss1 - rss0), "after_unregister": mib(rss2)}, "errors": errors}


SCENARIOS = {"glob": scenario_glob, "destmem": scenario_destmem, "consumers": scenario_consumers, "sticky": scenario_sticky}


async def run_one(name: str, impl: str, baseline: str | None, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    hub = start_hub(tmp, baseline, "" if baseline else args.hub_config.replace("\\n", "\n"))
    print(f"  [{impl}] {name} (hub pid {hub.pid}, RSS {mib(rss_kib(hub.pid))} MiB)", flush=True)
    try:
        res = await asyncio.wait_for(SCENARIOS[name](f"ws://127.0.0.1:{hub.port}/ws", hub, args), args.scenario_timeout)
    except (asyncio.TimeoutError, TimeoutError):
        print(f"    gave up after {args.scenario_timeout:g} s", flush=True)
        res = {"timed_out": True}
    finally:
        hub.stop()
    return res


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", metavar="DIR", help="also run the hub checked out in DIR (first)")
    ap.add_argument("--only", default="glob,destmem,consumers,sticky")
    ap.add_argument("--stars", default="6,7,8", help="star counts for the glob scenario (default 6,7,8)")
    ap.add_argument("--lists", type=int, default=30, help="distinct 45k-entry label: lists (finding: 200)")
    ap.add_argument("--small-lists", type=int, default=2000)
    ap.add_argument("--consumer-peers", type=int, default=80)
    ap.add_argument("--per-peer", type=int, default=250, help="registrations per consumer peer (the hub allows 256 by default)")
    ap.add_argument("--sticky-events", type=int, default=100_000)
    ap.add_argument("--sticky-len", type=int, default=1000)
    ap.add_argument("--step-timeout", type=float, default=30.0)
    ap.add_argument("--scenario-timeout", type=float, default=180.0)
    ap.add_argument("--hub-config", default="", metavar="TOML", help="appended to this tree's hub config (not the baseline's), e.g. '[plugins.consumers]\\nmax_registrations_per_peer = 20000'")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args()
    args.stars = [int(s) for s in args.stars.split(",") if s]
    impls: list[tuple[str, str | None]] = []
    if args.baseline:
        impls.append(("base", os.path.abspath(args.baseline)))
    impls.append(("hub", None))
    results: dict[str, dict[str, Any]] = {}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="airi-attack-") as d:
        for name in [s.strip() for s in args.only.split(",") if s.strip()]:
            if name not in SCENARIOS:
                ap.error(f"unknown scenario {name!r}; pick from {', '.join(SCENARIOS)}")
            print(f"{name}:", flush=True)
            for impl, base in impls:
                results.setdefault(name, {})[impl] = await run_one(name, impl, base, args, Path(d))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
