"""The benchmark's Spark driver: the bare receiver or the full pipeline.

Run by bench/run.py as its own process (so that the driver, its JVM and the
Python workers are measured together, apart from the producer):

    python -m bench.job bare --port P [--ack-port A --ack-source SRC] [--batch-seconds S]
    python -m bench.job full -- --port P --ack-port A --batch-seconds S ...  # its flags

``full`` is ``spark_streaming.main()`` itself, the job a user runs, given its
own flags (ports, page URL, store and spool paths, ``--engine``, ...) after
``--``. Two hooks are added around it and nothing else changes: the store
``storage.open_store`` opens is wrapped so that each document written also
reports how long its tweets took from the producer (their send time is in their
text, see bench.tweets), and every batch is reported: on DStreams by a
StreamingListener that ``create_context`` also registers, on Structured
Streaming from the batch's line (``BatchReport.record``: Spark's progress for it).
SIGTERM stops it the way it stops for a user.

``bare`` is ``socketTextStream`` with each batch only counted in the JVM
(``rdd._jrdd.count()``): the receiver's ceiling, no Python on the executors.
So that both jobs share the same producer (journal, tweets held until
acknowledged), it acknowledges what it counted, as the full job acknowledges
what it stored: the producer numbers its tweets 1, 2, ... in order. Without
``--ack-port`` it acknowledges nothing (fed by bench.plain, the ceiling).

Both print JSON lines on stdout: ``started``; ``batch`` per completed batch
(records, scheduling/processing/total delay in ms, from the listener);
``stored`` per document written (full: when, how many tweets, a sample of
their latencies in ms) or ``counted`` per batch (bare).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import warnings
from typing import Any

from pyspark import StorageLevel
from pyspark.streaming import StreamingContext
from pyspark.streaming.listener import StreamingListener

import config
import control
import spark_streaming
import storage
from bench.tweets import stamp_of
from job import spark_setup
from job.listeners import BatchReport
from storage import spool

LATENCY_SAMPLES_PER_WRITE = 2_000


class Output:
    """JSON lines on stdout, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "t": time.time(), **fields}, default=str)
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


OUT = Output()


class BatchListener(StreamingListener):
    """Reports every completed batch: what Spark's UI shows per batch."""

    def onBatchCompleted(self, batchCompleted: Any) -> None:  # noqa: N802, N803 - Spark's names
        info = batchCompleted.batchInfo()
        OUT.emit(
            "batch",
            batch_ms=info.batchTime().milliseconds(),
            records=info.numRecords(),
            scheduling_delay_ms=info.schedulingDelay(),
            processing_delay_ms=info.processingDelay(),
            total_delay_ms=info.totalDelay(),
        )


class TimingStore:
    """The real store, plus: how long ago were the tweets just stored sent?"""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def apply(self, operation: spool.Operation) -> int:
        """The store's one write (DurableStore applies every operation through it): a
        batch document is timed once it is written."""
        result = self._inner.apply(operation)
        if operation.kind == spool.DOCUMENT:
            self._report(operation.body)
        return result

    def _report(self, document: dict[str, Any]) -> None:
        now = time.time()
        texts = document["content"]
        step = max(1, len(texts) // LATENCY_SAMPLES_PER_WRITE)
        latencies = []
        for text in texts[::step]:
            sent = stamp_of(text)
            if sent is not None:
                latencies.append(round((now - sent) * 1000, 1))
        OUT.emit("stored", tweets=len(texts), latencies_ms=latencies,
                 document_id=document.get("_id"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def run_full(argv: list[str]) -> int:
    """spark_streaming.main(argv), measured."""
    open_store, create_context = storage.open_store, spark_streaming.create_context

    def timed_open_store(settings: config.Settings) -> Any:
        return TimingStore(open_store(settings))

    def listened_create_context(*args: Any, **kwargs: Any) -> Any:
        ssc = create_context(*args, **kwargs)
        ssc.addStreamingListener(BatchListener())
        OUT.emit("started")
        return ssc

    record = BatchReport.record

    def reported_record(report: BatchReport, stats: Any, when: str, moment: Any, records: int,
                        scheduling_ms: int | None, processing_ms: int | None) -> None:
        record(report, stats, when, moment, records, scheduling_ms, processing_ms)
        if not dstream:  # the StreamingListener above reports the DStream engine's
            OUT.emit("batch", batch_ms=round(moment.timestamp() * 1000), records=records,
                     scheduling_delay_ms=scheduling_ms or 0,
                     processing_delay_ms=processing_ms or 0,
                     total_delay_ms=(scheduling_ms or 0) + (processing_ms or 0))

    dstream = "structured" not in argv
    storage.open_store = timed_open_store
    spark_streaming.create_context = listened_create_context
    BatchReport.record = reported_record  # type: ignore[method-assign]
    if not dstream:
        OUT.emit("started")
    return spark_streaming.main(argv)


def run_bare(args: argparse.Namespace) -> int:
    """socketTextStream -> count each batch in the JVM and acknowledge it, nothing else."""
    settings = config.Settings(host="127.0.0.1", port=args.port, master=args.master,
                               batch_seconds=args.batch_seconds,
                               receiver_max_rate=args.receiver_max_rate)
    spark_context = spark_setup.start_spark(settings)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DStream is deprecated", category=FutureWarning)
        ssc = StreamingContext(spark_context, settings.batch_seconds)
    lines = ssc.socketTextStream(settings.host, settings.port,
                                 storageLevel=StorageLevel.MEMORY_AND_DISK)
    acks = None
    if args.ack_port is not None:
        secret = control.load_secret(None, settings.control_secret_path)
        acks = control.ControlClient(settings.host, args.ack_port, secret)
    counted = 0

    def count(batch_time: Any, rdd: Any) -> None:
        nonlocal counted
        lines_in_batch = rdd._jrdd.count()
        counted += lines_in_batch
        if lines_in_batch and acks is not None:
            acks.send({args.ack_source: counted}, {})
        OUT.emit("counted", lines=lines_in_batch)

    lines.foreachRDD(count)
    ssc.addStreamingListener(BatchListener())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ssc.start()
    OUT.emit("started")
    while not stop.wait(0.5):
        pass
    ssc.stop(stopSparkContext=True, stopGraceFully=False)
    if acks is not None:
        acks.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "full":
        rest = argv[1:]
        return run_full(rest[1:] if rest[:1] == ["--"] else rest)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("bare",))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ack-port", type=int, help="acknowledge each batch's count here")
    parser.add_argument("--ack-source", default="", help="the producer's source id")
    parser.add_argument("--batch-seconds", type=float, default=2.0)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--receiver-max-rate", type=int,
                        default=config.Settings().receiver_max_rate, help="0 = no cap")
    return run_bare(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
