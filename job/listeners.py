"""The job's Spark listeners: what Spark's own events tell the person running it.

:class:`BatchReport` is one batch's line (the job's counts next to Spark's
figures), also stored if asked, for both engines; :class:`BatchMetrics` makes it
from the DStream engine's events (the structured engine's listener is in
:mod:`job.structured`). :class:`ReceiverWatch` says, in one line, when the
receiver cannot reach stream.py, instead of Spark's warning every 2 seconds.
Spark calls the listeners through py4j, from its listener thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyspark.streaming.listener import StreamingListener

import storage
import transform

if TYPE_CHECKING:
    from job.batch import BatchStats
    from job.writer import BatchWriter

log = logging.getLogger("spark_streaming")


def _delay_ms(value: Any) -> int | None:
    """A delay from Spark's JavaBatchInfo (a long, -1 when unknown), as an int or None."""
    return int(value) if value is not None and int(value) >= 0 else None


class BatchReport:
    """What the person running the job learns of each batch, whichever engine ran it:
    one log line (the job's counts next to Spark's figures), the ``observer`` told
    (the job's Prometheus metrics) and, with a ``collection``, a ``batch_metrics``
    document."""

    def __init__(self, collection: Any = None,
                 observer: Callable[[BatchStats | None, int, int | None], None] | None = None,
                 ) -> None:
        """``observer(stats, records, processing_ms)``, if given, is told of each batch
        before its line is logged."""
        self.collection = collection
        self.observer = observer
        self._warned = False

    def line(self, stats: BatchStats | None, when: str, records: int,
             scheduling_ms: int | None, processing_ms: int | None) -> str:
        """The batch's log line: the job's summary, then Spark's figures."""
        spark = (f"Spark: {records} records, scheduling delay {scheduling_ms} ms, "
                 f"processing {processing_ms} ms")
        if stats is None:
            return f"batch {when}: not stored, see the error above; {spark}"
        return f"{stats.summary()}; {spark}"

    def record(self, stats: BatchStats | None, when: str, moment: datetime, records: int,
               scheduling_ms: int | None, processing_ms: int | None) -> None:
        if self.observer is not None:
            self.observer(stats, records, processing_ms)
        log.info(self.line(stats, when, records, scheduling_ms, processing_ms))
        if self.collection is None:
            return
        document: dict[str, Any] = {
            "_id": when, "timestamp": transform.to_utc(moment), "records": records,
            "scheduling_delay_ms": scheduling_ms, "processing_delay_ms": processing_ms,
            "stored": stats is not None,
        }
        if stats is not None:
            document.update(
                lines=stats.lines, kept=stats.kept, empty=stats.empty,
                malformed=stats.malformed, duplicates=stats.duplicates, resent=stats.resent,
                out_of_order=stats.out_of_order, total_case_count=stats.total_case_count,
                case_count_as_of=stats.case_count_as_of,
                case_count_source=stats.case_count_source,
                count_fresh=stats.count_fresh, write_ms=stats.write_ms, spooled=stats.spooled,
                deletes=stats.deletes, deleted=stats.deleted, forged=stats.forged,
                sealed_records=stats.sealed_records)
        try:
            self.collection.replace_one({"_id": when}, document, upsert=True)
        except storage.STORE_ERRORS as err:  # metrics are best effort: never spooled
            if not self._warned:
                log.warning("cannot store batch metrics: %s", err)
            self._warned = True
        else:
            self._warned = False


class BatchMetrics(StreamingListener):
    """The DStream engine's :class:`BatchReport`: Spark's own figures for each batch
    (records received, scheduling and processing delay) next to the job's counts.

    Registered as a ``StreamingListener``; Spark calls :meth:`onBatchCompleted`
    once the batch's output (``BatchWriter.process``) has finished.
    """

    def __init__(self, writer: BatchWriter, collection: Any = None,
                 observer: Callable[[BatchStats | None, int, int | None], None] | None = None,
                 ) -> None:
        super().__init__()
        self.writer = writer
        self.report = BatchReport(collection, observer)
        self.line = self.report.line
        self.record = self.report.record

    # -- StreamingListener (called by Spark through py4j)

    def onBatchCompleted(self, batch_completed: Any) -> None:  # noqa: N802 (Spark's name)
        try:
            info = batch_completed.batchInfo()
            millis = int(info.batchTime().milliseconds())
            if self.writer.refused(millis):
                return  # said once at the end (BatchWriter.log_untaken_stats)
            moment = datetime.fromtimestamp(millis / 1000, UTC)
            stats = self.writer.take_stats(millis)
            self.record(stats, transform.batch_id(moment), moment, int(info.numRecords()),
                        _delay_ms(info.schedulingDelay()), _delay_ms(info.processingDelay()))
        except Exception:  # a listener must never break Spark's event loop
            log.exception("batch metrics failed")


class ReceiverWatch(StreamingListener):
    """Says when Spark's receiver cannot read from stream.py, and when it can again.

    Spark retries a refused or lost connection every 2 s and would log a warning
    each time (silenced in conf/log4j2.properties); this says it once, with what
    to do, then once every :attr:`REPEAT_SECONDS` while it lasts, and once when
    posts arrive again.
    """

    REPEAT_SECONDS = 60.0

    def __init__(self, host: str, port: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.where = f"{host}:{port}"
        self.clock = clock
        self._waiting_since: float | None = None
        self._said_at = 0.0

    def receiver_error(self, reason: str) -> None:
        """One more failed try to read from stream.py, for ``reason``."""
        now = self.clock()
        if self._waiting_since is None:
            self._waiting_since = self._said_at = now
            log.warning("waiting for stream.py on %s (%s): start it first (python stream.py), "
                        "or check --host/--port; retrying every 2 s", self.where, reason)
        elif now - self._said_at >= self.REPEAT_SECONDS:
            self._said_at = now
            log.warning("still waiting for stream.py on %s after %.0f s (%s)", self.where,
                        now - self._waiting_since, reason)

    def records_received(self, count: int) -> None:
        """A batch completed with ``count`` records."""
        if self._waiting_since is not None and count > 0:
            log.info("stream.py on %s is sending again after %.0f s", self.where,
                     self.clock() - self._waiting_since)
            self._waiting_since = None

    # -- StreamingListener (called by Spark through py4j)

    def onReceiverStopped(self, receiver_stopped: Any) -> None:  # noqa: N802 (Spark's name)
        # a socket receiver that cannot connect, or whose connection ends, is stopped
        # and restarted 2 s later with the error in its info; a stop by the driver
        # (at the end) has no error
        try:
            info = receiver_stopped.receiverInfo()
            error = str(info.lastError() or "").strip()
            if error:
                self.receiver_error(error.splitlines()[0].replace("java.net.", ""))
        except Exception:  # a listener must never break Spark's event loop
            log.exception("receiver watch failed")

    def onBatchCompleted(self, batch_completed: Any) -> None:  # noqa: N802 (Spark's name)
        try:
            self.records_received(int(batch_completed.batchInfo().numRecords()))
        except Exception:  # a listener must never break Spark's event loop
            log.exception("receiver watch failed")
