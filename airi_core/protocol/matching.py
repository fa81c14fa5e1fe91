"""Destination and label matching, compiled once per event into peer predicates.

Strings: ``*``; ``module:NAME`` (the April module's name, or any extension module's name or
identity id); ``source:NAME`` (the April module's name); ``plugin:ID`` (the April plugin id or
the extension id); ``instance:ID`` (identity id); ``label:k=v`` / ``label:k``; ``peer:ID``
(connection id or a ``peer:authenticate`` alias); any other string is a glob (``*`` wildcard)
tested against the April module name, plugin id, extension id, identity id and every extension
module's name and id. A prefixed string is split at its first ``:`` only
(``module:proj-airi:stage-web`` works); an empty value matches nothing. Objects: ``and``/``or``
over nested expressions and the leaves ``glob`` (as a glob string, minus extension module names
and ids), ``ids``, ``plugin``, ``instance``, ``label``, ``module``, ``source``, each leaf
optionally ``inverted``. Anything malformed matches nobody.

Work bounds (:class:`Limits`, :func:`measure`): a hub checks a destination list against limits on
the number of destinations, of terms (every destination, nested expression and string in a leaf's
list) and on the length of every string *before* compiling it, and :func:`measure` also gives the
list's cost per peer (about one unit per comparison), so that the work one event can cause,
cost x candidate peers, can be capped too. Checking stops at the first limit exceeded: a list of
50,000 entries costs as little to refuse as one of 65.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .glob import compile_glob, glob_pieces
from .identity import label_text


class Routable(Protocol):
    """What destinations are matched against: a hub's peer (or any object with these fields)."""

    id: str
    name: str
    plugin_id: str
    extension_id: str
    instance_id: str
    labels: dict[str, Any]
    aliases: frozenset[str]
    module_keys: frozenset[str]
    verified: bool
    devtools: bool


Predicate = Callable[[Routable], bool]

#: Deeper and/or nesting than this matches nobody (a hostile expression cannot blow the stack).
MAX_DEPTH = 32


def _never(peer: Routable) -> bool:
    return False


def _always(peer: Routable) -> bool:
    return True


def glob_matches(glob: str, value: str) -> bool:
    """Whole-string match with ``*`` as the only wildcard; an empty value (a peer without a
    name, say) never matches."""
    return bool(value) and compile_glob(glob)(value)


def parse_selector(selector: str) -> tuple[str, str | None]:
    """``k=v`` -> (k, v); ``k`` -> (k, None). Split at the first ``=``; both sides trimmed."""
    key, sep, value = selector.partition("=")
    return key.strip(), (value.strip() if sep else None)


def selector_matches(selector: tuple[str, str | None], labels: dict[str, Any]) -> bool:
    key, value = selector
    if not key or key not in labels:
        return False
    return value is None or label_text(labels[key]) == value


def selectors_match(selectors: Sequence[tuple[str, str | None]], labels: dict[str, Any]) -> bool:
    """All selectors match (an empty list matches)."""
    for key, value in selectors:  # a plain loop: this runs per candidate peer per event
        if not key or key not in labels:
            return False
        if value is not None and label_text(labels[key]) != value:
            return False
    return True


def compile_selectors(raw: Any) -> list[tuple[str, str | None]] | None:
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        return None
    return [parse_selector(s) for s in raw]


def _glob_ids(glob: str, match: Callable[[str], bool] | None = None) -> Predicate:
    """``{type: glob}``: the April module name, plugin id, extension id and identity id."""
    if match is None:
        match = compile_glob(glob)

    def test(p: Routable) -> bool:
        for value in (p.name, p.plugin_id, p.extension_id, p.instance_id):
            if value and match(value):
                return True
        return False

    return test


def _glob_any(glob: str) -> Predicate:
    """A bare glob string: as :func:`_glob_ids`, plus every extension module's name and id."""
    match = compile_glob(glob)
    ids = _glob_ids(glob, match)

    def test(p: Routable) -> bool:
        if ids(p):
            return True
        keys = p.module_keys
        return bool(keys) and any(match(k) for k in keys if k)

    return test


def compile_string(dest: str) -> Predicate:
    if dest == "*":
        return _always
    prefix, sep, value = dest.partition(":")
    if sep and prefix in _PREFIXES:
        if not value:
            return _never  # module:, plugin:, ... name nothing
        if prefix == "module":
            return lambda p: p.name == value or value in p.module_keys
        if prefix == "source":
            return lambda p: p.name == value
        if prefix == "plugin":
            return lambda p: p.plugin_id == value or p.extension_id == value
        if prefix == "instance":
            return lambda p: p.instance_id == value
        if prefix == "label":
            sel = parse_selector(value)
            return lambda p: selector_matches(sel, p.labels)
        return lambda p: p.id == value or value in p.aliases  # peer:
    return _glob_any(dest)


def _strings(expr: dict[str, Any], key: str) -> list[str] | None:
    raw = expr.get(key)
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        return None
    return raw


def compile_expression(expr: Any, depth: int = 0) -> Predicate:
    if isinstance(expr, str):
        return compile_string(expr)
    if not isinstance(expr, dict) or depth > MAX_DEPTH:
        return _never
    kind = expr.get("type")
    if not isinstance(kind, str):
        return _never
    if kind == "and" or kind == "or":
        children = expr.get("all" if kind == "and" else "any")
        if not isinstance(children, list):
            return _never
        preds = [compile_expression(c, depth + 1) for c in children]
        return _all_of(preds) if kind == "and" else _any_of(preds)
    leaf = _compile_leaf(kind, expr)
    if leaf is None:
        return _never
    if expr.get("inverted") is True:
        return lambda p: not leaf(p)
    return leaf


_LEAF_FIELDS = {"ids": "ids", "plugin": "plugins", "instance": "instances", "module": "modules", "source": "sources"}


def _compile_leaf(kind: str, expr: dict[str, Any]) -> Predicate | None:
    if kind == "glob":
        glob = expr.get("glob")
        return _glob_ids(glob) if isinstance(glob, str) else None
    if kind == "label":
        sels = compile_selectors(expr.get("selectors"))
        if sels is None:
            return None
        return lambda p: selectors_match(sels, p.labels)
    field = _LEAF_FIELDS.get(kind)
    if field is None:
        return None
    values = _strings(expr, field)
    if values is None:
        return None
    wanted = frozenset(v for v in values if v)  # an empty value names nothing
    if not wanted:
        return _never
    if kind == "ids":
        return lambda p: p.id in wanted or bool(p.aliases) and not wanted.isdisjoint(p.aliases)
    if kind == "plugin":
        return lambda p: p.plugin_id in wanted or p.extension_id in wanted
    if kind == "instance":
        return lambda p: p.instance_id in wanted
    if kind == "module":
        return lambda p: p.name in wanted or bool(p.module_keys) and not wanted.isdisjoint(p.module_keys)
    return lambda p: p.name in wanted  # source


def _all_of(preds: list[Predicate]) -> Predicate:
    # closures without generators for the common small cases: evaluated per candidate per event
    if not preds:
        return _always
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda p: a(p) and b(p)
    return lambda p: all(f(p) for f in preds)


def _any_of(preds: list[Predicate]) -> Predicate:
    if not preds:
        return _never
    if _always in preds:
        return _always
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda p: a(p) or b(p)
    return lambda p: any(f(p) for f in preds)


def compile_destinations(destinations: list[Any]) -> Predicate:
    """A predicate true for peers matching any destination (an empty list matches nobody)."""
    return _any_of([compile_expression(d) for d in destinations])


def is_devtools(peer: Routable) -> bool:
    """A devtools peer: its *announced* identity has the label ``devtools`` = ``true``/``1``, or
    its April module name contains ``devtools``. Nothing a peer claims without announcing (an
    adopted ``metadata.source``, an extension identity) makes it devtools."""
    return peer.verified and (peer.devtools or "devtools" in peer.name)


def module_hint(dest: Any, depth: int = 0) -> frozenset[str] | None:
    """Names that every peer matching ``dest`` is reachable under as ``module:NAME`` (its April
    module's name, an extension module's name or id: ``registry.peers_named``), when the
    expression says so (``module:X``, ``source:X``, a non-inverted ``module``/``source`` leaf, an
    ``and`` with such a term, an ``or`` of such terms); None when any peer might match. Lets
    routing look peers up by name instead of testing every peer (``source:`` then still needs
    its predicate: only the April name counts for it)."""
    if isinstance(dest, str):
        prefix, sep, value = dest.partition(":")
        if sep and prefix in ("module", "source") and value:
            return frozenset((value,))
        if sep and prefix in ("module", "source"):
            return frozenset()  # an empty name matches nobody
        return None
    if not isinstance(dest, dict) or depth > MAX_DEPTH:
        return None
    kind = dest.get("type")
    if kind in ("module", "source") and dest.get("inverted") is not True:
        values = _strings(dest, "modules" if kind == "module" else "sources")
        return frozenset(v for v in values if v) if values is not None else None
    if kind == "and":
        children = dest.get("all")
        if isinstance(children, list):
            for child in children:
                hint = module_hint(child, depth + 1)
                if hint is not None:
                    return hint
        return None
    if kind == "or":
        children = dest.get("any")
        if isinstance(children, list):
            return destinations_hint(children, depth + 1)
    return None


def destinations_hint(dests: list[Any], depth: int = 0) -> frozenset[str] | None:
    """Union of the module hints of every destination, or None if one of them has none."""
    names: set[str] = set()
    for d in dests:
        hint = module_hint(d, depth)
        if hint is None:
            return None
        names |= hint
    return frozenset(names)


# -- work bounds ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one event's destination list (the ``destinations`` plugin's defaults)."""

    #: Entries of the destination list itself.
    max_destinations: int = 64
    #: Terms in all: every destination, every nested expression, every string of a leaf's list.
    max_terms: int = 256
    #: Characters of any one string (a glob, a name, an id, a selector).
    max_string_length: int = 256


@dataclass(frozen=True, slots=True)
class Measure:
    """What :func:`measure` found: the number of terms, the cost of testing one peer (about one
    unit per comparison) and, when a limit is exceeded, the error message for the sender."""

    terms: int
    cost: int
    error: str | None = None
    #: Units per extension module name or id (bare glob strings also test those).
    key_cost: int = 0


def too_many_destinations(limit: int) -> str:
    return f"too many destinations: at most {limit}"


def destinations_too_complex(limit: int) -> str:
    return f"destinations too complex: at most {limit} terms"


def destination_too_long(limit: int) -> str:
    return f"destination too long: at most {limit} characters per string"


def destinations_too_costly(peers: int, limit: int) -> str:
    return f"destinations too costly to match against {peers} peers: at most {limit} comparisons per event"


class _Exceeded(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


def glob_cost(glob: str) -> int:
    """Units to test one peer against a glob destination: for each of its four values (module
    name, plugin id, extension id, identity id) one per piece between stars and one per 32
    characters of the glob (the scans), plus one. A bare glob is also tested against every
    extension module's name and id: the ``destinations`` plugin counts those values on top
    (:func:`glob_values`)."""
    pieces = len(glob_pieces(glob)) if "*" in glob else 1
    return 1 + 4 * (pieces + len(glob) // 32)


def glob_unit(glob: str) -> int:
    """Units to test one more value against ``glob``."""
    pieces = len(glob_pieces(glob)) if "*" in glob else 1
    return pieces + len(glob) // 32


def string_cost(dest: str) -> int:
    if dest == "*":
        return 1
    prefix, sep, _ = dest.partition(":")
    if sep and prefix in _PREFIXES:
        return 2
    return glob_cost(dest)


_PREFIXES = frozenset(("module", "source", "plugin", "instance", "label", "peer"))


class _Meter:
    __slots__ = ("limits", "terms", "key_cost")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.terms = 0
        self.key_cost = 0

    def term(self) -> None:
        self.terms += 1
        if self.terms > self.limits.max_terms:
            raise _Exceeded(destinations_too_complex(self.limits.max_terms))

    def string(self, value: str) -> None:
        if len(value) > self.limits.max_string_length:
            raise _Exceeded(destination_too_long(self.limits.max_string_length))

    def strings(self, raw: Any) -> int:
        """Count the entries of a leaf's list (checking each string); their number."""
        if not isinstance(raw, list):
            return 0
        for item in raw:
            self.term()
            if isinstance(item, str):
                self.string(item)
        return len(raw)

    def expr(self, expr: Any, depth: int) -> int:
        """Count ``expr`` (mirroring :func:`compile_expression`: only what it looks at); its cost."""
        self.term()
        if isinstance(expr, str):
            self.string(expr)
            cost = string_cost(expr)
            if cost > 2:  # a bare glob (not "*", not prefixed): also every extension module's name and id
                self.key_cost += glob_unit(expr)
            return cost
        if not isinstance(expr, dict) or depth > MAX_DEPTH:
            return 1
        kind = expr.get("type")
        if kind == "and" or kind == "or":
            children = expr.get("all" if kind == "and" else "any")
            if not isinstance(children, list):
                return 1
            return 1 + sum(self.expr(c, depth + 1) for c in children)
        if kind == "glob":
            glob = expr.get("glob")
            if not isinstance(glob, str):
                return 1
            self.string(glob)
            return glob_cost(glob)
        if kind == "label":
            return 1 + self.strings(expr.get("selectors"))
        field = _LEAF_FIELDS.get(kind) if isinstance(kind, str) else None
        if field is not None:
            self.strings(expr.get(field))
            return 2  # one set lookup
        return 1


def measure(dests: list[Any], limits: Limits) -> Measure:
    """Check a destination list against ``limits`` (stopping at the first one exceeded) and
    give its cost per peer tested. Touches at most ``max_terms + 1`` terms."""
    if len(dests) > limits.max_destinations:
        return Measure(0, 0, too_many_destinations(limits.max_destinations))
    meter = _Meter(limits)
    try:
        cost = 0
        for d in dests:
            cost += meter.expr(d, 0)
    except _Exceeded as exc:
        return Measure(meter.terms, 0, exc.message)
    return Measure(meter.terms, cost, None, meter.key_cost)
