"""The stored post fields (POST_FIELDS) in reports: which of them a window has, its
batches cut down to some languages, its language mix, and one typed row per post as
Parquet row groups or a pandas DataFrame (pyarrow)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.batches import Batch

if TYPE_CHECKING:  # pyarrow is imported when a table is built, not at start-up
    import pyarrow

#: The post fields, in their documented order (transform.POST_FIELDS).
POST_FIELDS = ("id", "created_at", "lang", "url", "author_id",
               "reply_to", "reply_root", "quote_of", "hashtags", "links", "mentions",
               "matched")
#: The post fields whose value is a list of text (transform.LIST_FIELDS).
LIST_FIELDS = ("hashtags", "links", "mentions", "matched")
#: Rows per Parquet row group (and per chunk of a DataFrame): what is held at a time.
ROW_GROUP_ROWS = 65_536
#: Rows held as Python objects before they are converted to Arrow's compact form.
CONVERT_ROWS = 4_096
#: How a post without a language tag is named in the language mix.
NO_LANGUAGE = "none"


class NoPostFieldsError(LookupError):
    """The window has no stored post field that a report needs; ``str(err)`` is one line."""


def post_columns(batch: Batch) -> tuple[str, ...]:
    """The post fields stored with ``batch``, in their documented order (none without)."""
    if not batch.posts:
        return ()
    stored = set().union(*batch.posts)
    return tuple(name for name in POST_FIELDS if name in stored)


def first_columns(batches: Iterator[Batch]) -> tuple[tuple[str, ...], Iterator[Batch]]:
    """The post fields of a window: those of its first batch that has a post left (the
    batches before it, with post fields on, lost every post to deletes, so they do not
    say); and the batches, all of them, as they came."""
    held: list[Batch] = []
    for batch in batches:
        held.append(batch)
        if batch.posts is None or batch.posts:
            return post_columns(batch), chain(held, batches)
    return (), iter(held)


def parse_languages(text: str) -> tuple[str, ...]:
    """``en,pt`` -> ``("en", "pt")`` (case kept, blanks dropped); ValueError when empty."""
    langs = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not langs:
        raise ValueError(f"{text!r} names no language (e.g. en or en,pt)")
    return langs


class LanguageFilter:
    """Batches cut down to the posts whose stored ``lang`` is one of ``langs`` (the
    language's case ignored). A batch keeps its time and count with no post left; a
    batch without stored languages is left out and counted (:attr:`without`)."""

    def __init__(self, langs: Sequence[str]) -> None:
        self.langs = frozenset(lang.casefold() for lang in langs)
        self.with_langs = 0  # batches that had languages stored
        self.without = 0  # batches left out: no language stored

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        wanted = self.langs
        for batch in batches:
            if batch.posts is None or not any("lang" in post for post in batch.posts):
                self.without += 1
                continue
            self.with_langs += 1
            kept = [(text, post) for text, post in zip(batch.content, batch.posts, strict=True)
                    if isinstance(post.get("lang"), str) and post["lang"].casefold() in wanted]
            yield replace(batch, content=tuple(t for t, _ in kept),
                          posts=tuple(p for _, p in kept))

    def check(self, description: str) -> None:
        """Raise NoPostFieldsError when no batch of the window had languages stored."""
        if not self.with_langs:
            raise NoPostFieldsError(
                f"{description} has no post languages stored in this window (the job "
                "stores them with POST_FIELDS=...,lang); --lang needs them")


def language_mix(batches: Iterable[Batch]) -> Counter[str] | None:
    """Posts per stored language tag (NO_LANGUAGE for none) over ``batches``; None when
    none of them has languages stored."""
    mix: Counter[str] = Counter()
    found = False
    for batch in batches:
        if batch.posts is None:
            continue
        for post in batch.posts:
            if "lang" in post:
                found = True
                lang = post["lang"]
                mix[lang if isinstance(lang, str) and lang else NO_LANGUAGE] += 1
    return mix if found else None


def format_language_mix(mix: Counter[str], top: int = 8) -> str:
    """``en 72% (720), pt 10% (100), none 3% (30), 4 others 15% (150)``."""
    total = mix.total()
    ranked = sorted(mix.items(), key=lambda item: (-item[1], item[0]))
    parts = [f"{lang} {n / total:.0%} ({n:,})" for lang, n in ranked[:top]]
    rest = ranked[top:]
    if rest:
        n = sum(count for _, count in rest)
        parts.append(f"{len(rest)} others {n / total:.0%} ({n:,})")
    return ", ".join(parts)


# --- typed rows: Parquet and pandas ------------------------------------------------


def arrow_schema(columns: Sequence[str]) -> pyarrow.Schema:
    """The export's columns, typed (times as UTC timestamps in ms, counts as int64),
    then the post fields ``columns`` (the lists as lists of strings)."""
    import pyarrow as pa

    stamp = pa.timestamp("ms", tz="UTC")
    fields = [("batch_id", pa.string()), ("timestamp", stamp),
              ("total_case_count", pa.int64()), ("case_count_as_of", stamp),
              ("case_count_source", pa.string()), ("position", pa.int64()),
              ("text", pa.string())]
    types = {"created_at": stamp} | dict.fromkeys(LIST_FIELDS, pa.list_(pa.string()))
    fields += [(name, types.get(name, pa.string())) for name in columns]
    return pa.schema(fields)


def arrow_tables(batches: Iterable[Batch], columns: Sequence[str],
                 rows: int | None = None) -> Iterator[pyarrow.Table]:
    """One row per post of ``batches``, as tables of about ``rows`` (ROW_GROUP_ROWS)
    rows each (a batch is never cut); a post field a batch lacks, or a value of
    another type, is null. Rows are held as Python objects CONVERT_ROWS at a time,
    then in Arrow's compact form."""
    import pyarrow as pa

    rows = ROW_GROUP_ROWS if rows is None else rows
    schema = arrow_schema(columns)
    data: dict[str, list[Any]] = {name: [] for name in schema.names}
    converted: list[pyarrow.RecordBatch] = []
    held = pending = 0
    for batch in batches:
        n = batch.tweets
        if not n:
            continue
        data["batch_id"] += [batch.batch_id] * n
        data["timestamp"] += [batch.timestamp] * n
        data["total_case_count"] += [batch.total_case_count] * n
        data["case_count_as_of"] += [batch.case_count_as_of] * n
        data["case_count_source"] += [batch.case_count_source] * n
        data["position"] += range(n)
        data["text"] += batch.content
        for name in columns:
            data[name] += _post_values(batch, name)
        held += n
        pending += n
        if pending >= CONVERT_ROWS or held >= rows:
            converted.append(pa.RecordBatch.from_pydict(data, schema=schema))
            data = {name: [] for name in schema.names}
            pending = 0
        if held >= rows:
            yield pa.Table.from_batches(converted, schema=schema)
            converted, held = [], 0
    if pending:
        converted.append(pa.RecordBatch.from_pydict(data, schema=schema))
    if converted:
        yield pa.Table.from_batches(converted, schema=schema)


def _post_values(batch: Batch, name: str) -> list[Any]:
    if batch.posts is None:
        return [None] * batch.tweets
    wanted = (_is_date if name == "created_at" else is_text_list if name in LIST_FIELDS
              else _is_text)
    return [value if wanted(value := post.get(name)) else None for post in batch.posts]


def _is_date(value: Any) -> bool:
    return isinstance(value, datetime)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def is_text_list(value: Any) -> bool:
    """Whether ``value`` is what a list post field holds: a list of text."""
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def write_parquet(batches: Iterable[Batch], out: Path, columns: Sequence[str]) -> int:
    """Write one row per post to the Parquet file ``out``, a row group at a time (memory
    stays flat however long the window); the number of rows."""
    import pyarrow.parquet as pq

    written = 0
    with pq.ParquetWriter(str(out), arrow_schema(columns), compression="zstd") as writer:
        for table in arrow_tables(batches, columns):
            writer.write_table(table)
            written += table.num_rows
    return written
