"""The hot-path cost of metrics: ``Hub.on_frame`` in-process, metrics on vs off, in one run.

One announced sender and 10 announced receivers without sockets (the transport skips them), so
what is timed is the kernel alone: decode, the kernel's rules, ``airi_event`` and ``airi_route``
(with metrics on, one call of each is timed every 50 ms: the benchmark runs in an event loop as
the hub does), the recipient list and the counters. Sockets would
add the same cost to both sides, so this ratio is an upper bound of what metrics cost a real
event. The two hubs are timed alternately (best of ``--repeat`` runs of ``--number`` events
each) to share the machine's noise.

    python bench/metrics_cost.py [--number 20000] [--repeat 9]

Prints, per case, microseconds per event with metrics off and on and the ratio on / off (the
target is <= 1.05).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airi_core.server.config import Settings  # noqa: E402
from airi_core.server.kernel import Hub  # noqa: E402
from airi_core.server.peer import Peer  # noqa: E402


def ident(name: str) -> dict[str, Any]:
    return {"id": f"{name}-id", "kind": "plugin", "plugin": {"id": f"proj-airi:{name}"}}


def make_hub(metrics: bool) -> tuple[Hub, Peer]:
    hub = Hub(Settings.model_validate({"http": {"enabled": metrics}}))
    assert (hub.metrics is not None) is metrics
    peers = []
    for i in range(11):
        p = Peer(f"x{i}")
        hub.registry.add(p)
        hub.registry.mark_authenticated(p)
        name = "sender" if i == 0 else f"r{i}"
        hub.registry.register_module(p, name, None, ident(name))
        p.set_identity(ident(name))
        peers.append(p)
    return hub, peers[0]


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    off, off_sender = make_hub(False)
    on, on_sender = make_hub(True)
    cases = {
        "broadcast 64 B": {"type": "bench:x", "data": {"p": "x" * 64}},
        "broadcast 4 KiB": {"type": "bench:x", "data": {"p": "x" * 4096}},
        "targeted module:r3": {"type": "bench:x", "data": {"p": "x" * 64}, "route": {"destinations": ["module:r3"]}},
        "raw ping": None,
    }
    results: dict[str, dict[str, float]] = {}
    for name, body in cases.items():
        frame = "ping" if body is None else json.dumps({"json": body})
        best = {"off": float("inf"), "on": float("inf")}
        for _ in range(args.repeat):  # alternate: both see the same noise
            for label, hub, sender in (("off", off, off_sender), ("on", on, on_sender)):
                t = timeit.timeit(lambda h=hub, s=sender: h.on_frame(s, frame), number=args.number) / args.number
                best[label] = min(best[label], t)
                await asyncio.sleep(0)
        results[name] = {"off_us": round(best["off"] * 1e6, 3), "on_us": round(best["on"] * 1e6, 3),
                         "on/off": round(best["on"] / best["off"], 3)}
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--number", type=int, default=20000, help="events per timed run (default 20000)")
    ap.add_argument("--repeat", type=int, default=9, help="timed runs per hub and case; the best counts (default 9)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'case':<22} {'off us':>8} {'on us':>8} {'on/off':>7}")
        for name, r in results.items():
            print(f"{name:<22} {r['off_us']:>8} {r['on_us']:>8} {r['on/off']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
