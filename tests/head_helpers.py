"""Helpers for the HEAD-generation end-to-end tests (tests/test_head_*.py): raw ``HubClient``s
that speak the 2026-08 events, identities of both families, and the exact HEAD error strings
(PROTOCOL-HEAD.md section 5), on top of airi_core.testing and tests/protocol_helpers.py."""

from __future__ import annotations

import json
from typing import Any

from airi_core.testing import HubClient

from .protocol_helpers import event_id, nonce, parent_id

# -- exact strings (PROTOCOL-HEAD.md section 5, PROTOCOL.md) --------------------------------------
HEAD_NAME_INVALID = "the field 'name' must be a non-empty string for event 'extension:module:announce'"
HEAD_IDENTITY_INVALID = "extension module identity must include an extension id for event 'extension:module:announce'"
APRIL_NAME_INVALID = "the field 'name' must be a non-empty string for event 'module:announce'"
APRIL_IDENTITY_INVALID = "module identity must include kind=plugin and a plugin id for event 'module:announce'"
MUST_AUTH = "must authenticate before announcing"
INVALID_TOKEN = "invalid token"
NOT_AUTHENTICATED = "not authenticated"
INVALID_FORMAT = "invalid event format"
MODULE_NOT_FOUND = "module not found, it hasn't announced itself or the name is incorrect"
UI_NAME_EMPTY = "the field 'moduleName' can't be empty for event 'ui:configure'"
UI_INDEX_INVALID = "the field 'moduleIndex' must be a non-negative integer for event 'ui:configure'"
TOKEN = "s3cret"

#: big announce limits and immediate syncs, so a test sees every sync at once and a fence covers it
BASE: dict[str, Any] = {"plugins": {"registry": {"sync_debounce_ms": 0, "announce_burst": 1000, "announce_rate_per_second": 1000.0}}}


def settings(token: str | None = None, **sections: Any) -> dict[str, Any]:
    s: dict[str, Any] = json.loads(json.dumps(BASE))
    if token:
        s["auth"] = {"token": token}
    for key, value in sections.items():
        s.setdefault(key, {}).update(value)
    return s


def server_only(etype: str) -> str:
    return f"the event type '{etype}' is sent by the server only, event refused"


# -- identities --------------------------------------------------------------------------------
def ext_identity(ext_id: str, labels: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    ident: dict[str, Any] = {"id": ext_id, **extra}
    if labels is not None:
        ident["labels"] = labels
    return ident


def mod_identity(module_id: str, ext: str | dict[str, Any], labels: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ExtensionModuleIdentity ``{id, extension: {id, ...}, labels?}``."""
    ident: dict[str, Any] = {"id": module_id, "extension": ext_identity(ext) if isinstance(ext, str) else ext}
    if labels is not None:
        ident["labels"] = labels
    return ident


def hybrid(module_id: str, ext_id: str) -> dict[str, Any]:
    """The HEAD SDK's metadata.source."""
    return {"kind": "plugin", "id": module_id, "extension": {"id": ext_id}, "plugin": {"id": ext_id}}


def listed(identity: dict[str, Any]) -> dict[str, Any]:
    """An extension identity as decision 3 lists it in registry:modules:sync: verbatim plus
    ``kind: "plugin"`` and ``plugin: {id: <extension id>}``."""
    return {**identity, "kind": "plugin", "plugin": {"id": identity["extension"]["id"]}}


def sync_entry(name: str, identity: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "identity": listed(identity)}


def lists(ev: dict[str, Any], name: str, module_id: str) -> bool:
    return ev.get("type") == "registry:modules:sync" and any(
        m.get("name") == name and (m.get("identity") or {}).get("id") == module_id for m in ev["data"]["modules"]
    )


def sync_ids(ev: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(m["name"], m["identity"].get("id")) for m in ev["data"]["modules"]]


# -- raw HEAD operations on a HubClient ----------------------------------------------------------
async def head_connect(connect: Any, hub: Any, name: str, module_id: str | None = None, ext_id: str | None = None, **kw: Any) -> HubClient:
    """A raw client whose frames carry the HEAD SDK's hybrid source (module ``module_id`` of
    extension ``ext_id``). Connect-time events are in ``received`` (a fence ended the connect)."""
    c: HubClient = await connect(hub, name, **kw)
    c.identity = hybrid(module_id or f"{name}-mid", ext_id or name)
    return c


async def send_head(c: HubClient, type: str, data: Any, **kw: Any) -> dict[str, Any]:
    """Send superjson-wrapped, as the HEAD SDK does."""
    return await c.send(type, data, wrap=True, **kw)


async def ext_module_announce(
    c: HubClient,
    name: str,
    identity: dict[str, Any],
    *,
    possible_events: list[str] | None = None,
    wait: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """``extension:module:announce``; with ``wait``, wait for the sync listing it and then the
    announced echo (parentId = the announce id). Returns the announce event."""
    start = c.mark()
    data = {"name": name, "identity": identity, "possibleEvents": possible_events or [], **extra}
    ev = await send_head(c, "extension:module:announce", data)
    if wait:
        eid = event_id(ev)
        await c.wait_for("registry:modules:sync", lambda e: lists(e, name, identity["id"]), start=start)
        await c.wait_for("extension:module:announced", lambda e: parent_id(e) == eid, start=start)
    return ev


async def peer_authenticate(c: HubClient, token: str | None = None, peer_id: Any = ..., **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if token is not None:
        data["token"] = token
    if peer_id is not ...:
        data["peerId"] = peer_id
    start = c.mark()
    ev = await send_head(c, "peer:authenticate", data, **kw)
    return await c.wait_for(None, lambda e: parent_id(e) == event_id(ev) and e["type"] != "registry:modules:sync", start=start)


async def extension_announce(c: HubClient, identity: dict[str, Any], **extra: Any) -> dict[str, Any]:
    start = c.mark()
    ev = await send_head(c, "extension:announce", {"identity": identity, **extra})
    await c.wait_for("extension:announced", lambda e: parent_id(e) == event_id(ev), start=start)
    return ev


async def adopt(c: HubClient, source: dict[str, Any]) -> None:
    """Send an event carrying ``source`` that reaches nobody (``route.destinations: []``) and
    make sure the hub handled it."""
    start = c.mark()
    await c.send("test:adopt", {"n": nonce()}, metadata={"source": source, "event": {"id": nonce("adopt")}}, route={"destinations": []})
    await c.fence()
    assert not c.error_messages(start), c.error_messages(start)


async def raw_error(c: HubClient, frame: str) -> dict[str, Any]:
    start = c.mark()
    await c.send_raw(frame)
    return await c.wait_for("error", start=start)
