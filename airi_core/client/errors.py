"""The exceptions the client raises or reports, and :func:`classify_error`, which maps a hub
error to one of them by the exact strings of PROTOCOL.md (:mod:`airi_core.protocol.errors`)."""

from __future__ import annotations

from typing import Any

from ..protocol import errors
from ..protocol.events import Event

__all__ = [
    "ClientError",
    "ClientClosedError",
    "ConnectionLostError",
    "HandshakeTimeoutError",
    "ProtocolError",
    "HandlerError",
    "ServerError",
    "AuthenticationError",
    "TokenRequiredError",
    "NotAuthenticatedError",
    "AnnounceError",
    "ConsumerRegistrationError",
    "NoConsumerError",
    "UnknownModuleError",
    "classify_error",
]


class ClientError(Exception):
    """Base of every error this package raises."""


class ClientClosedError(ClientError):
    """The client was closed (by :meth:`Client.close`) while you were waiting."""


class ConnectionLostError(ClientError):
    """The connection ended while a request was in flight (the client reconnects by itself)."""

    def __init__(self, message: str, code: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class HandshakeTimeoutError(ClientError):
    """The hub did not complete authentication/announcement in time (the client retries)."""


class ProtocolError(ClientError):
    """The hub sent a frame that is not an AIRI event."""


class HandlerError(ClientError):
    """A handler raised; the original exception is ``__cause__``."""

    def __init__(self, handler: Any, event: Event, error: BaseException) -> None:
        name = getattr(handler, "__qualname__", repr(handler))
        super().__init__(f"handler {name} failed on '{event.type}': {type(error).__name__}: {error}")
        self.handler = handler
        self.event = event
        self.__cause__ = error


class ServerError(ClientError):
    """An ``error`` event from the hub. ``message`` is its exact text, ``code`` the code of the
    PROTOCOL.md table (or None for a message outside it), ``event`` the error event itself."""

    def __init__(self, message: str, event: Event | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.event = event
        self.code = _ERROR_CODES.get(message) or ("invalid-json" if message.startswith("invalid JSON, error:") else None)


class AuthenticationError(ServerError):
    """``invalid token``: terminal, the client goes to ``failed``."""


class TokenRequiredError(AuthenticationError):
    """The hub requires a token and none was given (``must authenticate before announcing``)."""


class NotAuthenticatedError(ServerError):
    """``not authenticated``: the client re-authenticates by itself."""


class AnnounceError(ServerError):
    """The hub refused the announcement (terminal: announcing again would fail the same way)."""


class ConsumerRegistrationError(ServerError):
    """The hub refused a consumer registration."""


class NoConsumerError(ServerError):
    """``no consumer registered for requested event delivery`` (delivery with ``required``)."""


class UnknownModuleError(ServerError):
    """``module not found, ...`` (``ui:configure`` for a module that is not announced)."""


_ERROR_CODES = {
    errors.INVALID_EVENT_FORMAT: "invalid-event-format",
    errors.INVALID_TOKEN: "invalid-token",
    errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING: "must-authenticate-before-announcing",
    errors.MODULE_ANNOUNCE_IDENTITY_INVALID: "module-announce-identity-invalid",
    errors.MODULE_ANNOUNCE_INDEX_INVALID: "module-announce-index-invalid",
    errors.MODULE_ANNOUNCE_NAME_INVALID: "module-announce-name-invalid",
    errors.MODULE_CONSUMER_EVENT_INVALID: "module-consumer-event-invalid",
    errors.MODULE_NOT_FOUND: "module-not-found",
    errors.NO_CONSUMER_REGISTERED: "no-consumer-registered",
    errors.NOT_AUTHENTICATED: "not-authenticated",
    errors.UI_CONFIGURE_MODULE_INDEX_INVALID: "ui-configure-module-index-invalid",
    errors.UI_CONFIGURE_MODULE_NAME_INVALID: "ui-configure-module-name-invalid",
}

_ANNOUNCE_ERRORS = frozenset({
    errors.MODULE_ANNOUNCE_IDENTITY_INVALID,
    errors.MODULE_ANNOUNCE_INDEX_INVALID,
    errors.MODULE_ANNOUNCE_NAME_INVALID,
})


def classify_error(message: str, event: Event | None = None, *, have_token: bool = True) -> ServerError:
    """The exception for a hub error text (exact PROTOCOL.md strings)."""
    if message == errors.INVALID_TOKEN:
        return AuthenticationError(message, event)
    if message == errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING:
        if not have_token:
            return TokenRequiredError(f"{message} (the hub requires a token and none was given)", event)
        return NotAuthenticatedError(message, event)
    if message == errors.NOT_AUTHENTICATED:
        return NotAuthenticatedError(message, event)
    if message in _ANNOUNCE_ERRORS:
        return AnnounceError(message, event)
    if message == errors.MODULE_CONSUMER_EVENT_INVALID:
        return ConsumerRegistrationError(message, event)
    if message == errors.NO_CONSUMER_REGISTERED:
        return NoConsumerError(message, event)
    if message == errors.MODULE_NOT_FOUND:
        return UnknownModuleError(message, event)
    return ServerError(message, event)
