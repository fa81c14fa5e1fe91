"""The ``route-filter`` plugin: its ``airi_route`` hook and the compiled form of its settings.

By default the built-in ``destinations`` plugin (``tryfirst``) runs before this one, and the
``policy`` plugin's filter is a standing route filter of the hub, so by the time this hook runs
the sender's destinations and the policy have narrowed the candidates. A redirect (:class:`~airi_core.Targets`)
still honours them: the hub delivers only to targets that pass every filter added so far. Ordered
before ``destinations`` (``[plugins] order``) a redirect ignores the sender's destinations; the
policy holds whatever the order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from airi_core import Drop, Hub, RouteContext, Targets, hookimpl
from airi_core.protocol import compile_glob

from .settings import RouteFilterSettings, Rule

__all__ = ["CompiledFilter", "RouteFilter", "lookup"]

#: Distinct event types whose matching rules are remembered; types are chosen by clients, so the
#: cache is cleared when it grows past this instead of growing without bound.
TYPE_CACHE_LIMIT = 4096

_MISSING: Any = object()


def any_glob(globs: Iterable[str]) -> Callable[[str], bool] | None:
    """A predicate matching an event type against any of ``globs``, in the protocol's glob
    dialect (``*`` = any characters, the rest literal). None when there are no globs."""
    matchers = [compile_glob(glob) for glob in globs]
    if not matchers:
        return None
    return lambda value: any(match(value) for match in matchers)


def lookup(data: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in ``data`` (dict keys; a digit string also indexes a list), or the
    module's ``_MISSING`` sentinel when the path does not lead anywhere."""
    node = data
    for key in path:
        if isinstance(node, dict):
            node = node.get(key, _MISSING)
            if node is _MISSING:
                return _MISSING
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return _MISSING
    return node


def same_value(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1`` (Python's ``True == 1`` would say it is)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    type_matches: Callable[[str], bool]
    path: tuple[str, ...] | None
    has_equals: bool
    equals: Any
    target: str | None  # module name for a redirect, None for a drop

    @classmethod
    def of(cls, index: int, rule: Rule) -> CompiledRule:
        return cls(
            index,
            compile_glob(rule.type),
            tuple(rule.field.split(".")) if rule.field is not None else None,
            rule.has_equals,
            rule.equals,
            rule.target_module,
        )

    def matches_data(self, data: dict[str, Any]) -> bool:
        if self.path is None:
            return True
        value = lookup(data, self.path)
        if value is _MISSING:
            return False
        return not self.has_equals or same_value(value, self.equals)


_DROPPED_BY_TYPE: tuple[CompiledRule, ...] | None = None  # marker in the per-type cache


class CompiledFilter:
    """The settings turned into regexes, plus a per-event-type cache of which rules apply, so
    the hot path costs one dict lookup for types that no rule mentions."""

    def __init__(self, settings: RouteFilterSettings) -> None:
        self.settings = settings
        self.drop = any_glob(settings.drop_types)
        self.rules = tuple(CompiledRule.of(i, r) for i, r in enumerate(settings.rules))
        self._by_type: dict[str, tuple[CompiledRule, ...] | None] = {}

    @property
    def empty(self) -> bool:
        return self.drop is None and not self.rules

    def rules_for(self, etype: str) -> tuple[CompiledRule, ...] | None:
        """The rules whose type glob matches ``etype``, or None when ``drop_types`` drops it."""
        try:
            return self._by_type[etype]
        except KeyError:
            pass
        if self.drop is not None and self.drop(etype):
            found: tuple[CompiledRule, ...] | None = _DROPPED_BY_TYPE
        else:
            found = tuple(r for r in self.rules if r.type_matches(etype))
        if len(self._by_type) >= TYPE_CACHE_LIMIT:
            self._by_type.clear()
        self._by_type[etype] = found
        return found

    def decide(self, hub: Hub, ctx: RouteContext) -> Drop | Targets | None:
        etype = ctx.event.type
        rules = self.rules_for(etype)
        if rules is None:
            return Drop(f"route-filter: '{etype}' matches drop_types")
        for rule in rules:
            if not rule.matches_data(ctx.event.data):
                continue
            if rule.target is None:
                return Drop(f"route-filter: rules[{rule.index}] drops '{etype}'")
            # Every peer announced under that module name (any index); the core still removes
            # the sender, unauthenticated peers and peers the policy/destinations filtered out.
            return Targets.of(hub.registry.peers_named(rule.target))
        return None


class RouteFilter:
    """Drop or redirect routed events as configured in ``[plugins.route-filter]``.

    Instantiated once per hub. The settings come from ``hub.plugin_config(self)``, so they are
    found under whatever name the plugin was registered with (``[plugins.<that name>]``).
    """

    def __init__(self) -> None:
        self._compiled: CompiledFilter | None = None
        self._hub: Hub | None = None  # the hub _compiled was built for

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return RouteFilterSettings

    def compiled(self, hub: Hub) -> CompiledFilter:
        settings = hub.plugin_config(self)
        if not isinstance(settings, RouteFilterSettings):
            settings = RouteFilterSettings()
        compiled = self._compiled
        if compiled is None or compiled.settings is not settings:
            compiled = self._compiled = CompiledFilter(settings)
        self._hub = hub
        return compiled

    @hookimpl
    def airi_startup(self, hub: Hub) -> None:
        c = self.compiled(hub)  # compile now rather than on the first routed event
        if not c.empty:
            hub.log.info("route-filter: %d dropped type glob(s), %d rule(s)", len(c.settings.drop_types), len(c.rules))

    @hookimpl
    def airi_route(self, hub: Hub, ctx: RouteContext) -> Drop | Targets | None:
        compiled = self._compiled
        if compiled is None or self._hub is not hub:
            compiled = self.compiled(hub)
        if compiled.empty:
            return None
        return compiled.decide(hub, ctx)
