"""One row per tweet of a window of stored batches, written as CSV (formulas
neutralised), JSON Lines or Parquet (typed), or read into a pandas DataFrame."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import storage
from analysis.batches import Batch, EmptyWindowError, SkippedDocuments, iso_z, read_window
from analysis.posts import (
    LIST_FIELDS,
    arrow_schema,
    arrow_tables,
    first_columns,
    is_text_list,
    post_columns,
    write_parquet,
)

if TYPE_CHECKING:
    import pandas

log = logging.getLogger("report")  # the report tool's log, as its lines always said

EXPORT_FIELDS = ("batch_id", "timestamp", "total_case_count", "case_count_as_of",
                 "case_count_source", "position", "text")
#: A CSV text cell starting with one of these gets a leading ``'`` (spreadsheets run
#: ``=``, ``+``, ``-`` and ``@`` as formulas; tab and CR can hide such a start).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def tweet_rows(batches: Iterable[Batch], columns: Sequence[str] = ()
               ) -> Iterator[dict[str, Any]]:
    """One row per tweet: batch_id, timestamp (ISO 8601 UTC, ``Z``), total_case_count,
    case_count_as_of (ISO 8601 UTC, ``Z``), case_count_source (``who`` or
    ``worldometers``), position (0-based, as in ``content.N``) and text; an unknown
    count, as-of time or source is ``None``. Then the post fields ``columns``
    (``created_at`` as ISO 8601 UTC; ``hashtags``, ``links`` and ``mentions`` as
    lists of text), ``None`` where a post lacks one (or a list holds no list of text)."""
    for batch in batches:
        stamp = iso_z(batch.timestamp)
        as_of = None if batch.case_count_as_of is None else iso_z(batch.case_count_as_of)
        base = {"batch_id": batch.batch_id, "timestamp": stamp,
                "total_case_count": batch.total_case_count, "case_count_as_of": as_of,
                "case_count_source": batch.case_count_source}
        if not columns:
            for position, text in enumerate(batch.content):
                yield {**base, "position": position, "text": text}
            continue
        posts = batch.posts or ({},) * batch.tweets
        for position, (text, post) in enumerate(zip(batch.content, posts, strict=True)):
            row = {**base, "position": position, "text": text}
            for name in columns:
                value = post.get(name)
                if isinstance(value, datetime):
                    value = iso_z(value)
                elif name in LIST_FIELDS and not is_text_list(value):
                    value = None
                row[name] = value
            yield row


def csv_cell(value: Any, column: str | None = None) -> Any:
    """A value as written to a CSV cell: ``None`` is an empty cell, a list its items
    joined by single spaces (``hashtags``, ``links``, ``mentions``: safe, the job stores
    no item of theirs with whitespace) or, for ``column`` ``matched`` (a keyword can
    hold a space), its JSON text; and a text that a spreadsheet would run as a formula
    (it starts with one of FORMULA_STARTS) gets a leading ``'``, which spreadsheets
    show as text: ``=1+2`` -> ``'=1+2``."""
    if value is None:
        return ""
    if isinstance(value, list):
        value = (json.dumps(value, ensure_ascii=False) if column == "matched"
                 else " ".join(value))
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(rows: Iterable[Mapping[str, Any]], out: IO[str],
              columns: Sequence[str] = ()) -> int:
    """Write rows as CSV with a header (an unknown value is an empty cell; texts that
    would start a formula are neutralised, see :func:`csv_cell`); the row count.
    ``columns``: the post fields after EXPORT_FIELDS."""
    writer = csv.DictWriter(out, fieldnames=(*EXPORT_FIELDS, *columns))
    writer.writeheader()
    written = 0
    for row in rows:
        writer.writerow({k: csv_cell(v, k) for k, v in row.items()})
        written += 1
    return written


def write_jsonl(rows: Iterable[Mapping[str, Any]], out: IO[str],
                columns: Sequence[str] = ()) -> int:
    """Write rows as JSON Lines (an unknown value is ``null``; texts exactly as
    stored); the row count."""
    written = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        written += 1
    return written


class FieldWatch:
    """Counts the batches whose posts have fields beyond the export's columns."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = set(columns)
        self.batches = 0
        self.fields: set[str] = set()
        self.first: datetime | None = None

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            extra = set(post_columns(batch)) - self.columns
            if extra:
                self.batches += 1
                self.fields |= extra
                self.first = self.first or batch.timestamp
            yield batch

    def message(self) -> str | None:
        if not self.batches:
            return None
        return (f"{self.batches:,} batches have post fields the export's columns lack "
                f"({', '.join(sorted(self.fields))}: the columns are the first batch's); "
                f"export from --since {iso_z(self.first)} to include them")


def export_tweets(store: storage.BatchStore, out: IO[str] | Path, fmt: str, *,
                  since: datetime | None = None, until: datetime | None = None) -> int:
    """Write one row per post of the window as ``csv``, ``jsonl`` (to a text stream or
    a file) or ``parquet`` (to a file, in row groups); the number of rows. The post
    fields stored with the window's first batch are columns too. Raises
    EmptyWindowError (and writes nothing, no file either) when the window has no
    batch. Documents a report cannot use are left out, with one warning line at the
    end."""
    skipped = SkippedDocuments()
    columns, window = first_columns(read_window(store, since, until, skipped))
    watch = FieldWatch(columns)
    batches = watch(window)
    if fmt == "parquet":
        if not isinstance(out, Path):
            raise ValueError("a Parquet export needs a file")
        written = write_parquet(batches, out, columns)
        log.info("wrote %s: %d posts", out, written)
    else:
        writer = {"csv": write_csv, "jsonl": write_jsonl}[fmt]
        rows = tweet_rows(batches, columns)
        if isinstance(out, Path):
            with out.open("w", encoding="utf-8", newline="") as handle:
                written = writer(rows, handle, columns)
            log.info("wrote %s: %d posts", out, written)
        else:
            written = writer(rows, out, columns)
    for message in (watch.message(), skipped.message()):
        if message:
            log.warning("%s", message)
    return written


def posts_frame(store: storage.BatchStore, since: datetime | None = None,
                until: datetime | None = None) -> pandas.DataFrame:
    """The window's posts as a pandas DataFrame, one row per post, with the export's
    columns and the post fields of the window's first batch: times as
    ``datetime64[ms, UTC]``, counts as ``Int64`` (null where unknown). An empty
    window gives an empty frame with the export's columns. Raises ImportError (one
    line) without pandas."""
    pd = require_pandas()
    import pyarrow as pa

    skipped = SkippedDocuments()
    try:
        window = read_window(store, since, until, skipped)
    except EmptyWindowError:
        return arrow_schema(()).empty_table().to_pandas(types_mapper=_pandas_types(pd, pa))
    columns, window = first_columns(window)
    tables = list(arrow_tables(window, columns)) or [
        arrow_schema(columns).empty_table()]
    if skipped.count:
        log.warning("%s", skipped.message())
    return pa.concat_tables(tables).to_pandas(types_mapper=_pandas_types(pd, pa))


def require_pandas() -> Any:
    """The pandas module; ImportError with one line saying how to install it."""
    try:
        import pandas
    except ImportError:
        raise ImportError("load_posts needs pandas, an optional extra: pip install -r "
                          "requirements-analysis.txt") from None
    return pandas


def _pandas_types(pd: Any, pa: Any) -> Any:
    """pyarrow -> pandas types: int64 as the nullable Int64 (an unknown count stays
    null, and the counts stay whole numbers)."""
    return {pa.int64(): pd.Int64Dtype()}.get
