"""End-to-end tests of the example plugin ``examples/airi-route-filter`` and of
``examples/print_events.py``, against the real hub started as a subprocess.

The plugin must be installed in the test environment, as a separate distribution:
``pip install -e '.[test]' -e ./examples/airi-route-filter``. The hub finds it through its
``airi.plugins`` entry point and enables it from a temporary ``airi.toml``; the tests connect
real WebSocket clients and check what each one receives.

Every subprocess is stopped by its PID (SIGTERM, then SIGKILL after a timeout); every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata as md
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from airi_core.testing import HubClient, connect_client, wait_until

try:
    from ._hubproc import HubProcess, free_port, hub_env, port_accepts, run_cli, terminate, write_config
except ImportError:  # tests/ is not a package
    from _hubproc import (  # type: ignore[no-redef]
        HubProcess,
        free_port,
        hub_env,
        port_accepts,
        run_cli,
        terminate,
        write_config,
    )

REPO = Path(__file__).resolve().parent.parent
PRINT_EVENTS = REPO / "examples" / "print_events.py"

READY_TIMEOUT = 20.0  # seconds for `airi serve` to bind
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
CLI_TIMEOUT = 60.0  # seconds for a one-shot CLI command
#: Prepended to every config these tests write: the hub listens on loopback only.
SERVER_TABLE = '[server]\nhost = "127.0.0.1"\n'
#: The last line of the summary ``airi serve`` prints on stderr once it listens.
SUMMARY_END = r"^\s*route order "

ROUTE_FILTER_TABLE = """
[plugins.route-filter]
drop_types = ["input:typing", "debug:*"]

[[plugins.route-filter.rules]]
type = "output:*"
field = "meta.lang"
equals = "fr"
action = "drop"

[[plugins.route-filter.rules]]
type = "telemetry:*"
action = "redirect"
to = "module:logger"
"""


@pytest.fixture(autouse=True, scope="module")
def _plugin_installed() -> None:
    try:
        md.distribution("airi-route-filter")
    except md.PackageNotFoundError:
        pytest.fail(
            "the example plugin is not installed: pip install -e ./examples/airi-route-filter",
            pytrace=False,
        )


# -- running the real hub -----------------------------------------------------------------------
# Ports, environment, subprocesses and the CLI: _hubproc (every process stopped by its PID,
# SIGTERM then SIGKILL after a timeout; every wait bounded).
def plugin_config(tmp_path: Path, text: str, name: str = "airi.toml") -> Path:
    """``text`` as a config file in ``tmp_path``, after the loopback-only ``[server]`` table."""
    return write_config(tmp_path, SERVER_TABLE + text, name)


@contextlib.asynccontextmanager
async def running_hub(config: Path) -> AsyncIterator[HubProcess]:
    """``python -m airi_core serve --config CONFIG --port P``, ready once it has printed its
    summary (after binding P), so ``hub.output()`` holds the whole of it."""
    for _attempt in range(3):  # a free port can be taken by someone else before the hub binds
        hub = HubProcess.serve(config, cwd=config.parent)
        try:
            try:
                await hub.await_stderr(SUMMARY_END, timeout=READY_TIMEOUT)
            except AssertionError:
                if hub.proc.poll() is not None and "cannot listen" in hub.output():
                    continue
                raise
            yield hub
            return
        finally:
            await asyncio.to_thread(hub.stop, STOP_TIMEOUT)
    raise AssertionError("hub could not bind a free port in 3 attempts")


# -- the routing scenario -----------------------------------------------------------------------
#: What the sender sends, in this order; ``marker`` last, so a receiver that got the marker has
#: got everything the hub was ever going to deliver to it before (one sender's events reach each
#: receiver in the order they were sent).
Step = tuple[str, str, dict[str, Any], dict[str, Any] | None]  # label, type, data, route
SCENARIO: list[Step] = [
    ("typing", "input:typing", {}, None),
    ("debug", "debug:trace", {"step": 1}, None),
    ("speech-fr", "output:speech", {"text": "bonjour", "meta": {"lang": "fr"}}, None),
    ("speech-en", "output:speech", {"text": "hello", "meta": {"lang": "en"}}, None),
    ("speech-no-lang", "output:speech", {"text": "?"}, None),
    ("telemetry", "telemetry:fps", {"fps": 60}, None),
    ("marker", "test:marker", {}, None),
]
#: The sender addresses its telemetry to the receiver only.
ADDRESSED = [
    ("telemetry-to-receiver", "telemetry:fps", {"fps": 30}, {"destinations": ["module:receiver"]}),
    ("marker", "test:marker", {}, None),
]


async def run_scenario(url: str, scenario: list[Step] = SCENARIO) -> dict[str, list[str]]:
    """Connect sender, receiver and a module announced as ``logger``; send the scenario's
    events; return which scenario labels each of receiver and logger got."""
    clients: list[HubClient] = []
    try:
        for name in ("receiver", "logger", "sender"):
            clients.append(await connect_client(url, name, announce=True))
        receiver, logger, sender = clients
        starts = {c.name: c.mark() for c in (receiver, logger)}
        labels: dict[str, str] = {}
        for label, etype, data, route in scenario:
            ev = await sender.send(etype, data, route=route)
            labels[ev["metadata"]["event"]["id"]] = label
        got: dict[str, list[str]] = {}
        for c in (receiver, logger):
            await c.wait_for("test:marker", start=starts[c.name], timeout=5)
            got[c.name] = [
                labels[e["metadata"]["event"]["id"]]
                for e in c.received[starts[c.name]:]
                if e.get("metadata", {}).get("event", {}).get("id") in labels
            ]
        return got
    finally:
        for c in clients:
            await c.close()


async def test_route_filter_drops_and_redirects(tmp_path: Path) -> None:
    config = plugin_config(tmp_path, ROUTE_FILTER_TABLE)
    async with running_hub(config) as hub:
        assert "route-filter" in hub.output()  # the summary's plugin list and route order
        got = await run_scenario(hub.url)
    assert got["receiver"] == ["speech-en", "speech-no-lang", "marker"]
    # the redirect: telemetry reaches the logger module only
    assert got["logger"] == ["speech-en", "speech-no-lang", "telemetry", "marker"]
    assert hub.proc.returncode == 0, hub.output()


async def test_same_events_delivered_with_the_plugin_disabled(tmp_path: Path) -> None:
    config = plugin_config(tmp_path, '[plugins]\ndisable = ["route-filter"]\n' + ROUTE_FILTER_TABLE)
    async with running_hub(config) as hub:
        got = await run_scenario(hub.url)
    everything = [step[0] for step in SCENARIO]
    assert got == {"receiver": everything, "logger": everything}


async def test_redirect_to_a_module_that_is_not_announced_delivers_nothing(tmp_path: Path) -> None:
    config = plugin_config(tmp_path, ROUTE_FILTER_TABLE.replace("module:logger", "module:archive"))
    async with running_hub(config) as hub:
        got = await run_scenario(hub.url)
    assert got["receiver"] == got["logger"] == ["speech-en", "speech-no-lang", "marker"]


async def test_redirect_honours_destinations_unless_ordered_before_them(tmp_path: Path) -> None:
    # Default route order (bypass, policy, destinations, route-filter, consumers): the sender's
    # destinations filter applies to the redirect target too, so nobody gets the event.
    config = plugin_config(tmp_path, ROUTE_FILTER_TABLE)
    async with running_hub(config) as hub:
        got = await run_scenario(hub.url, ADDRESSED)
    assert got == {"receiver": ["marker"], "logger": ["marker"]}
    # Ordered before destinations, the redirect decides alone (the policy still runs first).
    config = plugin_config(
        tmp_path, '[plugins]\norder = ["bypass", "policy", "route-filter"]\n' + ROUTE_FILTER_TABLE, "ordered.toml"
    )
    async with running_hub(config) as hub:
        got = await run_scenario(hub.url, ADDRESSED)
    assert got == {"receiver": ["marker"], "logger": ["telemetry-to-receiver", "marker"]}


# -- configuration and the CLI -------------------------------------------------------------------
def test_invalid_table_stops_serve_with_status_2_and_the_key_path(tmp_path: Path) -> None:
    config = plugin_config(
        tmp_path,
        """
[plugins.route-filter]
drop_typez = ["input:typing"]

[[plugins.route-filter.rules]]
type = "output:*"
action = "dorp"

[[plugins.route-filter.rules]]
action = "redirect"
to = "logger"
""",
    )
    port = free_port()
    res = run_cli(["serve", "--config", str(config), "--port", str(port)], cwd=tmp_path, timeout=CLI_TIMEOUT)
    assert res.returncode == 2, res.stderr
    assert "plugins.route-filter.drop_typez: unknown key" in res.stderr
    assert "plugins.route-filter.rules.0.action" in res.stderr
    assert "plugins.route-filter.rules.1.to" in res.stderr
    assert str(config) in res.stderr
    assert "listening" not in res.stderr
    assert not port_accepts(port)


def test_airi_plugins_lists_route_filter_with_its_distribution(tmp_path: Path) -> None:
    config = plugin_config(tmp_path, ROUTE_FILTER_TABLE)
    res = run_cli(["plugins", "--config", str(config), "--json"], cwd=tmp_path, timeout=CLI_TIMEOUT)
    assert res.returncode == 0, res.stderr
    rows = {row["name"]: row for row in json.loads(res.stdout)}
    row = rows["route-filter"]
    assert row["distribution"] == "airi-route-filter"
    assert row["version"] == md.version("airi-route-filter")
    assert row["enabled"] is True and row["error"] is None
    assert "airi_route" in row["hooks"] and "airi_config_model" in row["hooks"]
    # a third-party route plugin runs after destinations and before consumers
    assert rows["destinations"]["route_order"] < row["route_order"] < rows["consumers"]["route_order"]

    table = run_cli(["plugins", "--config", str(config)], cwd=tmp_path, timeout=CLI_TIMEOUT)
    assert table.returncode == 0, table.stderr
    line = next(ln for ln in table.stdout.splitlines() if "route-filter" in ln and "airi-route-filter" in ln)
    assert "route" in line

    disabled = plugin_config(tmp_path, '[plugins]\ndisable = ["route-filter"]\n', "disabled.toml")
    res = run_cli(["plugins", "--config", str(disabled), "--json"], cwd=tmp_path, timeout=CLI_TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert {row["name"]: row for row in json.loads(res.stdout)}["route-filter"]["enabled"] is False


# -- examples/print_events.py ----------------------------------------------------------------------
async def test_print_events_prints_what_is_routed_to_it(tmp_path: Path) -> None:
    token = "example-token"
    config = plugin_config(
        tmp_path,
        f'[auth]\ntoken = "{token}"\n' + ROUTE_FILTER_TABLE.replace("module:logger", "module:print-events"),
    )
    async with running_hub(config) as hub:
        watcher = await connect_client(hub.url, "watcher", token=token, announce=True)
        out, err = tmp_path / "print_events.out", tmp_path / "print_events.err"
        try:
            with out.open("wb") as stdout, err.open("wb") as stderr:
                proc = subprocess.Popen(
                    [sys.executable, str(PRINT_EVENTS), hub.url, "--seconds", "1"],
                    stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=tmp_path,
                    env=hub_env({"AUTHENTICATION_TOKEN": token}),
                )
            try:
                await watcher.wait_for(
                    "module:announced", lambda e: e["data"].get("name") == "print-events", timeout=15
                )
                await watcher.send("input:typing", {})  # dropped by the plugin: never printed
                await watcher.send("telemetry:fps", {"fps": 42})  # redirected to print-events
                with contextlib.suppress(AssertionError):  # still running: terminated below
                    await wait_until(lambda: proc.poll() is not None, 15, "print_events.py to exit", every=0.05)
            finally:
                code = await asyncio.to_thread(terminate, proc, STOP_TIMEOUT)
        finally:
            await watcher.close()
    printed, notes = out.read_text(encoding="utf-8"), err.read_text(encoding="utf-8")
    assert code == 0, notes
    lines = [ln for ln in printed.splitlines() if ln.strip()]
    assert any("telemetry:fps" in ln and "from watcher" in ln and '{"fps":42}' in ln for ln in lines), printed
    assert "input:typing" not in printed
    # the hub's own protocol traffic is not printed without --all
    assert "registry:modules:sync" not in printed
    assert "announced" in notes


# -- the plugin's settings and matching, without a hub ------------------------------------------
def test_settings_model_rejects_inconsistent_rules() -> None:
    from airi_route_filter import RouteFilterSettings
    from pydantic import ValidationError

    bad: list[dict[str, Any]] = [
        {"rules": [{"action": "redirect"}]},  # redirect without `to`
        {"rules": [{"action": "drop", "to": "module:x"}]},  # `to` without redirect
        {"rules": [{"equals": "fr"}]},  # `equals` without `field`
        {"rules": [{"field": "meta..lang"}]},  # empty key in the path
        {"rules": [{"type": ""}]},
        {"drop_types": [""]},
        {"rules": [{"action": "redirect", "to": "module:"}]},
    ]
    for table in bad:
        with pytest.raises(ValidationError):
            RouteFilterSettings.model_validate(table)
    ok = RouteFilterSettings.model_validate(
        {"rules": [{"type": "a:*", "field": "x", "action": "redirect", "to": "module:logger"}]}
    )
    assert ok.rules[0].target_module == "logger" and not ok.rules[0].has_equals


def test_rule_matching_uses_dotted_paths_and_json_equality() -> None:
    from airi_route_filter import RouteFilterSettings
    from airi_route_filter.plugin import CompiledFilter, CompiledRule

    compiled = CompiledFilter(
        RouteFilterSettings.model_validate(
            {
                "drop_types": ["debug:*", "input:typing"],
                "rules": [
                    {"type": "*:flag", "field": "on", "equals": True},
                    {"type": "output:*", "field": "meta.lang", "equals": "fr"},
                    {"type": "list:*", "field": "items.1.id", "equals": 7},
                    {"type": "has:*", "field": "secret"},
                ],
            }
        )
    )
    assert compiled.rules_for("debug:a:b") is None and compiled.rules_for("input:typing") is None
    assert compiled.rules_for("input:typingx") == ()  # globs match the whole type

    def only_rule(etype: str) -> CompiledRule:
        rules = compiled.rules_for(etype)
        assert rules is not None and len(rules) == 1, rules
        return rules[0]

    flag = only_rule("x:flag")
    assert flag.matches_data({"on": True}) and not flag.matches_data({"on": 1})
    lang = only_rule("output:speech")
    assert lang.matches_data({"meta": {"lang": "fr"}})
    assert not lang.matches_data({"meta": {"lang": "en"}}) and not lang.matches_data({"meta": "fr"})
    item = only_rule("list:x")
    assert item.matches_data({"items": [{}, {"id": 7}]}) and not item.matches_data({"items": [{"id": 7}]})
    present = only_rule("has:x")
    assert present.matches_data({"secret": None}) and not present.matches_data({})
