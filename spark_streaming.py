r"""Spark Streaming job: tweets from a TCP socket + the Covid-19 case count -> MongoDB.

Usage: spark_streaming.py [--host HOST] [--port PORT] [--batch-seconds SECONDS]
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
at EMBEDDED_DB_PATH. Empty batches store nothing.

Run stream.py first in one terminal, then in a second one:

    python spark_streaming.py                   # 20 s batches, embedded store
    python spark_streaming.py --case-source who  # WHO's count, still updated
    python spark_streaming.py --batch-seconds 5 --duration 60
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import case_series
import config
import control
import metrics
import scrape
import spark_setup
import storage
import transform
from listeners import BatchMetrics, ReceiverWatch
from stopping import install_stop_handlers

log = logging.getLogger("spark_streaming")

METRICS_COLLECTION = "batch_metrics"
RECEIVERS = 1  # socketTextStream's receiver holds one task slot for good
#: The most lines a batch's blocks are merged into one task for: one task's result is
#: held whole in the JVM's heap, and a merged batch of 760,740 lines (20 s batches at
#: 40,000/s in make bench) lost its result and then ran the 2 GiB heap out
ONE_TASK_MAX_LINES = 100_000
#: the same where the receiver leaves several task slots free (local[3], a cluster): a
#: busier batch runs its blocks side by side
ONE_TASK_MAX_LINES_SIDE_BY_SIDE = 20_000
SEEN_IDS_LIMIT = 200_000  # tweet ids remembered across batches to drop redeliveries
#: How long a second stop signal waits for its log line before the job exits anyway.
SAY_SECONDS = 2.0


@dataclass(frozen=True)
class BatchStats:
    """What happened to one batch; passed to the ``on_batch`` hook."""

    batch_time: datetime
    lines: int
    kept: int
    empty: int
    malformed: int
    duplicates: int  # tweet ids seen before (a source delivered a tweet twice)
    total_case_count: int | None = None
    count_fresh: bool = False
    write_ms: float | None = None
    document_id: str | None = None
    parts: int = 0  # documents written (more than one only past 16 MB)
    spooled: bool = False  # the store was down: the documents wait in the spool
    out_of_order: int = 0  # sequenced tweets after a gap, dropped until resent
    resent: int = 0  # tweets the producer sent again that were handled already
    case_count_as_of: datetime | None = None  # the moment the count is for
    case_count_source: str | None = None  # "worldometers" or "who"

    def summary(self) -> str:
        """The one log line of this batch."""
        when = transform.batch_id(self.batch_time)
        dropped = (f"{self.empty} empty, {self.malformed} malformed, "
                   f"{self.duplicates} duplicate")
        if self.resent:
            dropped += f", {self.resent} resent"
        if self.out_of_order:
            dropped += f", {self.out_of_order} after a gap"
        if not self.kept:
            return f"batch {when}: {self.lines} lines, nothing to store ({dropped})"
        where = "spooled (store down)" if self.spooled else "write"
        parts = f" in {self.parts} parts" if self.parts > 1 else ""
        return (f"batch {when}: {self.lines} lines, {self.kept} kept ({dropped}), "
                f"count {self.count_text()}, {where}{parts} {self.write_ms:.0f} ms")

    @property
    def reading(self) -> scrape.CaseCount:
        """The case count this batch was stored with."""
        return scrape.CaseCount(self.total_case_count, self.case_count_as_of,
                                self.case_count_source, self.count_fresh)

    def count_text(self) -> str:
        """``704,753,890 (worldometers, as of 2024-04-13, fresh)``."""
        return self.reading.describe()


class RecentIds:
    """The last ``limit`` tweet ids seen, oldest forgotten first."""

    def __init__(self, limit: int = SEEN_IDS_LIMIT) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, tweet_id: str) -> bool:
        """Remember ``tweet_id``; False if it was already there."""
        if tweet_id in self._ids:
            return False
        self._ids[tweet_id] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)
        return True

    def forget(self, tweet_ids: Iterable[str]) -> None:
        """Undo :meth:`add` for ``tweet_ids`` (their batch was not stored)."""
        for tweet_id in tweet_ids:
            self._ids.pop(tweet_id, None)


class Quarantine:
    """Malformed lines kept with their reason in a JSON-lines file, up to ``max_bytes``."""

    MAX_BYTES = 10 * 1024 * 1024

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.not_kept = 0  # malformed lines past the size bound

    def add(self, batch_time: datetime, records: Iterable[transform.Record]) -> None:
        size = self.path.stat().st_size if self.path.exists() else 0
        entries = []
        for record in records:
            entry = json.dumps({"batch": transform.batch_id(batch_time), "reason": record.text,
                                "line": record.raw}) + "\n"
            if size + len(entry) > self.max_bytes:
                self.not_kept += 1
                continue
            size += len(entry)
            entries.append(entry)
        if entries:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.writelines(entries)


class BatchWriter:
    """The driver's part of each batch: drop what was already stored, fetch
    the count once, build the document(s), store them, acknowledge.

    A fault in one batch is logged and never reaches Spark, so the stream
    goes on; its tweets are not acknowledged, so the producer sends them again.
    """

    def __init__(
        self,
        store: storage.DurableStore,
        case_count: Callable[[], scrape.CaseCount],
        *,
        on_batch: Callable[[BatchStats], None] | None = None,
        seen_ids: RecentIds | None = None,
        delivery: control.Delivery | None = None,
        acks: control.ControlClient | None = None,
        quarantine: Quarantine | None = None,
        max_content_bytes: int = transform.MAX_CONTENT_BYTES,
        post_fields: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.case_count = case_count
        self.on_batch = on_batch
        self.seen_ids = seen_ids or RecentIds()
        self.delivery = delivery or control.Delivery()
        self.acks = acks
        self.quarantine = quarantine
        self.max_content_bytes = max_content_bytes
        #: the post fields stored as each document's posts (empty: none)
        self.post_fields = tuple(post_fields)
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
        or the same fields as plain tuples); its stats."""
        content: list[str] = []
        # (source, seq, post fields) of each text
        marks: list[tuple[str | None, int | None, dict[str, Any] | None]] = []
        malformed: list[transform.Record] = []
        new_ids: list[str] = []
        lines = empty = duplicates = resent = out_of_order = 0
        admit, remember = self.delivery.admit, self.seen_ids.add
        self.delivery.begin()
        try:
            for record in records:
                status, tweet_id, text, seq, source, _, post = record
                lines += 1
                if status == transform.MALFORMED:
                    malformed.append(transform.Record._make(record))
                    continue
                if seq is not None and source is not None:
                    verdict = admit(source, seq)
                    if verdict != control.NEW:
                        resent += verdict == control.RESENT
                        out_of_order += verdict == control.GAP
                        continue
                if not remember(tweet_id):
                    duplicates += 1
                    continue
                new_ids.append(tweet_id)
                if status == transform.EMPTY:
                    empty += 1
                    continue
                content.append(text)
                marks.append((source, seq, post))
            stats = BatchStats(batch_time, lines, len(content), empty, len(malformed),
                               duplicates, out_of_order=out_of_order, resent=resent)
            if content:
                reading = self.case_count()
                documents = self._documents(batch_time, content, marks, reading)
                started = time.perf_counter()
                stored = self.store.write(documents)
                stats = replace(stats, total_case_count=reading.total,
                                count_fresh=reading.fresh, case_count_as_of=reading.as_of,
                                case_count_source=reading.source,
                                write_ms=(time.perf_counter() - started) * 1000,
                                document_id=documents[0]["_id"], parts=len(documents),
                                spooled=not stored)
            else:
                progress = self.delivery.batch_committed()
                # an idle or duplicate-only batch still moves the producers on: record
                # it, so that a restarted job does not take it for a gap
                if progress and not self.store.record_progress(progress):
                    raise storage.StoreUnavailableError(
                        "cannot record how far this batch got (the store is down)")
                self.store.drain()  # an idle moment to write what the spool holds
        except BaseException:
            self.seen_ids.forget(new_ids)  # not stored: let the resent tweets in
            self.delivery.abort()
            raise
        acks, resends = self.delivery.commit()
        if self.quarantine is not None and malformed:
            try:
                self.quarantine.add(batch_time, malformed)
            except OSError as err:  # the batch is stored: only the copies are lost
                log.warning("batch %s: cannot keep its %d malformed line(s) in %s: %s",
                            transform.batch_id(batch_time), len(malformed),
                            self.quarantine.path, err.strerror or err)
        if self.acks is not None:
            # every batch, empty ones too, repeats where each producer stands: an ack
            # lost on the way (the producer restarted) is made good by the next one
            self.delivery.held(self.acks.send(acks, resends))
        return stats

    def _documents(
        self,
        batch_time: datetime,
        content: list[str],
        marks: list[tuple[str | None, int | None, dict[str, Any] | None]],
        reading: scrape.CaseCount,
    ) -> list[dict[str, Any]]:
        """The batch's document, or its parts when it would pass 16 MB; each
        part records how far it takes each producer's sequence and, with post
        fields, has the posts of its texts."""
        posts = None
        if self.post_fields:
            empty = dict.fromkeys(self.post_fields)
            posts = [dict(empty) if post is None else post for _, _, post in marks]
        parts = transform.split_content(content, self.max_content_bytes, posts)
        documents, start = [], 0
        final = self.delivery.batch_committed()
        for number, part in enumerate(parts, start=1):
            document = transform.build_document(
                batch_time, part, reading.total, reading.as_of, reading.source,
                None if posts is None else posts[start:start + len(part)])
            document["_id"] = transform.part_id(batch_time, number)
            if len(parts) > 1:
                document["part"] = {"number": number, "of": len(parts)}
            reached: dict[str, int] = {}
            if number == len(parts):
                reached = final
            else:
                for source, seq, _ in marks[start:start + len(part)]:
                    if source is not None and seq is not None:
                        reached[source] = max(seq, reached.get(source, seq))
            if reached:
                document["delivery"] = [{"source": source, "last_seq": seq}
                                        for source, seq in sorted(reached.items())]
            documents.append(document)
            start += len(part)
        return documents


# --- Spark ---------------------------------------------------------------------


def one_task_a_batch(spark_context: Any, lines_of: Callable[[datetime], int | None]
                     ) -> Callable[[datetime, Any], Any]:
    """What ``transform`` does to each batch's RDD before the Python work: its received
    blocks (one per block interval) merged, without a shuffle, into one partition, so
    that the batch is one task, when it has at most ONE_TASK_MAX_LINES lines
    (ONE_TASK_MAX_LINES_SIDE_BY_SIDE where the receiver leaves several task slots
    free); ``lines_of(batch time)`` says how many, or None (then it is left alone).

    Each partition is a task, and a task costs ~10-50 ms of scheduling and a Python
    worker's round trip whatever it holds: a 20 s batch of a trickle was 20 tasks of
    a post or two each. Spark's coalescer keeps the blocks in their order only when
    it makes one partition (its one group starts at the first block, the rest are
    added in order); spread over several groups they would come out of their order,
    so a bigger batch keeps a task per block. (The slots are read per batch: on a
    cluster, executors can join after the start.)
    """
    def merge(batch_time: datetime, rdd: Any) -> Any:
        lines = lines_of(batch_time)  # ~1 ms a batch: asked also where nothing is merged
        if rdd is None or lines is None or rdd.getNumPartitions() <= 1:
            return rdd
        limit = (ONE_TASK_MAX_LINES if spark_context.defaultParallelism - RECEIVERS <= 1
                 else ONE_TASK_MAX_LINES_SIDE_BY_SIDE)
        return rdd.coalesce(1) if lines <= limit else rdd
    return merge


def received_lines(ssc: Any) -> Callable[[datetime], int | None]:
    """How many lines ``ssc``'s receivers took for the batch of a given time, from
    Spark's own record of each batch's input (reported before the batch's RDDs are
    made); None if Spark cannot say (its tracker is internal to Spark: a version
    without it only loses the merge)."""
    from py4j.protocol import Py4JError

    def lines_of(batch_time: datetime) -> int | None:
        try:
            jvm_time = ssc._sc._jvm.org.apache.spark.streaming.Time(
                round(batch_time.timestamp() * 1000))
            infos = ssc._jssc.ssc().scheduler().inputInfoTracker().getInfo(jvm_time)
            found, total = infos.valuesIterator(), 0
            while found.hasNext():
                total += found.next().numRecords()
            return total
        except (Py4JError, AttributeError) as err:  # another Spark or pyspark
            log.debug("cannot read the batch's input size from Spark: %s", err)
            return None
    return lines_of


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


def run_until_stopped(
    ssc: Any, writer: BatchWriter, settings: config.Settings, stop: threading.Event
) -> None:
    """Run ``ssc`` until ``settings.duration`` has passed or ``stop`` is set, then
    stop it once the batch in flight (the one holding the tweets received until
    then) is stored. Spark's own graceful stop would wait two more batches."""
    ssc.start()
    ended: list[Exception | None] = []  # the context ended by itself: why, or None

    def await_end() -> None:
        # blocks in the JVM until the context ends (no wake-up a second to look at
        # ``stop``): a context that dies wakes the wait below through ``stop``
        try:
            ssc.awaitTermination()
            ended.append(None)
        except Exception as err:  # noqa: BLE001 -- raised again on the caller's thread
            ended.append(err)
        stop.set()

    threading.Thread(target=await_end, name="spark-context-end", daemon=True).start()
    stop.wait(settings.duration)
    if ended:
        if ended[0] is not None:
            raise ended[0]
        return  # it ended without an error
    stop_at = time.time()
    patience = settings.batch_seconds * 3 + 30
    if not writer.wait_for_batch_at_or_after(stop_at, patience):
        log.warning("the batch in flight did not finish in time; stopping anyway")
    if not writer.finish(patience):
        log.warning("a later batch did not finish in time; stopping anyway")
    ssc.stop(stopSparkContext=True, stopGraceFully=False)
    writer.log_untaken_stats()


class StoppedWhileStartingError(Exception):
    """A stop signal arrived while the job was starting (nothing was started yet)."""


def _say_stopping_now(name: str) -> None:
    log.warning("%s again: stopping now; the tweets of unfinished batches stay in "
                "stream.py's journal and are sent again", name)
    logging.shutdown()


def main(argv: list[str] | None = None) -> int:
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
    log.info("stopped")
    return 0


def run_job(settings: config.Settings, stop: threading.Event, started: threading.Event,
            resources: contextlib.ExitStack) -> None:
    """Open the store, the case count and Spark, then run batches until ``stop``.

    Each resource is registered on ``resources`` as soon as it exists, and
    ``stop`` is checked after every step of start-up (raising StoppedWhileStartingError), so
    a Ctrl-C at any moment leaves nothing running. Errors are SystemExit lines.
    """

    def check_stop() -> None:
        if stop.is_set():
            raise StoppedWhileStartingError

    if spark_setup.java_missing():
        raise SystemExit(
            "spark_streaming.py: error: Java 17 is needed by Spark and was not found; "
            "install it (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    try:
        secret = control.load_secret(settings.control_secret, settings.control_secret_path)
    except control.ControlError as err:
        raise SystemExit(f"spark_streaming.py: error: {err}") from None
    try:
        store = storage.open_store(settings)
    except storage.StoreError as err:
        raise SystemExit(f"spark_streaming.py: error: {err}") from None
    resources.callback(store.close)
    check_stop()
    durable = storage.DurableStore(store, storage.Spool(settings.spool_path))
    exporter = metrics.JobMetrics(durable)
    try:
        endpoint = metrics.serve(exporter.registry, settings.metrics_port)
    except metrics.MetricsError as err:
        raise SystemExit(f"spark_streaming.py: error: {err}") from None
    if endpoint is not None:
        resources.callback(endpoint.close)
    log.info("storing batches in %s", store.description)
    if durable.spooled:
        log.info("the spool %s holds %d document(s) from an earlier run: writing them first",
                 settings.spool_path, durable.spooled)
        durable.drain()
    delivered = durable.delivered()
    if delivered:
        log.info("already stored, by producer: %s",
                 ", ".join(f"{source} up to seq {seq}" for source, seq in delivered.items()))
    log.info("reading tweets from %s:%d (control port %d), %g s batches, master %s, "
             "case count from %s (%s)", settings.host, settings.port, settings.ack_port,
             settings.batch_seconds, settings.master, settings.case_source,
             settings.who_url if settings.case_source == "who" else settings.worldometers_url)
    series = case_series.of_store(store) if settings.case_series == "on" else None
    counter = scrape.open_counter(settings, series=series)
    resources.callback(counter.close)
    # the first batch has a count, and a stale one is said at start
    exporter.count_read(counter.start())
    check_stop()
    acks = control.ControlClient(settings.host, settings.ack_port, secret)
    resources.callback(acks.close)
    writer = BatchWriter(durable, counter.current, delivery=control.Delivery(delivered),
                         acks=acks, quarantine=Quarantine(settings.quarantine_path),
                         post_fields=settings.post_fields)
    keep_metrics = settings.batch_metrics == "on" or (
        settings.batch_metrics == "auto" and not settings.mongo_uri)
    try:
        spark_context = spark_setup.start_spark(settings)
    except KeyboardInterrupt:  # SparkContext's own SIGINT handler, before we took it back
        raise StoppedWhileStartingError from None
    finally:
        # SparkContext installs a SIGINT handler of its own (cancel every job, raise
        # KeyboardInterrupt): SIGINT is a stop request here, like SIGTERM
        signal.signal(signal.SIGINT, signal.getsignal(signal.SIGTERM))
    resources.callback(spark_context.stop)  # a no-op once the streaming context stopped it
    check_stop()
    ssc = create_context(settings, writer, spark_context,
                         store.sibling(METRICS_COLLECTION) if keep_metrics else None,
                         exporter.batch_completed)
    check_stop()  # nothing runs yet: a stop now still needs no batch
    started.set()
    run_until_stopped(ssc, writer, settings, stop)


if __name__ == "__main__":
    sys.exit(main())
