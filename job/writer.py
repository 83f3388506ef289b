"""The driver's part of each batch, whichever engine runs it: drop what was stored
already, fetch the case count once, build the document(s), store them with what the
batch's records ask (deletes, coverage, keyword sets), acknowledge.

:class:`BatchWriter` takes a batch as the executors left it (``transform.Record``
tuples, in arrival order) and a batch time; the DStream engine calls
:meth:`BatchWriter.process` from ``foreachRDD``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

import bson

import control
import storage
import transform
from counts.reading import CaseCount
from job.batch import BatchStats, Quarantine, RecentIds
from job.delivery import Delivery
from job.intake import DELETED_KEYS_LIMIT, Intake, Mark

log = logging.getLogger("spark_streaming")  # the job's lines keep the name operators filter on


class BatchWriter:
    """The driver's part of each batch: drop what was already stored, fetch
    the count once, build the document(s), store them, acknowledge.

    A fault in one batch is logged and never reaches Spark, so the stream
    goes on; its tweets are not acknowledged, so the producer sends them again.
    """

    def __init__(
        self,
        store: storage.DurableStore,
        case_count: Callable[[], CaseCount],
        *,
        on_batch: Callable[[BatchStats], None] | None = None,
        seen_ids: RecentIds | None = None,
        delivery: Delivery | None = None,
        acks: control.ControlClient | None = None,
        quarantine: Quarantine | None = None,
        max_content_bytes: int = transform.MAX_CONTENT_BYTES,
        post_fields: Iterable[str] = (),
        secret: bytes | None = None,
        filters: dict[str, dict[str, Any]] | None = None,
        keep_deleted: bool = False,
    ) -> None:
        """``secret``: the control secret, which a record that is not a post must be
        sealed with (without it, every such record is taken for forged); ``filters``:
        the keyword set in force for each producer at start (``ledger.filters_in_force``);
        ``keep_deleted``: store posts whose authors deleted them (KEEP_DELETED; never
        the default)."""
        self.store = store
        self.case_count = case_count
        self.on_batch = on_batch
        self.seen_ids = seen_ids or RecentIds()
        self.delivery = delivery or Delivery()
        self.acks = acks
        self.quarantine = quarantine
        self.max_content_bytes = max_content_bytes
        #: the post fields stored as each document's posts (empty: none)
        self.post_fields = tuple(post_fields)
        self.secret = secret
        #: the keyword set in force for each producer (its latest filter record)
        self.filters: dict[str, dict[str, Any]] = dict(filters or {})
        self.keep_deleted = keep_deleted
        self.deleted_keys = RecentIds(DELETED_KEYS_LIMIT)  # posts deleted lately
        self._finished = threading.Condition()
        self._last_finished = -math.inf  # epoch seconds of the last batch handled
        #: set by create_context when BatchMetrics logs each batch's line instead
        self.metrics_attached = False
        self._stats: OrderedDict[int, BatchStats] = OrderedDict()  # batch ms -> stats
        self._active = 0  # process() calls under way
        self._refuse_after = math.inf  # batches later than this (epoch s) are not taken
        self._refused: set[int] = set()  # their times, in ms

    def take_stats(self, batch_millis: int) -> BatchStats | None:
        """The stats of the batch at ``batch_millis`` (once), None if it failed."""
        with self._finished:
            return self._stats.pop(batch_millis, None)

    def refused(self, batch_millis: int) -> bool:
        """Whether the batch at ``batch_millis`` came after the stop and was not taken."""
        with self._finished:
            return batch_millis in self._refused

    def log_untaken_stats(self) -> None:
        """Log the line of batches Spark stopped before reporting, and how many came
        after the stop (at shutdown)."""
        with self._finished:
            untaken, self._stats = list(self._stats.values()), OrderedDict()
            refused = len(self._refused)
        for stats in untaken:
            log.info(stats.summary())
        if refused:
            log.info("%d batch(es) received after the stop were not taken: stream.py keeps "
                     "their tweets and sends them to the next run", refused)

    def process(self, batch_time: datetime, rdd: Any) -> None:
        """``foreachRDD`` hook: collect the batch's records and write them."""
        with self._finished:
            if batch_time.timestamp() > self._refuse_after:
                # the job is stopping: stream.py sends these tweets to the next run
                self._refused.add(round(batch_time.timestamp() * 1000))
                return
            self._active += 1
        try:
            # plain tuples cross the wire (a NamedTuple costs ~2 µs more per tweet to
            # pickle); write_records reads them as Records
            stats = self.write_records(batch_time, rdd.collect())
        except (storage.SpoolError, storage.StoreUnavailableError) as err:
            log.error("batch %s: %s; not acknowledged: stream.py keeps its tweets and sends "
                      "them again", transform.batch_id(batch_time), err)
            return
        except Exception:  # one bad batch must not stop the stream
            if self._refuse_after < math.inf:  # Spark was stopped under it
                log.info("batch %s: interrupted by the stop; not acknowledged, so stream.py "
                         "sends its tweets again", transform.batch_id(batch_time))
            else:
                log.exception("batch %s failed and was not stored; not acknowledged",
                              transform.batch_id(batch_time))
            return
        finally:
            with self._finished:
                self._active -= 1
                self._last_finished = max(self._last_finished, batch_time.timestamp())
                self._finished.notify_all()
        if self.metrics_attached:
            with self._finished:
                self._stats[round(batch_time.timestamp() * 1000)] = stats
                while len(self._stats) > 100:
                    self._stats.popitem(last=False)
        else:
            log.info(stats.summary())
        if self.on_batch is not None:
            self.on_batch(stats)

    def wait_for_batch_at_or_after(self, moment: float, timeout: float) -> bool:
        """Wait until the batch whose time is ``moment`` (epoch seconds) or later
        has been handled, i.e. everything received until ``moment`` is stored.
        False if ``timeout`` seconds passed first."""
        with self._finished:
            return self._finished.wait_for(lambda: self._last_finished >= moment, timeout)

    def finish(self, timeout: float) -> bool:
        """Take no batch later than the last one handled, and wait until the ones
        under way are done, so that stopping Spark interrupts none. False if
        ``timeout`` seconds passed first."""
        with self._finished:
            self._refuse_after = self._last_finished
            return self._finished.wait_for(lambda: self._active == 0, timeout)

    def write_records(
        self, batch_time: datetime, records: Iterable[transform.Record | tuple[Any, ...]]
    ) -> BatchStats:
        """Store the document(s) of one batch of ``process_line`` results (Records,
        or the same fields as plain tuples), and apply its records (deletes, coverage,
        keyword sets) in the same order, in the store or the spool; its stats."""
        intake = Intake(batch_time, self.delivery, self.seen_ids, self.deleted_keys,
                        self._authentic, self.filters, keep_deleted=self.keep_deleted)
        self.delivery.begin()
        try:
            intake.take(records)
            content, marks, keys = intake.stored()
            operations = intake.operations()
            stats = BatchStats(batch_time, intake.lines, len(content), intake.empty,
                               len(intake.malformed), intake.duplicates,
                               out_of_order=intake.out_of_order, resent=intake.resent,
                               deletes=intake.deletes, deleted=intake.deleted,
                               forged=intake.forged, sealed_records=intake.sealed_records,
                               gaps=tuple(intake.gaps))
            if content:
                reading = self.case_count()
                documents = self._documents(batch_time, content, marks, keys, reading,
                                            intake.batch_filter(marks))
                started = time.perf_counter()
                applied = self.store.apply([*documents, *operations])
                stats = replace(stats, total_case_count=reading.total,
                                count_fresh=reading.fresh, case_count_as_of=reading.as_of,
                                case_count_source=reading.source,
                                write_ms=(time.perf_counter() - started) * 1000,
                                document_id=documents[0]["_id"], parts=len(documents),
                                spooled=not applied.stored,
                                deleted=intake.deleted + applied.removed)
            else:
                if operations:  # to the store, or to the spool while it is down
                    applied = self.store.apply(operations)
                    stats = replace(stats, deleted=intake.deleted + applied.removed,
                                    spooled=not applied.stored)
                progress = self.delivery.batch_committed()
                # an idle or duplicate-only batch still moves the producers on: record
                # it, so that a restarted job does not take it for a gap
                if progress and not self.store.record_progress(progress):
                    raise storage.StoreUnavailableError(
                        "cannot record how far this batch got (the store is down)")
                self.store.drain()  # an idle moment to write what the spool holds
        except BaseException:
            self.seen_ids.forget(intake.new_ids)  # not stored: let the resent tweets in
            self.delivery.abort()
            raise
        self.filters = intake.filters
        acks, resends = self.delivery.commit()
        if self.quarantine is not None and intake.malformed:
            try:
                self.quarantine.add(batch_time, intake.malformed)
            except OSError as err:  # the batch is stored: only the copies are lost
                log.warning("batch %s: cannot keep its %d malformed line(s) in %s: %s",
                            transform.batch_id(batch_time), len(intake.malformed),
                            self.quarantine.path, err.strerror or err)
        if self.acks is not None:
            # every batch, empty ones too, repeats where each producer stands: an ack
            # lost on the way (the producer restarted) is made good by the next one
            self.delivery.held(self.acks.send(acks, resends))
        return stats

    def _authentic(self, record: dict[str, Any]) -> bool:
        """Whether a record that is not a post carries the control secret's mac."""
        return self.secret is not None and control.record_authentic(self.secret, record)

    def _documents(
        self,
        batch_time: datetime,
        content: list[str],
        marks: list[Mark],
        keys: list[bytes],
        reading: CaseCount,
        in_force: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The batch's document, or its parts when it would pass 16 MB; each
        part records how far it takes each producer's sequence, has the keys of its
        posts (and, with post fields, their fields) and names the keyword set in
        force (``in_force``, when known)."""
        posts = None
        if self.post_fields:
            empty = dict.fromkeys(self.post_fields)
            posts = [dict(empty) if post is None else post for _, _, post in marks]
        room = self.max_content_bytes
        if in_force is not None:
            room -= len(bson.encode({"filter": in_force}))
        parts = transform.split_content(content, room, posts, keys=True)
        documents, start = [], 0
        final = self.delivery.batch_committed()
        for number, part in enumerate(parts, start=1):
            end = start + len(part)
            document = transform.build_document(
                batch_time, part, reading.total, reading.as_of, reading.source,
                None if posts is None else posts[start:end], keys[start:end])
            document["_id"] = transform.part_id(batch_time, number)
            if len(parts) > 1:
                document["part"] = {"number": number, "of": len(parts)}
            if in_force is not None:
                document["filter"] = in_force
            reached: dict[str, int] = {}
            if number == len(parts):
                reached = final
            else:
                for source, seq, _ in marks[start:end]:
                    if source is not None and seq is not None:
                        reached[source] = max(seq, reached.get(source, seq))
            if reached:
                document["delivery"] = [{"source": source, "last_seq": seq}
                                        for source, seq in sorted(reached.items())]
            documents.append(document)
            start = end
        return documents
