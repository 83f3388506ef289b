"""The documentation holds together: every relative link of the README, docs/,
CONTRIBUTING.md and contrib/ leads to a file that exists and, with ``#anchor``,
to a heading of that file; the README stays a front page that lists every page
of docs/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from processes import PROJECT

PAGES = sorted([PROJECT / "README.md", PROJECT / "CONTRIBUTING.md",
                *(PROJECT / "docs").glob("*.md"), *(PROJECT / "contrib").glob("*.md")])
#: the README is a front page; the manual is in docs/
README_MAX_LINES = 300

LINK = re.compile(r"!?\[(?:[^\]`]|`[^`]*`)*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """``text`` without its fenced code blocks and inline code, where a ``[x](y)``
    is not a link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "`code`", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces
    to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The ``#anchors`` of a Markdown file's headings (a repeated one gets -1, -2...)."""
    seen: dict[str, int] = {}
    found = set()
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text(encoding="utf-8")))


def test_slug_and_links_read_markdown_as_github_does(tmp_path: Path) -> None:
    assert slug("MongoDB: replica set, Atlas") == "mongodb-replica-set-atlas"
    assert slug("Cleaning (one tweet text -> processed text)") == (
        "cleaning-one-tweet-text---processed-text")
    assert slug("report.py: inspect, plot, export") == "reportpy-inspect-plot-export"
    page = tmp_path / "page.md"
    page.write_text("# A\n\n## Faults\n\n## Faults\n\n```sh\n# not a heading\n```\n"
                    "[x](other.md#faults) `[y](in-code.md)` ![fig](a.png)\n")
    assert anchors(page) == {"a", "faults", "faults-1"}
    assert links(page) == ["other.md#faults", "a.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(PROJECT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        where = (page.parent / file).resolve() if file else page
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == []


def test_the_readme_is_a_front_page_that_lists_every_docs_page() -> None:
    readme = PROJECT / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= README_MAX_LINES
    linked = {(PROJECT / target.partition("#")[0]).resolve() for target in links(readme)}
    pages = set((PROJECT / "docs").glob("*.md")) | {PROJECT / "CONTRIBUTING.md"}
    assert sorted(path.name for path in pages - linked) == []
