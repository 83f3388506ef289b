"""What storing post fields costs per post, off and on: the executors', the pickling's
and the driver's CPU time over Bluesky-shaped wire lines, and the Bluesky source's
cost of a post's place in the conversation, as Markdown."""

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
from storage import Applied

CONVERSATION = ("reply_to", "reply_root", "quote_of", "hashtags", "links", "mentions")
MODES = {"off": (), "on: id,created_at,lang,url": ("id", "created_at", "lang", "url"),
         "on: the first five": ("id", "created_at", "lang", "url", "author_id"),
         "on: id,created_at,lang + reply_to,quote_of,hashtags,links":
             ("id", "created_at", "lang", "reply_to", "quote_of", "hashtags", "links"),
         "on: all eleven (the five + conversation)":
             ("id", "created_at", "lang", "url", "author_id", *CONVERSATION)}
#: One post in N has each part of a conversation (an assumption, roughly Bluesky's
#: mix: about half the posts are replies).
SHARES = {"reply": 2, "quote": 10, "link": 5, "tags": 6, "mention": 8}
PICKLE_BATCH = 1_000  # records per pickled batch (Spark's batched serializer)
START = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def records(count: int) -> list[dict[str, Any]]:
    """``count`` Bluesky post records (with their did and rkey as ``_did``, ``_rkey``),
    the conversation parts in the shares of SHARES."""
    factory = TweetFactory(pool_size=20_000)
    made = []
    for n in range(count):
        tweet = factory.next()
        did, rkey = f"did:plc:{int(tweet['author_id']) % 10**12:024d}", f"3m{n:011d}"
        text = tweet["text"]
        record: dict[str, Any] = {
            "$type": "app.bsky.feed.post", "text": text, "langs": [tweet["lang"]],
            "createdAt": (START + timedelta(milliseconds=37 * n)).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"), "_did": did, "_rkey": rkey}
        other = f"at://did:plc:{n * 7919 % 10**12:024d}/app.bsky.feed.post/3m{n // 3:011d}"
        if n % SHARES["reply"] == 0:
            record["reply"] = {"root": {"uri": other, "cid": "bafyreiroot"},
                               "parent": {"uri": other + "p", "cid": "bafyreiparent"}}
        if n % SHARES["quote"] == 1:
            record["embed"] = {"$type": "app.bsky.embed.record",
                               "record": {"uri": other + "q", "cid": "bafyreiquote"}}
        size = len(text.encode("utf-8"))
        facets = []
        if n % SHARES["link"] == 2 and size > 10:
            facets.append(_facet(0, 10, "link", uri=f"https://example.org/news/{n}/covid"))
        if n % SHARES["tags"] == 3:
            record["tags"] = ["covid"]
            if size > 20:
                facets.append(_facet(12, 20, "tag", tag="COVID19"))
        if n % SHARES["mention"] == 4 and size > 30:
            facets.append(_facet(22, 30, "mention", did=f"did:plc:{n % 977:024d}"))
        if facets:
            record["facets"] = facets
        made.append(record)
    return made


def _facet(start: int, end: int, kind: str, **feature: str) -> dict[str, Any]:
    return {"index": {"byteStart": start, "byteEnd": end},
            "features": [{"$type": f"app.bsky.richtext.facet#{kind}", **feature}]}


def frames(count: int) -> list[str]:
    """``count`` Jetstream frames of new posts (the records of :func:`records`)."""
    out = []
    for n, record in enumerate(records(count)):
        did, rkey = record.pop("_did"), record.pop("_rkey")
        out.append(json.dumps({"did": did, "time_us": 1_796_000_000_000_000 + n,
                               "kind": "commit", "commit": {
                                   "rev": "3mrev", "operation": "create",
                                   "collection": "app.bsky.feed.post", "rkey": rkey,
                                   "cid": "bafyreipost", "record": record}}))
    return out


def wire_lines(count: int) -> list[str]:
    """``count`` wire lines as stream.py sends the Bluesky posts of :func:`frames`."""
    from sources.bluesky import read_event, wire_tweet

    return [json.dumps(wire_tweet(read_event(frame)[1])) for frame in frames(count)]


def source_cost(count: int, repeat: int) -> dict[str, float]:
    """CPU µs a post of ``read_event`` + ``wire_tweet`` (a matching post's path in the
    source, keywords aside) and of ``conversation_fields`` alone, best of ``repeat``;
    and the mean wire bytes a post, with and without the conversation fields."""
    from sources.bluesky import read_event, wire_tweet
    from sources.bluesky_conversation import conversation_fields

    made = frames(count)
    posts = [read_event(frame)[1] for frame in made]
    best = {"source": float("inf"), "conversation": float("inf")}
    for _ in range(repeat):
        t0 = time.process_time()
        for frame in made:
            wire_tweet(read_event(frame)[1])
        t1 = time.process_time()
        for post in posts:
            conversation_fields(post)
        t2 = time.process_time()
        best["source"] = min(best["source"], (t1 - t0) / count * 1e6)
        best["conversation"] = min(best["conversation"], (t2 - t1) / count * 1e6)
    tweets = [wire_tweet(post) for post in posts]
    best["wire_bytes"] = sum(len(json.dumps(t)) for t in tweets) / count
    best["plain_bytes"] = sum(len(json.dumps({k: v for k, v in t.items()
                                              if k not in CONVERSATION})) for t in tweets) / count
    return best


class EncodingStore:
    """Stands in for the store: BSON-encodes each document, as pymongo does."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, documents: list[dict[str, Any]]) -> bool:
        for document in documents:
            self.bytes += len(bson.encode(document))
        return True

    def apply(self, items: list[Any]) -> Applied:
        """What BatchWriter calls (since the ledger): the documents among ``items`` are
        encoded; the posts have no deletes or ledger records here."""
        self.write([item for item in items if isinstance(item, dict)])
        return Applied(stored=True)

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
    source = source_cost(min(posts, 50_000), repeat)
    shares = ", ".join(f"{part} 1 in {n}" for part, n in SHARES.items())
    rows += ["", f"Posts with conversation parts in these shares: {shares}. The source, a "
             f"matching post (keywords aside): `read_event` + `wire_tweet` "
             f"{source['source']:.2f} µs, of which `conversation_fields` "
             f"{source['conversation']:.2f} µs; its wire line "
             f"{source['wire_bytes']:.0f} bytes, {source['plain_bytes']:.0f} without the "
             "conversation fields."]
    return rows
