"""Where the batch documents live: MongoDB through pymongo, or an embedded store.

``MONGODB_URI`` set: a real MongoDB (standalone, replica set, Atlas), through
pymongo. Unset: MontyDB, a MongoDB-compatible store kept in SQLite files under
``EMBEDDED_DB_PATH``, so the pipeline runs on a machine with no database server.
Both are used through the same pymongo-style collection calls, and tests hand
a mongomock collection to the same :class:`BatchStore`.
"""

from __future__ import annotations

import logging
from typing import Any

import pymongo
from pymongo.errors import PyMongoError

from config import Settings, redact_uri

log = logging.getLogger("storage")

SERVER_SELECTION_TIMEOUT_MS = 5_000
APP_NAME = "covid19-live-stream"


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
        """Insert or replace ``document`` by its ``_id``."""
        self.collection.replace_one({"_id": document["_id"]}, document, upsert=True)

    def latest(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent documents, oldest first."""
        newest = self.collection.find().sort("timestamp", pymongo.DESCENDING).limit(limit)
        return list(reversed(list(newest)))

    def close(self) -> None:
        """Release the client's connections or files."""
        if self._client is not None:
            self._client.close()


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
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            settings.mongo_uri,
            serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
            appname=APP_NAME,
            tz_aware=True,
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
