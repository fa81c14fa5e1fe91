"""Helpers shared by the end-to-end protocol tests (tests/test_protocol_*.py).

They sit on top of :mod:`airi_core.testing` (``HubClient``, whose ``fence()``, ``wait_closed()``,
``of_type()`` and ``error_messages()`` they use) and add what the protocol tests need over and
over: identities, server-metadata assertions, "who received this probe" with a deterministic
fence and keep-alive tasks for liveness tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from airi_core import __version__ as HUB_VERSION
from airi_core.testing import HubClient

SERVER_PLUGIN_ID = "proj-airi:server-runtime"

#: Event types only the server builds (everything else a client receives was forwarded).
SERVER_TYPES = frozenset(
    {
        "error",
        "module:authenticated",
        "registry:modules:sync",
        "module:announced",
        "module:de-announced",
        "registry:modules:health:healthy",
        "registry:modules:health:unhealthy",
        "transport:connection:heartbeat",
    }
)

_nonce = itertools.count(1)


def nonce(prefix: str = "n") -> str:
    return f"{prefix}-{next(_nonce)}"


def identity(
    name: str,
    plugin_id: str | None = None,
    *,
    instance: str | None = None,
    labels: dict[str, Any] | None = None,
    plugin_labels: dict[str, Any] | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """A ``ModuleIdentity``; plugin id defaults to ``name``, instance id to ``<name>-instance``."""
    plugin: dict[str, Any] = {"id": plugin_id or name}
    if version is not None:
        plugin["version"] = version
    if plugin_labels is not None:
        plugin["labels"] = plugin_labels
    ident: dict[str, Any] = {"id": instance or f"{name}-instance", "kind": "plugin", "plugin": plugin}
    if labels is not None:
        ident["labels"] = labels
    return ident


def event_id(ev: dict[str, Any]) -> str | None:
    return ((ev.get("metadata") or {}).get("event") or {}).get("id")


def parent_id(ev: dict[str, Any]) -> str | None:
    return ((ev.get("metadata") or {}).get("event") or {}).get("parentId")


def server_source(hub: Any) -> dict[str, Any]:
    return {
        "kind": "plugin",
        "plugin": {"id": SERVER_PLUGIN_ID, "version": hub.version},
        "id": hub.instance_id,
    }


_UNSET: Any = object()


def _no_nulls(value: Any, path: str = "") -> None:
    if value is None:
        raise AssertionError(f"server sent null at {path or '<root>'} (omit keys instead)")
    if isinstance(value, dict):
        for k, v in value.items():
            _no_nulls(v, f"{path}.{k}")


def assert_server_event(ev: dict[str, Any], hub: Any, parent: Any = _UNSET) -> None:
    """``ev`` carries the server's metadata: source, a fresh id and (when given) ``parentId``.

    ``parent=None`` asserts there is no ``parentId``; a string asserts that value.
    """
    md = ev.get("metadata")
    assert isinstance(md, dict), ev
    src = md.get("source")
    assert src == server_source(hub), f"bad server source in {ev}"
    assert src["plugin"]["id"] == "proj-airi:server-runtime"
    assert isinstance(src["plugin"]["version"], str) and src["plugin"]["version"] == HUB_VERSION
    evmd = md.get("event")
    assert isinstance(evmd, dict) and isinstance(evmd.get("id"), str) and evmd["id"], ev
    _no_nulls(md, "metadata")
    if parent is not _UNSET:
        if parent is None:
            assert "parentId" not in evmd, ev
        else:
            assert evmd.get("parentId") == parent, f"expected parentId {parent!r} on {ev}"


async def expect_error(
    client: HubClient, message: str, *, start: int, parent: Any = _UNSET, timeout: float = 3.0
) -> dict[str, Any]:
    """The first ``error`` received from index ``start`` (take it with :meth:`HubClient.mark`
    *before* sending) must have ``data.message`` exactly ``message``."""
    ev = await client.wait_for("error", timeout=timeout, start=start)
    assert ev["data"] == {"message": message}, f"{client.name}: expected error {message!r}, got {ev['data']!r}"
    if parent is not _UNSET:
        assert parent_id(ev) == parent, ev
    return ev


async def send_frame_expect_error(client: HubClient, frame: str | bytes, timeout: float = 3.0) -> dict[str, Any]:
    """Send a raw frame and return the next ``error`` event."""
    start = client.mark()
    await client.send_raw(frame)
    return await client.wait_for("error", timeout=timeout, start=start)


async def assert_alive(client: HubClient, timeout: float = 3.0) -> None:
    """The socket is open and the hub still answers this peer (:meth:`HubClient.fence`, a
    heartbeat round trip whose pong is not recorded in ``received``)."""
    await client.fence(timeout)
    assert client.close_code is None


def got_probe(client: HubClient, probe: str, start: int = 0) -> list[dict[str, Any]]:
    return [
        e for e in client.received[start:]
        if isinstance(e.get("data"), dict) and e["data"].get("probe") == probe
    ]


async def probe(
    sender: HubClient,
    clients: Iterable[HubClient],
    probes: Sequence[dict[str, Any]],
    *,
    type: str = "test:probe",
) -> list[set[str]]:
    """Send one event per entry of ``probes`` (keys: ``route``, ``data``, ``type``, ``metadata``,
    ``wrap``) and return, for each, the names of ``clients`` that received it.

    The result is exact without sleeping: the sender does a heartbeat round trip after its
    probes (so the hub has handled them and written them to every receiver's socket), then each
    client does one (its pong is written after any probe to it, on the same connection); see
    :meth:`HubClient.fence`. Only works when the hub handles every frame of a peer in order and
    writes without awaiting, as PROTOCOL.md requires.
    """
    clients = list(clients)
    starts = {c.name: c.mark() for c in clients}
    ids: list[str] = []
    for p in probes:
        pid = nonce("probe")
        ids.append(pid)
        data = {**(p.get("data") or {}), "probe": pid}
        kw: dict[str, Any] = {}
        if "route" in p:
            kw["route"] = p["route"]
        if "metadata" in p:
            kw["metadata"] = p["metadata"]
        await sender.send(p.get("type", type), data, wrap=p.get("wrap", False), **kw)
    await sender.fence()
    for c in clients:
        await c.fence()
    return [{c.name for c in clients if got_probe(c, pid, starts[c.name])} for pid in ids]


async def probe_one(sender: HubClient, clients: Iterable[HubClient], route: Any = _UNSET, **kw: Any) -> set[str]:
    p: dict[str, Any] = {}
    if route is not _UNSET:
        p["route"] = route
    for key in ("data", "type", "metadata", "wrap"):
        if key in kw:
            p[key] = kw.pop(key)
    (res,) = await probe(sender, clients, [p], **kw)
    return res


@contextlib.asynccontextmanager
async def keepalive(*clients: HubClient, every: float = 0.02) -> AsyncIterator[None]:
    """Keep ``clients`` alive (raw ``ping`` frames) while the block runs."""

    async def beat() -> None:
        while True:
            for c in clients:
                with contextlib.suppress(Exception):
                    await c.send_raw("ping")
            await asyncio.sleep(every)

    task = asyncio.get_running_loop().create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def modules_of(sync_event: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(m["name"], m.get("index")) for m in sync_event["data"]["modules"]]


def raw_objects(client: HubClient, start: int = 0) -> list[Any]:
    return [json.loads(f) for f in client.raw[start:]]


async def consumer_register(client: HubClient, event: str, **data: Any) -> None:
    """Register as a consumer and make sure the hub processed it (a heartbeat round trip after
    it: replies to one peer come in frame order)."""
    start = client.mark()
    await client.send("module:consumer:register", {"event": event, **data})
    await client.fence()
    assert not client.error_messages(start), client.error_messages(start)


async def consumer_unregister(client: HubClient, event: str, **data: Any) -> None:
    start = client.mark()
    await client.send("module:consumer:unregister", {"event": event, **data})
    await client.fence()
    assert not client.error_messages(start), client.error_messages(start)


def frame_limit_settings(max_frame_bytes: int, **extra: Any) -> dict[str, Any]:
    """Settings with the largest accepted frame set (the key lives in ``[limits]``; older
    layouts had it in ``[server]``)."""
    from airi_core.server.config import Settings

    section = "limits" if "limits" in Settings.model_fields else "server"
    settings: dict[str, Any] = {section: {"max_frame_bytes": max_frame_bytes}}
    for key, value in extra.items():
        settings.setdefault(key, {}).update(value)
    return settings


# -- a small population of announced modules used by the routing tests ------------------------------
#: module name -> announce keyword arguments; the sender is "ui" (plugin proj-airi:ui, env=prod).
WORLD_SPECS: dict[str, dict[str, Any]] = {
    "stage-web": dict(
        identity=identity("stage-web", "proj-airi:stage-web", instance="stage-inst-1", labels={"env": "prod", "tier": "front"})
    ),
    "discord-bot": dict(
        identity=identity(
            "discord-bot", "proj-airi:discord", instance="discord-inst",
            plugin_labels={"env": "dev", "platform": "chat"}, labels={"platform": "discord"},
        )
    ),
    "tts": dict(index=0, identity=identity("tts", "acme:tts", instance="tts-1", labels={"env": "prod"})),
    "odd:name": dict(identity=identity("odd:name", "odd", instance="odd-1")),
}
ALL = frozenset(WORLD_SPECS)


@dataclass
class World:
    hub: Any
    sender: HubClient
    clients: dict[str, HubClient]

    def peer_id(self, name: str) -> str:
        return next(p.id for p in self.hub.registry if p.name == name)

    async def reach(self, route: Any = _UNSET, **kw: Any) -> set[str]:
        """Names of the world's modules that receive one probe from the sender."""
        return await probe_one(self.sender, self.clients.values(), route, **kw)


async def build_world(hub: Any, connect: Any, sender_identity: dict[str, Any] | None = None) -> World:
    sender = await connect(
        hub, "ui", announce=True, identity=sender_identity or identity("ui", "proj-airi:ui", labels={"env": "prod"})
    )
    clients = {name: await connect(hub, name, announce=True, **kw) for name, kw in WORLD_SPECS.items()}
    return World(hub, sender, clients)


async def leave(client: HubClient, observer: HubClient, timeout: float = 3.0) -> None:
    """Close an announced ``client`` and wait until ``observer`` saw it de-announced (the hub has
    then forgotten it)."""
    start = observer.mark()
    name = client.name
    await client.close()
    await observer.wait_for("module:de-announced", lambda e: e["data"].get("name") == name, timeout=timeout, start=start)
