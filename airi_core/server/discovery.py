"""LAN discovery: advertise the hub with mDNS / DNS-SD, and find hubs (``airi discover``).

With ``[discovery] mdns = true`` the hub registers the service ``<name>._airi._tcp.local.``
through python-zeroconf once it listens, and withdraws it (goodbye packets) when it shuts down.
TXT keys (:data:`TXT_VERSION` 1):

- ``txtvers``: ``1``;
- ``path``: the WebSocket path (``/ws``);
- ``proto``: ``ws`` or ``wss`` (TLS configured);
- ``auth``: ``token`` when peers must authenticate, else ``none`` (never the token itself);
- ``id``: the hub's instance id (``metadata.source.id`` of its events).

Addresses: the bound address, or every interface's address when bound to a wildcard
(``0.0.0.0``, ``::``), or ``[discovery] interfaces``. Advertising a loopback-only bind is
allowed (other programs on this machine can find it) but warned about: nothing on the network
can connect to it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import is_loopback

if TYPE_CHECKING:
    from .kernel import Hub

__all__ = ["SERVICE_TYPE", "TXT_VERSION", "Advertiser", "FoundHub", "browse", "txt_record"]

SERVICE_TYPE = "_airi._tcp.local."
TXT_VERSION = "1"

log = logging.getLogger("airi.discovery")

_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def _auth_required(hub: Hub) -> bool:
    """Whether peers must authenticate: the ``enabled`` (or ``secret``) of the settings of the
    plugin that owns ``[auth]``."""
    for info in hub.plugins.infos:
        if info.enabled and info.section == ("auth",):
            config = hub.plugins.configs.get(info.name)
            return bool(getattr(config, "enabled", getattr(config, "secret", "")))
    return False


def txt_record(hub: Hub) -> dict[str, str]:
    """The TXT keys advertised for ``hub``."""
    server = hub.settings.server
    return {
        "txtvers": TXT_VERSION,
        "path": server.path,
        "proto": "wss" if server.tls is not None else "ws",
        "auth": "token" if _auth_required(hub) else "none",
        "id": hub.instance_id,
    }


def _interface_addresses() -> list[str]:
    """Every address of this machine's interfaces but loopback and link-local ones."""
    import ifaddr  # a dependency of zeroconf

    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                continue
            if not (addr.is_loopback or addr.is_link_local or addr.is_unspecified):
                out.append(str(addr))
    return out


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:40] or "hub"


class Advertiser:
    """The mDNS registration of one hub (``hub.advertiser`` while it runs)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        cfg = hub.settings.discovery
        self.name = cfg.name or f"AIRI hub on {socket.gethostname()}"
        self.interfaces = list(cfg.interfaces)
        self._zc: Any = None
        self._info: Any = None
        self._task: asyncio.Task[None] | None = None
        #: set once the service is registered (or registering failed)
        self.registered = asyncio.Event()
        self.error: str | None = None

    def addresses(self) -> list[str]:
        host = self.hub._transport.address()[0]
        if self.interfaces:
            return list(self.interfaces)
        if host in _WILDCARDS:
            return _interface_addresses() or ["127.0.0.1"]
        return [host]

    async def start(self) -> None:
        """Register in the background: probing the name takes a second or two."""
        from zeroconf import IPVersion, ServiceInfo
        from zeroconf.asyncio import AsyncZeroconf

        hub = self.hub
        addresses = self.addresses()
        if all(is_loopback(a) for a in addresses):
            log.warning(
                "advertising %s over mDNS on a loopback address (%s): only this machine can connect; "
                "bind [server] host to a LAN address (or 0.0.0.0) for others to use it",
                hub.url, ", ".join(addresses),
            )
        packed = [ipaddress.ip_address(a).packed for a in addresses]
        v6 = any(len(p) == 16 for p in packed)
        v4 = any(len(p) == 4 for p in packed)
        version = IPVersion.All if v4 and v6 else (IPVersion.V6Only if v6 else IPVersion.V4Only)
        interfaces: Any = self.interfaces or (addresses if all(is_loopback(a) for a in addresses) else None)
        kwargs: dict[str, Any] = {"ip_version": version}
        if interfaces:
            kwargs["interfaces"] = interfaces
        self._zc = AsyncZeroconf(**kwargs)
        self._info = ServiceInfo(
            SERVICE_TYPE,
            f"{self.name}.{SERVICE_TYPE}",
            addresses=packed,
            port=hub.port,
            properties=txt_record(hub),
            server=f"airi-{_label(hub.instance_id)}.local.",
        )
        self._task = asyncio.get_running_loop().create_task(self._register())

    async def _register(self) -> None:
        try:
            await self._zc.async_register_service(self._info, allow_name_change=True)
            log.info("advertising %s over mDNS as '%s' (%s)", self.hub.url, self._info.name.removesuffix("." + SERVICE_TYPE), SERVICE_TYPE)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("cannot advertise over mDNS: %s", self.error)
        finally:
            self.registered.set()

    async def stop(self) -> None:
        """Withdraw the service (goodbye packets) and close zeroconf."""
        if self._zc is None:
            return
        zc, self._zc = self._zc, None
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            if self.error is None and self.registered.is_set():
                await asyncio.wait_for(zc.async_unregister_service(self._info), 5.0)
                log.info("withdrew the mDNS advertisement")
        except Exception as exc:
            log.warning("cannot withdraw the mDNS advertisement: %s: %s", type(exc).__name__, exc)
        finally:
            await zc.async_close()


@dataclass
class FoundHub:
    """One hub ``airi discover`` found."""

    name: str
    addresses: list[str]
    port: int
    path: str
    proto: str
    auth: str
    id: str
    txtvers: str

    @property
    def url(self) -> str:
        host = self.addresses[0] if self.addresses else "?"
        if ":" in host:
            host = f"[{host}]"
        return f"{self.proto}://{host}:{self.port}{self.path}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "addresses": self.addresses, "port": self.port, "path": self.path,
                "proto": self.proto, "auth": self.auth, "id": self.id, "txtvers": self.txtvers, "url": self.url}


def _text(props: dict[Any, Any], key: str, default: str) -> str:
    value = props.get(key.encode())
    if value is None:
        return default
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def browse(timeout: float, interfaces: list[str] | None = None) -> list[FoundHub]:
    """Listen for ``_airi._tcp`` services for ``timeout`` seconds and resolve each one."""
    from zeroconf import IPVersion, ServiceStateChange, Zeroconf
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    kwargs: dict[str, Any] = {"ip_version": IPVersion.V4Only}
    if interfaces:
        kwargs["interfaces"] = interfaces
        if any(":" in i for i in interfaces):
            kwargs["ip_version"] = IPVersion.All
    azc = AsyncZeroconf(**kwargs)
    names: dict[str, None] = {}

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            names.pop(name, None)
        else:
            names[name] = None

    browser = AsyncServiceBrowser(azc.zeroconf, [SERVICE_TYPE], handlers=[on_change])
    found: list[FoundHub] = []
    try:
        await asyncio.sleep(timeout)  # the listening window the user asked for
        for name in list(names):
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if not await info.async_request(azc.zeroconf, 1500):
                continue
            props = info.properties or {}
            found.append(FoundHub(
                name=name.removesuffix("." + SERVICE_TYPE),
                addresses=info.parsed_scoped_addresses(),
                port=info.port or 0,
                path=_text(props, "path", "/ws"),
                proto=_text(props, "proto", "ws"),
                auth=_text(props, "auth", "?"),
                id=_text(props, "id", ""),
                txtvers=_text(props, "txtvers", ""),
            ))
    finally:
        await browser.async_cancel()
        await azc.async_close()
    return sorted(found, key=lambda h: h.name)
