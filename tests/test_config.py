"""``airi.toml``: parsing into Settings, defaults, precedence, and errors reported before binding."""

from __future__ import annotations

import re
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import BaseModel, ConfigDict

from airi_core import hookimpl
from airi_core.server.config import ConfigError, Settings, default_config_path, load_settings
from airi_core.server.plugins import discover_plugins


def plugin_settings(s: Settings) -> SimpleNamespace:
    """The built-in plugins' sections of ``s`` ([auth], [heartbeat], [routing], [routing.policy]),
    validated with the models those plugins declare."""
    from airi_plugins.auth import AuthSettings
    from airi_plugins.bypass import RoutingSettings
    from airi_plugins.heartbeat import HeartbeatSettings
    from airi_plugins.policy import PolicySettings

    raw = s.plugin_sections()
    routing = dict(raw.get("routing", {}))
    policy = PolicySettings.model_validate(routing.pop("policy", {}))
    return SimpleNamespace(
        auth=AuthSettings.model_validate(raw.get("auth", {})),
        heartbeat=HeartbeatSettings.model_validate(raw.get("heartbeat", {})),
        routing=SimpleNamespace(allow_bypass=RoutingSettings.model_validate(routing).allow_bypass, policy=policy),
    )

try:
    from ._hubproc import HubProcess, free_port, port_accepts, run_cli, write_config
except ImportError:  # tests/ is not a package
    from _hubproc import HubProcess, free_port, port_accepts, run_cli, write_config  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
ROOT_TOML = ROOT / "airi.toml"
SECRET = "tok-Zq81-very-secret-value"


def cfg(tmp_path: Path, text: str, name: str = "airi.toml") -> Path:
    return write_config(tmp_path, textwrap.dedent(text), name)


# --------------------------------------------------------------------------------------------
# every section parsed
# --------------------------------------------------------------------------------------------

FULL = """
[server]
host = "0.0.0.0"
port = 7123
path = "/hub"
instance_id = "hub-7"
wire_format = "json"
drain_timeout_ms = 250

[auth]
token = "file-token"
timeout_ms = 0

[logging]
level = "debug"
format = "json"
websocket_level = "warn"
websocket_format = "pretty"

[heartbeat]
read_timeout_ms = 90000
message = "ok!"
check_interval_ms = 750

[routing]
allow_bypass = false

[routing.policy]
allow_plugins = ["a", "b"]
deny_plugins = ["c"]
allow_labels = ["env=prod", "tier"]
deny_labels = ["blocked=true"]

[limits]
max_frame_bytes = 2048
max_connections = 7
max_messages_per_second = 2.5
outbound_soft_bytes = 4096
outbound_hard_bytes = 8192
slow_consumer_grace_ms = 0
close_timeout_ms = 300

[plugins]
disable = ["ui-configure"]
load = ["heartbeat", "destinations"]
order = ["destinations", "bypass"]
fail_on_error = true
hook_timeout_ms = 1234

[plugins.some-plugin]
drop_types = ["input:typing"]
nested = { depth = 2 }
"""


def test_every_section_is_parsed(tmp_path: Path) -> None:
    s = load_settings(cfg(tmp_path, FULL), env={})
    assert s.server.host == "0.0.0.0"
    assert s.server.port == 7123
    assert s.server.path == "/hub"
    assert s.server.instance_id == "hub-7"
    assert s.server.wire_format == "json"
    assert s.server.drain_timeout_ms == 250
    assert s.server.tls is None
    assert plugin_settings(s).auth.secret == "file-token"
    assert plugin_settings(s).auth.timeout_ms == 0
    assert s.logging.level == "debug"
    assert s.logging.format == "json"
    assert s.logging.websocket_level == "warn"
    assert s.logging.websocket_format == "pretty"
    assert plugin_settings(s).heartbeat.read_timeout_ms == 90000
    assert plugin_settings(s).heartbeat.message == "ok!"
    assert plugin_settings(s).heartbeat.check_interval_ms == 750
    assert plugin_settings(s).heartbeat.interval_ms == 750
    assert plugin_settings(s).routing.allow_bypass is False
    pol = plugin_settings(s).routing.policy
    assert pol.allow_plugins == ["a", "b"]
    assert pol.deny_plugins == ["c"]
    assert pol.allow_labels == ["env=prod", "tier"]
    assert pol.deny_labels == ["blocked=true"]
    assert pol.active
    lim = s.limits
    assert lim.max_frame_bytes == 2048
    assert lim.max_connections == 7
    assert lim.max_messages_per_second == 2.5
    assert (lim.outbound_soft_bytes, lim.outbound_hard_bytes) == (4096, 8192)
    assert lim.slow_consumer_grace_ms == 0 and lim.close_timeout_ms == 300
    p = s.plugins
    assert p.disable == ["ui-configure"]
    assert p.load == ["heartbeat", "destinations"]
    assert p.order == ["destinations", "bypass"]
    assert p.fail_on_error is True
    assert p.hook_timeout_ms == 1234
    assert p.section("some-plugin") == {"drop_types": ["input:typing"], "nested": {"depth": 2}}
    assert p.section("absent") == {}
    assert p.sections() == {"some-plugin": {"drop_types": ["input:typing"], "nested": {"depth": 2}}}


def test_root_airi_toml_loads_as_is() -> None:
    s = load_settings(ROOT_TOML, env={})
    assert s.server.host == "127.0.0.1"
    assert s.server.port == 6121
    assert s.server.path == "/ws"
    assert s.server.wire_format == "superjson"
    assert s.server.drain_timeout_ms == 5000
    assert s.server.tls is None
    assert plugin_settings(s).auth.secret == ""
    assert plugin_settings(s).auth.timeout_ms == 10000
    assert s.logging.level == "log" and s.logging.format == "pretty"
    assert plugin_settings(s).heartbeat.read_timeout_ms == 60000
    assert plugin_settings(s).heartbeat.message == "\U0001f49b"
    assert plugin_settings(s).heartbeat.interval_ms == 12000
    assert plugin_settings(s).routing.allow_bypass is True
    assert not plugin_settings(s).routing.policy.active
    assert s.limits.max_frame_bytes == 1048576
    assert s.plugins.disable == [] and s.plugins.order == [] and s.plugins.load is None
    assert s.plugins.fail_on_error is False and s.plugins.hook_timeout_ms == 10000
    # the documented defaults really are the defaults
    assert s.model_dump(exclude={"plugins"}) == Settings().model_dump(exclude={"plugins"})
    # and the plugin settings in it are accepted by discovery, and are the plugins' defaults
    plugins = discover_plugins(s, origin=str(ROOT_TOML))
    for name, table in s.plugins.sections().items():
        cfg = plugins.configs[name]
        assert cfg is not None and cfg == type(cfg)(), f"[plugins.{name}] in airi.toml is not the default"


def test_root_airi_toml_passes_config_check() -> None:
    r = run_cli(["config", "check", str(ROOT_TOML)])
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout and str(ROOT_TOML) in r.stdout


def test_no_file_means_defaults(tmp_path: Path) -> None:
    s = load_settings(None, env={})
    assert s.server.host == "127.0.0.1"
    assert s.server.port == 6121
    assert s.server.path == "/ws"
    assert s.server.instance_id is None
    assert plugin_settings(s).auth.token is None and plugin_settings(s).auth.secret == ""
    assert s.logging.level == "log" and s.logging.format == "pretty"
    assert s.logging.websocket_level is None and s.logging.websocket_format is None
    assert plugin_settings(s).heartbeat.message == "\U0001f49b"
    assert default_config_path(tmp_path) is None
    (tmp_path / "airi.toml").write_text("")
    assert default_config_path(tmp_path) == tmp_path / "airi.toml"
    assert load_settings(tmp_path / "airi.toml", env={}).model_dump() == Settings().model_dump()


def test_config_check_without_file_in_empty_dir(tmp_path: Path) -> None:
    r = run_cli(["config", "check"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "defaults" in r.stdout
    assert '"port": 6121' in r.stdout and '"host": "127.0.0.1"' in r.stdout


def test_config_check_uses_cwd_airi_toml(tmp_path: Path) -> None:
    cfg(tmp_path, "[server]\nport = 7345\n")
    r = run_cli(["config", "check"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '"port": 7345' in r.stdout


# --------------------------------------------------------------------------------------------
# logging and heartbeat details
# --------------------------------------------------------------------------------------------


def test_websocket_logging_defaults_to_app(tmp_path: Path) -> None:
    s = load_settings(cfg(tmp_path, '[logging]\nlevel = "warn"\nformat = "json"\n'), env={})
    assert (s.logging.level, s.logging.format) == ("warn", "json")
    # unset = "same as the app" (setup_logging falls back to level/format; see test_logging.py)
    assert s.logging.websocket_level is None and s.logging.websocket_format is None
    s = load_settings(cfg(tmp_path, '[logging]\nwebsocket_level = "trace"\n', "ws.toml"), env={"LOG_LEVEL": "error"})
    assert (s.logging.level, s.logging.websocket_level) == ("error", "trace")


@pytest.mark.parametrize(
    ("read_timeout", "expected"),
    [(60000, 12000), (10000, 5000), (25000, 5000), (30000, 6000), (100000, 20000), (1, 5000)],
)
def test_heartbeat_interval_derived(tmp_path: Path, read_timeout: int, expected: int) -> None:
    s = load_settings(cfg(tmp_path, f"[heartbeat]\nread_timeout_ms = {read_timeout}\n"), env={})
    assert plugin_settings(s).heartbeat.check_interval_ms is None
    assert plugin_settings(s).heartbeat.interval_ms == expected == max(5000, read_timeout // 5)


def test_heartbeat_explicit_interval_wins(tmp_path: Path) -> None:
    s = load_settings(cfg(tmp_path, "[heartbeat]\nread_timeout_ms = 60000\ncheck_interval_ms = 50\n"), env={})
    assert plugin_settings(s).heartbeat.interval_ms == 50


def test_heartbeat_message_unicode(tmp_path: Path) -> None:
    s = load_settings(cfg(tmp_path, '[heartbeat]\nmessage = "🩵 hi"\n'), env={})
    assert plugin_settings(s).heartbeat.message == "🩵 hi"


# --------------------------------------------------------------------------------------------
# [plugins.<name>] tables validated by the plugin's model
# --------------------------------------------------------------------------------------------


class _FilterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    drop_types: list[str] = []
    limit: int = 3


class _FilterPlugin:
    @hookimpl
    def airi_config_model(self):  # type: ignore[no-untyped-def]
        return _FilterSettings


def test_plugin_table_validated_by_plugin_model(tmp_path: Path) -> None:
    path = cfg(tmp_path, '[plugins.cfg-probe]\ndrop_types = ["input:typing"]\nlimit = 9\n')
    s = load_settings(path, env={})
    ps = discover_plugins(s, extra=[("cfg-probe", _FilterPlugin)], origin=str(path))
    conf = ps.configs["cfg-probe"]
    assert isinstance(conf, _FilterSettings)
    assert conf.drop_types == ["input:typing"] and conf.limit == 9


def test_plugin_table_defaults_when_absent(tmp_path: Path) -> None:
    ps = discover_plugins(Settings(), extra=[("cfg-probe", _FilterPlugin)])
    conf = ps.configs["cfg-probe"]
    assert isinstance(conf, _FilterSettings) and conf.drop_types == [] and conf.limit == 3


def test_plugin_table_errors_name_file_and_key(tmp_path: Path) -> None:
    path = cfg(tmp_path, '[plugins.cfg-probe]\nlimit = "many"\ncolour = 1\n')
    s = load_settings(path, env={})
    with pytest.raises(ConfigError) as ei:
        discover_plugins(s, extra=[("cfg-probe", _FilterPlugin)], origin=str(path))
    msg = str(ei.value)
    assert str(path) in msg
    assert "plugins.cfg-probe.limit" in msg and "integer" in msg
    assert "plugins.cfg-probe.colour" in msg and "unknown key" in msg


def test_plugin_table_for_plugin_without_settings_is_refused(tmp_path: Path) -> None:
    path = cfg(tmp_path, "[plugins.heartbeat]\nx = 1\n")
    with pytest.raises(ConfigError) as ei:
        discover_plugins(load_settings(path, env={}), origin=str(path))
    assert str(path) in str(ei.value) and "plugins.heartbeat" in str(ei.value)


def test_plugins_disable_load_order_applied(tmp_path: Path) -> None:
    path = cfg(
        tmp_path,
        """
        [plugins]
        disable = ["ui-configure"]
        order = ["destinations", "bypass"]
        """,
    )
    ps = discover_plugins(load_settings(path, env={}), origin=str(path))
    assert ps.info("ui-configure").enabled is False
    assert ps.info("destinations").route_position == 1
    assert ps.info("bypass").route_position == 2
    path = cfg(tmp_path, '[plugins]\nload = ["heartbeat"]\n', "load.toml")
    ps = discover_plugins(load_settings(path, env={}), origin=str(path))
    enabled = {i.name for i in ps.infos if i.enabled}
    assert enabled == {"auth", "registry", "heartbeat"}  # essential ones always run


# --------------------------------------------------------------------------------------------
# precedence: file < env < flag
# --------------------------------------------------------------------------------------------

FILE_FOR_PRECEDENCE = """
[server]
host = "10.1.1.1"
port = 7001
instance_id = "from-file"
[auth]
token = "file-token"
[logging]
level = "error"
format = "pretty"
"""


def test_env_overrides_file(tmp_path: Path) -> None:
    path = cfg(tmp_path, FILE_FOR_PRECEDENCE)
    env = {
        "HOST": "10.2.2.2",
        "PORT": "7002",
        "SERVER_INSTANCE_ID": "from-env",
        "AUTHENTICATION_TOKEN": "env-token",
        "LOG_LEVEL": "trace",
        "LOG_FORMAT": "json",
    }
    s = load_settings(path, env=env)
    assert s.server.host == "10.2.2.2"
    assert s.server.port == 7002
    assert s.server.instance_id == "from-env"
    assert plugin_settings(s).auth.secret == "env-token"
    assert s.logging.level == "trace"
    assert s.logging.format == "json"


def test_file_used_when_env_absent(tmp_path: Path) -> None:
    s = load_settings(cfg(tmp_path, FILE_FOR_PRECEDENCE), env={})
    assert s.server.host == "10.1.1.1" and s.server.port == 7001
    assert s.server.instance_id == "from-file" and plugin_settings(s).auth.secret == "file-token"
    assert s.logging.level == "error"


def test_empty_authentication_token_turns_auth_off(tmp_path: Path) -> None:
    s = load_settings(cfg(tmp_path, FILE_FOR_PRECEDENCE), env={"AUTHENTICATION_TOKEN": ""})
    assert plugin_settings(s).auth.secret == "" and plugin_settings(s).auth.token is None


def test_flags_override_env_and_file(tmp_path: Path) -> None:
    path = cfg(tmp_path, FILE_FOR_PRECEDENCE)
    env = {"HOST": "10.2.2.2", "PORT": "7002", "LOG_LEVEL": "trace", "LOG_FORMAT": "json"}
    s = load_settings(
        path,
        env=env,
        overrides={
            ("server", "host"): ("--host", "10.3.3.3"),
            ("server", "port"): ("--port", 7003),
            ("logging", "level"): ("--log-level", "warn"),
            ("logging", "format"): ("--log-format", "pretty"),
        },
    )
    assert s.server.host == "10.3.3.3" and s.server.port == 7003
    assert s.logging.level == "warn" and s.logging.format == "pretty"


def test_cli_parser_flags_map_to_overrides(tmp_path: Path) -> None:
    from airi_core.cli import build_parser
    from airi_core.server.cli import _settings_from

    path = cfg(tmp_path, FILE_FOR_PRECEDENCE)
    args = build_parser().parse_args(
        ["serve", "--config", str(path), "--host", "10.3.3.3", "--port", "7003", "--log-level", "debug", "--log-format", "json"]
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("PORT", "7002")
    mp.setenv("LOG_LEVEL", "trace")
    try:
        s, origin = _settings_from(args, args.config)
    finally:
        mp.undo()
    assert origin == str(path)
    assert (s.server.host, s.server.port, s.logging.level, s.logging.format) == ("10.3.3.3", 7003, "debug", "json")


def test_config_check_shows_env_over_file(tmp_path: Path) -> None:
    path = cfg(tmp_path, FILE_FOR_PRECEDENCE)
    r = run_cli(["config", "check", str(path)], env={"PORT": "7444", "LOG_LEVEL": "debug", "SERVER_INSTANCE_ID": "envy"})
    assert r.returncode == 0, r.stderr
    assert '"port": 7444' in r.stdout
    assert '"level": "debug"' in r.stdout
    assert '"instance_id": "envy"' in r.stdout


def test_serve_port_precedence_file_env_flag(tmp_path: Path) -> None:
    """The real CLI: env PORT beats the file, --port beats env PORT."""
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    path = cfg(tmp_path, f"[server]\nport = {file_port}\n")
    for env, args, expected in (
        ({}, [], file_port),
        ({"PORT": str(env_port)}, [], env_port),
        ({"PORT": str(env_port)}, ["--port", str(flag_port)], flag_port),
    ):
        hub = HubProcess(["serve", "--config", str(path), *args], env=env)
        try:
            url = hub.wait_listening()
            assert url == f"ws://127.0.0.1:{expected}/ws", (env, args, url)
        finally:
            hub.stop()


# --------------------------------------------------------------------------------------------
# invalid configurations: exit 2, a precise message, nothing bound
# --------------------------------------------------------------------------------------------

# (id, file text, fragments that must all appear in the message)
INVALID_FILES = [
    ("port-wrong-type", '[server]\nport = "abc"\n', ["server.port", "integer"]),
    ("port-out-of-range", "[server]\nport = 70000\n", ["server.port", "65535"]),
    ("unknown-server-key", '[server]\nhots = "127.0.0.1"\n', ["server.hots", "unknown key"]),
    ("unknown-section", "[serverz]\nport = 1\n", ["serverz", "unknown key"]),
    ("bad-log-level", '[logging]\nlevel = "verbose"\n', ["logging.level", "'trace'", "'error'"]),
    ("bad-ws-format", '[logging]\nwebsocket_format = "xml"\n', ["logging.websocket_format", "'pretty'", "'json'"]),
    ("bad-wire-format", '[server]\nwire_format = "msgpack"\n', ["server.wire_format", "'superjson'"]),
    ("relative-path", '[server]\npath = "ws"\n', ["server.path", "must start with '/'"]),
    ("tiny-frames", "[limits]\nmax_frame_bytes = 10\n", ["limits.max_frame_bytes", "1024"]),
    ("hard-below-soft", "[limits]\noutbound_soft_bytes = 8192\noutbound_hard_bytes = 4096\n", ["limits", "outbound_hard_bytes must be >= outbound_soft_bytes"]),
    ("tls-missing-files", '[server.tls]\ncert = "/nonexistent/cert.pem"\nkey = "/nonexistent/key.pem"\n', ["server.tls.cert", "server.tls.key"]),
    ("tls-key-missing", '[server.tls]\ncert = "/etc/hostname"\n', ["server.tls.key", "required"]),
    ("auth-timeout-negative", "[auth]\ntimeout_ms = -1\n", ["auth.timeout_ms", "greater than or equal to 0"]),
    ("zero-read-timeout", "[heartbeat]\nread_timeout_ms = 0\n", ["heartbeat.read_timeout_ms", "greater than 0"]),
    ("bypass-not-bool", '[routing]\nallow_bypass = "perhaps"\n', ["routing.allow_bypass", "boolean"]),
    ("policy-not-list", '[routing.policy]\nallow_plugins = "a"\n', ["routing.policy.allow_plugins", "list"]),
    ("unknown-policy-key", "[routing.policy]\nallow_everyone = true\n", ["routing.policy.allow_everyone", "unknown key"]),
    ("invalid-toml", "[server\nport = 1\n", ["invalid TOML", "line 1"]),
    ("disable-auth", '[plugins]\ndisable = ["auth"]\n', ["plugins.disable", "'auth'", "essential"]),
    ("disable-registry", '[plugins]\ndisable = ["registry"]\n', ["plugins.disable", "'registry'", "essential"]),
    ("unknown-plugin-section", "[plugins.no-such-plugin]\nx = 1\n", ["plugins.no-such-plugin", "no installed plugin"]),
    ("unknown-plugin-in-order", '[plugins]\norder = ["nope"]\n', ["plugins.order", "'nope'", "no installed plugin"]),
    ("unknown-plugin-in-disable", '[plugins]\ndisable = ["nope"]\n', ["plugins.disable", "'nope'"]),
    ("plugins-scalar-key", "[plugins]\nfoo = 1\n", ["plugins.foo", "[plugins.foo]"]),
    ("hook-timeout-negative", "[plugins]\nhook_timeout_ms = -5\n", ["plugins.hook_timeout_ms", "greater than 0"]),
]


def _run_serve_without_binding(path: Path, port: int = 0, extra_env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``serve --config path --port <port>``; assert it exits quickly and never listens.

    With a real port the test also probes it while the process runs; with ``--port 0`` (the
    brief's command line) it relies on the exit status and the absence of the listening line.
    """
    hub = HubProcess(["serve", "--config", str(path), "--port", str(port)], env=extra_env)
    try:
        bound = False
        deadline = time.monotonic() + 10
        rc = None
        while time.monotonic() < deadline:
            if port and port_accepts(port, timeout=0.05):
                bound = True
            rc = hub.wait_exit(0.05)
            if rc is not None:
                break
        assert rc is not None, f"serve with an invalid config kept running\n{hub.output()}"
        assert not bound, "serve with an invalid config accepted a connection"
        if port:
            assert not port_accepts(port)
        out = hub.output()
        assert "listening on" not in out, out
        return rc, out
    finally:
        hub.stop()


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in INVALID_FILES], ids=[c[0] for c in INVALID_FILES])
def test_invalid_file_serve_exits_2(tmp_path: Path, text: str, fragments: list[str]) -> None:
    """``python -m airi_core serve --config F --port 0`` refuses an invalid F with status 2.

    An invalid value in the file is an error even when a flag or variable overrides that key:
    the file is what ``airi config check F`` judges, and serve must agree with it.
    """
    path = cfg(tmp_path, text, "bad.toml")
    rc, out = _run_serve_without_binding(path)
    assert rc == 2, out
    assert str(path) in out, out
    for frag in fragments:
        assert frag in out, f"{frag!r} missing from:\n{out}"
    assert "Traceback" not in out


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in INVALID_FILES], ids=[c[0] for c in INVALID_FILES])
def test_invalid_file_config_check_exits_2(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = cfg(tmp_path, text, "bad.toml")
    r = run_cli(["config", "check", str(path)])
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert str(path) in out
    for frag in fragments:
        assert frag in out, f"{frag!r} missing from:\n{out}"
    assert "Traceback" not in out


@pytest.mark.parametrize(
    "text",
    ['[server]\nhots = "x"\n', '[logging]\nlevel = "verbose"\n', '[plugins]\ndisable = ["auth"]\n', "[server\n"],
    ids=["unknown-key", "bad-enum", "essential", "syntax"],
)
def test_invalid_file_never_binds_the_port(tmp_path: Path, text: str) -> None:
    """With a real free port: nothing ever accepts a connection on it while serve runs."""
    port = free_port()
    path = cfg(tmp_path, text, "bad.toml")
    rc, out = _run_serve_without_binding(path, port)
    assert rc == 2, out


def test_invalid_file_exits_quickly(tmp_path: Path) -> None:
    path = cfg(tmp_path, '[server]\nhots = "x"\n', "bad.toml")
    started = time.monotonic()
    rc, _ = _run_serve_without_binding(path)
    assert rc == 2
    assert time.monotonic() - started < 10


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    rc, out = _run_serve_without_binding(missing)
    assert rc == 2 and str(missing) in out and "not found" in out
    r = run_cli(["config", "check", str(missing)])
    assert r.returncode == 2 and str(missing) in r.stdout + r.stderr


def test_all_errors_of_a_file_reported_at_once(tmp_path: Path) -> None:
    path = cfg(tmp_path, '[server]\nport = "abc"\nhots = 1\n[logging]\nlevel = "verbose"\n', "bad.toml")
    r = run_cli(["config", "check", str(path)])
    out = r.stdout + r.stderr
    assert r.returncode == 2
    for frag in ("server.port", "server.hots", "logging.level"):
        assert frag in out


# --------------------------------------------------------------------------------------------
# environment variable errors name the variable
# --------------------------------------------------------------------------------------------

ENV_ERRORS = [
    ({"PORT": "abc"}, ["PORT", "server.port", "integer"]),
    ({"PORT": "99999"}, ["PORT", "server.port", "65535"]),
    ({"LOG_LEVEL": "verbose"}, ["LOG_LEVEL", "logging.level", "'trace'"]),
    ({"LOG_FORMAT": "xml"}, ["LOG_FORMAT", "logging.format", "'pretty'"]),
]


@pytest.mark.parametrize(("env", "fragments"), ENV_ERRORS, ids=[next(iter(e[0])) + "=" + next(iter(e[0].values())) for e in ENV_ERRORS])
def test_env_errors_name_the_variable(tmp_path: Path, env: dict[str, str], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(None, env=env)
    msg = str(ei.value)
    assert f"environment variable {next(iter(env))}" in msg
    for frag in fragments:
        assert frag in msg
    r = run_cli(["config", "check"], cwd=tmp_path, env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert f"environment variable {next(iter(env))}" in out
    for frag in fragments:
        assert frag in out


def test_serve_env_port_error_exits_2_without_binding(tmp_path: Path) -> None:
    path = cfg(tmp_path, "")
    hub = HubProcess(["serve", "--config", str(path)], env={"PORT": "abc"})
    try:
        assert hub.wait_exit(15) == 2, hub.output()
        assert "environment variable PORT" in hub.output() and "server.port" in hub.output()
        assert "listening on" not in hub.output()
    finally:
        hub.stop()


def test_flag_error_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(None, env={}, overrides={("server", "port"): ("--port", 123456)})
    assert "--port" in str(ei.value) and "server.port" in str(ei.value)
    r = run_cli(["serve", "--port", "123456"], cwd=tmp_path)
    assert r.returncode == 2
    assert "--port" in r.stderr and "server.port" in r.stderr


def test_env_error_is_attributed_to_env_not_file(tmp_path: Path) -> None:
    path = cfg(tmp_path, "[server]\nport = 7001\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(path, env={"PORT": "x"})
    assert "environment variable PORT" in str(ei.value)
    assert not str(ei.value).startswith(str(path))


# --------------------------------------------------------------------------------------------
# the token is never shown
# --------------------------------------------------------------------------------------------


def test_config_check_masks_token_from_file(tmp_path: Path) -> None:
    path = cfg(tmp_path, f'[auth]\ntoken = "{SECRET}"\n')
    r = run_cli(["config", "check", str(path)])
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr
    assert re.search(r'"token": "\*+"', r.stdout), r.stdout


def test_config_check_masks_token_from_env(tmp_path: Path) -> None:
    r = run_cli(["config", "check"], cwd=tmp_path, env={"AUTHENTICATION_TOKEN": SECRET})
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr
    assert re.search(r'"token": "\*+"', r.stdout), r.stdout


def test_config_check_shows_token_off(tmp_path: Path) -> None:
    r = run_cli(["config", "check"], cwd=tmp_path, env={"AUTHENTICATION_TOKEN": ""})
    assert r.returncode == 0, r.stderr
    assert '"token": null' in r.stdout


TOKEN_IN_BAD_FILES = [
    ("other-key-wrong", f'[auth]\ntoken = "{SECRET}"\n[server]\nhost = 1\n'),
    ("token-wrong-type", f"[auth]\ntoken = [\"{SECRET}\"]\n"),
    ("token-misspelt", f'[auth]\ntokn = "{SECRET}"\n'),
    ("token-misplaced", f'[server]\ntoken = "{SECRET}"\n'),
    ("token-as-plugins-key", f'[plugins]\ntoken = "{SECRET}"\n'),
    ("token-bad-toml", f'[auth]\ntoken = "{SECRET}"\nport = \n'),
    ("token-unterminated", f'[auth]\ntoken = "{SECRET}\n'),
    ("token-plugin-section", f'[plugins.nope]\ntoken = "{SECRET}"\n'),
]


@pytest.mark.parametrize("text", [c[1] for c in TOKEN_IN_BAD_FILES], ids=[c[0] for c in TOKEN_IN_BAD_FILES])
def test_token_never_in_error_messages(tmp_path: Path, text: str) -> None:
    path = cfg(tmp_path, text, "bad.toml")
    r = run_cli(["config", "check", str(path)])
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert str(path) in out
    assert SECRET not in out, out
    rc, out = _run_serve_without_binding(path)
    assert rc == 2
    assert SECRET not in out, out


def test_token_from_env_never_in_error_messages(tmp_path: Path) -> None:
    r = run_cli(["config", "check"], cwd=tmp_path, env={"AUTHENTICATION_TOKEN": SECRET, "PORT": "abc"})
    out = r.stdout + r.stderr
    assert r.returncode == 2
    assert SECRET not in out
    with pytest.raises(ConfigError) as ei:
        load_settings(None, env={"AUTHENTICATION_TOKEN": SECRET, "LOG_LEVEL": "loud"})
    assert SECRET not in str(ei.value)


def test_token_not_in_settings_repr(tmp_path: Path) -> None:
    s = load_settings(None, env={"AUTHENTICATION_TOKEN": SECRET})
    assert SECRET not in repr(s) and SECRET not in str(s)
    assert SECRET not in s.model_dump_json()


def test_event_loop_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from airi_core.server.cli import loop_factory

    assert Settings().server.event_loop == "asyncio"
    assert loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match="server.event_loop: 'uvloop' is not installed"):
        loop_factory("uvloop")
