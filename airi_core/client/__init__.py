"""An asyncio client for AIRI hubs: write an AIRI module in Python.

::

    client = Client("ws://127.0.0.1:6121/ws", name="my-module", token="...")

    @client.on("input:text")
    async def on_text(event: Event) -> None:
        await client.reply(event, "output:text", {"text": event.data["text"].upper()})

    async with client:                       # connects, authenticates, announces: ready
        await client.register_consumer("input:text", group="chat-ingestion")
        await client.wait_closed()

What it does for you:

* **States** (:class:`ClientState`): ``connecting -> authenticating -> announcing -> ready``;
  ``reconnecting`` after a lost connection; ``closed`` after :meth:`Client.close`; ``failed``
  when retrying cannot help (wrong token, refused announcement). Watch them with ``on_state=``
  or ``async for change in client.states()``. :meth:`Client.ready` returns only once the hub
  confirmed the announcement: a heartbeat sent right after ``module:announce`` came back with no
  error before it (the hub answers a peer's frames in order) *and* a ``registry:modules:sync``
  listing this module arrived.
* **Heartbeats**: a ``transport:connection:heartbeat`` ping every ``heartbeat_interval`` seconds;
  a connection that delivers no frame at all for ``read_timeout`` seconds is declared dead.
* **Reconnects** with exponential backoff and jitter (unlimited unless ``max_attempts``); each
  new connection authenticates, announces and registers the consumers again. Handlers, waiters
  and consumer registrations survive reconnects.
* **Errors** are classified by the exact strings of PROTOCOL.md: ``invalid token`` is terminal
  (state ``failed``, raised from :meth:`Client.ready`, ``async with``, :meth:`Client.send`...);
  ``not authenticated`` re-authenticates (or reconnects when there is no token); an error that
  answers something you awaited (``send(confirm=True)``, :meth:`Client.register_consumer`,
  :meth:`Client.request`) is raised there; every other error goes to ``on_error`` (or is logged
  as a warning when there is no ``on_error``): never silently dropped.
* **Wire**: parses plain and superjson-wrapped frames with the hub's own decoder
  (:func:`airi_core.protocol.events.decode_frame`): handlers get the protocol's one
  :class:`~airi_core.protocol.events.Event` (``type``, ``data``, ``metadata``, ``route``, ``meta``;
  ``id``, ``parent_id``, ``source``...); sends plain JSON (``wire_format="superjson"`` wraps as
  ``{"json": ...}``). :func:`protocol_data` and :func:`data_as` validate ``event.data`` with
  pydantic models.
* **Type patterns** (:meth:`Client.on`, :meth:`Client.wait_for`, ``reply_type``) are globs of the
  protocol's one dialect (:mod:`airi_core.protocol.glob`): only ``*`` is a wildcard.

The package, one job per module:

* :mod:`.client`: :class:`Client`, the public API (lifecycle, handlers, sending, consumers);
* :mod:`.connection`: the connection loop (connect, handshake, read, heartbeats, reconnect);
* :mod:`.base`: options, the state machine, error reporting;
* :mod:`.session`: one WebSocket connection; :mod:`.waiters`: waiting for answers;
* :mod:`.handlers`: handlers by type pattern; :mod:`.registry`: the hub's module listing;
* :mod:`.outgoing`: building and encoding what the client sends;
* :mod:`.states`, :mod:`.errors`, :mod:`.backoff`: states, exceptions, reconnect delays;
* :mod:`.cli`: ``airi tail``, ``airi send``, ``airi modules``.
"""

from __future__ import annotations

from ..protocol.events import Event, new_id
from ..protocol.models import Delivery, ModuleEntry, ModuleIdentity, Route, data_as, protocol_data
from .backoff import backoff_delay
from .client import Client
from .errors import (
    AnnounceError,
    AuthenticationError,
    ClientClosedError,
    ClientError,
    ConnectionLostError,
    ConsumerRegistrationError,
    HandlerError,
    HandshakeTimeoutError,
    NoConsumerError,
    NotAuthenticatedError,
    ProtocolError,
    ServerError,
    TokenRequiredError,
    UnknownModuleError,
    classify_error,
)
from .handlers import Handler
from .outgoing import DEFAULT_URL, HEARTBEAT, PING_MESSAGE
from .states import ClientState, StateChange

__all__ = [
    "Client",
    "ClientState",
    "StateChange",
    "Event",
    "Handler",
    "ModuleIdentity",
    "ModuleEntry",
    "Route",
    "Delivery",
    "protocol_data",
    "data_as",
    "ClientError",
    "ClientClosedError",
    "ConnectionLostError",
    "HandshakeTimeoutError",
    "ProtocolError",
    "HandlerError",
    "ServerError",
    "AuthenticationError",
    "TokenRequiredError",
    "NotAuthenticatedError",
    "AnnounceError",
    "ConsumerRegistrationError",
    "NoConsumerError",
    "UnknownModuleError",
    "classify_error",
    "backoff_delay",
    "new_id",
    "DEFAULT_URL",
    "PING_MESSAGE",
    "HEARTBEAT",
]
