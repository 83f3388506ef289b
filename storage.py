"""Where the batch documents live: MongoDB through pymongo, or an embedded store.

``MONGODB_URI`` set: a real MongoDB (standalone, replica set, Atlas), through
pymongo. Unset: MontyDB, a MongoDB-compatible store kept in SQLite files under
``EMBEDDED_DB_PATH``, so the pipeline runs on a machine with no database server.
Both are used through the same pymongo-style collection calls, and tests hand
a mongomock collection to the same :class:`BatchStore`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import montydb.errors
import pymongo
import pymongo.errors
from bson import json_util
from montydb.errors import MontyError
from pymongo.errors import PyMongoError

from config import Settings, redact_uri

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


class BatchStore:
    """One collection of batch documents.

    ``write`` is idempotent: a document replaces any earlier one with the same
    ``_id``, so writing a batch twice leaves one document.
    """

    def __init__(self, collection: Any, description: str, client: Any = None) -> None:
        self.collection = collection
        self.description = description
        self._client = client

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
        account for (their ``delivery`` field): what a restarted job must not store again."""
        found: dict[str, int] = {}
        recent = (self.collection.find({"delivery": {"$exists": True}}, {"delivery": 1})
                  .sort("timestamp", pymongo.DESCENDING).limit(DELIVERY_SCAN_LIMIT))
        for doc in recent:
            for mark in doc.get("delivery") or ():
                source, seq = mark.get("source"), mark.get("last_seq")
                if isinstance(source, str) and isinstance(seq, int):
                    found[source] = max(seq, found.get(source, -1))
        return found

    def sibling(self, name: str) -> Any:
        """Another collection of the same database (``batch_metrics``)."""
        return self.collection.database[name]

    def latest(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent documents, oldest first."""
        newest = self.collection.find().sort("timestamp", pymongo.DESCENDING).limit(limit)
        return list(reversed(list(newest)))

    def close(self) -> None:
        """Release the client's connections or files."""
        if self._client is not None:
            self._client.close()


class Spool:
    """An append-only file of documents that could not be stored yet.

    One document per line, as canonical Extended JSON (dates and 64-bit
    integers keep their BSON types); each append is flushed and fsynced before
    it returns, so a spooled document survives a crash of the job.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())

    def append(self, documents: Sequence[dict[str, Any]]) -> None:
        """Add ``documents`` durably at the end."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            for document in documents:
                handle.write(json_util.dumps(document, json_options=SPOOL_JSON) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def documents(self) -> list[dict[str, Any]]:
        """Everything spooled, oldest first."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as handle:
            return [json_util.loads(line, json_options=SPOOL_JSON) for line in handle
                    if line.strip()]

    def clear(self) -> None:
        """Empty the spool (after every document in it was stored)."""
        self.path.unlink(missing_ok=True)


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
        if they were spooled. Raises only if the spool itself cannot be written."""
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
        self.spool.append(documents)
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


def open_store(settings: Settings) -> BatchStore:
    """The store the settings name, checked to be reachable, with its index.

    Raises StoreError (one line, password masked) when it cannot be reached.
    """
    store = _open_mongodb(settings) if settings.mongo_uri else _open_embedded(settings)
    try:
        store.ensure_indexes()
    except PyMongoError as err:
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
        client.admin.command("ping")
    except PyMongoError as err:
        raise StoreError(f"cannot reach MongoDB at {where}: {_one_line(err)}") from None
    collection = client[settings.database][settings.collection]
    return BatchStore(collection, settings.store_description, client)


def _open_embedded(settings: Settings) -> BatchStore:
    from montydb import MontyClient, set_storage  # only needed without a server

    path = settings.embedded_db_path
    try:
        path.mkdir(parents=True, exist_ok=True)
        set_storage(str(path), storage="sqlite", use_bson=True)
        client = MontyClient(str(path))
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot open the embedded store at {path}: {err}") from None
    collection = client[settings.database][settings.collection]
    return BatchStore(collection, settings.store_description, client)


def _one_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:300]
