"""Run the real hub as a subprocess (``python -m airi_core serve``) for tests that need its own
process: RSS measurements, signals, the CLI."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (Linux)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class HubProcess:
    """``with HubProcess(toml_text, tmp_path) as hub: hub.url ...`` -- SIGTERM on exit."""

    def __init__(self, config: str, tmp_path: Path, env: dict[str, str] | None = None, ready_timeout: float = 15.0) -> None:
        self.port = free_port()
        self.config = tmp_path / "airi.toml"
        self.config.write_text(config)
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout = ready_timeout
        self.stderr_lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def start(self) -> HubProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airi_core", "serve", "--config", str(self.config), "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.env,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}: {''.join(self.stderr_lines)}")
            if any(re.search(r"listening on", l) for l in self.stderr_lines):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"hub not ready in {self.ready_timeout}s: {''.join(self.stderr_lines)}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
