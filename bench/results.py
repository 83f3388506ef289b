"""The sections of bench/results.md: one replaced in place, one read back, by its heading.

``make bench`` writes the file in two runs: bench.run the saturation tables,
then bench.cost its cost section. Each keeps what the other wrote.
"""

from __future__ import annotations

from pathlib import Path

#: bench.cost's section
COST_HEADING = "## Cost at live rates (`python -m bench.cost`)"


def replace_section(text: str, heading: str, lines: list[str]) -> str:
    """``text`` (a Markdown file) with the section under ``heading`` replaced by
    ``lines`` (up to the next ``## `` heading), or ``lines`` added before
    "## Every step" (after the saturation tables), or at the end."""
    new = "\n".join(lines).rstrip("\n") + "\n\n"
    start = text.find(heading + "\n")
    if start >= 0:
        end = text.find("\n## ", start + len(heading))
        return text[:start] + new + (text[end + 1:] if end >= 0 else "")
    anchor = text.find("## Every step")
    if anchor >= 0:
        return text[:anchor] + new + text[anchor:]
    return (text.rstrip("\n") + "\n\n" if text else "") + new


def section_lines(path: Path, heading: str) -> list[str]:
    """The lines of the section under ``heading`` already in the file at ``path``
    (up to the next ``## `` heading), if any."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    start = text.find(heading + "\n")
    if start < 0:
        return []
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end >= 0 else len(text)].rstrip("\n").split("\n")
