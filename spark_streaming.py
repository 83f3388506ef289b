r"""Spark Streaming job: tweets from a TCP socket + the Covid-19 case count -> MongoDB.

Usage: spark_streaming.py [--host HOST] [--port PORT] [--batch-seconds SECONDS]
                          [--master URL] [--mongo-uri URI] [--duration SECONDS] ...

Every batch (20 s by default) this job reads the tweets that stream.py sent to
HOST:PORT, parses and cleans them on the executors, fetches the world's total
case count once on the driver and stores one document

    {"content": [cleaned tweets, in arrival order],
     "timestamp": <batch time, UTC>, "total_case_count": <int or null>}

in MongoDB (--mongo-uri / MONGODB_URI) or, without a URI, in the embedded store
at EMBEDDED_DB_PATH. Empty batches store nothing.

Run stream.py first in one terminal, then in a second one:

    python spark_streaming.py                   # 20 s batches, embedded store
    python spark_streaming.py --batch-seconds 5 --duration 60
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import config
import scrape
import storage
import transform

log = logging.getLogger("spark_streaming")

PROJECT_DIR = Path(__file__).resolve().parent
LOG4J_CONFIG = PROJECT_DIR / "conf" / "log4j2.properties"
SEEN_IDS_LIMIT = 200_000  # tweet ids remembered across batches to drop redeliveries


@dataclass(frozen=True)
class BatchStats:
    """What happened to one batch; passed to the ``on_batch`` hook."""

    batch_time: datetime
    lines: int
    kept: int
    empty: int
    malformed: int
    duplicates: int
    total_case_count: int | None = None
    count_fresh: bool = False
    write_ms: float | None = None
    document_id: str | None = None

    def summary(self) -> str:
        """The one log line of this batch."""
        when = transform.batch_id(self.batch_time)
        if not self.kept:
            return (f"batch {when}: {self.lines} lines, nothing to store "
                    f"({self.empty} empty, {self.malformed} malformed, "
                    f"{self.duplicates} duplicate)")
        count = "none" if self.total_case_count is None else f"{self.total_case_count:,}"
        age = "fresh" if self.count_fresh else "carried over"
        return (f"batch {when}: {self.lines} lines, {self.kept} kept ({self.empty} empty, "
                f"{self.malformed} malformed, {self.duplicates} duplicate), "
                f"count {count} ({age}), write {self.write_ms:.0f} ms")


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


class BatchWriter:
    """The driver's part of each batch: drop redelivered tweets, fetch the
    count once, build the document and store it.

    A fault in one batch is logged and never reaches Spark, so the stream
    goes on.
    """

    def __init__(
        self,
        store: storage.BatchStore,
        case_count: Callable[[], tuple[int | None, bool]],
        *,
        on_batch: Callable[[BatchStats], None] | None = None,
        seen_ids: RecentIds | None = None,
    ) -> None:
        self.store = store
        self.case_count = case_count
        self.on_batch = on_batch
        self.seen_ids = seen_ids or RecentIds()
        self._finished = threading.Condition()
        self._last_finished = -math.inf  # epoch seconds of the last batch handled

    def process(self, batch_time: datetime, rdd: Any) -> None:
        """``foreachRDD`` hook: collect the batch's records and write them."""
        try:
            records = rdd.collect()
            stats = self.write_records(batch_time, records)
        except Exception:  # one bad batch must not stop the stream
            log.exception("batch %s failed and was not stored", transform.batch_id(batch_time))
            return
        finally:
            with self._finished:
                self._last_finished = max(self._last_finished, batch_time.timestamp())
                self._finished.notify_all()
        log.info(stats.summary())
        if self.on_batch is not None:
            self.on_batch(stats)

    def wait_for_batch_at_or_after(self, moment: float, timeout: float) -> bool:
        """Wait until the batch whose time is ``moment`` (epoch seconds) or later
        has been handled, i.e. everything received until ``moment`` is stored.
        False if ``timeout`` seconds passed first."""
        with self._finished:
            return self._finished.wait_for(lambda: self._last_finished >= moment, timeout)

    def write_records(
        self, batch_time: datetime, records: Iterable[transform.Record]
    ) -> BatchStats:
        """Store the document of one batch of ``process_line`` results; its stats."""
        content: list[str] = []
        lines = empty = malformed = duplicates = 0
        for status, tweet_id, text in records:
            lines += 1
            if status == transform.MALFORMED:
                malformed += 1
                log.debug("malformed line skipped: %s", text)
            elif not self.seen_ids.add(tweet_id):
                duplicates += 1
            elif status == transform.EMPTY:
                empty += 1
            else:
                content.append(text)
        stats = BatchStats(batch_time, lines, len(content), empty, malformed, duplicates)
        if not content:
            return stats
        count, fresh = self.case_count()
        document = transform.build_document(batch_time, content, count)
        started = time.perf_counter()
        self.store.write(document)
        write_ms = (time.perf_counter() - started) * 1000
        return BatchStats(batch_time, lines, len(content), empty, malformed, duplicates,
                          count, fresh, write_ms, document["_id"])


# --- Spark ---------------------------------------------------------------------


def start_spark(settings: config.Settings, **extra_conf: str) -> Any:
    """A SparkContext for the job: the master, quiet logs, ``transform.py`` shipped.

    ``extra_conf`` adds Spark properties (tests turn the UI off).
    """
    from pyspark import SparkConf, SparkContext

    if settings.master.startswith("local"):
        # the driver and the receiver stay on this machine: no hostname look-up warning
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    conf = (
        SparkConf()
        .setMaster(settings.master)
        .setAppName("covid19-live-stream")
        .set("spark.ui.showConsoleProgress", "false")
        .set("spark.driver.extraJavaOptions",
             f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}")
    )
    for key, value in extra_conf.items():
        conf.set(key, value)
    spark_context = SparkContext(conf=conf)
    spark_context.setLogLevel("WARN")
    # executors import transform (process_line) from here, not from the driver's folder
    spark_context.addPyFile(str(PROJECT_DIR / "transform.py"))
    return spark_context


def create_context(settings: config.Settings, writer: BatchWriter, spark_context: Any) -> Any:
    """The whole streaming graph: socket lines -> process_line -> writer.process."""
    from pyspark import StorageLevel
    from pyspark.streaming import StreamingContext

    # received blocks are replicated to a second executor only where there is one
    level = (StorageLevel.MEMORY_AND_DISK if settings.master.startswith("local")
             else StorageLevel.MEMORY_AND_DISK_2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DStream is deprecated", category=FutureWarning)
        ssc = StreamingContext(spark_context, settings.batch_seconds)
    lines = ssc.socketTextStream(settings.host, settings.port, storageLevel=level)
    lines.map(transform.process_line).foreachRDD(writer.process)
    return ssc


def run_until_stopped(
    ssc: Any, writer: BatchWriter, settings: config.Settings, stop: threading.Event
) -> None:
    """Run ``ssc`` until ``settings.duration`` has passed or ``stop`` is set, then
    stop it once the batch in flight (the one holding the tweets received until
    then) is stored. Spark's own graceful stop would wait two more batches."""
    ssc.start()
    deadline = None if settings.duration is None else time.monotonic() + settings.duration
    while not stop.is_set():
        wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
        if wait <= 0:
            break
        if ssc.awaitTerminationOrTimeout(wait):
            return  # it died; awaitTermination has raised the reason if there was one
    stop_at = time.time()
    if not writer.wait_for_batch_at_or_after(stop_at, settings.batch_seconds * 3 + 30):
        log.warning("the batch in flight did not finish in time; stopping anyway")
    ssc.stop(stopSparkContext=True, stopGraceFully=False)


def _java_missing() -> bool:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return False
    return shutil.which("java") is None


def main(argv: list[str] | None = None) -> int:
    settings = config.load_settings(
        "spark_streaming.py", config.SPARK_OPTIONS, argv, description=__doc__
    )
    config.configure_logging(settings)
    if _java_missing():
        raise SystemExit(
            "spark_streaming.py: error: Java 17 is needed by Spark and was not found; "
            "install it (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    try:
        store = storage.open_store(settings)
    except storage.StoreError as err:
        raise SystemExit(f"spark_streaming.py: error: {err}") from None
    log.info("storing batches in %s", store.description)
    log.info("reading tweets from %s:%d, %g s batches, master %s, case count from %s",
             settings.host, settings.port, settings.batch_seconds, settings.master,
             settings.worldometer_url)
    counter = scrape.CaseCounter(settings.worldometer_url, settings.scrape_timeout)
    writer = BatchWriter(store, counter.current)
    ssc = create_context(settings, writer, start_spark(settings))

    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again: stopping now; tweets of unfinished batches are not stored",
                        name)
            raise SystemExit(130)
        log.info("%s received: stopping once the batch in flight is stored (within %g s); "
                 "send it again to stop at once", name, settings.batch_seconds)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        run_until_stopped(ssc, writer, settings, stop)
    finally:
        counter.close()
        store.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
