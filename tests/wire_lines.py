"""Wire lines as stream.py sends them, for tests that play the producer: posts, and
sealed records (deletes, coverage, gaps, keyword sets) made with the project's own
functions (``wire_records`` to make one, ``control.seal_record`` to seal it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import control
import transform
import wire_records

SECRET = b"a test control secret, 32 chars"
SOURCE = "p1"  # the producer's journal id
AT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def line(seq: int | None, fields: dict[str, Any], source: str = SOURCE) -> str:
    """One wire line: ``fields`` with the delivery members (none when ``seq`` is None)."""
    delivery = {} if seq is None else {"seq": seq, "src": source}
    return json.dumps({**delivery, **fields})


def post(seq: int | None, post_id: str, text: str | None = None, source: str = SOURCE,
         **extra: Any) -> str:
    return line(seq, {"id": post_id, "text": text or f"text of {post_id}", **extra}, source)


def sealed(seq: int | None, record: dict[str, Any], secret: bytes = SECRET,
           source: str = SOURCE) -> str:
    """A record sealed as the producer seals it, as a wire line."""
    return line(seq, control.seal_record(secret, record), source)


def delete(seq: int | None, post_id: str, secret: bytes = SECRET, source: str = SOURCE) -> str:
    return sealed(seq, wire_records.delete_record(post_id, AT), secret, source)


def records(*lines: str, fields: tuple[str, ...] = ()) -> list[transform.Record]:
    """What the executors make of ``lines``."""
    return [transform.process_line(text, fields) for text in lines]
