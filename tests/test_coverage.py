"""The producer's coverage ledger: spans and gaps as sealed records, and the rules by
which a Jetstream reader finds its gaps (a cursor not honoured, a restart past the
host's retention, a watchdog stall), against the local Jetstream stand-in."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import T0_US, JetstreamStandIn, capture_logs, post_event

import control
import wire_records
from sources.bluesky import BlueskySource, KeywordMatcher
from sources.coverage import STATE_FILE, CoverageLedger, moment

SECRET = b"a test control secret, 32 chars"
SEAL = functools.partial(control.seal_record, SECRET)
TIMEOUT = 30
SECOND = 1_000_000


def iso(time_us: int) -> str:
    return wire_records.iso_time(moment(time_us))


class Journal:
    """``put`` of a journal: keeps every line (posts and records, with positions) and
    lets a test wait for them; refuses while :attr:`full`."""

    def __init__(self) -> None:
        self.lines: list[tuple[dict[str, Any], Any]] = []
        self.full = False
        self._cond = threading.Condition()

    def __call__(self, line: dict[str, Any], position: Any = None) -> bool:
        with self._cond:
            if self.full:
                return False
            self.lines.append((line, position))
            self._cond.notify_all()
            return True

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [line for line, _ in self.lines
                    if "kind" in line and kind in (None, line["kind"])]

    def wait_for(self, test: Any, what: str) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: test(self), TIMEOUT), (
                f"no {what} in {self.lines}")


def spans(journal: Journal) -> dict[str, dict[str, Any]]:
    """The latest record of each span (what the job keeps)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in journal.records("coverage"):
        latest[record["span"]] = record
    return latest


def covid(n: int, time_us: int) -> dict[str, Any]:
    return post_event(f"k{n}", f"post {n} about covid", time_us)


# --- the ledger alone ---------------------------------------------------------------------


def test_records_are_sealed_and_a_span_is_sent_again_only_when_it_grew(tmp_path) -> None:
    journal = Journal()
    now = [0.0]
    ledger = CoverageLedger("bluesky", journal, SEAL, state_path=tmp_path / STATE_FILE,
                            monotonic=lambda: now[0])
    totals = [10, 8, 2, 0]
    ledger.counts = lambda: tuple(totals)  # type: ignore[assignment,return-value]
    ledger.declare(keywords=["covid", "long covid"])
    ledger.open("wss://a/subscribe", T0_US)
    ledger.note(T0_US + 3 * SECOND)
    ledger.tick()  # not due yet: nothing more than the span as it opened
    assert [(r["kind"], r.get("to")) for r in journal.records()] == [
        ("filter", None), ("coverage", iso(T0_US))]
    now[0] = 61.0
    totals[:] = [30, 25, 5, 0]
    ledger.tick()
    ledger.tick()  # due again only a minute later
    now[0] = 200.0
    ledger.tick()  # due, but nothing grew: nothing sent
    (declared, opened, span) = journal.records()
    assert opened["span"] == span["span"]
    assert all(control.record_authentic(SECRET, record) for record in (declared, span))
    assert declared["keywords"] == ["covid", "long covid"] and declared["source"] == "bluesky"
    assert {k: span[k] for k in ("from", "to", "events", "posts", "matched", "refused",
                                 "host")} == {
        "from": iso(T0_US), "to": iso(T0_US + 3 * SECOND), "events": 20, "posts": 17,
        "matched": 3, "refused": 0, "host": "wss://a/subscribe"}
    # what the job checks of it
    assert wire_records.parse_record(span)[0] == "coverage"
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["span"] == span["span"] and state["to"] == T0_US + 3 * SECOND


def test_records_the_journal_refuses_wait_and_go_first_once_it_takes_them() -> None:
    journal = Journal()
    ledger = CoverageLedger("twitter", journal, SEAL)
    journal.full = True
    ledger.declare(rules=[{"tag": "t", "value": "covid"}])
    ledger.open("x", T0_US)
    ledger.gap("x", T0_US, T0_US + SECOND, "x disconnect")
    ledger.note(T0_US + 5 * SECOND)
    ledger.update()
    ledger.note(T0_US + 6 * SECOND)
    ledger.update()  # the span's later state replaces the one waiting
    assert journal.lines == [] and len(ledger.pending) == 3
    journal.full = False
    assert ledger.flush()
    kinds = [(r["kind"], r.get("to")) for r in journal.records()]
    assert kinds == [("filter", None), ("gap", iso(T0_US + SECOND)),
                     ("coverage", iso(T0_US + 6 * SECOND))]


def test_a_run_of_refused_posts_is_one_gap_from_the_last_accepted_to_the_next() -> None:
    journal = Journal()
    ledger = CoverageLedger("twitter", journal, SEAL)
    ledger.open("x", T0_US)
    ledger.accepted(T0_US + 1 * SECOND)
    for n in (2, 3, 4):
        ledger.refused("x", T0_US + n * SECOND)
    ledger.update()  # while it lasts, it is sent as it grows
    ledger.accepted(T0_US + 5 * SECOND)
    gaps = journal.records("gap")
    assert [(g["from"], g["to"], g["refused"], g["reason"]) for g in gaps] == [
        (iso(T0_US + SECOND), iso(T0_US + 4 * SECOND), 3, "refused"),
        (iso(T0_US + SECOND), iso(T0_US + 5 * SECOND), 3, "refused")]  # the same gap, grown
    assert ledger.gaps == 1 and ledger.gap_seconds == 4.0


def test_a_restart_closes_the_last_runs_span_and_may_go_on_with_it(tmp_path) -> None:
    state = tmp_path / STATE_FILE
    first = Journal()
    ledger = CoverageLedger("bluesky", first, SEAL, state_path=state)
    totals = [0, 0, 0, 0]
    ledger.counts = lambda: tuple(totals)  # type: ignore[assignment,return-value]
    ledger.open("wss://a/subscribe", T0_US)
    totals[:] = [100, 90, 3, 0]
    ledger.note(T0_US + 50 * SECOND)
    ledger.update()  # then killed: it read on to T0 + 58 s (the cursor file says)
    span = first.records()[-1]

    again = Journal()
    restarted = CoverageLedger("bluesky", again, SEAL, state_path=state)
    restarted.counts = lambda: (10, 9, 1, 0)
    restarted.restart(T0_US + 58 * SECOND)
    assert restarted.carry_on("wss://a/subscribe")  # the same host, nothing missed
    restarted.note(T0_US + 70 * SECOND)
    restarted.close()
    closed, carried = again.records()
    assert closed["span"] == carried["span"] == span["span"]
    assert (closed["from"], closed["to"]) == (iso(T0_US), iso(T0_US + 58 * SECOND))
    assert (carried["to"], carried["events"], carried["matched"]) == (
        iso(T0_US + 70 * SECOND), 110, 4)  # its counts go on

    other = CoverageLedger("bluesky", Journal(), SEAL, state_path=state)
    assert not other.carry_on("wss://b/subscribe")  # another host: a span of its own
    assert CoverageLedger("twitter", Journal(), SEAL, state_path=state).previous is None


# --- Jetstream's gaps, found by the reader ------------------------------------------------


@pytest.fixture
def jetstream() -> Iterator[JetstreamStandIn]:
    stand_in = JetstreamStandIn()
    yield stand_in
    stand_in.close()


class Reading:
    """A BlueskySource with a ledger, running in a thread until closed."""

    def __init__(self, url: str, tmp_path: Path, **options: Any) -> None:
        self.journal = Journal()
        self.ledger = CoverageLedger("bluesky", self.journal, SEAL,
                                     state_path=tmp_path / STATE_FILE)
        self.source = BlueskySource([url], KeywordMatcher(["covid"]), self.journal,
                                    cursor_path=tmp_path / BlueskySource.CURSOR_FILE,
                                    seal=SEAL, ledger=self.ledger, **options)
        self.source.BACKOFF_BASE = 0.01
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.source.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def posts(self) -> list[str]:
        return [line["id"] for line, _ in self.journal.lines if "kind" not in line]

    def wait_for_posts(self, count: int) -> None:
        self.journal.wait_for(lambda j: len(self.posts()) >= count, f"{count} posts")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()


def test_a_reconnect_the_host_no_longer_holds_the_cursor_for_is_a_gap(
    jetstream: JetstreamStandIn, tmp_path: Path
) -> None:
    """The connection drops; meanwhile the host's retention has moved past the cursor
    (Jetstream then starts at its oldest kept event): a gap from the last event read
    to the first one sent, and a new span from it."""
    jetstream.retention_us = 10 * SECOND
    jetstream.cut_first_after = 3
    reading = Reading(jetstream.url, tmp_path)
    jetstream.wait_for_connections(1)
    jetstream.publish(*(covid(n, T0_US + n * SECOND) for n in range(3)))
    reading.wait_for_posts(3)
    jetstream.publish(covid(3, T0_US + 60 * SECOND), covid(4, T0_US + 61 * SECOND))
    reading.wait_for_posts(5)
    reading.close()
    assert jetstream.cursors()[1] == T0_US + 2 * SECOND - 5 * SECOND
    (gap,) = reading.journal.records("gap")
    assert (gap["from"], gap["to"], gap["reason"], gap["host"]) == (
        iso(T0_US + 2 * SECOND), iso(T0_US + 60 * SECOND), "cursor not honoured",
        jetstream.url)
    before, after = spans(reading.journal).values()
    assert (before["from"], before["to"]) == (iso(T0_US), iso(T0_US + 2 * SECOND))
    assert (after["from"], after["to"]) == (iso(T0_US + 60 * SECOND), iso(T0_US + 61 * SECOND))
    assert (before["events"], after["events"], before["matched"], after["matched"]) == (
        3, 2, 3, 2)
    assert reading.ledger.gaps == 1 and "1 gaps in the coverage (58.0 s" in \
        reading.source.status()


def test_a_reconnect_that_misses_nothing_goes_on_with_its_span(
    jetstream: JetstreamStandIn, tmp_path: Path
) -> None:
    """A dropped connection whose rewound cursor the host still holds (and a v2 host
    that starts earlier still, at its archive segment): no gap, one span."""
    jetstream.cut_first_after = 3
    jetstream.segment_us = 60 * SECOND
    reading = Reading(jetstream.url, tmp_path)
    jetstream.wait_for_connections(1)
    jetstream.publish(*(covid(n, T0_US + n * SECOND) for n in range(6)))
    reading.wait_for_posts(6)
    reading.close()
    assert reading.journal.records("gap") == []
    (span,) = spans(reading.journal).values()
    assert (span["from"], span["to"]) == (iso(T0_US), iso(T0_US + 5 * SECOND))


def test_a_restart_past_the_hosts_retention_is_a_gap_with_that_reason(
    jetstream: JetstreamStandIn, tmp_path: Path
) -> None:
    """Stopped after reading to T0 + 2 s, restarted once the host keeps only events
    from T0 + 100 s on: the last run's span is closed where it stopped reading, and
    the gap runs from there to the host's first event."""
    jetstream.retention_us = 10 * SECOND
    first = Reading(jetstream.url, tmp_path)
    jetstream.wait_for_connections(1)
    jetstream.publish(*(covid(n, T0_US + n * SECOND) for n in range(3)))
    first.wait_for_posts(3)
    first.close()  # a stop: the cursor file and the span are saved
    jetstream.publish(covid(3, T0_US + 50 * SECOND), covid(4, T0_US + 100 * SECOND),
                      covid(5, T0_US + 101 * SECOND))
    second = Reading(jetstream.url, tmp_path)
    second.wait_for_posts(2)  # k3 (T0 + 50 s) is older than the host keeps
    second.close()
    assert second.posts() == [f"at://did:plc:alice/app.bsky.feed.post/k{n}" for n in (4, 5)]
    (old_span,) = spans(first.journal).values()
    records = second.journal.records()
    assert [r["kind"] for r in records[:3]] == ["filter", "coverage", "gap"]
    assert records[1]["span"] == old_span["span"] and records[1]["to"] == iso(T0_US + 2 * SECOND)
    gap = records[2]
    assert (gap["from"], gap["to"], gap["reason"]) == (
        iso(T0_US + 2 * SECOND), iso(T0_US + 100 * SECOND), "restart past retention")
    (new_span,) = [span for span in spans(second.journal).values()
                   if span["span"] != old_span["span"]]
    assert (new_span["from"], new_span["to"]) == (iso(T0_US + 100 * SECOND),
                                                  iso(T0_US + 101 * SECOND))


def test_a_start_from_the_live_tip_never_goes_on_with_the_last_runs_span(
    jetstream: JetstreamStandIn, tmp_path: Path
) -> None:
    """No cursor (no file, no journal): what lay between the last run and now is
    unknown, so the span of the last run (kept in coverage.json) is not gone on with."""
    (tmp_path / STATE_FILE).write_text(json.dumps({
        "source": "bluesky", "span": "old", "host": jetstream.url, "from": T0_US,
        "to": T0_US + SECOND, "counts": [5, 5, 1, 0], "last": T0_US + SECOND}))
    reading = Reading(jetstream.url, tmp_path)
    jetstream.wait_for_connections(1)
    jetstream.publish(covid(1, T0_US + 100 * SECOND))
    reading.wait_for_posts(1)
    reading.close()
    assert jetstream.cursors() == [None]
    (span,) = spans(reading.journal).values()
    assert span["span"] != "old" and span["from"] == iso(T0_US + 100 * SECOND)


def test_a_watchdog_stall_that_lost_events_is_a_gap_and_one_that_lost_none_is_not(
    jetstream: JetstreamStandIn, tmp_path: Path
) -> None:
    """The host goes quiet; the watchdog reconnects. The first time the host still
    holds what came meanwhile: nothing recorded. The second time its retention has
    moved past the cursor: a gap of reason ``watchdog stall``."""
    jetstream.retention_us = 30 * SECOND
    with capture_logs("sources.bluesky") as logs:
        reading = Reading(jetstream.url, tmp_path, stale_seconds=0.5)
        jetstream.wait_for_connections(1)
        jetstream.publish(*(covid(n, T0_US + n * SECOND) for n in range(2)))
        reading.wait_for_posts(2)
        jetstream.stall()
        jetstream.publish(covid(2, T0_US + 2 * SECOND))  # the quiet host does not send it
        logs.wait_for("no event from")
        reading.wait_for_posts(3)  # the next connection does
        assert reading.journal.records("gap") == []
        jetstream.stall()
        jetstream.publish(covid(3, T0_US + 100 * SECOND))  # k2 now older than kept
        logs.wait_for("no event from", times=2)
        reading.wait_for_posts(4)
        reading.close()
    (gap,) = reading.journal.records("gap")
    assert (gap["from"], gap["to"], gap["reason"]) == (
        iso(T0_US + 2 * SECOND), iso(T0_US + 100 * SECOND), "watchdog stall")
    first, second = spans(reading.journal).values()
    assert (first["from"], first["to"]) == (iso(T0_US), iso(T0_US + 2 * SECOND))
    assert second["from"] == iso(T0_US + 100 * SECOND)


# --- X: a disconnect, a restart and refused posts are gaps -------------------------------


def x_post(n: int, second: int) -> str:
    created = wire_records.iso_time(moment(T0_US + second * SECOND))
    return json.dumps({"data": {"id": str(n), "text": f"post {n}", "created_at": created}})


def test_x_disconnects_restarts_and_refused_posts_are_gaps_in_x_time(tmp_path: Path) -> None:
    """X's filtered stream sends nothing again: a reconnection is a gap from the last
    post before to the first after, in the posts' own created_at; so is a restart (from
    the journal's last post); and so is a run of posts the journal refused."""
    from sources.twitter import TwitterSource

    journal = Journal()
    state = tmp_path / STATE_FILE
    ledger = CoverageLedger("twitter", journal, SEAL, state_path=state)
    source = TwitterSource("token", journal, ledger=ledger)
    host = TwitterSource.HOST
    source.on_connect()
    for n, second in enumerate((0, 2, 3)):
        source.on_data(x_post(n, second))
    source.on_disconnect()
    source.on_connect()  # tweepy reconnects by itself
    source.on_data(x_post(3, 30))
    journal.full = True  # the job is away, the journal full
    source.on_data(x_post(4, 31))
    source.on_data(x_post(5, 32))
    journal.full = False
    source.on_data(x_post(6, 33))
    ledger.close()
    gaps = [(g["from"], g["to"], g["reason"], g["refused"], g["host"])
            for g in journal.records("gap")]
    assert gaps == [
        (iso(T0_US + 3 * SECOND), iso(T0_US + 30 * SECOND), "x disconnect", 0, host),
        (iso(T0_US + 30 * SECOND), iso(T0_US + 33 * SECOND), "refused", 2, host)]
    first, second = spans(journal).values()
    assert (first["from"], first["to"], first["matched"]) == (
        iso(T0_US), iso(T0_US + 3 * SECOND), 3)
    assert (second["from"], second["to"], second["posts"], second["matched"],
            second["refused"]) == (iso(T0_US + 30 * SECOND), iso(T0_US + 33 * SECOND), 4, 2, 2)

    # a restart: the journal's last post is where the last run stopped reading
    again = Journal()
    journaled = [line for line, _ in journal.lines if "kind" not in line]
    restarted = TwitterSource("token", again, journaled=journaled,
                              ledger=CoverageLedger("twitter", again, SEAL, state_path=state))
    restarted.on_connect()
    restarted.on_data(x_post(7, 90))
    (gap,) = again.records("gap")
    assert (gap["from"], gap["to"], gap["reason"]) == (
        iso(T0_US + 33 * SECOND), iso(T0_US + 90 * SECOND), "x disconnect")
