"""The announce rate limit the ``registry`` and ``extensions`` plugins share: a token bucket
whose refusals are answered at most once a second (a flood does not even amplify towards its
sender)."""

from __future__ import annotations

from airi_core import errors


class AnnounceBucket:
    """``burst`` announces at once, then ``rate`` a second, per connection."""

    __slots__ = ("tokens", "at", "error_at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at
        self.error_at = float("-inf")  # when the last rate-limit error went out

    def take(self, now: float, burst: int, rate: float) -> str | None:
        """None when one more announce may go on; else the refusal: the error message, or
        ``""`` (dropped without an answer: one went out less than a second ago)."""
        self.tokens = min(float(burst), self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        if now - self.error_at < 1.0:
            return ""
        self.error_at = now
        return errors.announce_rate_limited(burst, rate)
