"""The client's view of the hub's module registry: the latest ``registry:modules:sync`` listing
and the health reports since, kept up to date from the events the hub sends."""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import ValidationError

from ..protocol.events import Event
from ..protocol.models import ModuleEntry, ModuleHealth, RegistrySync
from .errors import ProtocolError

__all__ = ["ModuleDirectory", "REGISTRY_EVENTS"]

_SYNC = "registry:modules:sync"
_UNHEALTHY = "registry:modules:health:unhealthy"
_HEALTHY = "registry:modules:health:healthy"
_DE_ANNOUNCED = "module:de-announced"
_EXT_DE_ANNOUNCED = "extension:module:de-announced"  # the 2026-08 family's

#: The event types :meth:`ModuleDirectory.apply` learns from.
REGISTRY_EVENTS = frozenset({_SYNC, _UNHEALTHY, _HEALTHY, _DE_ANNOUNCED, _EXT_DE_ANNOUNCED})


class ModuleDirectory:
    """``modules``: the latest listing; ``unhealthy``: modules the hub reported unhealthy
    (``(name, index)`` -> reason) and not healthy since."""

    def __init__(self) -> None:
        self.modules: list[ModuleEntry] = []
        self.unhealthy: dict[tuple[str, int | None], str] = {}

    def apply(self, event: Event) -> ProtocolError | None:
        """Learn from a registry event (one of :data:`REGISTRY_EVENTS`); the error to report
        when its payload is malformed."""
        etype, data = event.type, event.data
        if etype == _SYNC:
            try:
                self.modules = RegistrySync.model_validate(data).modules
            except ValidationError as exc:
                return ProtocolError(f"malformed registry:modules:sync: {exc}")
            present = {m.key for m in self.modules}
            self.unhealthy = {k: v for k, v in self.unhealthy.items() if k in present}
        elif etype in (_UNHEALTHY, _HEALTHY):
            try:
                entry = ModuleHealth.model_validate(data)
            except ValidationError as exc:
                return ProtocolError(f"malformed {etype}: {exc}")
            if etype == _UNHEALTHY:
                self.unhealthy[entry.key] = entry.reason or "unhealthy"
            else:
                self.unhealthy.pop(entry.key, None)
        elif etype in (_DE_ANNOUNCED, _EXT_DE_ANNOUNCED):
            with contextlib.suppress(ValidationError):
                self.unhealthy.pop(ModuleEntry.model_validate(data).key, None)
        return None

    def find(self, source: Event | dict[str, Any] | None) -> ModuleEntry | None:
        """The announced module whose identity is ``source`` (an identity or an event's sender):
        the entry with exactly that identity, else the only one with its instance id."""
        if isinstance(source, Event):
            source = source.source
        if not isinstance(source, dict):
            return None
        for entry in self.modules:
            if entry.identity == source:
                return entry
        iid = source.get("id")
        if isinstance(iid, str) and iid:
            found = [e for e in self.modules if e.instance_id == iid]
            if len(found) == 1:
                return found[0]
        return None

    def destination_of(self, event: Event) -> str | None:
        """A destination string that reaches the sender of ``event``: ``module:NAME`` when it
        is listed, else ``instance:ID``."""
        entry = self.find(event)
        if entry is not None:
            return f"module:{entry.name}"
        iid = event.source_instance_id
        return f"instance:{iid}" if iid else None
