"""``ui-configure``: ``ui:configure {moduleName?, moduleIndex?, identity?, config}`` sends
``module:configure {config}`` to the announced module, with the sender's metadata.

Only authenticated senders; an unknown module answers ``module not found...``. The name is
``moduleName`` (an empty one is refused, and so is a non-string one from an April connection
that names no identity; without it, ``identity.id`` when ``identity`` is a
2026-08 extension module identity). Which module is meant depends on the family, since April
and extension modules are keyed differently (``hub.registry``):

- with an extension-module ``identity``: the extension module with that id (and that
  ``moduleName`` when given); when two connections hold it (a reconnecting client), the one
  that announced it last;
- else with ``moduleIndex``: the April module ``(moduleName, moduleIndex)``, held by the peer
  that announced it first and is still connected, so a later announce of the same name and
  index never takes a module's configuration over;
- else by name alone: the one module of either family with that name (April modules alone:
  the earliest announcer when it announced without an index or is the only one); a name held
  by several modules finds nothing.

The metadata is the sender's as the hub attributed it: ``metadata.source`` is the sender's
identity (none when it has none), never the server's and never what the frame claimed, so a
module can tell which module configured it.
"""

from __future__ import annotations

from airi_core import ACCEPT, Accept, Event, Hub, Peer, Reject, errors, hookimpl
from airi_core.protocol import new_id, non_negative_int
from airi_core.protocol.identity import instance_id_of, is_extension_module_identity



class UiConfigure:
    @hookimpl
    def airi_event(self, hub: Hub, peer: Peer, event: Event) -> Accept | Reject | None:
        if event.type != "ui:configure":
            return None
        if not peer.authenticated:
            return Reject(errors.NOT_AUTHENTICATED)
        data = event.data
        identity = data.get("identity")
        by_id = is_extension_module_identity(identity)
        module_id = instance_id_of(identity)
        name = data.get("moduleName")
        if name is None:
            if not by_id:
                return Reject(errors.UI_CONFIGURE_MODULE_NAME_INVALID)
        elif name == "" or not isinstance(name, str) and peer.generation != "head" and not by_id:
            # a non-string name: refused as April did; the 2026-08 reference looks it up (and
            # finds nothing), which a 2026-08 connection or a request by identity gets
            return Reject(errors.UI_CONFIGURE_MODULE_NAME_INVALID)
        index = None
        if "moduleIndex" in data:
            index = non_negative_int(data["moduleIndex"])
            if index is None:
                return Reject(errors.UI_CONFIGURE_MODULE_INDEX_INVALID)
        registry = hub.registry
        target = None
        if by_id:
            if name is None or isinstance(name, str):
                module = registry.find_extension_module(module_id, name)
                target = module.peer if module is not None else None
        elif isinstance(name, str):
            target = registry.find_module(name, index) if index is not None else registry.find_named(name)
        if target is None:
            return Reject(errors.MODULE_NOT_FOUND)
        config = data.get("config")
        # the kernel attributed the event: its source is the sender's announced identity, or
        # absent; without any metadata, a fresh event id and still no source (never the hub's)
        metadata = event.metadata if event.metadata is not None else {"event": {"id": new_id()}}
        hub.send(target, "module:configure", {"config": config if config is not None else {}}, metadata=metadata)
        return ACCEPT
