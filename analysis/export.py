"""One row per tweet of a window of stored batches, written as CSV (formulas
neutralised) or JSON Lines."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import storage
from analysis.batches import Batch, SkippedDocuments, iso_z, read_window

log = logging.getLogger("report")  # the report tool's log, as its lines always said

EXPORT_FIELDS = ("batch_id", "timestamp", "total_case_count", "case_count_as_of",
                 "case_count_source", "position", "text")
#: A CSV text cell starting with one of these gets a leading ``'`` (spreadsheets run
#: ``=``, ``+``, ``-`` and ``@`` as formulas; tab and CR can hide such a start).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def tweet_rows(batches: Iterable[Batch]) -> Iterator[dict[str, Any]]:
    """One row per tweet: batch_id, timestamp (ISO 8601 UTC, ``Z``), total_case_count,
    case_count_as_of (ISO 8601 UTC, ``Z``), case_count_source (``who`` or
    ``worldometers``), position (0-based, as in ``content.N``) and text; an unknown
    count, as-of time or source is ``None``."""
    for batch in batches:
        stamp = iso_z(batch.timestamp)
        as_of = None if batch.case_count_as_of is None else iso_z(batch.case_count_as_of)
        for position, text in enumerate(batch.content):
            yield {"batch_id": batch.batch_id, "timestamp": stamp,
                   "total_case_count": batch.total_case_count, "case_count_as_of": as_of,
                   "case_count_source": batch.case_count_source, "position": position,
                   "text": text}


def csv_cell(value: Any) -> Any:
    """A value as written to a CSV cell: ``None`` is an empty cell, and a text that a
    spreadsheet would run as a formula (it starts with one of FORMULA_STARTS) gets a
    leading ``'``, which spreadsheets show as text: ``=1+2`` -> ``'=1+2``."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    """Write rows as CSV with a header (an unknown value is an empty cell; texts that
    would start a formula are neutralised, see :func:`csv_cell`); the row count."""
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    written = 0
    for row in rows:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
        written += 1
    return written


def write_jsonl(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    """Write rows as JSON Lines (an unknown value is ``null``; texts exactly as
    stored); the row count."""
    written = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        written += 1
    return written


def export_tweets(store: storage.BatchStore, out: IO[str] | Path, fmt: str, *,
                  since: datetime | None = None, until: datetime | None = None) -> int:
    """Write one row per post of the window as ``csv`` or ``jsonl`` to a text stream
    or a file; the number of rows. Raises EmptyWindowError (and writes nothing, no
    file either) when the window has no batch. Documents a report cannot use are
    left out, with one warning line at the end."""
    writer = {"csv": write_csv, "jsonl": write_jsonl}[fmt]
    skipped = SkippedDocuments()
    rows = tweet_rows(read_window(store, since, until, skipped))
    if isinstance(out, Path):
        with out.open("w", encoding="utf-8", newline="") as handle:
            written = writer(rows, handle)
        log.info("wrote %s: %d posts", out, written)
    else:
        written = writer(rows, out)
    if skipped.count:
        log.warning("%s", skipped.message())
    return written
