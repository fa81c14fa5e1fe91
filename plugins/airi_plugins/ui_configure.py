"""``ui-configure``: ``ui:configure {moduleName, moduleIndex?, config}`` sends
``module:configure {config}`` to the announced module, with the sender's metadata.

Only authenticated senders; an unknown module answers ``module not found...``. Which peer a
``(moduleName, moduleIndex)`` designates is the registry's rule (``hub.registry.find_module``):
the peer that announced it first and is still connected, so a later announce of the same name
(and index) never takes a module's configuration over; with no ``moduleIndex``, the earliest
announcer of the name when it announced without an index or is the only one, else nobody.

The metadata is the sender's as the hub attributed it: ``metadata.source`` is the sender's
announced identity (none when it has not announced), never the server's and never what the
frame claimed, so a module can tell which module configured it.
"""

from __future__ import annotations

from airi_core import ACCEPT, Accept, Event, Hub, Peer, Reject, errors, hookimpl
from airi_core.protocol import new_id, non_negative_int



class UiConfigure:
    @hookimpl
    def airi_event(self, hub: Hub, peer: Peer, event: Event) -> Accept | Reject | None:
        if event.type != "ui:configure":
            return None
        if not peer.authenticated:
            return Reject(errors.NOT_AUTHENTICATED)
        data = event.data
        name = data.get("moduleName")
        if not isinstance(name, str) or not name:
            return Reject(errors.UI_CONFIGURE_MODULE_NAME_INVALID)
        index = None
        if "moduleIndex" in data:
            index = non_negative_int(data["moduleIndex"])
            if index is None:
                return Reject(errors.UI_CONFIGURE_MODULE_INDEX_INVALID)
        target = hub.registry.find_module(name, index)
        if target is None:
            return Reject(errors.MODULE_NOT_FOUND)
        config = data.get("config")
        # the kernel attributed the event: its source is the sender's announced identity, or
        # absent; without any metadata, a fresh event id and still no source (never the hub's)
        metadata = event.metadata if event.metadata is not None else {"event": {"id": new_id()}}
        hub.send(target, "module:configure", {"config": config if config is not None else {}}, metadata=metadata)
        return ACCEPT
