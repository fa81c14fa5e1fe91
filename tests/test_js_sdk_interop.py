"""Interoperability with the published JavaScript client SDK ``@proj-airi/server-sdk``.

The real hub runs in-process on 127.0.0.1; ``tests/interop/sdk_driver.mjs`` drives two SDK clients
against it in a Node subprocess and prints one JSON observation per line. At each
``checkpoint`` the driver waits until this module has looked at the hub's own registry.

Needs ``node`` (>= 18) and, unless ``AIRI_JS_SDK_DIR`` names a directory that already holds
``node_modules/@proj-airi/server-sdk``, ``npm`` and access to the npm registry. Missing tools are a
test failure, never a skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airi_core.server.kernel import Hub
from airi_core.testing import start_hub, wait_until

SDK_PACKAGE = "@proj-airi/server-sdk"
SDK_VERSION = os.environ.get("AIRI_JS_SDK_VERSION", "0.8.4")
DRIVER = Path(__file__).parent / "interop" / "sdk_driver.mjs"
NPM_TIMEOUT_S = 300
DRIVER_TIMEOUT_S = 40  # the driver gives up by itself after 20 s
TOKEN = "interop-s3cret-token"

# what A sends to B (the driver prints ``when`` as an ISO string; it arrives as a Date)
EXPECTED_PAYLOAD = {
    "text": "héllo from A 💛",
    "n": 42,
    "f": 1.5,
    "flag": True,
    "nothing": None,
    "list": [1, "two", {"three": 3}],
    "nested": {"deep": {"deeper": ["x"]}},
    "when": "2024-05-06T07:08:09.010Z",
}


class ToolMissing(Exception):
    """A prerequisite (node, npm, the SDK) is missing: the tests fail with this message."""


@dataclass
class JsSdk:
    """What the interop tests need: ``node`` and a directory whose ``node_modules`` holds the SDK.
    When a prerequisite is missing, ``problem`` says what, and :meth:`require` fails the test
    (inside the test itself, so it is reported as FAILED, never skipped)."""

    node: str = ""
    dir: Path | None = None
    problem: str | None = None

    def require(self) -> tuple[str, Path]:
        if self.problem is not None or self.dir is None:
            pytest.fail(self.problem or "the JavaScript SDK is not available", pytrace=False)
        return self.node, self.dir


def _require_tool(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(
            f"'{tool}' was not found on PATH; it is required {why}. Install Node.js >= 18 with npm "
            f"(or set AIRI_JS_SDK_DIR to a directory with node_modules/{SDK_PACKAGE} installed)."
        )
    return path


def _sdk_package_json(base: Path) -> Path:
    return base / "node_modules" / "@proj-airi" / "server-sdk" / "package.json"


def _installed_version(base: Path) -> str | None:
    try:
        return str(json.loads(_sdk_package_json(base).read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


def _find_node() -> str:
    node = _require_tool("node", "to run the JavaScript SDK interop test")
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolMissing(f"'{node} --version' failed: {exc}") from None
    m = re.match(r"v(\d+)\.", out)
    if m is None or int(m.group(1)) < 18:
        raise ToolMissing(f"Node.js >= 18 is required for the SDK interop test, found {out!r} at {node}")
    return node


def _sdk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("AIRI_JS_SDK_DIR")
    if given and _sdk_package_json(Path(given)).is_file():
        base = Path(given).resolve()
        version = _installed_version(base)
        if version != SDK_VERSION:
            raise ToolMissing(
                f"AIRI_JS_SDK_DIR={given} holds {SDK_PACKAGE} {version}, expected {SDK_VERSION} "
                "(reinstall it, unset AIRI_JS_SDK_DIR, or set AIRI_JS_SDK_VERSION)"
            )
        return base
    npm = _require_tool("npm", f"to install {SDK_PACKAGE}@{SDK_VERSION}")
    base = tmp_path_factory.mktemp("js-sdk")
    cmd = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(base), f"{SDK_PACKAGE}@{SDK_VERSION}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, cwd=base)
    except subprocess.TimeoutExpired:
        raise ToolMissing(f"'{' '.join(cmd)}' did not finish within {NPM_TIMEOUT_S} s") from None
    except OSError as exc:
        raise ToolMissing(f"'{' '.join(cmd)}' could not run: {exc}") from None
    if proc.returncode != 0 or _installed_version(base) != SDK_VERSION:
        raise ToolMissing(
            f"'{' '.join(cmd)}' failed (exit {proc.returncode}, installed version {_installed_version(base)}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return base


@pytest.fixture(scope="session")
def js_sdk(tmp_path_factory: pytest.TempPathFactory) -> JsSdk:
    """``node`` plus the SDK directory: ``$AIRI_JS_SDK_DIR`` when it holds
    ``node_modules/@proj-airi/server-sdk``, else a fresh ``npm install`` into a temporary
    directory (once per session)."""
    try:
        node = _find_node()
        return JsSdk(node=node, dir=_sdk_dir(tmp_path_factory))
    except ToolMissing as exc:
        return JsSdk(problem=str(exc))


@pytest.fixture
async def hub_factory() -> AsyncIterator[Callable[..., Any]]:
    hubs: list[Hub] = []

    async def make(token: str | None) -> Hub:
        hub = await start_hub({"auth": {"token": token}} if token else None)
        hubs.append(hub)
        assert hub.url.startswith("ws://127.0.0.1:"), hub.url
        return hub

    yield make
    for hub in hubs:
        await hub.shutdown()


class DriverRun:
    """The observations of one driver run, and everything needed to explain a failure."""

    def __init__(self) -> None:
        self.observations: list[dict[str, Any]] = []
        self.stdout: list[str] = []
        self.stderr = ""
        self.returncode: int | None = None
        self.checkpoint_errors: list[str] = []

    def transcript(self) -> str:
        return (
            f"driver exit code: {self.returncode}\n--- stdout ---\n" + "\n".join(self.stdout)
            + f"\n--- stderr ---\n{self.stderr.strip()}"
        )

    def steps(self, step: str, **match: Any) -> list[dict[str, Any]]:
        return [o for o in self.observations if o.get("step") == step and all(o.get(k) == v for k, v in match.items())]

    def one(self, step: str, **match: Any) -> dict[str, Any]:
        found = self.steps(step, **match)
        assert len(found) == 1, f"expected one '{step}' {match or ''} observation, got {len(found)}\n{self.transcript()}"
        return found[0]


async def run_driver(
    node: str,
    sdk_dir: Path,
    scenario: str,
    hub: Hub,
    token: str | None,
    checkpoints: dict[str, Callable[[dict[str, Any]], None]],
) -> DriverRun:
    """Run the driver with ``--pause``; at each checkpoint call ``checkpoints[name]`` (inside the
    hub's event loop, while the driver waits) and answer ``ok`` or the assertion's message."""
    env = {k: v for k, v in os.environ.items() if k != "AIRI_HUB_TOKEN"}
    env["AIRI_JS_SDK_DIR"] = str(sdk_dir)
    if token:
        env["AIRI_HUB_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        node, str(DRIVER), scenario, hub.url, "--pause",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    run = DriverRun()
    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None

    async def read_stdout() -> None:
        assert proc.stdout is not None and proc.stdin is not None
        while raw := await proc.stdout.readline():
            line = raw.decode("utf-8", "replace").rstrip("\n")
            run.stdout.append(line)
            try:
                obs = json.loads(line)
            except ValueError:
                run.checkpoint_errors.append(f"driver printed a non-JSON line: {line!r}")
                continue
            run.observations.append(obs)
            if obs.get("step") != "checkpoint":
                continue
            name = obs.get("name")
            check = checkpoints.get(name)
            try:
                assert check is not None, f"unexpected checkpoint {name!r}"
                check(obs)
                reply = "ok"
            except AssertionError as exc:
                run.checkpoint_errors.append(f"hub-side check at checkpoint {name!r} failed: {exc}")
                reply = f"refused: {exc}".replace("\n", " ")
            try:
                proc.stdin.write(reply.encode() + b"\n")
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass

    async def read_stderr() -> None:
        assert proc.stderr is not None
        run.stderr = (await proc.stderr.read()).decode("utf-8", "replace")

    try:
        await asyncio.wait_for(asyncio.gather(read_stdout(), read_stderr(), proc.wait()), DRIVER_TIMEOUT_S)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        run.returncode = proc.returncode
        pytest.fail(f"the SDK driver did not exit within {DRIVER_TIMEOUT_S} s\n{run.transcript()}", pytrace=False)
    finally:
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
    run.returncode = proc.returncode
    return run


def _entries(hub: Hub) -> list[tuple[str, int | None, Any]]:
    return [(m["name"], m.get("index"), m["identity"]) for m in hub.registry.modules()]


def _check_both_announced(hub: Hub) -> Callable[[dict[str, Any]], None]:
    def check(obs: dict[str, Any]) -> None:
        names, identities = obs["names"], obs["identities"]
        expected = [(n, None, i) for n, i in zip(names, identities)]
        assert _entries(hub) == expected, f"hub.registry.modules() = {hub.registry.modules()}"
        peers = list(hub.registry)
        assert len(peers) == 2, f"hub has {len(peers)} peers: {peers}"
        assert hub.registry.authenticated_count() == 2
        for peer, name, identity in zip(peers, names, identities):
            assert peer.authenticated and peer.announced and peer.healthy, peer
            assert (peer.name, peer.index, peer.identity) == (name, None, identity), peer
            assert peer.plugin_id == identity["plugin"]["id"] and peer.instance_id == identity["id"], peer
            assert hub.registry.find_module(name) is peer
    return check


def _check_a_closed(hub: Hub) -> Callable[[dict[str, Any]], None]:
    def check(obs: dict[str, Any]) -> None:
        [name] = obs["names"]
        assert [e[0] for e in _entries(hub)] == [name], f"hub.registry.modules() = {hub.registry.modules()}"
        assert len(hub.registry) == 1, f"hub still has {len(hub.registry)} peers: {list(hub.registry)}"
        assert hub.registry.find_module("interop-a") is None
    return check


async def _wait_registry_empty(hub: Hub, timeout: float = 3.0) -> None:
    await wait_until(lambda: not len(hub.registry), timeout, "the hub to forget every peer after the driver exited", every=0.02)


def _assert_scenario(run: DriverRun, scenario: str, *, announces_per_client: int) -> None:
    t = run.transcript()
    assert not run.checkpoint_errors, "\n".join(run.checkpoint_errors) + "\n" + t
    fails = run.steps("fail")
    assert not fails, f"the SDK driver failed: {fails[0].get('error')}\n{t}"
    assert run.returncode == 0, f"the SDK driver exited with {run.returncode}\n{t}"
    assert run.observations and run.observations[-1] == {"step": "done", "scenario": scenario, "ok": True}, t

    sdk = run.one("sdk")
    assert sdk["package"] == "@proj-airi/server-sdk" and sdk["version"] == SDK_VERSION, t

    # the order of the scenario's steps
    order = [o["step"] for o in run.observations if o["step"] not in ("recv", "sdk", "start")]
    assert order == [
        "heartbeat", "authenticated", "announced",  # A
        "heartbeat", "authenticated", "announced",  # B
        "registry", "registry", "no-de-announce", "checkpoint",
        "delivered", "delivered", "de-announced", "registry", "checkpoint", "closed", "done",
    ], t

    # both authenticated (with a token: in reply to their module:authenticate) and announced
    for client in ("A", "B"):
        auth = run.one("authenticated", client=client)
        assert auth["withToken"] is (scenario == "token"), t
        assert (auth["parentId"] is not None) is (scenario == "token"), t
        assert run.one("heartbeat", client=client)["message"] == "💛", t
        ann = run.one("announced", client=client)
        assert ann["announceCount"] == announces_per_client, t
    a = run.one("announced", client="A")
    b = run.one("announced", client="B")
    assert a["identity"]["kind"] == "plugin" and a["identity"]["plugin"] == {"id": "interop-plugin-a"}, t
    assert b["identity"]["kind"] == "plugin" and b["identity"]["plugin"] == {"id": "interop-plugin-b"}, t

    # the registry sync lists both, as {name, identity} (no index: the SDK announces none)
    both = [{"name": a["name"], "identity": a["identity"]}, {"name": b["name"], "identity": b["identity"]}]
    for client in ("A", "B"):
        [sync] = [o for o in run.steps("registry", client=client) if "after" not in o]
        assert sync["modules"] == both, t

    # nothing was de-announced until A closed; A saw B announced exactly once
    nda = run.one("no-de-announce")
    assert nda["announcedSeenByA"] == 1, t
    assert nda["announcesSentByA"] == nda["announcesSentByB"] == announces_per_client, t
    de_recv = [o for o in run.steps("recv") if o.get("type") == "module:de-announced"]
    assert [(o["client"], o["data"]["name"], o["data"]["reason"]) for o in de_recv] == [("B", a["name"], "connection closed")], t
    assert not [o for o in run.steps("recv") if o.get("type") == "error"], t

    # A's event reached B with its data intact, and B's reply reached A
    hello = run.one("delivered", **{"from": "A"})
    assert hello["to"] == "B" and hello["type"] == "interop:hello" and hello["data"] == EXPECTED_PAYLOAD, t
    reply = run.one("delivered", **{"from": "B"})
    assert reply["to"] == "A" and reply["type"] == "interop:reply", t
    assert reply["data"] == {"ok": True, "inReplyTo": hello["eventId"]}, t

    # A closed: B saw it de-announced ("connection closed"), then a sync without A
    de = run.one("de-announced", client="B")
    assert (de["name"], de["identity"], de["reason"]) == (a["name"], a["identity"], "connection closed"), t
    [after] = [o for o in run.steps("registry", client="B") if o.get("after") == "A closed"]
    assert after["modules"] == [{"name": b["name"], "identity": b["identity"]}], t


async def test_js_sdk_with_token(js_sdk: JsSdk, hub_factory: Callable[..., Any]) -> None:
    """Two SDK clients with a token: authenticate, announce, registry sync, A -> B event,
    A closes -> B sees it de-announced and a sync without it."""
    node_bin, js_sdk_dir = js_sdk.require()
    hub = await hub_factory(TOKEN)
    run = await run_driver(
        node_bin, js_sdk_dir, "token", hub, TOKEN,
        {"both-announced": _check_both_announced(hub), "a-closed": _check_a_closed(hub)},
    )
    _assert_scenario(run, "token", announces_per_client=1)
    await _wait_registry_empty(hub)
    assert hub.stats["errors_sent"] == 0, hub.stats
    assert hub.stats["plugin_errors"] == 0, hub.stats
    assert hub.stats["connections"] == 2, hub.stats


async def test_js_sdk_without_token(js_sdk: JsSdk, hub_factory: Callable[..., Any]) -> None:
    """Without a token the SDK announces twice per connection (on open and on
    module:authenticated); the hub keeps the module registered and sends no de-announce."""
    node_bin, js_sdk_dir = js_sdk.require()
    hub = await hub_factory(None)
    run = await run_driver(
        node_bin, js_sdk_dir, "no-token", hub, None,
        {"both-announced": _check_both_announced(hub), "a-closed": _check_a_closed(hub)},
    )
    _assert_scenario(run, "no-token", announces_per_client=2)
    await _wait_registry_empty(hub)
    assert hub.stats["errors_sent"] == 0, hub.stats
    assert hub.stats["plugin_errors"] == 0, hub.stats
    assert hub.stats["connections"] == 2, hub.stats
