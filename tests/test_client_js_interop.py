"""Our Python client and the published JavaScript SDK (``@proj-airi/server-sdk``) exchanging
events through our hub, in both directions.

The hub and the Python module (:class:`airi_core.client.Client`) run in this process;
``tests/interop/sdk_pingpong.mjs`` runs one SDK client in a Node subprocess and prints one JSON
observation per line. Prerequisites come from the ``js_sdk`` fixture of
``tests/test_js_sdk_interop.py`` (``AIRI_JS_SDK_DIR`` or an ``npm install``): a missing tool is
a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from airi_core.client import Client
from airi_core.protocol.events import Event
from airi_core.testing import start_hub

try:
    from .test_js_sdk_interop import JsSdk, js_sdk  # noqa: F401  (the session fixture)
except ImportError:  # tests/ is not a package
    from test_js_sdk_interop import JsSdk, js_sdk  # type: ignore[no-redef]  # noqa: F401

SCRIPT = Path(__file__).parent / "interop" / "sdk_pingpong.mjs"
TOKEN = "py-js-interop-t0ken"
PY_NAME = "py-interop"
NODE_TIMEOUT_S = 40  # the script gives up by itself after 20 s

JS_HELLO = {
    "text": "héllo from JS 💛",
    "n": 42,
    "f": 0.25,
    "ok": True,
    "nothing": None,
    "list": [1, "two", {"three": 3}],
    "when": "2024-05-06T07:08:09.010Z",  # a Date on the JS side
}
PY_HELLO = {"text": "hi from Python ✨", "pi": 3.5, "flags": [True, False, None], "nested": {"deep": {"deeper": ["x"]}}}


async def run_pingpong(node: str, sdk_dir: Path, url: str, token: str | None) -> tuple[int, list[dict[str, Any]], str]:
    env = {k: v for k, v in os.environ.items() if k != "AIRI_HUB_TOKEN"}
    env["AIRI_JS_SDK_DIR"] = str(sdk_dir)
    if token:
        env["AIRI_HUB_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        node, str(SCRIPT), url, PY_NAME,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT_S)
    except asyncio.TimeoutError:
        proc.kill()  # our own child, by its handle
        await proc.wait()
        pytest.fail(f"sdk_pingpong.mjs did not exit within {NODE_TIMEOUT_S} s", pytrace=False)
    text = stdout.decode("utf-8", "replace")
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    transcript = f"exit {proc.returncode}\n--- stdout ---\n{text}\n--- stderr ---\n{stderr.decode('utf-8', 'replace')}"
    assert proc.returncode is not None
    return proc.returncode, lines, transcript


@pytest.mark.parametrize("token", [TOKEN, None], ids=["token", "no-token"])
async def test_python_client_and_js_sdk_exchange_events(js_sdk: JsSdk, token: str | None) -> None:
    node, sdk_dir = js_sdk.require()
    hub = await start_hub({"auth": {"token": token}} if token else None)
    errors: list[BaseException] = []
    py = Client(hub.url, name=PY_NAME, token=token, possible_events=["interop:py-reply", "interop:py-hello", "output:text"],
                on_error=errors.append)
    got: dict[str, Event] = {}
    sent: dict[str, str] = {}

    @py.on("interop:js-hello")
    async def on_js_hello(ev: Event) -> None:
        got["js-hello"] = ev
        sender = py.find_module(ev)  # the SDK module, from the registry listing the client keeps
        sent["js-module"] = sender.name if sender else ""
        sent["py-reply"] = await py.reply(ev, "interop:py-reply", {"received": ev.data, "meta": ev.meta, "wrapped": ev.wrapped})
        sent["py-hello"] = await py.send("interop:py-hello", PY_HELLO, destinations=[py.destination_of(ev) or ""])

    @py.on("interop:js-reply")
    def on_js_reply(ev: Event) -> None:
        got["js-reply"] = ev

    @py.on("input:text")
    async def on_text(ev: Event) -> None:
        got["input:text"] = ev
        await py.reply(ev, "output:text", {"text": ev.data["text"][::-1]})

    try:
        async with asyncio.timeout(10):
            await py.ready()
            await py.register_consumer("input:text", group="chat-ingestion")
        code, obs, t = await run_pingpong(node, sdk_dir, hub.url, token)
        assert code == 0 and obs and obs[-1] == {"step": "done", "ok": True}, t
        steps = [(o["step"], o.get("type")) for o in obs]
        assert steps == [
            ("sdk", None), ("registry", None),
            ("sent", "interop:js-hello"), ("received", "interop:py-reply"),
            ("received", "interop:py-hello"), ("sent", "interop:js-reply"),
            ("received", "output:text"), ("done", None),
        ], t
        js_sent = obs[2]
        js_identity = js_sent["identity"]

        # JS -> Python: superjson-wrapped, typed values annotated in meta, data intact
        hello = got["js-hello"]
        assert hello.wrapped is True, t
        assert hello.data == JS_HELLO, t
        assert hello.meta is not None and hello.meta.get("values") == {"data.when": ["Date"]}, hello.meta
        assert hello.id == js_sent["id"] and hello.source == js_identity
        assert hello.route == {"destinations": [f"module:{PY_NAME}"]}
        assert sent["js-module"] == "js-pingpong"

        # Python -> JS: the reply (plain JSON from us) reaches the SDK intact, parentId kept
        reply = obs[3]
        assert reply["data"] == {"received": JS_HELLO, "meta": hello.meta, "wrapped": True}, t
        assert reply["parentId"] == js_sent["id"], t
        assert reply["source"] == py.identity.wire(), t
        assert reply["route"] == {"destinations": ["module:js-pingpong"]}, t
        py_hello = obs[4]
        assert py_hello["data"] == PY_HELLO and py_hello["id"] == sent["py-hello"], t

        # JS -> Python again: the answer to our event
        js_reply = got["js-reply"]
        assert js_reply.parent_id == sent["py-hello"]
        assert js_reply.data == {"echo": PY_HELLO, "from": "js"}

        # consumer delivery: the SDK's input:text went to the Python consumer; its answer came back
        assert got["input:text"].data == {"text": "stressed"}
        assert got["input:text"].source == js_identity
        out = obs[6]
        assert out["data"] == {"text": "desserts"} and out["parentId"] == got["input:text"].id, t
        assert out["route"] == {"destinations": ["module:js-pingpong"]}, t

        assert errors == []
        assert hub.stats["errors_sent"] == 0, hub.stats
        assert py.is_ready and py.connections == 1
    finally:
        await py.close()
        await hub.shutdown()
