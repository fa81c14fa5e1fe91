"""The test toolkit itself (:mod:`airi_core.testing`, the ``airi`` pytest plugin).

- A third-party plugin's test file, run by pytest in a subprocess, passes under pytest-asyncio's
  strict mode (``-p asyncio --asyncio-mode=strict``, tests marked) and auto mode, with the
  fixtures loaded through the ``pytest11`` entry point only (no conftest).
- The plugin still loads when pytest-asyncio is not installed.
- ``connect_client`` / ``airi_connect`` return only once the connect-time events have arrived.
- ``HubClient.fence`` and ``expect_silence`` catch an event sent just before, without sleeping.
- A plugin registered with ``extra_plugins`` under the name of an installed entry point replaces
  it (the example plugin ``route-filter`` is installed in the test environment).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
from pathlib import Path
from typing import Any

import pytest

from airi_core import hookimpl
from airi_core.testing import FENCE_MESSAGE, HEARTBEAT, HubClient

pytest_plugins = ["pytester"]

#: Bound for each pytest subprocess (it starts a few hubs on loopback).
SUBPROCESS_TIMEOUT = 60

THIRD_PARTY_TESTS = '''
"""What a plugin author writes: the README's DropTypes plugin and its tests."""
import pytest
from pydantic import BaseModel, ConfigDict

from airi_core import Drop, hookimpl


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    drop_types: list[str] = []


class DropTypes:
    @hookimpl
    def airi_config_model(self):
        return Settings

    @hookimpl
    def airi_route(self, hub, ctx):
        if ctx.event.type in hub.plugin_config("drop-types").drop_types:
            return Drop(f"{ctx.event.type} is dropped by configuration")
        return None


MARK
async def test_default_hub(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    # connect-time events are there at once: no waiting, no race with mark()
    assert [e["type"] for e in b.received[:2]] == ["module:authenticated", "registry:modules:sync"]
    start = b.mark()
    await a.send("chat:text", {"n": 1})
    assert (await b.wait_for("chat:text", start=start))["data"] == {"n": 1}


MARK
async def test_plugin_under_test(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory(
        {"plugins": {"drop-types": {"drop_types": ["input:typing"]}}},
        extra_plugins=[("drop-types", DropTypes)],
    )
    a = await airi_connect(hub, "a", announce=True)
    b = await airi_connect(hub, "b", announce=True)
    start = b.mark()
    await a.send("input:typing", {})
    await a.send("chat:text", {})
    await b.wait_for("chat:text", start=start)
    await b.expect_silence("input:typing", after=[a], start=start)


MARK
async def test_two_hubs_from_the_factory(airi_hub_factory, airi_connect):
    token_hub = await airi_hub_factory({"auth": {"token": "t"}})
    open_hub = await airi_hub_factory()
    assert token_hub.url != open_hub.url
    c = await airi_connect(token_hub, "c", token="t")
    assert [e["type"] for e in c.received] == ["module:authenticated", "registry:modules:sync"]
'''


def _write_third_party_tests(pytester: pytest.Pytester, mark: str) -> None:
    pytester.makepyfile(test_my_plugin=THIRD_PARTY_TESTS.replace("MARK", mark))


@pytest.mark.parametrize(
    ("args", "mark"),
    [
        (["-p", "asyncio", "--asyncio-mode=strict"], "@pytest.mark.asyncio"),
        (["--asyncio-mode=auto"], ""),
    ],
    ids=["strict", "auto"],
)
def test_fixtures_work_for_a_third_party_test_file(pytester: pytest.Pytester, args: list[str], mark: str) -> None:
    pytest.importorskip("pytest_asyncio")
    _write_third_party_tests(pytester, mark)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=SUBPROCESS_TIMEOUT)
    result.assert_outcomes(passed=3)
    # the fixtures came from the installed `airi` plugin (entry point), not from a conftest
    assert not list(Path(pytester.path).glob("**/conftest.py"))


def test_the_plugin_loads_without_pytest_asyncio(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installing airi-hub must not break anyone's pytest run that has no pytest-asyncio: the
    fixtures fall back to ``pytest.fixture``."""
    stub = pytester.mkdir("no_pytest_asyncio")
    (stub / "pytest_asyncio.py").write_text("raise ImportError('pytest-asyncio is not installed here')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(stub), os.environ.get("PYTHONPATH")])))
    pytester.makepyfile(
        test_plain="""
        import pytest
        import airi_core.testing as t

        def test_fallback(request):
            assert t._async_fixture is pytest.fixture
            assert "airi" in [request.config.pluginmanager.get_name(p) for p in request.config.pluginmanager.get_plugins()]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio", timeout=SUBPROCESS_TIMEOUT)
    result.assert_outcomes(passed=1)
    fixtures = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio", "--fixtures", timeout=SUBPROCESS_TIMEOUT)
    listed = fixtures.stdout.str()
    for name in ("airi_hub", "airi_hub_factory", "airi_connect"):
        assert re.search(rf"^{name} -- ", listed, re.M), f"{name} not listed by --fixtures:\n{listed}"


# -- connect_client: race-free ---------------------------------------------------------------------
async def test_connect_time_events_have_arrived_when_connect_returns(airi_hub, airi_connect):
    for i in range(20):
        c = await airi_connect(airi_hub, f"c{i}")
        # no wait_for: they must already be there, and nothing else (the fence's pong is not kept)
        assert [e["type"] for e in c.received] == ["module:authenticated", "registry:modules:sync"], c.received


async def test_connect_time_events_with_a_token(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"auth": {"token": "tok"}})
    anon = await airi_connect(hub, "anon")
    assert anon.received == []  # nothing before authenticating
    member = await airi_connect(hub, "member", token="tok", announce=True)
    types = [e["type"] for e in member.received]
    assert types[:2] == ["module:authenticated", "registry:modules:sync"]
    assert types[-1] == "registry:modules:sync"
    start = member.mark()
    await member.fence()
    assert member.received[start:] == []


# -- fences and silence ----------------------------------------------------------------------------
async def test_fence_returns_the_pong_and_records_nothing(airi_hub, airi_connect):
    a = await airi_connect(airi_hub, "a")
    start = a.mark()
    pong = await a.fence()
    assert pong["type"] == HEARTBEAT and pong["data"]["kind"] == "pong"
    assert a.received[start:] == [] and len(a.raw) == len(a.received)
    # a ping sent through request() is answered and recorded like any event
    reply = await a.request(HEARTBEAT, {"kind": "ping", "message": FENCE_MESSAGE}, reply=HEARTBEAT)
    assert a.received[start:] == [reply]


async def test_expect_silence_catches_an_event_sent_just_before(airi_hub, airi_connect):
    """No sleep anywhere: the sender's fence and then the receiver's guarantee the routed event
    is in ``received`` before the check, so it is caught every time."""
    a = await airi_connect(airi_hub, "a", announce=True)
    b = await airi_connect(airi_hub, "b", announce=True)
    for i in range(20):
        start = b.mark()
        await a.send("test:leak", {"i": i})
        with pytest.raises(AssertionError, match="expected no test:leak"):
            await b.expect_silence("test:leak", after=[a], start=start)
        await b.expect_silence("test:other", after=[a], start=start)  # another type: silent


async def test_expect_silence_passes_when_the_hub_drops_the_event(airi_hub_factory, airi_connect):
    class DropAll:
        @hookimpl
        def airi_route(self, ctx: Any) -> Any:
            from airi_core import Drop

            return Drop("dropped") if ctx.event.type == "test:drop" else None

    hub = await airi_hub_factory(extra_plugins=[("drop-all", DropAll())])
    a = await airi_connect(hub, "a", announce=True)
    b = await airi_connect(hub, "b", announce=True)
    start = b.mark()
    await a.send("test:drop", {})
    await b.expect_silence(after=[a], start=start)
    await a.expect_silence("error", start=start)


async def test_fence_on_a_hub_that_does_not_answer_heartbeats(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"plugins": {"disable": ["heartbeat"]}})
    c = await airi_connect(hub, "c", fence=False)
    await c.wait_for("registry:modules:sync")
    with pytest.raises(AssertionError, match="no answer to the fence ping"):
        await c.fence(timeout=0.3)


async def test_fence_fails_fast_on_a_closed_connection(airi_hub, airi_connect):
    c: HubClient = await airi_connect(airi_hub, "c")
    await c.close()
    with pytest.raises(Exception) as info:
        await c.fence(timeout=2)
    assert not isinstance(info.value, AssertionError), "a closed socket is not a timeout"


async def test_wait_closed_returns_code_and_reason(airi_hub_factory, airi_connect):
    hub = await airi_hub_factory({"auth": {"token": "t", "timeout_ms": 100}})
    c = await airi_connect(hub, "c")
    assert await c.wait_closed(timeout=3) == (1008, "authentication timeout")


# -- extra_plugins replacing an installed entry point ------------------------------------------------
def _route_filter_installed() -> Any:
    eps = md.entry_points(group="airi.plugins", name="route-filter")
    if not eps:
        pytest.fail("the example plugin is not installed: pip install -e ./examples/airi-route-filter", pytrace=False)
    from airi_route_filter import RouteFilter

    return RouteFilter


def _recording(base: type) -> type:
    class Recording(base):  # type: ignore[misc, valid-type]
        seen: list[str] = []

        @hookimpl
        def airi_route(self, hub: Any, ctx: Any) -> Any:
            type(self).seen.append(ctx.event.type)
            return super().airi_route(hub, ctx)

    return Recording


@pytest.mark.parametrize("variant", ["same-class", "subclass"])
async def test_extra_plugin_replaces_the_installed_entry_point_of_that_name(airi_hub_factory, airi_connect, variant):
    """A plugin author tests the plugin they have also installed (pip install -e .): the plugin
    registered in code under the entry point's name replaces it, once, configured from
    ``[plugins.<name>]``."""
    route_filter = _route_filter_installed()
    plugin = route_filter if variant == "same-class" else _recording(route_filter)
    hub = await airi_hub_factory(
        {"plugins": {"route-filter": {"drop_types": ["input:typing"]}}},
        extra_plugins=[("route-filter", plugin)],
    )
    assert len([i for i in hub.plugins.infos if i.name == "route-filter"]) == 1
    a = await airi_connect(hub, "a", announce=True)
    b = await airi_connect(hub, "b", announce=True)
    start = b.mark()
    await a.send("input:typing", {})
    await a.send("chat:text", {"n": 1})
    assert (await b.wait_for("chat:text", start=start))["data"] == {"n": 1}
    await b.expect_silence("input:typing", after=[a], start=start)
    if variant == "subclass":
        # the code-registered plugin is the one the hub consults (not the entry point's class)
        assert plugin.seen == ["input:typing", "chat:text"]
