"""How the job's SparkContext is made: the master, the heap, the block interval,
Spark's logging, and a JVM in a session of its own whose stderr is passed on."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import config

PROJECT_DIR = Path(__file__).resolve().parents[1]
LOG4J_CONFIG = PROJECT_DIR / "conf" / "log4j2.properties"
BLOCK_INTERVAL_MIN_MS = 200  # Spark's default block interval
BLOCK_INTERVAL_MAX_MS = 1_000  # a block is held in the JVM's heap until it is full
#: the JVM's heap unless SPARK_DRIVER_MEMORY says otherwise: a batch costs it ~1 KB a
#: tweet (received blocks, results collected), and Spark's default of 1 GiB ran out
#: at a batch of ~1,000,000 tweets in make bench
DRIVER_MEMORY = "2g"
#: What the JVM prints on every start that says nothing to the user (Spark 4 asks for
#: the vector module itself); the rest of its stderr is passed through as it comes.
HARMLESS_JVM_LINES = (b"WARNING: Using incubator modules: jdk.incubator.vector",)


#: The most lines the receiver takes for one batch (RECEIVER_MAX_RATE is lowered to fit
#: it for long batches): with 20 s batches at 50,000/s, batches of 1,000,000 lines
#: took ~24 s each on 2 cores, queued up, and ran the 2 GiB heap out (make bench, after
#: a backlog); 500,000 (25,000/s) is about what 20 s batches keep up with there.
BATCH_MAX_LINES = 500_000


def receiver_rate(receiver_max_rate: int, batch_seconds: float) -> int:
    """The receiver's cap in lines a second (``spark.streaming.receiver.maxRate``):
    RECEIVER_MAX_RATE, or less where a batch would hold more than BATCH_MAX_LINES;
    0 (no cap) only when RECEIVER_MAX_RATE is 0."""
    if not receiver_max_rate:
        return 0
    return max(1, min(receiver_max_rate, int(BATCH_MAX_LINES / batch_seconds)))


def block_interval_ms(batch_seconds: float) -> int:
    """Spark's block interval for batches of ``batch_seconds``: a quarter of a batch,
    within [BLOCK_INTERVAL_MIN_MS, BLOCK_INTERVAL_MAX_MS]."""
    quarter = round(batch_seconds * 1000 / 4)
    return max(BLOCK_INTERVAL_MIN_MS, min(BLOCK_INTERVAL_MAX_MS, quarter))


def start_spark(settings: config.Settings, **extra_conf: str) -> Any:
    """A SparkContext for the job: the master, quiet logs, ``transform.py`` (and
    ``wire_records.py``, which it imports) shipped.

    ``extra_conf`` adds Spark properties (tests turn the UI off).
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    if settings.master.startswith("local"):
        # the driver and the receiver stay on this machine: no hostname look-up warning
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers run this interpreter (the virtualenv's), not whatever is on PATH
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf = (
        SparkConf()
        .setMaster(settings.master)
        .setAppName("covid19-live-stream")
        .set("spark.ui.showConsoleProgress", "false")
        # each received block is one Python task (~50 ms of overhead each here): four
        # per batch instead of Spark's default of one every 200 ms, but at most a
        # second's worth (20 s batches: 20), which the receiver keeps in the JVM's heap
        # until it is full
        .set("spark.streaming.blockInterval", f"{block_interval_ms(settings.batch_seconds)}ms")
        .set("spark.driver.extraJavaOptions",
             f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}")
    )
    rate = receiver_rate(settings.receiver_max_rate, settings.batch_seconds)
    if rate:
        # a backlog (after the job was down) is taken at most this fast, so that a batch
        # fits the heap; the rest waits in stream.py's journal, on disk. (Spark's
        # backpressure, tried, undershot: with 20 s batches at 28,300 tweets/s its
        # estimate let in ~19,000/s, though batches took 15.5 s of their 20)
        conf.set("spark.streaming.receiver.maxRate", str(rate))
    # Spark's own variable wins, and so does --driver-memory in PYSPARK_SUBMIT_ARGS
    # (a JVM started by spark-submit has its heap already)
    if not os.environ.get("SPARK_DRIVER_MEMORY"):
        conf.set("spark.driver.memory", DRIVER_MEMORY)
    for key, value in extra_conf.items():
        conf.set(key, value)
    # The JVM gets a session of its own: a terminal's Ctrl-C (or a signal to our whole
    # process group) then reaches only this process, which stops once the batch in
    # flight is stored, instead of killing the JVM and its Python workers under that
    # batch. The JVM still ends with us: it exits when its stdin pipe from us closes.
    gateway = None
    if SparkContext._gateway is None:  # one JVM per process
        gateway = launch_gateway(
            conf, popen_kwargs={"start_new_session": True, "stderr": subprocess.PIPE})
        threading.Thread(target=forward_jvm_errors, args=(gateway.proc.stderr,),
                         name="jvm-stderr", daemon=True).start()
    spark_context = SparkContext(conf=conf, gateway=gateway)
    spark_context.setLogLevel("WARN")
    # executors import transform (process_line) from here, not from the driver's folder
    for module in ("wire_records.py", "transform.py"):  # transform imports wire_records
        spark_context.addPyFile(str(PROJECT_DIR / module))
    return spark_context


def forward_jvm_errors(stream: IO[bytes], to: IO[bytes] | None = None) -> None:
    """Copy the JVM's stderr (Spark's log lines) to ours, line by line, without the
    lines in :data:`HARMLESS_JVM_LINES`; returns when the JVM closes it.

    A line that cannot be written (no stderr, a terminal that is gone, a full
    non-blocking pipe) is lost, not the ones after it."""
    with stream:
        for line in stream:
            if line.startswith(HARMLESS_JVM_LINES):
                continue
            out = to if to is not None else getattr(sys.stderr, "buffer", None)
            if out is None:
                continue
            with contextlib.suppress(OSError, ValueError):  # ValueError: stderr closed
                out.write(line)
                out.flush()


def java_missing() -> bool:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return False
    return shutil.which("java") is None


