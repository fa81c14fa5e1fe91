"""Shared test setup: the ``airi`` pytest plugin (``airi_core.testing``, loaded through its
``pytest11`` entry point) provides the fixtures ``airi_hub``, ``airi_hub_factory`` and
``airi_connect``. The project's tests use them as shipped, with no override here, so they are
exactly what plugin authors get. ``restore_loggers`` is shared by the logging tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    """setup_logging() configures process-wide loggers: put them back afterwards."""
    names = ("airi", "airi.websocket", "websockets", "asyncio")
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers), logging.getLogger(n).propagate) for n in names}
    yield
    for n, (level, handlers, propagate) in saved.items():
        lg = logging.getLogger(n)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        for h in handlers:
            lg.addHandler(h)
        lg.setLevel(level)
        lg.propagate = propagate
