"""Small helpers shared by the hardening tests (test_limits.py, test_faults.py, test_hardening.py).

Everything here is bounded in time: every wait takes a timeout and fails loudly when it runs out.
Polling (``wait_until``), heartbeat round trips (``HubClient.fence``), bounded closes
(``HubClient.wait_closed``) and event filters (``HubClient.of_type`` / ``error_messages``) come
from :mod:`airi_core.testing`; ports, environments and hub subprocesses from ``_hubproc``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from airi_core.server.logs import TRACE
from airi_core.testing import HubClient

__all__ = ["seqs", "airi_logs_captured", "TRACE_LEVEL"]


def seqs(client: HubClient, type: str, key: str = "seq", start: int = 0) -> list[Any]:
    """``data[key]`` of every received event of ``type``, in arrival order."""
    return [e["data"].get(key) for e in client.of_type(type, start)]


@contextlib.contextmanager
def airi_logs_captured(caplog: Any, level: int = logging.DEBUG) -> Iterator[None]:
    """Make sure records of the ``airi`` loggers reach ``caplog`` at ``level`` even if some other
    test configured them in-process (``setup_logging`` turns propagation off)."""
    names = ("airi", "airi.websocket")
    saved = {n: (logging.getLogger(n).propagate, logging.getLogger(n).level) for n in names}
    try:
        for n in names:
            logging.getLogger(n).propagate = True
        logging.getLogger("airi.websocket").setLevel(logging.NOTSET)
        caplog.set_level(level, logger="airi")
        yield
    finally:
        for n, (prop, lvl) in saved.items():
            logging.getLogger(n).propagate = prop
            logging.getLogger(n).setLevel(lvl)


TRACE_LEVEL = TRACE
