"""Labelled counters the kernel keeps beside ``hub.stats``, read by the metrics at scrape time.

Counting must stay cheap (a dict increment on paths that are not per-frame: errors, drops,
plugin failures) and bounded: labels come from strings plugins and peers influence (error
messages, disconnect reasons), so each counter keeps at most :data:`MAX_LABELS` distinct label
values; the rest are added to ``(other)``. Error messages are reduced to their fixed part
(``permission denied: may not send 'x'`` -> ``permission denied``) so one kind of error is one
series whatever its details.
"""

from __future__ import annotations

import re

__all__ = ["Counts", "LabelledCounter", "error_kind", "MAX_LABELS", "OTHER"]

#: distinct label values one counter keeps; further ones count as :data:`OTHER`
MAX_LABELS = 200
OTHER = "(other)"
#: the longest label value kept (longer ones are cut)
MAX_LABEL_CHARS = 80

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def error_kind(message: str) -> str:
    """The fixed part of an error message: quoted parts replaced by ``'…'``, cut at the first
    ``:`` (what follows is detail: a parser's message, a limit, a name)."""
    kind = _QUOTED.sub("'…'", message).split(":", 1)[0].strip()
    return kind[:MAX_LABEL_CHARS] or "(empty)"


class LabelledCounter:
    """Counts per label tuple, at most :data:`MAX_LABELS` distinct tuples."""

    __slots__ = ("values", "arity")

    def __init__(self, arity: int = 1) -> None:
        self.values: dict[tuple[str, ...], int] = {}
        self.arity = arity

    def add(self, *labels: str, n: int = 1) -> None:
        values = self.values
        if labels in values:
            values[labels] += n
            return
        if len(values) >= MAX_LABELS:
            labels = (OTHER,) * self.arity
        else:
            labels = tuple(label[:MAX_LABEL_CHARS] for label in labels)
        values[labels] = values.get(labels, 0) + n

    def total(self) -> int:
        return sum(self.values.values())


class Counts:
    """What the kernel counts by label (``hub.counts``); plain totals stay in ``hub.stats``."""

    __slots__ = ("errors", "disconnects", "plugin_failures")

    def __init__(self) -> None:
        #: error events sent, by :func:`error_kind` of their message
        self.errors = LabelledCounter()
        #: peers gone, by reason (``connection closed``, ``slow consumer``, ``heartbeat expired``...)
        self.disconnects = LabelledCounter()
        #: plugin failures, by (plugin, hook)
        self.plugin_failures = LabelledCounter(2)

    def error_sent(self, message: str) -> None:
        self.errors.add(error_kind(message))
