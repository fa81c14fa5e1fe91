"""The benchmark harness runs end to end: ``bench/run.py --smoke`` starts the hub and the bare
relay floor alternately, drives every scenario from the separate load generator, prints its
tables and writes the JSON file. Only the shape of the result is checked, never how fast
anything was (the machine running the tests may be busy)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "bench" / "run.py"


def test_bench_smoke_runs_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.Popen(
        [sys.executable, str(RUN), "--smoke", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # run.py stops every process it started
        stdout, stderr = proc.communicate(timeout=30)
        raise AssertionError(f"bench/run.py --smoke did not finish in 240 s\n{stderr[-3000:]}") from None
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
    assert "Relay throughput" in stdout and "Connection storm" in stdout and "Slow consumer" in stdout

    data = json.loads(out.read_text())
    assert data["failures"] == []
    assert data["meta"]["profile"] == "smoke"
    runs = data["runs"]
    assert {r["scenario"] for r in runs} >= {"fanout", "targeted", "policy", "storm", "slow", "stuck"}
    assert any(r.get("source") for r in runs), "no case with metadata.source"

    # implementations interleave: hub, floor, hub, floor, ... with two repetitions each
    for session in {r["session"] for r in runs}:
        seq = []
        for r in runs:
            if r["session"] == session and (r["rep"], r["impl"]) not in seq:
                seq.append((r["rep"], r["impl"]))
        assert seq == [(0, "hub"), (0, "floor"), (1, "hub"), (1, "floor")], (session, seq)

    for r in runs:
        kind = r["kind"]
        if kind in ("fanout", "targeted", "policy"):
            assert r["delivered_per_s"] > 0 and r["events_per_s"] > 0, r
            assert r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"], r
            assert r["latency_samples"] > 0 and r["complete"], r
            assert r["server_cpu_pct"] is not None and r["loadgen_cpu_pct"] is not None
            assert r["server_rss_kib"] > 0
        elif kind == "storm":
            assert r["routable"] == r["clients"] > 0, r
            assert r["t_routable_s"] > 0 and r["ctl_bytes"] > 0, r
            assert r["rss_per_conn_kib"] is not None and r["server_rss_kib"] > 0, r
        elif kind == "stuck":
            assert r["p99_without_ms"] > 0 and r["p99_with_ms"] > 0 and r["max_gap_with_ms"] is not None, r
            assert r["complete"] and r["rss_growth_mib"] is not None, r
        elif kind == "slow":
            assert r["rate_without"] > 0 and r["rate_with"] > 0 and r["ratio"] is not None, r
            assert r["rss_series"] and all(v > 0 for _, v in r["rss_series"]), r
        else:
            raise AssertionError(f"unexpected kind {kind}")

    summary = data["summary"]
    throughput = [e for e in summary.values() if e["family"] == "throughput"]
    assert throughput and all(e["vs_floor"]["delivered"] > 0 for e in throughput)
    assert {row["target"].split(":")[0] for row in data["targets"]}
    assert data["loadgen_check"]["max_loadgen_cpu_pct"] is not None
