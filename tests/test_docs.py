"""The README documents the plugin hooks: its table must match the hookspecs.

Modelled on datasette's tests/test_docs.py: parse the documentation, compare it with what the
code declares, and fail with the difference. The hookspecs are the functions named ``airi_*`` in
:mod:`airi_core.server.hookspecs`; the README's "### Hooks" section has a table whose first
column lists them as backticked calls, e.g. ``airi_route(hub, ctx)`` (a row may hold two,
separated by `` / ``).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from airi_core.server import hookspecs

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

#: A documented hook call in the table's first column: `airi_name(arg, arg)`.
HOOK_CALL = re.compile(r"`(airi_\w+)\(([^)`]*)\)`")


def _section(markdown: str, heading: str) -> str:
    """The text under ``heading`` (a whole line, e.g. ``### Hooks``) up to the next heading of
    the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = markdown.splitlines()
    try:
        start = lines.index(heading) + 1
    except ValueError:
        raise AssertionError(f"README.md has no {heading!r} section") from None
    end = len(lines)
    for i in range(start, len(lines)):
        m = re.match(r"(#+)\s", lines[i])
        if m and len(m.group(1)) <= level:
            end = i
            break
    return "\n".join(lines[start:end])


def _first_column_cells(section: str) -> list[str]:
    """The first cell of every body row of the first table in ``section``."""
    rows = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    assert len(rows) >= 3, f"no table in the README's Hooks section:\n{section}"
    header, separator, *body = rows
    assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", separator), f"not a table separator: {separator!r}"
    assert header.split("|")[1].strip() == "hook", f"the first column should be 'hook': {header!r}"
    return [row.split("|")[1].strip() for row in body]


def documented_hooks() -> dict[str, list[str]]:
    """Hook name -> argument names, as the README's hook table lists them."""
    section = _section(README.read_text(encoding="utf-8"), "### Hooks")
    hooks: dict[str, list[str]] = {}
    for cell in _first_column_cells(section):
        calls = [c.strip() for c in cell.split(" / ")]
        for call in calls:
            m = HOOK_CALL.fullmatch(call)
            assert m, f"README hook table: {call!r} (in {cell!r}) is not a backticked `airi_name(args)` call"
            name, args = m.group(1), m.group(2)
            assert name not in hooks, f"README hook table lists {name} twice"
            hooks[name] = [a.strip() for a in args.split(",")] if args.strip() else []
    return hooks


def declared_hooks() -> dict[str, list[str]]:
    """Hook name -> parameter names, from the hookspecs module."""
    specs = {}
    for name, fn in vars(hookspecs).items():
        if name.startswith("airi_") and inspect.isfunction(fn):
            specs[name] = list(inspect.signature(fn).parameters)
    return specs


SPECS = declared_hooks()


def test_every_airi_function_in_hookspecs_is_a_hookspec() -> None:
    marker = f"{hookspecs.PROJECT}_spec"
    assert SPECS, "no airi_* functions in airi_core.server.hookspecs"
    not_specs = [name for name in SPECS if not hasattr(getattr(hookspecs, name), marker)]
    assert not not_specs, f"airi_* functions without @hookspec: {not_specs}"


def test_readme_hook_table_lists_exactly_the_hookspecs() -> None:
    documented = set(documented_hooks())
    declared = set(SPECS)
    assert documented == declared, (
        f"hooks missing from the README table: {sorted(declared - documented)}; "
        f"documented but not hookspecs: {sorted(documented - declared)}"
    )


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_readme_hook_arguments_match_the_hookspec(hook: str) -> None:
    documented = documented_hooks()
    if hook not in documented:
        pytest.fail(f"{hook} is not in the README hook table")
    assert documented[hook] == SPECS[hook], (
        f"README documents {hook}({', '.join(documented[hook])}); "
        f"the hookspec is {hook}({', '.join(SPECS[hook])})"
    )


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_hookspec_has_a_docstring(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and doc.strip(), f"hookspec {hook} has no docstring (the README points to them for the contract)"


def test_readme_hooks_section_links_to_the_hookspecs_module() -> None:
    """The Hooks section sends readers to the hookspecs' docstrings: the link must point at the
    module that holds them."""
    section = _section(README.read_text(encoding="utf-8"), "### Hooks")
    targets = re.findall(r"\]\(([^)#\s]+)\)", section)
    expected = Path(inspect.getfile(hookspecs)).resolve().relative_to(REPO).as_posix()
    assert expected in targets, f"the README's Hooks section should link to {expected}; its links: {targets}"


def test_the_parser_reads_the_table_forms_it_claims_to() -> None:
    """Guard the parser itself, so that a table it misreads cannot make the checks above pass."""
    section = """
| hook | when | result |
|---|---|---|
| `airi_a()` | x | y |
| `airi_b(hub)` / `airi_c(hub, peer, reason)` | x | y |
"""
    cells = _first_column_cells(section)
    assert cells == ["`airi_a()`", "`airi_b(hub)` / `airi_c(hub, peer, reason)`"]
    parsed = {}
    for cell in cells:
        for call in cell.split(" / "):
            m = HOOK_CALL.fullmatch(call.strip())
            assert m
            parsed[m.group(1)] = [a.strip() for a in m.group(2).split(",")] if m.group(2).strip() else []
    assert parsed == {"airi_a": [], "airi_b": ["hub"], "airi_c": ["hub", "peer", "reason"]}
    text = "## A\n### Hooks\nbody\n#### sub\nmore\n### Next\nafter\n"
    assert _section(text, "### Hooks") == "body\n#### sub\nmore"
