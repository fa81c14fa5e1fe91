"""Module identities and labels, as the protocol defines them.

April generation: a ``ModuleIdentity`` is ``{id, kind: "plugin", plugin: {id, version?,
labels?}, labels?}``; a module's labels are ``plugin.labels`` overlaid by ``labels``.

2026-08 (HEAD) generation adds an ``ExtensionIdentity`` ``{id, version?, sessionId?, labels?}``
(an object whose ``id`` is a string) and an ``ExtensionModuleIdentity`` ``{id, extension:
ExtensionIdentity, labels?}`` (an object whose ``id`` is a string and whose ``extension`` is an
extension identity). The HEAD SDK's ``metadata.source`` is a hybrid that passes both tests:
``{kind: "plugin", id, extension, labels?, plugin: {id: <extension id>}}``. Labels, for both:
the connection's extension identity's, then ``identity.extension.labels``,
``identity.plugin.labels`` and ``identity.labels`` (later wins).

These helpers read identities as plain JSON objects (the hub never trusts their shape);
:mod:`airi_core.protocol.models` has the strict pydantic models a client validates what it sends
with.
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
    "is_extension_identity",
    "is_extension_module_identity",
    "extension_id_of",
    "extension_labels_view",
    "devtools_label",
    "normalize_identity",
    "sync_identity",
    "extension_module_announce_error",
    "extension_source",
    "source_consistent",
]

#: ``metadata.source.plugin.id`` of every event the hub itself originates.
SERVER_PLUGIN_ID = "proj-airi:server-runtime"


def _labels_in(obj: Any) -> dict[str, Any] | None:
    labels = obj.get("labels") if isinstance(obj, dict) else None
    return labels if isinstance(labels, dict) else None


def labels_of(identity: Any) -> dict[str, Any]:
    """A module's labels: ``identity.extension.labels``, overlaid by ``identity.plugin.labels``,
    overlaid by ``identity.labels`` (an April identity has no ``extension``)."""
    labels: dict[str, Any] = {}
    if not isinstance(identity, dict):
        return labels
    ext = _labels_in(identity.get("extension"))
    if ext:
        labels.update(ext)
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
    """How many labels ``identity`` declares (``extension.labels``, ``plugin.labels`` and
    ``labels`` together, before the overlay): what a label limit bounds, since every one is matched against selectors."""
    if not isinstance(identity, dict):
        return 0
    return sum(len(found or ()) for found in (
        _labels_in(identity.get("extension")), _labels_in(identity.get("plugin")), _labels_in(identity),
    ))


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


# -- the 2026-08 (HEAD) generation --------------------------------------------------------------
def is_extension_identity(value: Any) -> bool:
    """An ``ExtensionIdentity`` as the HEAD reference tests it: an object whose ``id`` is a string."""
    return isinstance(value, dict) and isinstance(value.get("id"), str)


def is_extension_module_identity(value: Any) -> bool:
    """An ``ExtensionModuleIdentity``: an object whose ``id`` is a string and whose ``extension``
    is an extension identity (the HEAD SDK's hybrid ``metadata.source`` passes too)."""
    return is_extension_identity(value) and is_extension_identity(value.get("extension"))


def extension_id_of(identity: Any) -> str:
    """``identity.extension.id`` when it is a string, else ``""``."""
    ext = identity.get("extension") if isinstance(identity, dict) else None
    eid = ext.get("id") if isinstance(ext, dict) else None
    return eid if isinstance(eid, str) else ""


def extension_labels_view(extension: Any, identity: Any) -> dict[str, Any]:
    """A connection's labels: its extension identity's (``extension:authenticate`` /
    ``extension:announce``), overlaid by :func:`labels_of` its identity."""
    labels = dict(_labels_in(extension) or {})
    labels.update(labels_of(identity))
    return labels


def devtools_label(identity: Any) -> bool:
    """Whether ``identity``'s own labels say ``devtools`` = ``true``/``1``."""
    value = labels_of(identity).get("devtools")
    return value is not None and label_text(value) in ("true", "1")


def normalize_identity(identity: Any) -> Any:
    """The published SDK 0.8.4's *default* identity ``{plugin: "<name>", instanceId: "<id>"}``
    (neither generation's shape) as the April one: ``{id: <instanceId>, kind: "plugin", plugin:
    {id: <name>}}``. Anything else is returned as it is."""
    if isinstance(identity, dict) and isinstance(identity.get("plugin"), str) and "kind" not in identity:
        normalized: dict[str, Any] = {}
        instance = identity.get("instanceId")
        if isinstance(instance, str):
            normalized["id"] = instance
        normalized["kind"] = "plugin"
        normalized["plugin"] = {"id": identity["plugin"]}
        return normalized
    return identity


def sync_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """An extension module's identity as ``registry:modules:sync`` lists it: as announced, plus
    ``kind: "plugin"`` and ``plugin: {id: <extension id>}`` where absent, so that April readers
    find a plugin id (HEAD readers compare only ``name`` and ``identity.id``)."""
    if "kind" in identity and "plugin" in identity:
        return identity
    listed = dict(identity)
    listed.setdefault("kind", "plugin")
    listed.setdefault("plugin", {"id": extension_id_of(identity)})
    return listed


def extension_module_announce_error(data: dict[str, Any], connection_extension: Any) -> str | None:
    """The checks of an ``extension:module:announce`` after the authentication check, in the
    HEAD order: name, identity, then the connection's extension (a connection holds the modules
    of one extension: ``identity.extension.id`` must equal the id of the extension identity it
    already has). The HEAD error text of the first that fails, or None."""
    name = data.get("name")
    if not isinstance(name, str) or not name:
        return errors.EXTENSION_MODULE_ANNOUNCE_NAME_INVALID
    identity = data.get("identity")
    if not is_extension_module_identity(identity):
        return errors.EXTENSION_MODULE_ANNOUNCE_IDENTITY_INVALID
    if is_extension_identity(connection_extension) and connection_extension["id"] != extension_id_of(identity):
        return errors.EXTENSION_MODULE_ANNOUNCE_IDENTITY_INVALID
    return None


def extension_source(identity: dict[str, Any]) -> dict[str, Any]:
    """The ``metadata.source`` the HEAD SDK writes for the extension module ``identity``:
    ``{kind: "plugin", id, extension, labels?, plugin: {id: <extension id>}}``."""
    source: dict[str, Any] = {"kind": "plugin", "id": identity.get("id"), "extension": identity.get("extension")}
    if "labels" in identity:
        source["labels"] = identity["labels"]
    source["plugin"] = {"id": extension_id_of(identity)}
    return source


def source_consistent(source: Any, identity: dict[str, Any]) -> bool:
    """Whether ``source`` claims nothing about the extension module ``identity`` beyond what was
    announced: it is the module's identity itself or the HEAD SDK's hybrid of it (keys in any
    order), so a frame carrying it can be forwarded as sent."""
    from .events import same_json  # events imports nothing of this module's users

    return same_json(source, extension_source(identity)) or same_json(source, identity)
