"""Token guessing against a real hub: how many guesses it checks, and how many log lines it writes.

    python bench/attack_auth.py [--seconds 3] [--window 256] [--baseline DIR]

Starts ``airi serve`` (default settings plus ``[auth] token``; log format json, so one log record
is one line) on a free loopback port, then runs two attacks, each for at most ``--seconds``:

- ``one connection``: one socket sends ``module:authenticate`` with a fresh wrong token per
  frame, pipelined (at most ``--window`` unanswered), until the time is up or the hub closes it;
- ``reconnecting``: the same, opening a new connection whenever the hub closes one.

For each it prints the guesses sent, the guesses the hub checked (answered ``invalid token``) and
their rate over the attack's length, the attempts refused unchecked (``too many failed attempts``), the connections used,
how the first connection was closed, and the log records the hub wrote during the attack. With
``--baseline DIR`` (another checkout, e.g. the commit before a change) the same runs against
that tree first (``PYTHONPATH=DIR:DIR/plugins``, started from an empty directory so that nothing
else is imported), for a before/after table. Every process is stopped by its PID; every wait is
bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidHandshake  # noqa: E402

from tests._hubproc import HubProcess, checkout_env  # noqa: E402

TOKEN = "bench-right-token-7f3e"
CONFIG = f'[auth]\ntoken = "{TOKEN}"\n'


@dataclass
class Result:
    sent: int = 0
    checked: int = 0  # answered "invalid token": the hub compared the guess
    refused: int = 0  # answered "too many failed attempts": not compared
    other: int = 0
    connections: int = 0
    first_close: str = "-"
    seconds: float = 0.0
    log_lines: int = 0
    log_kinds: dict[str, int] = field(default_factory=dict)


async def one_connection(url: str, res: Result, deadline: float, window: int) -> None:
    loop = asyncio.get_running_loop()
    ws = await connect(url, max_size=None, compression=None, open_timeout=5)
    res.connections += 1
    slots = asyncio.Semaphore(window)
    closed = asyncio.Event()

    async def reader() -> None:
        try:
            async for frame in ws:
                obj = json.loads(frame)
                if isinstance(obj, dict) and "json" in obj and "type" not in obj:
                    obj = obj["json"]
                if obj.get("type") != "error":
                    continue
                message = (obj.get("data") or {}).get("message")
                if message == "invalid token":
                    res.checked += 1
                elif message == "too many failed attempts":
                    res.refused += 1
                else:
                    res.other += 1
                slots.release()
        except ConnectionClosed:
            pass
        finally:
            closed.set()
            for _ in range(window):
                slots.release()

    task = loop.create_task(reader())
    n = 0
    try:
        while not closed.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(slots.acquire(), remaining)
            except asyncio.TimeoutError:
                break
            if closed.is_set():
                break
            n += 1
            frame = '{"type":"module:authenticate","data":{"token":"guess-%d"},"metadata":{"event":{"id":"g%d"}}}' % (n, n)
            try:
                await ws.send(frame)
            except ConnectionClosed:
                break
            res.sent += 1
    finally:
        if not closed.is_set():
            await ws.close()
        try:
            await asyncio.wait_for(task, 5)
        except asyncio.TimeoutError:
            task.cancel()
        if res.first_close == "-":
            res.first_close = f"{ws.close_code} {ws.close_reason}" if ws.close_code not in (None, 1000) else "open until the end"


async def attack(url: str, seconds: float, window: int, reconnect: bool) -> Result:
    loop = asyncio.get_running_loop()
    res = Result()
    start = loop.time()
    deadline = start + seconds
    while loop.time() < deadline:
        try:
            await one_connection(url, res, deadline, window)
        except (OSError, InvalidHandshake, asyncio.TimeoutError):
            pass
        if not reconnect:
            break
    # per second of attack: a closed connection that cannot guess any more is part of the result
    res.seconds = max(seconds, loop.time() - start)
    return res


def run_hub(base: Path | None, workdir: Path) -> HubProcess:
    config = workdir / "airi.toml"
    config.write_text(CONFIG, encoding="utf-8")
    env = {"LOG_FORMAT": "json", **checkout_env(base)}
    hub = HubProcess.serve(config, cwd=workdir, env=env)  # cwd: nothing importable from the checkout
    try:
        hub.wait_listening(20)
    except BaseException:
        hub.stop()
        raise
    return hub


def log_records(hub: HubProcess, skip: int) -> list[str]:
    with hub._lock:
        lines = hub.stdout_lines + hub.stderr_lines[skip:]
    out = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(str(obj.get("message") or obj.get("msg") or "")[:60])
    return out


def measure(label: str, base: Path | None, seconds: float, window: int) -> list[tuple[str, str, Result]]:
    rows = []
    for scenario, reconnect in (("one connection", False), ("reconnecting", True)):
        with tempfile.TemporaryDirectory(prefix="airi-attack-") as tmp:
            hub = run_hub(base, Path(tmp))
            try:
                time.sleep(0.2)  # let the startup lines land before counting from here
                skip = len(hub.stderr_lines)
                res = asyncio.run(attack(hub.url, seconds, window, reconnect))
                time.sleep(0.3)  # the last log lines of the attack reach our reader threads
                records = log_records(hub, skip)
                res.log_lines = len(records)
                for r in records:
                    key = r.split(" p")[0][:40]
                    res.log_kinds[key] = res.log_kinds.get(key, 0) + 1
            finally:
                hub.stop()
        rows.append((label, scenario, res))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each attack (max 60)")
    ap.add_argument("--window", type=int, default=256, help="unanswered guesses in flight per connection")
    ap.add_argument("--baseline", metavar="DIR", help="also attack the hub of this checkout (before)")
    args = ap.parse_args()
    seconds = min(max(args.seconds, 0.2), 60.0)
    rows = []
    if args.baseline:
        rows += measure("before", Path(args.baseline).resolve(), seconds, args.window)
    rows += measure("after" if args.baseline else "hub", None, seconds, args.window)
    print(f"{'hub':7} {'attack':15} {'sent':>8} {'checked':>8} {'checked/s':>10} {'refused':>8} {'conns':>6} {'log lines':>9}  first connection closed")
    for label, scenario, r in rows:
        rate = r.checked / r.seconds if r.seconds else 0.0
        print(f"{label:7} {scenario:15} {r.sent:8d} {r.checked:8d} {rate:10.1f} {r.refused:8d} {r.connections:6d} {r.log_lines:9d}  {r.first_close}")
    for label, scenario, r in rows:
        kinds = ", ".join(f"{k!r}: {v}" for k, v in sorted(r.log_kinds.items(), key=lambda kv: -kv[1]))
        print(f"  {label} / {scenario} log records: {kinds or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
