"""Numbered posts for a replay file: each text unique, unchanged by cleaning, and telling
its number back, so that the texts in a store say which posts were sent."""

from __future__ import annotations

import json
import re
from pathlib import Path

_WORDS = (
    "covid", "cases", "vaccine", "booster", "masks", "hospital", "nurses", "clinic", "testing",
    "symptoms", "recovery", "variant", "omicron", "lockdown", "schools", "travel", "rules",
    "data", "report", "week", "wave", "update", "today", "city", "health", "queue", "fever",
    "cough", "isolation", "pandemic", "still", "more", "fewer", "new", "in", "the", "a", "of",
    "and", "for", "our", "my", "café", "niño", "Zürich", "São", "Paulo", "коронавирус",
    "疫苗", "again?", "finally!", "(maybe)", "well,", "50%", "2020-2024", "x-ray", "near",
    "home", "spring",
)  # a prime number of words: every stride below visits them all
_POST = re.compile(r"post (\d+):")


def post_text(index: int) -> str:
    """Post ``index``'s text: unique (it starts with its number), 3 to 20 words from a
    varied vocabulary (accents, Cyrillic, Chinese, punctuation), unchanged by cleaning."""
    size = len(_WORDS)
    count = 3 + (index * 7919) % 18
    first, stride = index * 2654435761 % size, 1 + index // size % (size - 1)
    words = (_WORDS[(first + k * stride) % size] for k in range(count))
    return f"post {index}: " + " ".join(words)


def post_index(text: str) -> int | None:
    """The number of the post whose text this is; None for any other text."""
    match = _POST.match(text)
    if match is None:
        return None
    index = int(match.group(1))
    return index if post_text(index) == text else None


def write_posts(path: Path, count: int) -> None:
    """A replay file of posts 0 .. count-1 (bare tweet objects, ids ``soak-N``)."""
    with path.open("w", encoding="utf-8") as handle:
        for start in range(0, count, 10_000):
            handle.writelines(
                json.dumps({"id": f"soak-{i}", "text": post_text(i)}, ensure_ascii=False) + "\n"
                for i in range(start, min(count, start + 10_000)))
