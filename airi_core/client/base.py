"""The client's configuration and state machine: the options validated at construction, the
current state and how it changes (``on_state``, :meth:`Client.states`, the waiters woken on
``ready``/``closed``/``failed``), where errors nobody awaits go (``on_error`` or the log), and the
plumbing the connection loop and the public API share.

:class:`~airi_core.client.Client` is built on :class:`ClientBase` (through
:class:`~airi_core.client.connection.ConnectionLoop`); see it for the options.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from ..protocol.models import AnnounceData, ConsumerRegistration, ModuleEntry, ModuleIdentity
from .errors import ClientClosedError, ConnectionLostError, HandlerError, ServerError
from .handlers import Handlers
from .outgoing import DEFAULT_URL, PING_MESSAGE, EventBuilder
from .registry import ModuleDirectory
from .session import Session
from .states import ClientState, StateChange
from .waiters import Barrier, Waiters, send_confirmed

__all__ = ["ClientBase", "log"]

log = logging.getLogger("airi.client")


class ClientBase:
    """Options, state and shared plumbing of a client (see :class:`~airi_core.client.Client`)."""

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
        self._out = EventBuilder(self._identity_wire)
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
        self._session: Session | None = None
        self._handlers = Handlers(self._report, self._spawn)
        self._waiters = Waiters()
        self._ready_waiters: list[asyncio.Future[None]] = []
        self._finished_waiters: list[asyncio.Future[None]] = []
        self._state_queues: list[asyncio.Queue[StateChange]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._consumers: dict[tuple[str, str], ConsumerRegistration] = {}
        self._attempt = 0
        self._directory = ModuleDirectory()
        self.last_error: BaseException | None = None
        """The most recent connection/handshake error (useful while ``reconnecting``)."""
        self.connections = 0
        """How many WebSocket connections were opened so far."""

    def __repr__(self) -> str:
        return f"<Client {self.name!r} {self.url} {self._state or 'new'}>"

    # -- state -------------------------------------------------------------------------------------
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

    @property
    def modules(self) -> list[ModuleEntry]:
        """The latest ``registry:modules:sync`` listing."""
        return self._directory.modules

    @property
    def unhealthy(self) -> dict[tuple[str, int | None], str]:
        """Modules the hub reported unhealthy (``(name, index)`` -> reason) and not healthy since."""
        return self._directory.unhealthy

    def _raise_if_final(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing or self._state is ClientState.CLOSED:
            raise ClientClosedError("the client was closed")

    def _current_session(self) -> Session:
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
        self._waiters.fail_all(error)
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

    # -- errors nobody awaits, background tasks ------------------------------------------------------
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

    # -- sending on a session, confirmed -------------------------------------------------------------
    def _ping(self) -> dict[str, Any]:
        return self._out.ping(self.heartbeat_message)

    def _barrier(self, session: Session, ids: list[str]) -> Barrier:
        return Barrier(self._waiters, session, self._ping(), ids)

    async def _send_confirmed(self, session: Session, events: list[dict[str, Any]]) -> dict[str, ServerError]:
        """Send ``events`` then a heartbeat ping; the hub answers a peer's frames in order, so
        once the pong is back every error about the events has arrived. Returns the errors by
        event id (empty: all accepted)."""
        return await send_confirmed(self._waiters, session, events, self._ping())
