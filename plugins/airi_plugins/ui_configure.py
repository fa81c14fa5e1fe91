"""``ui-configure``: ``ui:configure {moduleName, moduleIndex?, config}`` sends
``module:configure {config}`` to the announced module, with the sender's original metadata.

Only authenticated senders; with no ``moduleIndex`` a name announced by exactly one peer is found
whatever its index; an unknown module answers ``module not found...``."""

from __future__ import annotations

from airi_core import ACCEPT, Accept, Event, Hub, Peer, Reject, errors, hookimpl
from airi_core.protocol import non_negative_int




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
        metadata = event.metadata if event.metadata is not None else hub.metadata(event.id)
        hub.send(target, "module:configure", {"config": config if config is not None else {}}, metadata=metadata)
        return ACCEPT
