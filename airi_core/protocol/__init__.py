"""The AIRI wire protocol, shared by the hub, its plugins and the client SDK.

- :mod:`.events`: the one :class:`Event` model, frame decoding and envelope validation, encoding,
  ids;
- :mod:`.errors`: the exact error strings clients classify errors by;
- :mod:`.identity`: module identities and labels;
- :mod:`.glob`: the one glob dialect (``*`` only, whole string, linear time);
- :mod:`.matching`: destinations and label selectors compiled into predicates;
- :mod:`.models`: pydantic models of the payloads (what a client validates before sending).

Nothing here imports the server or the client.
"""

from __future__ import annotations

from . import errors
from .events import HEARTBEAT_FRAMES, DecodeError, Encoded, Event, decode_frame, dumps, new_id
from .glob import compile_glob, glob_match
from .identity import (
    SERVER_PLUGIN_ID,
    instance_id_of,
    is_valid_identity,
    label_text,
    labels_of,
    non_negative_int,
    plugin_id_of,
)

__all__ = [
    "errors",
    "Event",
    "DecodeError",
    "decode_frame",
    "dumps",
    "Encoded",
    "new_id",
    "HEARTBEAT_FRAMES",
    "SERVER_PLUGIN_ID",
    "labels_of",
    "plugin_id_of",
    "instance_id_of",
    "is_valid_identity",
    "label_text",
    "non_negative_int",
    "glob_match",
    "compile_glob",
]
