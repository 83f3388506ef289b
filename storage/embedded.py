"""The embedded store's collections read and written in their SQLite files directly.

MontyDB keeps each collection in a SQLite file of its own
(``<EMBEDDED_DB_PATH>/<database>/<collection>.collection``) with one table,
``documents(k, v)``: ``k`` the document's ``_id`` as MontyDB encodes it (a BSON
element without its name, :func:`id_key`), ``v`` the document as BSON. Its own
queries decode every document of a collection, whatever they ask for, and its
``insert_many`` reads every stored key first; so what the job does often (read a
window in time order, find documents by ``_id``, add many small ones) is done here,
in the same layout, in one SQL statement where MontyDB would read it all. MontyDB
itself reads what is written here like its own (tests check both ways).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from montydb.types import bson as monty_bson

TABLE = "documents"  # MontyDB's SQLite table: k (the _id), v (the BSON document)
#: Rows fetched at a time when the embedded store is read in time order.
SCAN_ROWS = 256
#: Most ``_id``s asked for in one statement (SQLite allows 32,766 parameters).
IDS_PER_QUERY = 10_000
#: MontyDB's table, made the way MontyDB makes it (for a collection it has not made yet)
CREATE = f"CREATE TABLE IF NOT EXISTS [{TABLE}] (k text NOT NULL, v text NOT NULL, PRIMARY KEY(k))"


def id_key(value: str | bytes) -> bytes:
    """The ``k`` MontyDB stores for an ``_id`` (``montydb.types.bson.id_encode``: a BSON
    element of the value's type, with an empty name and without the name's NUL)."""
    return monty_bson.id_encode(value)


def _connect(file: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(file))


def _chunks(items: list[Any], size: int = IDS_PER_QUERY) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def find(file: Path, ids: Iterable[str | bytes]) -> list[dict[str, Any]]:
    """The documents of the collection in ``file`` whose ``_id`` is one of ``ids`` (one
    query per IDS_PER_QUERY of them), decoded as MontyDB decodes them (naive UTC
    datetimes); none when the collection does not exist yet."""
    keys = list(dict.fromkeys(id_key(value) for value in ids))
    if not keys or not file.is_file():
        return []
    connection = _connect(file)
    try:
        found = []
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            rows = connection.execute(f"SELECT v FROM [{TABLE}] WHERE k IN ({marks})", chunk)
            found += [bson.decode(raw) for (raw,) in rows]
        return found
    finally:
        connection.close()


#: SQLite's page cache for a big insert (KiB; its default is 2 MiB): the pages a batch's
#: keys land on stay in memory until the commit instead of being spilled and read again
INSERT_CACHE_KIB = 65_536


def insert_new(file: Path, documents: Iterable[dict[str, Any]]) -> None:
    """Add ``documents`` to the collection in ``file`` (made if it does not exist), in
    one transaction; one whose ``_id`` is there already is left as it was. Rows go in
    in key order, so that keys landing on the same page of the index are written
    together (post keys are random: unsorted, each would touch a page of its own)."""
    rows = sorted((id_key(document["_id"]), bson.encode(document)) for document in documents)
    if not rows:
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    connection = _connect(file)
    try:
        with connection:
            connection.execute("PRAGMA journal_mode=WAL")  # MontyDB's, set on its files
            connection.execute(f"PRAGMA cache_size=-{INSERT_CACHE_KIB}")
            connection.execute(CREATE)
            connection.executemany(f"INSERT OR IGNORE INTO [{TABLE}] (k, v) VALUES (?, ?)", rows)
    finally:
        connection.close()


def replace(file: Path, documents: Iterable[dict[str, Any]]) -> None:
    """Replace the stored documents with the same ``_id``s as ``documents``, in one
    transaction (one not stored is not added)."""
    rows = [(bson.encode(document), id_key(document["_id"])) for document in documents]
    _execute_many(file, f"UPDATE [{TABLE}] SET v = ? WHERE k = ?", rows)


def remove(file: Path, ids: Iterable[str | bytes]) -> None:
    """Delete the documents whose ``_id`` is one of ``ids``, in one transaction."""
    _execute_many(file, f"DELETE FROM [{TABLE}] WHERE k = ?",
                  [(id_key(value),) for value in ids])


def _execute_many(file: Path, statement: str, rows: list[tuple[Any, ...]]) -> None:
    """``statement`` once per row, in one transaction; nothing without rows or a file."""
    if not rows or not file.is_file():
        return
    connection = _connect(file)
    try:
        with connection:
            connection.executemany(statement, rows)
    finally:
        connection.close()


def scan(file: Path, since: datetime | None, until: datetime | None
         ) -> Iterator[dict[str, Any]]:
    """The documents of ``file`` with ``since <= timestamp < until`` in time order
    (``storage.BatchStore.window`` of the embedded store), holding one document at a
    time (and SCAN_ROWS raw ones): a first pass reads each document's ``timestamp``
    only (the ``content`` array is not decoded), then the documents are fetched by row
    in time order and decoded one by one, as MontyDB decodes them (naive UTC
    datetimes). Without bounds, documents whose timestamp is missing or not a date
    come first, as MongoDB sorts them."""
    if not file.is_file():
        return
    low, high = (None if since is None else naive_utc(since),
                 None if until is None else naive_utc(until))
    connection = _connect(file)
    try:
        order: list[tuple[int, datetime, int]] = []  # (0: no date / 1: date, time, row)
        for row, raw in connection.execute(f"SELECT rowid, v FROM [{TABLE}]"):
            stamp = RawBSONDocument(raw).get("timestamp")
            if not isinstance(stamp, datetime):
                if low is None and high is None:
                    order.append((0, datetime.min, row))
            elif (low is None or stamp >= low) and (high is None or stamp < high):
                order.append((1, stamp, row))
        order.sort()
        for start in range(0, len(order), SCAN_ROWS):
            rows = [row for _, _, row in order[start:start + SCAN_ROWS]]
            marks = ",".join("?" * len(rows))
            found = dict(connection.execute(
                f"SELECT rowid, v FROM [{TABLE}] WHERE rowid IN ({marks})", rows))
            for row in rows:
                if row in found:  # else deleted meanwhile
                    yield bson.decode(found.pop(row))
    finally:
        connection.close()


def naive_utc(moment: datetime) -> datetime:
    """``moment`` as a naive UTC datetime (what MontyDB stores and compares)."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


class KeyedFile:
    """One collection of the embedded store, read and written a document at a time by
    ``_id`` in its SQLite file (what the ledger's upserts need, without MontyDB's read
    of the whole collection)."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def get(self, value: str | bytes) -> dict[str, Any] | None:
        """The document whose ``_id`` is ``value``, or None."""
        found = find(self.file, [value])
        return found[0] if found else None

    def put(self, document: dict[str, Any]) -> None:
        """Store ``document``, replacing the one with its ``_id``."""
        self.file.parent.mkdir(parents=True, exist_ok=True)
        connection = _connect(self.file)
        try:
            with connection:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(CREATE)
                connection.execute(
                    f"INSERT INTO [{TABLE}] (k, v) VALUES (?, ?) "
                    "ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                    (id_key(document["_id"]), bson.encode(document)))
        finally:
            connection.close()
