"""Issue 12 item 6: the docs, license and typing marker are in the repository, and the README
links only to files that exist in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(path.read_text(encoding="utf-8")) if not re.match(r"[a-z]+:", t)]


def test_readme_and_docs_link_only_to_files_in_the_repo() -> None:
    for doc in (ROOT / "README.md", ROOT / "docs" / "protocol.md", ROOT / "docs" / "plugins.md"):
        links = _relative_links(doc)
        for target in links:
            resolved = (doc.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), f"{doc.name}: {target} points outside the repository"
            assert resolved.exists(), f"{doc.name}: {target} does not exist"
    readme = _relative_links(ROOT / "README.md")
    assert "docs/protocol.md" in readme and "docs/plugins.md" in readme


def test_license_changelog_and_typing_marker() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
    assert (ROOT / "airi_core" / "py.typed").is_file()


def test_plugin_guide_documents_every_hook() -> None:
    from airi_core.server.hooks import HOOK_ARGS

    guide = (ROOT / "docs" / "plugins.md").read_text()
    missing = [hook for hook in HOOK_ARGS if f"`{hook}(" not in guide]
    assert not missing, missing
    for fixture in ("airi_hub", "airi_hub_factory", "airi_connect", "expect_silence"):
        assert fixture in guide
