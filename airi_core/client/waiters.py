"""Futures waiting for received events, and the barrier that tells when the hub has processed
what the client sent.

There are two kinds of waiters: user waits (:meth:`Client.wait_for`, :meth:`Client.request`)
survive reconnects; session-scoped ones (answers to what the client sent on one connection)
fail with the connection. The hub answers a peer's frames in order, so a heartbeat ping sent
after some events comes back (as a pong) only after every error about them: that is the
:class:`Barrier`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..protocol.events import Event
from .errors import ServerError, classify_error
from .outgoing import HEARTBEAT, event_id_of
from .session import Session

__all__ = ["Waiter", "Waiters", "Barrier", "send_confirmed", "discard", "is_pong_for"]


@dataclass(eq=False)
class Waiter:
    match: Callable[[Event], bool] | None
    future: asyncio.Future[Event]
    error_ids: frozenset[str] = frozenset()
    unparented: frozenset[str] = frozenset()
    session: Session | None = None  # None: survives reconnects (user waiters)


def discard(futures: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel the pending futures, mark the exceptions of the done ones as retrieved."""
    for fut in futures:
        if fut.done():
            if not fut.cancelled():
                fut.exception()  # mark retrieved
        else:
            fut.cancel()


def is_pong_for(ping_id: str) -> Callable[[Event], bool]:
    def match(ev: Event) -> bool:
        return ev.type == HEARTBEAT and ev.parent_id == ping_id and ev.data.get("kind") == "pong"
    return match


class Waiters:
    """Every pending waiter of one client, in the order they were registered."""

    def __init__(self) -> None:
        self._items: list[Waiter] = []

    def __bool__(self) -> bool:
        return bool(self._items)

    def add(self, waiter: Waiter) -> None:
        self._items.append(waiter)

    def expect(
        self,
        session: Session,
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
        self._items.append(Waiter(match, fut, frozenset(error_ids), frozenset(unparented), session))
        return fut

    def resolve(self, session: Session, event: Event, have_token: bool) -> bool:
        """Resolve the waiters ``event`` (received on ``session``) answers; True when it was an
        error that answered one (so it is not reported elsewhere)."""
        consumed = False
        is_error = event.type == "error"
        parent = event.parent_id
        message = event.error_message if is_error else None
        keep: list[Waiter] = []
        for w in self._items:
            fut = w.future
            if fut.done():
                continue
            if w.session is not None and w.session is not session:
                keep.append(w)
                continue
            if is_error and ((parent is not None and parent in w.error_ids) or (parent is None and message in w.unparented)):
                fut.set_exception(classify_error(message or "", event, have_token=have_token))
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
        self._items = keep
        return consumed

    def fail_session(self, session: Session, error: BaseException) -> None:
        """Fail (with ``error``) and drop the waiters scoped to ``session``."""
        keep = []
        for w in self._items:
            if w.session is session:
                if not w.future.done():
                    w.future.set_exception(error)
                discard([w.future])
            else:
                keep.append(w)
        self._items = keep

    def fail_all(self, error: BaseException) -> None:
        """Fail (with ``error``) and drop every waiter."""
        for w in self._items:
            if not w.future.done():
                w.future.set_exception(error)
        discard(w.future for w in self._items)
        self._items.clear()


class Barrier:
    """Error waiters for some sent events plus a pong waiter for the ping that follows them."""

    def __init__(self, waiters: Waiters, session: Session, ping: dict[str, Any], ids: list[str]) -> None:
        self.session = session
        self.ping = ping
        ping_id = event_id_of(ping)
        self.errors = {i: waiters.expect(session, None, {i}) for i in ids}
        self.pong = waiters.expect(session, is_pong_for(ping_id), {ping_id})

    @property
    def futures(self) -> list[asyncio.Future[Event]]:
        return [*self.errors.values(), self.pong]

    async def send_ping(self) -> None:
        await self.session.send(self.ping)

    async def wait(self) -> dict[str, ServerError]:
        """Wait for the pong; the errors answering the events, by event id."""
        await self.pong
        failed: dict[str, ServerError] = {}
        for i, fut in self.errors.items():
            if fut.done() and not fut.cancelled():
                exc = fut.exception()
                if isinstance(exc, ServerError):
                    failed[i] = exc
                elif exc is not None:
                    raise exc
        discard(self.errors.values())
        return failed


async def send_confirmed(waiters: Waiters, session: Session, events: list[dict[str, Any]], ping: dict[str, Any]) -> dict[str, ServerError]:
    """Send ``events`` then the heartbeat ``ping``; once the pong is back every error about the
    events has arrived. Returns the errors by event id (empty: all accepted)."""
    barrier = Barrier(waiters, session, ping, [event_id_of(e) for e in events])
    try:
        for ev in events:
            await session.send(ev)
        await barrier.send_ping()
        return await barrier.wait()
    finally:
        discard(barrier.futures)
