r"""Spark Streaming job: tweets from a TCP socket + the Covid-19 case count -> MongoDB.

Usage: spark_streaming.py [--host HOST] [--port PORT] [--batch-seconds SECONDS]
                          [--engine {dstream,structured}] [--remote sc://HOST:PORT]
                          [--master URL] [--mongo-uri URI] [--duration SECONDS]
                          [--metrics-port PORT] ...

Every batch (20 s by default) this job reads the tweets that stream.py sent to
HOST:PORT, parses and cleans them on the executors, gets the world's total
case count on the driver (--case-source: worldometers once a batch, or WHO's
daily file at most once an hour) and stores one document

    {"content": [cleaned tweets, in arrival order],
     "timestamp": <batch time, UTC>, "total_case_count": <int or null>,
     "case_count_as_of": <the date the count is for, or null>,
     "case_count_source": "worldometers" | "who" | null}

in MongoDB (--mongo-uri / MONGODB_URI) or, without a URI, in the embedded store
at EMBEDDED_DB_PATH (each document also keeps its posts' keys, docs/data-model.md).
Empty batches store nothing. A post its author deleted is removed from the store
(unless --keep-deleted), and what the producer says of its own reading (coverage,
gaps, the keywords in force) is kept beside the batches.

Two engines run the same job (docs/engines.md): DStreams, the default, whose
receiver reads the tweet socket; or --engine structured, Structured Streaming,
whose source reads stream.py's journal by sequence number on its control port,
in this process's Spark or, with --remote sc://HOST:PORT, through a Spark
Connect server.

Run stream.py first in one terminal, then in a second one:

    python spark_streaming.py                   # 20 s batches, embedded store
    python spark_streaming.py --case-source who  # WHO's count, still updated
    python spark_streaming.py --batch-seconds 5 --duration 60
    python spark_streaming.py --engine structured                       # Structured Streaming
    python spark_streaming.py --engine structured --remote sc://127.0.0.1:15002
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import config
import control
import metrics
import scrape
import storage
import transform
from job import spark_setup, structured
from job.batch import BatchStats, Quarantine
from job.delivery import Delivery
from job.dstream import one_task_a_batch, received_lines, run_until_stopped
from job.listeners import BatchMetrics, BatchReport, ReceiverWatch
from job.structured_sink import RangeDelivery
from job.writer import BatchWriter
from startup import StartupError, program
from stopping import install_stop_handlers
from storage import case_series, ledger

T = TypeVar("T")

log = logging.getLogger("spark_streaming")

METRICS_COLLECTION = "batch_metrics"
#: How long a second stop signal waits for its log line before the job exits anyway.
SAY_SECONDS = 2.0


def create_context(
    settings: config.Settings,
    writer: BatchWriter,
    spark_context: Any,
    metrics_collection: Any = None,
    observer: Callable[[BatchStats | None, int, int | None], None] | None = None,
) -> Any:
    """The whole streaming graph: socket lines -> process_line -> writer.process,
    a :class:`BatchMetrics` listener (storing into ``metrics_collection`` if given,
    telling ``observer`` of each batch) and a :class:`ReceiverWatch` that says when
    stream.py cannot be reached."""
    from pyspark import StorageLevel
    from pyspark.streaming import StreamingContext

    # received blocks are replicated to a second executor only where there is one
    level = (StorageLevel.MEMORY_AND_DISK if settings.master.startswith("local")
             else StorageLevel.MEMORY_AND_DISK_2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DStream is deprecated", category=FutureWarning)
        ssc = StreamingContext(spark_context, settings.batch_seconds)
    lines = ssc.socketTextStream(settings.host, settings.port, storageLevel=level)
    lines.transform(one_task_a_batch(spark_context, received_lines(ssc))).mapPartitions(
        transform.partition_processor(settings.post_fields)).foreachRDD(writer.process)
    ssc.addStreamingListener(BatchMetrics(writer, metrics_collection, observer))
    ssc.addStreamingListener(ReceiverWatch(settings.host, settings.port))
    writer.metrics_attached = True
    return ssc


class StoppedWhileStartingError(Exception):
    """A stop signal arrived while the job was starting (nothing was started yet)."""


def unless_stopped(call: Callable[[], T], stop: threading.Event) -> T:
    """``call()``, run in a thread of its own, or StoppedWhileStartingError as soon as
    ``stop`` is set, whichever comes first (the call is then left to end by itself:
    it must hold nothing the program needs to stop). What it raises is raised here."""
    outcome: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()

    def run() -> None:
        try:
            outcome.put((True, call()))
        except BaseException as err:  # noqa: BLE001 -- raised again on the caller's thread
            outcome.put((False, err))

    def watch() -> None:
        stop.wait()
        outcome.put((False, StoppedWhileStartingError()))

    if stop.is_set():
        raise StoppedWhileStartingError
    threading.Thread(target=run, name="while-starting", daemon=True).start()
    threading.Thread(target=watch, name="stop-while-starting", daemon=True).start()
    done, value = outcome.get()
    if not done:
        raise value
    return value


def _say_stopping_now(name: str) -> None:
    log.warning("%s again: stopping now; the tweets of unfinished batches stay in "
                "stream.py's journal and are sent again", name)
    logging.shutdown()


@program("spark_streaming.py")
def main(argv: list[str] | None = None) -> int:
    """Run the job until it is stopped; the exit status (a start-up failure is one line
    and status 1, a bad setting status 2)."""
    settings = config.load_settings(
        "spark_streaming.py", config.SPARK_OPTIONS, argv, description=__doc__
    )
    config.configure_logging(settings)
    stop = threading.Event()
    started = threading.Event()  # set once batches run: a stop then waits for one

    def on_signal(signum: int, count: int) -> None:
        name = signal.Signals(signum).name
        if count > 1:
            # said if it can be: a log line blocks while stderr is stuck (a terminal's
            # Ctrl-S, a full pipe), and this is the way out then
            said = threading.Thread(target=_say_stopping_now, args=(name,), daemon=True)
            said.start()
            said.join(SAY_SECONDS)
            os._exit(130)  # the JVM and its workers end when their pipe from us closes
        if started.is_set():
            log.info("%s received: stopping once the batch in flight is stored (within %g s); "
                     "send it again to stop at once", name, settings.batch_seconds)
        else:
            log.info("%s received while starting: stopping before the first batch", name)

    restore = install_stop_handlers(stop, [], on_signal)
    try:
        with contextlib.ExitStack() as resources:
            try:
                run_job(settings, stop, started, resources)
            except StoppedWhileStartingError:
                log.info("stopped before the first batch")
                return 0
    finally:
        restore()
        stop.set()  # the program is ending: whatever waits for a stop returns
    log.info("stopped")
    return 0


def _ledger_state(store: storage.BatchStore, durable: storage.DurableStore,
                  exporter: metrics.JobMetrics) -> dict[str, dict[str, Any]]:
    """The keyword set in force for each producer, and the gaps of the last 24 h given
    to the metrics: what the ledger holds (and the spool, waiting for it). A store that
    fails here only delays them: the producer's next records bring them again."""
    try:
        filters, gaps = ledger.load_state(store, durable.spool.operations())
    except storage.STORE_ERRORS as err:
        log.warning("cannot read the coverage ledger and keyword sets (%s): batches name "
                    "no keyword set until the producer sends its own again", err)
        return {}
    exporter.gaps.add(gaps)
    if filters:
        log.info("keyword sets in force: %s", "; ".join(
            f"{producer}: {_filter_text(found)}" for producer, found in filters.items()))
    return filters


def _filter_text(found: dict[str, Any]) -> str:
    """``bluesky keywords covid, covid19`` or ``twitter rules covid-tag``."""
    if "keywords" in found:
        return f"{found['source']} keywords {', '.join(map(str, found['keywords']))}"
    tags = [str(rule.get("tag") or rule.get("value")) for rule in found.get("rules") or ()]
    return f"{found['source']} rules {', '.join(tags)}"


def run_job(settings: config.Settings, stop: threading.Event, started: threading.Event,
            resources: contextlib.ExitStack) -> None:
    """Open the store, the case count and Spark, then run batches until ``stop``, on the
    engine the settings name: DStreams (:func:`create_context`), or Structured
    Streaming in this process or through a Spark Connect server (:mod:`job.structured`).

    Each resource is registered on ``resources`` as soon as it exists, and
    ``stop`` is checked after every step of start-up (raising StoppedWhileStartingError), so
    a Ctrl-C at any moment leaves nothing running; a step that can take long (the first
    case count) is left behind as soon as ``stop`` is set. What is missing to start
    is a StartupError.
    """

    def check_stop() -> None:
        if stop.is_set():
            raise StoppedWhileStartingError

    if not settings.remote and spark_setup.java_missing():
        raise StartupError(
            "Java 17 is needed by Spark and was not found; "
            "install it (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    try:
        secret = control.load_secret(settings.control_secret, settings.control_secret_path)
    except control.ControlError as err:
        raise StartupError(str(err)) from None
    durable = open_durable_store(settings, resources)
    check_stop()
    exporter = metrics.JobMetrics(None if settings.remote else durable)
    try:
        endpoint = metrics.serve(exporter.registry, settings.metrics_port)
    except metrics.MetricsError as err:
        raise StartupError(str(err)) from None
    if endpoint is not None:
        resources.callback(endpoint.close)
    delivered = durable.delivered() if durable is not None else {}
    if delivered:
        log.info("already stored, by producer: %s",
                 ", ".join(f"{source} up to seq {seq}" for source, seq in delivered.items()))
    filters = (_ledger_state(durable.store, durable, exporter) if durable is not None
               else {})
    if settings.keep_deleted:
        log.warning("KEEP_DELETED is on: posts whose authors deleted them stay stored "
                    "(docs/configuration.md says why not to)")
    say_what_runs(settings)
    acks = control.ControlClient(settings.host, settings.ack_port, secret)
    resources.callback(acks.close)
    if settings.remote:  # the server stores the batches: this process acknowledges them
        if durable is not None:
            durable.store.close()
        structured.run_remote(settings, acks, exporter.batch_run, delivered, secret, stop,
                              started, resources, check_stop)
        return
    assert durable is not None
    series = (case_series.of_store(durable.store) if settings.case_series == "on"
              else None)
    counter = scrape.open_counter(settings, series=series)
    resources.callback(counter.close)
    # the first batch has a count, and a stale one is said at start; the download
    # (WHO's can take a minute) is not waited for once a stop is asked
    exporter.count_read(unless_stopped(counter.start, stop))
    dstream = settings.engine == "dstream"
    writer = BatchWriter(durable, counter.current,
                         delivery=Delivery(delivered) if dstream else RangeDelivery(),
                         acks=acks if dstream else None,  # structured: once Spark commits
                         quarantine=Quarantine(settings.quarantine_path),
                         post_fields=settings.post_fields, secret=secret, filters=filters,
                         keep_deleted=settings.keep_deleted)
    keep_metrics = settings.batch_metrics == "on" or (
        settings.batch_metrics == "auto" and not settings.mongo_uri)
    metrics_collection = durable.store.sibling(METRICS_COLLECTION) if keep_metrics else None
    spark_context = start_spark(settings)
    resources.callback(spark_context.stop)  # a no-op once the streaming context stopped it
    check_stop()
    if not dstream:
        report = BatchReport(metrics_collection, exporter.batch_completed)
        structured.run_here(settings, spark_context, writer, acks, report, delivered, secret,
                            stop, started, check_stop)
        return
    ssc = create_context(settings, writer, spark_context, metrics_collection,
                         exporter.batch_completed)
    check_stop()  # nothing runs yet: a stop now still needs no batch
    started.set()
    run_until_stopped(ssc, writer, settings, stop)


def open_durable_store(settings: config.Settings, resources: contextlib.ExitStack
                       ) -> storage.DurableStore | None:
    """The store (checked to be reachable) and its spool, what the spool holds written
    first; StartupError when the store cannot be used. Through Spark Connect the server
    writes, and may reach a store that this machine cannot: None then."""
    try:
        store = storage.open_store(settings)
    except storage.StoreError as err:
        if not settings.remote:
            raise StartupError(str(err)) from None
        log.warning("%s; the Spark Connect server stores the batches: going on", err)
        return None
    resources.callback(store.close)
    durable = storage.DurableStore(store, storage.Spool(settings.spool_path))
    log.info("storing batches in %s%s", store.description,
             f", through the Spark Connect server at {settings.remote}" if settings.remote
             else "")
    if durable.spooled and not settings.remote:
        log.info("the spool %s holds %d document(s) from an earlier run: writing them first",
                 settings.spool_path, durable.spooled)
        durable.drain()
    return durable


def say_what_runs(settings: config.Settings) -> None:
    """The start-up line: where the posts come from, the engine, the count's source."""
    count_url = settings.who_url if settings.case_source == "who" else settings.worldometers_url
    count_from = f"{settings.case_source} ({count_url})"
    if settings.engine == "dstream":
        log.info("reading tweets from %s:%d (control port %d), %g s batches, master %s, "
                 "case count from %s", settings.host, settings.port, settings.ack_port,
                 settings.batch_seconds, settings.master, count_from)
        return
    spark = (f"Spark Connect {settings.remote}" if settings.remote
             else f"master {settings.master}")
    log.info("reading posts from stream.py's journal on %s:%d (structured engine, checkpoint "
             "%s), %g s batches, %s, case count from %s", settings.host, settings.ack_port,
             settings.checkpoint_path, settings.batch_seconds, spark, count_from)


def start_spark(settings: config.Settings) -> Any:
    """Spark in this process (:func:`job.spark_setup.start_spark`), a Ctrl-C while it
    starts being a stop request."""
    try:
        return spark_setup.start_spark(settings)
    except KeyboardInterrupt:  # SparkContext's own SIGINT handler, before we took it back
        raise StoppedWhileStartingError from None
    finally:
        # SparkContext installs a SIGINT handler of its own (cancel every job, raise
        # KeyboardInterrupt): SIGINT is a stop request here, like SIGTERM
        signal.signal(signal.SIGINT, signal.getsignal(signal.SIGTERM))


if __name__ == "__main__":
    sys.exit(main())
