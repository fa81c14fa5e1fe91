"""Micro-benchmark: decoding AIRI frames with the stdlib ``json`` vs ``orjson`` / ``msgspec``.

    python bench/json_libs.py

The hub parses every frame once (``airi_core.protocol.events.decode_frame``) and encodes only the events
it builds itself, so decoding is the JSON work on the hot path. This times a bare ``loads`` of
typical frames with each library that is installed, in one run, and prints the time per frame
and the ratio to the stdlib. (Whole-hub throughput with a faster decoder would move by the
decoder's share of the hub's time: about 6% in the policy-scenario profile.)
"""

from __future__ import annotations

import importlib
import json
import time

FRAMES = {
    "64 B chat": json.dumps({"type": "output:text", "data": {"text": "hi", "t": 1700000000000}, "metadata": {"source": {"id": "stage-1", "kind": "plugin", "plugin": {"id": "stage"}}, "event": {"id": "abcdefghij0123456789x"}}}),
    "targeted": json.dumps({"type": "bench:msg", "data": {"t": 123}, "route": {"destinations": [{"type": "and", "all": [{"type": "or", "any": ["module:r1", "module:r1-standby"]}, {"type": "label", "selectors": ["role=recv", "bench"]}]}]}}),
    "4 KiB wrapped": json.dumps({"json": {"type": "output:audio", "data": {"chunk": "x" * 4000}, "metadata": {"event": {"id": "e1"}}}}),
}


def timed(loads, text: str, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        loads(text)
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    libs = {"json (stdlib)": json.JSONDecoder().decode}
    for name, attr in (("orjson", "loads"), ("msgspec", None)):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            print(f"{name}: not installed (pip install {name})")
            continue
        libs[name] = getattr(mod, attr) if attr else mod.json.Decoder().decode
    print(f"{'frame':<14} " + " ".join(f"{n:>16}" for n in libs) + "   (us per loads; ratio to stdlib)")
    for label, text in FRAMES.items():
        n = 200_000 if len(text) < 1000 else 50_000
        base = None
        cells = []
        for lib, loads in libs.items():
            best = min(timed(loads, text, n) for _ in range(3))
            base = base or best
            cells.append(f"{best:8.2f} ({base / best:4.2f}x)")
        print(f"{label:<14} " + " ".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
