"""Issue 9, "trusting senders and the registry": the findings as attacks against a real hub
process, measured (time, bytes, RSS), and the cost of identity checks on the hot path.

    python bench/attack_trust.py [--baseline DIR] [--only NAME ...] [--json]

Every scenario starts a fresh ``airi serve`` on a free loopback port (``--baseline DIR``: the
hub of another checkout, e.g. ``/work/base``, run as ``PYTHONPATH=DIR:DIR/plugins python -m
airi_core serve``) and stops it by its PID. Scenarios:

- ``big-announce`` (finding 3): 3 announced readers; 16 peers announce 900 KB labels; then a
  brand-new reader connects. Readers closed, bytes delivered per byte announced, hub RSS.
- ``re-announce`` (finding 3): 16 announced observers; one peer sends 10,000 re-announces
  (~125 B each) as fast as it can. Time to process, bytes delivered within 3 s, hub RSS.
- ``spoof`` (finding 5): can a peer deliver server-looking events, claim devtools or a plugin id
  before announcing, make receivers see another module's source, take ui:configure over?
- ``ghost`` (finding 6): 4 peers that never read keep re-announcing while a flood makes them
  slow consumers, and 30 more times after the drop. Ghost modules left in the registry.
- ``strict-json`` (finding 12): NaN / Infinity / a lone surrogate / superjson meta reaching
  outside ``data``: what a receiver gets.
- ``hot-path``: the hub's CPU time per relayed event (1 sender -> 10 receivers) when the
  frame's ``metadata.source`` matches the sender's announced identity (forwarded byte for byte),
  is absent (the event re-encoded once; spliced in when the frame has no ``metadata`` at all),
  or differs (re-encoded once), for 64 B and 4 KiB frames, medians of 3 interleaved rounds; plus
  the in-process cost of :meth:`Event.attributed` alone (current tree only), which is the
  precise number (the CPU time of a shared machine is +-3 us per event).
- ``kernel``: ``Hub.on_frame`` in-process (no sockets) for the same three cases, per event: the
  whole kernel path, for the current tree or the ``--baseline`` tree (one with
  ``airi_core/server/kernel.py``, e.g. the commit before these changes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import connect  # noqa: E402

from tests._hubproc import HubProcess, checkout_env, rss_kib  # noqa: E402

SERVER_PLUGIN_ID = "proj-airi:server-runtime"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: hot-path: receivers per relayed event, and events sent before waiting for them to catch up
RECEIVERS = 10
CHUNK = 200
ROUNDS = 3
_ids = itertools.count(1)


def ident(name: str, plugin: str | None = None, **labels: str) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"{name}-1", "kind": "plugin", "plugin": {"id": plugin or name}}
    if labels:
        out["labels"] = labels
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


class Peer:
    """A raw client: counts every byte it gets, keeps small events, answers fences."""

    def __init__(self, ws: Any, name: str, keep: bool) -> None:
        self.ws = ws
        self.name = name
        self.keep = keep
        self.bytes = 0
        self.frames = 0
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.fences: dict[str, asyncio.Future[None]] = {}
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url: str, name: str, *, announce: bool = True, identity: dict[str, Any] | None = None,
                   keep: bool = True, sock: Any = None, max_queue: int | None = 64) -> Peer:
        ws = await connect(url, max_size=None, compression=None, sock=sock, max_queue=max_queue, open_timeout=10)
        peer = cls(ws, name, keep)
        if announce:
            await peer.send({"type": "module:announce", "data": {"name": name, "identity": identity or ident(name)}})
            await peer.fence()
        return peer

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                self.bytes += len(frame)
                self.frames += 1
                if not self.keep and len(frame) > 512:
                    continue
                obj = json.loads(frame)
                if isinstance(obj, dict) and "json" in obj and "type" not in obj:
                    obj = obj["json"]
                pid = ((obj.get("metadata") or {}).get("event") or {}).get("parentId")
                fut = self.fences.pop(pid, None) if pid else None
                if fut is not None:
                    if not fut.done():
                        fut.set_result(None)
                    continue
                if self.keep:
                    if obj.get("type") == "registry:modules:sync":  # keep the names only
                        obj = {**obj, "data": {"modules": [{"name": m.get("name")} for m in obj["data"]["modules"]]}}
                    else:
                        self.raw.append(frame if len(frame) < 65536 else "")
                    self.events.append(obj)

    async def send(self, obj: Any) -> None:
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def fence(self, timeout: float = 30.0) -> bool:
        eid = f"fence-{next(_ids)}"
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.fences[eid] = fut
        try:
            await self.send({"type": "transport:connection:heartbeat", "data": {"kind": "ping"}, "metadata": {"event": {"id": eid}}})
            await asyncio.wait_for(fut, timeout)
            return True
        except Exception:
            return False

    def of(self, type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == type]

    @property
    def close(self) -> tuple[int | None, str | None]:
        return self.ws.close_code, self.ws.close_reason

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)
        self.task.cancel()


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = rss_kib(pid)
        self.peak = self.start
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, rss_kib(self.pid))
            await asyncio.sleep(0.05)

    def stop(self) -> dict[str, float]:
        self.task.cancel()
        end = rss_kib(self.pid)
        return {"rss_start_mib": round(self.start / 1024, 1), "rss_peak_mib": round(max(self.peak, end) / 1024, 1), "rss_end_mib": round(end / 1024, 1)}


# -- scenarios ---------------------------------------------------------------------------------------
async def big_announce(url: str, pid: int, current: bool) -> dict[str, Any]:
    rss = RssSampler(pid)
    readers = [await Peer.open(url, f"r{i}", keep=False) for i in range(3)]
    t0 = time.monotonic()
    sent = refused = 0
    bigs = []
    for i in range(16):
        c = await Peer.open(url, f"big{i}", announce=False)
        frame = json.dumps({"type": "module:announce", "data": {"name": f"big{i}", "identity": ident(f"big{i}", pad="y" * 900_000)}})
        sent += len(frame)
        await c.send(frame)
        await c.fence()
        refused += any(e.get("type") == "error" for e in c.events)
        bigs.append(c)
    late = await Peer.open(url, "late", announce=False, keep=False)
    await asyncio.sleep(10.0)  # debounced and bandwidth-budgeted syncs
    elapsed = time.monotonic() - t0
    everyone = [*readers, late, *bigs]
    delivered = sum(p.bytes for p in everyone)
    res = {
        "readers_closed_1008": sum(p.close[0] == 1008 for p in [*readers, late]),
        "readers_total": 4,
        "announces_refused": refused,
        "bytes_announced": sent,
        "bytes_delivered": delivered,
        "delivered_per_announced_byte": round(delivered / sent, 2),
        "seconds": round(elapsed, 2),
        **rss.stop(),
    }
    for p in everyone:
        await p.stop()
    return res


async def re_announce(url: str, pid: int, current: bool) -> dict[str, Any]:
    rss = RssSampler(pid)
    observers = [await Peer.open(url, f"o{i}", keep=False) for i in range(16)]
    base = [o.bytes for o in observers]
    attacker = await Peer.open(url, "a", announce=False, keep=False)
    frames = [json.dumps({"type": "module:announce", "data": {"name": "a", "identity": ident("a", i=str(i))}}) for i in range(10_000)]
    t0 = time.monotonic()
    for f in frames:
        await attacker.send(f)
    await attacker.fence(120)
    processed = time.monotonic() - t0
    await asyncio.sleep(3.0)
    delivered = sum(o.bytes - b for o, b in zip(observers, base))
    sent = sum(len(f) for f in frames)
    res = {
        "re_announces": len(frames),
        "bytes_received": sent,
        "seconds_to_process": round(processed, 2),
        "bytes_delivered_to_16_observers_within_3s": delivered,
        "delivered_per_received_byte": round(delivered / sent, 1),
        "bytes_back_to_attacker": attacker.bytes,
        "observers_closed": sum(o.close[0] is not None for o in observers),
        **rss.stop(),
    }
    for p in [*observers, attacker]:
        await p.stop()
    return res


async def spoof(url: str, pid: int, current: bool) -> dict[str, Any]:
    hub_src = {"kind": "plugin", "plugin": {"id": SERVER_PLUGIN_ID, "version": "0.1.0"}, "id": "whatever"}
    stage_ident = ident("stage-web", "proj-airi:stage-web")
    stage = await Peer.open(url, "stage-web", identity=stage_ident)
    secret = await Peer.open(url, "secret", identity=ident("secret", "acme:secret"))
    ui = await Peer.open(url, "ui")
    mallory = await Peer.open(url, "mallory")
    anon = await Peer.open(url, "anon", announce=False)
    to_stage = {"destinations": ["module:stage-web"]}
    forged = [
        ("module:de-announced", {**{"name": "secret", "identity": ident("secret", "acme:secret")}, "reason": "connection closed"}),
        ("registry:modules:sync", {"modules": []}),
        ("module:authenticated", {"authenticated": True}),
        ("module:configure", {"config": {"apiKey": "attacker-key"}}),
    ]
    for t, data in forged:
        await mallory.send({"type": t, "data": data, "metadata": {"source": hub_src, "event": {"id": f"f-{t}"}}, "route": to_stage})
    # another module's identity as source
    await mallory.send({"type": "test:as-stage", "data": {}, "metadata": {"source": stage_ident, "event": {"id": "s1"}}, "route": {"destinations": ["module:ui"]}})
    # before announcing: claim devtools (bypass past the policy) and the stage's plugin id
    anon_claim = ident("anon", "proj-airi:stage-web", devtools="true")
    await anon.send({"type": "test:bypass", "data": {}, "metadata": {"source": anon_claim, "event": {"id": "b1"}}, "route": {"bypass": True}})
    await anon.fence()
    await ui.send({"type": "test:to-plugin", "data": {}, "metadata": {"source": ident("ui"), "event": {"id": "p1"}}, "route": {"destinations": ["plugin:proj-airi:stage-web"]}})
    # a second announce of the stage's name takes ui:configure?
    twin = await Peer.open(url, "stage-web", identity=ident("twin", "evil"))
    await ui.send({"type": "ui:configure", "data": {"moduleName": "stage-web", "config": {"apiKey": "k"}}, "metadata": {"source": ident("ui"), "event": {"id": "c1"}}})
    for p in (mallory, anon, ui):
        await p.fence()
    for p in (stage, secret, twin, anon, ui):
        await p.fence()
    got_forged = [e["type"] for e in stage.events if e.get("type") in dict(forged) and ((e.get("metadata") or {}).get("event") or {}).get("id", "").startswith("f-")]
    as_stage = ui.of("test:as-stage")
    res = {
        "forged_server_events_delivered": f"{len(got_forged)}/4 {got_forged}",
        "receiver_saw_other_modules_source": bool(as_stage) and ((as_stage[0].get("metadata") or {}).get("source") or {}).get("plugin", {}).get("id") == "proj-airi:stage-web",
        "unannounced_devtools_claim_bypassed_policy": bool(secret.of("test:bypass")),
        "unannounced_plugin_id_claim_received_plugin_destination": bool(anon.of("test:to-plugin")),
        "ui_configure_reached": "the second announcer" if twin.of("module:configure") else "the first announcer" if stage.of("module:configure") else "nobody",
        "errors_to_mallory": len(mallory.of("error")),
    }
    for p in (stage, secret, ui, mallory, anon, twin):
        await p.stop()
    return res


async def ghost(url: str, pid: int, current: bool) -> dict[str, Any]:
    import socket

    observer = await Peer.open(url, "observer")
    sender = await Peer.open(url, "sender", keep=False)
    victims = []
    for i in range(4):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0])))
        ws = await connect(url, sock=sock, max_queue=1, max_size=None)
        await ws.send(json.dumps({"type": "module:announce", "data": {"name": f"v{i}", "identity": ident(f"v{i}")}}))
        victims.append(ws)
    await observer.fence()

    def dropped(i: int) -> bool:
        return any(e.get("type") == "module:de-announced" and e["data"].get("name") == f"v{i}" and e["data"].get("reason") == "slow consumer" for e in observer.events)

    after = [0] * 4

    async def keep_announcing(ws: Any, i: int) -> None:
        for n in range(20000):
            if dropped(i):
                after[i] += 1
                if after[i] > 30:
                    return
            try:
                await asyncio.wait_for(ws.send(json.dumps({"type": "module:announce", "data": {"name": f"v{i}", "identity": ident(f"v{i}", n=str(n))}})), 1)
            except Exception:
                return
            await asyncio.sleep(0.001)

    tasks = [asyncio.ensure_future(keep_announcing(ws, i)) for i, ws in enumerate(victims)]
    flood = json.dumps({"type": "test:flood", "data": {"p": "f" * 4000}})
    t0 = time.monotonic()
    for _ in range(5000):
        if all(dropped(i) for i in range(4)):
            break
        await sender.send(flood)
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    await asyncio.sleep(3.0)  # the hub aborts unanswered closes after limits.close_timeout_ms
    await observer.fence()
    late = await Peer.open(url, "late", announce=False)
    sync = late.of("registry:modules:sync")
    listed = [m["name"] for m in sync[0]["data"]["modules"]] if sync else []
    last: dict[str, str] = {}
    for e in observer.events:
        if e.get("type") in ("module:announced", "module:de-announced") and str(e["data"].get("name", "")).startswith("v"):
            if e["type"] == "module:de-announced" and e["data"].get("reason") == "re-announcing":
                continue
            last[e["data"]["name"]] = e["type"]
    ui_errors_before = len(late.of("error"))
    await late.send({"type": "ui:configure", "data": {"moduleName": "v0", "config": {}}, "metadata": {"event": {"id": "c"}}})
    await late.fence()
    res = {
        "victims_dropped_as_slow_consumers": sum(dropped(i) for i in range(4)),
        "announces_sent_after_the_drop": sum(after),
        "ghosts_in_registry_sync": sorted(n for n in listed if n.startswith("v")),
        "announced_without_later_de_announce": sorted(n for n, t in last.items() if t == "module:announced"),
        "ui_configure_to_v0": "error (module not found)" if len(late.of("error")) > ui_errors_before else "silently accepted",
        "seconds": round(time.monotonic() - t0, 2),
    }
    for ws in victims:
        ws.transport.abort()
    for p in (observer, sender, late):
        await p.stop()
    return res


async def strict_json(url: str, pid: int, current: bool) -> dict[str, Any]:
    a = await Peer.open(url, "a")
    b = await Peer.open(url, "b")

    def strict(text: str) -> bool:
        try:
            json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            text.encode("utf-8")
            return "\\ud800" not in text
        except ValueError:
            return False

    out: dict[str, Any] = {}
    for label, frame in [
        ("NaN", '{"type":"t:nan","data":{"v":NaN}}'),
        ("Infinity", '{"type":"t:inf","data":{"v":Infinity}}'),
        ("lone surrogate", '{"type":"t:sur","data":{"v":"\\ud800"}}'),
    ]:
        start = len(b.raw)
        await a.send(frame)
        await a.fence()
        await b.fence()
        got = b.raw[start:]
        err = [e["data"]["message"] for e in a.events if e.get("type") == "error"]
        out[label] = ("forwarded, strict parser " + ("accepts" if all(map(strict, got)) else "REJECTS")) if got else f"refused: {err[-1] if err else '?'}"
    ev = {"type": "t:meta", "data": {"when": "2024-01-01T00:00:00.000Z", "fake": {"kind": "plugin", "plugin": {"id": SERVER_PLUGIN_ID}}},
          "metadata": {"source": ident("a"), "event": {"id": "m1"}}}
    meta = {"values": {"data.when": ["Date"], "metadata.source": ["undefined"]}, "referentialEqualities": {"data.fake": ["metadata.source"]}}
    start = len(b.raw)
    await a.send({"json": ev, "meta": meta})
    await a.fence()
    await b.fence()
    got = [json.loads(r) for r in b.raw[start:]]
    out["superjson meta reaching outside data"] = f"forwarded meta = {got[0].get('meta') if got else None}"
    for p in (a, b):
        await p.stop()
    return out


async def hot_path(url: str, pid: int, current: bool) -> dict[str, Any]:
    sender_ident = ident("sender", "proj-airi:bench", role="send")
    sender = await Peer.open(url, "sender", identity=sender_ident, keep=False)
    receivers = [await Peer.open(url, f"r{i}", keep=False) for i in range(RECEIVERS)]
    out: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}
    incomplete: list[str] = []
    for size, n in ((64, 20000), (4096, 8000)):
        frames = {}
        for case in ("match", "absent", "no metadata", "differs"):
            md: dict[str, Any] = {"event": {"id": "x"}}
            if case == "match":
                md["source"] = sender_ident
            elif case == "differs":
                md["source"] = ident("someone-else", "proj-airi:bench", role="send")
            body: dict[str, Any] = {"type": "bench", "data": {"p": ""}}
            if case != "no metadata":
                body["metadata"] = md
            pad = "x" * max(0, size - len(json.dumps({"json": body})))
            frames[case] = json.dumps({"json": {**body, "data": {"p": pad}}})
        for _ in range(ROUNDS):  # interleaved, so that load from elsewhere hits every case alike
            for case, frame in frames.items():
                base = [r.frames for r in receivers]
                await sender.fence()
                cpu0 = cpu_seconds(pid)
                deadline = time.monotonic() + 120
                # in chunks the receivers keep up with: no backpressure, no slow consumer, so
                # the hub's CPU time is the cost of relaying n events to every receiver
                for done in range(0, n, CHUNK):
                    for _ in range(min(CHUNK, n - done)):
                        await sender.ws.send(frame)
                    target = done + min(CHUNK, n - done)
                    while any(r.frames - b < target for r, b in zip(receivers, base)) and time.monotonic() < deadline:
                        await asyncio.sleep(0.001)
                cpu = cpu_seconds(pid) - cpu0
                got = min(r.frames - b for r, b in zip(receivers, base))
                if got < n:
                    incomplete.append(f"{size}B {case}: {got}/{n}")
                samples.setdefault(f"{size}B {case} ({len(frame)} B frame)", []).append(cpu / n * 1e6)
    for key, values in samples.items():
        out[key] = {"hub_cpu_us_per_event_median": round(sorted(values)[len(values) // 2], 2), "samples": [round(v, 1) for v in values]}
    if incomplete:
        out["INCOMPLETE"] = incomplete
    for p in (sender, *receivers):
        await p.stop()
    if current:
        out["in-process Event.attributed"] = micro()
    return out


async def hot_path_kernel(baseline: str | None) -> dict[str, Any]:
    return await asyncio.to_thread(kernel_micro_in, baseline)


def micro() -> dict[str, float]:
    import timeit

    from airi_core.protocol.events import canonical, decode_frame

    identity = ident("sender", "proj-airi:bench", role="send")
    key = canonical(identity)
    res: dict[str, float] = {}
    for size in (64, 4096):
        for case in ("match", "reordered", "absent", "no metadata", "differs"):
            md: dict[str, Any] = {"event": {"id": "x"}}
            if case == "match":
                md["source"] = identity
            elif case == "reordered":
                md["source"] = dict(reversed(list(identity.items())))
            elif case == "differs":
                md["source"] = ident("other")
            body: dict[str, Any] = {"type": "bench", "data": {"p": "x" * size}}
            if case != "no metadata":
                body["metadata"] = md
            ev = decode_frame(json.dumps({"json": body}))
            n = 20000
            t = min(timeit.repeat(lambda: ev.attributed(identity, key).forward_text(True), number=n, repeat=7)) / n
            res[f"{size}B {case}: attributed() us"] = round(t * 1e6, 3)
    return res


def kernel_micro() -> dict[str, Any]:
    """``Hub.on_frame`` in-process for one announced sender and 10 announced receivers without
    sockets (the transport skips them): decode, the kernel's rules, the route hooks and the
    recipient list, per event; best of 7 runs of 20,000. Runs against whatever ``airi_core`` is
    importable (the tree of ``--baseline`` in a subprocess)."""
    import timeit

    from airi_core.server.config import Settings
    from airi_core.server.kernel import Hub
    from airi_core.server.peer import Peer as HubPeer

    hub = Hub(Settings())
    peers = []
    for i in range(11):
        p = HubPeer(f"x{i}")
        hub.registry.add(p)
        hub.registry.mark_authenticated(p)
        hub.registry.register_module(p, "sender" if i == 0 else f"r{i}", None, ident("sender", "proj-airi:bench", role="send") if i == 0 else ident(f"r{i}"))
        peers.append(p)
    sender = peers[0]
    res: dict[str, Any] = {}
    for size in (64, 4096):
        for case in ("match", "no metadata", "differs"):
            body: dict[str, Any] = {"type": "bench", "data": {"p": "x" * size}}
            if case == "match":
                body["metadata"] = {"source": sender.identity, "event": {"id": "x"}}
            elif case == "differs":
                body["metadata"] = {"source": ident("other"), "event": {"id": "x"}}
            frame = json.dumps({"json": body})
            n = 20000
            t = min(timeit.repeat(lambda: hub.on_frame(sender, frame), number=n, repeat=7)) / n
            res[f"{size}B {case}: on_frame us"] = round(t * 1e6, 2)
    return res


def kernel_micro_in(baseline: str | None) -> dict[str, Any]:
    """:func:`kernel_micro` in a subprocess importing the current tree or ``baseline``."""
    import subprocess

    root = baseline or str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, **checkout_env(root)}
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--kernel-micro"], cwd=tmp, env=env,
                           capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return {"n/a": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout)  # type: ignore[no-any-return]


SCENARIOS = {
    "big-announce": (big_announce, ""),
    "re-announce": (re_announce, ""),
    "spoof": (spoof, '[routing.policy]\ndeny_plugins = ["acme:secret"]\n'),
    "ghost": (ghost, "[limits]\noutbound_soft_bytes = 16384\noutbound_hard_bytes = 65536\nslow_consumer_grace_ms = 100\n"),
    "strict-json": (strict_json, ""),
    "hot-path": (hot_path, ""),
}
#: settings only the current tree knows (the baseline would refuse them as unknown keys)
CURRENT_ONLY = {
    # the ghost scenario measures what happens to announces after a drop, not the rate limit
    "ghost": "[plugins.registry]\nannounce_burst = 100000\n",
    # finding 3 as reported: 900 KB labels are allowed through the identity limit
    "big-announce": "[plugins.registry]\nmax_identity_bytes = 1048576\n",
}


async def run(name: str, baseline: str | None) -> dict[str, Any]:
    if name == "kernel":
        return await hot_path_kernel(baseline)
    fn, extra = SCENARIOS[name]
    config = '[logging]\nlevel = "error"\n' + extra + ("" if baseline else CURRENT_ONLY.get(name, ""))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "airi.toml"
        path.write_text(config, encoding="utf-8")
        # cwd outside any checkout: ``python -m`` puts the cwd first on sys.path
        hub = HubProcess.serve(path, cwd=tmp, env=checkout_env(baseline))
        try:
            url = await hub.await_listening(20)
            return await fn(url, hub.pid, baseline is None)
        finally:
            hub.stop()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", metavar="DIR", help="run the hub of another checkout (e.g. /work/base)")
    ap.add_argument("--only", nargs="*", choices=[*SCENARIOS, "kernel"], help="scenarios to run (default: all)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of text")
    ap.add_argument("--kernel-micro", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.kernel_micro:
        print(json.dumps(kernel_micro()))
        return 0
    baseline = str(Path(args.baseline).resolve()) if args.baseline else None
    results: dict[str, Any] = {}
    for name in args.only or [*SCENARIOS, "kernel"]:
        results[name] = await run(name, baseline)
        if not args.json:
            print(f"== {name} ({'baseline ' + baseline if baseline else 'current tree'})", flush=True)
            for k, v in results[name].items():
                print(f"  {k}: {v}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
