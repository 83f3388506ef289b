"""The structured engine: the same job on Structured Streaming, in this process's Spark
or through a Spark Connect server.

The graph, as ``spark_streaming.create_context`` builds the DStream one::

    spark.readStream.format("covid_producer")      # job.producer_source, by seq
         .load()                                    # parsed and cleaned in read()
         .writeStream.foreachBatch(sink)            # job.structured_sink -> BatchWriter
         .trigger(processingTime=BATCH_SECONDS)
         .option("checkpointLocation", CHECKPOINT_PATH)

:class:`ProgressAcks` listens to Spark's progress events: once one says a batch
is done, Spark's commit log holds it, and only then is the producer told it may
forget it (``ack``), so nothing Spark may run again is trimmed (the source also
acknowledges when Spark asks past a batch, :mod:`job.producer_source`). It also
logs the batch's line. :class:`StructuredJob` starts the query, starts it again
after a batch failed (Spark then runs that batch again, from its checkpoint), and
stops it between batches: ``query.stop()`` during a Spark job inside
``foreachBatch`` ended in a StackOverflowError in Spark's stream thread
(docs/engines.md). So a stop first has the source plan no new batch (a marker file
beside the checkpoint, which its ``latestOffset`` looks for), waits until no
trigger is active (the batch in flight stored and committed), and only then stops
the query. :func:`run_here` and :func:`run_remote` are the two ways to run it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pyspark.sql.streaming.listener import StreamingQueryListener

import config
import control
import control_reads
import transform
from job import producer_source, shipping, spark_setup
from job.batch import BatchStats
from job.listeners import BatchReport
from job.producer_source import Offset
from job.structured_sink import BatchSink, one_line
from job.writer import BatchWriter
from startup import StartupError

log = logging.getLogger("spark_streaming")

QUERY_NAME = "covid19-live-stream"
#: Pauses before a query that failed is started again: doubling from the first.
RESTART_FIRST, RESTART_MOST = 5.0, 60.0
#: How often the job asks for stream.py while it waits for it at start.
WAIT_FOR_PRODUCER_SECONDS = 2.0


def wait_for_producer(settings: config.Settings, secret: bytes, stop: threading.Event,
                      ) -> control_reads.JournalStatus | None:
    """Where stream.py's journal stands, once its control port answers; None if ``stop``
    is set first. Says once that it waits. Raises StartupError when stream.py holds
    another control secret."""
    client = control_reads.ReadClient(settings.host, settings.ack_port, secret)
    said = False
    try:
        while not stop.is_set():
            try:
                return client.status()
            except control.WrongSecretError as err:
                raise StartupError(str(err)) from None
            except (OSError, control.ProtocolError) as err:
                if not said:
                    log.warning("waiting for stream.py on %s:%d (%s): start it first (python "
                                "stream.py), or check --host/--ack-port; retrying every %g s",
                                settings.host, settings.ack_port, one_line(err) or "no answer",
                                WAIT_FOR_PRODUCER_SECONDS)
                said = True
                stop.wait(WAIT_FOR_PRODUCER_SECONDS)
        return None
    finally:
        client.close()


class ProgressAcks(StreamingQueryListener):
    """Spark's word that a batch is done (its progress event comes once the commit log
    holds it): the producer is told it may forget the batch's seqs, and the batch's
    line is logged.

    With a ``sink`` (Spark in this process) the line is the DStream engine's, from the
    batch's stats (:class:`job.listeners.BatchReport`); through Spark Connect the sink
    runs on the server, whose log has that line, and this one says what Spark says.
    ``on_run(records, processing_ms)`` is told of each batch then.
    """

    def __init__(self, acks: control.ControlClient, report: BatchReport,
                 sink: BatchSink | None = None,
                 on_run: Callable[[int, int | None], None] | None = None) -> None:
        super().__init__()
        self.acks = acks
        self.report = report
        self.sink = sink
        self.on_run = on_run
        self._lock = threading.Lock()  # the control client is used from two threads
        self._acked: dict[str, int] = {}
        self._changed = threading.Condition()
        self._done_ms = 0  # the time of the last batch Spark reported done
        self._events = 0

    def acknowledge(self, progress: Any) -> Offset | None:
        """Tell the producer everything up to ``progress``'s end offset is stored (once
        per seq); the offset, None if the progress has none."""
        sources = getattr(progress, "sources", None) or []
        if not sources or not sources[0].endOffset:
            return None
        end = Offset.parse(json.loads(sources[0].endOffset))
        with self._lock:
            if end.seq > self._acked.get(end.src, -1):
                self.acks.send({end.src: end.seq}, {})
                self._acked[end.src] = end.seq
        return end

    @property
    def done_ms(self) -> int:
        """The time of the last batch Spark reported done (0 before the first)."""
        with self._changed:
            return self._done_ms

    def wait_for_batch(self, batch_ms: int, timeout: float) -> bool:
        """Wait until Spark has reported the batch of time ``batch_ms`` (or a later one)
        done; False after ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self._done_ms >= batch_ms, timeout)

    def wait_for_next(self, timeout: float) -> bool:
        """Wait for the next progress event (or the query's end); False after ``timeout``."""
        with self._changed:
            seen = self._events
            return self._changed.wait_for(lambda: self._events > seen, timeout)

    def _batch(self, progress: Any) -> None:
        end = self.acknowledge(progress)
        if end is None or not end.ms:
            return  # no batch, or the query's first, up to where it started: empty
        moment = datetime.fromtimestamp(end.ms / 1000, UTC)
        when = transform.batch_id(moment)
        records = int(progress.numInputRows)
        durations = progress.durationMs or {}
        processing = durations.get("triggerExecution")
        log.debug("batch %d: Spark's phases (ms): %s", progress.batchId,
                  ", ".join(f"{name} {ms}" for name, ms in sorted(durations.items())))
        started = _epoch_ms(progress.timestamp)
        scheduling = None if started is None else max(0, started - end.ms)
        if self.sink is not None:
            stats = self.sink.take_stats(end.ms) or BatchStats(moment, records, 0, 0, 0, 0)
            self.report.record(stats, when, moment, records, scheduling, processing)
        else:
            log.info("batch %s: %d lines, stored by the Spark Connect server (its log has the "
                     "batch's own line); Spark: %d records, scheduling delay %s ms, processing "
                     "%s ms", when, records, records, scheduling, processing)
            if self.on_run is not None:
                self.on_run(records, processing)
        with self._changed:
            self._done_ms = max(self._done_ms, end.ms)

    # -- StreamingQueryListener (called by Spark: py4j's thread, or Connect's listener bus)

    def onQueryStarted(self, event: Any) -> None:  # noqa: N802 (Spark's names)
        pass

    def onQueryProgress(self, event: Any) -> None:  # noqa: N802
        try:
            self._batch(event.progress)
        except Exception:  # a listener must never break Spark's event loop
            log.exception("the batch's progress could not be handled")
        finally:
            with self._changed:
                self._events += 1
                self._changed.notify_all()

    def onQueryIdle(self, event: Any) -> None:  # noqa: N802
        if self.sink is None:
            return
        try:
            self.sink.idle()  # Spark says so every 10 s while no post comes
        except Exception:  # a listener must never break Spark's event loop
            log.exception("the spool could not be written while idle")

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802
        with self._changed:
            self._events += 1
            self._changed.notify_all()


def _epoch_ms(stamp: Any) -> int | None:
    """Milliseconds since the epoch of a progress's ``timestamp`` (ISO 8601, ``Z``)."""
    try:
        return round(datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
                     .timestamp() * 1000)
    except ValueError:
        return None


class StructuredJob:
    """The query on ``spark`` (classic or Spark Connect), started again after a failed
    batch, stopped between batches.

    ``sink`` is ``foreachBatch``'s function: a :class:`BatchSink` here, or what the
    Connect server runs (:class:`job.shipping.ShippedSink`), in which case
    ``local_sink`` is None and the stop waits for Spark's report of the batch in flight.
    """

    def __init__(self, spark: Any, settings: config.Settings, secret: bytes, archive: bytes,
                 listener: ProgressAcks, sink: Callable[[Any, int], None],
                 local_sink: BatchSink | None, delivered: dict[str, int],
                 parallelism: int) -> None:
        self.spark = spark
        self.settings = settings
        self.listener = listener
        self.sink = sink
        self.local_sink = local_sink
        # a streaming query cannot use it, and Spark says so at every start otherwise
        spark.conf.set("spark.sql.adaptive.enabled", "false")
        shipping.register()
        spark.dataSource.register(shipping.source_class(archive, secret))
        spark.streams.addListener(listener)
        batch_ms = max(1, round(settings.batch_seconds * 1000))
        rate = spark_setup.receiver_rate(settings.receiver_max_rate, settings.batch_seconds)
        #: beside the checkpoint, on the machine that plans the batches (not over Connect)
        self.stop_marker = (None if settings.remote else settings.checkpoint_path.absolute()
                            .with_name(settings.checkpoint_path.name + ".stopping"))
        self.options = producer_source.options_for(
            settings.host, settings.ack_port, batch_ms, round(rate * settings.batch_seconds),
            parallelism, settings.post_fields, delivered,
            str(self.stop_marker) if self.stop_marker else "")

    def start(self) -> Any:
        """Start the query (from its checkpoint, if it has one)."""
        if self.stop_marker is not None:
            self.stop_marker.unlink(missing_ok=True)  # left by a job killed while stopping
        frame = (self.spark.readStream.format(shipping.SOURCE_NAME)
                 .options(**self.options).load())
        return (frame.writeStream.foreachBatch(self.sink)
                .queryName(QUERY_NAME)
                .option("checkpointLocation", str(self.settings.checkpoint_path.absolute()))
                .trigger(processingTime=f"{round(self.settings.batch_seconds * 1000)} "
                                        "milliseconds")
                .start())

    def run_until_stopped(self, stop: threading.Event) -> None:
        """Run the query until ``settings.duration`` has passed or ``stop`` is set, then
        stop it between batches. A query that ends with an error (a batch that could
        not be stored, say) is started again after a pause: Spark runs that batch again."""
        deadline = (None if self.settings.duration is None
                    else time.monotonic() + self.settings.duration)
        wake = threading.Event()
        threading.Thread(target=lambda: (stop.wait(), wake.set()), name="stop-watch",
                         daemon=True).start()
        try:
            self._run(stop, wake, deadline)
        finally:
            with contextlib.suppress(Exception):  # before the session goes (Connect warns)
                self.spark.streams.removeListener(self.listener)

    def _run(self, stop: threading.Event, wake: threading.Event, deadline: float | None
             ) -> None:
        pause = RESTART_FIRST
        while True:
            done_before = self.listener.done_ms
            query = self.start()
            log.info("%s query running: a batch every %g s while posts come", QUERY_NAME,
                     self.settings.batch_seconds)
            threading.Thread(target=_await_end, args=(query, wake), name="query-end",
                             daemon=True).start()
            wake.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            wake.clear()
            if stop.is_set() or query.isActive or (
                    deadline is not None and time.monotonic() >= deadline):
                self.stop_calmly(query)
                return
            error = query.exception()
            if error is None:
                return
            if self.listener.done_ms > done_before:  # it ran batches: not the same failure
                pause = RESTART_FIRST
            log.error("the query stopped (%s); starting it again in %g s, from its "
                      "checkpoint: Spark runs the batch that failed again",
                      one_line(error), pause)
            if stop.wait(pause):
                return
            pause = min(pause * 2, RESTART_MOST)

    def stop_calmly(self, query: Any) -> None:
        """Stop ``query`` between batches, then acknowledge the last batch Spark did."""
        patience = self.settings.batch_seconds * 3 + 30
        if self.stop_marker is not None:
            self.stop_marker.parent.mkdir(parents=True, exist_ok=True)
            self.stop_marker.touch()  # from the next trigger on, no new batch
            try:
                if not _until(lambda: not _trigger_active(query), patience):
                    log.warning("the batch in flight did not finish in time; stopping anyway")
                if self.local_sink is not None:  # its line: Spark's report of it comes last
                    self.listener.wait_for_batch(self.local_sink.last_stored_ms, patience)
                with contextlib.suppress(Exception):  # already ended by itself
                    query.stop()
            finally:
                self.stop_marker.unlink(missing_ok=True)
        else:  # over Spark Connect every stop was clean, even within a batch (engines.md)
            with contextlib.suppress(Exception):  # a server gone: nothing to wait for
                if _trigger_active(query):
                    self.listener.wait_for_next(patience)
            with contextlib.suppress(Exception):
                query.stop()
        with contextlib.suppress(Exception):
            self.listener.acknowledge(query.lastProgress)


#: How often a stop looks whether the query's trigger is still active.
STOP_CHECK_SECONDS = 0.1


def _trigger_active(query: Any) -> bool:
    return bool(query.isActive and query.status.get("isTriggerActive"))


def _until(done: Callable[[], bool], timeout: float) -> bool:
    """Look at ``done()`` every STOP_CHECK_SECONDS until it holds; False after ``timeout``
    (Spark has no event for "no trigger active": its status is what says so)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(STOP_CHECK_SECONDS)
    return True


def _await_end(query: Any, wake: threading.Event) -> None:
    with contextlib.suppress(Exception):  # the query's error is read by the caller
        query.awaitTermination()
    wake.set()


# --- the two ways to run it ------------------------------------------------------------------


def run_here(settings: config.Settings, spark_context: Any, writer: BatchWriter,
             acks: control.ControlClient, report: BatchReport, delivered: dict[str, int],
             secret: bytes, stop: threading.Event, started: threading.Event,
             check_stop: Callable[[], None]) -> None:
    """The structured engine on this process's Spark (``spark_context``): ``writer`` stores
    each batch here, ``report`` logs its line. Returns once stopped."""
    from pyspark.sql import SparkSession

    spark = SparkSession(spark_context)
    if wait_for_producer(settings, secret, stop) is None:
        check_stop()
    sink = BatchSink(writer)
    listener = ProgressAcks(acks, report, sink)
    job = StructuredJob(spark, settings, secret, shipping.archive(spark_setup.PROJECT_DIR),
                        listener, sink, sink, delivered, spark_context.defaultParallelism)
    check_stop()
    started.set()
    job.run_until_stopped(stop)


def run_remote(settings: config.Settings, acks: control.ControlClient,
               on_run: Callable[[int, int | None], None], delivered: dict[str, int],
               secret: bytes, stop: threading.Event, started: threading.Event,
               resources: contextlib.ExitStack, check_stop: Callable[[], None]) -> None:
    """The structured engine through the Spark Connect server at ``settings.remote``: the
    source and ``foreachBatch`` (store, case count, writer) run there, shipped
    (:mod:`job.shipping`); this process acknowledges and logs each batch. Raises
    StartupError when the server cannot be reached."""
    assert settings.remote is not None
    check_connect_server(settings.remote)
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(settings.remote).getOrCreate()
    resources.callback(spark.stop)
    check_stop()
    if wait_for_producer(settings, secret, stop) is None:
        check_stop()
    archive = shipping.archive(spark_setup.PROJECT_DIR)
    sink = shipping.ShippedSink(archive, pickle.dumps((settings, secret)))
    listener = ProgressAcks(acks, BatchReport(), on_run=on_run)
    job = StructuredJob(spark, settings, secret, archive, listener, sink, None, delivered,
                        REMOTE_PARALLELISM)
    check_stop()
    started.set()
    job.run_until_stopped(stop)


#: Parts a batch is cut in on a Spark Connect server (the client cannot ask its cores).
REMOTE_PARALLELISM = 2
#: How long the job tries to reach the Spark Connect server at start.
CONNECT_TIMEOUT = 5.0


def check_connect_server(url: str) -> None:
    """StartupError (one line) unless something listens at ``url``'s host and port:
    pyspark's own client would retry for minutes."""
    netloc = url[len("sc://"):].partition("/")[0].partition(";")[0]
    host, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "15002")
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT).close()
    except OSError as err:
        raise StartupError(
            f"cannot reach the Spark Connect server at {url}: {err.strerror or err}; start one "
            "(make connect-server, docs/engines.md) or check --remote / SPARK_REMOTE") from None
