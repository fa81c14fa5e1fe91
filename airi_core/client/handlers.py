"""Event handlers by type pattern, and running them.

Patterns are the protocol's one glob dialect (:mod:`airi_core.protocol.glob`): ``*`` matches any
run of characters, every other character (``?`` and ``[`` included) matches itself, and the
pattern must match the whole event type.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Union

from ..protocol.events import Event
from ..protocol.glob import compile_glob
from .errors import HandlerError

__all__ = ["Handler", "Handlers", "type_matcher"]

Handler = Callable[[Event], Union[None, Awaitable[None]]]


def _any_type(_type: str) -> bool:
    return True


def type_matcher(pattern: str | None) -> Callable[[str], bool]:
    """A predicate on event types for ``pattern`` (a glob where only ``*`` is a wildcard; None
    or ``"*"``: every type)."""
    if pattern is None:
        return _any_type
    return compile_glob(pattern)


class Handlers:
    """The handlers registered with :meth:`Client.on`. Plain functions run inline, what
    coroutine functions return runs as a task (through ``spawn``); whatever they raise goes to
    ``report`` as :class:`HandlerError`."""

    def __init__(self, report: Callable[[BaseException], None], spawn: Callable[[Awaitable[Any]], Any]) -> None:
        self._report = report
        self._spawn = spawn
        self._entries: list[tuple[str, Callable[[str], bool], Handler]] = []

    def __bool__(self) -> bool:
        return bool(self._entries)

    def add(self, pattern: str, handler: Handler) -> None:
        self._entries.append((pattern, type_matcher(pattern), handler))

    def remove(self, pattern: str, handler: Handler | None = None) -> None:
        """Remove ``handler`` (or every handler) registered for ``pattern``."""
        self._entries = [h for h in self._entries if not (h[0] == pattern and (handler is None or h[2] is handler))]

    def dispatch(self, event: Event) -> None:
        """Call every handler whose pattern matches ``event.type``, in registration order."""
        for _pattern, matches, handler in list(self._entries):
            if not matches(event.type):
                continue
            try:
                res = handler(event)
            except Exception as exc:
                self._report(HandlerError(handler, event, exc))
                continue
            if inspect.isawaitable(res):
                self._spawn(self._run(handler, event, res))

    async def _run(self, handler: Any, event: Event, aw: Awaitable[Any]) -> None:
        try:
            await aw
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._report(HandlerError(handler, event, exc))
