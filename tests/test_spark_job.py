"""The Spark job on a real StreamingContext: a fake socket feeds it, mongomock stores."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import SimpleNamespace

import mongomock
import pymongo.errors
import pytest

import config
import scrape
import spark_streaming
import storage
import transform
from job import dstream, spark_setup
from job.batch import BatchStats, Quarantine, RecentIds
from job.dstream import received_lines
from job.writer import BatchWriter

COUNT = 704_753_890
AS_OF = datetime(2024, 4, 13, tzinfo=UTC)
READING = scrape.CaseCount(COUNT, AS_OF, "worldometers", fresh=True)
TEST_WAIT_SECONDS = 120
BATCH_WAIT_SECONDS = 60


def tweet(tweet_id: str, text: str) -> bytes:
    return json.dumps({"id": tweet_id, "text": text, "lang": "en"}).encode() + b"\n"


@pytest.fixture
def store() -> storage.BatchStore:
    collection = mongomock.MongoClient(tz_aware=True).covid19.tweet_batches
    return storage.BatchStore(collection, "mongomock")


@pytest.fixture
def durable(store, tmp_path) -> storage.DurableStore:
    return storage.DurableStore(store, storage.Spool(tmp_path / "spool.jsonl"),
                                retry_delays=(0.01,))


class MetricsCollection:
    """Stands in for the batch_metrics collection; a test can await its documents."""

    def __init__(self) -> None:
        self.documents: queue.Queue[dict] = queue.Queue()

    def replace_one(self, _filter: dict, document: dict, upsert: bool) -> None:
        self.documents.put(document)


class JobRun:
    """A StreamingContext with 1 s batches on the shared SparkContext."""

    def __init__(self, spark_context, port: int, writer: BatchWriter) -> None:
        self.batches: queue.Queue[BatchStats] = queue.Queue()
        self.metrics = MetricsCollection()
        writer.on_batch = self.batches.put
        settings = config.Settings(host="127.0.0.1", port=port, batch_seconds=1,
                                   post_fields=writer.post_fields)
        self.ssc = spark_streaming.create_context(settings, writer, spark_context, self.metrics)
        self.ssc.start()

    def wait_for(self, done: Callable[[list[BatchStats]], bool]) -> list[BatchStats]:
        """Batches seen until ``done(batches)`` holds (each get waits for Spark's next
        batch); fails after TEST_WAIT_SECONDS in all, so a test never hangs."""
        seen: list[BatchStats] = []
        deadline = time.monotonic() + TEST_WAIT_SECONDS
        while not done(seen):
            left = deadline - time.monotonic()
            assert left > 0, f"not done after {TEST_WAIT_SECONDS} s: {seen}"
            seen.append(self.batches.get(timeout=min(left, BATCH_WAIT_SECONDS)))
        return seen

    def stop(self) -> None:
        self.ssc.stop(stopSparkContext=False, stopGraceFully=False)


@pytest.fixture
def run_job(spark_context, tweet_socket) -> Iterator[Callable[[BatchWriter], JobRun]]:
    runs: list[JobRun] = []

    def start(writer: BatchWriter) -> JobRun:
        runs.append(JobRun(spark_context, tweet_socket.port, writer))
        return runs[-1]

    yield start
    for run in runs:
        run.stop()


def total(batches: list[BatchStats], field: str) -> int:
    return sum(getattr(stats, field) for stats in batches)


@pytest.mark.spark
def test_batches_are_stored_in_the_contract_shape(run_job, tweet_socket, store, durable) -> None:
    job = run_job(BatchWriter(durable, lambda: READING))
    tweet_socket.send(b"")  # waits for the receiver to connect
    # a batch that received nothing writes nothing
    job.wait_for(lambda seen: len(seen) >= 2)
    assert store.collection.count_documents({}) == 0

    wire = b"".join([
        tweet("1", "RT @who: Wash hands &amp; wear masks 😷 #COVID19 https://t.co/x"),
        b"this is not json\n",
        tweet("2", "Line one\nline two\tend 🇬🇧"),
        tweet("1", "the same id again: a redelivery"),
        tweet("3", "https://t.co/only-a-link 🙏"),
        b"\xff\xfe invalid utf-8\n",
        tweet("4", "Вакцина работает, info@who.int"),
        json.dumps({"id": "5", "text": "x", "$set": {"a.b": 1}}).encode() + b"\n",
    ])
    tweet_socket.send(wire)
    batches = job.wait_for(lambda seen: total(seen, "lines") >= 8)

    assert total(batches, "lines") == 8
    assert total(batches, "kept") == 4
    assert total(batches, "malformed") == 2
    assert total(batches, "duplicates") == 1
    assert total(batches, "empty") == 1

    documents = list(store.collection.find().sort("timestamp", 1))
    assert len(documents) == sum(1 for stats in batches if stats.kept)
    content = [text for doc in documents for text in doc["content"]]
    assert content == [
        "Wash hands & wear masks COVID19",
        "Line one line two end",
        "Вакцина работает, info@who.int",
        "x",
    ]
    for doc in documents:
        assert set(doc) == {"_id", "content", "timestamp", "total_case_count",
                            "case_count_as_of", "case_count_source", "post_keys"}
        assert len(doc["post_keys"]) == len(doc["content"])  # how a delete finds a post
        assert isinstance(doc["timestamp"], datetime)
        assert doc["timestamp"].utcoffset().total_seconds() == 0
        assert type(doc["total_case_count"]) is int
        assert doc["total_case_count"] == COUNT
        assert doc["case_count_as_of"] == AS_OF and doc["case_count_source"] == "worldometers"
    # Spark's own figures for the same batches, next to the job's counts
    metrics: dict[str, dict] = {}
    while sum(m["records"] for m in metrics.values()) < 8:
        metric = job.metrics.documents.get(timeout=BATCH_WAIT_SECONDS)
        metrics[metric["_id"]] = metric
    for doc in documents:
        metric = metrics[doc["_id"]]
        assert metric["kept"] == len(doc["content"]) and metric["stored"]
        assert metric["records"] == metric["lines"]
        assert metric["scheduling_delay_ms"] >= 0 and metric["processing_delay_ms"] >= 0
        assert metric["total_case_count"] == COUNT and metric["count_fresh"]
    stored_times = {doc["timestamp"] for doc in documents}
    batch_times = {stats.batch_time.astimezone(UTC) for stats in batches if stats.kept}
    assert stored_times == batch_times


class FailingStore(storage.BatchStore):
    """A store whose first ``failures`` writes fail, as a database outage would."""

    def __init__(self, inner: storage.BatchStore, failures: int) -> None:
        super().__init__(inner.collection, "failing")
        self.failures = failures
        self.failed = threading.Event()

    def write(self, document: dict) -> None:
        if self.failures:
            self.failures -= 1
            self.failed.set()
            raise pymongo.errors.AutoReconnect("store went away")
        super().write(document)


@pytest.mark.spark
def test_a_store_outage_spools_and_loses_nothing(run_job, tweet_socket, store, tmp_path) -> None:
    flaky = FailingStore(store, failures=2)  # the first try and its one retry fail
    spool = storage.Spool(tmp_path / "spool.jsonl")
    job = run_job(BatchWriter(storage.DurableStore(flaky, spool, retry_delays=(0.01,)),
                              lambda: scrape.NO_COUNT))
    tweet_socket.send(tweet("1", "written while the store is down"))
    batches = job.wait_for(lambda seen: total(seen, "kept") >= 1)
    assert batches[-1].spooled
    assert len(spool) == 1 and store.collection.count_documents({}) == 0

    tweet_socket.send(tweet("2", "written after it"))
    job.wait_for(lambda seen: total(seen, "kept") >= 1)
    documents = list(store.collection.find().sort("timestamp", 1))
    assert [doc["content"] for doc in documents] == [["written while the store is down"],
                                                     ["written after it"]]
    assert documents[0]["total_case_count"] is None
    assert documents[0]["case_count_as_of"] is None and documents[0]["case_count_source"] is None
    assert len(spool) == 0


@pytest.mark.spark
def test_a_failing_batch_does_not_stop_the_stream(run_job, tweet_socket, durable) -> None:
    calls = []

    def count() -> scrape.CaseCount:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in one batch")
        return READING

    job = run_job(BatchWriter(durable, count))
    tweet_socket.send(tweet("1", "lost to the failure"))
    job.wait_for(lambda seen: bool(calls))
    tweet_socket.send(tweet("2", "stored after it"))
    job.wait_for(lambda seen: total(seen, "kept") >= 1)
    contents = [doc["content"] for doc in durable.store.collection.find()]
    assert ["stored after it"] in contents


@pytest.mark.spark
def test_post_fields_reach_the_document_aligned_with_content(run_job, tweet_socket, store,
                                                             durable) -> None:
    job = run_job(BatchWriter(durable, lambda: READING,
                              post_fields=("id", "created_at", "reply_to", "hashtags")))
    wire = b"".join([
        tweet("1", "first #COVID19"),
        b"not json\n",
        tweet("2", "https://t.co/only-a-link"),  # cleans to nothing
        json.dumps({"id": "3", "text": "third", "created_at": "2026-11-30T08:00:03Z",
                    "referenced_tweets": [{"type": "replied_to", "id": "1"}],
                    "entities": {"hashtags": [{"tag": "COVID19"}]}}).encode() + b"\n",
        tweet("1", "a redelivery"),
    ])
    tweet_socket.send(wire)
    job.wait_for(lambda seen: total(seen, "lines") >= 5)
    documents = list(store.collection.find().sort("timestamp", 1))
    assert [t for doc in documents for t in doc["content"]] == ["first COVID19", "third"]
    assert [p for doc in documents for p in doc["posts"]] == [
        {"id": "1", "created_at": None, "reply_to": None, "hashtags": None},
        {"id": "3", "created_at": datetime(2026, 11, 30, 8, 0, 3, tzinfo=UTC),
         "reply_to": "1", "hashtags": ["COVID19"]}]


@pytest.mark.spark
def test_a_batch_of_several_blocks_is_one_task_and_keeps_the_order(
        run_job, tweet_socket, store, durable, spark_context, monkeypatch) -> None:
    # A 1 s batch is four 250 ms blocks. Each block used to be a task of its own (a
    # 20 s batch of a trickle: 20 tasks of a post or two, ~50 ms each): a batch of up
    # to ONE_TASK_MAX_LINES lines is now one task, and its posts keep their order.
    sizes: dict[datetime, int | None] = {}  # what the merge was told of each batch

    def recorded(ssc: object) -> Callable[[datetime], int | None]:
        lines_of = received_lines(ssc)

        def record(batch_time: datetime) -> int | None:
            sizes[batch_time] = lines_of(batch_time)
            return sizes[batch_time]
        return record

    monkeypatch.setattr(spark_streaming, "received_lines", recorded)
    tracker = spark_context.statusTracker()
    jobs_before = set(tracker.getJobIdsForGroup())
    job = run_job(BatchWriter(durable, lambda: READING))
    tweet_socket.send(b"")  # the receiver is connected
    paced = threading.Event()  # never set: wait(...) paces the posts 0.3 s apart
    texts = [f"post number {n} about covid" for n in range(8)]
    for n, text in enumerate(texts):  # over 2.1 s: several blocks in one batch
        tweet_socket.send(tweet(str(n), text))
        paced.wait(0.3)
    batches = job.wait_for(lambda seen: total(seen, "lines") >= len(texts))

    documents = list(store.collection.find().sort("timestamp", 1))
    assert [text for doc in documents for text in doc["content"]] == texts
    tasks = [tracker.getStageInfo(stage).numTasks
             for job_id in set(tracker.getJobIdsForGroup()) - jobs_before
             for stage in tracker.getJobInfo(job_id).stageIds
             if tracker.getStageInfo(stage) is not None]
    assert tasks and max(tasks) == 1, tasks
    # the merge knew each batch's size from Spark before its tasks ran
    told = {batch_time.timestamp(): lines for batch_time, lines in sizes.items()}
    for stats in batches:
        if stats.lines:
            assert told[stats.batch_time.timestamp()] == stats.lines, (told, stats)


# --- the driver's part alone, without Spark ------------------------------------------


BATCH = datetime(2026, 11, 28, 22, 46, 20, tzinfo=UTC)


def ok(tweet_id: str, text: str, seq: int | None = None) -> transform.Record:
    return transform.Record("ok", tweet_id, text, seq, None if seq is None else "src1")


def test_writing_the_same_batch_twice_leaves_one_document(store, durable) -> None:
    records = [ok("1", "a"), ok("2", "b")]
    # a second writer, as after a restart, sees the same batch again
    for _ in range(2):
        BatchWriter(durable, lambda: READING).write_records(BATCH, records)
    assert store.collection.count_documents({}) == 1
    assert store.collection.find_one()["content"] == ["a", "b"]


def test_the_count_is_fetched_once_per_batch_and_not_for_empty_ones(durable) -> None:
    calls = []

    def count() -> scrape.CaseCount:
        calls.append(1)
        return READING

    writer = BatchWriter(durable, count)
    writer.write_records(BATCH, [ok(str(i), f"t{i}") for i in range(50)])
    writer.write_records(BATCH.replace(second=40),
                         [transform.Record("malformed", "", "not JSON", raw="x")])
    assert len(calls) == 1


def test_redelivered_ids_are_dropped_across_batches(durable) -> None:
    writer = BatchWriter(durable, lambda: READING)
    first = writer.write_records(BATCH, [ok("1", "a")])
    second = writer.write_records(BATCH.replace(second=40), [ok("1", "a"), ok("2", "b")])
    assert (first.kept, second.kept, second.duplicates) == (1, 1, 1)


def test_recent_ids_forget_the_oldest() -> None:
    ids = RecentIds(limit=2)
    assert ids.add("a") and ids.add("b") and ids.add("c")
    assert ids.add("a")  # forgotten, so new again
    assert not ids.add("c")


def test_batch_summary_is_one_line() -> None:
    stats = BatchStats(BATCH, 10, 8, 1, 1, 0, COUNT, True, 12.3, "id",
                       case_count_as_of=AS_OF, case_count_source="worldometers")
    line = stats.summary()
    assert "\n" not in line
    assert "10 lines, 8 kept" in line and "12 ms" in line
    assert "count 704,753,890 (worldometers, as of 2024-04-13, fetched now)" in line


@pytest.mark.spark
def test_hostile_input_is_counted_quarantined_and_never_loses_a_batch(
    run_job, tweet_socket, store, durable, tmp_path
) -> None:
    quarantine = Quarantine(tmp_path / "quarantine.jsonl")
    job = run_job(BatchWriter(durable, lambda: READING, quarantine=quarantine))
    hostile = [
        b"\xff\xfe\xfd not utf-8 at all\n",
        b"{not json\n",
        b'{"id": "9", "lang": "en"}\n',  # no text
        b'{"id": "10", "text": "\\ud83d lone surrogate", "$set": {"a.b": 1}, "x.y": 2}\n',
        json.dumps({"id": "11", "text": "huge " * 220_000}).encode() + b"\n",  # ~1.1 MB
        b"[" * 50_000 + b"\n",
        tweet("12", "a normal tweet after all that"),
    ]
    tweet_socket.send(b"".join(hostile))
    batches = job.wait_for(lambda seen: total(seen, "lines") >= len(hostile))
    assert total(batches, "malformed") == 4
    assert total(batches, "kept") == 3
    content = [t for doc in store.collection.find().sort("timestamp", 1) for t in doc["content"]]
    assert content[0] == "lone surrogate" and content[2] == "a normal tweet after all that"
    assert len(content[1]) > 1_000_000
    reasons = [json.loads(line)["reason"]
               for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(reasons) == ["JSON nested too deeply", "no text", "not JSON", "not JSON"]


@pytest.mark.parametrize(("batch_seconds", "block_ms"),
                         [(0.5, 200), (1, 250), (2, 500), (4, 1_000), (20, 1_000), (600, 1_000)])
def test_a_block_is_a_quarter_batch_but_at_most_a_second(batch_seconds: float,
                                                         block_ms: int) -> None:
    # a block stays in the JVM's heap until it is full: 20 s batches used to make
    # blocks of 5 s, 500 MB of lines while stream.py sends a backlog at 100,000/s
    assert spark_setup.block_interval_ms(batch_seconds) == block_ms


@pytest.mark.parametrize(("max_rate", "batch_seconds", "rate"), [
    (50_000, 1, 50_000), (50_000, 2, 50_000), (50_000, 10, 50_000),
    (50_000, 20, 25_000),  # 1,000,000-line batches queued up and ran the heap out
    (10_000, 20, 10_000), (50_000, 600, 833), (0, 20, 0),  # 0: no cap, as asked
])
def test_a_long_batch_takes_at_most_half_a_million_lines(max_rate: int, batch_seconds: float,
                                                         rate: int) -> None:
    assert spark_setup.receiver_rate(max_rate, batch_seconds) == rate
    assert rate == 0 or rate * batch_seconds <= spark_setup.BATCH_MAX_LINES


def test_the_receiver_takes_a_backlog_at_a_bounded_rate(spark_context) -> None:
    conf = spark_context.getConf()
    assert conf.get("spark.streaming.receiver.maxRate") == str(
        config.Settings().receiver_max_rate)
    assert conf.get("spark.streaming.blockInterval") == "250ms"  # the tests' 1 s batches


class FakeStreamingContext:
    """Stands in for a StreamingContext: ``awaitTermination`` blocks until the
    context ends (stopped, or ``die``), as Spark's does; nothing polls it."""

    def __init__(self) -> None:
        self.ended = threading.Event()
        self.error: Exception | None = None
        self.stopped = False

    def start(self) -> None:
        pass

    def awaitTermination(self) -> None:  # noqa: N802 (Spark's name)
        self.ended.wait()
        if self.error is not None:
            raise self.error

    def awaitTerminationOrTimeout(self, timeout: float) -> bool:  # noqa: N802
        raise AssertionError("the job polled the context instead of waiting for its end")

    def die(self, error: Exception | None) -> None:
        self.error = error
        self.ended.set()

    def stop(self, stopSparkContext: bool, stopGraceFully: bool) -> None:  # noqa: N803
        self.stopped = True
        self.ended.set()


class FinishedWriter:
    def wait_for_batch_at_or_after(self, moment: float, timeout: float) -> bool:
        return True

    def finish(self, timeout: float) -> bool:
        return True

    def log_untaken_stats(self) -> None:
        pass


def run_in_thread(ssc: FakeStreamingContext, stop: threading.Event) -> tuple[threading.Thread,
                                                                           list]:
    raised: list = []

    def run() -> None:
        try:
            dstream.run_until_stopped(ssc, FinishedWriter(), config.Settings(), stop)
        except Exception as err:  # noqa: BLE001 -- the test looks at it
            raised.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def test_the_job_waits_for_a_stop_without_polling_the_context() -> None:
    ssc, stop = FakeStreamingContext(), threading.Event()
    thread, raised = run_in_thread(ssc, stop)
    # an observation window: the old loop asked the JVM once a second
    thread.join(1.5)
    assert thread.is_alive(), raised
    stop.set()
    thread.join(30)
    assert not thread.is_alive() and ssc.stopped and not raised


def test_a_context_that_dies_ends_the_wait_with_its_error() -> None:
    ssc, stop = FakeStreamingContext(), threading.Event()
    thread, raised = run_in_thread(ssc, stop)
    ssc.die(RuntimeError("the receiver's executor is gone"))
    thread.join(30)
    assert not thread.is_alive()
    assert [str(err) for err in raised] == ["the receiver's executor is gone"]
    assert not ssc.stopped  # it had ended: nothing to stop


def test_a_context_that_ends_without_an_error_ends_the_wait() -> None:
    ssc, stop = FakeStreamingContext(), threading.Event()
    thread, raised = run_in_thread(ssc, stop)
    ssc.die(None)
    thread.join(30)
    assert not thread.is_alive() and not raised and not ssc.stopped


class FakeBlocks:
    """A batch's RDD as the merge sees it: so many partitions, merged on request."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    def getNumPartitions(self) -> int:  # noqa: N802 (Spark's name)
        return self.partitions

    def coalesce(self, partitions: int) -> FakeBlocks:
        return FakeBlocks(partitions)


@pytest.mark.parametrize(("cores", "lines", "tasks"), [
    (2, 3, 1),  # local[2]: one slot besides the receiver's
    (2, dstream.ONE_TASK_MAX_LINES, 1),
    (2, dstream.ONE_TASK_MAX_LINES + 1, 20),  # its one result would fill the heap
    (2, None, 20),  # Spark could not say: left alone
    (3, dstream.ONE_TASK_MAX_LINES_SIDE_BY_SIDE, 1),  # local[3], a cluster
    (3, dstream.ONE_TASK_MAX_LINES_SIDE_BY_SIDE + 1, 20),  # the blocks side by side
])
def test_a_batch_is_one_task_up_to_a_size(cores: int, lines: int | None, tasks: int) -> None:
    asked: list[datetime] = []

    def lines_of(batch_time: datetime) -> int | None:
        asked.append(batch_time)
        return lines

    merge = dstream.one_task_a_batch(SimpleNamespace(defaultParallelism=cores),
                                             lines_of)
    assert merge(BATCH, FakeBlocks(20)).getNumPartitions() == tasks
    assert asked == [BATCH]  # the size of this very batch
    assert merge(BATCH, FakeBlocks(1)).getNumPartitions() == 1
    assert asked == [BATCH, BATCH]  # asked for every batch


def test_a_spark_that_cannot_size_a_batch_leaves_it_as_it_is() -> None:
    # Spark's record of a batch's input is internal to Spark: without it (another
    # version), the merge is skipped, never the batch
    lines_of = received_lines(SimpleNamespace())
    assert lines_of(BATCH) is None
    merge = dstream.one_task_a_batch(SimpleNamespace(defaultParallelism=2), lines_of)
    assert merge(BATCH, FakeBlocks(20)).getNumPartitions() == 20


def test_records_on_the_socket_reach_the_store_through_spark(run_job, tweet_socket, durable,
                                                             store) -> None:
    """The executors parse a delete and a keyword set (wire_records is shipped with
    transform); the driver checks their mac and applies them in order with the posts."""
    from wire_lines import SECRET, delete, post, sealed

    import wire_records

    job = run_job(BatchWriter(durable, lambda: READING, secret=SECRET))
    lines = [sealed(1, wire_records.filter_record("bluesky", keywords=["covid"])),
             post(2, "a", "masks on the bus"), post(3, "b", "a delete follows"),
             delete(4, "b"), delete(5, "a", secret=b"not the job's secret, 32 chars!!")]
    tweet_socket.send("".join(line + "\n" for line in lines).encode())
    batches = job.wait_for(lambda seen: total(seen, "lines") >= 5)
    assert (total(batches, "deletes"), total(batches, "deleted"), total(batches, "forged")) == (
        1, 1, 1)
    documents = list(store.collection.find())  # one, or two if a batch ended between
    assert [text for d in documents for text in d["content"]] == ["masks on the bus"]
    assert all(d["filter"] == {"source": "bluesky", "keywords": ["covid"]} for d in documents)
