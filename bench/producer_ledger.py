"""What the producer's account of its reading costs it: provenance a post, forwarding
a delete, and a week of the coverage ledger (not a test).

Usage: python -m bench.producer_ledger [--frames 20000] [--seconds 3] [--reconnects 4]

1. Provenance. Each matching post's wire line names the keywords that chose it. On
   bench.jetstream_frames' frames: µs of CPU a matching post for
   ``KeywordMatcher.matching`` against ``matches`` (the yes or no it replaced), and
   for its wire line with ``matched`` against without (``wire_tweet``, then
   ``transform.encode_tweet``, what the journal writes); and, for the posts that do
   not match (49 in 50 on the network), ``matching`` against ``matches``.
2. Deletes. µs of CPU a delete frame through ``BlueskySource.on_frame`` as stream.py
   runs it (read, the record made, sealed with the control secret, encoded as the
   journal writes it) against the same frame skipped (no secret: what stream.py did
   before deletes were forwarded); and what Bluesky's ~5 deletes a second cost.
   (The journal's commits and the job's side: bench.cost's ``bluesky-50-deletes`` row
   and bench.deletes.)
3. The ledger's week, from the producer's own ``CoverageLedger`` on a made-up clock:
   Jetstream read at 50 events a second for a week, ``--reconnects`` reconnections a
   day to the next host, each after a 30 s gap (as bench.deletes' week) or none; the
   records it sends (how many, their bytes in the journal), and the documents they
   leave in the job's ``coverage`` collection (how many, their BSON bytes).

Prints markdown for docs/performance.md.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson

import config
import control
import transform
from bench.jetstream_frames import make_frames
from journal import Journal
from sources.bluesky import POST, BlueskySource, KeywordMatcher, Post, read_event, wire_tweet
from sources.coverage import CoverageLedger
from storage import ledger

SECRET = b"a bench control secret, 32 chars"
SEAL = functools.partial(control.seal_record, SECRET)
KEYWORDS = config.Settings().keywords
HOSTS = config.Settings().jetstream_urls
DELETES_PER_SECOND = 5  # Bluesky's network-wide rate of post deletes
START_US = 1_796_000_000_000_000


ROUNDS = 5  # each comparison alternates its two sides this many times: the median of each


def cpu_us(work: Callable[[Any], Any], items: Sequence[Any], seconds: float) -> float:
    """µs of CPU an item for ``work``, repeated over ``items`` for ``seconds`` of CPU."""
    done = 0
    started = time.process_time()
    while time.process_time() - started < seconds:
        for item in items:
            work(item)
        done += len(items)
    return (time.process_time() - started) / done * 1e6


def compare(before: Callable[[Any], Any], after: Callable[[Any], Any], items: Sequence[Any],
            seconds: float) -> tuple[float, float]:
    """µs of CPU an item for each side, measured in turns (the machine is shared: a
    busy moment falls on both), the median of ROUNDS turns each."""
    firsts, seconds_ = [], []
    for _ in range(ROUNDS):
        firsts.append(cpu_us(before, items, seconds / ROUNDS))
        seconds_.append(cpu_us(after, items, seconds / ROUNDS))
    return statistics.median(firsts), statistics.median(seconds_)


def posts_of(frames: list[str]) -> list[Post]:
    return [what for verdict, what, _ in map(read_event, frames)
            if verdict == POST and isinstance(what, Post)]


def provenance(frames: int, seconds: float) -> list[str]:
    matcher = KeywordMatcher(KEYWORDS)
    matching = [post for post in posts_of(make_frames(frames, 1.0))
                if matcher.matches(post.text, post.tags)]
    others = [post for post in posts_of(make_frames(frames, 0.0))
              if not matcher.matches(post.text, post.tags)]
    chosen = {id(post): matcher.matching(post.text, post.tags) for post in matching}
    before, after = compare(lambda p: matcher.matches(p.text, p.tags),
                            lambda p: matcher.matching(p.text, p.tags), matching, seconds)
    plain, named = compare(lambda p: transform.encode_tweet(wire_tweet(p)),
                           lambda p: transform.encode_tweet(wire_tweet(p, chosen[id(p)])),
                           matching, seconds)
    other_before, other_after = compare(lambda p: matcher.matches(p.text, p.tags),
                                        lambda p: matcher.matching(p.text, p.tags), others,
                                        seconds)
    extra = sum(len(transform.encode_tweet(wire_tweet(p, chosen[id(p)])))
                - len(transform.encode_tweet(wire_tweet(p))) for p in matching) / len(matching)
    added = (after - before) + (named - plain)
    per_frame = (other_after - other_before) * 49 / 50 + added / 50
    return [
        f"Provenance, µs of CPU a post (one core; {len(matching):,} matching and "
        f"{len(others):,} other posts of bench.jetstream_frames):", "",
        "| a post | without provenance | with | added |", "|---|---:|---:|---:|",
        f"| matching: is it about the keywords (`matches`), which chose it (`matching`) "
        f"| {before:.2f} | {after:.2f} | {after - before:+.2f} |",
        f"| matching: its wire line (`wire_tweet` + `encode_tweet`), `matched` in it "
        f"| {plain:.2f} | {named:.2f} | {named - plain:+.2f} |",
        f"| not matching (49 in 50): `matches`, `matching` | {other_before:.2f} "
        f"| {other_after:.2f} | {other_after - other_before:+.2f} |", "",
        f"A matching post: {added:+.2f} µs and {extra:.0f} more bytes on the wire; a network "
        f"frame at 1 match in 50: {per_frame:+.3f} µs.", ""]


def deletes(frames: int, seconds: float) -> list[str]:
    made = [frame for frame in make_frames(frames * 3, 0.0, delete_share=0.5)
            if '"operation": "delete"' in frame][:frames]

    def through(seal: Any) -> Callable[[str], None]:
        def emit(line: dict[str, Any], position: Any = None) -> bool:
            transform.encode_tweet(line)
            return True

        source = BlueskySource(["ws://bench/subscribe"], KeywordMatcher(KEYWORDS), emit,
                               seal=seal)
        source.RECENT_DELETES = 10  # each frame a new delete, not a repeat
        return source.on_frame

    skipped, forwarded = compare(through(None), through(SEAL), made, seconds)
    share = (forwarded - skipped) * DELETES_PER_SECOND / 1e6 * 100
    return [
        f"Deletes, µs of CPU a delete frame through `BlueskySource.on_frame` ({len(made):,} "
        "frames):", "",
        "| a delete frame | µs |", "|---|---:|",
        f"| skipped (no secret: as before deletes were forwarded) | {skipped:.2f} |",
        f"| forwarded: the record made, sealed and encoded for the journal | {forwarded:.2f} |",
        "",
        f"Forwarding adds {forwarded - skipped:.1f} µs a delete: at Bluesky's ~"
        f"{DELETES_PER_SECOND} deletes a second, {share:.4f} % of a core (before the "
        "journal's commits).", ""]


class Sent:
    """The ledger's ``put``: each record kept, and journaled as stream.py would."""

    def __init__(self, folder: Path) -> None:
        self.records: list[dict[str, Any]] = []
        self.journal = Journal(folder, 2**30)

    def __call__(self, record: dict[str, Any], position: Any = None) -> bool:
        self.records.append(record)
        return self.journal.put(record, position)


def ledger_week(reconnects: int, gaps: bool, folder: Path) -> dict[str, float]:
    """A week of the producer's ledger at 50 events a second: the records sent, and the
    documents the job would keep of them (the latest of each ``_id``)."""
    clock = [0.0]
    sent = Sent(folder)
    ledger_ = CoverageLedger("bluesky", sent, SEAL, monotonic=lambda: clock[0])
    seconds = [0]
    ledger_.counts = lambda: (50 * seconds[0], 47 * seconds[0], seconds[0], 0)
    ledger_.declare(keywords=list(KEYWORDS))
    host = 0
    ledger_.open(HOSTS[host], START_US)
    every = 86_400 // reconnects if reconnects else 10**9
    now = START_US
    for second in range(1, 7 * 86_400 + 1):
        clock[0] = seconds[0] = second
        now += 1_000_000
        if second % every == 0:
            host = (host + 1) % len(HOSTS)
            if gaps:  # the next host no longer held the last 30 s
                ledger_.close_span()
                ledger_.gap(HOSTS[host], now, now + 30_000_000, "cursor not honoured")
                now += 30_000_000
                ledger_.open(HOSTS[host], now)
            else:  # it sends from the rewound cursor: no gap, another host's span
                ledger_.open(HOSTS[host], now - 5_000_000)
        ledger_.note(now)
        ledger_.tick()
    ledger_.close()
    journal_bytes = sent.journal.bytes_held
    sent.journal.close()
    documents: dict[str, dict[str, Any]] = {}
    batch = datetime(2026, 11, 30, tzinfo=UTC)
    for record in sent.records:
        if record["kind"] in ("coverage", "gap"):
            document = ledger.coverage_document(record["kind"], record, "p1", batch)
            documents[document["_id"]] = document
    return {"records sent": len(sent.records), "journal bytes": journal_bytes,
            "coverage documents": len(documents),
            "coverage BSON bytes": sum(len(bson.encode(d)) for d in documents.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reconnects", type=int, default=4,
                        help="reconnections a day in the ledger's week")
    args = parser.parse_args(argv)
    logging.getLogger("sources.coverage").setLevel(logging.ERROR)  # the week's made-up gaps
    out = [*provenance(args.frames, args.seconds), *deletes(args.frames, args.seconds)]
    out += [f"The ledger's week (50 events/s, {args.reconnects} reconnections a day):", "",
            "| reconnections | records sent | journal bytes | coverage documents "
            "| BSON bytes |", "|---|---:|---:|---:|---:|"]
    for gaps in (True, False):
        with tempfile.TemporaryDirectory(prefix="bench-ledger-") as folder:
            found = ledger_week(args.reconnects, gaps, Path(folder))
        what = "each after a 30 s gap" if gaps else "none losing anything"
        out.append(f"| {what} | {found['records sent']:,} | {found['journal bytes']:,} "
                   f"| {found['coverage documents']:,} | {found['coverage BSON bytes']:,} |")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    os.nice(5)  # the machine is shared
    raise SystemExit(main())
