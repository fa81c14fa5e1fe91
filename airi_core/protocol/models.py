"""Pydantic models of the AIRI protocol events the Python client sends and handles.

Outgoing payloads (:class:`ModuleIdentity`, :class:`AnnounceData`, :class:`ConsumerRegistration`,
:class:`Route`) are validated strictly, before anything reaches the socket. Incoming events are
parsed leniently (:class:`Event` keeps unknown keys and any ``data``), and the payloads of the
hub's own protocol events can be validated on demand with :meth:`Event.protocol_data`.

See ``PROTOCOL.md`` for the wire format; field names follow the wire (``possibleEvents``,
``parentId``, ``stickyKey``), with snake_case aliases on the Python side.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PrivateAttr, StrictBool, StrictStr

__all__ = [
    "LabelValue",
    "PluginRef",
    "ModuleIdentity",
    "ModuleEntry",
    "RegistrySync",
    "ModuleAnnounced",
    "ModuleDeAnnounced",
    "ModuleHealth",
    "Authenticated",
    "ErrorData",
    "Heartbeat",
    "AuthenticateData",
    "AnnounceData",
    "ConsumerRegistration",
    "ConsumerUnregistration",
    "Delivery",
    "Route",
    "EventRef",
    "EventMetadata",
    "Event",
    "PROTOCOL_DATA_MODELS",
    "SERVER_PLUGIN_ID",
]

#: ``metadata.source.plugin.id`` of every event the hub itself originates.
SERVER_PLUGIN_ID = "proj-airi:server-runtime"

#: Label values are strings on the wire; JSON scalars are tolerated (the hub renders them).
LabelValue = Union[StrictStr, StrictBool, int, float]


class _Wire(BaseModel):
    """Base of the wire models: unknown keys are kept, Python names accept their wire aliases."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def wire(self) -> dict[str, Any]:
        """The JSON object to put on the wire: wire key names, unset optional keys omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- identities and registry entries ------------------------------------------------------------
class PluginRef(_Wire):
    """``identity.plugin``: which plugin (program) a module instance runs."""

    id: StrictStr = Field(min_length=1)
    version: StrictStr | None = None
    labels: dict[str, LabelValue] | None = None


class ModuleIdentity(_Wire):
    """``ModuleIdentity``: ``{id, kind: "plugin", plugin: {id, version?, labels?}, labels?}``.

    ``id`` is this instance's id (``instance:ID`` destinations), ``plugin.id`` the plugin's id
    (``plugin:ID``); a peer's labels are ``plugin.labels`` overlaid by ``labels``.
    """

    id: StrictStr = Field(min_length=1)
    kind: Literal["plugin"] = "plugin"
    plugin: PluginRef
    labels: dict[str, LabelValue] | None = None

    @property
    def all_labels(self) -> dict[str, LabelValue]:
        return {**(self.plugin.labels or {}), **(self.labels or {})}


def _labels_of(identity: dict[str, Any]) -> dict[str, Any]:
    labels: dict[str, Any] = {}
    plugin = identity.get("plugin")
    if isinstance(plugin, dict) and isinstance(plugin.get("labels"), dict):
        labels.update(plugin["labels"])
    if isinstance(identity.get("labels"), dict):
        labels.update(identity["labels"])
    return labels


class ModuleEntry(_Wire):
    """One announced module as registry events carry it: ``{name, index?, identity}``.

    ``identity`` is kept as the JSON object the module announced (other SDKs may add keys), with
    typed accessors for the fields routing uses.
    """

    name: StrictStr
    index: NonNegativeInt | None = None
    identity: dict[str, Any] = Field(default_factory=dict)

    @property
    def plugin_id(self) -> str:
        plugin = self.identity.get("plugin")
        pid = plugin.get("id") if isinstance(plugin, dict) else None
        return pid if isinstance(pid, str) else ""

    @property
    def instance_id(self) -> str:
        iid = self.identity.get("id")
        return iid if isinstance(iid, str) else ""

    @property
    def labels(self) -> dict[str, Any]:
        return _labels_of(self.identity)

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.name, self.index)


class RegistrySync(_Wire):
    """``registry:modules:sync``: every announced module."""

    modules: list[ModuleEntry]


class ModuleAnnounced(ModuleEntry):
    """``module:announced`` (sent to every other authenticated peer)."""


class ModuleDeAnnounced(ModuleEntry):
    """``module:de-announced``, with why (``connection closed``, ``heartbeat expired``, ...)."""

    reason: StrictStr | None = None


class ModuleHealth(ModuleEntry):
    """``registry:modules:health:healthy`` / ``registry:modules:health:unhealthy``."""

    reason: StrictStr | None = None


class Authenticated(_Wire):
    """``module:authenticated``."""

    authenticated: StrictBool


class ErrorData(_Wire):
    """``error``: ``data.message`` is one of the exact strings of PROTOCOL.md."""

    message: StrictStr


class Heartbeat(_Wire):
    """``transport:connection:heartbeat``: ``{kind: ping|pong, message?, at?}``."""

    kind: StrictStr
    message: StrictStr | None = None
    at: int | float | None = None


# -- outgoing control payloads --------------------------------------------------------------------
class AuthenticateData(_Wire):
    """``module:authenticate``."""

    token: StrictStr


class AnnounceData(_Wire):
    """``module:announce``, validated in the order the hub checks it (name, index, identity)."""

    name: StrictStr = Field(min_length=1)
    index: NonNegativeInt | None = None
    identity: ModuleIdentity
    possible_events: list[StrictStr] = Field(default_factory=list, alias="possibleEvents")


ConsumerMode = Literal["consumer", "consumer-group"]


class ConsumerRegistration(_Wire):
    """``module:consumer:register``: receive one-of-N deliveries of ``event``.

    ``mode`` defaults (hub side) to ``consumer-group`` when a group is given, else ``consumer``;
    the group defaults to ``default``. Highest ``priority`` wins with ``selection: first``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    event: StrictStr = Field(min_length=1)
    mode: ConsumerMode | None = None
    group: StrictStr | None = Field(None, min_length=1)
    priority: int | float | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(event, effective group): what the hub keys registrations by."""
        mode = self.mode or ("consumer-group" if self.group else "consumer")
        return (self.event, "default" if mode == "consumer" or not self.group else self.group)


class ConsumerUnregistration(_Wire):
    """``module:consumer:unregister``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    event: StrictStr = Field(min_length=1)
    mode: ConsumerMode | None = None
    group: StrictStr | None = Field(None, min_length=1)


class Delivery(_Wire):
    """``route.delivery``: overrides the protocol default delivery of an event type, key by key."""

    mode: Literal["broadcast", "consumer", "consumer-group"] | StrictStr | None = None
    group: StrictStr | None = None
    selection: Literal["first", "priority", "round-robin", "sticky"] | StrictStr | None = None
    sticky_key: StrictStr | None = Field(None, alias="stickyKey")
    required: StrictBool | None = None


class Route(_Wire):
    """``route``: ``destinations`` (strings such as ``module:NAME`` or expression objects; an
    explicit empty list means nobody), ``bypass`` (devtools only) and ``delivery``."""

    destinations: list[StrictStr | dict[str, Any]] | None = None
    bypass: StrictBool | None = None
    delivery: Delivery | None = None


# -- the envelope ----------------------------------------------------------------------------------
class EventRef(_Wire):
    """``metadata.event``: this event's id and the id of the event it answers."""

    id: StrictStr | None = None
    parent_id: StrictStr | None = Field(None, alias="parentId")


class EventMetadata(_Wire):
    """``metadata``: ``source`` (the sender's identity, as it sent it) and ``event``."""

    source: dict[str, Any] | None = None
    event: EventRef | None = None


#: Typed payloads of the protocol events the client handles, by event type.
PROTOCOL_DATA_MODELS: dict[str, type[_Wire]] = {
    "registry:modules:sync": RegistrySync,
    "module:announced": ModuleAnnounced,
    "module:de-announced": ModuleDeAnnounced,
    "registry:modules:health:healthy": ModuleHealth,
    "registry:modules:health:unhealthy": ModuleHealth,
    "module:authenticated": Authenticated,
    "error": ErrorData,
    "transport:connection:heartbeat": Heartbeat,
    "module:authenticate": AuthenticateData,
    "module:announce": AnnounceData,
    "module:consumer:register": ConsumerRegistration,
    "module:consumer:unregister": ConsumerUnregistration,
}


class Event(_Wire):
    """One received event. ``data`` is the JSON payload as sent (any JSON value the sender put
    there); ``meta`` is the superjson ``meta`` when the frame came wrapped with one (values such
    as ``Date`` stay in their JSON form in ``data``; ``meta`` says which were typed)."""

    type: StrictStr = Field(min_length=1)
    data: Any = Field(default_factory=dict)
    metadata: EventMetadata | None = None
    route: dict[str, Any] | None = None

    _meta: dict[str, Any] | None = PrivateAttr(default=None)
    _wrapped: bool = PrivateAttr(default=False)
    _body: dict[str, Any] | None = PrivateAttr(default=None)

    @property
    def body(self) -> dict[str, Any]:
        """The event as a JSON object, exactly as received (superjson wrapper removed)."""
        if self._body is None:
            return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return self._body

    @property
    def meta(self) -> dict[str, Any] | None:
        return self._meta

    @property
    def wrapped(self) -> bool:
        """True when the frame came superjson-wrapped (``{"json": ...}``)."""
        return self._wrapped

    @property
    def id(self) -> str | None:
        """``metadata.event.id``."""
        return self.metadata.event.id if self.metadata and self.metadata.event else None

    @property
    def parent_id(self) -> str | None:
        """``metadata.event.parentId``: the id of the event this one answers."""
        return self.metadata.event.parent_id if self.metadata and self.metadata.event else None

    @property
    def source(self) -> dict[str, Any] | None:
        """``metadata.source``: the sender's identity as it claimed it."""
        return self.metadata.source if self.metadata else None

    @property
    def source_plugin_id(self) -> str:
        src = self.source or {}
        plugin = src.get("plugin")
        pid = plugin.get("id") if isinstance(plugin, dict) else plugin
        return pid if isinstance(pid, str) else ""

    @property
    def source_instance_id(self) -> str:
        src = self.source or {}
        iid = src.get("id")
        return iid if isinstance(iid, str) else ""

    @property
    def from_hub(self) -> bool:
        """True for events the hub itself originated (registry syncs, errors, pongs...)."""
        return self.source_plugin_id == SERVER_PLUGIN_ID

    @property
    def error_message(self) -> str | None:
        """``data.message`` of an ``error`` event, else None."""
        if self.type != "error" or not isinstance(self.data, dict):
            return None
        msg = self.data.get("message")
        return msg if isinstance(msg, str) else None

    def protocol_data(self) -> BaseModel | None:
        """``data`` validated with the model of this protocol event type (None for other types).
        Raises :class:`pydantic.ValidationError` when the payload does not fit."""
        model = PROTOCOL_DATA_MODELS.get(self.type)
        if model is None:
            return None
        return model.model_validate(self.data)

    def data_as(self, model: type[Any]) -> Any:
        """``data`` validated with any pydantic model of your own."""
        return model.model_validate(self.data)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Event:
        """Parse a decoded frame: plain, or superjson-wrapped (``{"json": <event>, "meta"?}``)."""
        meta = None
        wrapped = False
        if "type" not in obj and "json" in obj:
            wrapped = True
            raw_meta = obj.get("meta")
            meta = raw_meta if isinstance(raw_meta, dict) else None
            obj = obj["json"]
            if not isinstance(obj, dict):
                raise ValueError("superjson-wrapped frame whose 'json' is not an object")
        ev = cls.model_validate(obj)
        ev._meta = meta
        ev._wrapped = wrapped
        ev._body = obj
        return ev
