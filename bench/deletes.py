"""What honouring deletions and keeping the coverage ledger cost the job, on a week of
stored posts (not a test).

Usage: python -m bench.deletes [--days 7] [--posts 1500000] [--store DIR]
                               [--mongo-uri URI] [--batches 30]

1. Builds a week of 20 s batches of bench.week_texts' made-up posts, as
   bench.report_week does (30,240 documents, ~1.5 M posts, post fields off as by
   default), each document with its ``post_keys`` and every key in the
   ``<collection>_post_keys`` side collection, in an embedded store in a
   temporary folder or ``--store DIR`` (reused when it holds documents), and with
   ``--mongo-uri`` in that MongoDB too.
2. On each store, applies batches of deletes as the job does
   (``storage.DurableStore.apply`` of one delete operation a batch), ``--batches``
   of each kind: Bluesky's live rate (~5 post deletes/s network-wide, all
   forwarded: 100 a 20 s batch, of which 2 are of stored posts: the store holds
   about 1 post in 50 the network writes), 100 of posts never stored, and 100 of
   stored posts spread over the week. Reports CPU ms (the job's process) and
   wall ms a batch, and deletes a second. Also what the keys add to a batch's
   write (20 posts, the live rate; 500, 5,000 and 50,000 posts, towards
   saturation) and what a delete record costs to parse and verify (executors
   and driver).
3. The ledger over a week: one coverage update a minute (``--reconnects`` new
   spans, each after a gap, a day) and one keyword-set update a batch, into a
   fresh embedded store: documents and bytes it holds, and the time of one
   update at the end of the week.

Prints markdown tables for docs/performance.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import bson
import numpy as np
import pymongo

import config
import control
import storage
import transform
import wire_records
from bench.week_texts import BATCH_SECONDS, SEED, START, tweet_texts, tweets_per_batch
from storage import embedded, ledger, spool

log = logging.getLogger("bench.deletes")

CHUNK = 500  # documents written at a time while building
LIVE_DELETES = 100  # a 20 s batch at ~5 deletes/s
LIVE_HITS = 2  # of them, posts the store holds (about 1 in 50 posts is stored)
LIVE_POSTS = 20  # a 20 s batch at 1 matching post/s (50 post events/s, 1 in 50 matching)
SECRET = b"bench secret, thirty-two chars!!"


def post_id(batch: int, position: int) -> str:
    """The id of post ``position`` of batch ``batch`` in the built week."""
    n = batch * 100_000 + position
    return f"at://did:plc:{n % 50_000:024d}/app.bsky.feed.post/3m{n:011d}"


def batch_sizes(days: float, posts: int) -> list[int]:
    """Posts in each batch of the week (the daily cycle of bench.week_texts, same seed)."""
    batches = round(days * 86_400 / BATCH_SECONDS)
    return tweets_per_batch(batches, posts, np.random.default_rng(SEED)).tolist()


def week(days: float, posts: int) -> Iterator[dict[str, Any]]:
    """The week's documents as the job stores them with post fields off: content,
    the case count, post_keys."""
    rng = np.random.default_rng(SEED)
    sizes = batch_sizes(days, posts)
    texts = tweet_texts(sum(sizes), rng)
    for i, size in enumerate(sizes):
        offset = timedelta(seconds=i * BATCH_SECONDS)
        content = [next(texts) for _ in range(size)]
        keys = [wire_records.post_key(post_id(i, j)) for j in range(size)]
        yield transform.build_document(START + offset, content, 778_052_871,
                                       START - timedelta(days=1), "who", post_keys=keys)


def build_embedded(path: Path, days: float, posts: int) -> storage.BatchStore:
    """The embedded store at ``path`` filled with the week (reused when it holds one);
    documents and side entries written in MontyDB's layout, CHUNK at a time."""
    store = storage.open_store(config.Settings(embedded_db_path=path))
    file = store._embedded_file
    assert file is not None
    if file.is_file() and embedded.find(file, [transform.batch_id(START)]):
        log.info("reusing the week in %s", path)
        return store
    started = time.perf_counter()
    chunk: list[dict[str, Any]] = []
    for n, document in enumerate(week(days, posts), start=1):
        chunk.append(document)
        if len(chunk) == CHUNK:
            _write_chunk(store, chunk)
            chunk = []
            if n % 5_000 == 0:
                log.info("  %d documents", n)
    _write_chunk(store, chunk)
    log.info("built the week in %s in %.0f s", path, time.perf_counter() - started)
    return store


def _write_chunk(store: storage.BatchStore, documents: list[dict[str, Any]]) -> None:
    index = store.post_keys
    assert index.file is not None and store._embedded_file is not None
    embedded.insert_new(index.file, [{"_id": key, "batch": document["_id"]}
                                     for document in documents
                                     for key in document["post_keys"]])
    embedded.insert_new(store._embedded_file, documents)


def build_mongo(uri: str, days: float, posts: int) -> storage.BatchStore:
    """The week in the MongoDB at ``uri`` (database covid19_bench), rebuilt each run."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, tz_aware=True)
    database = client["covid19_bench"]
    database.drop_collection("tweet_batches")
    database.drop_collection("tweet_batches_post_keys")
    store = storage.BatchStore(database["tweet_batches"], f"MongoDB {uri}", client)
    store.ensure_indexes()
    started = time.perf_counter()
    chunk: list[dict[str, Any]] = []
    for document in week(days, posts):
        chunk.append(document)
        if len(chunk) == CHUNK:
            _insert_mongo(store, chunk)
            chunk = []
    _insert_mongo(store, chunk)
    log.info("built the week in MongoDB in %.0f s", time.perf_counter() - started)
    return store


def _insert_mongo(store: storage.BatchStore, documents: list[dict[str, Any]]) -> None:
    if documents:
        store.post_keys.collection.insert_many(
            [{"_id": key, "batch": d["_id"]} for d in documents for key in d["post_keys"]],
            ordered=False)
        store.collection.insert_many(documents, ordered=False)


def timed(call: Callable[[], Any]) -> tuple[float, float]:
    """(CPU ms of this process, wall ms) of ``call()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    call()
    return (time.process_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000


def measure_deletes(store: storage.BatchStore, sizes: list[int], batches: int,
                    tmp: Path) -> list[tuple[str, float, float, int]]:
    """(kind, CPU ms a batch, wall ms a batch, posts removed) of each kind of batch."""
    durable = storage.DurableStore(store, storage.Spool(tmp / f"spool-{id(store)}"), ())
    rng = np.random.default_rng(7)
    stored = [(i, j) for i in rng.integers(0, len(sizes), size=batches * 200).tolist()
              for j in [int(rng.integers(0, sizes[i]))]]
    stored = list(dict.fromkeys(stored))  # each stored post deleted once
    never = iter(range(10**9))
    hits = iter(stored)

    def keys(hit_count: int, total: int) -> list[bytes]:
        found = [wire_records.post_key(post_id(*next(hits))) for _ in range(hit_count)]
        found += [wire_records.post_key(f"at://did:plc:never/app.bsky.feed.post/{next(never)}")
                  for _ in range(total - hit_count)]
        return found

    rows = []
    for kind, hit_count in (("live: 100 deletes, 2 of stored posts", LIVE_HITS),
                            ("100 deletes of posts never stored", 0),
                            ("100 deletes of stored posts", LIVE_DELETES)):
        cpu, wall, removed = [], [], 0
        for _ in range(batches):
            operation = spool.Operation.delete(keys(hit_count, LIVE_DELETES))
            result: list[storage.Applied] = []
            c, w = timed(lambda op=operation, out=result: out.append(durable.apply([op])))
            cpu.append(c)
            wall.append(w)
            removed += result[0].removed
        rows.append((kind, statistics.median(cpu), statistics.median(wall), removed))
    return rows


def measure_writes(store: storage.BatchStore, batches: int) -> list[tuple[str, float, float]]:
    """(what, CPU ms, wall ms) of writing a batch's document with and without its keys."""
    rows = []
    rng = np.random.default_rng(11)
    texts = tweet_texts(2 * (batches * (LIVE_POSTS + 500) + 10 * 5_000 + 3 * 50_000), rng)
    moment = START + timedelta(days=30)
    for size, repeats in ((LIVE_POSTS, batches), (500, batches), (5_000, min(batches, 10)),
                          (50_000, min(batches, 3))):
        for with_keys in (False, True):
            cpu, wall = [], []
            for _ in range(repeats):
                moment += timedelta(seconds=BATCH_SECONDS)
                content = [next(texts) for _ in range(size)]
                keys = ([wire_records.post_key(f"w-{moment.timestamp()}-{n}")
                         for n in range(size)] if with_keys else None)
                document = transform.build_document(moment, content, 1, post_keys=keys)
                c, w = timed(lambda d=document: store.write(d))
                cpu.append(c)
                wall.append(w)
            rows.append((f"{size} posts, {'with' if with_keys else 'without'} post_keys",
                         statistics.median(cpu), statistics.median(wall)))
    return rows


def record_cost(count: int = 20_000) -> tuple[float, float]:
    """µs of CPU per delete record: on the executors (process_line), on the driver
    (record_authentic and the post key)."""
    lines = [transform.encode_tweet({"seq": n, "src": "p1", **control.seal_record(
        SECRET, wire_records.delete_record(f"at://did:plc:x/app.bsky.feed.post/{n}",
                                           START))}).decode() for n in range(count)]
    started = time.process_time()
    records = [transform.process_line(line) for line in lines]
    executors = time.process_time() - started
    started = time.process_time()
    for record in records:
        assert control.record_authentic(SECRET, record.post)
        wire_records.post_key(record.tweet_id)
    driver = time.process_time() - started
    return executors / count * 1e6, driver / count * 1e6


def ledger_week(tmp: Path, reconnects_per_day: int) -> dict[str, Any]:
    """A week of ledger writes into a fresh embedded store: one coverage update a
    minute, a new span (after a gap) ``reconnects_per_day`` times a day, one
    keyword-set update a batch. What it holds at the end, and one update's time."""
    store = storage.open_store(config.Settings(embedded_db_path=tmp / "ledger-db"))
    durable = storage.DurableStore(store, storage.Spool(tmp / "ledger-spool"), ())
    minutes = 7 * 24 * 60
    every = minutes // (7 * reconnects_per_day) if reconnects_per_day else minutes + 1
    span, span_start, events = 0, START, 0
    keyword_set = ledger.filter_in_force({"source": "bluesky", "keywords": list(
        config.Settings().keywords)})
    last_update: tuple[float, float] = (0.0, 0.0)
    for minute in range(1, minutes + 1):
        now = START + timedelta(minutes=minute)
        operations = []
        if minute % every == 0:
            gap_end = now + timedelta(seconds=30)
            operations.append(spool.Operation(spool.COVERAGE, ledger.coverage_document(
                "gap", {"source": "bluesky", "host": "wss://jetstream1.us-east.bsky.network",
                        "from": wire_records.iso_time(now), "to": wire_records.iso_time(gap_end),
                        "reason": "watchdog stall", "refused": 0}, "p1", now)))
            span, span_start, events = span + 1, gap_end, 0
        events += 3_000
        operations.append(spool.Operation(spool.COVERAGE, ledger.coverage_document(
            "coverage", {"span": f"p1-{span}", "source": "bluesky",
                         "host": "wss://jetstream1.us-east.bsky.network",
                         "from": wire_records.iso_time(span_start),
                         "to": wire_records.iso_time(now), "events": events,
                         "posts": events // 10, "matched": events // 500, "refused": 0},
            "p1", now)))
        for batch in range(3):  # 20 s batches
            operations.append(spool.Operation(spool.FILTER, ledger.filter_document(
                keyword_set, "p1", now + timedelta(seconds=20 * batch))))
        last_update = timed(lambda ops=operations: durable.apply(ops))
    coverage_file = tmp / "ledger-db" / "covid19" / "coverage.collection"
    coverage = store.sibling(ledger.COVERAGE_COLLECTION)
    documents = list(coverage.find({}))
    found = {
        "coverage documents": len(documents),
        "coverage BSON bytes": sum(len(bson.encode(d)) for d in documents),
        "coverage SQLite bytes": _file_bytes(coverage_file),
        "filters documents": store.sibling(ledger.FILTERS_COLLECTION).count_documents({}),
        "last minute's writes, CPU ms": last_update[0],
        "last minute's writes, wall ms": last_update[1],
    }
    store.close()
    return found


def _file_bytes(file: Path) -> int:
    """A SQLite file's bytes with its WAL, if any."""
    return sum(path.stat().st_size for path in (file, file.with_name(file.name + "-wal"))
               if path.exists())


def say(text: str) -> None:
    """One line of the results, on standard output."""
    sys.stdout.write(text + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--posts", type=int, default=1_500_000)
    parser.add_argument("--store", type=Path, help="embedded store folder (reused)")
    parser.add_argument("--mongo-uri", help="also measure this MongoDB")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--reconnects", type=int, default=4,
                        help="new coverage spans (after a gap) a day in the ledger's week")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-deletes-") as folder:
        tmp = Path(folder)
        sizes = batch_sizes(args.days, args.posts)
        stores = [("embedded (MontyDB, SQLite)",
                   build_embedded(args.store or tmp / "db", args.days, args.posts))]
        if args.mongo_uri:
            stores.append(("MongoDB", build_mongo(args.mongo_uri, args.days, args.posts)))
        say(f"\na week: {len(sizes):,} documents, {sum(sizes):,} posts\n")
        index_file = stores[0][1].post_keys.file
        assert index_file is not None
        size = _file_bytes(index_file)
        say(f"embedded side collection {index_file.name}: {size / 1e6:,.1f} MB "
            f"({size / sum(sizes):.0f} bytes a post)\n")
        say("| store | batch of deletes | CPU ms a batch | wall ms a batch | deletes/s | "
              "posts removed |")
        say("|---|---|---:|---:|---:|---:|")
        for name, store in stores:
            for kind, cpu, wall, removed in measure_deletes(store, sizes, args.batches, tmp):
                say(f"| {name} | {kind} | {cpu:.1f} | {wall:.1f} | "
                      f"{LIVE_DELETES / wall * 1000:,.0f} | {removed:,} |")
        say("\n| store | batch written | CPU ms | wall ms |")
        say("|---|---|---:|---:|")
        for name, store in stores:
            for what, cpu, wall in measure_writes(store, args.batches):
                say(f"| {name} | {what} | {cpu:.1f} | {wall:.1f} |")
        executors, driver = record_cost()
        say(f"\na delete record: {executors:.1f} µs CPU on the executors (parse), "
              f"{driver:.1f} µs on the driver (mac and key)")
        say("\nthe ledger's week:")
        for name, value in ledger_week(tmp, args.reconnects).items():
            say(f"  {name}: {value:,.1f}" if isinstance(value, float) else
                  f"  {name}: {value:,}")
        for _, store in stores:
            store.close()
    return 0


if __name__ == "__main__":
    os.nice(5)  # the machine is shared
    raise SystemExit(main())
