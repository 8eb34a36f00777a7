"""The documentation holds together: every relative link in README.md and docs/*.md reaches an existing file (and
heading, for a #fragment), and the front page stays short and names the two set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 10_000  # characters: a front page read in two minutes

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img\s[^>]*\bsrc=\"([^\"]+)\"")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """The #fragments GitHub gives the page's headings: lower case, punctuation dropped, spaces to hyphens,
    a repeated one numbered -1, -2…"""
    seen: dict[str, int] = {}
    out = set()
    for line in re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def links(page: Path) -> list[str]:
    return [a or b for a, b in LINK.findall(_prose(page.read_text(encoding="utf-8")))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: … are not checked here
            continue
        path_part, _, fragment = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(f"{target} (no heading #{fragment} in {path.name})")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_checker_sees_links_and_headings():
    readme = links(ROOT / "README.md")
    assert "docs/images/krita-docker.png" in readme and "docs/images/photoshop-panel.png" in readme
    assert {"what-decompose-reads", "security-and-serving-a-team"} <= anchors(ROOT / "docs" / "cli.md")


def test_readme_is_a_short_front_page_with_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text) <= README_LIMIT, f"README.md has {len(text)} characters; move detail into docs/"
    assert "`bash scripts/serve.sh`" in text and "`bash scripts/test.sh`" in text
    for page in PAGES[1:]:  # every docs page is reachable from the front page or the docs index
        name = page.relative_to(ROOT).as_posix()
        index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
        assert name in text or page.name in index, f"{name} is linked from neither README.md nor docs/README.md"
