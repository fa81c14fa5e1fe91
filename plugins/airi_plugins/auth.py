"""``auth``: authentication, its throttling, the deadline, and per-client permissions (``[auth]``).

**Tokens.** ``[auth] token`` (or ``AUTHENTICATION_TOKEN``) is the shared token: a peer that
presents it has no restrictions. Each ``[[auth.clients]]`` entry is a credential of its own: a
name, a token and what a peer that authenticated with it may do (below). Authentication is on
when either is configured; with neither, every peer is accepted as soon as it connects. The
token of a ``module:authenticate`` is hashed once and its digest compared in constant time with
the digest of every configured token, all of them, without stopping at a match (the time tells
neither which one matched nor the tokens' lengths); no match is ``invalid token``. Registered
``trylast`` so another plugin can accept other credentials first.

**Throttling.** Failed authentications are counted per remote address (an IPv4 address; for
IPv6 its /64 network, since one host commonly holds a whole /64; IPv4-mapped IPv6 counts as the
IPv4 address). After ``max_failures`` failures within ``failure_window_ms`` (counted from the
first failure of the window), every further ``module:authenticate`` from that address, whatever
its token, is refused unchecked for ``lockout_ms``: answered ``too many failed attempts`` and the
connection closed ``1008 too many failed attempts``. A success does not reset the count (a holder
of one valid token could otherwise interleave it with guesses at the others). The log gets the
first failure of each window and the lockout, once per address each, never every guess;
``hub.stats`` counts ``auth_failures``, ``auth_lockouts`` and ``auth_refused``. At most
:data:`TRACKED_ADDRESSES` addresses are remembered: expired entries go first, then the oldest.

**Deadline.** A connection that is not authenticated within ``[auth] timeout_ms`` (default 10 s;
0 = never) is closed ``1008 authentication timeout`` and counted in ``hub.stats["auth_timeouts"]``.

**Permissions** of a client credential (globs of :mod:`airi_core.protocol.glob`, ``*`` only; the
default ``["*"]`` allows anything, ``[]`` nothing):

- ``modules``: module names it may announce (``module:announce``);
- ``send``: event types it may send: every event but heartbeats and the handshake
  (``module:authenticate``, ``module:announce``, ``peer:authenticate``, ``extension:authenticate``,
  ``extension:announce``, ``extension:module:announce``), that is routed events and control events such as
  ``module:consumer:register`` / ``unregister`` and ``ui:configure``;
- ``receive``: event types that may be routed to it from other peers (broadcast, destinations,
  consumer delivery, the devtools bypass). The hub's own events (``module:authenticated``,
  errors, registry events, heartbeats, and ``module:configure`` built from a ``ui:configure``,
  which the sender's ``send`` governs) always arrive;
- ``bypass``: whether it may use the devtools bypass (``route.bypass`` from a devtools peer).

A denied action is answered ``permission denied: ...`` (with the event's id as ``parentId``) and
nothing of it is delivered. A peer keeps the credential it first authenticated with: a later
``module:authenticate`` with another valid token is refused (``permission denied: already
authenticated as another client``). The checks live in a second object, ``auth.permissions``
(:class:`ClientPermissions`: ``airi_announce`` and ``airi_event`` ``tryfirst``, and an
``airi_route`` wrapper, which holds in any route order), registered at startup only when
``[[auth.clients]]`` is configured: a hub without clients pays nothing per event.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from airi_core import ACCEPT, BROADCAST, Accept, Announcement, Drop, Event, Hub, Peer, Reject, RouteContext, errors, hookimpl
from airi_core.protocol import compile_glob
from airi_core.protocol.events import HANDSHAKE_EVENT_TYPES

#: How many remote addresses the throttle remembers at most (about 100 bytes each).
TRACKED_ADDRESSES = 10_000
#: Name under which the permission checks are registered when clients are configured.
PERMISSIONS_PLUGIN = "auth.permissions"
#: Verdicts remembered per credential and kind (event types are the peers' strings: bounded).
_VERDICTS = 1024
#: Names and types echoed in ``permission denied`` answers are cut to this many characters.
_ECHO = 100


class ClientCredential(BaseModel):
    """One ``[[auth.clients]]`` entry."""

    model_config = ConfigDict(extra="forbid")
    #: For logs and answers; unique.
    name: str = Field(min_length=1)
    #: Its own token; never logged, masked by ``airi config check``.
    token: SecretStr
    #: Module names it may announce (globs).
    modules: list[str] = ["*"]
    #: Event types it may send (globs): routed and control events.
    send: list[str] = ["*"]
    #: Event types other peers' events may have to reach it (globs).
    receive: list[str] = ["*"]
    #: Whether it may use the devtools bypass.
    bypass: bool = True

    @field_validator("token")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value


class AuthSettings(BaseModel):
    """``[auth]``."""

    model_config = ConfigDict(extra="forbid")
    #: Shared token for ``module:authenticate`` (no restrictions); unset or empty = none.
    token: SecretStr | None = None
    #: Close connections that have not authenticated after this long (0 = never).
    timeout_ms: int = Field(10000, ge=0)
    #: Per-client credentials and permissions (``[[auth.clients]]``).
    clients: list[ClientCredential] = []
    #: Failed authentications from one address within ``failure_window_ms`` before it is locked
    #: out (0 = no throttling).
    max_failures: int = Field(30, ge=0)
    failure_window_ms: int = Field(60000, ge=1)
    #: How long a locked-out address is refused.
    lockout_ms: int = Field(60000, ge=1)

    @property
    def secret(self) -> str:
        """The shared token, or ``""`` when there is none."""
        return self.token.get_secret_value() if self.token is not None else ""

    @property
    def enabled(self) -> bool:
        """Whether peers must authenticate (a shared token or at least one client)."""
        return bool(self.secret or self.clients)

    @model_validator(mode="after")
    def _distinct(self) -> AuthSettings:
        # messages name clients, never tokens; the error shows no input (it is a whole table)
        names: set[str] = set()
        owners: dict[str, str] = {self.secret: "the shared token"} if self.secret else {}
        for client in self.clients:
            if client.name in names:
                raise ValueError(f"two clients are named '{client.name}'")
            names.add(client.name)
            token = client.token.get_secret_value()
            if token in owners:
                raise ValueError(f"client '{client.name}' has the same token as {owners[token]}")
            owners[token] = f"client '{client.name}'"
        return self


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time comparison that also hides the expected token's length."""
    return hmac.compare_digest(_digest(given), _digest(expected))


def address_key(remote: str) -> str:
    """What the throttle counts failures by, from ``peer.remote`` (``ip:port``): the IPv4
    address, or the /64 network of an IPv6 one."""
    host = remote.rpartition(":")[0] if ":" in remote else remote
    return _host_key(host.strip("[]"))


@functools.lru_cache(maxsize=1024)
def _host_key(host: str) -> str:
    """:func:`address_key` of one host (parsed once: the few hosts a hub sees connect again and
    again; an address parse was 2% of a connection storm)."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class FailureThrottle:
    """Failed authentications per address, in fixed windows, with lockouts; bounded."""

    def __init__(self, max_failures: int, window_s: float, lockout_s: float, capacity: int = TRACKED_ADDRESSES) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.capacity = capacity
        #: ``time.monotonic`` unless a test moves time itself.
        self.clock: Callable[[], float] = time.monotonic
        # address -> [window start, failures in the window, locked until]; oldest window first
        self._entries: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def locked(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry[2] > self.clock()

    def failed(self, key: str) -> tuple[bool, bool]:
        """Count a failure; returns (first failure of a new window, locked out just now)."""
        now = self.clock()
        self._expire(now)
        entry = self._entries.get(key)
        first = entry is None or now - entry[0] >= self.window_s
        if entry is None or first:
            entry = [now, 0, 0.0]
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        entry[1] += 1
        if self.max_failures and entry[1] >= self.max_failures and entry[2] <= now:
            entry[2] = now + self.lockout_s
            return first, True
        return first, False

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if now < entry[0] + self.window_s or now < entry[2]:
                return
            del entries[key]


def _globs(globs: list[str]) -> Callable[[str], bool] | None:
    """A predicate for "matches one of ``globs``", or None when ``*`` allows anything."""
    if "*" in globs:
        return None
    preds = tuple(compile_glob(g) for g in globs)
    return lambda value: any(p(value) for p in preds)


def _cut(text: str) -> str:
    return text if len(text) <= _ECHO else text[: _ECHO - 3] + "..."


class Grant:
    """A client credential compiled for the checks (verdicts cached per event type, bounded)."""

    __slots__ = ("name", "bypass", "restricts_receive", "_modules", "_send", "_receive", "_sent", "_received")

    def __init__(self, client: ClientCredential) -> None:
        self.name = client.name
        self.bypass = client.bypass
        self._modules = _globs(client.modules)
        self._send = _globs(client.send)
        self._receive = _globs(client.receive)
        self.restricts_receive = self._receive is not None
        self._sent: dict[str, bool] = {}
        self._received: dict[str, bool] = {}

    def may_announce(self, name: str) -> bool:
        return self._modules is None or self._modules(name)

    def may_send(self, etype: str) -> bool:
        return self._send is None or _verdict(self._send, self._sent, etype)

    def may_receive(self, etype: str) -> bool:
        return self._receive is None or _verdict(self._receive, self._received, etype)

    def __repr__(self) -> str:
        return f"<Grant {self.name!r}>"


def _verdict(pred: Callable[[str], bool], cache: dict[str, bool], value: str) -> bool:
    hit = cache.get(value)
    if hit is None:
        hit = pred(value)
        if len(cache) >= _VERDICTS:
            cache.clear()
        cache[value] = hit
    return hit


_NO_MATCH = object()


class TokenAuth:
    airi_essential = True
    airi_config_section = "auth"

    def __init__(self) -> None:
        self.settings = AuthSettings()
        # the deadline of each peer not yet authenticated (kept here, not in peer.state: a
        # per-peer dict entry would outlive the timer in every connection's memory)
        self._deadlines: dict[Peer, asyncio.TimerHandle] = {}
        #: digest of each accepted token -> its credential (None: the shared token)
        self._keys: list[tuple[bytes, Grant | None]] = []
        self.throttle = FailureThrottle(5, 60.0, 60.0)
        #: peers authenticated with a client credential (the shared token: absent)
        self.grants: dict[Peer, Grant] = {}
        #: the subset whose credential restricts what they receive
        self.receivers: dict[Peer, Grant] = {}
        self.permissions: ClientPermissions | None = None

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return AuthSettings

    @hookimpl
    def airi_startup(self, hub: Hub) -> None:
        settings = hub.plugin_config(self)
        self.settings = settings if isinstance(settings, AuthSettings) else AuthSettings()
        s = self.settings
        self._keys = [(_digest(s.secret), None)] if s.secret else []
        self._keys += [(_digest(c.token.get_secret_value()), Grant(c)) for c in s.clients]
        self.throttle = FailureThrottle(s.max_failures, s.failure_window_ms / 1000, s.lockout_ms / 1000)
        for key in ("auth_timeouts", "auth_failures", "auth_lockouts", "auth_refused", "permission_denied"):
            hub.stats.setdefault(key, 0)
        if s.clients and self.permissions is None:
            self.permissions = ClientPermissions(self)
            hub.plugins.register(self.permissions, PERMISSIONS_PLUGIN)

    @hookimpl
    def airi_reload(self, hub: Hub, changed: frozenset[str]) -> None:
        """New tokens, clients and throttling from now on; open connections stay, and keep what
        they authenticated with. The failure counts survive unless the throttling changed."""
        if "auth" not in changed:
            return
        settings = hub.plugin_config(self)
        old, self.settings = self.settings, settings if isinstance(settings, AuthSettings) else AuthSettings()
        s = self.settings
        self._keys = [(_digest(s.secret), None)] if s.secret else []
        self._keys += [(_digest(c.token.get_secret_value()), Grant(c)) for c in s.clients]
        if (s.max_failures, s.failure_window_ms, s.lockout_ms) != (old.max_failures, old.failure_window_ms, old.lockout_ms):
            self.throttle = FailureThrottle(s.max_failures, s.failure_window_ms / 1000, s.lockout_ms / 1000)
        if s.clients and self.permissions is None:
            self.permissions = ClientPermissions(self)
            hub.plugins.register(self.permissions, PERMISSIONS_PLUGIN)
        elif not s.clients and self.permissions is not None and not self.grants:
            hub.plugins.unregister(PERMISSIONS_PLUGIN)
            self.permissions = None

    # -- authentication --------------------------------------------------------------------------
    @hookimpl(trylast=True)
    def airi_authenticate(self, hub: Hub, peer: Peer, token: str | None) -> Accept | Reject | None:
        if not self._keys:
            return ACCEPT
        if token is None:  # connect time: wait for module:authenticate
            return None
        key = address_key(peer.remote)
        throttle = self.throttle
        if throttle.locked(key):
            # refused without looking at the token; closed once the error has been queued
            hub.stats["auth_refused"] += 1
            asyncio.get_running_loop().call_soon(hub.disconnect, peer, errors.TOO_MANY_FAILED_ATTEMPTS, 1008)
            return Reject(errors.TOO_MANY_FAILED_ATTEMPTS)
        found = self._match(token)
        if found is _NO_MATCH:
            hub.stats["auth_failures"] += 1
            first, locked = throttle.failed(key)
            if first:
                hub.log.info(
                    "authentication failed for %s from %s (further failures from this address are counted, logged once per %g s)",
                    peer.id, key, throttle.window_s, extra={"peer": peer.id},
                )
            if locked:
                hub.stats["auth_lockouts"] += 1
                hub.log.warning(
                    "too many failed attempts from %s (%d within %g s): its authentications are refused for %g s",
                    key, throttle.max_failures, throttle.window_s, throttle.lockout_s, extra={"peer": peer.id},
                )
            return Reject(errors.INVALID_TOKEN)
        grant: Grant | None = found  # type: ignore[assignment]
        if peer.authenticated and self.grants.get(peer) is not grant:
            hub.stats["permission_denied"] += 1
            return Reject(errors.permission_denied("already authenticated as another client"))
        if grant is not None:
            self.grants[peer] = grant
            if grant.restricts_receive:
                self.receivers[peer] = grant
        return ACCEPT

    # -- peers of other instances (a cluster) -----------------------------------------------------
    def credential_of(self, peer: Peer) -> str | None:
        """The name of the ``[[auth.clients]]`` credential ``peer`` authenticated with (None:
        the shared token, or no authentication at all)."""
        grant = self.grants.get(peer)
        return grant.name if grant is not None else None

    def grant_remote(self, hub: Hub, peer: Peer, name: str) -> None:
        """``peer`` (a mirror of another instance's connection) authenticated there with the
        credential ``name``: the same permissions hold for it here. Instances of one cluster
        share ``[[auth.clients]]``; a name this instance does not know gets no permission at all."""
        grant = next((g for _, g in self._keys if isinstance(g, Grant) and g.name == name), None)
        if grant is None:
            hub.log.warning("credential '%s' of %s is not configured here: it may do nothing", _cut(name), peer.describe)
            grant = Grant(ClientCredential(name=name, token=SecretStr("-"), modules=[], send=[], receive=[], bypass=False))
        self.grants[peer] = grant
        if grant.restricts_receive:
            self.receivers[peer] = grant
        if self.permissions is None:  # this instance has no clients of its own: checks for the mirror
            self.permissions = ClientPermissions(self)
            hub.plugins.register(self.permissions, PERMISSIONS_PLUGIN)

    def _match(self, token: str) -> object:
        """The credential whose token this is (None: the shared token), or ``_NO_MATCH``; every
        configured token is compared, each in constant time."""
        given = _digest(token)
        found: object = _NO_MATCH
        for digest, grant in self._keys:
            if hmac.compare_digest(given, digest) and found is _NO_MATCH:
                found = grant
        return found

    # -- the deadline, and forgetting a peer -------------------------------------------------------
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
        self.grants.pop(peer, None)
        self.receivers.pop(peer, None)

    @hookimpl
    def airi_shutdown(self, hub: Hub) -> None:
        for timer in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()
        if self.permissions is not None:
            hub.plugins.unregister(PERMISSIONS_PLUGIN)
            self.permissions = None

    def _cancel(self, peer: Peer) -> None:
        timer = self._deadlines.pop(peer, None)
        if timer is not None:
            timer.cancel()

    def _expired(self, hub: Hub, peer: Peer) -> None:
        self._deadlines.pop(peer, None)
        if not peer.authenticated and not peer.closed:
            hub.stats["auth_timeouts"] += 1
            hub.disconnect(peer, "authentication timeout", 1008)


class ClientPermissions:
    """The checks of ``[[auth.clients]]`` permissions (registered by ``auth`` as
    ``auth.permissions`` when clients are configured); see the module docstring."""

    def __init__(self, auth: TokenAuth) -> None:
        self.grants = auth.grants
        self.receivers = auth.receivers

    @hookimpl(tryfirst=True)
    def airi_announce(self, hub: Hub, peer: Peer, announcement: Announcement) -> Reject | None:
        grant = self.grants.get(peer)
        if grant is None or grant.may_announce(announcement.name):
            return None
        hub.stats["permission_denied"] += 1
        return Reject(errors.permission_denied(f"may not announce module '{_cut(announcement.name)}'"))

    @hookimpl(tryfirst=True)
    def airi_event(self, hub: Hub, peer: Peer, event: Event) -> Reject | None:
        grant = self.grants.get(peer)
        if grant is None or event.type in HANDSHAKE_EVENT_TYPES or grant.may_send(event.type):
            return None  # a 2026-08 handshake event is governed like its April twin (``modules``)
        hub.stats["permission_denied"] += 1
        return Reject(errors.permission_denied(f"may not send '{_cut(event.type)}'"))

    @hookimpl(wrapper=True)
    def airi_route(self, hub: Hub, ctx: RouteContext) -> Generator[None, Any, Any]:
        receive: Callable[[Peer], bool] | None = None
        receivers = self.receivers
        if receivers:
            etype = ctx.event.type
            get = receivers.get

            def receive(peer: Peer) -> bool:
                grant = get(peer)
                return grant is None or grant.may_receive(etype)

            ctx.add_filter(receive)  # before any route plugin runs: consumer delivery sees it
        decision = yield
        if not ctx.bypass:
            return decision
        grant = self.grants.get(ctx.sender)
        if grant is not None and not grant.bypass:
            ctx.bypass = False
            hub.stats["permission_denied"] += 1
            return Drop(f"client '{grant.name}' may not use the devtools bypass", errors.permission_denied("may not use the devtools bypass"))
        if receive is not None:
            # the bypass skips the route filters and the decision, not what a receiver may receive
            ctx.bypass = False
            ctx.pool = None
            ctx.filters = [receive]
            return BROADCAST
        return decision
