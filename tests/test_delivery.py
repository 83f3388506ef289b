"""Delivery bookkeeping, the spool, document parts and hostile input, without Spark."""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime

import bson
import mongomock
import pymongo.errors
import pytest

import config
import scrape
import storage
import transform
from job.batch import Quarantine
from job.delivery import GAP, NEW, RESENT, Delivery
from job.writer import BatchWriter

BATCH = datetime(2026, 11, 28, 22, 46, 20, tzinfo=UTC)
COUNT = 704_753_890
AS_OF = datetime(2024, 4, 13, tzinfo=UTC)
READING = scrape.CaseCount(COUNT, AS_OF, "worldometers", fresh=True)


def seq_record(seq: int, text: str | None = None, source: str = "p1") -> transform.Record:
    return transform.Record("ok", f"id-{seq}", text or f"tweet {seq}", seq, source)


class Acks:
    """The job's control client, faked: records what each batch sends, answers
    resends with ``held`` when a test sets it."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, int], dict[str, int]]] = []
        self.held: dict[str, tuple[int, int]] = {}

    def send(self, acks: dict[str, int], resends: dict[str, int]
             ) -> dict[str, tuple[int, int]]:
        self.calls.append((dict(acks), dict(resends)))
        return dict(self.held)


@pytest.fixture
def store() -> storage.BatchStore:
    return storage.BatchStore(mongomock.MongoClient(tz_aware=True).db.coll, "mongomock")


@pytest.fixture
def durable(store, tmp_path) -> storage.DurableStore:
    return storage.DurableStore(store, storage.Spool(tmp_path / "spool.jsonl"), retry_delays=())


def stored_texts(store: storage.BatchStore) -> list[str]:
    return [t for doc in store.collection.find().sort("_id", 1) for t in doc["content"]]


# --- go-back-N ---------------------------------------------------------------------------


def test_delivery_admits_in_order_and_drops_resends() -> None:
    delivery = Delivery({"p1": 3})
    delivery.begin()
    verdicts = [delivery.admit("p1", seq) for seq in (2, 3, 4, 5, 5)]
    assert verdicts == [RESENT, RESENT, NEW, NEW, RESENT]
    assert delivery.commit() == ({"p1": 5}, {})


def test_a_gap_asks_for_a_resend_and_admits_nothing_past_it() -> None:
    delivery = Delivery({"p1": 3})
    delivery.begin()
    assert [delivery.admit("p1", seq) for seq in (4, 6, 7)] == [NEW, GAP, GAP]
    assert delivery.commit() == ({"p1": 4}, {"p1": 5})
    delivery.begin()  # the producer sends from 5 again
    assert [delivery.admit("p1", seq) for seq in (5, 6, 7)] == [NEW, NEW, NEW]
    assert delivery.commit() == ({"p1": 7}, {})


def test_a_gap_stays_open_for_as_long_as_the_producer_holds_its_tweets() -> None:
    delivery = Delivery({"p1": 3})
    for _ in range(20):  # a backlog: however many batches pass without the resent tweets
        delivery.begin()
        assert delivery.admit("p1", 9) == GAP
        delivery.held({"p1": (4, 12)})  # the producer still holds 4 on
        assert delivery.commit() == ({"p1": 3}, {"p1": 4})
    delivery.begin()
    assert [delivery.admit("p1", seq) for seq in range(4, 10)] == [NEW] * 6
    assert delivery.commit() == ({"p1": 9}, {})
    assert delivery.skipped == 0


def test_a_gap_the_producer_no_longer_holds_is_skipped_at_once() -> None:
    delivery = Delivery({"p1": 3})
    delivery.begin()
    assert delivery.admit("p1", 9) == GAP
    assert delivery.commit() == ({"p1": 3}, {"p1": 4})
    delivery.held({"p1": (7, 12)})  # its answer: 4..6 are gone (acknowledged, or lost)
    delivery.begin()
    assert delivery.admit("p1", 9) == GAP  # 7 and 8 are still to come
    assert delivery.commit() == ({"p1": 6}, {"p1": 7})
    assert delivery.skipped == 3
    delivery.begin()
    assert [delivery.admit("p1", seq) for seq in (7, 8, 9)] == [NEW] * 3


def test_an_unknown_source_starts_where_it_is_first_seen() -> None:
    delivery = Delivery()
    delivery.begin()
    assert [delivery.admit("new", seq) for seq in (41, 42)] == [NEW, NEW]


def test_a_restarted_job_stores_only_what_it_had_not(store, durable) -> None:
    first = BatchWriter(durable, lambda: READING, acks=Acks())
    first.write_records(BATCH, [seq_record(i) for i in range(1, 6)])
    # killed before its ack arrived: the producer sends 1..8 to the new job
    acks = Acks()
    second = BatchWriter(durable, lambda: READING,
                         delivery=Delivery(durable.delivered()), acks=acks)
    stats = second.write_records(BATCH.replace(second=40), [seq_record(i) for i in range(1, 9)])
    assert (stats.kept, stats.resent, stats.duplicates) == (3, 5, 0)
    assert stored_texts(store) == [f"tweet {i}" for i in range(1, 9)]
    assert acks.calls == [({"p1": 8}, {})]


def test_a_batch_that_stores_nothing_still_records_how_far_it_got(store, durable) -> None:
    """An idle or duplicate-only batch moves the producer on too; a restarted job
    must know, or it takes the acknowledged seqs for a gap."""
    first = BatchWriter(durable, lambda: READING, acks=Acks())
    first.write_records(BATCH, [seq_record(1), seq_record(2)])
    nothing_new = [transform.Record("empty", "id-3", "", 3, "p1"),  # cleans to nothing
                   transform.Record("ok", "id-1", "tweet 1 again", 4, "p1")]  # an id seen
    stats = first.write_records(BATCH.replace(second=40), nothing_new)
    assert (stats.kept, stats.empty, stats.duplicates) == (0, 1, 1)
    assert store.collection.count_documents({}) == 1  # no document for it
    assert durable.delivered() == {"p1": 4}
    acks = Acks()
    second = BatchWriter(durable, lambda: READING, delivery=Delivery(durable.delivered()),
                         acks=acks)
    second.write_records(BATCH.replace(second=50), [seq_record(5)])
    assert acks.calls == [({"p1": 5}, {})]  # no gap, no resend request
    assert stored_texts(store) == ["tweet 1", "tweet 2", "tweet 5"]


def test_a_failed_batch_is_not_acknowledged_and_comes_back(store, tmp_path, caplog) -> None:
    class Broken(storage.Spool):
        def append(self, documents):  # the disk is full too
            raise OSError("no space left on device")

    class Down(storage.BatchStore):
        def write(self, document):
            raise pymongo.errors.AutoReconnect("down")

    acks = Acks()
    failing = storage.DurableStore(Down(store.collection, "down"), Broken(tmp_path / "s"), ())
    writer = BatchWriter(failing, lambda: READING, acks=acks)
    with caplog.at_level(logging.ERROR, logger="spark_streaming"):
        writer.process(BATCH, FakeRdd([seq_record(1), seq_record(2)]))
    assert acks.calls == []  # nothing acknowledged: the producer keeps both
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert line == ("batch 2026-11-28T22:46:20.000Z: neither stored (down is down) nor spooled "
                    f"({tmp_path / 's'}: no space left on device); not acknowledged: "
                    "stream.py keeps its tweets and sends them again")

    writer.store = storage.DurableStore(store, storage.Spool(tmp_path / "ok"), ())
    writer.process(BATCH.replace(second=40), FakeRdd([seq_record(3)]))  # a gap
    assert acks.calls[-1] == ({"p1": 0}, {"p1": 1})  # nothing past 0, and a resend
    writer.process(BATCH.replace(second=50), FakeRdd([seq_record(i) for i in (1, 2, 3)]))
    assert stored_texts(store) == ["tweet 1", "tweet 2", "tweet 3"]
    assert acks.calls[-1] == ({"p1": 3}, {})


def test_a_backlog_of_batches_never_skips_a_gap_the_producer_still_holds(store, durable) -> None:
    """Spark queues batches while one is slow: they run back to back, empty, before the
    resent tweets arrive. Counting batches used to skip the gap then, and drop the
    resent tweets as already handled; whether the producer holds them decides now."""
    acks = Acks()
    writer = BatchWriter(durable, lambda: READING, acks=acks)
    writer.write_records(BATCH, [seq_record(s) for s in (1, 2, 5, 6)])  # 3 and 4 lost
    acks.held = {"p1": (3, 7)}  # the producer still holds 3..6 (it was never told 3 is done)
    for n in range(1, 9):  # eight queued batches, nothing in them
        writer.write_records(BATCH.replace(second=n), [])
        assert acks.calls[-1] == ({"p1": 2}, {"p1": 3})
    writer.write_records(BATCH.replace(second=30), [seq_record(s) for s in (3, 4, 5, 6)])
    assert stored_texts(store) == [f"tweet {s}" for s in range(1, 7)]
    assert acks.calls[-1] == ({"p1": 6}, {})
    assert writer.delivery.skipped == 0


def test_a_quarantine_that_cannot_be_written_does_not_unstore_the_batch(
    store, durable, tmp_path, caplog
) -> None:
    (tmp_path / "quarantine-is-a-folder").mkdir()
    acks = Acks()
    writer = BatchWriter(durable, lambda: READING, acks=acks,
                         quarantine=Quarantine(tmp_path / "quarantine-is-a-folder"))
    bad = transform.Record("malformed", "", "not JSON", raw="oops")
    with caplog.at_level(logging.WARNING):
        writer.process(BATCH, FakeRdd([seq_record(1), bad]))
    assert stored_texts(store) == ["tweet 1"]
    assert acks.calls == [({"p1": 1}, {})]  # stored, so acknowledged
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot keep its 1 malformed line(s)" in m for m in messages)
    assert not any("not stored" in m or "not acknowledged" in m for m in messages)


def test_store_errors_at_open_are_one_line(tmp_path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(storage.StoreError) as err:
        storage.open_store(config.Settings(embedded_db_path=blocked / "db"))
    assert "\n" not in str(err.value) and str(blocked) in str(err.value)


class FakeRdd:
    def __init__(self, records: list[transform.Record]) -> None:
        self.records = records

    def collect(self) -> list[transform.Record]:
        return self.records


# --- the spool ---------------------------------------------------------------------------


class Outage(storage.BatchStore):
    def __init__(self, inner: storage.BatchStore) -> None:
        super().__init__(inner.collection, "outage")
        self.down = True

    def write(self, document):
        if self.down:
            raise pymongo.errors.ServerSelectionTimeoutError("no servers")
        super().write(document)


def test_spooled_documents_keep_their_types_and_order(store, tmp_path) -> None:
    outage = Outage(store)
    durable = storage.DurableStore(outage, storage.Spool(tmp_path / "spool.jsonl"), ())
    docs = [transform.build_document(BATCH.replace(second=s), [f"t{s}"], 2**40) for s in (1, 2)]
    assert durable.write([docs[0]]) is False
    assert durable.write([docs[1]]) is False
    assert durable.spooled == 2

    # a new job (after a restart) finds the spool on disk and drains it first
    outage.down = False
    again = storage.DurableStore(outage, storage.Spool(tmp_path / "spool.jsonl"), ())
    assert again.spooled == 2 and again.drain()
    stored = list(store.collection.find().sort("timestamp", 1))
    assert [d["content"] for d in stored] == [["t1"], ["t2"]]
    assert stored[0]["timestamp"] == docs[0]["timestamp"]
    assert stored[0]["total_case_count"] == 2**40
    assert not (tmp_path / "spool.jsonl").exists()


def test_while_the_spool_holds_anything_new_documents_queue_behind_it(store, tmp_path) -> None:
    outage = Outage(store)
    durable = storage.DurableStore(outage, storage.Spool(tmp_path / "spool.jsonl"), ())
    first = transform.build_document(BATCH, ["first"], 1)
    second = transform.build_document(BATCH.replace(second=40), ["second"], 1)
    durable.write([first])
    outage.down = False
    assert durable.write([second]) is True
    assert [d["content"] for d in store.collection.find().sort("timestamp", 1)] == [
        ["first"], ["second"]]


def test_the_spool_is_private_and_holds_the_documents_only(tmp_path) -> None:
    spool = storage.Spool(tmp_path / "spool.jsonl")
    spool.append([transform.build_document(BATCH, ["a"], 1)])
    assert (tmp_path / "spool.jsonl").stat().st_mode & 0o077 == 0
    text = (tmp_path / "spool.jsonl").read_text()
    assert set(json.loads(text)) == {"_id", "content", "timestamp", "total_case_count",
                                     "case_count_as_of", "case_count_source", "crc"}


# --- documents past 16 MB ------------------------------------------------------------------


def test_a_batch_past_16_mb_is_split_into_parts_that_fit(store, durable) -> None:
    texts = [f"{i:06d} " + "x" * 4_000 for i in range(5_000)]  # about 20 MB
    records = [seq_record(i + 1, text) for i, text in enumerate(texts)]
    writer = BatchWriter(durable, lambda: READING)
    stats = writer.write_records(BATCH, records)
    documents = list(store.collection.find().sort("_id", 1))
    assert stats.parts == len(documents) == 2
    assert [d["_id"] for d in documents] == ["2026-11-28T22:46:20.000Z",
                                             "2026-11-28T22:46:20.000Z#2"]
    assert documents[0]["content"] + documents[1]["content"] == texts
    for number, doc in enumerate(documents, start=1):
        assert len(bson.encode(doc)) < 16 * 1024 * 1024
        assert doc["part"] == {"number": number, "of": 2}
        assert doc["timestamp"] == documents[0]["timestamp"]
        assert doc["total_case_count"] == COUNT
    # each part records how far it takes the sequence: a crash between parts resends the rest
    assert documents[0]["delivery"][0]["last_seq"] == len(documents[0]["content"])
    assert documents[1]["delivery"][0]["last_seq"] == 5_000


def test_split_content_keeps_order_and_limit() -> None:
    texts = ["a" * 10, "b" * 10, "c" * 10]
    parts = transform.split_content(texts, max_bytes=40)
    assert parts == [["a" * 10, "b" * 10], ["c" * 10]]
    assert transform.split_content([], 40) == [[]]


# --- hostile input -------------------------------------------------------------------------


def hostile_lines(count: int, seed: int = 20261128) -> list[str]:
    """Seeded junk in the shapes a socket can carry: broken JSON, wrong types, huge,
    surrogates, control characters, $ and dotted keys, deep nesting."""
    rng = random.Random(seed)
    alphabet = ("abc{}[]\":,\\ \n\t\x00\x07\ud800\udfff😷#@é日" + "".join(map(chr, range(32, 127))))
    shapes = [
        lambda: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))),
        lambda: json.dumps({"id": rng.choice([1, "1", None, True, [], {}]),
                            "text": rng.choice(["x", None, 5, ["a"], {"$gt": 1}])}),
        lambda: json.dumps({"id": str(rng.random()), "text": "\ud83d" + "y" * rng.randint(0, 9),
                            "$where": "1", "a.b": {"$set": 1}}),
        lambda: "[" * rng.randint(1, 5000) + "]" * rng.randint(0, 5000),
        lambda: json.dumps({"id": "1", "text": "t", "seq": rng.choice([-1, "2", 1.5, None]),
                            "src": rng.choice([None, 3, "s"])}),
        lambda: '{"id": "1", "text": "' + "\\u" + "".join(rng.choice("0123456789abcdefXYZ")
                                                            for _ in range(4)) + '"}',
        lambda: "\ufffd" * rng.randint(1, 10) + '{"id": "2", "text": "after bad utf-8"}',
    ]
    return [rng.choice(shapes)() for _ in range(count)]


def test_100000_hostile_lines_never_raise() -> None:
    lines = hostile_lines(100_000)
    records = [transform.process_line(line) for line in lines]  # nothing may escape
    assert len(records) == 100_000
    statuses = {record.status for record in records}
    assert transform.MALFORMED in statuses and transform.OK in statuses
    for record in records:
        if record.status != transform.MALFORMED:
            record.text.encode("utf-8")  # storable: no lone surrogates left
            assert "\x00" not in record.text


def test_a_megabyte_line_is_a_tweet_like_any_other() -> None:
    line = json.dumps({"id": "big", "text": "covid " * 200_000})
    assert len(line) > 1_000_000
    record = transform.process_line(line)
    assert record.status == transform.OK and len(record.text) == 6 * 200_000 - 1


def test_malformed_lines_go_to_a_bounded_quarantine(tmp_path) -> None:
    quarantine = Quarantine(tmp_path / "q.jsonl", max_bytes=2_000)
    records = [transform.process_line(line) for line in ["oops", '{"id": 1}', "x" * 5_000]]
    quarantine.add(BATCH, records)
    kept = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [entry["reason"] for entry in kept] == ["not JSON", "no text"]
    assert kept[0] == {"batch": "2026-11-28T22:46:20.000Z", "reason": "not JSON", "line": "oops"}
    assert quarantine.not_kept == 1  # the 5 KB line would pass the 2 KB bound
    quarantine.add(BATCH, records[:1])
    assert (tmp_path / "q.jsonl").stat().st_size <= 2_000


def test_every_batch_repeats_the_acks_so_a_lost_one_is_made_good(durable) -> None:
    acks = Acks()
    writer = BatchWriter(durable, lambda: READING, acks=acks)
    writer.write_records(BATCH, [seq_record(1), seq_record(2)])
    writer.write_records(BATCH.replace(second=40), [])  # an empty batch
    assert acks.calls == [({"p1": 2}, {})] * 2
