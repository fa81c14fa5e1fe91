"""Issue 12 item 3: SIGHUP reloads airi.toml (and the environment) without dropping a connection.

A real ``airi serve`` subprocess, real sockets; every wait bounded, the process stopped by PID."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from airi_core import hookimpl
from airi_core.server.config import ConfigError, Settings
from airi_core.server.reload import reload_hub
from airi_core.testing import connect_client, start_hub

from ._hubproc import HubProcess, write_config


async def test_sighup_new_token_and_policy_live_old_connections_kept(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[auth]\ntoken = "old-token"\n')
    with HubProcess.serve(path) as hub:
        await hub.await_listening()
        a = await connect_client(hub.url, "a", token="old-token", announce=True)
        b = await connect_client(hub.url, "b", token="old-token", announce=True)
        try:
            write_config(tmp_path, '[auth]\ntoken = "new-token"\n\n[routing.policy]\ndeny_plugins = ["b"]\n\n'
                                   '[server]\npath = "/elsewhere"\n\n[heartbeat]\nmessage = "reloaded"\n')
            hub.send_signal(signal.SIGHUP)
            await hub.await_stderr(r"reloaded: .*auth", timeout=10)
            assert hub.proc.poll() is None
            # what cannot change live is reported, and the running value kept
            await hub.await_stderr(r"server\.path changed but needs a restart", timeout=5)
            # the new token gets in (on the old path), the old one no longer does
            c = await connect_client(hub.url, "c", token="new-token", announce=True)
            d = await connect_client(hub.url, "d")
            assert (await d.authenticate("old-token"))["data"]["message"] == "invalid token"
            # the open connections were kept: a still routes; the new policy holds for b at once
            start_b, start_c = b.mark(), c.mark()
            await a.send("test:after-reload", {"n": 1})
            await c.wait_for("test:after-reload", start=start_c)
            await b.expect_silence("test:after-reload", after=[a], start=start_b)
            # plugin settings: the heartbeat plugin answers with its new message
            pong = await b.request("transport:connection:heartbeat", {"kind": "ping"})
            assert pong["data"]["message"] == "reloaded"
            assert b.close_code is None and a.close_code is None
            await c.close()
            await d.close()
        finally:
            await a.close()
            await b.close()
    assert "new-token" not in hub.output() and "old-token" not in hub.output()


async def test_sighup_with_an_invalid_config_keeps_the_running_one(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[auth]\ntoken = "kept-token"\n')
    with HubProcess.serve(path) as hub:
        await hub.await_listening()
        a = await connect_client(hub.url, "a", token="kept-token", announce=True)
        try:
            write_config(tmp_path, '[auth]\ntoken = "x"\nbogus = 1\n\n[limits]\nmax_connections = "many"\n')
            hub.send_signal(signal.SIGHUP)
            # the same key-path messages as at start, then one line saying nothing changed
            await hub.await_stderr(r"limits\.max_connections: Input should be a valid integer", timeout=10)
            await hub.await_stderr(r"reload refused \(\d+ problems?\): the running configuration is kept", timeout=5)
            b = await connect_client(hub.url, "b", token="kept-token", announce=True)
            start = b.mark()
            await a.send("test:still", {})
            await b.wait_for("test:still", start=start)
            await b.close()
            # a plugin table that is invalid is refused the same way
            write_config(tmp_path, '[auth]\ntoken = "kept-token"\nbogus = 1\n')
            hub.send_signal(signal.SIGHUP)
            await hub.await_stderr(r"auth\.bogus: unknown key", timeout=10)
            c = await connect_client(hub.url, "c", token="kept-token")
            await c.close()
        finally:
            await a.close()
    assert "kept-token" not in hub.output()


async def test_sighup_applies_the_log_level(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    with HubProcess.serve(path) as hub:
        await hub.await_listening()
        write_config(tmp_path, '[logging]\nlevel = "debug"\n')
        hub.send_signal(signal.SIGHUP)
        await hub.await_stderr(r"reloaded: .*logging", timeout=10)
        a = await connect_client(hub.url, "a")
        try:
            await a.send_raw("{broken")
            await a.wait_for("error")
            await hub.await_stderr(r"debug .*error to ", timeout=10)  # a debug line, off before
        finally:
            await a.close()


class Tunable:
    """Takes its new settings on reload."""

    from pydantic import BaseModel as _Base

    class Model(_Base):
        word: str = "one"

    def __init__(self) -> None:
        self.word = ""
        self.changed: list[frozenset[str]] = []

    @hookimpl
    def airi_config_model(self) -> Any:
        return self.Model

    @hookimpl
    def airi_startup(self, hub: Any) -> None:
        self.word = hub.plugin_config(self).word

    @hookimpl
    def airi_reload(self, hub: Any, changed: frozenset[str]) -> None:
        self.changed.append(changed)
        self.word = hub.plugin_config(self).word


class Stubborn:
    """Has settings but no airi_reload: a change needs a restart."""

    from pydantic import BaseModel as _Base

    class Model(_Base):
        n: int = 1

    @hookimpl
    def airi_config_model(self) -> Any:
        return self.Model


class BrokenReload:
    @hookimpl
    def airi_reload(self) -> None:
        raise RuntimeError("cannot reload")


async def test_reload_hub_reports_what_changed_and_what_needs_a_restart() -> None:
    tunable, stubborn = Tunable(), Stubborn()
    hub = await start_hub({"plugins": {"tunable": {"word": "one"}}},
                          extra_plugins=[("tunable", tunable), ("stubborn", stubborn), ("broken", BrokenReload())])
    try:
        c = await connect_client(hub, "stays")
        new = Settings.model_validate({
            "plugins": {"tunable": {"word": "two"}, "stubborn": {"n": 2}, "hook_timeout_ms": 5000},
            "limits": {"max_connections": 5, "max_frame_bytes": 4096},
            "server": {"port": 1},
        })
        report = await reload_hub(hub, new, "test.toml")
        assert tunable.word == "two" and "plugins.tunable" in tunable.changed[0]
        assert "plugins.stubborn (plugin 'stubborn' has no airi_reload hook)" in report.restart_needed
        assert {"limits.max_frame_bytes", "server.port"} <= set(report.restart_needed)
        assert any(f.startswith("broken: RuntimeError: cannot reload") for f in report.failures)
        # live values took effect, restart-only ones kept
        assert hub._transport.max_connections == 5 and hub.settings.limits.max_connections == 5
        assert hub.settings.limits.max_frame_bytes == Settings().limits.max_frame_bytes
        assert hub.settings.server.port == Settings().server.port
        assert hub._hooks.timeout_s == 5.0
        assert hub.plugin_config("stubborn").n == 1  # type: ignore[union-attr]
        await c.fence()  # the connection is still served
        # an invalid table changes nothing
        with pytest.raises(ConfigError, match=r"plugins\.tunable\.word"):
            await reload_hub(hub, Settings.model_validate({"plugins": {"tunable": {"word": 3}}}), "test.toml")
        assert tunable.word == "two"
        await c.close()
    finally:
        await hub.shutdown()
