"""Issue 25's acceptance, with the real programs: a dataset that accounts for itself.

One run of spark_streaming.py, two runs of stream.py against the local Jetstream
stand-in (tests/processes.py), in the order a day could bring them:

* deletes of posts still held in the journal (the job not started yet), of stored
  posts, and of a post in the same batch as its delete: afterwards no document and no
  export (csv, jsonl, parquet) holds their texts or ids, and the counts say how many
  were removed;
* a restart whose cursor the host no longer holds (its retention moved past it: it
  starts at its oldest kept event), and a host that goes quiet until the watchdog
  reconnects after it, too, has moved past: ``report.py coverage --json`` names both
  gaps within 1 s of their true bounds, with their reasons;
* the two runs with different keywords: ``report.py keywords --json`` lists both
  sets with their times, and each post says which keywords chose it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from processes import (
    PROJECT,
    T0_US,
    JetstreamStandIn,
    Program,
    clean_env,
    delete_event,
    free_port,
    job,
    post_event,
)
from test_metrics import poll

import config
import storage
import transform
import wire_records

pytestmark = pytest.mark.e2e
SECOND = 1_000_000
POST = "app.bsky.feed.post"
REMOVED = re.compile(r"\((\d+) deletes: (\d+) posts removed\)")


def at(seconds: float) -> int:
    return T0_US + int(seconds * SECOND)


def when(seconds: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=at(seconds))


def uri(rkey: str) -> str:
    return f"at://did:plc:alice/{POST}/{rkey}"


def bluesky(tmp_path: Path, url: str, port: int, ack_port: int, metrics_port: int,
            keywords: str, stale_seconds: float = 2) -> Program:
    program = Program(["stream.py", "--source", "bluesky", "--jetstream-url", url,
                       "--keywords", keywords, "--stale-seconds", str(stale_seconds),
                       "--port", str(port), "--ack-port", str(ack_port),
                       "--metrics-port", str(metrics_port),
                       "--journal-path", str(tmp_path / "journal"),
                       "--control-secret-file", str(tmp_path / "control.secret")])
    program.wait_for_text("connected to ")
    return program


def report(tmp_path: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "report.py", *args, "--embedded-db-path",
                             str(tmp_path / "db")], cwd=PROJECT, env=clean_env(),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def removed(consumer: Program) -> tuple[int, int]:
    """(deletes applied, posts removed) that the job's batch lines tell of."""
    found = [REMOVED.search(line) for line in consumer.lines]
    return (sum(int(m.group(1)) for m in found if m), sum(int(m.group(2)) for m in found if m))


def test_deletes_gaps_and_keyword_sets_are_accounted_for(tmp_path: Path, page: Any) -> None:
    jetstream = JetstreamStandIn()
    jetstream.retention_us = 3600 * SECOND  # the host keeps an hour (Jetstream: a day)
    port, ack_port, metrics_port = free_port(), free_port(), free_port()
    posts = {  # rkey -> (time in s after T0, text)
        "a0": (0, "masks and covid"), "a1": (1, "covid post deleted while journaled"),
        "a2": (2, "#COVID19 tagged"), "a3": (3, "covid again"),
        "b0": (10, "covid b0"), "b1": (11, "covid b1"), "b2": (12, "covid stored then deleted"),
        "b3": (13, "covid b3"),
        "c0": (20, "covid deleted in its own batch"), "c1": (21, "covid c1"),
        "d0": (4000, "SARS-CoV-2 after the restart"), "d1": (4001, "covid d1"),
        "e0": (8000, "covid after the stall"),
    }
    deleted = ("a1", "b2", "c0")

    def event(rkey: str) -> dict[str, Any]:
        seconds, text = posts[rkey]
        return post_event(rkey, text, at(seconds))

    # Before its first event the producer has no cursor: a connection it opens again
    # after a silence starts at the live tip, as Jetstream's does, so what the stand-in
    # was given meanwhile (with times of its own, not the host's clock) would never
    # come. Its first silence is therefore long; from the first event on, every
    # connection asks for a cursor, and the stall below needs a short one.
    source = bluesky(tmp_path, jetstream.url, port, ack_port, metrics_port, "covid,covid19",
                     stale_seconds=120)
    consumer = None
    try:
        jetstream.wait_for_connections(1)  # the client logs "connected" before the host
        # files it among the connections that get what is published
        # the job is not started yet: a1 and its delete wait in the journal
        jetstream.publish(*map(event, ("a0", "a1", "a2", "a3")), delete_event("a1", at(4)),
                          delete_event("zz", at(4.5)))  # a post never stored
        figures = poll(metrics_port,
                       lambda figures: figures.get("covid19_producer_deletes_total") == 2)
        assert figures.get("covid19_producer_deletes_total") == 2, source.log
        consumer = job(tmp_path, port, ack_port, page.url, "--embedded-db-path",
                       str(tmp_path / "db"), "--post-fields", "id,matched")
        consumer.wait_for(lambda _: consumer.kept() >= 3)
        jetstream.publish(*map(event, ("b0", "b1", "b2", "b3")))
        consumer.wait_for(lambda _: consumer.kept() >= 7)
        jetstream.publish(delete_event("b2", at(14)))  # stored: removed from its document
        consumer.wait_for(lambda _: removed(consumer)[1] >= 2)
        # c0 and its delete come together: in one batch (or in two, then as b2 was)
        jetstream.publish(event("c0"), delete_event("c0", at(20.5)), event("c1"))
        consumer.wait_for(lambda _: consumer.kept() >= 8 and removed(consumer)[1] >= 3)
        assert source.stop() == 0, source.log  # the last event read: c1, T0 + 21 s

        # an hour later the host no longer keeps what the cursor asks for
        jetstream.publish(event("d0"), event("d1"))
        source = bluesky(tmp_path, jetstream.url, port, ack_port, metrics_port,
                         "covid,sars-cov-2")
        consumer.wait_for(lambda _: consumer.kept() >= 10)
        # the host goes quiet (the watchdog may already have left it once for having
        # nothing to send: that lost nothing); by the time the watchdog leaves it, d1
        # is no longer kept
        jetstream.stall()
        jetstream.publish(event("e0"))
        source.wait_for_text("no event from")
        consumer.wait_for(lambda _: consumer.kept() >= 11)  # e0, after the gap's record
        assert consumer.stop() == 0, consumer.log
        assert source.stop(signal.SIGTERM) == 0, source.log
    finally:
        source.kill()
        if consumer is not None:
            consumer.kill()
        jetstream.close()
    assert "Traceback" not in source.log + consumer.log

    # --- deletes: no document holds them, the counts say how many were removed
    store = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    try:
        documents = list(store.collection.find().sort("timestamp", 1))
    finally:
        store.close()
    kept = [rkey for rkey in posts if rkey not in deleted]
    stored = [text for doc in documents for text in doc["content"]]
    assert stored == [transform.clean_text(posts[rkey][1]) for rkey in kept]
    ids = [post["id"] for doc in documents for post in doc["posts"]]
    assert ids == [uri(rkey) for rkey in kept]
    keys = {bytes(key) for doc in documents for key in doc["post_keys"]}
    assert not keys & {wire_records.post_key(uri(rkey)) for rkey in deleted}
    assert removed(consumer) == (4, 3)  # zz's delete found nothing to remove
    assert sum(doc.get("deleted", 0) for doc in documents) >= 1  # b2, from its document
    # which keywords chose each post, under the set in force then
    matched = {post["id"]: post["matched"] for doc in documents for post in doc["posts"]}
    assert matched[uri("a2")] == ["covid19"] and matched[uri("d0")] == ["sars-cov-2"]
    assert matched[uri("d1")] == ["covid"] and matched[uri("e0")] == ["covid"]
    assert {json.dumps(doc["filter"]) for doc in documents} == {
        json.dumps({"source": "bluesky", "keywords": keywords})
        for keywords in (["covid", "covid19"], ["covid", "sars-cov-2"])}

    for fmt in ("csv", "jsonl", "parquet"):
        out = tmp_path / f"posts.{fmt}"
        report(tmp_path, "export", "--format", fmt, "--out", str(out))
        if fmt == "parquet":
            pq = pytest.importorskip("pyarrow.parquet")
            exported = json.dumps(pq.read_table(out).to_pylist(), default=str)
        else:
            exported = out.read_text(encoding="utf-8")
        for rkey in deleted:
            assert posts[rkey][1] not in exported and uri(rkey) not in exported, (fmt, rkey)
        assert all(uri(rkey) in exported for rkey in kept), fmt

    # --- gaps: named within 1 s of their true bounds, with their reasons
    coverage = json.loads(report(tmp_path, "coverage", "--json"))
    found = [(datetime.fromisoformat(gap["from"]), datetime.fromisoformat(gap["to"]),
              gap["reason"], gap["refused"]) for gap in coverage["gaps"]]
    truth = [(when(21), when(4000), "restart past retention"),  # c1 .. d0
             (when(4001), when(8000), "watchdog stall")]  # d1 .. e0
    assert len(found) == len(truth), coverage["gaps"]
    for (start, end, reason, refused), (true_start, true_end, true_reason) in zip(
            found, truth, strict=True):
        assert abs((start - true_start).total_seconds()) <= 1, (start, true_start)
        assert abs((end - true_end).total_seconds()) <= 1, (end, true_end)
        assert (reason, refused) == (true_reason, 0)
    hours = {hour["hour"]: hour["covered"] for hour in coverage["hours"]}
    assert hours["2026-11-30T01:00:00.000Z"] == 0.0  # inside the first gap
    assert 0 < hours["2026-11-30T00:00:00.000Z"] < 1  # read from 00:53:20 to 00:53:41

    # --- keyword sets: both, with their times, the first before the second
    sets = json.loads(report(tmp_path, "keywords", "--json"))
    assert [found["keywords"] for found in sets] == [["covid", "covid19"],
                                                     ["covid", "sars-cov-2"]]
    first, second = ((datetime.fromisoformat(s["first"]), datetime.fromisoformat(s["last"]))
                     for s in sets)
    assert first[0] <= first[1] < second[0] <= second[1]
