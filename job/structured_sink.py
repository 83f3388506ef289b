"""The structured engine's ``foreachBatch``: a batch's rows, collected once, into the
shared batch path (:class:`job.writer.BatchWriter`).

Spark calls :class:`BatchSink` with each micro-batch. It runs one action on it
(``toArrow``: every action would run the source's ``read()`` again), turns the rows
back into records (:mod:`job.rows`) and hands them to the writer with the batch's
time from its end offset, so that a batch Spark runs again after a failure
writes documents of the same ``_id`` over its own. A batch that cannot be stored
raises: Spark then does not commit it and runs it again when the query restarts.

In this process's Spark the sink is made by :mod:`job.structured`; through Spark
Connect, the server runs it and :func:`remote_sink` builds it there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import config
import scrape
import storage
import transform
from job import delivery, rows
from job.batch import BatchStats, Quarantine
from job.writer import BatchWriter
from storage import case_series, ledger

log = logging.getLogger("spark_streaming")

#: Stats of batches kept for the listener that logs them (a handful is ever waiting).
KEPT_STATS = 100


class RangeDelivery(delivery.Delivery):
    """The delivery bookkeeping of the structured engine.

    Each batch is an exact range of a producer's seqs that Spark planned and, after a
    failure, runs again whole: so each seq of it is new, and a seq missing from it
    was acknowledged before or lost to damage, never a lost send. Only a seq the
    batch holds twice is dropped, and nothing is ever asked again (no resend).
    """

    def begin(self) -> None:
        self._batch = {}

    def admit(self, source: str, seq: int) -> str:
        if seq <= self._batch.get(source, -1):
            return delivery.RESENT
        self._batch[source] = seq
        return delivery.NEW

    def batch_committed(self) -> dict[str, int]:
        return dict(self._batch)

    def abort(self) -> None:
        self._batch = {}

    def commit(self) -> tuple[dict[str, int], dict[str, int]]:
        self.committed.update(self._batch)
        return dict(self.committed), {}


class BatchSink:
    """``foreachBatch``: each batch through ``writer``.

    ``on_batch(batch_ms, stats)`` is told of each batch stored (the listener logs its
    line once Spark's progress for it comes; see :meth:`take_stats`).
    """

    def __init__(self, writer: BatchWriter,
                 on_batch: Callable[[int, BatchStats], None] | None = None) -> None:
        self.writer = writer
        self.on_batch = on_batch
        self._changed = threading.Condition()
        self._stats: OrderedDict[int, BatchStats] = OrderedDict()  # batch ms -> stats
        #: the time (ms) of the last batch stored, 0 before the first
        self.last_stored_ms = 0

    def __call__(self, frame: Any, batch_id: int) -> None:
        started = time.perf_counter()
        table = frame.toArrow()  # the one action
        collected = time.perf_counter()
        records, batch_ms = rows.to_records(table)
        log.debug("batch %d: collected in %.0f ms, %d rows as records in %.0f ms", batch_id,
                  (collected - started) * 1000, len(records),
                  (time.perf_counter() - collected) * 1000)
        if batch_ms is None:
            return  # a range that held nothing (stored before, or lost to damage)
        moment = datetime.fromtimestamp(batch_ms / 1000, UTC)
        try:
            stats = self.writer.write_records(moment, records)
        except Exception as err:
            log.error("batch %s (Spark's %d) not stored: %s; Spark runs it again",
                      rows_id(batch_ms), batch_id, one_line(err))
            raise
        with self._changed:
            self._stats[batch_ms] = stats
            while len(self._stats) > KEPT_STATS:
                self._stats.popitem(last=False)
            self.last_stored_ms = max(self.last_stored_ms, batch_ms)
        if self.on_batch is not None:
            self.on_batch(batch_ms, stats)

    def idle(self) -> None:
        """The stream is idle (no batch runs without new posts): a moment to write what the
        spool holds, as an empty DStream batch does."""
        if self.writer.store.spooled:
            self.writer.store.drain()

    def take_stats(self, batch_ms: int) -> BatchStats | None:
        """The stats of the batch of time ``batch_ms`` (once); None if none was stored."""
        with self._changed:
            return self._stats.pop(batch_ms, None)



def rows_id(batch_ms: int) -> str:
    """A batch time as document ids and log lines show it."""
    return transform.batch_id(datetime.fromtimestamp(batch_ms / 1000, UTC))


def one_line(err: BaseException) -> str:
    """An error in one line: its first, or for an error from Python inside Spark (a
    traceback in its text), the traceback's last, which says what went wrong."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if "Traceback (most recent call last)" in lines[0] and len(lines) > 1:
        last = next((line for line in reversed(lines) if not line.startswith("SQLSTATE")),
                    lines[-1])
        return f"{lines[0].partition(' Traceback')[0]} {last}"[:300]
    return lines[0][:300]


def remote_sink(settings: config.Settings, secret: bytes) -> BatchSink:
    """The sink as a Spark Connect server runs it (in its own Python, on the first
    batch): the store (its spool drained first), the keyword sets in force, the case
    count and the writer, made there from the job's ``settings`` and control ``secret``
    (which the records that are not posts are checked with); each batch's line goes to
    the server's log."""
    config.configure_logging(settings)
    store = storage.open_store(settings)
    durable = storage.DurableStore(store, storage.Spool(settings.spool_path))
    if durable.spooled:
        durable.drain()
    try:
        filters, _ = ledger.load_state(store, durable.spool.operations())
    except storage.STORE_ERRORS as err:  # only delayed: the producer sends its own again
        log.warning("cannot read the keyword sets in force (%s)", err)
        filters = {}
    series = case_series.of_store(store) if settings.case_series == "on" else None
    counter = scrape.open_counter(settings, series=series)
    counter.start()
    writer = BatchWriter(durable, counter.current, delivery=RangeDelivery(),
                         quarantine=Quarantine(settings.quarantine_path),
                         post_fields=settings.post_fields, secret=secret, filters=filters,
                         keep_deleted=settings.keep_deleted)
    log.info("Spark Connect server: storing batches in %s", store.description)
    return BatchSink(writer, lambda _ms, stats: log.info(stats.summary()))
