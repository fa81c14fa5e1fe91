"""What the client sends: the envelope of every outgoing event (``metadata.source`` = this
module's identity, a fresh ``metadata.event.id``, ``parentId`` for answers), heartbeat pings and
pongs, the checks an event passes before it reaches the socket, and the encoding."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from ..protocol.events import new_id
from ..protocol.models import Delivery, Route

__all__ = ["DEFAULT_URL", "PING_MESSAGE", "PONG_MESSAGE", "HEARTBEAT", "EventBuilder", "encode", "event_id_of"]

DEFAULT_URL = "ws://127.0.0.1:6121/ws"
#: The conventional message of a client's heartbeat ping.
PING_MESSAGE = "\U0001fa75"
#: ... and of its pong.
PONG_MESSAGE = "\U0001f49b"
HEARTBEAT = "transport:connection:heartbeat"

# Compact JSON as airi_core.protocol.events.dumps writes it, except that NaN and Infinity are
# refused: the hub only re-encodes what it parsed, while a client must not put values on the
# wire that are not JSON (JS's JSON.parse rejects them).
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(value: Any) -> str:
    """Compact JSON text for the wire; raises ValueError for NaN/Infinity, TypeError for values
    that are not JSON."""
    return _encoder.encode(value)


def event_id_of(event: dict[str, Any]) -> str:
    """``metadata.event.id`` of an event this module built."""
    return str(event["metadata"]["event"]["id"])


class EventBuilder:
    """Builds the events one module sends, all with ``metadata.source`` = ``source`` (the
    module's identity as a JSON object)."""

    def __init__(self, source: dict[str, Any]) -> None:
        self.source = source

    def control(self, type: str, data: Any, parent_id: str | None = None) -> dict[str, Any]:
        """A protocol event (authenticate, announce, consumer registration, heartbeat)."""
        ref: dict[str, Any] = {"id": new_id()}
        if parent_id is not None:
            ref["parentId"] = parent_id
        return {"type": type, "data": data, "metadata": {"source": self.source, "event": ref}}

    def ping(self, message: str) -> dict[str, Any]:
        return self.control(HEARTBEAT, {"kind": "ping", "message": message, "at": int(time.time() * 1000)})

    def pong(self, parent_id: str | None) -> dict[str, Any]:
        """The answer to the hub's heartbeat ping ``parent_id``."""
        return self.control(HEARTBEAT, {"kind": "pong", "message": PONG_MESSAGE, "at": int(time.time() * 1000)}, parent_id=parent_id)

    def event(
        self,
        type: str,
        data: dict[str, Any] | BaseModel | None,
        *,
        route: Route | dict[str, Any] | None,
        destinations: Iterable[str | dict[str, Any]] | None,
        delivery: Delivery | dict[str, Any] | None,
        parent_id: str | None,
        event_id: str | None,
    ) -> dict[str, Any]:
        """A user's event, checked before anything is sent: ``type`` a non-empty string,
        ``data`` a JSON object (or a pydantic model), the route valid (``destinations`` /
        ``delivery`` fill in ``route.destinations`` / ``route.delivery``), the whole JSON-
        serializable (TypeError otherwise; pydantic's ValidationError for a bad route)."""
        if not isinstance(type, str) or not type:
            raise ValueError("event type must be a non-empty string")
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json", by_alias=True, exclude_none=True)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise TypeError("event data must be a JSON object (dict) or a pydantic model")
        route_obj: dict[str, Any] | None = None
        if route is not None or destinations is not None or delivery is not None:
            r = route if isinstance(route, Route) else Route.model_validate(route or {})
            update: dict[str, Any] = {}
            if destinations is not None:
                update["destinations"] = list(destinations)
            if delivery is not None:
                update["delivery"] = delivery if isinstance(delivery, Delivery) else Delivery.model_validate(delivery)
            if update:
                r = Route.model_validate({**r.model_dump(by_alias=True, exclude_none=True), **update})
            route_obj = r.wire()
        ref: dict[str, Any] = {"id": event_id or new_id()}
        if parent_id is not None:
            ref["parentId"] = parent_id
        event: dict[str, Any] = {"type": type, "data": data, "metadata": {"source": self.source, "event": ref}}
        if route_obj is not None:
            event["route"] = route_obj
        try:
            encode(event)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"event '{type}' is not JSON-serializable: {exc}") from None
        return event
