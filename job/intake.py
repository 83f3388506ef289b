"""One batch's records sorted out on the driver, in arrival order: the posts to store,
the deletes, the coverage and keyword-set records, and what is dropped and why.

:class:`Intake` is the loop of ``job.writer.BatchWriter.write_records``: every
sequenced line goes through the producers' delivery bookkeeping (each applied once,
in order), every record that is not a post must carry the control secret's mac
(checked here: the secret never leaves the driver), and a post whose author deleted
it is dropped wherever in the batch its delete comes, and never stored again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import transform
import wire_records
from job.batch import RecentIds
from job.delivery import GAP, NEW, RESENT, Delivery
from storage import ledger, spool
from storage.spool import Operation

#: keys of posts deleted lately, remembered so that one sent again after its delete (a
#: rewind) is not stored again: at Bluesky's ~5 deletes/s network-wide, about 5 hours
DELETED_KEYS_LIMIT = 100_000
#: a post's place in the batch: (its producer, its seq, its post fields)
Mark = tuple[str | None, int | None, dict[str, Any] | None]


class Intake:
    """The sorting of one batch's records (:meth:`take`), then what it came to: the
    texts to store with their marks and keys, the store operations its records ask
    for (:meth:`operations`), the keyword sets in force, and the counts.

    ``filters`` maps each producer to the keyword set in force before the batch;
    the batch's own filter records are in :attr:`filters` after it (kept by the
    writer only if the batch is stored)."""

    def __init__(self, batch_time: datetime, delivery: Delivery, seen_ids: RecentIds,
                 deleted_keys: RecentIds, authentic: Callable[[dict[str, Any]], bool],
                 filters: dict[str, dict[str, Any]], *, keep_deleted: bool = False) -> None:
        self.batch_time = batch_time
        self.delivery = delivery
        self.seen_ids = seen_ids
        self.deleted_keys = deleted_keys
        self.authentic = authentic
        self.keep_deleted = keep_deleted
        self.filters = dict(filters)
        self.content: list[str | None] = []  # None: removed by a later delete of the batch
        self.marks: list[Mark] = []
        self.keys: list[bytes] = []
        self.malformed: list[transform.Record] = []
        self.new_ids: list[str] = []  # post ids first seen in this batch
        self.delete_keys: list[bytes] = []  # posts to remove from the store
        self.ledger: list[Operation] = []  # coverage spans and gaps, in order
        self.gaps: list[ledger.Gap] = []
        self.active: set[str] = set()  # producers with a line handled in this batch
        self.lines = self.empty = self.duplicates = self.resent = self.out_of_order = 0
        self.deletes = self.deleted = self.forged = self.sealed_records = 0
        self._positions: dict[bytes, int] = {}  # key -> its post's place in content

    def take(self, records: Iterable[transform.Record | tuple[Any, ...]]) -> None:
        """Sort ``records`` (``process_line`` results, or the same fields as tuples)."""
        admit, remember = self.delivery.admit, self.seen_ids.add
        deleted_keys = self.deleted_keys
        for record in records:
            status, tweet_id, text, seq, source, _, post = record
            self.lines += 1
            if status == transform.MALFORMED:
                self.malformed.append(transform.Record._make(record))
                self.forged += text == wire_records.FORGED  # a record without a mac
                continue
            is_post = status in (transform.OK, transform.EMPTY)
            if not is_post and not self.authentic(post):
                # never applied, and it moves no producer on: a forged line cannot
                # take the seq of one the producer will send
                self.forged += 1
                self.malformed.append(transform.Record(
                    transform.MALFORMED, "", wire_records.FORGED, seq, source,
                    raw=json.dumps(post)[:transform.RAW_KEEP_CHARS]))
                continue
            if seq is not None and source is not None:
                verdict = admit(source, seq)
                if verdict != NEW:
                    self.resent += verdict == RESENT
                    self.out_of_order += verdict == GAP
                    continue
                self.active.add(source)
            if not is_post:
                self._record(status, tweet_id, source, post)
                continue
            key = wire_records.post_key(tweet_id)
            if not self.keep_deleted and key in deleted_keys:
                self.deleted += 1  # its author deleted it: never stored again
                continue
            if not remember(tweet_id):
                self.duplicates += 1
                continue
            self.new_ids.append(tweet_id)
            if status == transform.EMPTY:
                self.empty += 1
                continue
            self._positions[key] = len(self.content)
            self.content.append(text)
            self.marks.append((source, seq, post))
            self.keys.append(key)

    def _record(self, kind: str, post_id: str, producer: str | None,
                members: dict[str, Any]) -> None:
        """An authentic record that is not a post, admitted once."""
        self.sealed_records += 1
        if kind == wire_records.DELETE:
            self.deletes += 1
            if self.keep_deleted:
                return
            key = wire_records.post_key(post_id)
            self.deleted_keys.add(key)
            place = self._positions.pop(key, None)
            if place is not None:  # its post came in this very batch: never stored
                self.content[place] = None
                self.deleted += 1
            self.delete_keys.append(key)  # the post may be stored, or waiting in the spool
        elif kind == wire_records.FILTER:
            self.filters[producer or ""] = ledger.filter_in_force(members)
            self.active.add(producer or "")
        else:
            document = ledger.coverage_document(kind, members, producer, self.batch_time)
            self.ledger.append(Operation(spool.COVERAGE, document))
            if document["kind"] == ledger.GAP:
                self.gaps.append(ledger.Gap(document["source"], document["from"],
                                            document["to"], document["reason"],
                                            document["refused"]))

    def stored(self) -> tuple[list[str], list[Mark], list[bytes]]:
        """The texts to store, with their marks and keys (the posts deleted in the batch
        left out)."""
        kept = [i for i, text in enumerate(self.content) if text is not None]
        return ([self.content[i] for i in kept], [self.marks[i] for i in kept],  # type: ignore[misc]
                [self.keys[i] for i in kept])

    def batch_filter(self, marks: list[Mark]) -> dict[str, Any] | None:
        """The keyword set a document of ``marks`` names: the one in force, after the
        batch, for the producer of its last post (None when unknown)."""
        producers = [source for source, _, _ in marks if source is not None]
        return self.filters.get(producers[-1] if producers else "")

    def operations(self) -> list[Operation]:
        """What the batch asks of the store besides its documents, in order: the delete
        of the posts its authors deleted, the coverage spans and gaps, and for each
        producer heard from, that its keyword set was in force in this batch."""
        found = [Operation.delete(self.delete_keys)] if self.delete_keys else []
        found += self.ledger
        found += [Operation(spool.FILTER, ledger.filter_document(
            self.filters[producer], producer or None, self.batch_time))
            for producer in sorted(self.active) if producer in self.filters]
        return found
