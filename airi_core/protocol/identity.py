"""Module identities and labels, as the protocol defines them.

A ``ModuleIdentity`` is ``{id, kind: "plugin", plugin: {id, version?, labels?}, labels?}``; a
module's labels are ``plugin.labels`` overlaid by ``labels``. These helpers read identities as
plain JSON objects (the hub never trusts their shape); :mod:`airi_core.protocol.models` has the
strict pydantic models a client validates what it sends with.
"""

from __future__ import annotations

from typing import Any

from . import errors

__all__ = [
    "SERVER_PLUGIN_ID",
    "labels_of",
    "plugin_id_of",
    "instance_id_of",
    "is_valid_identity",
    "label_text",
    "non_negative_int",
    "announce_error",
    "label_count",
]

#: ``metadata.source.plugin.id`` of every event the hub itself originates.
SERVER_PLUGIN_ID = "proj-airi:server-runtime"


def labels_of(identity: Any) -> dict[str, Any]:
    """A module's labels: ``identity.plugin.labels`` overlaid by ``identity.labels``."""
    labels: dict[str, Any] = {}
    if not isinstance(identity, dict):
        return labels
    plugin = identity.get("plugin")
    if isinstance(plugin, dict):
        pl = plugin.get("labels")
        if isinstance(pl, dict):
            labels.update(pl)
    own = identity.get("labels")
    if isinstance(own, dict):
        labels.update(own)
    return labels


def label_count(identity: Any) -> int:
    """How many labels ``identity`` declares (``plugin.labels`` and ``labels`` together, before
    the overlay): what a label limit bounds, since every one is matched against selectors."""
    if not isinstance(identity, dict):
        return 0
    plugin = identity.get("plugin")
    pl = plugin.get("labels") if isinstance(plugin, dict) else None
    own = identity.get("labels")
    return (len(pl) if isinstance(pl, dict) else 0) + (len(own) if isinstance(own, dict) else 0)


def plugin_id_of(identity: Any) -> str:
    """``identity.plugin.id`` when it is a string, else ``""``."""
    plugin = identity.get("plugin") if isinstance(identity, dict) else None
    pid = plugin.get("id") if isinstance(plugin, dict) else None
    return pid if isinstance(pid, str) else ""


def instance_id_of(identity: Any) -> str:
    """``identity.id`` (the module instance's id) when it is a string, else ``""``."""
    iid = identity.get("id") if isinstance(identity, dict) else None
    return iid if isinstance(iid, str) else ""


def is_valid_identity(identity: Any) -> bool:
    """What ``module:announce`` requires of an identity: ``kind == "plugin"`` and a non-empty
    string ``plugin.id``."""
    return isinstance(identity, dict) and identity.get("kind") == "plugin" and bool(plugin_id_of(identity))


def label_text(value: Any) -> str:
    """Labels are strings on the wire; render other JSON scalars the way JS would."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def non_negative_int(value: Any) -> int | None:
    """``value`` as an index when JSON-wise it is a non-negative integer (``2.0`` counts, as in
    JS; booleans do not), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def announce_error(data: dict[str, Any]) -> str | None:
    """The protocol's checks of a ``module:announce`` payload, in the protocol's order (name,
    index, identity): the exact error message of the first that fails, or None."""
    name = data.get("name")
    if not isinstance(name, str) or not name:
        return errors.MODULE_ANNOUNCE_NAME_INVALID
    if "index" in data and non_negative_int(data["index"]) is None:
        return errors.MODULE_ANNOUNCE_INDEX_INVALID
    if not is_valid_identity(data.get("identity")):
        return errors.MODULE_ANNOUNCE_IDENTITY_INVALID
    return None
