"""Both generations on one hub, with real clients: the HEAD test client (tests/head_client.py, the
0.11.3 SDK's handshake as PROTOCOL-HEAD.md section 8 describes it), replays of the real 0.11.3
SDK's recorded frames (transcripts head-sdk-token / head-sdk-notoken), and the published SDK 0.8.4
(explicit and default identity, decision 14) through tests/interop/sdk084_peer.mjs.

Covers section 8 (handshake cases A-E, reconnect with the same module id, ready semantics),
decisions 2 and 3 across generations, and the mixed-hub exchange both ways."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from airi_core.testing import connect_client, wait_until

from . import head_transcripts as tr
from .head_client import HeadClient
from .head_helpers import TOKEN, listed, lists, settings
from .protocol_helpers import parent_id, probe_one

try:
    from .test_js_sdk_interop import JsSdk, js_sdk  # noqa: F401  (the session fixture)
except ImportError:  # tests/ is not a package
    from test_js_sdk_interop import JsSdk, js_sdk  # type: ignore[no-redef]  # noqa: F401

WEB, TAM = "proj-airi:stage-web", "proj-airi:stage-tamagotchi"
EVENTS = ["head-sdk-check:custom", "head-sdk-check:routed"]
PEER_SCRIPT = Path(__file__).parent / "interop" / "sdk084_peer.mjs"


@contextlib.asynccontextmanager
async def head_clients(*clients: HeadClient) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for c in clients:
            await c.close()


# -- two stage clients through the HEAD test client --------------------------------------------------
@pytest.mark.parametrize("token", [TOKEN, None], ids=["token", "no-token"])
async def test_stage_clients_reach_ready_and_exchange(airi_hub_factory, token):
    hub = await airi_hub_factory(settings(token))
    web = HeadClient(hub.url, WEB, token=token, possible_events=EVENTS, read_timeout=60, ping_interval=20)
    tam = HeadClient(hub.url, TAM, token=token, possible_events=EVENTS, read_timeout=60, ping_interval=20)
    async with head_clients(web, tam):
        web.start()
        tam.start()
        await web.wait_ready(5)
        await tam.wait_ready(5)
        expected = ["idle", "connecting", "authenticating", "announcing", "ready"] if token else ["idle", "connecting", "announcing", "ready"]
        assert web.states == expected and tam.states == expected
        assert web.sent[0]["type"] == ("module:authenticate" if token else "extension:module:announce")
        # each sees the other listed (web: the sync after tam's announce)
        await web.wait_for("registry:modules:sync", lambda e: lists(e, TAM, tam.module_id))
        await web.wait_for("extension:module:announced", lambda e: e["data"]["name"] == TAM)
        m = tam.mark()
        meta_custom = {"values": {"data.at": ["Date"], "data.nothing": ["undefined"]}, "v": 1}
        ev1 = await web.send("head-sdk-check:custom", {"from": WEB, "hello": "from-head-sdk", "at": "2026-11-30T08:08:36.056Z", "nothing": None}, meta=meta_custom)
        ev2 = await web.send(
            "head-sdk-check:routed", {"from": WEB, "at": "2026-11-30T08:08:36.057Z"},
            route={"destinations": [{"type": "module", "modules": [TAM]}]}, meta={"values": {"data.at": ["Date"]}, "v": 1},
        )
        assert ev1 is not None and ev2 is not None
        await tam.wait_for("head-sdk-check:routed", start=m)
        sent = web.sent_frames[-2:]
        assert [f for f in tam.raw if f in sent] == sent  # byte-identical forwarding, in order
        await web.expect_silence("head-sdk-check:custom", after=[tam])
        assert not web.of_type("head-sdk-check:routed") and not web.of_type("error") and not tam.of_type("error")
        assert web.connections == tam.connections == 1


@pytest.mark.parametrize("token", [True, False], ids=["token", "no-token"])
async def test_replay_of_the_real_head_sdk_frames(airi_hub_factory, token):
    """The exact frames the 0.11.3 SDK sent in the recordings, replayed: the hub's answers make
    both ready (a sync listing (name, identity.id), then the echo), and the two application
    events reach the observer byte for byte."""
    hub = await airi_hub_factory(settings(tr.TOKEN if token else None))
    web = await connect_client(hub, "web")
    tam = await connect_client(hub, "tam")
    try:
        web_frames = tr.TOKEN_WEB if token else tr.NOTOKEN_WEB
        tam_frames = tr.TOKEN_TAMAGOTCHI if token else tr.NOTOKEN_TAMAGOTCHI
        if token:
            assert web.received == [] and tam.received == []  # nothing on open with a token
            for c, frame in ((web, web_frames[0]), (tam, tam_frames[0])):
                s = c.mark()
                await c.send_raw(frame)
                auth_id = json.loads(frame)["json"]["metadata"]["event"]["id"]
                ok = await c.wait_for("module:authenticated", start=s)
                assert ok["data"] == {"authenticated": True} and parent_id(ok) == auth_id
            web_frames, tam_frames = web_frames[1:], tam_frames[1:]
        else:
            for c in (web, tam):
                assert [e["type"] for e in c.received] == ["module:authenticated", "registry:modules:sync"]
        for c, frame in ((web, web_frames[0]), (tam, tam_frames[0])):
            ann = json.loads(frame)["json"]
            s = c.mark()
            await c.send_raw(frame)
            name, mid = ann["data"]["name"], ann["data"]["identity"]["id"]
            sync = await c.wait_for("registry:modules:sync", lambda e: lists(e, name, mid), start=s)
            echo = await c.wait_for("extension:module:announced", start=s)
            assert c.received.index(sync) < c.received.index(echo)  # ready on the sync
            assert parent_id(echo) == ann["metadata"]["event"]["id"]
            assert echo["data"]["name"] == name and echo["data"]["identity"] == ann["data"]["identity"]
            assert echo["data"]["possibleEvents"] == EVENTS and echo["data"]["dependencies"] == []
        s = tam.mark()
        w = web.mark()
        for frame in web_frames[1:]:
            await web.send_raw(frame)
        await tam.wait_for("head-sdk-check:routed", start=s)
        assert [f for f in tam.raw if f in web_frames[1:]] == web_frames[1:]
        await web.expect_silence("head-sdk-check:custom", after=[web], start=w)
        assert not web.error_messages() and not tam.error_messages()
    finally:
        await web.close()
        await tam.close()


# -- handshake cases of section 8.1 -----------------------------------------------------------------
async def test_wrong_token_fails_for_good(airi_hub_factory):
    hub = await airi_hub_factory(settings(TOKEN))
    c = HeadClient(hub.url, WEB, token="wrong", backoff_base=0.05)
    async with head_clients(c):
        c.start()
        await c.wait_state("failed", 5)
        assert c.connections == 1 and c.ready_count == 0
        assert c.failures == ["error during handshake: invalid token"]


async def test_missing_token_reconnects_with_backoff(airi_hub_factory):
    hub = await airi_hub_factory(settings(TOKEN))
    c = HeadClient(hub.url, WEB, backoff_base=0.05)
    async with head_clients(c):
        c.start()
        await wait_until(lambda: c.connections >= 3, 5.0, "three connection attempts")
        assert c.ready_count == 0
        assert c.failures[:2] == ["error during handshake: must authenticate before announcing"] * 2
        assert c.delays[:2] == [0.05, 0.1]


async def test_token_on_a_hub_without_token(airi_hub_factory):
    hub = await airi_hub_factory(settings())
    c = HeadClient(hub.url, WEB, token="anything")
    async with head_clients(c):
        await c.connect(5)
        assert "authenticating" in c.states and c.connections == 1


async def test_no_error_reaches_a_handshaking_client(airi_hub_factory, airi_connect):
    """Decision 10: nothing unsolicited fails a HEAD handshake (a busy hub with other traffic)."""
    hub = await airi_hub_factory(settings())
    noisy = await airi_connect(hub, "noisy", announce=True)
    clients = [HeadClient(hub.url, f"proj-airi:stage-{i}") for i in range(3)]
    async with head_clients(*clients):
        for c in clients:
            c.start()
        for i in range(20):
            await noisy.send("chatter:x", {"i": i})
        for c in clients:
            await c.wait_ready(5)
            assert c.connections == 1 and c.failures == []
            assert all(isinstance(e.get("data"), dict) for e in c.received)


# -- reconnect with the same module id (section 8.2, decision 3) --------------------------------------
async def test_same_module_on_a_new_connection_is_listed_twice_until_the_old_closes(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(settings())
    obs = await airi_connect(hub, "obs")
    old = HeadClient(hub.url, WEB)
    async with head_clients(old):
        await old.connect(5)
        new = HeadClient(hub.url, WEB, module_id=old.module_id)
        async with head_clients(new):
            start = obs.mark()
            await new.connect(5)
            await obs.wait_for(
                "registry:modules:sync",
                lambda e: [(m["name"], m["identity"]["id"]) for m in e["data"]["modules"]] == [(WEB, old.module_id)] * 2,
                start=start,
            )
            start = obs.mark()
            await old.close()
            de = await obs.wait_for("extension:module:de-announced", start=start)
            assert de["data"]["name"] == WEB and de["data"]["identity"]["id"] == old.module_id
            assert de["data"]["reason"] == "connection closed"
            after = await obs.wait_for("registry:modules:sync", start=start)
            assert [(m["name"], m["identity"]["id"]) for m in after["data"]["modules"]] == [(WEB, old.module_id)]
            assert new.state == "ready"
            assert await probe_one(obs, [new], {"destinations": [f"module:{WEB}"]}) == {WEB}
            assert await probe_one(obs, [new], {"destinations": [f"instance:{old.module_id}"]}) == {WEB}


async def test_reconnect_announces_the_same_identity(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(settings())
    obs = await airi_connect(hub, "obs")
    c = HeadClient(hub.url, WEB, backoff_base=0.05)
    async with head_clients(c):
        await c.connect(5)
        start = obs.mark()
        await c.drop()  # the TCP connection dies without a close handshake
        await c.wait_ready(5, count=2)
        assert c.connections == 2
        await obs.wait_for("extension:module:de-announced", start=start)
        ann = await obs.wait_for("extension:module:announced", start=start)
        assert ann["data"]["identity"] == {"id": c.module_id, "extension": {"id": WEB}}
        assert await probe_one(obs, [c], {"destinations": [f"module:{WEB}"]}) == {WEB}


# -- with the published SDK 0.8.4 (April) ---------------------------------------------------------------
class NodePeer:
    """One SDK 0.8.4 client in a Node subprocess (tests/interop/sdk084_peer.mjs)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.stderr = b""
        self.cond = asyncio.Condition()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, node: str, sdk_dir: Path, url: str, name: str, identity: Any, token: str | None) -> NodePeer:
        env = {k: v for k, v in os.environ.items() if k != "AIRI_HUB_TOKEN"}
        env["AIRI_JS_SDK_DIR"] = str(sdk_dir)
        if token:
            env["AIRI_HUB_TOKEN"] = token
        proc = await asyncio.create_subprocess_exec(
            node, str(PEER_SCRIPT), url, name, "default" if identity is None else json.dumps(identity),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = {"step": "garbage", "line": raw.decode("utf-8", "replace")}
            async with self.cond:
                self.lines.append(obj)
                self.cond.notify_all()
        async with self.cond:
            self.cond.notify_all()

    def transcript(self) -> str:
        return "\n".join(json.dumps(o)[:400] for o in self.lines) + "\n" + self.stderr.decode("utf-8", "replace")[-2000:]

    def recv(self) -> list[dict[str, Any]]:
        return [o["event"] for o in self.lines if o.get("step") == "recv"]

    async def wait(self, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 8.0, start: int = 0) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        async def waiter() -> None:
            async with self.cond:
                while True:
                    hit = next((o for o in self.lines[start:] if pred(o)), None)
                    if hit is not None:
                        found.append(hit)
                        return
                    if self.reader.done():
                        raise AssertionError(f"the SDK peer exited while waiting for {what}\n{self.transcript()}")
                    await self.cond.wait()

        try:
            await asyncio.wait_for(waiter(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"SDK peer: no {what} within {timeout} s\n{self.transcript()}") from None
        return found[0]

    async def wait_event(self, pred: Callable[[dict[str, Any]], bool], what: str, start: int = 0) -> dict[str, Any]:
        obs = await self.wait(lambda o: o.get("step") == "recv" and pred(o["event"]), what, start=start)
        return obs["event"]

    def mark(self) -> int:
        return len(self.lines)

    async def send(self, event: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        n = len(self.lines)
        self.proc.stdin.write(json.dumps({"cmd": "send", "event": event, "n": n}).encode() + b"\n")
        await self.proc.stdin.drain()
        await self.wait(lambda o: o.get("step") == "ack" and o.get("n") == n, "the send acknowledgement")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b'{"cmd":"close"}\n')
            await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except asyncio.TimeoutError:
            self.proc.kill()  # our own child, by its handle
            await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.reader, 2)
        if self.proc.stderr is not None:
            with contextlib.suppress(Exception):
                self.stderr = await asyncio.wait_for(self.proc.stderr.read(), 2)


def _listing(e: dict[str, Any], name: str, module_id: str) -> dict[str, Any] | None:
    if e.get("type") != "registry:modules:sync":
        return None
    return next((m for m in e["data"]["modules"] if m.get("name") == name and (m.get("identity") or {}).get("id") == module_id), None)


@pytest.mark.parametrize("default_identity", [False, True], ids=["explicit-identity", "default-identity"])
async def test_sdk084_and_head_clients_on_one_hub(js_sdk, airi_hub_factory, default_identity):
    node, sdk_dir = js_sdk.require()
    hub = await airi_hub_factory(settings(TOKEN))
    web = HeadClient(hub.url, WEB, token=TOKEN)
    tam = HeadClient(hub.url, TAM, token=TOKEN)
    explicit = {"id": "april-js-1", "kind": "plugin", "plugin": {"id": "april-js-plugin"}}
    js: NodePeer | None = None
    async with head_clients(web, tam):
        await web.connect(5)
        w0 = web.mark()
        js = await NodePeer.start(node, sdk_dir, hub.url, "april-js", None if default_identity else explicit, TOKEN)
        try:
            sdk = await js.wait(lambda o: o.get("step") == "sdk", "the SDK version")
            assert sdk["version"] == "0.8.4", js.transcript()
            raw_identity = (await js.wait(lambda o: o.get("step") == "identity", "the SDK identity"))["identity"]
            if default_identity:
                assert set(raw_identity) == {"plugin", "instanceId"}, raw_identity
                ident = {"id": raw_identity["instanceId"], "kind": "plugin", "plugin": {"id": "april-js"}}
            else:
                ident = explicit
            # the HEAD client hears of the April module (module:announced, sync listing it)
            ann = await web.wait_for("module:announced", lambda e: e["data"]["name"] == "april-js", start=w0, timeout=8)
            assert ann["data"]["identity"] == ident
            await web.wait_for("registry:modules:sync", lambda e: lists(e, "april-js", ident["id"]), start=w0)
            # the April client is listed with the HEAD module already there (decision 3 shape)
            synced = await js.wait_event(lambda e: _listing(e, "april-js", ident["id"]) is not None, "a sync listing itself")
            assert _listing(synced, WEB, web.module_id) == {"name": WEB, "identity": listed(web.identity)}
            assert synced["data"]["modules"][0]["name"] == "april-js"  # legacy entries first
            # a second HEAD client arrives: the April client gets the extension family's notification
            j0 = js.mark()
            await tam.connect(5)
            ext_ann = await js.wait_event(lambda e: e.get("type") == "extension:module:announced", "extension:module:announced", start=j0)
            assert ext_ann["data"]["name"] == TAM and ext_ann["data"]["identity"]["id"] == tam.module_id
            await js.wait_event(lambda e: _listing(e, TAM, tam.module_id) is not None, "a sync listing the tamagotchi", start=j0)

            # HEAD -> April: broadcast, module:NAME, and the identity forms
            dests = [None, ["module:april-js"], [f"instance:{ident['id']}"], [f"plugin:{ident['plugin']['id']}"]]
            for i, d in enumerate(dests):
                j = js.mark()
                t = tam.mark()
                ev = await web.send("mixed:hello", {"i": i, "text": "héllo 💛"}, route=None if d is None else {"destinations": d})
                assert ev is not None
                got = await js.wait_event(lambda e: e.get("type") == "mixed:hello" and e["data"].get("i") == i, f"mixed:hello #{i}", start=j)
                assert got["data"] == {"i": i, "text": "héllo 💛"} and got["metadata"]["source"] == web.source
                if d is None:
                    await tam.wait_for("mixed:hello", start=t)
                else:
                    await tam.expect_silence("mixed:hello", after=[web], start=t)

            # April -> HEAD: broadcast and module:<HEAD name> (first-colon split)
            w, t = web.mark(), tam.mark()
            await js.send({"type": "mixed:hello", "data": {"from": "js"}})
            got = await web.wait_for("mixed:hello", start=w)
            # the event is attributed to the identity as stored (decision 14: normalised)
            assert got["data"] == {"from": "js"} and got["metadata"]["source"] == ident
            await tam.wait_for("mixed:hello", start=t)
            w, t = web.mark(), tam.mark()
            await js.send({"type": "mixed:routed", "data": {"to": WEB}, "route": {"destinations": [f"module:{WEB}"]}})
            await web.wait_for("mixed:routed", start=w)
            await tam.expect_silence("mixed:routed", start=t)

            # HEAD closes: the April client gets extension:module:de-announced
            j = js.mark()
            await tam.close()
            de = await js.wait_event(lambda e: e.get("type") == "extension:module:de-announced", "extension:module:de-announced", start=j)
            assert de["data"]["name"] == TAM and de["data"]["reason"] == "connection closed"
            # April closes: the HEAD client gets module:de-announced
            w = web.mark()
            await js.close()
            gone = await web.wait_for("module:de-announced", start=w)
            assert gone["data"]["name"] == "april-js" and gone["data"]["reason"] == "connection closed"
            assert gone["data"]["identity"] == ident
            errors = [e for e in js.recv() if e.get("type") == "error"]
            assert not errors, js.transcript()
            assert not web.of_type("error") and web.connections == 1
        finally:
            await js.close()
