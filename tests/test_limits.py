"""Hardening, part 1: the ``[limits]`` section and the ``[auth] timeout_ms`` deadline, end to end on
real sockets (127.0.0.1). Every test is bounded to a few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from airi_core.testing import connect_client, start_hub, wait_until

from .hardening_helpers import (
    airi_logs_captured,
    seqs,
)

RATE_PREFIX = "rate limit exceeded"


async def _exchange(sender, receiver, n: int = 5, tag: str = "x") -> None:
    """``sender`` sends ``n`` numbered events; ``receiver`` gets all of them, in order."""
    start = receiver.mark()
    for i in range(n):
        await sender.send("test:exchange", {"tag": tag, "seq": i})
    await receiver.wait_for("test:exchange", lambda e: e["data"] == {"tag": tag, "seq": n - 1}, start=start, timeout=3)
    got = [e["data"]["seq"] for e in receiver.received[start:] if e.get("type") == "test:exchange" and e["data"].get("tag") == tag]
    assert got == list(range(n)), f"{receiver.name} got {got}"


# -- max_frame_bytes ---------------------------------------------------------------------------------
async def test_oversized_frame_closes_only_that_peer_with_1009(caplog: pytest.LogCaptureFixture) -> None:
    with airi_logs_captured(caplog):
        hub = await start_hub({"limits": {"max_frame_bytes": 2048}})
        clients = []
        try:
            a = await connect_client(hub, "a", announce=True)
            b = await connect_client(hub, "b", announce=True)
            big = await connect_client(hub, "big", announce=True)
            clients += [a, b, big]
            await _exchange(a, b, tag="before")

            # a well-formed event, 4096 bytes on the wire: twice the limit
            ev = big.event("test:big", {"pad": ""})
            ev["data"]["pad"] = "x" * (4096 - len(json.dumps(ev)))
            frame = json.dumps(ev)
            assert len(frame.encode()) == 4096
            mark_a = a.mark()
            await big.send_raw(frame)

            code, reason = await big.wait_closed(timeout=3)
            assert code == 1009, (code, reason)
            # the frame itself went nowhere
            await a.wait_for("module:de-announced", lambda e: e["data"]["name"] == "big", start=mark_a, timeout=3)
            assert not [e for e in b.received if e.get("type") == "test:big"]

            # the others keep exchanging events, both ways
            await _exchange(a, b, n=20, tag="after-ab")
            await _exchange(b, a, n=20, tag="after-ba")
            with contextlib.suppress(AssertionError):
                await wait_until(lambda: hub.stats["oversized_frames"] >= 1, 2, "stats.oversized_frames")
            logged = [r for r in caplog.records if r.name == "airi.websocket" and "max_frame_bytes" in r.getMessage()]
            closed = [r.getMessage() for r in caplog.records if r.name == "airi.websocket" and "big" in r.getMessage()]
            assert (hub.stats["oversized_frames"], len(logged)) == (1, 1), (
                f"the client saw 1009, but the hub counted oversized_frames={hub.stats['oversized_frames']} and logged "
                f"{len(logged)} max_frame_bytes line(s); its log about the peer: {closed}"
            )
            assert "2048" in logged[0].getMessage()
            assert logged[0].levelno >= logging.WARNING
        finally:
            for c in clients:
                await c.close()
            await hub.shutdown()


async def test_frame_exactly_at_the_limit_is_accepted() -> None:
    hub = await start_hub({"limits": {"max_frame_bytes": 2048}})
    clients = []
    try:
        a = await connect_client(hub, "a", announce=True)
        b = await connect_client(hub, "b", announce=True)
        clients += [a, b]
        ev = a.event("test:edge", {"pad": ""})
        ev["data"]["pad"] = "y" * (2048 - len(json.dumps(ev)))
        frame = json.dumps(ev)
        assert len(frame.encode()) == 2048
        await a.send_raw(frame)
        got = await b.next("test:edge", timeout=3)
        assert len(got["data"]["pad"]) == len(ev["data"]["pad"])
        assert a.close_code is None
        assert hub.stats["oversized_frames"] == 0
    finally:
        for c in clients:
            await c.close()
        await hub.shutdown()


# -- max_messages_per_second -------------------------------------------------------------------------
async def test_rate_limit_drops_excess_frames_with_one_error_a_second() -> None:
    rate = 20
    hub = await start_hub({"limits": {"max_messages_per_second": rate}})
    clients = []
    try:
        sender = await connect_client(hub, "sender", announce=True)
        receiver = await connect_client(hub, "receiver", announce=True)
        clients += [sender, receiver]

        # phase 1: 200 frames as fast as possible
        s0, r0 = sender.mark(), receiver.mark()
        limited0 = hub.stats["rate_limited"]
        t0 = time.monotonic()
        for i in range(200):
            await sender.send("test:burst", {"seq": i})
        burst_s = time.monotonic() - t0
        # the sender's replies come in frame order; wait until the hub has seen all 200
        await wait_until(lambda: hub.stats["rate_limited"] - limited0 + len(seqs(receiver, "test:burst", start=r0)) >= 200,
                         3, "the hub to process 200 frames")
        await receiver.fence()  # nothing more is on its way to the receiver
        delivered = seqs(receiver, "test:burst", start=r0)
        dropped = hub.stats["rate_limited"] - limited0
        assert burst_s < 1.0, f"sending 200 frames took {burst_s:.2f}s; the test needs a fast burst"
        assert delivered == sorted(delivered), "delivered events out of order"
        assert len(delivered) + dropped == 200, (len(delivered), dropped)
        # burst = one second's worth (20, two were spent on the announce and connect_client's
        # heartbeat round trip) plus what refilled meanwhile
        assert rate - 2 <= len(delivered) <= rate + rate * burst_s + 2, (len(delivered), burst_s)
        assert sender.close_code is None

        # phase 2: after a second the peer works again, without a new error
        await asyncio.sleep(1.05)
        s1, r1 = sender.mark(), receiver.mark()
        await sender.send("test:after", {"seq": 0})
        await receiver.wait_for("test:after", start=r1, timeout=3)
        # the sender's bucket has refilled, so its fence is not dropped: every reply to phase 1
        # arrived before s1 or is counted after it
        await sender.fence()
        assert sender.error_messages(s1) == []
        phase1_errors = sender.error_messages(s0)  # none came after s1
        rate_errors = [m for m in phase1_errors if m.startswith(RATE_PREFIX)]
        assert len(rate_errors) == 1, rate_errors
        assert phase1_errors == rate_errors, "only rate-limit errors expected"

        # phase 3: sustained 100 frames/s for 2 s -> about 20/s get through and at most one
        # rate-limit error per started second
        s2, r2 = sender.mark(), receiver.mark()
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() - t0 < 2.0:
            await sender.send("test:sustained", {"seq": sent})
            sent += 1
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(0.1)  # pacing: let the bucket refill (2 tokens) so the fence is not dropped
        await sender.fence()
        await receiver.fence()
        got = len(seqs(receiver, "test:sustained", start=r2))
        errs = [m for m in sender.error_messages(s2) if m.startswith(RATE_PREFIX)]
        print(f"\nrate limit: burst of 200 in {burst_s * 1000:.0f} ms -> {len(delivered)} delivered, {dropped} dropped, "
              f"{len(rate_errors)} error; sustained {sent} in {elapsed:.2f}s -> {got} delivered, {len(errs)} errors")
        assert got <= rate * (elapsed + 1) + 2, (got, elapsed)
        assert got >= rate * elapsed * 0.6, (got, elapsed)
        assert 1 <= len(errs) <= int(elapsed) + 1, (errs, elapsed)
        assert sender.close_code is None and receiver.close_code is None
    finally:
        for c in clients:
            await c.close()
        await hub.shutdown()


# -- max_connections ---------------------------------------------------------------------------------
async def test_connections_over_the_limit_are_refused_with_503() -> None:
    hub = await start_hub({"limits": {"max_connections": 3}})
    clients = []
    try:
        a = await connect_client(hub, "a", announce=True)
        b = await connect_client(hub, "b", announce=True)
        c = await connect_client(hub, "c", announce=True)
        clients += [a, b, c]

        with pytest.raises(InvalidStatus) as info:
            async with asyncio.timeout(3):
                ws = await connect(hub.url, open_timeout=2)
                await ws.close()  # pragma: no cover - only reached when the hub is wrong
        assert info.value.response.status_code == 503
        assert hub.stats["refused_connections"] == 1
        assert len(hub.registry) == 3

        # the first three are untouched
        for sender in (a, b, c):
            others = [x for x in (a, b, c) if x is not sender]
            for r in others:
                await _exchange(sender, r, n=3, tag=f"{sender.name}->{r.name}")
        assert all(x.close_code is None for x in (a, b, c))

        # a slot frees up when one leaves
        await c.close()
        clients.remove(c)
        await wait_until(lambda: len(hub.registry) == 2, 3, "the hub to forget c")
        d = await connect_client(hub, "d", announce=True)
        clients.append(d)
        await _exchange(a, d, n=3, tag="a->d")
    finally:
        for x in clients:
            await x.close()
        await hub.shutdown()


# -- [auth] timeout_ms ---------------------------------------------------------------------------------
async def test_unauthenticated_peer_is_closed_at_the_auth_deadline() -> None:
    token = "deadline-token-123"
    hub = await start_hub({"auth": {"token": token, "timeout_ms": 200}})
    clients = []
    try:
        t0 = time.monotonic()
        idle = await connect_client(hub, "idle")
        chatty = await connect_client(hub, "chatty")  # sends frames but never authenticates
        good = await connect_client(hub, "good", token=token)
        clients += [idle, chatty, good]
        await good.announce()

        async def chatter() -> None:
            for _ in range(40):
                if chatty.close_code is not None:
                    return
                try:
                    await chatty.send_raw("ping")
                except ConnectionClosed:
                    return
                await asyncio.sleep(0.02)

        chat = asyncio.get_running_loop().create_task(chatter())
        code, reason = await idle.wait_closed(timeout=2)
        closed_after = time.monotonic() - t0
        assert (code, reason) == (1008, "authentication timeout")
        assert closed_after >= 0.15, f"closed after {closed_after:.3f}s, before the 200 ms deadline"
        code, reason = await chatty.wait_closed(timeout=2)
        assert (code, reason) == (1008, "authentication timeout"), "liveness must not extend the auth deadline"
        await asyncio.wait_for(chat, 3)
        assert not idle.received, "nothing is sent to an unauthenticated peer before it authenticates"

        # the authenticated one is kept well past the deadline and still works
        await asyncio.sleep(0.5)
        assert good.close_code is None
        await good.fence()
        assert hub.stats["auth_timeouts"] == 2
        assert len(hub.registry) == 1

        # a late peer that authenticates in time is kept too
        late = await connect_client(hub, "late")
        clients.append(late)
        await asyncio.sleep(0.05)
        reply = await late.authenticate(token)
        assert reply["type"] == "module:authenticated"
        await asyncio.sleep(0.4)
        assert late.close_code is None
        await late.fence()
        print(f"\nauth deadline: idle peer closed {closed_after * 1000:.0f} ms after connect (timeout 200 ms)")
    finally:
        for c in clients:
            await c.close()
        await hub.shutdown()
