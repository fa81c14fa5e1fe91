"""The exact error strings of the AIRI protocol.

Clients classify server errors by these strings (the JS SDK reconnects on ``not authenticated``,
for example), so they are part of the wire contract: never reword them.
"""

from __future__ import annotations

INVALID_EVENT_FORMAT = "invalid event format"
INVALID_TOKEN = "invalid token"
MUST_AUTHENTICATE_BEFORE_ANNOUNCING = "must authenticate before announcing"
MODULE_ANNOUNCE_IDENTITY_INVALID = (
    "module identity must include kind=plugin and a plugin id for event 'module:announce'"
)
MODULE_ANNOUNCE_INDEX_INVALID = (
    "the field 'index' must be a non-negative integer for event 'module:announce'"
)
MODULE_ANNOUNCE_NAME_INVALID = (
    "the field 'name' must be a non-empty string for event 'module:announce'"
)
MODULE_CONSUMER_EVENT_INVALID = (
    "the field 'event' must be a non-empty string for event consumer registration"
)
MODULE_NOT_FOUND = "module not found, it hasn't announced itself or the name is incorrect"
NO_CONSUMER_REGISTERED = "no consumer registered for requested event delivery"
NOT_AUTHENTICATED = "not authenticated"
UI_CONFIGURE_MODULE_INDEX_INVALID = (
    "the field 'moduleIndex' must be a non-negative integer for event 'ui:configure'"
)
UI_CONFIGURE_MODULE_NAME_INVALID = "the field 'moduleName' can't be empty for event 'ui:configure'"

# -- the 2026-08 (HEAD) generation: the same codes, three reworded for ``extension:*`` events (the
# HEAD SDK knows only these texts; PROTOCOL-HEAD.md section 5). ---------------------------------
EXTENSION_MODULE_ANNOUNCE_IDENTITY_INVALID = (
    "extension module identity must include an extension id for event 'extension:module:announce'"
)
EXTENSION_MODULE_ANNOUNCE_INDEX_INVALID = (
    "the field 'index' must be a non-negative integer for event 'extension:module:announce'"
)
EXTENSION_MODULE_ANNOUNCE_NAME_INVALID = (
    "the field 'name' must be a non-empty string for event 'extension:module:announce'"
)


def invalid_json(parser_message: str) -> str:
    """The ``invalid JSON`` error text for a parser's message."""
    return f"invalid JSON, error: {parser_message}"


# -- credentials and permissions (the ``auth`` plugin) -------------------------------------------
#: An address had too many failed authentications: the attempt is refused unchecked and the
#: connection closed with 1008 and this reason.
TOO_MANY_FAILED_ATTEMPTS = "too many failed attempts"
#: Prefix of every refusal of a per-client permission (``[[auth.clients]]``):
#: ``permission denied: <what>``.
PERMISSION_DENIED = "permission denied"


def permission_denied(what: str) -> str:
    """``permission denied: <what>``, the answer to an action a client's credential does not allow."""
    return f"{PERMISSION_DENIED}: {what}"


# -- the hub's own errors (not in the reference; clients see them only when they break a rule
# the reference did not have). Added, never reworded either. --------------------------------------
MODULE_ANNOUNCE_SERVER_IDENTITY = (
    "module identity must not be the server's (plugin id 'proj-airi:server-runtime' or the hub's "
    "instance id) for event 'module:announce'"
)
EXTENSION_ANNOUNCE_SERVER_IDENTITY = (
    "extension identity must not be the server's (id 'proj-airi:server-runtime' or the hub's "
    "instance id)"
)
SERVER_SOURCE_CLAIMED = (
    "metadata.source claims the server's identity (plugin id 'proj-airi:server-runtime'): "
    "only the hub sends as the server, event refused"
)


def server_only_event(event_type: str) -> str:
    """A peer sent an event type only the server originates (``registry:*``, ``error``,
    ``module:authenticated``, ``module:announced``, ``module:de-announced``, ``module:configure``,
    ``peer:authenticated``, ``extension:authenticated``, ``extension:announced``,
    ``extension:module:announced``, ``extension:module:de-announced``)."""
    return f"the event type '{event_type}' is sent by the server only, event refused"


def announce_name_too_long(limit: int, event_type: str = "module:announce") -> str:
    return f"the field 'name' must be at most {limit} characters for event '{event_type}'"


def announce_identity_too_large(limit: int, event_type: str = "module:announce") -> str:
    return f"the field 'identity' must be at most {limit} bytes of JSON for event '{event_type}'"


def announce_too_many_labels(limit: int, event_type: str = "module:announce") -> str:
    return f"the module identity must have at most {limit} labels for event '{event_type}'"


def announce_too_large(limit: int, event_type: str) -> str:
    """An ``extension:*`` announce whose data (echoed to every peer) is over the limit."""
    return f"the event data must be at most {limit} bytes of JSON for event '{event_type}'"


def too_many_modules(limit: int) -> str:
    """A connection announcing more extension modules than it may hold."""
    return f"a connection may hold at most {limit} modules; event 'extension:module:announce' refused"


def too_many_peer_ids(limit: int) -> str:
    """A connection claiming more ``peer:authenticate`` aliases than it may hold."""
    return f"a connection may hold at most {limit} peer ids; event 'peer:authenticate' refused"


def peer_id_too_long(limit: int) -> str:
    return f"the field 'peerId' must be at most {limit} characters for event 'peer:authenticate'"


def announce_rate_limited(burst: int, per_second: float) -> str:
    return (
        f"announce rate limit exceeded: at most {burst} announces at once, then {per_second:g} per "
        "second; announce refused"
    )


def registry_full(limit: int) -> str:
    return f"the module registry is full (at most {limit} bytes of module entries); announce refused"
