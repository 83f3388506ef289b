"""The structured engine's source: stream.py's journal, read by seq on its control channel.

What Spark's ``DataSourceStreamReader`` asks, answered from the producer (through
:class:`job.shipping.ShippedReader`, which Spark pickles):

* an offset is ``{"src": the producer's id, "seq": the last seq of the batch,
  "ms": the batch's time}``. A producer with a new journal has a new id: the
  next batch reads the new journal from its start;
* ``initialOffset`` (a query with no checkpoint yet): the newest of what the
  producer has been told is stored (the seq before the first it holds) and what
  the store records as delivered, so that a new checkpoint (or a switch from the
  DStream engine) takes nothing twice;
* ``latestOffset``: what the producer has journaled (``committed``), at most
  ``max_rows`` past the start; the same offset back while nothing is new, so that
  an idle stream runs no batch, and once the job is stopping (its stop marker).
  Its ``ms`` is the trigger's time, rounded down to the batch interval (as a
  DStream batch time), later than the last batch's: Spark keeps the offset in its
  checkpoint, so a batch run again after a crash has the same time, and its
  documents the same ``_id``;
* ``partitions``: the range cut in at most ``parallelism`` parts of at least
  ROWS_PER_TASK seqs; ``read``: exactly that range (:mod:`control_reads`), parsed
  and cleaned as the DStream engine's executors do (:mod:`transform`), as Arrow
  batches (:mod:`job.rows`). A producer away or restarting is waited for (up to
  READ_PATIENCE seconds), and the read goes on after the last seq it had;
* acknowledgements: a batch is acknowledged (the producer may forget its seqs)
  only once Spark's commit log holds it, so nothing Spark may run again is ever
  trimmed. ``commit`` comes one batch late and never while idle; but Spark asks
  ``latestOffset(start)`` only once the batch that ended at ``start`` is in the
  commit log, at every trigger, idle or not: the source acknowledges ``start``
  there. That also covers a job killed after Spark committed its last batch and
  before it was acknowledged (the restarted query starts from it). The job
  acknowledges sooner too, on Spark's progress event and at a stop
  (:class:`job.structured.ProgressAcks`); ``commit`` does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql.datasource import InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows

import control
import control_reads
import transform
from job import rows

log = logging.getLogger("spark_streaming")

#: A batch is cut in parts (tasks that run side by side) of at least this many seqs.
ROWS_PER_TASK = 2_000
#: How long ``read`` waits for a producer that cannot be reached before its task fails.
READ_PATIENCE = 60.0
#: Pauses between tries to reach the producer in ``read``: doubling from the first.
RETRY_FIRST, RETRY_MOST = 0.1, 2.0


@dataclass(frozen=True)
class Offset:
    """Where a batch ends: the producer's id, its last seq, its time (ms since the epoch)."""

    src: str
    seq: int
    ms: int

    @classmethod
    def parse(cls, value: dict[str, Any]) -> Offset:
        return cls(str(value["src"]), int(value["seq"]), int(value["ms"]))

    def as_dict(self) -> dict[str, Any]:
        return {"src": self.src, "seq": self.seq, "ms": self.ms}


def options_for(host: str, port: int, batch_ms: int, max_rows: int, parallelism: int,
                post_fields: tuple[str, ...], delivered: dict[str, int],
                stop_marker: str = "") -> dict[str, str]:
    """The source's options, as ``spark.readStream.options(**...)`` takes them.
    ``stop_marker``: a file whose presence means the job is stopping (no new batch)."""
    return {"host": host, "port": str(port), "batch_ms": str(batch_ms),
            "max_rows": str(max_rows), "parallelism": str(parallelism),
            "post_fields": ",".join(post_fields), "delivered": json.dumps(delivered),
            "stop_marker": stop_marker}


def batch_time(now_ms: int, batch_ms: int, after_ms: int) -> int:
    """The time of a batch planned at ``now_ms``: rounded down to ``batch_ms``, and later
    than ``after_ms`` (the batch before), so that no two batches share a time."""
    aligned = now_ms - now_ms % batch_ms
    return aligned if aligned > after_ms else after_ms + batch_ms


class ProducerReader:
    """The stream reader's work (see the module's docstring); one per process, made
    from the source's options and the control secret."""

    def __init__(self, options: dict[str, str], secret: bytes) -> None:
        self.host = options["host"]
        self.port = int(options["port"])
        self.batch_ms = int(options["batch_ms"])
        self.max_rows = int(options.get("max_rows", "0"))
        self.parallelism = max(1, int(options.get("parallelism", "1")))
        self.post_fields = tuple(name for name in options.get("post_fields", "").split(",")
                                 if name)
        self.delivered: dict[str, int] = json.loads(options.get("delivered", "{}"))
        self.stop_marker = options.get("stop_marker", "")
        self.secret = secret
        self._client: control_reads.ReadClient | None = None  # the planner's connection
        self._unreachable: str | None = None  # why the producer could not be asked, as said
        self._acked: dict[str, int] = {}  # the highest seq acknowledged, per producer

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _status(self) -> control_reads.JournalStatus:
        if self._client is None:
            self._client = control_reads.ReadClient(self.host, self.port, self.secret)
        return self._client.status()

    # -- planning (in the Python process Spark's JVM starts for the query)

    def initial_offset(self) -> dict[str, Any]:
        status = self._status()  # the job waited for the producer before it started
        done = self.delivered.get(status.source, 0)
        seq = min(status.committed, max(status.first - 1, done))
        return Offset(status.source, seq, 0).as_dict()

    def latest_offset(self, start: dict[str, Any], limit: ReadLimit) -> dict[str, Any]:
        begin = Offset.parse(start)
        try:
            status = self._status()
        except (OSError, control.ProtocolError) as err:
            self._say_unreachable(err)
            return start  # nothing new until it answers
        if self._unreachable is not None:
            log.info("stream.py's control port %s answers again", self.where)
            self._unreachable = None
        self._acknowledge(begin)
        if status.source == begin.src:
            base = begin.seq
        else:
            base = status.first - 1
            log.warning("stream.py has a new journal (producer %s, was %s): reading it from "
                        "seq %d", status.source, begin.src, status.first)
        end = status.committed
        if isinstance(limit, ReadMaxRows):
            end = min(end, base + max(1, limit.max_rows))
        if (status.source == begin.src and end <= begin.seq) or self._stopping():
            return start
        now_ms = int(time.time() * 1000)
        return Offset(status.source, end, batch_time(now_ms, self.batch_ms, begin.ms)).as_dict()

    def _stopping(self) -> bool:
        """The job is stopping: Spark plans no more batch, so that it can be stopped
        between batches (see :meth:`job.structured.StructuredJob.stop_calmly`)."""
        return bool(self.stop_marker) and os.path.exists(self.stop_marker)

    def _acknowledge(self, committed: Offset) -> None:
        """Spark asks for the latest offset after ``committed`` only once the batch that
        ended there is in its commit log: tell the producer (once per seq; a lost
        acknowledgement is repeated at the next trigger)."""
        if committed.seq <= self._acked.get(committed.src, 0):
            return
        assert self._client is not None
        try:
            self._client.ack(committed.src, committed.seq)
        except (OSError, control.ProtocolError) as err:
            self._say_unreachable(err)
            return
        self._acked[committed.src] = committed.seq

    def default_read_limit(self) -> ReadLimit:
        return ReadMaxRows(self.max_rows) if self.max_rows > 0 else ReadAllAvailable()

    def partitions(self, start: dict[str, Any], end: dict[str, Any]) -> list[InputPartition]:
        begin, finish = Offset.parse(start), Offset.parse(end)
        first = begin.seq + 1 if begin.src == finish.src else 1  # a new journal: all of it
        count = finish.seq - first + 1
        if count <= 0:
            return []
        parts = max(1, min(self.parallelism, count // ROWS_PER_TASK))
        size, extra = divmod(count, parts)
        found, seq = [], first
        for number in range(parts):
            last = seq + size - 1 + (number < extra)
            found.append(InputPartition((finish.src, seq, last, finish.ms)))
            seq = last + 1
        return found

    def commit(self, end: dict[str, Any]) -> None:
        """Nothing: see the module's docstring (acknowledged once the commit log holds it)."""

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _say_unreachable(self, err: BaseException) -> None:
        reason = str(err) or type(err).__name__
        if self._unreachable is None:
            log.warning("cannot ask stream.py's control port %s where its journal stands "
                        "(%s): no batch until it answers", self.where, reason)
        self._unreachable = reason
        self.stop()

    # -- reading (in Spark's Python workers)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        """The partition's seqs, parsed and cleaned, as Arrow batches in seq order."""
        source, first, last, batch_ms = partition.value
        process = transform.partition_processor(self.post_fields)
        client = control_reads.ReadClient(self.host, self.port, self.secret)
        wanted, pause, failing_since = first, RETRY_FIRST, None
        try:
            while wanted <= last:
                try:
                    for chunk in client.read(source, wanted, last):
                        wanted, failing_since, pause = chunk.last + 1, None, RETRY_FIRST
                        if chunk.lines:
                            yield rows.to_batch(list(process(chunk.lines)), batch_ms)
                except control.WrongSecretError:
                    raise
                except (OSError, control.ProtocolError, control_reads.RangeNotHeldError) as err:
                    now = time.monotonic()
                    failing_since = now if failing_since is None else failing_since
                    if now - failing_since >= READ_PATIENCE:
                        raise control_reads.RangeNotHeldError(
                            f"cannot read seqs {wanted}..{last} of producer {source} from "
                            f"{self.where} for {READ_PATIENCE:g} s: {err}") from None
                    time.sleep(pause)
                    pause = min(pause * 2, RETRY_MOST)
        finally:
            client.close()
