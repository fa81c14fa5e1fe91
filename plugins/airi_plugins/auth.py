"""``auth``: token authentication and the authentication deadline (``[auth]``).

With no token configured every peer is accepted as soon as it connects. With a token
(``[auth] token`` or ``AUTHENTICATION_TOKEN``), a peer is accepted on a ``module:authenticate``
whose token matches, compared in constant time; anything else is refused with ``invalid token``.
Registered ``trylast`` so another plugin can accept other credentials first.

A connection that is not authenticated within ``[auth] timeout_ms`` (default 10 s; 0 = never)
is closed ``1008 authentication timeout`` and counted in ``hub.stats["auth_timeouts"]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from airi_core import ACCEPT, Accept, Hub, Peer, Reject, errors, hookimpl


class AuthSettings(BaseModel):
    """``[auth]``."""

    model_config = ConfigDict(extra="forbid")
    #: Shared token for ``module:authenticate``; unset or empty = authentication off.
    token: SecretStr | None = None
    #: Close connections that have not authenticated after this long (0 = never).
    timeout_ms: int = Field(10000, ge=0)

    @property
    def secret(self) -> str:
        """The configured token, or ``""`` when authentication is off."""
        return self.token.get_secret_value() if self.token is not None else ""


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time comparison that also hides the expected token's length."""
    a = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


class TokenAuth:
    airi_essential = True
    airi_config_section = "auth"

    def __init__(self) -> None:
        self.settings = AuthSettings()
        # the deadline of each peer not yet authenticated (kept here, not in peer.state: a
        # per-peer dict entry would outlive the timer in every connection's memory)
        self._deadlines: dict[Peer, asyncio.TimerHandle] = {}

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return AuthSettings

    @hookimpl
    def airi_startup(self, hub: Hub) -> None:
        self.settings = hub.plugin_config(self) or AuthSettings()  # type: ignore[assignment]
        hub.stats.setdefault("auth_timeouts", 0)

    @hookimpl(trylast=True)
    def airi_authenticate(self, token: str | None) -> Accept | Reject | None:
        expected = self.settings.secret
        if not expected:
            return ACCEPT
        if token is None:  # connect time: wait for module:authenticate
            return None
        return ACCEPT if tokens_match(token, expected) else Reject(errors.INVALID_TOKEN)

    # -- the deadline --------------------------------------------------------------------------
    @hookimpl
    def airi_peer_connected(self, hub: Hub, peer: Peer) -> None:
        timeout = self.settings.timeout_ms
        if timeout:
            self._deadlines[peer] = asyncio.get_running_loop().call_later(timeout / 1000, self._expired, hub, peer)

    @hookimpl
    def airi_peer_authenticated(self, peer: Peer) -> None:
        self._cancel(peer)

    @hookimpl
    def airi_peer_disconnected(self, peer: Peer) -> None:
        self._cancel(peer)

    @hookimpl
    def airi_shutdown(self) -> None:
        for timer in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()

    def _cancel(self, peer: Peer) -> None:
        timer = self._deadlines.pop(peer, None)
        if timer is not None:
            timer.cancel()

    def _expired(self, hub: Hub, peer: Peer) -> None:
        self._deadlines.pop(peer, None)
        if not peer.authenticated and not peer.closed:
            hub.stats["auth_timeouts"] += 1
            hub.disconnect(peer, "authentication timeout", 1008)
