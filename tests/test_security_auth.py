"""Issue 9, items 7 and 8: authentication throttling per remote address, and per-client
credentials and permissions (``[[auth.clients]]``), over real sockets.

Time never passes by sleeping: the throttle's clock is replaced by one the test moves. Silence is
proven with heartbeat fences (``expect_silence(after=[sender])``). A second remote address on
loopback is ``127.0.0.2`` (the client binds its socket there; the hub listens on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from airi_core import errors
from airi_core.testing import HubClient, connect_client

from ._hubproc import HubProcess, run_cli, write_config
from .hardening_helpers import TRACE_LEVEL, airi_logs_captured
from .protocol_helpers import consumer_register, expect_error, identity, leave, probe, probe_one

SHARED = "shared-Tok-9c1e-4a77"
BOT = "bot-Tok-51f0-aa90"
DEV = "dev-Tok-77d2-0b3c"
FREE = "free-Tok-3e8a-11f4"

TOO_MANY = "too many failed attempts"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def auth_plugin(hub: Any) -> Any:
    return hub.plugins.pm.get_plugin("auth")


def fake_clock(hub: Any) -> Clock:
    clock = Clock()
    auth_plugin(hub).throttle.clock = clock
    return clock


async def connect_from(hub: Any, name: str, host: str = "127.0.0.1") -> HubClient:
    """A :class:`HubClient` whose socket comes from ``host`` (any 127.x address is local)."""
    ws = await connect(hub.url, max_size=None, compression=None, local_addr=(host, 0))
    client = HubClient(ws, name)
    await client.fence()
    return client


@contextlib.asynccontextmanager
async def clients_closed(*clients: HubClient):  # type: ignore[no-untyped-def]
    try:
        yield
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()


async def guess(client: HubClient, token: str) -> str:
    """One ``module:authenticate``; returns the answer's type, or the error message."""
    reply = await client.request("module:authenticate", {"token": token})
    if reply["type"] == "error":
        return reply["data"]["message"]
    return reply["type"]


async def refused_and_closed(client: HubClient, token: str) -> None:
    """The attempt is answered ``too many failed attempts`` (parentId = its id) and the
    connection closed 1008 with that reason."""
    start = client.mark()
    ev = await client.send("module:authenticate", {"token": token})
    await expect_error(client, TOO_MANY, start=start, parent=ev["metadata"]["event"]["id"])
    assert await client.wait_closed() == (1008, TOO_MANY)


# =============================================================================================
# item 7: throttling per remote address
# =============================================================================================

THROTTLE = {"token": SHARED, "max_failures": 3, "failure_window_ms": 60_000, "lockout_ms": 30_000}


async def test_failures_lock_the_address_then_attempts_are_refused_and_closed(airi_hub_factory):
    hub = await airi_hub_factory({"auth": THROTTLE})
    fake_clock(hub)
    a = await connect_client(hub, "guesser")
    async with clients_closed(a):
        for i in range(3):  # the allowed failures are answered as before and keep the socket open
            assert await guess(a, f"guess-{i}") == errors.INVALID_TOKEN
        assert a.close_code is None
        # the next attempt is refused unchecked, even with the right token
        await refused_and_closed(a, SHARED)
    assert hub.stats["auth_failures"] == 3 and hub.stats["auth_lockouts"] == 1 and hub.stats["auth_refused"] == 1


async def test_a_locked_address_is_refused_on_new_connections_but_others_are_not(airi_hub_factory):
    hub = await airi_hub_factory({"auth": THROTTLE})
    fake_clock(hub)
    member = await connect_client(hub, "member", token=SHARED, announce=True)  # before the lockout
    a = await connect_client(hub, "guesser")
    b = await connect_client(hub, "second")
    other = await connect_from(hub, "other-address", "127.0.0.2")
    async with clients_closed(member, a, b, other):
        for i in range(3):
            assert await guess(a, f"guess-{i}") == errors.INVALID_TOKEN
        # another connection from the same address, even with the right token
        await refused_and_closed(b, SHARED)
        c = await connect_client(hub, "third")
        async with clients_closed(c):
            await refused_and_closed(c, SHARED)
        # another address is not affected, and neither is a peer authenticated before
        assert await guess(other, SHARED) == "module:authenticated"
        start = member.mark()
        await other.send("test:still-routed", {})
        await member.wait_for("test:still-routed", start=start)
        assert member.close_code is None


async def test_the_lockout_expires(airi_hub_factory):
    hub = await airi_hub_factory({"auth": THROTTLE})
    clock = fake_clock(hub)
    a = await connect_client(hub, "guesser")
    async with clients_closed(a):
        for i in range(3):
            assert await guess(a, f"guess-{i}") == errors.INVALID_TOKEN
        clock.advance(29.9)
        b = await connect_client(hub, "too-early")
        async with clients_closed(b):
            await refused_and_closed(b, SHARED)
        clock.advance(0.2)  # 30.1 s after the lockout: the address may try again
        c = await connect_client(hub, "later")
        async with clients_closed(c):
            assert await guess(c, SHARED) == "module:authenticated"


async def test_failures_count_within_a_window_only(airi_hub_factory):
    hub = await airi_hub_factory({"auth": THROTTLE})
    clock = fake_clock(hub)
    a = await connect_client(hub, "guesser")
    async with clients_closed(a):
        for i in range(2):
            assert await guess(a, f"guess-{i}") == errors.INVALID_TOKEN
        clock.advance(60.0)  # a new window: the two failures are forgotten
        for i in range(2):
            assert await guess(a, f"again-{i}") == errors.INVALID_TOKEN
        assert a.close_code is None and hub.stats["auth_lockouts"] == 0
        assert await guess(a, "the-third-of-this-window") == errors.INVALID_TOKEN
        await refused_and_closed(a, "one-more")


async def test_a_success_does_not_reset_the_count(airi_hub_factory):
    # else a holder of one valid token could interleave it with unlimited guesses at the others
    hub = await airi_hub_factory({"auth": THROTTLE})
    fake_clock(hub)
    a = await connect_client(hub, "guesser")
    async with clients_closed(a):
        for i in range(2):
            assert await guess(a, f"guess-{i}") == errors.INVALID_TOKEN
        ok = await connect_client(hub, "holder", token=SHARED)
        await ok.close()
        assert await guess(a, "guess-2") == errors.INVALID_TOKEN
        await refused_and_closed(a, SHARED)


async def test_max_failures_zero_turns_throttling_off(airi_hub_factory):
    hub = await airi_hub_factory({"auth": {**THROTTLE, "max_failures": 0}})
    a = await connect_client(hub, "guesser")
    async with clients_closed(a):
        start = a.mark()
        for i in range(30):
            await a.send("module:authenticate", {"token": f"guess-{i}"})
        await a.fence()
        assert a.error_messages(start) == [errors.INVALID_TOKEN] * 30
        assert await guess(a, SHARED) == "module:authenticated"


def _auth_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The hub's records at INFO and above that are about authentication."""
    return [
        r.getMessage() for r in caplog.records
        if r.name.startswith("airi") and r.levelno >= logging.INFO
        and ("authentication failed" in r.getMessage() or TOO_MANY in r.getMessage())
        and not r.getMessage().startswith("dropping")  # the close of a refused connection
    ]


async def test_failures_are_logged_once_per_window_not_once_per_guess(airi_hub_factory, caplog):
    with airi_logs_captured(caplog, logging.DEBUG):
        hub = await airi_hub_factory({"auth": {**THROTTLE, "max_failures": 0}})  # no lockout: guess on
        clock = fake_clock(hub)
        a = await connect_client(hub, "guesser")
        async with clients_closed(a):
            for i in range(50):
                await a.send("module:authenticate", {"token": f"guess-{i}"})
            await a.fence()
            lines = _auth_log(caplog)
            assert len(lines) == 1, lines
            assert "127.0.0.1" in lines[0] and "authentication failed" in lines[0]
            clock.advance(60.0)  # the next window gets one line again
            for i in range(50):
                await a.send("module:authenticate", {"token": f"again-{i}"})
            await a.fence()
            assert len(_auth_log(caplog)) == 2, _auth_log(caplog)
    assert hub.stats["auth_failures"] == 100


async def test_a_lockout_is_logged_once_and_refusals_not_at_all(airi_hub_factory, caplog):
    with airi_logs_captured(caplog, logging.DEBUG):
        hub = await airi_hub_factory({"auth": THROTTLE})
        fake_clock(hub)
        a = await connect_client(hub, "guesser")
        async with clients_closed(a):
            for i in range(3):
                assert await guess(a, f"guess-{i}") == errors.INVALID_TOKEN
            await refused_and_closed(a, "guess-3")
        for i in range(5):
            c = await connect_client(hub, f"again-{i}")
            async with clients_closed(c):
                await refused_and_closed(c, f"again-{i}")
        lines = _auth_log(caplog)
        assert len(lines) == 2, lines
        assert "authentication failed" in lines[0]
        assert lines[1].startswith(f"{TOO_MANY} from 127.0.0.1"), lines
    assert hub.stats["auth_refused"] == 6


def test_addresses_are_counted_by_ipv4_address_and_ipv6_64_network() -> None:
    from airi_plugins.auth import address_key

    assert address_key("127.0.0.1:5000") == "127.0.0.1"
    assert address_key("10.1.2.3:1") == address_key("10.1.2.3:2")
    assert address_key("::1:5000") == "::/64"
    assert address_key("2001:db8:1:2:aaaa::1:443") == address_key("2001:db8:1:2:ffff::9:80") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1:443") != address_key("2001:db8:1:2::1:443")
    assert address_key("::ffff:192.0.2.7:5000") == "192.0.2.7"
    assert address_key("fe80::1%eth0:5000") == "fe80::/64"
    assert address_key("") == ""


def test_the_throttle_table_is_bounded_and_expires() -> None:
    from airi_plugins.auth import FailureThrottle

    clock = Clock()
    t = FailureThrottle(max_failures=2, window_s=10, lockout_s=20, capacity=100)
    t.clock = clock
    for i in range(1000):  # many addresses: never more than the capacity
        t.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(t) == 100
    t.failed("10.9.9.9")
    assert t.failed("10.9.9.9") == (False, True) and t.locked("10.9.9.9")
    clock.advance(10)  # every window is over; the lockout is not: only that entry stays
    t.failed("10.8.8.8")
    assert len(t) == 2 and t.locked("10.9.9.9")
    clock.advance(10)
    assert not t.locked("10.9.9.9")
    t.failed("10.8.8.9")
    assert len(t) == 1
    # a window ends for an address even when an older entry (a long lockout) is still remembered
    t = FailureThrottle(max_failures=3, window_s=10, lockout_s=100, capacity=100)
    t.clock = clock
    for _ in range(3):
        t.failed("10.1.1.1")
    assert t.locked("10.1.1.1")
    assert t.failed("10.2.2.2") == (True, False)
    assert t.failed("10.2.2.2") == (False, False)
    clock.advance(10)
    assert t.failed("10.2.2.2") == (True, False)  # a new window: 1 failure, not 3
    assert t.failed("10.2.2.2") == (False, False) and not t.locked("10.2.2.2")


# =============================================================================================
# item 8: per-client credentials and permissions
# =============================================================================================

CLIENTS = [
    {
        "name": "discord-bot",
        "token": BOT,
        "modules": ["discord*"],
        "send": ["input:*", "output:*", "module:consumer:*"],
        "receive": ["output:*", "input:text"],
        "bypass": False,
    },
    {"name": "panel", "token": DEV, "modules": ["*devtools*"], "bypass": False},
    {"name": "free", "token": FREE},  # every default: anything
]


@pytest.fixture
async def perm_hub(airi_hub_factory):  # type: ignore[no-untyped-def]
    return await airi_hub_factory({"auth": {"token": SHARED, "clients": CLIENTS}})


def denied(what: str) -> str:
    return f"permission denied: {what}"


async def send_expect_denied(client: HubClient, type: str, data: Any, message: str, **kw: Any) -> None:
    start = client.mark()
    ev = await client.send(type, data, **kw)
    await expect_error(client, message, start=start, parent=ev["metadata"]["event"]["id"])


async def test_client_tokens_authenticate_beside_the_shared_one(perm_hub, airi_connect):
    for token in (SHARED, BOT, DEV, FREE):
        c = await airi_connect(perm_hub, "c")
        assert await guess(c, token) == "module:authenticated"
    c = await airi_connect(perm_hub, "c")
    assert await guess(c, "bot-Tok-51f0-aa9") == errors.INVALID_TOKEN


async def test_clients_alone_turn_authentication_on(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"auth": {"clients": [{"name": "only", "token": FREE}]}})
    c = await airi_connect(hub, "c")
    await c.expect_silence(start=0)  # not accepted at connect
    assert await guess(c, "") == errors.INVALID_TOKEN
    assert await guess(c, FREE) == "module:authenticated"


async def test_announce_is_limited_to_the_module_globs(perm_hub, airi_connect):
    observer = await airi_connect(perm_hub, "observer", token=SHARED, announce=True)
    bot = await airi_connect(perm_hub, "bot", token=BOT)
    o_start = observer.mark()
    bot.identity = identity("telegram")
    await send_expect_denied(bot, "module:announce", {"name": "telegram", "identity": bot.identity}, denied("may not announce module 'telegram'"))
    await observer.expect_silence("module:announced", after=[bot], start=o_start)
    assert perm_hub.registry.find_module("telegram") is None
    await bot.announce("discord-bot", identity=identity("discord-bot"))  # matches discord*
    await observer.wait_for("module:announced", start=o_start)


async def test_send_is_limited_to_the_send_globs(perm_hub, airi_connect):
    observer = await airi_connect(perm_hub, "observer", token=SHARED, announce=True)
    bot = await airi_connect(perm_hub, "discord-bot", token=BOT, announce=True)
    start, b_start = observer.mark(), bot.mark()
    await send_expect_denied(bot, "spark:command", {"x": 1}, denied("may not send 'spark:command'"))
    await send_expect_denied(bot, "spark:command", {"x": 1}, denied("may not send 'spark:command'"), route={"destinations": ["module:observer"]})
    await observer.expect_silence("spark:command", after=[bot], start=start)
    # an allowed type is routed as usual, without an error
    assert await probe_one(bot, [observer], type="output:text") == {"observer"}
    assert bot.error_messages(b_start) == [denied("may not send 'spark:command'")] * 2
    # control events are covered too: consumer registration allowed, ui:configure not
    await consumer_register(bot, "input:text", group="chat-ingestion")
    await send_expect_denied(bot, "ui:configure", {"moduleName": "observer", "config": {}}, denied("may not send 'ui:configure'"))
    await observer.expect_silence("module:configure", after=[bot], start=start)


async def test_receive_is_limited_to_the_receive_globs_whatever_the_route(perm_hub, airi_connect):
    sender = await airi_connect(perm_hub, "sender", token=SHARED, announce=True)
    other = await airi_connect(perm_hub, "other", token=SHARED, announce=True)
    bot = await airi_connect(perm_hub, "discord-bot", token=BOT, announce=True)
    results = await probe(
        sender,
        [other, bot],
        [
            {"type": "output:text"},
            {"type": "spark:notify"},
            {"type": "spark:notify", "route": {"destinations": ["module:discord-bot"]}},
            {"type": "spark:notify", "route": {"destinations": ["module:discord-bot", "module:other"]}},
            {"type": "output:voice", "route": {"destinations": ["module:discord-bot"]}},
        ],
    )
    assert results == [{"other", "discord-bot"}, {"other"}, set(), {"other"}, {"discord-bot"}]
    assert sender.error_messages() == []


async def test_consumer_delivery_respects_receive(perm_hub, airi_connect):
    sender = await airi_connect(perm_hub, "sender", token=SHARED, announce=True)
    worker = await airi_connect(perm_hub, "worker", token=SHARED, announce=True)
    bot = await airi_connect(perm_hub, "discord-bot", token=BOT, announce=True)
    # the bot outranks the worker, but may not receive input:voice; it may receive input:text
    await consumer_register(bot, "input:voice", group="chat-ingestion", priority=10)
    await consumer_register(worker, "input:voice", group="chat-ingestion", priority=1)
    await consumer_register(bot, "input:text", group="chat-ingestion", priority=10)
    await consumer_register(worker, "input:text", group="chat-ingestion", priority=1)
    assert await probe_one(sender, [worker, bot], type="input:voice") == {"worker"}
    assert await probe_one(sender, [worker, bot], type="input:text") == {"discord-bot"}
    await leave(worker, sender)  # its registrations are gone
    start = sender.mark()
    got = await probe_one(sender, [bot], type="input:voice", route={"delivery": {"required": True}})
    assert got == set()
    await expect_error(sender, errors.NO_CONSUMER_REGISTERED, start=start)


async def test_bypass_false_refuses_the_devtools_bypass(perm_hub, airi_connect):
    observer = await airi_connect(perm_hub, "observer", token=SHARED, announce=True)
    panel = await airi_connect(perm_hub, "proj-airi-devtools-panel", token=DEV, announce=True)
    start = observer.mark()
    await send_expect_denied(panel, "spark:x", {}, denied("may not use the devtools bypass"), route={"bypass": True, "destinations": ["module:nobody"]})
    await observer.expect_silence("spark:x", after=[panel], start=start)
    # without route.bypass it routes as anyone does
    assert await probe_one(panel, [observer], type="spark:x") == {"observer"}
    assert await probe_one(panel, [observer], type="spark:x", route={"destinations": ["module:nobody"]}) == set()
    # a devtools label does not help either
    labelled = await airi_connect(perm_hub, "discord-devtools", token=BOT, announce=True,
                                  identity=identity("discord-devtools", labels={"devtools": "true"}))
    await send_expect_denied(labelled, "output:x", {}, denied("may not use the devtools bypass"), route={"bypass": True})
    await observer.expect_silence("output:x", after=[labelled], start=start)


async def test_the_bypass_skips_routing_but_not_what_a_receiver_may_receive(perm_hub, airi_connect):
    dev = await airi_connect(perm_hub, "devtools", token=SHARED, announce=True)
    other = await airi_connect(perm_hub, "other", token=SHARED, announce=True)
    bot = await airi_connect(perm_hub, "discord-bot", token=BOT, announce=True)
    free_dev = await airi_connect(perm_hub, "free-devtools", token=FREE, announce=True)  # bypass defaults to true
    nowhere = {"bypass": True, "destinations": ["module:nobody"]}
    results = await probe(dev, [other, bot, free_dev], [
        {"type": "spark:x", "route": nowhere},
        {"type": "output:x", "route": nowhere},
    ])
    assert results == [{"other", "free-devtools"}, {"other", "discord-bot", "free-devtools"}]
    assert await probe_one(free_dev, [dev, other, bot], type="output:y", route=nowhere) == {"devtools", "other", "discord-bot"}
    assert dev.error_messages() == [] and free_dev.error_messages() == []


async def test_the_shared_token_stays_unrestricted(perm_hub, airi_connect):
    admin = await airi_connect(perm_hub, "telegram-devtools", token=SHARED, announce=True)
    free = await airi_connect(perm_hub, "anything", token=FREE, announce=True)
    bot = await airi_connect(perm_hub, "discord-bot", token=BOT, announce=True)
    results = await probe(admin, [free], [
        {"type": "spark:command"},
        {"type": "spark:command", "route": {"bypass": True, "destinations": ["module:nobody"]}},
    ])
    assert results == [{"anything"}, {"anything"}]
    assert await probe_one(bot, [admin, free], type="input:x") == {"telegram-devtools", "anything"}
    start, f_start = admin.mark(), free.mark()
    await admin.send("ui:configure", {"moduleName": "anything", "config": {"a": 1}})
    await free.wait_for("module:configure", start=f_start)
    await admin.fence()
    assert admin.error_messages(start) == []


async def test_a_peer_keeps_the_credential_it_authenticated_with(perm_hub, airi_connect):
    observer = await airi_connect(perm_hub, "observer", token=SHARED, announce=True)
    bot = await airi_connect(perm_hub, "discord-bot", token=BOT, announce=True)
    assert await guess(bot, SHARED) == denied("already authenticated as another client")
    assert await guess(bot, BOT) == "module:authenticated"  # the same credential again: fine
    start = observer.mark()
    await send_expect_denied(bot, "spark:command", {}, denied("may not send 'spark:command'"))
    await observer.expect_silence("spark:command", after=[bot], start=start)


async def test_permission_checks_cost_nothing_without_clients(airi_hub_factory):
    plain = await airi_hub_factory({"auth": {"token": SHARED}})
    assert "auth.permissions" not in [n for n, _ in plain.plugins.pm.list_name_plugin()]
    with_clients = await airi_hub_factory({"auth": {"token": SHARED, "clients": CLIENTS}})
    assert with_clients.plugins.route_wrappers() == ["auth.permissions"]


async def test_client_tokens_never_reach_logs_or_answers(airi_hub_factory, caplog):
    secrets = (SHARED, BOT, DEV, FREE)
    with airi_logs_captured(caplog, TRACE_LEVEL):
        hub = await airi_hub_factory({"auth": {"token": SHARED, "clients": CLIENTS, "max_failures": 0}})
        clients = []
        for token in secrets:
            c = await connect_client(hub, "c")
            clients.append(c)
            for wrong in (token[:-1], token + "x", token.upper()):
                assert await guess(c, wrong) == errors.INVALID_TOKEN
            assert await guess(c, token) == "module:authenticated"
        bot = clients[1]
        await bot.announce("discord-bot", identity=identity("discord-bot"))
        await send_expect_denied(bot, "spark:x", {"token": BOT}, denied("may not send 'spark:x'"))
        assert await guess(bot, SHARED) == denied("already authenticated as another client")
        for c in clients:
            await c.close()
    texts = [r.getMessage() + repr(r.args) + repr(vars(r)) for r in caplog.records if r.name.startswith("airi")]
    assert any("authentication failed" in t for t in texts)
    assert [s for s in secrets if any(s in t for t in texts)] == []
    for c in clients:
        assert [s for s in secrets if any(s in (m or "") for m in c.error_messages())] == []


# -- configuration -----------------------------------------------------------------------------------
CLIENTS_TOML = f"""
[auth]
token = "{SHARED}"

[[auth.clients]]
name = "discord-bot"
token = "{BOT}"
modules = ["discord*"]
send = ["input:*", "output:*"]
receive = ["output:*"]
bypass = false

[[auth.clients]]
name = "panel"
token = "{DEV}"
"""


def test_config_check_masks_client_tokens(tmp_path: Path) -> None:
    r = run_cli(["config", "check", str(write_config(tmp_path, CLIENTS_TOML))])
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    for secret in (SHARED, BOT, DEV):
        assert secret not in out
    shown = json.loads(r.stdout[r.stdout.index("{"):])["auth"]
    assert shown["token"] == "**********"
    assert [c["token"] for c in shown["clients"]] == ["**********", "**********"]
    assert shown["clients"][0] == {
        "name": "discord-bot", "token": "**********", "modules": ["discord*"], "send": ["input:*", "output:*"],
        "receive": ["output:*"], "bypass": False,
    }
    assert shown["clients"][1]["modules"] == ["*"] and shown["clients"][1]["bypass"] is True
    assert (shown["max_failures"], shown["failure_window_ms"], shown["lockout_ms"]) == (30, 60000, 60000)


BAD_CLIENTS = [
    ("same-token-twice", f'[[auth.clients]]\nname = "a"\ntoken = "{BOT}"\n[[auth.clients]]\nname = "b"\ntoken = "{BOT}"\n',
     "client 'b' has the same token as client 'a'"),
    ("same-as-shared", f'[auth]\ntoken = "{BOT}"\n[[auth.clients]]\nname = "a"\ntoken = "{BOT}"\n',
     "client 'a' has the same token as the shared token"),
    ("same-name", f'[[auth.clients]]\nname = "a"\ntoken = "{BOT}"\n[[auth.clients]]\nname = "a"\ntoken = "{DEV}"\n',
     "two clients are named 'a'"),
    ("empty-token", '[[auth.clients]]\nname = "a"\ntoken = ""\n', "auth.clients.0.token: must not be empty"),
    ("token-not-a-string", f'[[auth.clients]]\nname = "a"\ntoken = ["{BOT}"]\n', "auth.clients.0.token"),
    ("unknown-key", f'[[auth.clients]]\nname = "a"\ntoken = "{BOT}"\ntokn = "{DEV}"\n', "auth.clients.0.tokn: unknown key"),
    ("no-name", f'[[auth.clients]]\ntoken = "{BOT}"\n', "auth.clients.0.name"),
    ("modules-not-a-list", f'[[auth.clients]]\nname = "a"\ntoken = "{BOT}"\nmodules = "discord*"\n', "auth.clients.0.modules"),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in BAD_CLIENTS], ids=[c[0] for c in BAD_CLIENTS])
def test_bad_clients_are_config_errors_that_never_show_a_token(tmp_path: Path, text: str, expected: str) -> None:
    r = run_cli(["config", "check", str(write_config(tmp_path, text))])
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert expected in out, out
    assert BOT not in out and DEV not in out, out


def test_serve_summary_counts_the_clients(tmp_path: Path) -> None:
    with HubProcess.serve_text(CLIENTS_TOML, tmp_path) as hub:
        hub.wait_for_stderr(r"auth\s+on \(token, 2 clients\)")
        hub.wait_for_stderr(r"route wrap\s+auth\.permissions")
        for secret in (SHARED, BOT, DEV):
            assert secret not in hub.output()


async def test_bench_attack_auth_smoke() -> None:
    """bench/attack_auth.py runs (tiny, against this tree) and shows the lockout."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "bench" / "attack_auth.py"
    r = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(script), "--seconds", "0.5"], capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("hub     one connection"))
    assert row.split()[4] == "30" and "1008 too many failed attempts" in row, r.stdout  # the default max_failures
