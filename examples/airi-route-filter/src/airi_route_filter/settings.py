"""The ``[plugins.route-filter]`` table, validated by the hub when it loads the plugin.

An invalid table stops ``airi serve`` before it binds, with the key path, e.g.
``airi.toml: plugins.route-filter.rules.0.to: ...``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

__all__ = ["MODULE_PREFIX", "RouteFilterSettings", "Rule"]

MODULE_PREFIX = "module:"


def _check_glob(value: str) -> str:
    if not value:
        raise ValueError("an event type glob cannot be empty")
    return value


class Rule(BaseModel):
    """One ``[[plugins.route-filter.rules]]`` entry. The first rule that matches an event decides.

    ``type``: glob on the event type (``*`` matches any run of characters, ``:`` included).
    ``field``: a dotted path into the event's ``data`` (``lang``, ``meta.lang``, ``items.0.id``);
    with ``equals`` the rule matches when the value there equals it, without ``equals`` when the
    field is present at all. ``action``: ``drop`` (deliver to nobody) or ``redirect`` with
    ``to = "module:NAME"`` (deliver only to the peers announced under that module name).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = "*"
    field: str | None = None
    equals: Any = None
    action: Literal["drop", "redirect"] = "drop"
    to: str | None = None

    @field_validator("type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        return _check_glob(value)

    @field_validator("field")
    @classmethod
    def _check_field(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(not part for part in value.split("."))):
            raise ValueError("must be a dotted path of non-empty keys, like 'lang' or 'meta.lang'")
        return value

    @field_validator("equals")
    @classmethod
    def _check_equals(cls, value: Any) -> Any:
        # TOML can hold dates and times; events are JSON, so such a value could never match.
        if isinstance(value, (dt.date, dt.time)):
            raise ValueError("must be a string, number, boolean, array or table (events are JSON)")
        return value

    @field_validator("to")
    @classmethod
    def _check_to(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith(MODULE_PREFIX) or len(value) == len(MODULE_PREFIX)):
            raise ValueError(f"must name an announced module as '{MODULE_PREFIX}NAME'")
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> Rule:
        if self.action == "redirect" and self.to is None:
            raise ValueError("action 'redirect' needs 'to' (e.g. to = \"module:logger\")")
        if self.action == "drop" and self.to is not None:
            raise ValueError("'to' is only used with action = \"redirect\"")
        if self.has_equals and self.field is None:
            raise ValueError("'equals' needs 'field' (the data field to compare)")
        return self

    @property
    def has_equals(self) -> bool:
        """Whether ``equals`` was given (TOML has no null, so ``None`` means absent)."""
        return "equals" in self.model_fields_set

    @property
    def target_module(self) -> str | None:
        """The module name of a redirect's ``to``."""
        return self.to[len(MODULE_PREFIX):] if self.to is not None else None


class RouteFilterSettings(BaseModel):
    """``[plugins.route-filter]``: ``drop_types`` (type globs that are never delivered) and
    ``rules`` (checked in order after ``drop_types``; the first match decides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop_types: list[str] = []
    rules: list[Rule] = []

    @field_validator("drop_types")
    @classmethod
    def _check_drop_types(cls, value: list[str]) -> list[str]:
        for glob in value:
            _check_glob(glob)
        return value
