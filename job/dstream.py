"""What the DStream engine adds around the shared batch path: each batch made one
task where that is cheaper, and a stop once the batch in flight is stored.

``spark_streaming.create_context`` builds the graph; these are its parts that
know about Spark's DStream internals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import config
from job.writer import BatchWriter

log = logging.getLogger("spark_streaming")

RECEIVERS = 1  # socketTextStream's receiver holds one task slot for good
#: The most lines a batch's blocks are merged into one task for: one task's result is
#: held whole in the JVM's heap, and a merged batch of 760,740 lines (20 s batches at
#: 40,000/s in make bench) lost its result and then ran the 2 GiB heap out
ONE_TASK_MAX_LINES = 100_000
#: the same where the receiver leaves several task slots free (local[3], a cluster): a
#: busier batch runs its blocks side by side
ONE_TASK_MAX_LINES_SIDE_BY_SIDE = 20_000


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
