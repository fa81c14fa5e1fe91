"""How long the client waits before each reconnect attempt."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff_delay"]


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
