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
* **Wire**: parses plain and superjson-wrapped frames; sends plain JSON (``wire_format=
  "superjson"`` wraps as ``{"json": ...}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import inspect
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Union

from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from .. import __version__
from ..protocol import errors
from ..protocol.models import (
    AnnounceData,
    AuthenticateData,
    ConsumerRegistration,
    ConsumerUnregistration,
    Delivery,
    Event,
    ModuleEntry,
    ModuleHealth,
    ModuleIdentity,
    RegistrySync,
    Route,
)

__all__ = [
    "Client",
    "ClientState",
    "StateChange",
    "Event",
    "ModuleIdentity",
    "ModuleEntry",
    "Route",
    "Delivery",
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
    "DEFAULT_URL",
    "PING_MESSAGE",
]

log = logging.getLogger("airi.client")

DEFAULT_URL = "ws://127.0.0.1:6121/ws"
#: The conventional message of a client's heartbeat ping.
PING_MESSAGE = "\U0001fa75"
HEARTBEAT = "transport:connection:heartbeat"

Handler = Callable[[Event], Union[None, Awaitable[None]]]


# -- states ------------------------------------------------------------------------------------------
class ClientState(str, Enum):
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    ANNOUNCING = "announcing"
    READY = "ready"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        return self in (ClientState.CLOSED, ClientState.FAILED)


@dataclass(frozen=True)
class StateChange:
    """One state transition. ``attempt`` counts reconnect attempts since the client was last
    ready (0 until a connection is lost); ``error`` is why the previous state ended (a lost connection, the
    failure); ``delay`` is the backoff before the next attempt (``reconnecting`` only: that
    state is reported once per scheduled attempt)."""

    state: ClientState
    previous: ClientState | None
    attempt: int = 0
    error: BaseException | None = None
    delay: float | None = None
    at: float = field(default_factory=time.time)


# -- errors ------------------------------------------------------------------------------------------
class ClientError(Exception):
    """Base of every error this module raises."""


class ClientClosedError(ClientError):
    """The client was closed (by :meth:`Client.close`) while you were waiting."""


class ConnectionLostError(ClientError):
    """The connection ended while a request was in flight (the client reconnects by itself)."""

    def __init__(self, message: str, code: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class HandshakeTimeoutError(ClientError):
    """The hub did not complete authentication/announcement in time (the client retries)."""


class ProtocolError(ClientError):
    """The hub sent a frame that is not an AIRI event."""


class HandlerError(ClientError):
    """A handler raised; the original exception is ``__cause__``."""

    def __init__(self, handler: Any, event: Event, error: BaseException) -> None:
        name = getattr(handler, "__qualname__", repr(handler))
        super().__init__(f"handler {name} failed on '{event.type}': {type(error).__name__}: {error}")
        self.handler = handler
        self.event = event
        self.__cause__ = error


class ServerError(ClientError):
    """An ``error`` event from the hub. ``message`` is its exact text, ``code`` the code of the
    PROTOCOL.md table (or None for a message outside it), ``event`` the error event itself."""

    def __init__(self, message: str, event: Event | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.event = event
        self.code = _ERROR_CODES.get(message) or ("invalid-json" if message.startswith("invalid JSON, error:") else None)


class AuthenticationError(ServerError):
    """``invalid token``: terminal, the client goes to ``failed``."""


class TokenRequiredError(AuthenticationError):
    """The hub requires a token and none was given (``must authenticate before announcing``)."""


class NotAuthenticatedError(ServerError):
    """``not authenticated``: the client re-authenticates by itself."""


class AnnounceError(ServerError):
    """The hub refused the announcement (terminal: announcing again would fail the same way)."""


class ConsumerRegistrationError(ServerError):
    """The hub refused a consumer registration."""


class NoConsumerError(ServerError):
    """``no consumer registered for requested event delivery`` (delivery with ``required``)."""


class UnknownModuleError(ServerError):
    """``module not found, ...`` (``ui:configure`` for a module that is not announced)."""


_ERROR_CODES = {
    errors.INVALID_EVENT_FORMAT: "invalid-event-format",
    errors.INVALID_TOKEN: "invalid-token",
    errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING: "must-authenticate-before-announcing",
    errors.MODULE_ANNOUNCE_IDENTITY_INVALID: "module-announce-identity-invalid",
    errors.MODULE_ANNOUNCE_INDEX_INVALID: "module-announce-index-invalid",
    errors.MODULE_ANNOUNCE_NAME_INVALID: "module-announce-name-invalid",
    errors.MODULE_CONSUMER_EVENT_INVALID: "module-consumer-event-invalid",
    errors.MODULE_NOT_FOUND: "module-not-found",
    errors.NO_CONSUMER_REGISTERED: "no-consumer-registered",
    errors.NOT_AUTHENTICATED: "not-authenticated",
    errors.UI_CONFIGURE_MODULE_INDEX_INVALID: "ui-configure-module-index-invalid",
    errors.UI_CONFIGURE_MODULE_NAME_INVALID: "ui-configure-module-name-invalid",
}

_ANNOUNCE_ERRORS = frozenset({
    errors.MODULE_ANNOUNCE_IDENTITY_INVALID,
    errors.MODULE_ANNOUNCE_INDEX_INVALID,
    errors.MODULE_ANNOUNCE_NAME_INVALID,
})


def classify_error(message: str, event: Event | None = None, *, have_token: bool = True) -> ServerError:
    """The exception for a hub error text (exact PROTOCOL.md strings)."""
    if message == errors.INVALID_TOKEN:
        return AuthenticationError(message, event)
    if message == errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING:
        if not have_token:
            return TokenRequiredError(f"{message} (the hub requires a token and none was given)", event)
        return NotAuthenticatedError(message, event)
    if message == errors.NOT_AUTHENTICATED:
        return NotAuthenticatedError(message, event)
    if message in _ANNOUNCE_ERRORS:
        return AnnounceError(message, event)
    if message == errors.MODULE_CONSUMER_EVENT_INVALID:
        return ConsumerRegistrationError(message, event)
    if message == errors.NO_CONSUMER_REGISTERED:
        return NoConsumerError(message, event)
    if message == errors.MODULE_NOT_FOUND:
        return UnknownModuleError(message, event)
    return ServerError(message, event)


def backoff_delay(
    attempt: int,
    initial: float,
    maximum: float,
    factor: float = 2.0,
    jitter: float = 0.25,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): ``initial * factor**attempt`` capped
    at ``maximum``, then reduced by a random fraction of up to ``jitter`` (so many clients
    dropped by one hub restart do not all come back in the same instant)."""
    base = initial
    for _ in range(max(0, min(attempt, 64))):
        base *= factor
        if base >= maximum:
            break
    base = min(base, maximum)
    return max(0.0, base * (1.0 - jitter * rand()))


def new_id() -> str:
    """A fresh event id (URL-safe, 21 characters like the nanoid the reference uses)."""
    return secrets.token_urlsafe(16)[:21]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# -- internals ---------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Waiter:
    match: Callable[[Event], bool] | None
    future: asyncio.Future[Event]
    error_ids: frozenset[str] = frozenset()
    unparented: frozenset[str] = frozenset()
    session: _Session | None = None  # None: survives reconnects (user waiters)


class _Session:
    """One WebSocket connection and what happened on it."""

    def __init__(self, ws: ClientConnection, wrap: bool) -> None:
        self.ws = ws
        self.wrap = wrap
        self.last_rx = asyncio.get_running_loop().time()
        self.ready = False
        self.wake = asyncio.Event()  # set when the hub asks to re-authenticate or sent a terminal error
        self.reauth_requested = False
        self.terminal: BaseException | None = None
        self.auth_seen = asyncio.Event()  # a module:authenticated {authenticated: true} arrived
        self.synced = asyncio.Event()  # a registry:modules:sync arrived
        self.consumers: set[tuple[str, str]] = set()
        self.ended = False
        self.dead_reason: str | None = None

    async def send(self, event: dict[str, Any]) -> None:
        text = _dumps({"json": event} if self.wrap else event)
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            raise ConnectionLostError(f"connection lost while sending '{event.get('type')}'", *_close_info(exc)) from exc

    def lost_error(self) -> ConnectionLostError:
        if self.dead_reason is not None:
            return ConnectionLostError(self.dead_reason)
        code = self.ws.close_code
        reason = self.ws.close_reason
        detail = f" (code {code}{' ' + reason if reason else ''})" if code is not None else ""
        return ConnectionLostError(f"connection lost{detail}", code, reason)


def _close_info(exc: ConnectionClosed) -> tuple[int | None, str | None]:
    frame = exc.rcvd or exc.sent
    return (frame.code, frame.reason) if frame is not None else (None, None)


class _Terminal(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _discard(futures: Iterable[asyncio.Future[Any]]) -> None:
    for fut in futures:
        if fut.done():
            if not fut.cancelled():
                fut.exception()  # mark retrieved
        else:
            fut.cancel()


def _is_pong_for(ping_id: str) -> Callable[[Event], bool]:
    def match(ev: Event) -> bool:
        return ev.type == HEARTBEAT and ev.parent_id == ping_id and isinstance(ev.data, dict) and ev.data.get("kind") == "pong"
    return match


def _type_matcher(pattern: str | None) -> Callable[[str], bool]:
    if pattern is None or pattern == "*":
        return lambda t: True
    if any(c in pattern for c in "*?["):
        return lambda t: fnmatch.fnmatchcase(t, pattern)
    return lambda t: t == pattern


# -- the client ------------------------------------------------------------------------------------
class Client:
    """One AIRI module's connection to a hub. See the module docstring for the behaviour.

    :param url: the hub's WebSocket URL.
    :param name: module name to announce (``module:NAME`` destinations address it).
    :param token: the hub's authentication token, if it has one.
    :param identity: ``ModuleIdentity`` (model or dict). Default ``{id: "<name>-<random>",
        kind: "plugin", plugin: {id: <name>}}``; a dict without ``id`` gets a generated one.
        Validated (with name, index and possible events) before anything is sent.
    :param index: module index, for several instances of one module.
    :param possible_events: event types this module may emit (announced as ``possibleEvents``).
    :param announce: announce as a module (default). ``False`` makes an observer (tools such as
        ``airi tail``): ready once authenticated and given the registry listing; it receives
        broadcasts but no ``module:NAME``-addressed events.
    :param heartbeat_interval: seconds between heartbeat pings (None: no pings).
    :param read_timeout: seconds without any frame from the hub after which the connection is
        declared dead and replaced (None: never). Must exceed ``heartbeat_interval``.
    :param reconnect: reconnect after a lost connection (default True).
    :param max_attempts: reconnect attempts in a row (without reaching ready) before giving up
        and failing (None: never give up).
    :param initial_delay, max_delay, backoff_factor, jitter: reconnect backoff
        (see :func:`backoff_delay`).
    :param connect_timeout: WebSocket opening handshake timeout, seconds.
    :param handshake_timeout: seconds for authenticate + announce + consumer registration.
    :param ready_timeout: how long ``async with`` waits for ready (None: as long as it takes).
    :param wire_format: ``"json"`` (plain, default) or ``"superjson"`` (``{"json": event}``).
    :param on_state: called with each :class:`StateChange` (plain function or coroutine function).
    :param on_error: called with each error not raised to a caller: :class:`ServerError` from the
        hub, :class:`HandlerError`, :class:`ProtocolError`, connection errors while reconnecting.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        name: str,
        token: str | None = None,
        identity: ModuleIdentity | dict[str, Any] | None = None,
        index: int | None = None,
        possible_events: Iterable[str] = (),
        announce: bool = True,
        heartbeat_interval: float | None = 10.0,
        read_timeout: float | None = 30.0,
        heartbeat_message: str = PING_MESSAGE,
        reconnect: bool = True,
        max_attempts: int | None = None,
        initial_delay: float = 0.5,
        max_delay: float = 30.0,
        backoff_factor: float = 2.0,
        jitter: float = 0.25,
        connect_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
        ready_timeout: float | None = None,
        wire_format: Literal["json", "superjson"] = "json",
        max_frame_bytes: int | None = 16 << 20,
        on_state: Callable[[StateChange], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> None:
        try:
            parse_uri(url)
        except InvalidURI as exc:
            raise ValueError(f"not a WebSocket URL: {url!r} ({exc})") from None
        if token is not None and not isinstance(token, str):
            raise TypeError("token must be a string")
        if isinstance(identity, ModuleIdentity):
            ident: Any = identity.wire()
        elif identity is None:
            ident = {"id": f"{name}-{secrets.token_hex(4)}" if isinstance(name, str) else None, "kind": "plugin", "plugin": {"id": name}}
        elif isinstance(identity, dict):
            ident = dict(identity)
            if "id" not in ident and isinstance(name, str):
                ident["id"] = f"{name}-{secrets.token_hex(4)}"
        else:
            raise TypeError("identity must be a ModuleIdentity, a dict or None")
        # validated here, in the order the hub checks it: name, index, identity (raises
        # pydantic.ValidationError, a ValueError, before any connection is made)
        self._announce = AnnounceData.model_validate(
            {"name": name, "index": index, "identity": ident, "possibleEvents": list(possible_events)}
        )
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive (or None)")
        if read_timeout is not None:
            if read_timeout <= 0:
                raise ValueError("read_timeout must be positive (or None)")
            if heartbeat_interval is not None and read_timeout <= heartbeat_interval:
                raise ValueError("read_timeout must be longer than heartbeat_interval")
        if initial_delay < 0 or max_delay < 0 or backoff_factor < 1 or not 0 <= jitter <= 1:
            raise ValueError("backoff: initial_delay, max_delay >= 0, backoff_factor >= 1, 0 <= jitter <= 1")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be >= 1 (or None for unlimited)")
        if wire_format not in ("json", "superjson"):
            raise ValueError("wire_format must be 'json' or 'superjson'")

        self.url = url
        self.name: str = self._announce.name
        self.index: int | None = self._announce.index
        self.identity: ModuleIdentity = self._announce.identity
        self._identity_wire = self.identity.wire()
        self._announce_wire = {**self._announce.wire(), "identity": self._identity_wire}
        self._token = token or None
        self.announce = announce
        self.heartbeat_interval = heartbeat_interval
        self.read_timeout = read_timeout
        self.heartbeat_message = heartbeat_message
        self.reconnect = reconnect
        self.max_attempts = max_attempts
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.backoff_factor = backoff_factor
        self.jitter = jitter
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.ready_timeout = ready_timeout
        self.wire_format = wire_format
        self.max_frame_bytes = max_frame_bytes
        self.on_state = on_state
        self.on_error = on_error

        self._state: ClientState | None = None
        self._failure: BaseException | None = None
        self._closing = False
        self._run_task: asyncio.Task[None] | None = None
        self._session: _Session | None = None
        self._handlers: list[tuple[str, Callable[[str], bool], Handler]] = []
        self._waiters: list[_Waiter] = []
        self._ready_waiters: list[asyncio.Future[None]] = []
        self._finished_waiters: list[asyncio.Future[None]] = []
        self._state_queues: list[asyncio.Queue[StateChange]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._consumers: dict[tuple[str, str], ConsumerRegistration] = {}
        self._attempt = 0
        self.modules: list[ModuleEntry] = []
        """The latest ``registry:modules:sync`` listing."""
        self.unhealthy: dict[tuple[str, int | None], str] = {}
        """Modules the hub reported unhealthy (``(name, index)`` -> reason) and not healthy since."""
        self.last_error: BaseException | None = None
        """The most recent connection/handshake error (useful while ``reconnecting``)."""
        self.connections = 0
        """How many WebSocket connections were opened so far."""

    def __repr__(self) -> str:
        return f"<Client {self.name!r} {self.url} {self._state or 'new'}>"

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def state(self) -> ClientState | None:
        """The current state (None before :meth:`start`)."""
        return self._state

    @property
    def is_ready(self) -> bool:
        """Ready and its connection still up (a lost connection is noticed before the state
        moves on to ``reconnecting``)."""
        session = self._session
        return self._state is ClientState.READY and session is not None and session.ready

    @property
    def failure(self) -> BaseException | None:
        """Why the client failed (state ``failed``), else None."""
        return self._failure

    def start(self) -> None:
        """Start connecting in the background (``async with`` and :meth:`ready` do it for you)."""
        if self._run_task is not None:
            return
        if self._closing:
            raise ClientClosedError("the client was closed")
        self._run_task = asyncio.get_running_loop().create_task(self._run(), name=f"airi-client:{self.name}")

    async def __aenter__(self) -> Client:
        self.start()
        try:
            await self.ready(self.ready_timeout)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until authenticated and announced (and consumers registered). Raises the failure
        when the client failed, :class:`ClientClosedError` when it was closed, TimeoutError."""
        self._raise_if_final()
        if self._run_task is None:
            self.start()
        if self.is_ready:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ready_waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                await fut
        finally:
            if fut in self._ready_waiters:
                self._ready_waiters.remove(fut)

    async def wait_closed(self) -> None:
        """Wait until the client is closed; raises its failure if it failed instead."""
        if self._state is None or not self._state.final:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._finished_waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._finished_waiters:
                    self._finished_waiters.remove(fut)
        if self._failure is not None:
            raise self._failure

    async def close(self) -> None:
        """Close the connection and stop reconnecting. Pending waits get
        :class:`ClientClosedError`; running async handlers are cancelled."""
        if self._closing:
            if self._run_task is not None and self._run_task is not asyncio.current_task():
                with contextlib.suppress(BaseException):
                    await asyncio.shield(self._run_task)
            return
        self._closing = True
        task = self._run_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current and not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        if self._state is not ClientState.FAILED:
            self._set_state(ClientState.CLOSED)
            self._finish(ClientClosedError("the client was closed"))

    def states(self) -> AsyncIterator[StateChange]:
        """An async iterator of state changes from now on; it ends after ``closed``/``failed``."""
        queue: asyncio.Queue[StateChange] = asyncio.Queue()
        if self._state is not None and self._state.final:
            queue.put_nowait(StateChange(self._state, self._state, self._attempt, self._failure))
        else:
            self._state_queues.append(queue)

        async def iterate() -> AsyncIterator[StateChange]:
            try:
                while True:
                    change = await queue.get()
                    yield change
                    if change.state.final:
                        return
            finally:
                if queue in self._state_queues:
                    self._state_queues.remove(queue)

        return iterate()

    # -- handlers and waiters --------------------------------------------------------------------
    def on(self, type: str, handler: Handler | None = None) -> Any:
        """Call ``handler(event)`` for every received event of ``type`` (``*``, ``?`` and ``[...]``
        globs allowed; ``"*"`` is every event, the hub's protocol events included). Works as a
        decorator. Plain functions run inline, coroutine functions as tasks; what they raise goes
        to ``on_error`` as :class:`HandlerError`. Handlers stay in place across reconnects."""
        if not isinstance(type, str) or not type:
            raise ValueError("event type must be a non-empty string")

        def register(fn: Handler) -> Handler:
            if not callable(fn):
                raise TypeError("handler must be callable")
            self._handlers.append((type, _type_matcher(type), fn))
            return fn

        return register if handler is None else register(handler)

    def off(self, type: str, handler: Handler | None = None) -> None:
        """Remove ``handler`` (or every handler) registered for ``type``."""
        self._handlers = [h for h in self._handlers if not (h[0] == type and (handler is None or h[2] is handler))]

    def wait_for(
        self,
        type: str | None = None,
        predicate: Callable[[Event], bool] | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Event]:
        """The next received event of ``type`` (glob) for which ``predicate`` holds.

        Registered at the call, so ``fut = c.wait_for("x"); await c.send(...); await fut``
        cannot miss a fast reply (``await c.wait_for(...)`` works too). Raises TimeoutError
        after ``timeout`` seconds, :class:`ClientClosedError` if the client closes first."""
        self._raise_if_final()
        matches_type = _type_matcher(type)

        def match(ev: Event) -> bool:
            return matches_type(ev.type) and (predicate is None or bool(predicate(ev)))

        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Event] = loop.create_future()
        self._waiters.append(_Waiter(match, fut))
        if timeout is not None:
            handle = loop.call_later(
                timeout,
                lambda: fut.done() or fut.set_exception(TimeoutError(f"no '{type or '*'}' event within {timeout} s")),
            )
            fut.add_done_callback(lambda _f: handle.cancel())
        return fut

    # -- sending ---------------------------------------------------------------------------------
    async def send(
        self,
        type: str,
        data: dict[str, Any] | BaseModel | None = None,
        *,
        route: Route | dict[str, Any] | None = None,
        destinations: Iterable[str | dict[str, Any]] | None = None,
        delivery: Delivery | dict[str, Any] | None = None,
        parent_id: str | None = None,
        event_id: str | None = None,
        confirm: bool = False,
        timeout: float | None = None,
    ) -> str:
        """Send one event; returns its ``metadata.event.id``.

        ``destinations`` / ``delivery`` fill in ``route.destinations`` / ``route.delivery``.
        Waits (up to ``timeout``) until the client is ready. With ``confirm=True`` it also waits
        until the hub has processed the event and raises the hub's :class:`ServerError` if it
        was refused (``no consumer registered...``, ``not authenticated``...); otherwise such
        an error goes to ``on_error``."""
        event = self._build(type, data, route=route, destinations=destinations, delivery=delivery,
                            parent_id=parent_id, event_id=event_id)
        async with asyncio.timeout(timeout):
            await self.ready()
            session = self._current_session()
            if not confirm:
                await session.send(event)
            else:
                failed = await self._send_confirmed(session, [event])
                if failed:
                    raise failed[event["metadata"]["event"]["id"]]
        return str(event["metadata"]["event"]["id"])

    async def reply(self, to: Event, type: str, data: dict[str, Any] | BaseModel | None = None, **kw: Any) -> str:
        """Send ``type`` to the module that sent ``to``, with ``parentId`` = ``to``'s id.

        Routed to ``module:NAME`` when the sender's identity is in the registry listing, else
        to ``instance:ID`` (its identity id)."""
        dest = self.destination_of(to)
        if dest is None:
            raise ValueError(f"cannot tell who sent '{to.type}': no metadata.source identity")
        kw.setdefault("parent_id", to.id)
        return await self.send(type, data, destinations=[dest], **kw)

    async def request(
        self,
        type: str,
        data: dict[str, Any] | BaseModel | None = None,
        *,
        reply_type: str | None = None,
        timeout: float | None = 10.0,
        **kw: Any,
    ) -> Event:
        """Send an event and wait for the first event answering it (``parentId`` = its id, of
        ``reply_type`` if given). An ``error`` answering it is raised as :class:`ServerError`."""
        eid = kw.pop("event_id", None) or new_id()
        matches_type = _type_matcher(reply_type)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Event] = loop.create_future()
        waiter = _Waiter(lambda e: e.parent_id == eid and e.type != "error" and matches_type(e.type), fut, frozenset({eid}))
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await self.send(type, data, event_id=eid, **kw)
                return await fut
        finally:
            _discard([fut])

    async def register_consumer(
        self,
        event: str,
        *,
        group: str | None = None,
        mode: Literal["consumer", "consumer-group"] | None = None,
        priority: float | None = None,
        timeout: float | None = 10.0,
    ) -> None:
        """Register as a consumer of ``event`` (one-of-N delivery; ``group`` e.g.
        ``chat-ingestion``, the protocol default group of ``input:text``). The hub does not
        answer a registration; this waits until it has processed it without an error
        (:class:`ConsumerRegistrationError` otherwise). Kept across reconnects."""
        reg = ConsumerRegistration(event=event, group=group, mode=mode, priority=priority)
        key = reg.key
        self._consumers[key] = reg
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ready()
                    try:
                        session = self._current_session()
                    except ConnectionLostError:
                        continue  # lost just now: ready() waits for the next connection
                    if key in session.consumers and self._consumers.get(key) is reg:
                        return
                    msg = self._control("module:consumer:register", reg.wire())
                    try:
                        failed = await self._send_confirmed(session, [msg])
                    except ConnectionLostError:
                        continue  # registered again by the next connection's handshake
                    if failed:
                        err = next(iter(failed.values()))
                        raise ConsumerRegistrationError(err.message, err.event) from err
                    session.consumers.add(key)
                    return
        except BaseException:
            if self._consumers.get(key) is reg:
                del self._consumers[key]
            raise

    async def unregister_consumer(
        self,
        event: str,
        *,
        group: str | None = None,
        mode: Literal["consumer", "consumer-group"] | None = None,
        timeout: float | None = 10.0,
    ) -> None:
        """Stop consuming ``event`` (in ``group``); also forgotten for later reconnects."""
        unreg = ConsumerUnregistration(event=event, group=group, mode=mode)
        key = ConsumerRegistration(event=event, group=group, mode=mode).key
        self._consumers.pop(key, None)  # no later connection registers it again
        async with asyncio.timeout(timeout):
            await self.ready()
            session = self._current_session()
            if key not in session.consumers:
                return  # not registered on this connection
            session.consumers.discard(key)
            try:
                failed = await self._send_confirmed(session, [self._control("module:consumer:unregister", unreg.wire())])
            except ConnectionLostError:
                return  # the registration went with the connection
        if failed:
            err = next(iter(failed.values()))
            raise ConsumerRegistrationError(err.message, err.event) from err

    @property
    def consumers(self) -> list[ConsumerRegistration]:
        """The consumer registrations the client keeps (and renews on every connection)."""
        return list(self._consumers.values())

    # -- the registry --------------------------------------------------------------------------------
    def find_module(self, source: Event | dict[str, Any] | None) -> ModuleEntry | None:
        """The announced module whose identity is ``source`` (an identity or an event's sender)."""
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
        """A destination string that reaches the sender of ``event``."""
        entry = self.find_module(event)
        if entry is not None:
            return f"module:{entry.name}"
        iid = event.source_instance_id
        return f"instance:{iid}" if iid else None

    # -- internals: state ----------------------------------------------------------------------------
    def _raise_if_final(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing or self._state is ClientState.CLOSED:
            raise ClientClosedError("the client was closed")

    def _current_session(self) -> _Session:
        session = self._session
        if session is None or not session.ready:
            raise ConnectionLostError("not connected")
        return session

    def _set_state(
        self,
        state: ClientState,
        *,
        error: BaseException | None = None,
        delay: float | None = None,
        force: bool = False,
    ) -> None:
        previous = self._state
        if previous == state and not force:
            return
        if previous is not None and previous.final:
            return
        self._state = state
        change = StateChange(state, previous, self._attempt, error, delay)
        if state is ClientState.RECONNECTING and delay is not None:
            log.info("%s: %s; reconnecting in %.2f s (attempt %d)", self.name, error or "connection lost", delay, self._attempt)
        else:
            log.debug("%s: %s -> %s", self.name, previous, state)
        if state is ClientState.READY:
            for fut in self._ready_waiters:
                if not fut.done():
                    fut.set_result(None)
        for queue in list(self._state_queues):
            queue.put_nowait(change)
        if self.on_state is not None:
            try:
                res = self.on_state(change)
                if inspect.isawaitable(res):
                    self._spawn(self._guard_callback(res, "on_state"))
            except Exception:
                log.exception("%s: on_state callback failed", self.name)

    def _finish(self, error: BaseException) -> None:
        """Wake everyone waiting: ready waiters and user waiters get ``error``."""
        for fut in self._ready_waiters:
            if not fut.done():
                fut.set_exception(error)
        for w in self._waiters:
            if not w.future.done():
                w.future.set_exception(error)
        _discard(w.future for w in self._waiters)
        self._waiters.clear()
        for fut in self._finished_waiters:
            if not fut.done():
                fut.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._state is not None and self._state.final:
            return
        self._failure = error
        log.error("%s: failed: %s", self.name, error)
        self._set_state(ClientState.FAILED, error=error)
        self._finish(error)
        if self.on_error is not None:
            self._report(error)

    def _report(self, error: BaseException, level: int = logging.WARNING) -> None:
        """An error nobody awaits: ``on_error``, or the log. Never silent."""
        if self.on_error is None:
            log.log(level, "%s: %s", self.name, error, exc_info=error if isinstance(error, HandlerError) else None)
            return
        try:
            res = self.on_error(error)
            if inspect.isawaitable(res):
                self._spawn(self._guard_callback(res, "on_error"))
        except Exception:
            log.exception("%s: on_error callback failed (reporting %r)", self.name, error)

    async def _guard_callback(self, aw: Awaitable[Any], what: str) -> None:
        try:
            await aw
        except Exception:
            log.exception("%s: %s callback failed", self.name, what)

    def _spawn(self, aw: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- internals: the connection loop -----------------------------------------------------------
    async def _run(self) -> None:
        first = True
        try:
            while not self._closing:
                if first:
                    self._set_state(ClientState.CONNECTING)
                first = False
                try:
                    await self._connect_once()
                except _Terminal as term:
                    self._fail(term.error)
                    return
                except (ConnectionLostError, HandshakeTimeoutError, ServerError, ProtocolError, OSError,
                        InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
                    self.last_error = exc
                    if not isinstance(exc, ConnectionLostError):
                        # a warning for the first failure in a row, then quieter while retrying
                        self._report(
                            exc if isinstance(exc, ClientError) else ConnectionLostError(f"cannot connect to {self.url}: {exc}"),
                            logging.WARNING if self._attempt == 0 else logging.INFO,
                        )
                if self._closing:
                    return
                if not self.reconnect:
                    self._fail(ConnectionLostError(f"connection to {self.url} lost and reconnect is off: {self.last_error}"))
                    return
                if self.max_attempts is not None and self._attempt >= self.max_attempts:
                    self._fail(ConnectionLostError(f"gave up after {self._attempt} attempts: {self.last_error}"))
                    return
                delay = backoff_delay(self._attempt, self.initial_delay, self.max_delay, self.backoff_factor, self.jitter)
                self._attempt += 1
                self._set_state(ClientState.RECONNECTING, error=self.last_error, delay=delay, force=True)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug: never die silently
            log.exception("%s: connection loop crashed", self.name)
            self._fail(ClientError(f"connection loop crashed: {type(exc).__name__}: {exc}"))

    async def _connect_once(self) -> None:
        try:
            ws = await connect(
                self.url,
                open_timeout=self.connect_timeout,
                ping_interval=None,
                close_timeout=2.0,
                max_size=self.max_frame_bytes,
                compression=None,
                user_agent_header=f"airi-python-client/{__version__}",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if 400 <= status < 500 and status not in (408, 429):
                raise _Terminal(ClientError(f"the hub refused the WebSocket connection: HTTP {status}")) from exc
            raise
        self.connections += 1
        session = _Session(ws, self.wire_format == "superjson")
        self._session = session
        reader = asyncio.ensure_future(self._read(session))
        watchdog = asyncio.ensure_future(self._watchdog(session))
        handshake: asyncio.Future[None] | None = None
        try:
            while True:
                handshake = asyncio.ensure_future(self._handshake(session))
                await asyncio.wait({handshake, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not handshake.done():
                    handshake.cancel()
                    with contextlib.suppress(BaseException):
                        await handshake
                    raise session.lost_error()
                try:
                    handshake.result()
                except (AuthenticationError, AnnounceError) as exc:
                    raise _Terminal(exc) from exc
                except TimeoutError:
                    raise HandshakeTimeoutError(f"the hub did not complete the handshake within {self.handshake_timeout} s") from None
                session.ready = True
                self.last_error = None
                self._set_state(ClientState.READY)  # reports how many attempts it took
                self._attempt = 0
                wake = asyncio.ensure_future(session.wake.wait())
                await asyncio.wait({reader, wake}, return_when=asyncio.FIRST_COMPLETED)
                if not wake.done():
                    wake.cancel()
                    raise session.lost_error()
                if session.terminal is not None:
                    raise _Terminal(session.terminal)
                # the hub says we are not authenticated: authenticate again on this connection
                session.wake.clear()
                session.reauth_requested = False
                session.ready = False
                session.consumers.clear()
                if self._token is None:
                    raise ConnectionLostError("the hub says 'not authenticated': reconnecting")
                log.info("%s: the hub says 'not authenticated': authenticating again", self.name)
        finally:
            session.ready = False
            session.ended = True
            tasks = [t for t in (reader, watchdog, handshake) if t is not None]
            for task in tasks:
                task.cancel()
            self._fail_session_waiters(session, session.lost_error())
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(ws.close(), 3.0)
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._session is session:
                self._session = None

    def _fail_session_waiters(self, session: _Session, error: BaseException) -> None:
        keep = []
        for w in self._waiters:
            if w.session is session:
                if not w.future.done():
                    w.future.set_exception(error)
                _discard([w.future])
            else:
                keep.append(w)
        self._waiters = keep

    async def _handshake(self, s: _Session) -> None:
        """Authenticate (with a token), announce and confirm it, register the consumers."""
        async with asyncio.timeout(self.handshake_timeout):
            self._set_state(ClientState.AUTHENTICATING, error=self.last_error)
            announce = self._control("module:announce", self._announce_wire)
            announce_id = announce["metadata"]["event"]["id"]
            me = (self.name, self.index, self._identity_wire)

            def lists_me(ev: Event) -> bool:
                if ev.type != "registry:modules:sync" or not isinstance(ev.data, dict):
                    return False
                mods = ev.data.get("modules")
                return isinstance(mods, list) and any(
                    isinstance(m, dict) and (m.get("name"), m.get("index"), m.get("identity")) == me for m in mods
                )

            futures: list[asyncio.Future[Any]] = []
            try:
                listed = self._expect(s, lists_me)
                futures.append(listed)
                if self._token is not None:
                    s.synced.clear()
                    auth = self._control("module:authenticate", AuthenticateData(token=self._token).wire())
                    authed = self._expect(s, lambda e: e.type == "module:authenticated", {auth["metadata"]["event"]["id"]},
                                          {errors.INVALID_TOKEN})
                    futures.append(authed)
                    await s.send(auth)
                    reply = await authed
                    if not (isinstance(reply.data, dict) and reply.data.get("authenticated") is True):
                        raise AuthenticationError("the hub answered module:authenticate with authenticated != true", reply)
                    if self.announce:
                        self._set_state(ClientState.ANNOUNCING)
                        confirm = self._barrier(s, [announce_id])
                        futures.extend(confirm.futures)
                        await s.send(announce)
                        await confirm.send_ping()
                elif self.announce:
                    # a hub without a token authenticates at once; announce right away (if it
                    # wants a token after all, the announce is refused with a clear error).
                    # module:authenticated may have arrived before this coroutine ran: the
                    # reader records it in the session.
                    refused = self._expect(s, None, {announce_id},
                                           {errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING, errors.INVALID_TOKEN})
                    seen = asyncio.ensure_future(s.auth_seen.wait())
                    futures += [refused, seen]
                    confirm = self._barrier(s, [announce_id])
                    futures.extend(confirm.futures)
                    await s.send(announce)
                    await confirm.send_ping()
                    await asyncio.wait({seen, refused}, return_when=asyncio.FIRST_COMPLETED)
                    if refused.done():
                        refused.result()  # raises the refusal
                    self._set_state(ClientState.ANNOUNCING)
                else:
                    # not announcing, no token: a hub without a token sends module:authenticated
                    # (and a registry sync) on connect, before it reads anything from us, so
                    # both are in by the time our first ping is answered
                    probe = self._barrier(s, [])
                    futures.extend(probe.futures)
                    await probe.send_ping()
                    await probe.wait()
                    if not s.auth_seen.is_set():
                        raise TokenRequiredError(errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING + " (the hub requires a token and none was given)")
                if self.announce:
                    failed = await confirm.wait()
                    if failed:
                        raise failed[announce_id]
                    await listed
                else:
                    await s.synced.wait()
                await self._register_consumers(s)
            finally:
                _discard(futures)

    async def _register_consumers(self, s: _Session) -> None:
        """Register every kept consumer on a new connection, confirmed by one barrier."""
        regs = list(self._consumers.items())
        if not regs:
            return
        msgs = [self._control("module:consumer:register", reg.wire()) for _, reg in regs]
        failed = await self._send_confirmed(s, msgs)
        for (key, reg), msg in zip(regs, msgs):
            err = failed.get(msg["metadata"]["event"]["id"])
            if err is None:
                s.consumers.add(key)
                continue
            if isinstance(err, NotAuthenticatedError):
                raise err
            if self._consumers.get(key) is reg:
                del self._consumers[key]
            self._report(ConsumerRegistrationError(f"consumer registration for '{reg.event}' refused: {err.message}", err.event))

    # -- internals: waiting for answers ---------------------------------------------------------------
    def _expect(
        self,
        session: _Session,
        match: Callable[[Event], bool] | None,
        error_ids: Iterable[str] = (),
        unparented: Iterable[str] = (),
    ) -> asyncio.Future[Event]:
        """Register (now) a session-scoped waiter: resolves with the first event ``match``
        accepts, or fails with the classified error answering one of ``error_ids`` (or an error
        without parentId whose text is in ``unparented``: the reference leaves parentId unset on
        some errors)."""
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        if session.ended:
            fut.set_exception(session.lost_error())
            return fut
        self._waiters.append(_Waiter(match, fut, frozenset(error_ids), frozenset(unparented), session))
        return fut

    def _barrier(self, session: _Session, ids: list[str]) -> _Barrier:
        return _Barrier(self, session, ids)

    async def _send_confirmed(self, session: _Session, events: list[dict[str, Any]]) -> dict[str, ServerError]:
        """Send ``events`` then a heartbeat ping; the hub answers a peer's frames in order, so
        once the pong is back every error about the events has arrived. Returns the errors by
        event id (empty: all accepted)."""
        barrier = self._barrier(session, [e["metadata"]["event"]["id"] for e in events])
        try:
            for ev in events:
                await session.send(ev)
            await barrier.send_ping()
            return await barrier.wait()
        finally:
            _discard(barrier.futures)

    # -- internals: reading ----------------------------------------------------------------------------
    async def _read(self, s: _Session) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for frame in s.ws:
                s.last_rx = loop.time()
                text = frame if isinstance(frame, str) else bytes(frame).decode("utf-8", "replace")
                if text == "ping":
                    with contextlib.suppress(ConnectionClosed):
                        await s.ws.send("pong")
                    continue
                if text == "pong":
                    continue
                try:
                    obj = json.loads(text)
                    if not isinstance(obj, dict):
                        raise ValueError("not a JSON object")
                    event = Event.from_wire(obj)
                except (ValueError, ValidationError) as exc:
                    self._report(ProtocolError(f"the hub sent a frame that is not an AIRI event ({exc}): {text[:200]!r}"))
                    continue
                try:
                    await self._on_event(s, event)
                except ConnectionLostError:
                    return
                except Exception as exc:  # a bug here must not pass for a lost connection
                    log.exception("%s: failed to process '%s'", self.name, event.type)
                    self._report(ClientError(f"failed to process '{event.type}': {type(exc).__name__}: {exc}"))
        except ConnectionClosed:
            pass

    async def _on_event(self, s: _Session, event: Event) -> None:
        etype = event.type
        data = event.data if isinstance(event.data, dict) else {}
        consumed = False
        if etype == "registry:modules:sync":
            s.synced.set()
            try:
                self.modules = RegistrySync.model_validate(data).modules
                present = {m.key for m in self.modules}
                self.unhealthy = {k: v for k, v in self.unhealthy.items() if k in present}
            except ValidationError as exc:
                self._report(ProtocolError(f"malformed registry:modules:sync: {exc}"))
        elif etype in ("registry:modules:health:unhealthy", "registry:modules:health:healthy"):
            try:
                entry = ModuleHealth.model_validate(data)
                if etype.endswith(":unhealthy"):
                    self.unhealthy[entry.key] = entry.reason or "unhealthy"
                else:
                    self.unhealthy.pop(entry.key, None)
            except ValidationError as exc:
                self._report(ProtocolError(f"malformed {etype}: {exc}"))
        elif etype == "module:de-announced":
            with contextlib.suppress(ValidationError):
                self.unhealthy.pop(ModuleEntry.model_validate(data).key, None)
        elif etype == "module:authenticated":
            if data.get("authenticated") is True:
                s.auth_seen.set()
        elif etype == HEARTBEAT and data.get("kind") == "ping":
            pong = {"kind": "pong", "message": "\U0001f49b", "at": int(time.time() * 1000)}
            with contextlib.suppress(ConnectionLostError):
                await s.send(self._control(HEARTBEAT, pong, parent_id=event.id))

        if self._waiters:
            consumed = self._resolve_waiters(s, event)

        if etype == "error":
            message = event.error_message or ""
            if message == errors.NOT_AUTHENTICATED and s.ready:
                s.reauth_requested = True
                s.wake.set()
                consumed = True
            elif message == errors.INVALID_TOKEN and not consumed and s.ready:
                s.terminal = AuthenticationError(message, event)
                s.wake.set()
                consumed = True
            if not consumed:
                self._report(classify_error(message, event, have_token=self._token is not None))

        if self._handlers:
            self._dispatch(event)

    def _resolve_waiters(self, s: _Session, event: Event) -> bool:
        consumed = False
        is_error = event.type == "error"
        parent = event.parent_id
        message = event.error_message if is_error else None
        keep: list[_Waiter] = []
        for w in self._waiters:
            fut = w.future
            if fut.done():
                continue
            if w.session is not None and w.session is not s:
                keep.append(w)
                continue
            if is_error and ((parent is not None and parent in w.error_ids) or (parent is None and message in w.unparented)):
                fut.set_exception(classify_error(message or "", event, have_token=self._token is not None))
                consumed = True
                continue
            if w.match is not None:
                try:
                    hit = w.match(event)
                except Exception as exc:
                    fut.set_exception(exc)
                    continue
                if hit:
                    fut.set_result(event)
                    continue
            keep.append(w)
        self._waiters = keep
        return consumed

    def _dispatch(self, event: Event) -> None:
        for _pattern, matches, handler in list(self._handlers):
            if not matches(event.type):
                continue
            try:
                res = handler(event)
            except Exception as exc:
                self._report(HandlerError(handler, event, exc))
                continue
            if inspect.isawaitable(res):
                self._spawn(self._run_handler(handler, event, res))

    async def _run_handler(self, handler: Any, event: Event, aw: Awaitable[Any]) -> None:
        try:
            await aw
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._report(HandlerError(handler, event, exc))

    async def _watchdog(self, s: _Session) -> None:
        loop = asyncio.get_running_loop()
        interval = self.heartbeat_interval
        timeout = self.read_timeout
        if interval is None and timeout is None:
            return
        tick = min(x for x in (interval, timeout / 4 if timeout else None) if x is not None)
        tick = max(tick, 0.005)
        next_ping = loop.time() + interval if interval is not None else None
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            if timeout is not None and now - s.last_rx > timeout:
                s.dead_reason = f"no frame from the hub for {now - s.last_rx:.1f} s (read timeout {timeout:g} s): connection declared dead"
                log.warning("%s: %s", self.name, s.dead_reason)
                s.ws.transport.abort()
                return
            if next_ping is not None and now >= next_ping:
                next_ping = now + interval  # type: ignore[operator]
                try:
                    await s.send(self._ping())
                except ConnectionLostError:
                    return

    # -- internals: building events -------------------------------------------------------------------
    def _control(self, type: str, data: Any, parent_id: str | None = None) -> dict[str, Any]:
        ref: dict[str, Any] = {"id": new_id()}
        if parent_id is not None:
            ref["parentId"] = parent_id
        return {"type": type, "data": data, "metadata": {"source": self._identity_wire, "event": ref}}

    def _ping(self) -> dict[str, Any]:
        return self._control(HEARTBEAT, {"kind": "ping", "message": self.heartbeat_message, "at": int(time.time() * 1000)})

    def _build(
        self,
        type: str,
        data: dict[str, Any] | BaseModel | None,
        *,
        route: Route | dict[str, Any] | None,
        destinations: Iterable[str | dict[str, Any]] | None,
        delivery: Delivery | dict[str, Any] | None,
        parent_id: str | None,
        event_id: str | None,
    ) -> dict[str, Any]:
        if not isinstance(type, str) or not type:
            raise ValueError("event type must be a non-empty string")
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json", by_alias=True, exclude_none=True)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise TypeError("event data must be a JSON object (dict) or a pydantic model")
        route_obj: dict[str, Any] | None = None
        if route is not None or destinations is not None or delivery is not None:
            r = route if isinstance(route, Route) else Route.model_validate(route or {})
            update: dict[str, Any] = {}
            if destinations is not None:
                update["destinations"] = list(destinations)
            if delivery is not None:
                update["delivery"] = delivery if isinstance(delivery, Delivery) else Delivery.model_validate(delivery)
            if update:
                r = Route.model_validate({**r.model_dump(by_alias=True, exclude_none=True), **update})
            route_obj = r.wire()
        ref: dict[str, Any] = {"id": event_id or new_id()}
        if parent_id is not None:
            ref["parentId"] = parent_id
        event: dict[str, Any] = {"type": type, "data": data, "metadata": {"source": self._identity_wire, "event": ref}}
        if route_obj is not None:
            event["route"] = route_obj
        try:
            _dumps(event)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"event '{type}' is not JSON-serializable: {exc}") from None
        return event


class _Barrier:
    """Error waiters for some sent events plus a pong waiter for the ping that follows them."""

    def __init__(self, client: Client, session: _Session, ids: list[str]) -> None:
        self.client = client
        self.session = session
        self.ping = client._ping()
        ping_id = self.ping["metadata"]["event"]["id"]
        self.errors = {i: client._expect(session, None, {i}) for i in ids}
        self.pong = client._expect(session, _is_pong_for(ping_id), {ping_id})

    @property
    def futures(self) -> list[asyncio.Future[Event]]:
        return [*self.errors.values(), self.pong]

    async def send_ping(self) -> None:
        await self.session.send(self.ping)

    async def wait(self) -> dict[str, ServerError]:
        await self.pong
        failed: dict[str, ServerError] = {}
        for i, fut in self.errors.items():
            if fut.done() and not fut.cancelled():
                exc = fut.exception()
                if isinstance(exc, ServerError):
                    failed[i] = exc
                elif exc is not None:
                    raise exc
        _discard(self.errors.values())
        return failed
