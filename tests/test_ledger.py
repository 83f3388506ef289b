"""The dataset accounts for itself: coverage spans and gaps and the keyword sets in force
come from the producer's sealed records into the store, through restarts and outages,
and out again through ``report.py coverage`` and ``report.py keywords`` and the job's
gap metric. The producer is played by wire lines the tests write."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mongomock
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from wire_lines import SECRET, post, records, sealed

import config
import metrics
import report
import scrape
import spark_streaming
import storage
import wire_records
from job.writer import BatchWriter
from storage import ledger

READING = scrape.CaseCount(704_753_890, datetime(2024, 4, 13, tzinfo=UTC), "worldometers",
                           fresh=True)
BATCH = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # source time
HOST = "wss://jetstream1.us-east.bsky.network/subscribe"
KEYWORDS = ["covid", "covid19"]


def at(n: int) -> datetime:
    return BATCH + timedelta(seconds=20 * n)


@pytest.fixture
def db(tmp_path: Path, cli_env: None) -> Iterator[Path]:
    """An embedded store's folder (report.py reads it as a user would, its logging
    undone after each test)."""
    yield tmp_path / "db"


def open_store(path: Path) -> storage.BatchStore:
    return storage.open_store(config.Settings(embedded_db_path=path))


def writer_for(store: storage.BatchStore, tmp_path: Path, fields: tuple[str, ...] = (),
               **options) -> BatchWriter:
    durable = storage.DurableStore(store, storage.Spool(tmp_path / "spool.jsonl"), ())
    return BatchWriter(durable, lambda: READING, secret=SECRET, post_fields=fields, **options)


def span(seq: int, minutes: float, events: int, span_id: str = "span-1") -> str:
    return sealed(seq, wire_records.coverage_record(
        span_id, "bluesky", HOST, T0, T0 + timedelta(minutes=minutes), events=events,
        posts=events // 10, matched=events // 500))


def gap(seq: int, start: datetime, end: datetime, reason: str = "restart past retention",
        refused: int = 0) -> str:
    return sealed(seq, wire_records.gap_record("bluesky", HOST, start, end, reason, refused))


def keywords(seq: int, words: list[str]) -> str:
    return sealed(seq, wire_records.filter_record("bluesky", keywords=words))


def cli(db: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert report.main([*args, "--embedded-db-path", str(db)]) == 0
    return capsys.readouterr().out


# --- coverage ------------------------------------------------------------------------------


def test_a_span_sent_again_further_replaces_the_earlier_and_never_goes_back(db,
                                                                          tmp_path) -> None:
    store = open_store(db)
    writer = writer_for(store, tmp_path)
    writer.write_records(at(0), records(span(1, 1, 3_000)))
    writer.write_records(at(1), records(span(2, 2, 6_000)))
    # a record replayed onto the port later, authentic but older: it takes nothing back
    writer.delivery.committed.clear()
    writer.write_records(at(2), records(span(1, 1, 3_000)))
    [document] = store.sibling("coverage").find()
    assert (document["_id"], document["kind"], document["events"]) == (
        "span span-1", "span", 6_000)
    assert ledger.as_utc(document["to"]) == T0 + timedelta(minutes=2)
    assert (document["source"], document["host"], document["producer"]) == (
        "bluesky", HOST, "p1")


def test_coverage_json_names_each_gap_with_its_exact_bounds_and_reason(db, tmp_path,
                                                                      capsys) -> None:
    store = open_store(db)
    writer = writer_for(store, tmp_path)
    gap_from = T0 + timedelta(minutes=70, seconds=12, milliseconds=345)
    gap_to = T0 + timedelta(minutes=100, seconds=1, milliseconds=5)
    writer.write_records(at(0), records(
        sealed(1, wire_records.coverage_record("a", "bluesky", HOST, T0, gap_from,
                                               events=100, posts=10, matched=1)),
        gap(2, gap_from, gap_to, "cursor not honoured"),
        sealed(3, wire_records.coverage_record("b", "bluesky", HOST, gap_to,
                                               T0 + timedelta(hours=2), events=90, posts=9,
                                               matched=1)),
        gap(4, T0 + timedelta(minutes=110), T0 + timedelta(minutes=111), "refused", 42)))
    store.close()
    answer = json.loads(cli(db, "coverage", "--json", capsys=capsys))
    assert answer == {
        "gaps": [{"from": "2026-11-30T09:10:12.345Z", "to": "2026-11-30T09:40:01.005Z",
                  "reason": "cursor not honoured", "refused": 0},
                 {"from": "2026-11-30T09:50:00.000Z", "to": "2026-11-30T09:51:00.000Z",
                  "reason": "refused", "refused": 42}],
        "hours": [{"hour": "2026-11-30T08:00:00.000Z", "covered": 1.0},
                  {"hour": "2026-11-30T09:00:00.000Z",
                   "covered": round(1 - (1788.66 + 60) / 3600, 4)}],
    }
    text = cli(db, "coverage", capsys=capsys)
    assert "2026-11-30 08:00   100.0%" in text
    assert ("2026-11-30T09:10:12.345Z  2026-11-30T09:40:01.005Z  cursor not honoured"
            in text)
    # a window: only the gaps that overlap it, hours clipped to it
    window = json.loads(cli(db, "coverage", "--json", "--since", "2026-11-30T09:45Z",
                            "--until", "2026-11-30T10:00Z", capsys=capsys))
    assert [g["reason"] for g in window["gaps"]] == ["refused"]
    assert window["hours"] == [{"hour": "2026-11-30T09:00:00.000Z",
                                "covered": round(1 - 60 / 900, 4)}]


def test_coverage_of_a_store_without_a_ledger_says_so(db, capsys) -> None:
    open_store(db).close()
    assert json.loads(cli(db, "coverage", "--json", capsys=capsys)) == {"gaps": [],
                                                                         "hours": []}
    assert "no coverage recorded" in cli(db, "coverage", capsys=capsys)


def test_ledger_records_wait_in_the_spool_while_the_store_is_down(tmp_path) -> None:
    class Outage(storage.BatchStore):
        down = True

        def apply(self, operation):
            if self.down:
                raise storage.PyMongoError("no servers")
            return super().apply(operation)

    inner = mongomock.MongoClient(tz_aware=True).covid19.tweet_batches
    outage = Outage(inner, "outage")
    durable = storage.DurableStore(outage, storage.Spool(tmp_path / "spool.jsonl"), ())
    writer = BatchWriter(durable, lambda: READING, secret=SECRET)
    stats = writer.write_records(at(0), records(post(1, "a"), gap(2, T0, T0 + timedelta(
        minutes=5)), keywords(3, KEYWORDS)))
    assert stats.spooled
    # a restarted job knows the gap and the keyword set from the spool alone
    filters, gaps = ledger.load_state(storage.BatchStore(inner, "up"),
                                      storage.Spool(tmp_path / "spool.jsonl").operations())
    assert filters == {"p1": {"source": "bluesky", "keywords": KEYWORDS}}
    assert [(g.start, g.reason) for g in gaps] == [(T0, "restart past retention")]
    outage.down = False
    assert durable.drain()
    assert [d["kind"] for d in inner.database["coverage"].find()] == ["gap"]
    assert inner.database["filters"].count_documents({}) == 1


# --- keyword sets --------------------------------------------------------------------------


def test_each_document_names_the_keyword_set_in_force(db, tmp_path) -> None:
    store = open_store(db)
    writer = writer_for(store, tmp_path, ("id", "matched"))
    writer.write_records(at(0), records(keywords(1, KEYWORDS),
                                        post(2, "a", matched=["COVID19", 7]),
                                        fields=writer.post_fields))
    [document] = store.window()
    assert document["filter"] == {"source": "bluesky", "keywords": KEYWORDS}
    assert document["posts"] == [{"id": "a", "matched": ["covid19"]}]


def test_two_keyword_sets_are_listed_with_their_first_and_last_batch(db, tmp_path,
                                                                     capsys) -> None:
    store = open_store(db)
    first = writer_for(store, tmp_path)
    first.write_records(at(0), records(keywords(1, KEYWORDS), post(2, "a")))
    first.write_records(at(1), records(post(3, "b")))
    first.write_records(at(2), records())  # an idle batch: no producer heard from
    # the producer restarted with other keywords
    first.write_records(at(3), records(keywords(4, ["long covid", "covid"]), post(5, "c")))
    first.write_records(at(4), records(post(6, "d")))
    store.close()
    listed = json.loads(cli(db, "keywords", "--json", capsys=capsys))
    assert listed == [
        {"source": "bluesky", "keywords": KEYWORDS, "first": "2026-11-30T09:00:00.000Z",
         "last": "2026-11-30T09:00:20.000Z"},
        {"source": "bluesky", "keywords": ["long covid", "covid"],
         "first": "2026-11-30T09:01:00.000Z", "last": "2026-11-30T09:01:20.000Z"},
    ]
    text = cli(db, "keywords", capsys=capsys).splitlines()
    assert text[1] == ("2026-11-30 09:00:00  2026-11-30 09:00:20  bluesky  "
                       "covid, covid19")
    assert text[2].endswith("long covid, covid")


def test_a_restarted_job_keeps_the_keyword_set_and_the_gap_metric(db, tmp_path,
                                                                  caplog) -> None:
    now = datetime.now(UTC).replace(microsecond=0)  # stored times are whole milliseconds
    store = open_store(db)
    writer_for(store, tmp_path).write_records(at(0), records(
        keywords(1, KEYWORDS), post(2, "a"),
        gap(3, now - timedelta(hours=25), now - timedelta(hours=23, minutes=59)),  # 60 s in
        gap(4, now - timedelta(hours=2), now - timedelta(hours=1, minutes=55))))  # 300 s
    store.close()

    # the job starts again: its start-up reads the ledger
    store = open_store(db)
    durable = storage.DurableStore(store, storage.Spool(tmp_path / "spool.jsonl"), ())
    exporter = metrics.JobMetrics(durable, clock=now.timestamp)
    with caplog.at_level(logging.INFO, logger="spark_streaming"):
        filters = spark_streaming._ledger_state(store, durable, exporter)
    assert "keyword sets in force: p1: bluesky keywords covid, covid19" in caplog.text
    assert gauge(exporter, "covid19_job_source_gap_24h_seconds") == pytest.approx(360)
    # and the next batch, before any filter record, names the set in force
    writer = writer_for(store, tmp_path, filters=filters)
    writer.write_records(at(1), records(post(5, "b")))
    documents = sorted(store.window(), key=lambda d: d["_id"])
    assert documents[-1]["filter"] == {"source": "bluesky", "keywords": KEYWORDS}
    # a gap a batch brings adds to the metric once its batch is done
    exporter.batch_completed(writer.write_records(at(2), records(
        gap(6, now - timedelta(minutes=10), now - timedelta(minutes=9)))), 1, 10)
    assert gauge(exporter, "covid19_job_source_gap_24h_seconds") == pytest.approx(420)


def gauge(exporter: metrics.JobMetrics, name: str) -> float:
    text = generate_latest(exporter.registry).decode()
    [value] = [sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name]
    return value


def test_the_gap_metric_counts_overlapping_gaps_once_and_forgets_old_ones() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    recent = ledger.RecentGaps([
        ledger.Gap("bluesky", now - timedelta(minutes=30), now - timedelta(minutes=20)),
        ledger.Gap("twitter", now - timedelta(minutes=25), now - timedelta(minutes=10)),
        ledger.Gap("bluesky", now - timedelta(hours=30), now - timedelta(hours=29)),
    ])
    assert recent.uncovered_seconds(now) == 20 * 60
    assert recent.uncovered_seconds(now + timedelta(hours=24)) == 0.0
