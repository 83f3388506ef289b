"""The case series: the ``case_counts`` collection beside the batches, one document per
country per date, kept from each file a case counter newly reads.

A row seen for the first time is added; a row whose values changed is revised in
place, its earlier values (and when they were seen) pushed onto its ``revisions``;
an unchanged row is not written at all. Rows are compared and written a chunk at a
time (CHUNK_ROWS), so memory stays flat however large the file. Each file read is
also recorded in ``case_counts_loads`` (when, what it gave, what it changed).

Two ways to the same documents:

* MongoDB (pymongo, or mongomock in tests): each chunk's stored rows are fetched by
  ``_id`` in one query, new rows inserted in one ``insert_many``, and each revised row
  updated (a few per file);
* the embedded store: MontyDB reads and decodes a whole collection for any query, and
  its ``insert_many`` scans every stored key for each new document, so the series
  reads and writes MontyDB's SQLite file of the collection itself, in MontyDB's
  layout (table ``documents``: ``k`` = ``montydb.types.bson.id_encode(_id)``, the
  primary key, and ``v`` = the BSON document), one transaction per chunk. MontyDB
  (and :func:`storage.scan_embedded`) read the documents as usual.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import bson
import pymongo
import pymongo.errors
from bson.codec_options import CodecOptions

import storage
from counts.series import CaseFile, CaseRow
from storage import embedded

log = logging.getLogger("storage")

#: the collection of the series, and the one recording each file read into it
COLLECTION = "case_counts"
LOADS = f"{COLLECTION}_loads"
#: rows compared and written at a time
CHUNK_ROWS = 500
#: the figures of a row, as stored (a blank is null, never 0)
FIGURES = ("new_cases", "cumulative_cases", "new_deaths", "cumulative_deaths")
#: what a revision compares: a change in any of these revises the row
VALUES = ("code", "who_region", *FIGURES)
_AWARE = CodecOptions(tz_aware=True)
#: where the text of a string ``_id`` starts in MontyDB's key (type byte, int32 length)
_KEY_TEXT = 5


def row_id(source: str, day: date, country: str) -> str:
    """A row's ``_id``: ``who|2025-03-02|Germany``: sorted by source, date, country."""
    return f"{source}|{day.isoformat()}|{country}"


@functools.lru_cache(maxsize=4096)  # a file holds a few thousand days
def midnight(day: date) -> datetime:
    """``day`` at 00:00 UTC, as a row's ``date`` is stored."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def new_document(source: str, row: CaseRow, seen: datetime) -> dict[str, Any]:
    """The document of a row seen for the first time at ``seen``."""
    return {**row_fields(row_id(source, row.date, row.country), source, row),
            "first_seen": seen}


def row_fields(key: str, source: str, row: CaseRow) -> dict[str, Any]:
    """What the document ``key`` says of its row, in the order it is stored: ``_id``,
    source, date, country, then the values a revision compares."""
    return {"_id": key, "source": source, "date": midnight(row.date), "country": row.country,
            "code": row.code, "who_region": row.who_region, "new_cases": row.new_cases,
            "cumulative_cases": row.cumulative_cases, "new_deaths": row.new_deaths,
            "cumulative_deaths": row.cumulative_deaths}


def values_of(row: CaseRow) -> dict[str, Any]:
    """What a revision compares, as stored."""
    return {"code": row.code, "who_region": row.who_region, "new_cases": row.new_cases,
            "cumulative_cases": row.cumulative_cases, "new_deaths": row.new_deaths,
            "cumulative_deaths": row.cumulative_deaths}


@dataclass(frozen=True)
class Revision:
    """A stored row whose values changed: its ``_id``, the new values, the values and
    ``first_seen`` it had, and whether the change comes from the same file (a row
    listed twice: the later wins, and no revision is recorded)."""

    id: str
    values: dict[str, Any]
    old: Mapping[str, Any]
    same_file: bool

    def earlier(self, last_seen: datetime) -> dict[str, Any]:
        """The entry pushed onto ``revisions``: the old values, when they were first
        seen and the last file read before the change."""
        first_seen = _aware(self.old.get("first_seen"))
        if first_seen is not None:
            last_seen = max(last_seen, first_seen)
        return {**{name: self.old.get(name) for name in VALUES}, "first_seen": first_seen,
                "last_seen": last_seen}


@dataclass(frozen=True)
class LoadSummary:
    """What one file did to the series."""

    rows: int
    added: int
    revised: int
    unchanged: int
    seconds: float

    def describe(self) -> str:
        return (f"{self.rows:,} rows: {self.added:,} new, {self.revised:,} revised, "
                f"{self.unchanged:,} unchanged ({self.seconds:.1f} s)")


class CaseSeries:
    """The ``case_counts`` collection of a store, written and read the store's way
    (:class:`MongoRows` or :class:`EmbeddedRows`); ``loads`` is the pymongo-style
    ``case_counts_loads`` collection. Made by :func:`of_store`."""

    def __init__(self, rows: MongoRows | EmbeddedRows, loads: Any, description: str) -> None:
        self.backend = rows
        self.loads = loads
        self.description = description

    # ----------------------------------------------------------------- writing

    def store(self, file: CaseFile, rows: Iterable[CaseRow]) -> LoadSummary:
        """Keep the rows of ``file`` (read at ``file.seen``): new rows added, changed
        ones revised, unchanged ones left as they are; then record the load. Raises
        what the store raises (the counter logs it); what was written before stays
        (a chunk at a time), and reading the same file again completes it."""
        started = time.perf_counter()
        seen = _to_millisecond(file.seen.astimezone(UTC))  # as BSON keeps it
        previous = self.last_load(file.source)
        last_seen = _aware(previous.get("seen")) if previous else None
        read = added = revised = 0
        remaining = iter(rows)
        with self.backend.session() as session:
            while chunk := list(islice(remaining, CHUNK_ROWS)):
                read += len(chunk)
                latest = {row_id(file.source, r.date, r.country): r for r in chunk}
                stored = session.current(list(latest))
                new, changes = [], []
                for key, row in latest.items():
                    if key not in stored:
                        new.append(new_document(file.source, row, seen))
                        continue
                    old = session.changed(stored[key], key, file.source, row)
                    if old is not None:
                        changes.append(Revision(key, values_of(row), old,
                                                _aware(old.get("first_seen")) == seen))
                session.insert(new)
                session.revise(changes, seen, last_seen or seen)
                added += len(new)
                revised += len(changes)
        summary = LoadSummary(read, added, revised, read - added - revised,
                              time.perf_counter() - started)
        self.loads.insert_one({
            "_id": f"{file.source}|{seen.isoformat()}", "source": file.source, "seen": seen,
            "url": file.url, "etag": file.validators.etag,
            "last_modified": file.validators.last_modified, "as_of": file.as_of,
            "file_rows": file.rows, "skipped": file.skipped, "rows": summary.rows,
            "added": summary.added, "revised": summary.revised,
            "unchanged": summary.unchanged, "seconds": round(summary.seconds, 3)})
        log.info("case series (%s, file of %s): %s", file.source,
                 file.as_of.date().isoformat() if file.as_of else "unknown date",
                 summary.describe())
        return summary

    def last_load(self, source: str) -> dict[str, Any] | None:
        """The latest file of ``source`` recorded in ``case_counts_loads``, if any."""
        found = (self.loads.find({"source": source}).sort("seen", pymongo.DESCENDING)
                 .limit(1))
        return next(iter(found), None)

    # ----------------------------------------------------------------- reading

    def rows(self, source: str | None = None, since: datetime | None = None,
             until: datetime | None = None, country: str | None = None
             ) -> Iterator[dict[str, Any]]:
        """The stored rows (of ``source``, of ``since <= date < until``, of ``country``
        by name), sorted by source, date and country, one at a time. Dates are aware
        UTC datetimes, whichever store."""
        for document in self.backend.rows(source, since, until, country):
            yield _with_aware_dates(document)

    def countries(self) -> Iterator[tuple[str, str | None]]:
        """Each country's name and code (None if blank), as its latest row gives them."""
        yield from self.backend.countries()

    def latest_date(self, source: str) -> datetime | None:
        """The latest date of ``source``'s rows (00:00 UTC), None without rows."""
        return self.backend.latest_date(source)

    def close(self) -> None:
        self.backend.close()


def of_store(store: storage.BatchStore) -> CaseSeries:
    """The case series of ``store``'s database (its ``case_counts`` collection)."""
    loads = store.sibling(LOADS)
    file = store.embedded_file(COLLECTION)
    if file is not None:
        return CaseSeries(EmbeddedRows(file), loads, f"{COLLECTION} ({store.description})")
    return CaseSeries(MongoRows(store.sibling(COLLECTION)), loads,
                      f"{COLLECTION} ({store.description})")


# ---------------------------------------------------------------------- MongoDB


class MongoRows:
    """``case_counts`` through pymongo (or mongomock): lookups by ``_id``, bulk writes."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self._indexed = False

    def session(self) -> MongoRows:
        if not self._indexed:  # the index the readers sort and filter with
            self.collection.create_index([("source", 1), ("date", 1), ("country", 1)])
            self.collection.create_index([("country", 1), ("date", 1)])
            self._indexed = True
        return self

    def __enter__(self) -> MongoRows:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def current(self, ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """The stored rows among ``ids``: what a revision compares, and first_seen."""
        projection = dict.fromkeys((*VALUES, "first_seen"), 1)
        return {doc["_id"]: doc
                for doc in self.collection.find({"_id": {"$in": list(ids)}}, projection)}

    def changed(self, stored: Mapping[str, Any], key: str, source: str, row: CaseRow
                ) -> Mapping[str, Any] | None:
        """``stored`` if ``row``'s values differ from it, else None."""
        values = values_of(row)
        return stored if any(stored.get(n) != values[n] for n in VALUES) else None

    def insert(self, documents: list[dict[str, Any]]) -> None:
        if not documents:
            return
        try:
            self.collection.insert_many(documents, ordered=False)
        except pymongo.errors.BulkWriteError as err:  # another writer added some first
            errors = err.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise

    def revise(self, changes: Sequence[Revision], seen: datetime, last_seen: datetime
               ) -> None:
        for change in changes:  # a few per file: one update each
            # only if nobody revised it meanwhile: its values are still those compared
            expected = {"_id": change.id, **{name: change.old.get(name) for name in VALUES}}
            if change.same_file:
                update: dict[str, Any] = {"$set": change.values}
            else:
                update = {"$set": {**change.values, "first_seen": seen},
                          "$push": {"revisions": change.earlier(last_seen)}}
            self.collection.update_one(expected, update)

    def rows(self, source: str | None, since: datetime | None, until: datetime | None,
             country: str | None) -> Iterator[dict[str, Any]]:
        query: dict[str, Any] = {}
        if source is not None:
            query["source"] = source
        if country is not None:
            query["country"] = country
        query.update(storage.window_filter(since, until, field="date"))
        order = [("source", 1), ("date", 1), ("country", 1)]
        return iter(self.collection.find(query).sort(order))

    def latest_date(self, source: str) -> datetime | None:
        latest = next(iter(self.collection.find({"source": source}, {"date": 1})
                           .sort("date", pymongo.DESCENDING).limit(1)), None)
        return None if latest is None else _aware(latest["date"])

    def countries(self) -> Iterator[tuple[str, str | None]]:
        pipeline = [{"$sort": {"date": 1}},
                    {"$group": {"_id": "$country", "code": {"$last": "$code"}}},
                    {"$sort": {"_id": 1}}]
        for found in self.collection.aggregate(pipeline, allowDiskUse=True):
            yield found["_id"], found.get("code")

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- embedded store


_TABLE = embedded.TABLE  # MontyDB's table: k (the encoded _id, primary key), v (BSON)
_CREATE = embedded.CREATE
#: MontyDB's key of a document with this ``_id`` (the primary key of its table)
embedded_key = embedded.id_key


class EmbeddedRows:
    """``case_counts`` as MontyDB's SQLite file of it, read and written with SQL.

    The table is created as MontyDB creates it (if the file does not exist yet) and
    the documents are MontyDB's (BSON, keyed by ``id_encode(_id)``), so MontyDB reads
    them as its own. Each :meth:`session` is one connection, in the thread using it;
    each chunk is one transaction (a crash keeps whole chunks only).
    """

    def __init__(self, file: Path) -> None:
        self.file = Path(file)
        self._connection: sqlite3.Connection | None = None
        self._raw: dict[str, bytes] = {}  # the stored bytes of the chunk's rows

    def session(self) -> EmbeddedRows:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(str(self.file), timeout=30)
        try:
            # a write-ahead log, as MontyDB keeps; synced once at the end of the load (a
            # checkpoint) rather than at each chunk: a power cut may lose the last chunks,
            # never corrupt the file, and the load is recorded only after that sync
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_CREATE)
            connection.commit()
        except sqlite3.Error:
            connection.close()
            raise
        return EmbeddedRows._opened(self.file, connection)

    @classmethod
    def _opened(cls, file: Path, connection: sqlite3.Connection) -> EmbeddedRows:
        opened = cls(file)
        opened._connection = connection
        return opened

    def __enter__(self) -> EmbeddedRows:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if self._connection is None:
            return
        try:
            if exc_type is None:  # every chunk on disk before the load is recorded
                self._connection.execute("PRAGMA wal_checkpoint(FULL)")
        finally:
            self._connection.close()
            self._connection = None

    def current(self, ids: Sequence[str]) -> dict[str, bytes]:
        """The stored rows among ``ids``, as stored (BSON, not decoded)."""
        assert self._connection is not None
        keys = {embedded_key(i): i for i in ids}
        marks = ",".join("?" * len(keys))
        found = self._connection.execute(
            f"SELECT k, v FROM [{_TABLE}] WHERE k IN ({marks})", list(keys))
        self._raw = {keys[key]: value for key, value in found}  # BLOBs: bytes
        return self._raw

    def changed(self, stored: bytes, key: str, source: str, row: CaseRow
                ) -> Mapping[str, Any] | None:
        """The stored document, decoded, if ``row``'s values differ from it, else None.
        Most rows are unchanged: their document starts with the BSON of what it says
        of its row (:func:`row_fields`, in its order), which is compared without
        decoding; only a document that does not is decoded and compared field by field
        (its integers might be stored as 64-bit ones, say)."""
        expected = bson.encode(row_fields(key, source, row))
        if stored.startswith(expected[4:-1], 4):  # past the length, before the end byte
            return None
        document = bson.decode(stored, _AWARE)
        values = values_of(row)
        return document if any(document.get(n) != values[n] for n in VALUES) else None

    def insert(self, documents: list[dict[str, Any]]) -> None:
        if not documents:
            return
        assert self._connection is not None
        with self._connection:
            self._connection.executemany(
                f"INSERT OR IGNORE INTO [{_TABLE}](k, v) VALUES (?, ?)",
                ((embedded_key(d["_id"]), bson.encode(d)) for d in documents))

    def revise(self, changes: Sequence[Revision], seen: datetime, last_seen: datetime
               ) -> None:
        if not changes:
            return
        assert self._connection is not None
        updates = []
        for change in changes:
            document = dict(change.old)  # the whole stored document, decoded
            document.update(change.values)
            if not change.same_file:
                document["first_seen"] = seen
                document["revisions"] = [*document.get("revisions", ()),
                                         change.earlier(last_seen)]
            # only if nobody revised it meanwhile: the stored bytes are still those read
            updates.append((bson.encode(document), embedded_key(change.id),
                            self._raw[change.id]))
        with self._connection:
            self._connection.executemany(
                f"UPDATE [{_TABLE}] SET v = ? WHERE k = ? AND v = ?", updates)

    def rows(self, source: str | None, since: datetime | None, until: datetime | None,
             country: str | None) -> Iterator[dict[str, Any]]:
        """Filtered on the key's text (source, date) by SQLite, sorted by it in SQLite
        (source, date, country: the key's order), decoded one at a time."""
        if not self.file.is_file():
            return
        since, until = _aware(since), _aware(until)
        text = f"substr(k, {_KEY_TEXT + 1})"
        sql, params = f"SELECT k, v FROM [{_TABLE}]", []
        if source is not None:  # the key's text: source|YYYY-MM-DD|country ("}" > "|")
            low = f"{source}|{since.date().isoformat()}" if since else f"{source}|"
            last_day = (until - timedelta(microseconds=1)).date() if until else None
            high = f"{source}|{last_day.isoformat()}}}" if last_day else f"{source}}}"
            sql += f" WHERE {text} >= ? AND {text} < ?"
            params += [low.encode(), high.encode()]
        connection = sqlite3.connect(f"file:{self.file}?mode=ro", uri=True, timeout=30)
        try:
            for key, value in connection.execute(sql + f" ORDER BY {text}", params):
                name = bytes(key)[_KEY_TEXT:-1].decode().split("|", 2)[2]
                if country is not None and name != country:
                    continue
                document = bson.decode(value, _AWARE)
                if since is not None and document["date"] < since:
                    continue
                if until is not None and document["date"] >= until:
                    continue
                yield document
        finally:
            connection.close()

    def latest_date(self, source: str) -> datetime | None:
        """From the keys alone (their text starts ``source|YYYY-MM-DD``)."""
        if not self.file.is_file():
            return None
        text = f"substr(k, {_KEY_TEXT + 1})"
        connection = sqlite3.connect(f"file:{self.file}?mode=ro", uri=True, timeout=30)
        try:
            (key,) = connection.execute(
                f"SELECT max({text}) FROM [{_TABLE}] WHERE {text} >= ? AND {text} < ?",
                (f"{source}|".encode(), f"{source}}}".encode())).fetchone()
        finally:
            connection.close()
        if key is None:
            return None
        return midnight(date.fromisoformat(bytes(key).decode().split("|", 2)[1]))

    def countries(self) -> Iterator[tuple[str, str | None]]:
        """Each country's latest row's code: the keys are read in order (no document
        decoded), and one document per country."""
        if not self.file.is_file():
            return
        connection = sqlite3.connect(f"file:{self.file}?mode=ro", uri=True, timeout=30)
        try:
            latest: dict[str, tuple[str, int]] = {}  # country -> (date, rowid)
            for row, key in connection.execute(f"SELECT rowid, k FROM [{_TABLE}]"):
                _, day, name = bytes(key)[_KEY_TEXT:-1].decode().split("|", 2)
                if name not in latest or day > latest[name][0]:
                    latest[name] = (day, row)
            for name in sorted(latest):
                (value,) = connection.execute(f"SELECT v FROM [{_TABLE}] WHERE rowid = ?",
                                              (latest[name][1],)).fetchone()
                yield name, bson.decode(value).get("code")
        finally:
            connection.close()

    def close(self) -> None:
        pass


def _to_millisecond(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _aware(moment: Any) -> datetime | None:
    """``moment`` aware (a naive one is UTC, as mongomock and MontyDB give them; an
    aware one is kept as it is: bson's own UTC compares as datetime.UTC does)."""
    if not isinstance(moment, datetime):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _with_aware_dates(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with its dates (and its revisions') aware UTC: mongomock and
    MontyDB give naive ones."""
    for name in ("date", "first_seen"):
        if name in document:
            document[name] = _aware(document[name])
    for earlier in document.get("revisions") or ():
        for name in ("first_seen", "last_seen"):
            if name in earlier:
                earlier[name] = _aware(earlier[name])
    return document
