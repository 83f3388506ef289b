"""Finding a stored post by its id, without storing the id, and removing it when its
author deletes it.

Every batch document has ``post_keys``, aligned with ``content``: each post's
:func:`wire_records.post_key` (the first 128 bits of the SHA-256 of its id). A side
collection, ``<collection>_post_keys``, maps each key to the ``_id`` of the document
that holds the post: ``{"_id": <key>, "batch": <document _id>}``; MongoDB finds a key
through its ``_id`` index, and the embedded store's SQLite file is read and written
directly (:mod:`embedded`), since MontyDB would decode the whole collection for any
query. A delete of a post never stored costs one lookup in the side collection,
and a batch's deletes are looked up together.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pymongo.errors

from storage import embedded

log = logging.getLogger("storage")

#: the side collection's name is the batches' collection's plus this
SUFFIX = "_post_keys"
#: MongoDB's error code for a duplicate key
DUPLICATE_KEY = 11_000
#: keys asked for in one MongoDB query
KEYS_PER_QUERY = 10_000


def remove_posts(document: dict[str, Any], keys: set[bytes] | frozenset[bytes]) -> int:
    """Remove from ``document`` (in place) every post whose key is in ``keys``: its text
    from ``content``, its entry from ``posts`` (post fields on) and from ``post_keys``,
    the three kept aligned; ``deleted`` counts them (added to what it held). Returns
    how many were removed; 0 for a document without ``post_keys`` (stored before they
    existed) or whose lists are not aligned (then nothing is changed, and said)."""
    post_keys, content = document.get("post_keys"), document.get("content")
    if not isinstance(post_keys, list) or not keys.intersection(post_keys):
        return 0
    posts = document.get("posts")
    if (not isinstance(content, list) or len(content) != len(post_keys)
            or (posts is not None and (not isinstance(posts, list)
                                       or len(posts) != len(post_keys)))):
        log.error("document %s: its content, posts and post_keys are not aligned; its "
                  "deleted posts cannot be removed", document.get("_id"))
        return 0
    keep = [i for i, key in enumerate(post_keys) if key not in keys]
    removed = len(post_keys) - len(keep)
    document["content"] = [content[i] for i in keep]
    if posts is not None:
        document["posts"] = [posts[i] for i in keep]
    document["post_keys"] = [post_keys[i] for i in keep]
    earlier = document.get("deleted")
    document["deleted"] = (earlier if type(earlier) is int else 0) + removed
    return removed


class PostKeys:
    """The side collection of one batches' collection: which document holds each post
    key. ``collection`` is it as a pymongo-style collection; ``file`` its SQLite file
    when it is the embedded store's (then read and written there directly)."""

    def __init__(self, collection: Any, file: Path | None = None) -> None:
        self.collection = collection
        self.file = file

    def add(self, document_id: str, keys: Iterable[bytes]) -> None:
        """Record that the document ``document_id`` holds the posts of ``keys``. A key
        recorded already keeps its entry (writing a batch again changes nothing)."""
        entries = [{"_id": key, "batch": document_id} for key in dict.fromkeys(keys)]
        if not entries:
            return
        if self.file is not None:
            embedded.insert_new(self.file, entries)
            return
        try:
            self.collection.insert_many(entries, ordered=False)
        except pymongo.errors.BulkWriteError as err:
            errors = err.details.get("writeErrors", [])
            if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise

    def find(self, keys: Iterable[bytes]) -> dict[bytes, str]:
        """``{key: the _id of the document holding its post}`` for the ``keys`` that are
        stored, in one query (per KEYS_PER_QUERY keys)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        if self.file is not None:
            found = embedded.find(self.file, wanted)
        else:
            found = [entry for start in range(0, len(wanted), KEYS_PER_QUERY)
                     for entry in self.collection.find(
                         {"_id": {"$in": wanted[start:start + KEYS_PER_QUERY]}})]
        return {bytes(entry["_id"]): entry["batch"] for entry in found
                if isinstance(entry.get("batch"), str)}

    def remove(self, keys: Iterable[bytes]) -> None:
        """Forget the entries of ``keys`` (their posts were removed)."""
        gone = list(keys)
        if not gone:
            return
        if self.file is not None:
            embedded.remove(self.file, gone)
            return
        for start in range(0, len(gone), KEYS_PER_QUERY):
            self.collection.delete_many({"_id": {"$in": gone[start:start + KEYS_PER_QUERY]}})


def delete_posts(batches: Any, file: Path | None, index: PostKeys, keys: Iterable[bytes]
                 ) -> int:
    """Remove the posts of ``keys`` from every stored document of ``batches`` (the
    batches' collection; ``file`` its SQLite file on the embedded store) that holds
    them (:func:`remove_posts`); the number removed. Idempotent: a key whose post is
    gone already, or never was stored, finds nothing (one lookup for all ``keys``).

    The documents are changed first, then the side entries forgotten: a crash
    between leaves entries that lead to documents without those posts, which the
    next delete of them finds harmless."""
    wanted = frozenset(keys)
    found = index.find(wanted)
    if not found:
        return 0
    holders: dict[str, list[bytes]] = defaultdict(list)
    for key, document_id in found.items():
        holders[document_id].append(key)
    if file is not None:
        documents = embedded.find(file, list(holders))
    else:
        documents = list(batches.find({"_id": {"$in": list(holders)}}))
    removed, changed = 0, []
    for document in documents:
        count = remove_posts(document, wanted)
        if count:
            removed += count
            changed.append(document)
    if file is not None:
        embedded.replace(file, changed)
    else:
        for document in changed:
            fields = {name: document[name] for name in ("content", "posts", "post_keys",
                                                          "deleted") if name in document}
            batches.update_one({"_id": document["_id"]}, {"$set": fields})
    index.remove(found)
    return removed
