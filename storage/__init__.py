"""Where the batch documents live: MongoDB through pymongo, or an embedded store.

``MONGODB_URI`` set: a real MongoDB (standalone, replica set, Atlas), through
pymongo. Unset: MontyDB, a MongoDB-compatible store kept in SQLite files under
``EMBEDDED_DB_PATH``, so the pipeline runs on a machine with no database server.
Both are used through the same pymongo-style collection calls, and tests hand
a mongomock collection to the same :class:`BatchStore`.

This module is the batches' store (:class:`BatchStore`, :class:`DurableStore`,
:func:`open_store`); beside it, what else the job keeps in the same database:

* :mod:`storage.spool`: the operations waiting for the store while it is down;
* :mod:`storage.post_keys`: a stored post found by its key when its author deletes it;
* :mod:`storage.ledger`: the coverage ledger and the keyword sets in force;
* :mod:`storage.case_series`: the case source's own figures (``case_counts``);
* :mod:`storage.embedded`: the embedded store's SQLite files read and written
  directly where MontyDB would read a whole collection.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import montydb.errors
import pymongo
import pymongo.errors
from montydb.errors import MontyError
from pymongo.errors import PyMongoError

from config import Settings, redact_uri
from storage import embedded, ledger, post_keys, spool
from storage.embedded import SCAN_ROWS as SCAN_ROWS  # storage's names too
from storage.embedded import naive_utc
from storage.spool import SPOOL_JSON as SPOOL_JSON
from storage.spool import Operation, Spool

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

        Its ``post_keys`` go to the side collection first (:class:`post_keys.PostKeys`),
        so that a crash between the two leaves no stored post that a delete cannot
        find. Insert first: it is what almost every write is, and the embedded store
        answers an upsert by reading every stored document.
        """
        keys = document.get("post_keys")
        if keys:
            self.post_keys.add(document["_id"], keys)
        try:
            self.collection.insert_one(document)
        except DUPLICATE_KEY_ERRORS:
            self.collection.replace_one({"_id": document["_id"]}, document)

    @property
    def post_keys(self) -> post_keys.PostKeys:
        """The ``<collection>_post_keys`` side collection: which document holds each post."""
        name = f"{self.collection.name}{post_keys.SUFFIX}"
        return post_keys.PostKeys(self.sibling(name), self.embedded_file(name))

    def delete_posts(self, keys: Iterable[bytes]) -> int:
        """Remove the posts of ``keys`` (their authors deleted them) from every stored
        document; how many were removed (:func:`post_keys.delete_posts`)."""
        return post_keys.delete_posts(self.collection, self._embedded_file, self.post_keys,
                                      keys)

    def apply(self, operation: Operation) -> int:
        """Carry out one :class:`spool.Operation`: write a document, delete posts,
        upsert a coverage span or gap, record a keyword set in force. The number of
        posts it removed (a delete), else 0. Each kind is idempotent."""
        if operation.kind == spool.DOCUMENT:
            self.write(operation.body)
        elif operation.kind == spool.DELETE:
            return self.delete_posts(operation.body["keys"])
        elif operation.kind == spool.COVERAGE:
            ledger.upsert_coverage(self._keyed(ledger.COVERAGE_COLLECTION), operation.body)
        elif operation.kind == spool.FILTER:
            ledger.record_filter(self._keyed(ledger.FILTERS_COLLECTION), operation.body)
        else:
            raise ValueError(f"unknown operation {operation.kind!r}")
        return 0

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

    def _keyed(self, name: str) -> ledger.Keyed:
        """The sibling collection ``name``, a document at a time by ``_id`` (on the
        embedded store, in its SQLite file)."""
        file = self.embedded_file(name)
        return ledger.KeyedCollection(self.sibling(name)) if file is None else \
            embedded.KeyedFile(file)

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
        bounds["$gte"] = naive_utc(since)
    if until is not None:
        bounds["$lt"] = naive_utc(until)
    return {field: bounds} if bounds else {}


def scan_embedded(file: Path, since: datetime | None, until: datetime | None
                  ) -> Iterator[dict[str, Any]]:
    """:meth:`BatchStore.window` of the embedded store's SQLite ``file``
    (:func:`embedded.scan`: in time order, one document decoded at a time)."""
    return embedded.scan(file, since, until)


@dataclass(frozen=True)
class Applied:
    """What :meth:`DurableStore.apply` did: whether the operations reached the store
    (False: they wait in the spool) and how many posts their deletes removed, from
    the store or from the documents waiting in the spool."""

    stored: bool
    removed: int = 0


class DurableStore:
    """Writes that lose nothing when the store is down.

    Operations (:class:`spool.Operation`: batch documents, deletes, ledger records)
    are applied with a few tries (``RETRY_DELAYS``); if the store is still
    unavailable, those not applied yet go to the :class:`Spool`. While the spool
    holds anything, later operations join it, so order is kept, and every write
    first tries to empty it into the store. A delete that joins the spool also
    removes its posts from the documents waiting there (the spool is rewritten).
    Every operation is idempotent, so one applied again after a crash changes
    nothing more.
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
        self._keys_in_spool: set[bytes] | None = None  # read from the spool when needed

    @property
    def spooled(self) -> int:
        """Operations (documents, deletes, ledger records) waiting in the spool."""
        return self._spooled

    def write(self, documents: Sequence[dict[str, Any]]) -> bool:
        """Store ``documents`` in order; True if they reached the store, False
        if they were spooled (:meth:`apply`)."""
        return self.apply(documents).stored

    def apply(self, items: Sequence[dict[str, Any] | Operation]) -> Applied:
        """Apply ``items`` (operations; a plain dict is a batch document) in order, to
        the store or else to the spool. Raises SpoolError if the spool cannot be
        written either (what was not applied is then nowhere: do not acknowledge it)."""
        operations = [spool.as_operation(item) for item in items]
        with self._lock:
            if self._spooled and not self._drain():
                return Applied(False, self._to_spool(operations))
            removed = done = 0
            for delay in (*self.retry_delays, None):
                try:
                    while done < len(operations):  # a retry goes on where it failed
                        removed += self.store.apply(operations[done])
                        done += 1
                except STORE_ERRORS as err:
                    if delay is None:
                        self._note_outage(err)
                        return Applied(False, removed + self._to_spool(operations[done:]))
                    log.debug("store write failed (%s); trying again in %g s", err, delay)
                    time.sleep(delay)
                else:
                    self._note_recovery()
                    return Applied(True, removed)
        raise AssertionError("unreachable")  # pragma: no cover

    def record_progress(self, reached: dict[str, int]) -> bool:
        """:meth:`BatchStore.record_progress` now; False when it cannot be written
        now (the store is down, or operations wait in the spool before it)."""
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
        operations = self.spool.operations()
        removed = 0
        try:
            for operation in operations:
                removed += self.store.apply(operation)
        except STORE_ERRORS as err:
            self._note_outage(err)
            return False
        self.spool.clear()
        self._spooled, self._keys_in_spool = 0, set()
        documents = sum(op.kind == spool.DOCUMENT for op in operations)
        others = len(operations) - documents
        log.info("store reachable again: wrote the %d spooled document(s) in order%s",
                 documents, f", and applied {others} other operation(s) with them "
                 f"({removed} deleted post(s) removed)" if others else "")
        self._note_recovery()
        return True

    def _to_spool(self, operations: Sequence[Operation]) -> int:
        """Append ``operations`` to the spool; the posts their deletes removed from the
        documents waiting there (and from those among ``operations``)."""
        removed = 0
        try:
            for number, operation in enumerate(operations):
                if operation.kind == spool.DELETE:
                    removed += self._delete_in_spool(set(operation.body["keys"]),
                                                     operations[:number])
            self.spool.append(operations)
        except OSError as err:
            raise SpoolError(f"neither stored ({self.store.description} is down) nor spooled "
                             f"({self.spool.path}: {err.strerror or err})") from None
        self._spooled += len(operations)
        if self._keys_in_spool is not None:
            self._keys_in_spool.update(_keys_of(operations))
        log.debug("spooled %d operation(s); %d waiting", len(operations), self._spooled)
        return removed

    def _delete_in_spool(self, keys: set[bytes], before: Sequence[Operation]) -> int:
        """Remove the posts of ``keys`` from the documents of ``before`` and from those
        waiting in the spool (rewritten, only when one of them holds such a post)."""
        removed = sum(post_keys.remove_posts(op.body, keys) for op in before
                      if op.kind == spool.DOCUMENT)
        if self._keys_in_spool is None:
            self._keys_in_spool = set(_keys_of(self.spool.operations()))
        if not self._spooled or self._keys_in_spool.isdisjoint(keys):
            return removed
        waiting = self.spool.operations()
        removed_here = sum(post_keys.remove_posts(op.body, keys) for op in waiting
                           if op.kind == spool.DOCUMENT)
        if removed_here:
            self.spool.rewrite(waiting)
            log.info("removed %d deleted post(s) from the documents waiting in the spool",
                     removed_here)
        self._keys_in_spool -= keys
        return removed + removed_here

    def _note_outage(self, err: BaseException) -> None:
        if self._outage_started is None:
            self._outage_started = time.monotonic()
            log.warning("cannot write to %s (%s): documents go to the spool %s until it is back",
                        self.store.description, _one_line(err), self.spool.path)

    def _note_recovery(self) -> None:
        if self._outage_started is not None:
            log.info("store outage over after %.0f s", time.monotonic() - self._outage_started)
            self._outage_started = None


def _keys_of(operations: Iterable[Operation]) -> Iterator[bytes]:
    """The post keys of the documents among ``operations``."""
    for operation in operations:
        if operation.kind == spool.DOCUMENT:
            yield from operation.body.get("post_keys") or ()


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
