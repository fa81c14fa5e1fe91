"""The protocol's one glob dialect: ``*`` matches any run of characters (empty included), every
other character matches itself, and a glob must match the whole value.

Used by destinations (hub), by the client's handler patterns and by plugins. Matching never
backtracks: the pieces between stars are found left to right with ``str.find`` (the first place
a piece fits is always as good as any later one), so a hostile glob such as ``********Z`` costs
time linear in the value's length times the number of pieces, not exponential.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

__all__ = ["glob_match", "compile_glob"]


def _match_pieces(pieces: tuple[str, ...], value: str) -> bool:
    # pieces = the glob split at "*": the first must be a prefix, the last a suffix, the ones in
    # between must appear in order in what is left
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


@lru_cache(maxsize=1024)
def compile_glob(glob: str) -> Callable[[str], bool]:
    """A predicate ``value -> bool`` for ``glob``."""
    if "*" not in glob:
        return glob.__eq__
    pieces = tuple(glob.split("*"))
    if all(not p for p in pieces):  # only stars
        return lambda value: True
    return lambda value: _match_pieces(pieces, value)


def glob_match(glob: str, value: str) -> bool:
    """Whether ``value`` matches ``glob`` as a whole (``*`` is the only wildcard)."""
    return compile_glob(glob)(value)
