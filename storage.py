"""Where the batch documents live: MongoDB through pymongo, or an embedded store.

``MONGODB_URI`` set: a real MongoDB (standalone, replica set, Atlas), through
pymongo. Unset: MontyDB, a MongoDB-compatible store kept in SQLite files under
``EMBEDDED_DB_PATH``, so the pipeline runs on a machine with no database server.
Both are used through the same pymongo-style collection calls, and tests hand
a mongomock collection to the same :class:`BatchStore`.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import montydb.errors
import pymongo
import pymongo.errors
from bson import json_util
from bson.raw_bson import RawBSONDocument
from montydb.errors import MontyError
from pymongo.errors import PyMongoError

from config import Settings, redact_uri
from journal import RecordFile

log = logging.getLogger("storage")

#: How long pymongo looks for a usable server before an operation fails
#: (a ``serverSelectionTimeoutMS`` in the URI wins).
SERVER_SELECTION_TIMEOUT_MS = 3_000
APP_NAME = "covid19-live-stream"
#: Pauses between the tries of one write before the document goes to the spool.
RETRY_DELAYS = (0.5, 1.0)
#: Recent documents read at start to learn what each producer already delivered.
DELIVERY_SCAN_LIMIT = 1_000
#: Errors that mean "the store is unavailable right now", for either store kind.
STORE_ERRORS: tuple[type[BaseException], ...] = (PyMongoError, MontyError, sqlite3.Error, OSError)
DUPLICATE_KEY_ERRORS = (pymongo.errors.DuplicateKeyError, montydb.errors.DuplicateKeyError)
SPOOL_JSON = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=True)


class StoreError(RuntimeError):
    """The store cannot be opened or used; ``str(err)`` is one line without secrets."""


class StoreUnavailableError(RuntimeError):
    """The store is down and what a batch needed written could not wait in the spool."""


class SpoolError(RuntimeError):
    """A batch could be neither stored nor spooled (e.g. a full disk); one line."""


class BatchStore:
    """One collection of batch documents.

    ``write`` is idempotent: a document replaces any earlier one with the same
    ``_id``, so writing a batch twice leaves one document.
    """

    def __init__(self, collection: Any, description: str, client: Any = None,
                 embedded_file: Path | None = None) -> None:
        self.collection = collection
        self.description = description
        self._client = client
        self._embedded_file = embedded_file  # the embedded store's SQLite file, if any

    def window(self, since: datetime | None = None, until: datetime | None = None
               ) -> Iterator[dict[str, Any]]:
        """The documents with ``since <= timestamp < until`` (all of them without
        bounds), oldest first, one at a time: filtered and sorted by the server
        through the ``timestamp`` index. MontyDB's own cursor decodes and holds every
        document of the collection before it hands out the first, so the embedded
        store is read from its SQLite file instead (:func:`scan_embedded`)."""
        if self._embedded_file is not None:
            return scan_embedded(self._embedded_file, since, until)
        return iter(self.collection.find(window_filter(since, until))
                    .sort("timestamp", pymongo.ASCENDING))

    def ensure_indexes(self) -> None:
        """Create the index on ``timestamp`` (a no-op where it exists)."""
        self.collection.create_index([("timestamp", pymongo.ASCENDING)])

    def write(self, document: dict[str, Any]) -> None:
        """Insert ``document``, or replace the one with its ``_id`` (a batch written again).

        Insert first: it is what almost every write is, and the embedded store
        answers an upsert by reading every stored document.
        """
        try:
            self.collection.insert_one(document)
        except DUPLICATE_KEY_ERRORS:
            self.collection.replace_one({"_id": document["_id"]}, document)

    def delivered(self) -> dict[str, int]:
        """Per producer source, the highest sequence number the stored documents
        account for (their ``delivery`` field, and the progress records of batches
        that stored no document): what a restarted job must not store again."""
        found: dict[str, int] = {}
        recent = (self.collection.find({"delivery": {"$exists": True}}, {"delivery": 1})
                  .sort("timestamp", pymongo.DESCENDING).limit(DELIVERY_SCAN_LIMIT))
        marks = [mark for doc in recent for mark in doc.get("delivery") or ()]
        marks += list(self.progress.find({}, {"source": 1, "last_seq": 1}))
        for mark in marks:
            source, seq = mark.get("source"), mark.get("last_seq")
            if isinstance(source, str) and isinstance(seq, int):
                found[source] = max(seq, found.get(source, -1))
        return found

    @property
    def progress(self) -> Any:
        """The ``<collection>_delivery`` collection: one record per producer of how
        far batches that stored no document took it."""
        return self.sibling(f"{self.collection.name}_delivery")

    def record_progress(self, reached: dict[str, int]) -> None:
        """Record that every seq up to ``reached[source]`` is handled (a batch with
        nothing to store: empty after cleaning, or only tweets seen before)."""
        now = datetime.now(UTC)
        for source, seq in reached.items():
            self.progress.replace_one(
                {"_id": source}, {"_id": source, "source": source, "last_seq": seq,
                                  "timestamp": now}, upsert=True)

    def sibling(self, name: str) -> Any:
        """Another collection of the same database (``batch_metrics``)."""
        return self.collection.database[name]

    def embedded_file(self, name: str) -> Path | None:
        """The embedded store's SQLite file of the collection ``name`` of the same
        database (MontyDB's layout; it may not exist yet), None with MongoDB."""
        if self._embedded_file is None:
            return None
        return self._embedded_file.with_name(f"{name}.collection")

    def latest(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent documents, oldest first."""
        newest = self.collection.find().sort("timestamp", pymongo.DESCENDING).limit(limit)
        return list(reversed(list(newest)))

    def close(self) -> None:
        """Release the client's connections or files."""
        if self._client is not None:
            self._client.close()


def window_filter(since: datetime | None, until: datetime | None,
                  field: str = "timestamp") -> dict[str, Any]:
    """The query for ``since <= timestamp < until`` (either may be ``None``; another
    date ``field`` than ``timestamp`` may be named)."""
    bounds: dict[str, datetime] = {}
    # naive UTC bounds: pymongo encodes naive datetimes as UTC, MontyDB stores naive
    # UTC and cannot compare them with aware ones, mongomock accepts both
    if since is not None:
        bounds["$gte"] = _naive_utc(since)
    if until is not None:
        bounds["$lt"] = _naive_utc(until)
    return {field: bounds} if bounds else {}


def _naive_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


#: Rows fetched at a time when the embedded store is read in time order.
SCAN_ROWS = 256
_EMBEDDED_TABLE = "documents"  # MontyDB's SQLite table: k (the _id), v (the BSON document)


def scan_embedded(file: Path, since: datetime | None, until: datetime | None
                  ) -> Iterator[dict[str, Any]]:
    """:meth:`BatchStore.window` of the embedded store's SQLite ``file`` (MontyDB's
    layout), holding one document at a time (and SCAN_ROWS raw ones): a first pass
    reads each document's ``timestamp`` only (the ``content`` array is not decoded),
    then the documents are fetched by row in time order and decoded one by one, as
    MontyDB decodes them (naive UTC datetimes). Without bounds, documents whose
    timestamp is missing or not a date come first, as MongoDB sorts them."""
    if not file.is_file():
        return
    low, high = (None if since is None else _naive_utc(since),
                 None if until is None else _naive_utc(until))
    connection = sqlite3.connect(str(file))
    try:
        order: list[tuple[int, datetime, int]] = []  # (0: no date / 1: date, time, row)
        for row, raw in connection.execute(f"SELECT rowid, v FROM [{_EMBEDDED_TABLE}]"):
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
                f"SELECT rowid, v FROM [{_EMBEDDED_TABLE}] WHERE rowid IN ({marks})", rows))
            for row in rows:
                if row in found:  # else deleted meanwhile
                    yield bson.decode(found.pop(row))
    finally:
        connection.close()


class Spool:
    """An append-only file of documents that could not be stored yet.

    One document per record, as canonical Extended JSON (dates and 64-bit
    integers keep their BSON types) sealed with a checksum
    (:class:`journal.RecordFile`); each append is fsynced before it returns,
    so a spooled document survives a crash of the job, and a record torn by
    a crash or a full disk is cut off when the spool is read, never joined.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = RecordFile(self.path)

    def __len__(self) -> int:
        return len(self._file.read())  # the records, without decoding the documents

    def append(self, documents: Sequence[dict[str, Any]]) -> None:
        """Add ``documents`` durably at the end; OSError leaves the spool as it was."""
        self._file.append(json_util.dumps(document, json_options=SPOOL_JSON).encode("utf-8")
                          for document in documents)

    def documents(self) -> list[dict[str, Any]]:
        """Everything spooled, oldest first (a torn last record cut off)."""
        documents = []
        for raw in self._file.read():
            try:
                documents.append(json_util.loads(raw, json_options=SPOOL_JSON))
            except (ValueError, TypeError) as err:  # sealed, so never expected
                log.error("%s: skipping a record that is no document: %s", self.path, err)
        return documents

    def clear(self) -> None:
        """Empty the spool (after every document in it was stored)."""
        self._file.clear()


class DurableStore:
    """Writes that lose nothing when the store is down.

    A document is written with a few tries (``RETRY_DELAYS``); if the store is
    still unavailable it goes to the :class:`Spool`. While the spool holds
    anything, later documents join it, so order is kept, and every write first
    tries to empty it into the store. Because writes replace by ``_id``, a
    document written again after a crash is still one document.
    """

    def __init__(
        self, store: BatchStore, spool: Spool, retry_delays: Sequence[float] = RETRY_DELAYS
    ) -> None:
        self.store = store
        self.spool = spool
        self.retry_delays = tuple(retry_delays)
        self._spooled = len(spool)
        self._lock = threading.Lock()
        self._outage_started: float | None = None

    @property
    def spooled(self) -> int:
        """Documents waiting in the spool."""
        return self._spooled

    def write(self, documents: Sequence[dict[str, Any]]) -> bool:
        """Store ``documents`` in order; True if they reached the store, False
        if they were spooled. Raises SpoolError if the spool cannot be written
        either (the documents are then nowhere: do not acknowledge them)."""
        with self._lock:
            if self._spooled and not self._drain():
                self._to_spool(documents)
                return False
            for delay in (*self.retry_delays, None):
                try:
                    for document in documents:
                        self.store.write(document)
                except STORE_ERRORS as err:
                    if delay is None:
                        self._note_outage(err)
                        self._to_spool(documents)
                        return False
                    log.debug("store write failed (%s); trying again in %g s", err, delay)
                    time.sleep(delay)
                else:
                    self._note_recovery()
                    return True
        raise AssertionError("unreachable")  # pragma: no cover

    def record_progress(self, reached: dict[str, int]) -> bool:
        """:meth:`BatchStore.record_progress` now; False when it cannot be written
        now (the store is down, or documents wait in the spool before it)."""
        with self._lock:
            if self._spooled and not self._drain():
                return False
            try:
                self.store.record_progress(reached)
            except STORE_ERRORS as err:
                self._note_outage(err)
                return False
            return True

    def delivered(self) -> dict[str, int]:
        """:meth:`BatchStore.delivered`, counting the documents in the spool too."""
        found = self.store.delivered()
        for document in self.spool.documents():
            for mark in document.get("delivery") or ():
                source, seq = mark["source"], mark["last_seq"]
                found[source] = max(seq, found.get(source, -1))
        return found

    def drain(self) -> bool:
        """Try to empty the spool into the store now; True if it is empty."""
        with self._lock:
            return self._drain()

    def _drain(self) -> bool:
        if not self._spooled:
            return True
        documents = self.spool.documents()
        try:
            for document in documents:
                self.store.write(document)
        except STORE_ERRORS as err:
            self._note_outage(err)
            return False
        self.spool.clear()
        self._spooled = 0
        log.info("store reachable again: wrote the %d spooled document(s) in order",
                 len(documents))
        self._note_recovery()
        return True

    def _to_spool(self, documents: Sequence[dict[str, Any]]) -> None:
        try:
            self.spool.append(documents)
        except OSError as err:
            raise SpoolError(f"neither stored ({self.store.description} is down) nor spooled "
                             f"({self.spool.path}: {err.strerror or err})") from None
        self._spooled += len(documents)
        log.debug("spooled %d document(s); %d waiting", len(documents), self._spooled)

    def _note_outage(self, err: BaseException) -> None:
        if self._outage_started is None:
            self._outage_started = time.monotonic()
            log.warning("cannot write to %s (%s): documents go to the spool %s until it is back",
                        self.store.description, _one_line(err), self.spool.path)

    def _note_recovery(self) -> None:
        if self._outage_started is not None:
            log.info("store outage over after %.0f s", time.monotonic() - self._outage_started)
            self._outage_started = None


def open_store(settings: Settings, *, create: bool = True) -> BatchStore:
    """The store the settings name, checked to be reachable, with its index.

    ``create=False`` (a reader such as ``report.py``): an embedded store that does
    not exist yet is an error instead of a new empty store, and nothing is written
    (no folder, no index). Raises StoreError (one line, password masked) when the
    store cannot be reached or, with ``create=False``, does not exist.
    """
    if settings.mongo_uri:
        store = _open_mongodb(settings)
    else:
        store = _open_embedded(settings, create=create)
    if not create:
        return store
    try:
        store.ensure_indexes()
    except STORE_ERRORS as err:
        store.close()
        raise StoreError(f"cannot use {store.description}: {_one_line(err)}") from None
    return store


def _open_mongodb(settings: Settings) -> BatchStore:
    assert settings.mongo_uri is not None
    where = redact_uri(settings.mongo_uri)
    try:
        options: dict[str, Any] = {"appname": APP_NAME, "tz_aware": True}
        if "serverselectiontimeoutms" not in settings.mongo_uri.lower():
            options["serverSelectionTimeoutMS"] = SERVER_SELECTION_TIMEOUT_MS
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            settings.mongo_uri, **options
        )
    except PyMongoError as err:
        raise StoreError(f"cannot reach MongoDB at {where}: {_one_line(err)}") from None
    try:
        client.admin.command("ping")
    except pymongo.errors.ServerSelectionTimeoutError as err:
        client.close()
        raise StoreError(unreachable_message(where, str(err))) from None
    except PyMongoError as err:
        client.close()
        raise StoreError(f"cannot reach MongoDB at {where}: {_one_line(err)}") from None
    collection = client[settings.database][settings.collection]
    return BatchStore(collection, settings.store_description, client)


#: What to do when no MongoDB answers, at the end of that error's line.
UNREACHABLE_HINT = ("start MongoDB, check MONGODB_URI / --mongo-uri, or unset it to use the "
                    "embedded store")
_SERVER_ERRORS_SHOWN = 3
_CONFIGURED_TIMEOUTS = re.compile(r"\s*\(configured timeouts: [^)]*\)")
_NEXT_SERVER = re.compile(r",\s*(?=[^\s,]+:\d+: )")  # "...refused,host:27017: ..."
_SERVER_PREFIX = re.compile(r"([^\s,]+:\d+): (.*)", re.DOTALL)
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")
_TIMEOUT = re.compile(r", Timeout: ([\d.]+)s\b")


def unreachable_reason(error_text: str) -> str:
    """The why of pymongo's ServerSelectionTimeoutError text, short: each server's
    error (``127.0.0.1:27017: connection refused``), without the configured
    timeouts, the errno and the topology description; ``"; "`` between servers.
    ``"no server answered"`` when the text names none."""
    head = _TIMEOUT.split(error_text, maxsplit=1)[0]
    head = head.split(", Topology Description:", 1)[0]
    head = _CONFIGURED_TIMEOUTS.sub("", head).strip()
    if not head:
        return "no server answered"
    reasons = []
    for part in _NEXT_SERVER.split(head):
        server = _SERVER_PREFIX.match(part.strip())
        where, why = server.groups() if server else ("", part.strip())
        why = _ERRNO.sub("", why).strip() or why
        why = why[:1].lower() + why[1:]
        reasons.append(f"{where}: {why}" if where else why)
    if len(reasons) > _SERVER_ERRORS_SHOWN:
        more = len(reasons) - _SERVER_ERRORS_SHOWN
        reasons = [*reasons[:_SERVER_ERRORS_SHOWN], f"and {more} more"]
    return "; ".join(reasons)


def unreachable_message(where: str, error_text: str) -> str:
    """One line for a MongoDB no server answered (pymongo's ServerSelectionTimeoutError
    text): where (password already masked), each server's reason, how long pymongo
    tried, and what to do."""
    found = _TIMEOUT.search(error_text)
    waited = f" (after {float(found.group(1)):g} s)" if found else ""
    return (f"cannot reach MongoDB at {where}: {unreachable_reason(error_text)}{waited}; "
            f"{UNREACHABLE_HINT}")


#: The file MontyDB keeps in every embedded store's folder.
EMBEDDED_MARKER = "monty.storage.cfg"


def _open_embedded(settings: Settings, *, create: bool = True) -> BatchStore:
    from montydb import MontyClient, set_storage  # only needed without a server

    path = settings.embedded_db_path
    if not create and not (path / EMBEDDED_MARKER).is_file():
        raise StoreError(f"no store at {path}: nothing stored yet? check --embedded-db-path "
                         "/ EMBEDDED_DB_PATH")
    try:
        path.mkdir(parents=True, exist_ok=True)
        set_storage(str(path), storage="sqlite", use_bson=True)
        client = MontyClient(str(path))
    except (*STORE_ERRORS, ValueError) as err:
        raise StoreError(f"cannot open the embedded store at {path}: {err}") from None
    collection = client[settings.database][settings.collection]
    file = path / settings.database / f"{settings.collection}.collection"  # MontyDB's layout
    return BatchStore(collection, settings.store_description, client, embedded_file=file)


def _one_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:300]
