"""What storing post fields costs per post, off and on: the executors', the pickling's
and the driver's CPU time over Bluesky-shaped wire lines, as a Markdown table."""

from __future__ import annotations

import importlib
import json
import pickle
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson

from bench.tweets import TweetFactory

MODES = {"off": (), "on: id,created_at,lang,url": ("id", "created_at", "lang", "url"),
         "on: all five": ("id", "created_at", "lang", "url", "author_id")}
PICKLE_BATCH = 1_000  # records per pickled batch (Spark's batched serializer)
START = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def wire_lines(count: int) -> list[str]:
    """``count`` wire lines shaped as stream.py sends Bluesky posts."""
    factory = TweetFactory(pool_size=20_000)
    lines = []
    for n in range(count):
        tweet = factory.next()
        did, rkey = f"did:plc:{int(tweet['author_id']) % 10**12:024d}", f"3m{n:011d}"
        lines.append(json.dumps({
            "id": f"at://{did}/app.bsky.feed.post/{rkey}", "text": tweet["text"],
            "created_at": (START + timedelta(milliseconds=37 * n)).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "lang": tweet["lang"], "author_id": did,
            "url": f"https://bsky.app/profile/{did}/post/{rkey}"}))
    return lines


class EncodingStore:
    """Stands in for the store: BSON-encodes each document, as pymongo does."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, documents: list[dict[str, Any]]) -> bool:
        for document in documents:
            self.bytes += len(bson.encode(document))
        return True

    def record_progress(self, reached: dict[str, int]) -> bool:
        return True

    def drain(self) -> bool:
        return True


def run_mode(modules: tuple[Any, Any, Any], lines: list[str], batch: int,
             fields: tuple[str, ...]) -> dict[str, float]:
    """CPU seconds of each step over ``lines`` in batches of ``batch``, and the bytes
    stored."""
    transform, spark_streaming, scrape = modules
    reading = scrape.CaseCount(704_753_890, datetime(2024, 4, 13, tzinfo=UTC),
                               "worldometers", True)
    store = EncodingStore()
    extra = {"post_fields": fields} if fields else {}
    writer = spark_streaming.BatchWriter(store, lambda: reading, **extra)
    process = (transform.partition_processor(fields) if fields
               else transform.process_partition)
    steps = {"executors": 0.0, "pickle": 0.0, "driver": 0.0}
    for number, start in enumerate(range(0, len(lines), batch)):
        chunk = lines[start:start + batch]
        t0 = time.process_time()
        records = list(process(iter(chunk)))
        t1 = time.process_time()
        shipped = [pickle.loads(pickle.dumps(records[i:i + PICKLE_BATCH], 5))
                   for i in range(0, len(records), PICKLE_BATCH)]
        records = [record for part in shipped for record in part]
        t2 = time.process_time()
        writer.write_records(START + timedelta(seconds=20 * number), records)
        t3 = time.process_time()
        steps["executors"] += t1 - t0
        steps["pickle"] += t2 - t1
        steps["driver"] += t3 - t2
    steps["stored_bytes"] = store.bytes
    return steps


def load_modules(folder: str | None) -> tuple[Any, Any, Any]:
    """transform, spark_streaming and scrape: this checkout's, or ``folder``'s (in a
    subprocess of its own, see :func:`baseline`)."""
    if folder is not None:
        sys.path.insert(0, folder)
    return tuple(importlib.import_module(name)
                 for name in ("transform", "spark_streaming", "scrape"))  # type: ignore


def measure(lines: list[str], batch: int, repeat: int) -> dict[str, dict[str, float]]:
    modules = load_modules(None)
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):  # alternate, so that every mode sees the same machine load
        for name, fields in MODES.items():
            steps = run_mode(modules, lines, batch, fields)
            total = steps["executors"] + steps["pickle"] + steps["driver"]
            if name not in best or total < best[name]["total"]:
                best[name] = {**steps, "total": total}
    return best


def off_in_a_process(folder: str, posts: int, batch: int) -> dict[str, float]:
    """One run of the off path of the checkout in ``folder``, in a fresh process (so
    that the heap, hence the garbage collector's work, is the same for each)."""
    code = ("import json, sys; from bench import post_fields_cost as p; "
            f"lines = p.wire_lines({posts}); m = p.load_modules({folder!r}); "
            f"json.dump(p.run_mode(m, lines, {batch}, ()), sys.stdout)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    steps = json.loads(out)
    steps["total"] = steps["executors"] + steps["pickle"] + steps["driver"]
    return steps


def baseline(folder: str, posts: int, batch: int, repeat: int
             ) -> dict[str, dict[str, float]]:
    """The off path of this checkout and of ``folder``'s, each in fresh processes,
    alternating; the fastest run of each."""
    here = str(Path(__file__).resolve().parents[1])
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        for name, where in (("off, fresh process", here),
                            (f"off, {folder} (before post fields), fresh process", folder)):
            steps = off_in_a_process(where, posts, batch)
            if name not in best or steps["total"] < best[name]["total"]:
                best[name] = steps
    return best


def table(posts: int = 200_000, batch: int = 10_000, repeat: int = 3,
          baseline_folder: str | None = None) -> list[str]:
    """The benchmark's result as Markdown lines."""
    lines = wire_lines(posts)
    results = measure(lines, batch, repeat)
    if baseline_folder:
        results.update(baseline(baseline_folder, posts, batch, repeat))
    off = results["off"]["total"]
    rows = [f"{posts:,} Bluesky-shaped posts in batches of {batch:,}, one core, CPU time, "
            f"best of {repeat}; µs a post:", "",
            "| post fields | executors | pickle to the driver | driver (documents, BSON) "
            "| total | vs off | stored bytes a post |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, steps in results.items():
        us = {key: steps[key] / posts * 1e6 for key in ("executors", "pickle", "driver",
                                                        "total")}
        rows.append(f"| {name} | {us['executors']:.2f} | {us['pickle']:.2f} "
                    f"| {us['driver']:.2f} | {us['total']:.2f} "
                    f"| {(steps['total'] - off) / posts * 1e6:+.2f} "
                    f"| {steps['stored_bytes'] / posts:.0f} |")
    return rows
