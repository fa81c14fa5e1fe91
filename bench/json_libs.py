"""Micro-benchmark: decoding AIRI frames with the stdlib ``json`` vs ``orjson`` / ``msgspec``.

    python bench/json_libs.py

The hub parses every frame once (``airi_core.protocol.events.decode_frame``) and encodes only the events
it builds itself, so decoding is the JSON work on the hot path; the second table times the
encoding of those server-built events (an error, a ``module:announced``, a registry listing of
1000 modules: one per authentication in a storm). This times a bare ``loads`` of
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


def server_events() -> dict[str, object]:
    """Events the hub builds itself, as ``Hub._encode`` sees them (superjson-wrapped)."""
    source = {"kind": "plugin", "plugin": {"id": "proj-airi:server-runtime", "version": "0.1.0"}, "id": "abcdefghij0123456789x"}

    def wrap(type: str, data: object) -> object:
        return {"json": {"type": type, "data": data, "metadata": {"source": source, "event": {"id": "e" * 21, "parentId": "p" * 21}}}}

    entry = {"name": "s123", "identity": {"id": "s123", "kind": "plugin", "plugin": {"id": "bench-storm", "labels": {"role": "storm"}}}}
    return {
        "error": wrap("error", {"message": "invalid event format"}),
        "announced": wrap("module:announced", entry),
        "sync of 1000": wrap("registry:modules:sync", {"modules": [dict(entry, name=f"s{i}") for i in range(1000)]}),
    }


def encoding() -> None:
    """The hub's encoder of server-built events (``dumps_bytes``: orjson, with a scan for
    ``null`` that sends NaN/Infinity to the stdlib) against the stdlib's compact encoder."""
    from airi_core.protocol.events import dumps_bytes

    stdlib = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    print(f"\n{'server event':<14} {'json (stdlib)':>16} {'dumps_bytes':>16}   (us per encode to bytes; ratio to stdlib)")
    for label, value in server_events().items():
        n = 200_000 if label != "sync of 1000" else 500
        base = min(timed(lambda v: stdlib.encode(v).encode(), value, n) for _ in range(3))
        fast = min(timed(dumps_bytes, value, n) for _ in range(3))
        print(f"{label:<14} {base:8.2f} (1.00x) {fast:8.2f} ({base / fast:4.2f}x)")


if __name__ == "__main__":
    main()
    encoding()
