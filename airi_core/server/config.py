"""``airi.toml``: one typed settings object, validated by pydantic before anything binds.

Precedence, lowest first: defaults < ``airi.toml`` < the reference's environment variables <
CLI flags. Every error names the file (or the variable/flag), the key path and what was expected.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "Settings",
    "load_settings",
    "format_validation_error",
    "ENV_VARS",
    "LogLevel",
    "LogFormat",
    "BUILTIN_ORIGINS",
    "normalize_origin",
    "origin_site",
]

LogLevel = Literal["trace", "debug", "log", "warn", "error"]
LogFormat = Literal["pretty", "json"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class TLSConfig(_Section):
    """``[server.tls]``: serve ``wss://`` with this certificate chain and private key (PEM)."""

    cert: FilePath
    key: FilePath


class LimitsConfig(_Section):
    """``[limits]``: bounds that keep one peer from hurting the others."""

    max_frame_bytes: int = Field(1 << 20, ge=1024)
    #: bytes of frames (and handshake requests) received but not complete yet, over every
    #: connection; past it the connection holding the most is closed 1013 (see the transport)
    max_pending_bytes: int = Field(64 << 20, ge=1024)
    max_connections: int = Field(10000, ge=1)
    max_messages_per_second: float = Field(0, ge=0)
    outbound_soft_bytes: int = Field(1 << 20, ge=1024)
    outbound_hard_bytes: int = Field(8 << 20, ge=1024)
    slow_consumer_grace_ms: int = Field(500, ge=0)
    close_timeout_ms: int = Field(2000, ge=1)

    @model_validator(mode="after")
    def _hard_above_soft(self) -> LimitsConfig:
        if self.outbound_hard_bytes < self.outbound_soft_bytes:
            raise ValueError("outbound_hard_bytes must be >= outbound_soft_bytes")
        if self.max_pending_bytes < self.max_frame_bytes:
            raise ValueError("max_pending_bytes must be >= max_frame_bytes (one frame in flight must fit)")
        return self


#: Origins accepted by default, besides loopback pages (``http(s)://localhost``, ``127.0.0.1``,
#: ``[::1]``, any port) and requests without an ``Origin`` header: AIRI's own apps.
BUILTIN_ORIGINS: tuple[str, ...] = (
    "file://",  # the desktop app (Electron): its renderer is loaded from a file
    "capacitor://localhost",  # the mobile app on iOS (Android's is https://localhost: loopback)
    "https://airi.moeru.ai",  # the hosted web stage
)

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_ORIGIN_RE = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[^/?#@\[\]:\s]+)(?::(?P<port>\d{1,5}|\*))?/?")


def origin_site(origin: str) -> str:
    """``scheme://host`` of a normalized origin (its port dropped)."""
    m = _ORIGIN_RE.fullmatch(origin)
    return f"{m.group('scheme')}://{m.group('host')}" if m else origin


def normalize_origin(text: str) -> str | None:
    """The canonical form of an origin, ``scheme://host[:port]`` (scheme and host lower-cased, a
    default port dropped, ``:*`` kept), ``file://``, ``null`` or ``*``; None when ``text`` is not
    one (a path, a query, user info, a bad port)."""
    value = text.strip().lower()
    if value in ("*", "null", "file://"):
        return value
    m = _ORIGIN_RE.fullmatch(value)
    if m is None:
        return None
    scheme, host, port = m.group("scheme"), m.group("host"), m.group("port")
    if port is not None and port != "*":
        number = int(port)
        if number > 65535:
            return None
        port = None if _DEFAULT_PORTS.get(scheme) == number else str(number)
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(6121, ge=0, le=65535)
    path: str = "/ws"
    instance_id: str | None = None
    wire_format: Literal["superjson", "json"] = "superjson"
    drain_timeout_ms: int = Field(5000, ge=0)
    event_loop: Literal["auto", "asyncio", "uvloop"] = "asyncio"
    tls: TLSConfig | None = None
    #: Origins browsers may connect from, besides the built-in ones (see BUILTIN_ORIGINS).
    allowed_origins: list[str] = []
    #: False: only ``allowed_origins`` (and requests without an Origin header) are accepted.
    builtin_origins: bool = True

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, origins: list[str]) -> list[str]:
        out = []
        for entry in origins:
            norm = normalize_origin(entry)
            if norm is None:
                raise ValueError(
                    f"{entry!r} is not an origin: write scheme://host or scheme://host:port "
                    "(port '*' = any), 'file://', 'null' or '*', without a path"
                )
            out.append(norm)
        return out

    @field_validator("path")
    @classmethod
    def _path_is_absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        return path



class LoggingConfig(_Section):
    level: LogLevel = "log"
    format: LogFormat = "pretty"
    websocket_level: LogLevel | None = None
    websocket_format: LogFormat | None = None
    #: a log message (and each extra value) longer than this is cut, with a marker saying how much
    max_message_chars: int = Field(1024, ge=80)
    #: lines at level log and above about one peer, per second; the rest are counted and
    #: summarized in one line (0 = no limit)
    peer_lines_per_second: float = Field(10, ge=0)
    #: lines about connections opened and closed and modules announced, per second; the rest go
    #: out at level debug and are counted in one line a second (0 = no limit)
    connection_lines_per_second: float = Field(20, ge=0)





class HttpConfig(_Section):
    """``[http]``: plain HTTP answers on the hub's own port, beside the WebSocket path:
    ``GET /healthz``, ``/readyz`` and ``/metrics`` (see :mod:`airi_core.server.http`)."""

    #: answer /healthz, /readyz and /metrics (false: every path but the WebSocket one is 404)
    enabled: bool = True
    #: answer /metrics (Prometheus text format); false leaves the health endpoints on
    metrics: bool = True
    #: when set, /metrics wants ``Authorization: Bearer <token>`` (401 otherwise); never logged
    metrics_token: SecretStr | None = None

    @field_validator("metrics_token")
    @classmethod
    def _empty_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None


class DiscoveryConfig(_Section):
    """``[discovery]``: advertise the hub on the local network with mDNS / DNS-SD
    (``_airi._tcp.local.``, see :mod:`airi_core.server.discovery`)."""

    #: advertise the hub (off by default: a hub is not announced to the network unless asked)
    mdns: bool = False
    #: the service instance name (default ``AIRI hub on <hostname>``)
    name: str | None = Field(None, min_length=1, max_length=63)
    #: addresses of the interfaces to advertise on (default: every interface)
    interfaces: list[str] = []


class PluginsConfig(BaseModel):
    """``[plugins]``: which plugins run, in which order, and ``[plugins.<name>]`` tables."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    disable: list[str] = []
    load: list[str] | None = None
    order: list[str] = []
    fail_on_error: bool = False
    hook_timeout_ms: int = Field(10000, gt=0)

    @model_validator(mode="after")
    def _extra_are_tables(self) -> PluginsConfig:
        bad = sorted(k for k, v in (self.model_extra or {}).items() if not isinstance(v, dict))
        if bad:
            raise ValueError(
                "unknown [plugins] key(s) "
                + ", ".join(repr(k) for k in bad)
                + "; per-plugin settings go in tables like [plugins."
                + bad[0]
                + "]"
            )
        return self

    def section(self, name: str) -> dict[str, Any]:
        """The raw ``[plugins.<name>]`` table (empty when absent)."""
        value = (self.model_extra or {}).get(name)
        return dict(value) if isinstance(value, dict) else {}

    def sections(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in (self.model_extra or {}).items() if isinstance(v, dict)}


class Settings(BaseModel):
    """The kernel's settings (``[server]``, ``[logging]``, ``[limits]``, ``[plugins]``,
    ``[http]``, ``[discovery]``).

    Every other top-level table belongs to a plugin that declares it as its
    ``airi_config_section`` (the built-ins own ``[auth]``, ``[heartbeat]``, ``[routing]`` and
    ``[routing.policy]``); discovery validates it with that plugin's model and reports a table
    that no installed plugin reads."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    server: ServerConfig = ServerConfig()
    logging: LoggingConfig = LoggingConfig()
    limits: LimitsConfig = LimitsConfig()
    plugins: PluginsConfig = PluginsConfig()
    http: HttpConfig = HttpConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()

    #: where the settings came from, for messages: the file, and what environment variables or
    #: flags set (key path -> their name)
    _origin: str = PrivateAttr("defaults")
    _sources: dict[tuple[str, ...], str] = PrivateAttr(default_factory=dict)
    _sections: dict[str, Any] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        # the plugins' tables are kept aside, unvalidated, out of repr and dumps (they may
        # hold secrets), until discovery validates each with its plugin's model
        self._sections = dict(self.__pydantic_extra__ or {})
        if self.__pydantic_extra__:
            self.__pydantic_extra__.clear()

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def sources(self) -> dict[tuple[str, ...], str]:
        return self._sources

    def plugin_sections(self) -> dict[str, Any]:
        """The top-level tables the kernel does not own, as read (plugins validate them)."""
        return dict(self._sections)


class ConfigError(Exception):
    """An invalid configuration; ``str()`` is the complete message for the user."""


#: A value whose key path contains one of these is never echoed in an error.
SECRET_WORDS = ("token", "secret", "password", "credential")

#: The reference's environment variables and the key each one sets.
ENV_VARS: dict[str, tuple[str, ...]] = {
    "SERVER_INSTANCE_ID": ("server", "instance_id"),
    "AUTHENTICATION_TOKEN": ("auth", "token"),
    "LOG_LEVEL": ("logging", "level"),
    "LOG_FORMAT": ("logging", "format"),
    "HOST": ("server", "host"),
    "PORT": ("server", "port"),
}


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _describe_input(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(
    err: ValidationError,
    origin: str,
    sources: Mapping[tuple[str, ...], str] | None = None,
    prefix: tuple[str, ...] = (),
) -> str:
    """Render a pydantic error as ``<origin>: <key.path>: <what was expected> (got ...)`` lines.

    ``sources`` maps key paths set from elsewhere (environment, flags) to their name, so the
    message names where the bad value came from. Secret values are never echoed.
    """
    lines = []
    for item in err.errors():
        loc = prefix + tuple(str(p) for p in item["loc"])
        where = origin
        if sources:
            for path, name in sources.items():
                if loc[: len(path)] == path:
                    where = name
                    break
        key = ".".join(loc) if loc else "(top level)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        value = item.get("input")
        # never echo secrets, nor whole sections (they may hold secrets of their own)
        hidden = (
            any(word in str(part).lower() for part in loc for word in SECRET_WORDS)
            or item["type"] == "extra_forbidden"
            or isinstance(value, (dict, list))
        )
        shown = "" if hidden else f" (got {_describe_input(value)})"
        lines.append(f"{where}: {key}: {msg}{shown}")
    return "\n".join(lines)


def read_toml(path: Path) -> dict[str, Any]:
    """Read one TOML file, turning every failure into a :class:`ConfigError` naming the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, ...], tuple[str, Any]] | None = None,
) -> Settings:
    """Build the settings: ``path`` (None = no file) < ``env`` (default ``os.environ``) < ``overrides``.

    ``overrides`` maps a key path to ``(source name, value)``, e.g.
    ``{("server", "port"): ("--port", 7000)}``.
    """
    origin = str(path) if path is not None else "defaults"
    raw: dict[str, Any] = read_toml(Path(path)) if path is not None else {}
    if raw:
        # the file must be valid on its own: a flag or variable must not hide a bad value in it
        try:
            Settings.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, origin)) from None
    sources: dict[tuple[str, ...], str] = {}
    environ = os.environ if env is None else env
    for var, key in ENV_VARS.items():
        value = environ.get(var)
        if value is None:
            continue
        if var == "AUTHENTICATION_TOKEN" and value == "":
            _set(raw, key, None)  # empty = auth off, as in the reference
        elif value == "":
            continue
        else:
            _set(raw, key, value)
        sources[key] = f"environment variable {var}"
    for key, (name, value) in (overrides or {}).items():
        if value is None:
            continue
        _set(raw, key, value)
        sources[key] = name
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin, sources)) from None
    settings._origin = origin
    settings._sources = sources
    return settings


def default_config_path(cwd: Path | None = None) -> Path | None:
    """``./airi.toml`` when it exists, else None (run on defaults)."""
    candidate = (cwd or Path.cwd()) / "airi.toml"
    return candidate if candidate.is_file() else None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only reaches this machine (``0.0.0.0``, ``::`` and names other
    than ``localhost`` do not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
