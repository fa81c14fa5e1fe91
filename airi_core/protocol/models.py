"""Pydantic models of the payloads of AIRI protocol events (what the Python client sends and
handles).

Outgoing payloads (:class:`ModuleIdentity`, :class:`AnnounceData`, :class:`ConsumerRegistration`,
:class:`Route`) are validated strictly, before anything reaches the socket. Incoming events are
the one :class:`~airi_core.protocol.events.Event` of the protocol package (no pydantic on the
hub's hot path); the payloads of the hub's own protocol events can be validated on demand with
:func:`protocol_data`, any payload with :func:`data_as`.

See ``PROTOCOL.md`` for the wire format; field names follow the wire (``possibleEvents``,
``parentId``, ``stickyKey``), with snake_case aliases on the Python side.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, StrictBool, StrictStr

from .events import Event
from .identity import SERVER_PLUGIN_ID, instance_id_of, labels_of, plugin_id_of

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
    "PROTOCOL_DATA_MODELS",
    "protocol_data",
    "data_as",
    "SERVER_PLUGIN_ID",  # re-exported from .identity
]

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
        """``plugin.labels`` overlaid by ``labels`` (:func:`~airi_core.protocol.identity.labels_of`)."""
        return labels_of({"plugin": {"labels": self.plugin.labels}, "labels": self.labels})


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
        return plugin_id_of(self.identity)

    @property
    def instance_id(self) -> str:
        return instance_id_of(self.identity)

    @property
    def labels(self) -> dict[str, Any]:
        return labels_of(self.identity)

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


_M = TypeVar("_M", bound=BaseModel)


def protocol_data(event: Event) -> BaseModel | None:
    """``event.data`` validated with the model of its protocol event type
    (:data:`PROTOCOL_DATA_MODELS`; None for other types). Raises
    :class:`pydantic.ValidationError` when the payload does not fit."""
    model = PROTOCOL_DATA_MODELS.get(event.type)
    if model is None:
        return None
    return model.model_validate(event.data)


def data_as(event: Event, model: type[_M]) -> _M:
    """``event.data`` validated with any pydantic model of your own."""
    return model.model_validate(event.data)
