"""The :class:`Client`: one AIRI module's connection to a hub, its public API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel

from ..protocol.events import Event, new_id
from ..protocol.models import ConsumerRegistration, ConsumerUnregistration, Delivery, ModuleEntry, Route
from .connection import ConnectionLoop
from .errors import ClientClosedError, ConnectionLostError, ConsumerRegistrationError
from .handlers import Handler, type_matcher
from .outgoing import event_id_of
from .states import ClientState, StateChange
from .waiters import Waiter, discard

__all__ = ["Client"]


class Client(ConnectionLoop):
    """One AIRI module's connection to a hub. See :mod:`airi_core.client` for the behaviour.

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
    :param heartbeat_message: ``data.message`` of the pings.
    :param reconnect: reconnect after a lost connection (default True).
    :param max_attempts: reconnect attempts in a row (without reaching ready) before giving up
        and failing (None: never give up).
    :param initial_delay, max_delay, backoff_factor, jitter: reconnect backoff
        (see :func:`~airi_core.client.backoff.backoff_delay`).
    :param connect_timeout: WebSocket opening handshake timeout, seconds.
    :param handshake_timeout: seconds for authenticate + announce + consumer registration.
    :param ready_timeout: how long ``async with`` waits for ready (None: as long as it takes).
    :param wire_format: ``"json"`` (plain, default) or ``"superjson"`` (``{"json": event}``).
    :param max_frame_bytes: largest frame accepted from the hub (None: no limit).
    :param on_state: called with each :class:`StateChange` (plain function or coroutine function).
    :param on_error: called with each error not raised to a caller: :class:`ServerError` from the
        hub, :class:`HandlerError`, :class:`ProtocolError`, connection errors while reconnecting.

    The constructor (options and their validation) is :class:`~airi_core.client.base.ClientBase`'s;
    the connection loop is :class:`~airi_core.client.connection.ConnectionLoop`.
    """

    # -- lifecycle -----------------------------------------------------------------------------
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
        """Call ``handler(event)`` for every received event of ``type``, a glob of the
        protocol's one dialect (:mod:`airi_core.protocol.glob`): ``*`` matches any run of
        characters, every other character (``?`` and ``[`` too) only itself; ``"*"`` is every
        event, the hub's protocol events included. Works as a decorator. Plain functions run
        inline, coroutine functions as tasks; what they raise goes to ``on_error`` as
        :class:`HandlerError`. Handlers stay in place across reconnects."""
        if not isinstance(type, str) or not type:
            raise ValueError("event type must be a non-empty string")

        def register(fn: Handler) -> Handler:
            if not callable(fn):
                raise TypeError("handler must be callable")
            self._handlers.add(type, fn)
            return fn

        return register if handler is None else register(handler)

    def off(self, type: str, handler: Handler | None = None) -> None:
        """Remove ``handler`` (or every handler) registered for ``type``."""
        self._handlers.remove(type, handler)

    def wait_for(
        self,
        type: str | None = None,
        predicate: Callable[[Event], bool] | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Event]:
        """The next received event of ``type`` (a glob where only ``*`` is a wildcard, as in
        :meth:`on`) for which ``predicate`` holds.

        Registered at the call, so ``fut = c.wait_for("x"); await c.send(...); await fut``
        cannot miss a fast reply (``await c.wait_for(...)`` works too). Raises TimeoutError
        after ``timeout`` seconds, :class:`ClientClosedError` if the client closes first."""
        self._raise_if_final()
        matches_type = type_matcher(type)

        def match(ev: Event) -> bool:
            return matches_type(ev.type) and (predicate is None or bool(predicate(ev)))

        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Event] = loop.create_future()
        self._waiters.add(Waiter(match, fut))
        if timeout is not None:
            def expire() -> None:
                if not fut.done():
                    fut.set_exception(TimeoutError(f"no '{type or '*'}' event within {timeout} s"))

            handle = loop.call_later(timeout, expire)
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
        event = self._out.event(type, data, route=route, destinations=destinations, delivery=delivery,
                                parent_id=parent_id, event_id=event_id)
        eid = event_id_of(event)
        async with asyncio.timeout(timeout):
            await self.ready()
            session = self._current_session()
            if not confirm:
                await session.send(event)
            else:
                failed = await self._send_confirmed(session, [event])
                if failed:
                    raise failed[eid]
        return eid

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
        ``reply_type`` (a glob, as in :meth:`on`) if given). An ``error`` answering it is raised
        as :class:`ServerError`."""
        eid = kw.pop("event_id", None) or new_id()
        matches_type = type_matcher(reply_type)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Event] = loop.create_future()
        self._waiters.add(Waiter(lambda e: e.parent_id == eid and e.type != "error" and matches_type(e.type), fut, frozenset({eid})))
        try:
            async with asyncio.timeout(timeout):
                await self.send(type, data, event_id=eid, **kw)
                return await fut
        finally:
            discard([fut])

    # -- consumers -------------------------------------------------------------------------------
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
                    msg = self._out.control("module:consumer:register", reg.wire())
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
                failed = await self._send_confirmed(session, [self._out.control("module:consumer:unregister", unreg.wire())])
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
        return self._directory.find(source)

    def destination_of(self, event: Event) -> str | None:
        """A destination string that reaches the sender of ``event``."""
        return self._directory.destination_of(event)
