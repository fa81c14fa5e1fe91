"""The protocol's one glob dialect: ``*`` matches any run of characters (empty included), every
other character matches itself, and a glob must match the whole value.

Used by destinations (hub), by the client's handler patterns and by plugins. Matching never
backtracks: a glob is split at its stars into pieces (runs of stars count as one), the first
piece must be a prefix, the last a suffix, and the ones in between are found left to right with
``str.find``; the leftmost place a piece fits is always as good as any later one, so no choice is
ever revisited. One match costs at most ``O(len(value) * len(glob))`` (one ``find`` per piece,
usually far less), never exponential: a hostile ``********Z`` is as cheap as ``*Z``.

Compiled globs are cached (:func:`compile_glob`), but only globs of at most
:data:`MAX_CACHED_GLOB` characters: a peer choosing long globs cannot grow the cache beyond
``1024 * MAX_CACHED_GLOB`` characters.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

__all__ = ["glob_match", "compile_glob", "glob_pieces", "MAX_CACHED_GLOB"]

#: Longer globs are compiled on every call instead of being cached.
MAX_CACHED_GLOB = 256


def glob_pieces(glob: str) -> tuple[str, ...]:
    """``glob`` split at its stars, runs of stars counting as one: ``"a**b*"`` -> ``("a", "b", "")``.
    The first piece is the required prefix, the last the required suffix (either may be empty)."""
    parts = glob.split("*")
    if len(parts) <= 2:
        return tuple(parts)
    return (parts[0], *(p for p in parts[1:-1] if p), parts[-1])


def _match_pieces(pieces: tuple[str, ...], value: str) -> bool:
    head, tail = pieces[0], pieces[-1]
    if len(head) + len(tail) > len(value) or not value.startswith(head) or not value.endswith(tail):
        return False
    pos, end = len(head), len(value) - len(tail)
    for piece in pieces[1:-1]:
        found = value.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return True


def _always(value: str) -> bool:
    return True


def _compile(glob: str) -> Callable[[str], bool]:
    if "*" not in glob:
        return glob.__eq__
    pieces = glob_pieces(glob)
    if len(pieces) == 2:
        head, tail = pieces
        if not head and not tail:  # only stars
            return _always
        if not tail:
            return lambda value: value.startswith(head)
        if not head:
            return lambda value: value.endswith(tail)
        n = len(head) + len(tail)
        return lambda value: len(value) >= n and value.startswith(head) and value.endswith(tail)
    return lambda value: _match_pieces(pieces, value)


_compile_cached = lru_cache(maxsize=1024)(_compile)


def compile_glob(glob: str) -> Callable[[str], bool]:
    """A predicate ``value -> bool`` for ``glob`` (cached when ``glob`` is short)."""
    if len(glob) <= MAX_CACHED_GLOB:
        return _compile_cached(glob)
    return _compile(glob)


def glob_match(glob: str, value: str) -> bool:
    """Whether ``value`` matches ``glob`` as a whole (``*`` is the only wildcard)."""
    return compile_glob(glob)(value)
