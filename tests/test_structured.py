"""The structured engine's parts without a Spark query: the source's offsets and reads
against a real producer, the rows and what they become again, and ``foreachBatch``'s
sink, whose batch run again replaces itself."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import typing
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import mongomock
import pyarrow as pa
import pytest
import wire_lines
from processes import capture_logs
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows
from pyspark.sql.types import LongType, StringType, TimestampType

import scrape
import storage
import transform
import wire_records
from job import producer_source, rows, shipping, spark_setup
from job.producer_source import ProducerReader
from job.structured_sink import BatchSink, RangeDelivery
from job.writer import BatchWriter
from journal import Journal
from utility import TweetServer

SECRET = b"a-control-secret-for-the-tests-0123456789"
TIMEOUT = 10.0
READING = scrape.CaseCount(704_753_890, datetime(2024, 4, 13, tzinfo=UTC), "worldometers",
                           fresh=True)


class Producer:
    """A TweetServer with a control port, as stream.py runs it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = TweetServer("127.0.0.1", 0, Journal(path), ack_port=0, secret=SECRET)
        self.server.start()
        self.port = self.server.ack_address[1]  # type: ignore[index]
        self.source = self.server.source

    def put(self, count: int, start: int = 0, text: str = "covid post {n}") -> None:
        for n in range(start, start + count):
            assert self.server.put({"id": f"t{n}", "text": text.format(n=n)})
        self.server.sync(TIMEOUT)


@pytest.fixture
def producer(tmp_path: Path) -> Iterator[Producer]:
    running = Producer(tmp_path / "journal")
    yield running
    running.server.close()


def reader(producer: Producer, **options: Any) -> ProducerReader:
    settings = {"host": "127.0.0.1", "port": producer.port, "batch_ms": 20_000,
                "max_rows": 0, "parallelism": 1, "post_fields": (), "delivered": {}}
    settings.update(options)
    return ProducerReader(producer_source.options_for(**settings), SECRET)


def read_all(source: ProducerReader, start: dict[str, Any], end: dict[str, Any]
             ) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    for part in source.partitions(start, end):
        for batch in source.read(part):
            found += rows.to_records(pa.Table.from_batches([batch]))[0]
    return found


# --- offsets ----------------------------------------------------------------------------


def test_batch_times_are_rounded_down_to_the_interval_and_always_move_on() -> None:
    assert producer_source.batch_time(1_796_000_013_250, 20_000, 0) == 1_796_000_000_000
    # a batch planned in the same interval as the one before gets the next time
    assert producer_source.batch_time(1_796_000_013_250, 20_000,
                                      1_796_000_000_000) == 1_796_000_020_000


def test_a_new_query_starts_after_what_is_stored(producer: Producer) -> None:
    producer.put(10)
    assert reader(producer).initial_offset() == {"src": producer.source, "seq": 0, "ms": 0}
    # the store says 6 are stored (a checkpoint deleted, or a DStream run before)
    stored = reader(producer, delivered={producer.source: 6, "0ther": 99})
    assert stored.initial_offset()["seq"] == 6
    producer.server.journal.ack(4)  # the producer was told 4 are stored: the store lags
    assert reader(producer).initial_offset()["seq"] == 4


def test_the_latest_offset_is_what_is_journaled_and_stays_while_idle(producer: Producer) -> None:
    source = reader(producer, batch_ms=1000)
    start = source.initial_offset()
    assert source.latest_offset(start, ReadAllAvailable()) == start  # nothing yet: no batch
    producer.put(25)
    end = source.latest_offset(start, ReadAllAvailable())
    assert (end["src"], end["seq"]) == (producer.source, 25) and end["ms"] % 1000 == 0
    assert source.latest_offset(end, ReadAllAvailable()) == end
    capped = source.latest_offset(start, ReadMaxRows(10))
    assert capped["seq"] == 10
    assert source.default_read_limit() == ReadAllAvailable()
    assert reader(producer, max_rows=500).default_read_limit() == ReadMaxRows(500)


def test_asking_past_a_committed_batch_acknowledges_it(producer: Producer) -> None:
    """Spark asks for the latest offset after ``start`` only once the batch ending there
    is in its commit log: the producer may forget it then, idle or not, and also when
    the job that ran the batch died before it could say so."""
    producer.put(25)
    source = reader(producer)
    begin = source.initial_offset()
    end = source.latest_offset(begin, ReadMaxRows(20))
    read_all(source, begin, end)  # the batch ran (Spark then writes its commit log)
    assert producer.server.journal.first_held() == 1  # nothing forgotten while it runs
    restarted = reader(producer)  # a new job, from the checkpoint
    restarted.latest_offset(end, ReadAllAvailable())
    journal = producer.server.journal
    with journal.changed:  # the producer applies it on its own thread, and says so
        assert journal.changed.wait_for(lambda: journal.first_held() == 21, TIMEOUT)
    assert producer.server.refused_acks == 0


def test_a_batch_reads_exactly_its_range_cleaned(producer: Producer) -> None:
    producer.put(30, text="Covid &amp; news {n} https://t.co/x")
    source = reader(producer)
    start = {"src": producer.source, "seq": 10, "ms": 1}
    end = {"src": producer.source, "seq": 20, "ms": 1_796_000_020_000}
    found = read_all(source, start, end)
    assert [record[3] for record in found] == list(range(11, 21))  # seq 11..20, in order
    assert found[0][:5] == (transform.OK, "t10", "Covid & news 10", 11, producer.source)
    assert read_all(source, start, end) == found  # again, after a failure: the same


def test_a_big_range_is_cut_in_parts_that_run_side_by_side(producer: Producer) -> None:
    source = reader(producer, parallelism=4)
    start = {"src": "abc", "seq": 100, "ms": 1}
    big = source.partitions(start, {"src": "abc", "seq": 100 + 25_000, "ms": 2})
    assert [part.value[1:3] for part in big] == [(101, 6_350), (6_351, 12_600),
                                                 (12_601, 18_850), (18_851, 25_100)]
    small = source.partitions(start, {"src": "abc", "seq": 150, "ms": 2})
    assert [part.value for part in small] == [("abc", 101, 150, 2)]
    assert source.partitions(start, start) == []


def test_a_producer_with_a_new_journal_is_read_from_its_start(producer: Producer,
                                                             tmp_path: Path) -> None:
    producer.put(5)
    source = reader(producer)
    old = {"src": "0ldj0urnal", "seq": 900, "ms": 1_796_000_000_000}
    with capture_logs("spark_streaming") as logs:
        end = source.latest_offset(old, ReadAllAvailable())
    assert (end["src"], end["seq"]) == (producer.source, 5)
    assert end["ms"] > old["ms"]
    assert any("a new journal" in line for line in logs.lines)
    assert [record[3] for record in read_all(source, old, end)] == [1, 2, 3, 4, 5]


def test_while_the_producer_is_away_no_batch_is_planned_and_it_is_said_once(
        tmp_path: Path) -> None:
    away = Producer(tmp_path / "journal")
    away.put(3)
    source = reader(away)
    start = source.initial_offset()
    away.server.close()
    with capture_logs("spark_streaming") as logs:
        assert source.latest_offset(start, ReadAllAvailable()) == start
        assert source.latest_offset(start, ReadAllAvailable()) == start
    assert sum("cannot ask stream.py's control port" in line for line in logs.lines) == 1
    back = TweetServer("127.0.0.1", 0, Journal(tmp_path / "journal"), ack_port=away.port,
                       secret=SECRET)
    back.start()
    try:
        with capture_logs("spark_streaming") as logs:
            assert source.latest_offset(start, ReadAllAvailable())["seq"] == 3
        assert any("answers again" in line for line in logs.lines)
    finally:
        back.close()


def test_a_read_goes_on_after_the_producer_restarts(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer is killed after the first chunk was read; the read waits for it to
    come back and goes on after the last seq it had: every seq once, in order."""
    import control_reads

    monkeypatch.setattr(control_reads, "CHUNK_BYTES", 200)
    first = Producer(tmp_path / "journal")
    first.put(12)
    source = reader(first)
    end = {"src": first.source, "seq": 12, "ms": 5}
    (part,) = source.partitions({"src": first.source, "seq": 0, "ms": 0}, end)
    batches = source.read(part)
    seqs = [r[3] for r in rows.to_records(pa.Table.from_batches([next(batches)]))[0]]
    first.server.close()
    again = TweetServer("127.0.0.1", 0, Journal(tmp_path / "journal"), ack_port=first.port,
                        secret=SECRET)
    again.start()
    try:
        for batch in batches:
            seqs += [r[3] for r in rows.to_records(pa.Table.from_batches([batch]))[0]]
    finally:
        again.close()
    assert seqs == list(range(1, 13))


# --- rows ------------------------------------------------------------------------------------


def test_the_rows_have_a_column_per_record_field_typed_from_its_annotation() -> None:
    schema = rows.layout().schema
    assert schema.fieldNames() == [*transform.Record._fields, rows.BATCH_MS]
    hints = typing.get_type_hints(transform.Record)
    assert schema["seq"].dataType == LongType() and schema["seq"].nullable
    assert schema["text"].dataType == StringType() and not schema["text"].nullable
    assert rows.column_type(hints["post"]) == (StringType(), True, True)  # as JSON
    assert rows.column_type(datetime | None) == (TimestampType(), True, False)


def test_a_field_added_to_record_flows_through_the_rows() -> None:
    """What a colleague adding a field (or a record kind) to Record gets with no change
    to the engine: the same values back, each by its type."""

    class Later(NamedTuple):
        status: str
        deleted_ids: list[str] | None = None
        seen_at: datetime | None = None
        tally: int | None = None

    kinds = {name: rows.column_type(hint)
             for name, hint in typing.get_type_hints(Later).items()}
    assert kinds["deleted_ids"][2] and not kinds["seen_at"][2] and not kinds["tally"][2]
    value = ["at://did:plc:a/app.bsky.feed.post/1", "x"]
    assert rows.decode(rows.encode(value)) == value


def test_post_fields_come_back_as_they_went_dates_included() -> None:
    post = {"id": "t1", "created_at": datetime(2026, 11, 30, 8, 0, 1, 123000, tzinfo=UTC),
            "lang": None, "hashtags": ["covid", "masks"],
            "nested": {"at": datetime(2026, 1, 1, 0, 0), "n": 3, "ok": True, "x": 1.5}}
    records = [(transform.OK, "t1", "text", 1, "abc", None, post),
               (transform.EMPTY, "t2", "", 2, "abc", None, None),
               (transform.MALFORMED, "", "not JSON", None, None, "{oops", None)]
    back, batch_ms = rows.to_records(pa.Table.from_batches([rows.to_batch(records, 77)]))
    assert back == records and batch_ms == 77
    assert back[0][6]["nested"]["at"].tzinfo is None  # a naive date stays naive
    with pytest.raises(TypeError, match="give its Record field a type of its own"):
        rows.encode({"x": {1, 2}})


def test_a_delete_and_a_keyword_set_cross_the_rows_and_are_applied(store, tmp_path) -> None:
    """Records that are not posts (issue 25's deletes, coverage, keyword sets) ride in
    the same rows, and their mac still holds on the driver: the sink applies them."""
    batch = wire_lines.records(
        wire_lines.post(1, "at://did:plc:a/app.bsky.feed.post/1", "covid one"),
        wire_lines.post(2, "at://did:plc:a/app.bsky.feed.post/2", "covid two"),
        wire_lines.delete(3, "at://did:plc:a/app.bsky.feed.post/1"),
        wire_lines.sealed(4, wire_records.filter_record("bluesky", keywords=["covid"])),
        wire_lines.delete(5, "at://did:plc:a/app.bsky.feed.post/9", secret=b"not the secret"))
    sink = sink_on(store, tmp_path, secret=wire_lines.SECRET)
    sink(Frame(batch, 1_796_000_020_000), 0)
    (document,) = store.collection.find()
    assert document["content"] == ["covid two"]  # deleted in its own batch: never stored
    assert document["filter"]["keywords"] == ["covid"]
    stats = sink.take_stats(1_796_000_020_000)
    assert stats is not None and (stats.deletes, stats.forged) == (1, 1)


def test_the_archive_holds_every_module_the_jobs_spark_side_imports() -> None:
    """What the source, the sink and the job import, in a fresh interpreter: all of it
    must be in the archive, or a Spark process that has never seen the project fails."""
    # the project's own modules: under its folder, but not in a virtualenv kept there
    # (make test's .venv is in the project folder: its packages are no module of ours)
    probe = ("import pathlib, sys; import job.structured_sink, job.producer_source, "
             "job.rows, spark_streaming; here = pathlib.Path.cwd().resolve(); "
             "venv = pathlib.Path(sys.prefix).resolve(); "
             "print('\\n'.join(n for n, m in sys.modules.items() if getattr(m, '__file__', "
             "None) and here in (path := pathlib.Path(m.__file__).resolve()).parents "
             "and venv not in path.parents))")
    imported = subprocess.run([sys.executable, "-c", probe], cwd=spark_setup.PROJECT_DIR,
                              capture_output=True, text=True, check=True).stdout.split()
    finder = shipping.ArchiveFinder(shipping.archive(spark_setup.PROJECT_DIR))
    missing = [name for name in imported
               if name != "spark_streaming" and finder.find_spec(name) is None]
    assert "storage.spool" in imported and missing == []


def test_the_archive_carries_the_jobs_modules_and_imports_from_memory(tmp_path: Path) -> None:
    data = shipping.archive(spark_setup.PROJECT_DIR)
    assert data == shipping.archive(spark_setup.PROJECT_DIR)  # the same code, the same bytes
    finder = shipping.ArchiveFinder(data)
    for name in ("transform", "control_reads", "job.producer_source", "job.structured_sink",
                 "storage", "config", "counts.reading", "journal.records"):
        spec = finder.find_spec(name)
        assert spec is not None and spec.origin.startswith("<job archive"), name
    assert finder.find_spec("stream") is None  # the producer's program is not shipped
    assert "def clean_text" in (finder.get_source("transform") or "")


# --- the sink -------------------------------------------------------------------------------


class Frame:
    """What foreachBatch gets: a DataFrame whose rows come from the given records;
    counts the actions run on it (each would run the source's read() again)."""

    def __init__(self, records: list[tuple[Any, ...]], batch_ms: int) -> None:
        self.batch = rows.to_batch(records, batch_ms)
        self.actions = 0

    def toArrow(self) -> pa.Table:  # noqa: N802 (pyspark's name)
        self.actions += 1
        return pa.Table.from_batches([self.batch])


def records_of(lines: list[str]) -> list[tuple[Any, ...]]:
    return list(transform.partition_processor(())(lines))


def wire(seq: int, text: str, tweet_id: str | None = None) -> str:
    return json.dumps({"seq": seq, "src": "abc", "id": tweet_id or f"t{seq}", "text": text})


@pytest.fixture
def store() -> storage.BatchStore:
    return storage.BatchStore(mongomock.MongoClient(tz_aware=True).covid19.tweet_batches,
                              "mongomock")


def sink_on(store: storage.BatchStore, tmp_path: Path, **writer: Any) -> BatchSink:
    durable = storage.DurableStore(store, storage.Spool(tmp_path / "spool.jsonl"),
                                   retry_delays=(0.01,))
    return BatchSink(BatchWriter(durable, lambda: READING, delivery=RangeDelivery(), **writer))


def test_a_batch_is_collected_once_and_stored_under_its_time(store, tmp_path) -> None:
    sink = sink_on(store, tmp_path)
    frame = Frame(records_of([wire(1, "covid one"), wire(2, "🙂"), wire(3, "covid three"),
                              wire(3, "covid three")]), 1_796_000_020_000)
    sink(frame, 0)
    assert frame.actions == 1  # one action: the source's read() runs once
    (document,) = store.collection.find()
    assert document["_id"] == "2026-11-30T00:53:40.000Z"
    assert document["content"] == ["covid one", "covid three"]
    assert document["delivery"] == [{"source": "abc", "last_seq": 3}]
    stats = sink.take_stats(1_796_000_020_000)
    assert stats is not None and (stats.lines, stats.kept, stats.empty, stats.resent) == (
        4, 2, 1, 1)
    assert sink.take_stats(1_796_000_020_000) is None  # taken once


def test_a_batch_run_again_replaces_itself(store, tmp_path) -> None:
    """After a crash Spark runs the last batch again, same range, same time: the new
    job (nothing in memory) writes the same documents over the old ones."""
    lines = [wire(n, f"covid {n}") for n in range(1, 6)]
    sink_on(store, tmp_path)(Frame(records_of(lines), 1_796_000_020_000), 7)
    first = list(store.collection.find())
    sink_on(store, tmp_path)(Frame(records_of(lines), 1_796_000_020_000), 7)
    assert list(store.collection.find()) == first


def test_a_batch_cut_in_parts_and_run_again_after_part_one_replaces_every_part(
        store, tmp_path) -> None:
    lines = [wire(n, f"covid {n} " + "x" * 200) for n in range(1, 41)]
    batch_ms = 1_796_000_020_000
    sink_on(store, tmp_path, max_content_bytes=3_000)(Frame(records_of(lines), batch_ms), 3)
    whole = sorted(store.collection.find(), key=lambda d: d["_id"])
    assert len(whole) > 2
    store.collection.delete_many({"_id": {"$ne": whole[0]["_id"]}})  # crashed after part 1
    sink_on(store, tmp_path, max_content_bytes=3_000)(Frame(records_of(lines), batch_ms), 3)
    assert sorted(store.collection.find(), key=lambda d: d["_id"]) == whole


def test_a_batch_that_cannot_be_stored_raises_so_that_spark_runs_it_again(tmp_path) -> None:
    class Down:
        collection = None
        description = "a store that is down"

        def apply(self, operation: Any) -> int:
            raise storage.STORE_ERRORS[0]("down")

    class FullDisk(storage.Spool):
        def append(self, operations: Any) -> None:
            raise OSError(28, "No space left on device")

    durable = storage.DurableStore(Down(), FullDisk(tmp_path / "spool.jsonl"), retry_delays=())
    sink = BatchSink(BatchWriter(durable, lambda: READING, delivery=RangeDelivery()))
    with capture_logs("spark_streaming") as logs, pytest.raises(storage.SpoolError):
        sink(Frame(records_of([wire(1, "covid")]), 1_796_000_020_000), 4)
    assert any("not stored" in line and "Spark runs it again" in line for line in logs.lines)


def test_an_idle_stream_writes_what_the_spool_holds(store, tmp_path) -> None:
    """No batch runs while no post comes: Spark's idle events are the moment to write the
    documents spooled during an outage, once the store is back."""
    spool = storage.Spool(tmp_path / "spool.jsonl")
    spool.append([{"_id": "2026-11-30T00:53:40.000Z", "content": ["covid"],
                   "timestamp": datetime(2026, 11, 30, tzinfo=UTC)}])
    sink = sink_on(store, tmp_path)
    assert sink.writer.store.spooled == 1
    sink.idle()
    assert sink.writer.store.spooled == 0 and len(spool) == 0
    assert [doc["_id"] for doc in store.collection.find()] == ["2026-11-30T00:53:40.000Z"]


def test_a_stopping_job_has_no_new_batch_planned(producer: Producer, tmp_path: Path) -> None:
    marker = tmp_path / "checkpoint.stopping"
    source = reader(producer, stop_marker=str(marker))
    start = source.initial_offset()
    producer.put(5)
    marker.touch()
    assert source.latest_offset(start, ReadAllAvailable()) == start
    marker.unlink()
    assert source.latest_offset(start, ReadAllAvailable())["seq"] == 5


def test_range_delivery_admits_every_seq_of_a_batch_once_and_asks_nothing_again() -> None:
    delivery = RangeDelivery({"abc": 50})
    delivery.begin()
    verdicts = [delivery.admit("abc", seq) for seq in (3, 4, 9, 9, 12)]  # holes: damage
    assert verdicts == ["new", "new", "new", "resent", "new"]
    assert delivery.batch_committed() == {"abc": 12}
    assert delivery.commit() == ({"abc": 12}, {})
    delivery.begin()  # the next batch, or the same run again: every seq of it is new
    assert delivery.admit("abc", 3) == "new"


def test_logging_in_a_spark_process_looks_like_the_jobs() -> None:
    root = logging.getLogger()
    saved, level, finders = root.handlers[:], root.level, sys.meta_path[:]
    for handler in saved:
        root.removeHandler(handler)
    try:
        shipping.ensure_importable(shipping.archive(spark_setup.PROJECT_DIR))
        assert isinstance(sys.meta_path[0], shipping.ArchiveFinder)
        assert root.handlers and root.handlers[0].formatter._fmt == shipping.LOG_FORMAT
    finally:
        sys.meta_path[:] = finders  # this process imports the project from its files
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)
