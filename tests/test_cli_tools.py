"""``airi tail``, ``airi send``, ``airi modules`` and ``examples/reverse_text.py``, end to end:
each runs as a real subprocess against a live hub (in this process, on 127.0.0.1).

Every subprocess is started here, tracked by its PID and stopped by it (SIGTERM, then SIGKILL);
every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from airi_core.client import Client
from airi_core.server.config import Settings
from airi_core.server.kernel import Hub
from airi_core.protocol.events import Event
from airi_core.testing import start_hub, wait_until
from ._hubproc import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "reverse_text.py"
TOKEN = "cli-tools-t0ken"
LINE_RE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3})  (\S+)  (\S+)  (.*)$")


def tool_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AIRI_HUB_URL", "AIRI_HUB_TOKEN", "AUTHENTICATION_TOKEN")}
    env.update(COLUMNS="250", NO_COLOR="1", PYTHONUNBUFFERED="1")
    env.pop("FORCE_COLOR", None)
    return env


class Proc:
    """A subprocess whose stdout/stderr lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = asyncio.Event()
        assert proc.stdout is not None and proc.stderr is not None
        self._pumps = [asyncio.ensure_future(self._pump(proc.stdout, self.out)),
                       asyncio.ensure_future(self._pump(proc.stderr, self.err))]

    async def _pump(self, stream: asyncio.StreamReader, sink: list[str]) -> None:
        while line := await stream.readline():
            sink.append(line.decode("utf-8", "replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    def transcript(self) -> str:
        return f"exit {self.proc.returncode}\n--- stdout ---\n" + "\n".join(self.out) + "\n--- stderr ---\n" + "\n".join(self.err)

    async def wait_line(self, stream: str, pattern: str, timeout: float = 10.0) -> str:
        sink = self.out if stream == "out" else self.err
        rx = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for line in sink:
                if rx.search(line):
                    return line
            if self.proc.returncode is not None and all(p.done() for p in self._pumps):
                raise AssertionError(f"process ended without a {stream} line matching {pattern!r}\n{self.transcript()}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {stream} line matching {pattern!r} within {timeout} s\n{self.transcript()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))
            except asyncio.TimeoutError:
                pass

    async def wait(self, timeout: float = 15.0) -> int:
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            await self.stop()
            raise AssertionError(f"process {self.pid} did not exit within {timeout} s\n{self.transcript()}") from None
        await asyncio.wait_for(asyncio.gather(*self._pumps), 5)
        return self.proc.returncode  # type: ignore[return-value]

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.returncode is None:
            os.kill(self.pid, sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                os.kill(self.pid, signal.SIGKILL)
                await asyncio.wait_for(self.proc.wait(), 5)
        await asyncio.wait_for(asyncio.gather(*self._pumps, return_exceptions=True), 5)
        return self.proc.returncode  # type: ignore[return-value]


@pytest.fixture
async def spawn() -> AsyncIterator[Callable[..., Any]]:
    procs: list[Proc] = []

    async def start(*args: str) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=str(ROOT), env=tool_env(),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        p = Proc(proc)
        procs.append(p)
        return p

    yield start
    for p in procs:
        await p.stop()


async def airi(spawn: Callable[..., Any], *args: str) -> Proc:
    return await spawn("-m", "airi_core", *args)  # type: ignore[no-any-return]


@pytest.fixture
def raw(airi_connect: Callable[..., Any]) -> Callable[..., Any]:
    """Raw protocol clients (airi_core.testing's airi_connect), closed at teardown."""
    return airi_connect


# -- airi tail -------------------------------------------------------------------------------------------
async def test_tail_prints_events_live_one_per_line(airi_hub: Hub, spawn: Any, raw: Any) -> None:
    # --type globs are the protocol's dialect: only * is a wildcard ("odd:?" is not "odd:x")
    tail = await airi(spawn, "tail", "--url", airi_hub.url, "--type", "test:*", "--type", "odd:?", "--count", "3", "--preview", "40")
    await tail.wait_line("err", r"^tail: watching ws://127\.0\.0\.1:\d+/ws for test:\*")
    chat = await raw(airi_hub, "chat-ui", announce=True)
    await chat.send("test:one", {"text": "hello"})
    # live: the first line is out while tail is still running
    first = await tail.wait_line("out", r"test:one")
    assert tail.proc.returncode is None
    await chat.send("other:skipped", {"x": 1})
    await chat.send("odd:x", {"x": 1})
    await chat.send("test:two", {"text": "x" * 200})
    await chat.send("test:three", {"nested": {"list": [1, 2, 3]}, "emoji": "💛"})
    assert await tail.wait() == 0, tail.transcript()
    assert len(tail.out) == 3, tail.transcript()
    parsed = [LINE_RE.match(line) for line in tail.out]
    assert all(parsed), tail.transcript()
    rows = [m.groups()[1:] for m in parsed if m]
    assert rows[0] == ("test:one", "chat-ui", '{"text":"hello"}')
    assert rows[1][:2] == ("test:two", "chat-ui") and len(rows[1][2]) == 40 and rows[1][2].endswith("…")
    assert rows[2] == ("test:three", "chat-ui", '{"nested":{"list":[1,2,3]},"emoji":"💛"}')
    assert first == tail.out[0]


async def test_tail_json_prints_raw_events_including_the_hubs(airi_hub: Hub, spawn: Any, raw: Any) -> None:
    tail = await airi(spawn, "tail", "--url", airi_hub.url, "--json", "--count", "3")
    await tail.wait_line("err", r"^tail: watching")
    peer = await raw(airi_hub, "joiner", announce=True)  # module:announced + registry:modules:sync
    await peer.send_raw(json.dumps({"json": {"type": "test:wrapped", "data": {"n": 1.5, "none": None},
                                             "metadata": {"source": peer.identity, "event": {"id": "w-1"}}},
                                    "meta": {"values": {}}}))
    assert await tail.wait() == 0, tail.transcript()
    events = [json.loads(line) for line in tail.out]
    assert [e["type"] for e in events] == ["module:announced", "registry:modules:sync", "test:wrapped"], tail.transcript()
    assert events[0]["data"]["name"] == "joiner"
    assert events[0]["metadata"]["source"]["plugin"]["id"] == "proj-airi:server-runtime"
    assert [m["name"] for m in events[1]["data"]["modules"]] == ["joiner"]
    assert events[2] == {"type": "test:wrapped", "data": {"n": 1.5, "none": None},
                         "metadata": {"source": peer.identity, "event": {"id": "w-1"}}}


async def test_tail_token(airi_hub_factory: Any, spawn: Any, raw: Any) -> None:
    hub = await airi_hub_factory({"auth": {"token": TOKEN}})
    bad = await airi(spawn, "tail", "--url", hub.url, "--token", "nope", "--count", "1")
    assert await bad.wait() == 1, bad.transcript()
    assert any("invalid token" in line for line in bad.err), bad.transcript()
    assert bad.out == []
    good = await airi(spawn, "tail", "--url", hub.url, "--token", TOKEN, "--type", "test:*", "--count", "1")
    await good.wait_line("err", r"^tail: watching")
    peer = await raw(hub, "p", token=TOKEN, announce=True)
    await peer.send("test:ok", {})
    assert await good.wait() == 0, good.transcript()
    assert LINE_RE.match(good.out[0]) and "test:ok  p  {}" in good.out[0]


async def test_tail_seconds_and_unreachable_hub(airi_hub: Hub, spawn: Any) -> None:
    timed = await airi(spawn, "tail", "--url", airi_hub.url, "--seconds", "0.5")
    assert await timed.wait() == 0, timed.transcript()
    assert timed.out == [], timed.transcript()  # heartbeats are not shown by default
    down_url = f"ws://127.0.0.1:{free_port()}/ws"
    down = await airi(spawn, "tail", "--url", down_url, "--timeout", "0.5")
    assert await down.wait() == 1, down.transcript()
    # a refused first connection ends the tool at once, in one line naming the URL
    assert down.err == [f"error: cannot connect to {down_url}: connection refused (is a hub running there? `airi serve` starts one)"], down.transcript()
    usage = await airi(spawn, "tail", "--count", "0")
    assert await usage.wait() == 2, usage.transcript()


async def test_tail_reconnects_across_a_hub_restart(spawn: Any, raw: Any) -> None:
    port = free_port()
    hub = Hub(Settings())
    await hub.start(host="127.0.0.1", port=port)
    try:
        tail = await airi(spawn, "tail", "--url", f"ws://127.0.0.1:{port}/ws", "--type", "test:*", "--count", "2")
        await tail.wait_line("err", r"^tail: watching")
        p1 = await raw(hub, "before")
        await p1.send("test:one", {})
        await tail.wait_line("out", r"test:one")
        await hub.shutdown()
        await tail.wait_line("err", r"^tail: connection lost \(code 1001 server shutdown\); reconnecting$")
        hub = Hub(Settings())
        await hub.start(host="127.0.0.1", port=port)
        await tail.wait_line("err", r"^tail: reconnected", timeout=15)
        p2 = await raw(hub, "after", announce=True)
        await p2.send("test:two", {"back": True})
        assert await tail.wait() == 0, tail.transcript()
        assert [LINE_RE.match(line).group(2) for line in tail.out] == ["test:one", "test:two"]  # type: ignore[union-attr]
    finally:
        await hub.shutdown()


# -- airi send ---------------------------------------------------------------------------------------------
async def test_send_sends_one_event_and_prints_the_reply(airi_hub: Hub, spawn: Any) -> None:
    responder = Client(airi_hub.url, name="responder")
    asked: list[Event] = []

    @responder.on("test:ask")
    async def answer(ev: Event) -> None:
        asked.append(ev)
        await responder.reply(ev, "test:answer", {"a": ev.data["q"] * 2})

    try:
        async with asyncio.timeout(5):
            await responder.ready()
        send = await airi(spawn, "send", "test:ask", '{"q": 2}', "--url", airi_hub.url, "--to", "module:responder", "--count", "1")
        assert await send.wait() == 0, send.transcript()
        assert len(send.out) == 1, send.transcript()
        m = LINE_RE.match(send.out[0])
        assert m and m.groups()[1:] == ("test:answer", "responder", '{"a":4}'), send.transcript()
        sent = re.search(r"^sent test:ask \(id (\S+)\) to module:responder$", "\n".join(send.err), re.M)
        assert sent, send.transcript()
        [ev] = asked
        assert ev.data == {"q": 2} and ev.id == sent.group(1)
        assert ev.route == {"destinations": ["module:responder"]}
        assert ev.source is not None and ev.source["plugin"]["id"] == "airi-send"

        js = await airi(spawn, "send", "test:ask", '{"q": 5}', "--url", airi_hub.url, "--to", "module:responder", "--json", "--count", "1")
        assert await js.wait() == 0, js.transcript()
        reply = json.loads(js.out[0])
        assert reply["type"] == "test:answer" and reply["data"] == {"a": 10}
        assert reply["metadata"]["event"]["parentId"] == asked[1].id
    finally:
        await responder.close()


async def test_send_reports_hub_errors_and_bad_input(airi_hub: Hub, spawn: Any) -> None:
    err = await airi(spawn, "send", "input:text", '{"text": "anyone?"}', "--url", airi_hub.url,
                     "--route", '{"delivery": {"required": true}}')
    assert await err.wait() == 1, err.transcript()
    assert len(err.err) == 1 and err.err[0].startswith("error: no consumer registered for requested event delivery: nothing took input:text"), err.transcript()
    assert err.out == []

    bad = await airi(spawn, "send", "test:x", "[1, 2]", "--url", airi_hub.url)
    assert await bad.wait() == 2, bad.transcript()
    assert any("must be a JSON object" in line for line in bad.err)

    quiet = await airi(spawn, "send", "test:nobody-answers", "--url", airi_hub.url, "--wait", "0.3")
    assert await quiet.wait() == 0, quiet.transcript()
    assert quiet.out == [] and "no reply within 0.3 s" in quiet.err

    down = await airi(spawn, "send", "test:x", "--url", f"ws://127.0.0.1:{free_port()}/ws", "--timeout", "1")
    assert await down.wait() == 1, down.transcript()
    assert len(down.err) == 1 and down.err[0].startswith("error: cannot connect to ws://127.0.0.1:"), down.transcript()


# -- airi modules ---------------------------------------------------------------------------------------------
def table_rows(lines: list[str]) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


async def test_modules_table_with_health(airi_hub_factory: Any, spawn: Any, raw: Any) -> None:
    # the hub checks liveness every 300 ms: a silent module is unhealthy after 5 checks
    # (~1.5-1.8 s) and dropped after 10 (~3.0-3.3 s)
    hub = await airi_hub_factory({"heartbeat": {"read_timeout_ms": 3000, "check_interval_ms": 300}})
    alpha = Client(hub.url, name="alpha", index=0, heartbeat_interval=0.1, read_timeout=5,
                   identity={"id": "alpha-1", "kind": "plugin", "plugin": {"id": "alpha-plugin", "version": "1.0.0", "labels": {"team": "py"}}})
    try:
        async with asyncio.timeout(5):
            await alpha.ready()
        beta = await raw(hub, "beta", announce=True)  # never pings
        peers_before = len(hub.registry)
        mods = await airi(spawn, "modules", "--url", hub.url, "--wait", "2.3")
        await wait_until(lambda: len(hub.registry) > peers_before and hub.registry.authenticated_count() > peers_before,
                         timeout=10, what="airi modules to connect")
        await beta.send_raw("ping")  # beta's silence starts now, while `airi modules` listens
        assert await mods.wait() == 0, mods.transcript()
        rows = table_rows(mods.out)
        header = next(line for line in mods.out if "name" in line and "health" in line)
        assert [c.strip() for c in header.strip("┃").split("┃")] == ["name", "index", "plugin", "version", "instance", "labels", "health"]
        assert rows["alpha"] == ["alpha", "0", "alpha-plugin", "1.0.0", "alpha-1", "team=py", "healthy"], mods.transcript()
        assert rows["beta"] == ["beta", "-", "beta", "-", "beta-instance", "-", "unhealthy (heartbeat late)"], mods.transcript()
        assert set(rows) == {"alpha", "beta"}  # the tool itself does not announce
        assert any(line.startswith("2 modules.") for line in mods.out)

        await beta.send_raw("ping")  # keep beta registered for one more run
        js = await airi(spawn, "modules", "--url", hub.url, "--json", "--wait", "0")
        assert await js.wait() == 0, js.transcript()
        listed = json.loads("\n".join(js.out))
        assert [(m["name"], m["index"], m["identity"]["id"]) for m in listed] == [("alpha", 0, "alpha-1"), ("beta", None, "beta-instance")]
        assert listed[0]["healthy"] is True and listed[0]["reason"] is None
        assert listed[0]["identity"] == alpha.identity.wire()
    finally:
        await alpha.close()


async def test_modules_with_token(airi_hub_factory: Any, spawn: Any, raw: Any) -> None:
    hub = await airi_hub_factory({"auth": {"token": TOKEN}})
    await raw(hub, "gamma", token=TOKEN, announce=True)
    no_token = await airi(spawn, "modules", "--url", hub.url, "--wait", "0")
    assert await no_token.wait() == 1, no_token.transcript()
    assert any("token" in line for line in no_token.err), no_token.transcript()
    ok = await airi(spawn, "modules", "--url", hub.url, "--token", TOKEN, "--wait", "0")
    assert await ok.wait() == 0, ok.transcript()
    assert "gamma" in table_rows(ok.out)


# -- examples/reverse_text.py ---------------------------------------------------------------------------------
async def test_reverse_text_example(spawn: Any, raw: Any) -> None:
    hub = await start_hub({"auth": {"token": TOKEN}})
    try:
        module = await spawn(str(EXAMPLE), "--url", hub.url, "--token", TOKEN)
        await module.wait_line("err", r"^reverse-text: ready on ws://.*consuming input:text \(group chat-ingestion\)$")
        chat = await raw(hub, "chat-ui", token=TOKEN, announce=True)
        sent = await chat.send("input:text", {"text": "hello, AIRI"})
        reply = await chat.wait_for("output:text", timeout=5)
        assert reply["data"] == {"text": "IRIA ,olleh"}
        assert reply["metadata"]["event"]["parentId"] == sent["metadata"]["event"]["id"]
        assert reply["metadata"]["source"]["plugin"]["id"] == "reverse-text"
        assert reply["route"] == {"destinations": ["module:chat-ui"]}
        # and through the CLI
        send = await airi(spawn, "send", "input:text", '{"text": "stressed"}', "--url", hub.url, "--token", TOKEN, "--count", "1")
        assert await send.wait() == 0, send.transcript()
        m = LINE_RE.match(send.out[0])
        assert m and m.groups()[1:] == ("output:text", "reverse-text", '{"text":"desserts"}'), send.transcript()
        assert await module.stop(signal.SIGTERM) == 0, module.transcript()
        assert module.err[-1] == "reverse-text: closed", module.transcript()
        assert hub.stats["errors_sent"] == 0
    finally:
        await hub.shutdown()
