"""Hardening, part 3: TLS (``[server.tls]``) and the handling of the authentication token.

See also test_limits.py ([limits], auth deadline) and test_faults.py (malformed input, TCP
resets, SIGTERM). Real sockets on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from airi_core import errors
from airi_core.testing import HubClient, connect_client, start_hub

from ._hubproc import HubProcess, free_port
from .hardening_helpers import (
    TRACE_LEVEL,
    airi_logs_captured,
)

OPENSSL = "/usr/bin/openssl"


# -- TLS ---------------------------------------------------------------------------------------------
@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


async def _tls_client(url: str, ctx: ssl.SSLContext, name: str) -> HubClient:
    ws = await connect(url, ssl=ctx, max_size=None, compression=None, open_timeout=5)
    return HubClient(ws, name)


async def test_tls_hub_serves_wss_and_refuses_plain_ws(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    token = "tls-" + secrets.token_hex(8)
    hub = await start_hub({"server": {"tls": {"cert": str(cert), "key": str(key)}}, "auth": {"token": token}})
    clients: list[HubClient] = []
    try:
        assert hub.url.startswith("wss://127.0.0.1:"), hub.url
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))

        a = await _tls_client(hub.url, ctx, "tls-a")
        b = await _tls_client(hub.url, ctx, "tls-b")
        clients += [a, b]
        assert a.ws.transport.get_extra_info("ssl_object") is not None, "not a TLS connection"
        assert a.ws.transport.get_extra_info("peercert")["subjectAltName"] == (("IP Address", "127.0.0.1"),)
        for c in (a, b):
            assert (await c.authenticate(token))["type"] == "module:authenticated"
            await c.announce()
        mark = b.mark()
        await a.send("test:tls", {"hello": "over tls"})
        got = await b.wait_for("test:tls", start=mark, timeout=3)
        assert got["data"] == {"hello": "over tls"}
        await a.fence()

        # a plain ws:// client to the same port fails (bounded), and so does one that does not
        # trust the certificate
        plain_url = "ws://" + hub.url.removeprefix("wss://")
        with pytest.raises(Exception) as plain:
            async with asyncio.timeout(5):
                ws = await connect(plain_url, open_timeout=3)
                await ws.close()  # pragma: no cover - only when the hub is wrong
        assert not isinstance(plain.value, AssertionError)
        with pytest.raises(ssl.SSLCertVerificationError):
            async with asyncio.timeout(5):
                ws = await connect(hub.url, ssl=ssl.create_default_context(), open_timeout=3)
                await ws.close()  # pragma: no cover
        # ... and the hub still serves its TLS peers
        mark = a.mark()
        await b.send("test:tls", {"hello": "still here"})
        await a.wait_for("test:tls", start=mark, timeout=3)
        assert len(hub.registry) == 2
        print(f"\nTLS: plain ws:// refused with {type(plain.value).__name__}: {plain.value}")
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()
        await hub.shutdown()


# -- the token never leaks -------------------------------------------------------------------------
def _record_texts(record: logging.LogRecord) -> list[str]:
    texts = [record.getMessage(), str(record.msg), repr(record.args)]
    if record.exc_text:
        texts.append(record.exc_text)
    for key, value in vars(record).items():
        if key not in ("msg", "args", "message"):
            texts.append(f"{key}={value!r}")
    return texts


async def _auth_attempts(url: str, token: str) -> list[HubClient]:
    """Wrong tokens of every kind, malformed frames carrying the token, then the right token."""
    c = await connect_client(url, "wrong-then-right")
    wrong: list[Any] = [token[:-1], token + "x", token.upper(), " " + token, token + "\n", token[::-1],
                        "", None, 0, [token], {"token": token}]
    for t in wrong:
        reply = await c.request("module:authenticate", {"token": t})
        assert reply["type"] == "error" and reply["data"]["message"] == errors.INVALID_TOKEN, reply
    # frames that carry the token but are not a valid authentication
    start = c.mark()
    await c.send_raw('{"type":"module:authenticate","data":{"token":"%s"' % token)  # truncated JSON
    await c.send_raw(json.dumps({"type": 5, "data": {"token": token}}))
    await c.send_raw(json.dumps({"type": "module:authenticate", "data": [token]}))
    await c.send_raw(token.encode() + b"\xff\xfe")  # not UTF-8
    await c.send_raw(token)  # bare text
    await c.send("test:routed", {"token": token})  # not authenticated yet
    await c.send("module:announce", {"name": "n", "identity": {"kind": "plugin", "plugin": {"id": "p"}}, "token": token})
    await c.fence()
    assert len(c.error_messages(start)) == 7, c.error_messages(start)
    assert (await c.authenticate(token))["type"] == "module:authenticated"
    await c.announce()

    d = await connect_client(url, "right-at-once", token=token, announce=True)
    mark = d.mark()
    await c.send("test:after-auth", {"ok": True})
    await d.wait_for("test:after-auth", start=mark, timeout=3)
    return [c, d]


async def test_token_never_appears_in_logs_or_error_events(caplog: pytest.LogCaptureFixture) -> None:
    token = "tok-" + secrets.token_urlsafe(24)
    with airi_logs_captured(caplog, TRACE_LEVEL):
        # max_failures = 0: the many wrong tokens below are not throttled
        hub = await start_hub({"auth": {"token": token, "timeout_ms": 0, "max_failures": 0}})
        clients: list[HubClient] = []
        try:
            clients += await _auth_attempts(hub.url, token)
        finally:
            for c in clients:
                with contextlib.suppress(Exception):
                    await c.close()
            await hub.shutdown()

    records = [r for r in caplog.records if r.name == "airi" or r.name.startswith("airi.")]
    messages = [r.getMessage() for r in records]
    # the capture saw the interesting records (else this test would prove nothing)
    assert any("authentication failed" in m for m in messages), messages
    assert any(m.startswith("authenticated") for m in messages), messages
    assert any(r.levelno <= logging.DEBUG for r in records), "no debug records captured"
    leaks = [t for r in records for t in _record_texts(r) if token in t]
    assert not leaks, leaks
    assert token not in caplog.text
    # nothing the hub sent ever carried the token (errors included)
    for c in clients:
        sent_back = [f for f in c.raw if token in (f if isinstance(f, str) else f.decode("utf-8", "replace"))]
        assert not sent_back, sent_back
        assert not [m for m in c.error_messages() if token in m]


async def test_token_never_appears_in_subprocess_output_at_trace_level(tmp_path: Path) -> None:
    token = "env-" + secrets.token_urlsafe(24)
    port = free_port()
    clients: list[HubClient] = []
    # the token comes from the environment; the file only turns throttling off (many wrong tokens)
    (tmp_path / "airi.toml").write_text("[auth]\nmax_failures = 0\n", encoding="utf-8")
    for fmt in ("json", "pretty"):
        hub = HubProcess(
            ["serve", "--port", str(port), "--log-level", "trace", "--log-format", fmt],
            env={"AUTHENTICATION_TOKEN": token},
            cwd=tmp_path,  # its airi.toml + environment
        )
        try:
            await hub.await_stderr("listening on", timeout=20)
            clients = await _auth_attempts(f"ws://127.0.0.1:{port}/ws", token)
            for c in clients:
                await c.close()
            clients = []
            hub.proc.send_signal(signal.SIGTERM)
            rc = await hub.await_exit(10)
            assert rc == 0, hub.stderr
            output = hub.stdout + "\n" + hub.stderr
            assert "authentication failed" in output, output  # the log did record the attempts
            assert "auth        on (token)" in output or "on (token)" in output
            assert token not in output, [line for line in output.splitlines() if token in line]
        finally:
            for c in clients:
                with contextlib.suppress(Exception):
                    await c.close()
            await asyncio.to_thread(hub.stop)
