"""The connection loop: connect, authenticate, announce, register the consumers, read events
and watch the connection's heartbeat; reconnect with backoff when it is lost, fail when retrying
cannot help.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .. import __version__
from ..protocol import errors
from ..protocol.events import HEARTBEAT_FRAMES, DecodeError, Event, decode_frame
from ..protocol.models import AuthenticateData
from .backoff import backoff_delay
from .base import ClientBase, log
from .errors import (
    AnnounceError,
    AuthenticationError,
    ClientError,
    ConnectionLostError,
    ConsumerRegistrationError,
    HandshakeTimeoutError,
    NotAuthenticatedError,
    ProtocolError,
    ServerError,
    TokenRequiredError,
    classify_error,
)
from .outgoing import HEARTBEAT, event_id_of
from .registry import REGISTRY_EVENTS
from .session import Session
from .states import ClientState
from .waiters import discard

__all__ = ["ConnectionLoop"]


class _Terminal(Exception):
    """Retrying cannot help: the client fails with ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class ConnectionLoop(ClientBase):
    """The background task of a client (:meth:`_run`) and what it runs on each connection."""

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
        session = Session(ws, self.wire_format == "superjson")
        self._session = session
        reader = asyncio.ensure_future(self._read(session))
        watchdog = asyncio.ensure_future(self._watchdog(session))
        handshake: asyncio.Future[None] | None = None
        wake: asyncio.Future[Any] | None = None
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
            # wake too: a close() while waiting on it must not leave it pending ("Task was destroyed")
            tasks: list[asyncio.Future[Any]] = [t for t in (reader, watchdog, handshake, wake) if t is not None]
            for task in tasks:
                task.cancel()
            self._waiters.fail_session(session, session.lost_error())
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(ws.close(), 3.0)
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._session is session:
                self._session = None

    async def _handshake(self, s: Session) -> None:
        """Authenticate (with a token), announce and confirm it, register the consumers."""
        async with asyncio.timeout(self.handshake_timeout):
            self._set_state(ClientState.AUTHENTICATING, error=self.last_error)
            announce = self._out.control("module:announce", self._announce_wire)
            announce_id = event_id_of(announce)
            me = (self.name, self.index, self._identity_wire)

            def lists_me(ev: Event) -> bool:
                if ev.type != "registry:modules:sync":
                    return False
                mods = ev.data.get("modules")
                return isinstance(mods, list) and any(
                    isinstance(m, dict) and (m.get("name"), m.get("index"), m.get("identity")) == me for m in mods
                )

            futures: list[asyncio.Future[Any]] = []
            try:
                listed = self._waiters.expect(s, lists_me)
                futures.append(listed)
                if self._token is not None:
                    s.synced.clear()
                    auth = self._out.control("module:authenticate", AuthenticateData(token=self._token).wire())
                    authed = self._waiters.expect(s, lambda e: e.type == "module:authenticated", {event_id_of(auth)},
                                                  {errors.INVALID_TOKEN})
                    futures.append(authed)
                    await s.send(auth)
                    reply = await authed
                    if reply.data.get("authenticated") is not True:
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
                    refused = self._waiters.expect(s, None, {announce_id},
                                                   {errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING, errors.INVALID_TOKEN})
                    seen: asyncio.Future[Any] = asyncio.ensure_future(s.auth_seen.wait())
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
                discard(futures)

    async def _register_consumers(self, s: Session) -> None:
        """Register every kept consumer on a new connection, confirmed by one barrier."""
        regs = list(self._consumers.items())
        if not regs:
            return
        msgs = [self._out.control("module:consumer:register", reg.wire()) for _, reg in regs]
        failed = await self._send_confirmed(s, msgs)
        for (key, reg), msg in zip(regs, msgs):
            err = failed.get(event_id_of(msg))
            if err is None:
                s.consumers.add(key)
                continue
            if isinstance(err, NotAuthenticatedError):
                raise err
            if self._consumers.get(key) is reg:
                del self._consumers[key]
            self._report(ConsumerRegistrationError(f"consumer registration for '{reg.event}' refused: {err.message}", err.event))

    # -- reading -----------------------------------------------------------------------------------
    async def _read(self, s: Session) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for frame in s.ws:
                s.last_rx = loop.time()
                text = frame if isinstance(frame, str) else bytes(frame).decode("utf-8", "replace")
                if text in HEARTBEAT_FRAMES:
                    if text == "ping":
                        with contextlib.suppress(ConnectionClosed):
                            await s.ws.send("pong")
                    continue
                try:
                    event = decode_frame(text)
                except DecodeError as exc:
                    self._report(ProtocolError(f"the hub sent a frame that is not an AIRI event ({exc.message}): {text[:200]!r}"))
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

    async def _on_event(self, s: Session, event: Event) -> None:
        etype = event.type
        data = event.data
        consumed = False
        if etype in REGISTRY_EVENTS:
            if etype == "registry:modules:sync":
                s.synced.set()
            malformed = self._directory.apply(event)
            if malformed is not None:
                self._report(malformed)
        elif etype == "module:authenticated":
            if data.get("authenticated") is True:
                s.auth_seen.set()
        elif etype == HEARTBEAT and data.get("kind") == "ping":
            with contextlib.suppress(ConnectionLostError):
                await s.send(self._out.pong(event.id))

        if self._waiters:
            consumed = self._waiters.resolve(s, event, self._token is not None)

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
            self._handlers.dispatch(event)

    async def _watchdog(self, s: Session) -> None:
        """Ping every ``heartbeat_interval``; declare the connection dead after
        ``read_timeout`` seconds without any frame."""
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
            if next_ping is not None and interval is not None and now >= next_ping:
                next_ping = now + interval
                try:
                    await s.send(self._ping())
                except ConnectionLostError:
                    return
