"""Crash-consistent files: records cut at any byte, a full disk, the group commit.

A power cut or a SIGKILL can stop a write at any byte; a full disk can refuse
one halfway. Each test below cuts or fails a write where that can happen and
checks what the next open finds: every record written before, nothing joined.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import journal.files
import journal.segments
import storage
import transform
from journal import Journal, RecordFile, records_of, scan, seal, unseal

TIMEOUT = 10.0


def tweet(n: int) -> dict[str, Any]:
    return {"id": f"t{n}", "text": f"tweet number {n} about covid ✓"}


def held_seqs(j: Journal) -> list[int]:
    return [json.loads(line)["seq"]
            for line in records_of(j.spans(j.first_held(), j.committed, 10**9))]


def only_segment(path: Path) -> Path:
    (segment,) = sorted(path.glob("seg-*.log"))
    return segment


# --- records ------------------------------------------------------------------------------


def test_a_record_is_the_object_with_its_checksum_last() -> None:
    obj = b'{"seq":1,"src":"ab","text":"x\\ny"}'
    record = seal(obj)
    assert record.endswith(b'"}\n') and record.count(b"\n") == 1
    assert json.loads(record)["crc"] == f"{zlib.crc32(obj[:-1]):08x}"
    assert unseal(record) == obj
    # the wire parser reads a sealed line like any tweet: the crc member is ignored
    assert transform.parse_line(seal(b'{"id":"1","text":"hi","seq":3,"src":"ab"}').decode()) \
        == ("1", "hi", 3, "ab")


def test_every_cut_and_every_flipped_byte_is_detected() -> None:
    record = seal(b'{"seq":12,"src":"ab12","id":"9","text":"Ma\\u00dfnahmen \\u2713"}')
    for cut in range(len(record)):
        assert unseal(record[:cut]) is None, cut
    for at in range(len(record) - 1):  # the final newline is the framing itself
        damaged = bytearray(record)
        damaged[at] ^= 0x01
        assert unseal(bytes(damaged)) is None, at


def test_scan_keeps_valid_records_skips_damage_and_finds_the_torn_tail() -> None:
    records = [seal(b'{"n":%d}' % n) for n in range(4)]
    damaged = records[1].replace(b'"n":1', b'"n":7')
    data = records[0] + damaged + records[2] + records[3][:-5]
    found = scan(data)
    assert [record for _, record in found.records] == [records[0], records[2]]
    assert found.damaged == 1 and found.end == len(records[0] + damaged + records[2])
    assert found.torn == len(records[3]) - 5


# --- the journal cut at every byte -----------------------------------------------------------


def write_journal(path: Path, count: int) -> bytes:
    j = Journal(path)
    for n in range(1, count + 1):
        assert j.put(tweet(n))
    assert j.wait_committed(timeout=TIMEOUT)
    j.close()
    return only_segment(path).read_bytes()


def test_a_journal_cut_at_any_byte_of_its_last_record_loses_only_that_record(
    tmp_path: Path
) -> None:
    whole = write_journal(tmp_path / "template", 3)
    last_start = whole.rindex(b"\n", 0, len(whole) - 1) + 1
    for cut in range(last_start, len(whole) + 1):
        path = tmp_path / f"cut-{cut}"
        path.mkdir(mode=0o700)
        (path / "source-id").write_text((tmp_path / "template" / "source-id").read_text())
        (path / only_segment(tmp_path / "template").name).write_bytes(whole[:cut])
        j = Journal(path)
        try:
            complete = cut == len(whole)
            assert j.committed == (3 if complete else 2), cut
            assert held_seqs(j) == ([1, 2, 3] if complete else [1, 2])
            # the next tweet starts a record of its own: never joined onto a fragment
            assert j.put(tweet(99)) and j.wait_committed(timeout=TIMEOUT)
        finally:
            j.close()
        again = Journal(path)
        try:
            seqs = held_seqs(again)
            assert seqs == ([1, 2, 3, 4] if cut == len(whole) else [1, 2, 3])
            texts = [json.loads(line)["text"]
                     for line in records_of(again.spans(1, again.committed, 10**9))]
            assert texts[-1] == tweet(99)["text"]
            assert scan(only_segment(path).read_bytes()).torn == 0
        finally:
            again.close()


def test_a_damaged_record_is_a_hole_the_sender_steps_over(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    whole = write_journal(tmp_path / "j", 5)
    segment = only_segment(tmp_path / "j")
    second = whole.index(b'{"seq":2,')
    damaged = bytearray(whole)
    damaged[second + 20] ^= 0x20  # a bit flip inside record 2
    segment.write_bytes(bytes(damaged))
    with caplog.at_level(logging.ERROR, logger="journal"):
        j = Journal(tmp_path / "j")
    try:
        assert j.damaged == 1 and "1 damaged record(s)" in caplog.text
        assert j.committed == 5 and held_seqs(j) == [1, 3, 4, 5]
        spans = j.spans(1, 5, 10**9)
        assert [(s.first, s.last) for s in spans] == [(1, 1), (3, 5)]
        assert j.put(tweet(6)) and j.wait_committed(timeout=TIMEOUT)
        assert held_seqs(j) == [1, 3, 4, 5, 6]
    finally:
        j.close()


# --- putting and committing -----------------------------------------------------------------


class HeldSyncs:
    """fdatasync made to wait for ``release`` (all of them, or only the first), as on
    a slow or stuck disk; ``calls`` counts them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, first_only: bool = False) -> None:
        self.release = threading.Event()
        self.calls = 0
        real_sync = os.fdatasync

        def held_sync(fd: int) -> None:
            self.calls += 1
            if not first_only or self.calls == 1:
                self.release.wait(TIMEOUT)
            real_sync(fd)

        monkeypatch.setattr(os, "fdatasync", held_sync)


def test_put_never_waits_for_the_disk_and_commits_in_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = HeldSyncs(monkeypatch)  # the disk is slow: the first commit hangs
    release = syncs.release
    j = Journal(tmp_path / "j")
    try:
        assert j.put(tweet(0))
        accepted = [j.put(tweet(n)) for n in range(1, 1001)]  # while the commit hangs
        assert all(accepted) and j.committed == 0
        release.set()
        assert j.wait_committed(timeout=TIMEOUT) and j.committed == 1001
        assert syncs.calls <= 3  # one commit for the first tweet, one or two for the rest
    finally:
        release.set()
        j.close()


def test_a_full_disk_refuses_new_tweets_keeps_the_rest_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    full = threading.Event()
    full.set()
    real_write = journal.write_all

    def write(fd: int, data: bytes) -> None:
        if full.is_set():
            os.write(fd, data[: len(data) // 2])  # half of it reaches the disk, then ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    j = Journal(tmp_path / "j")
    try:
        assert j.put(tweet(1)) and j.wait_committed(timeout=TIMEOUT)  # before the disk fills
        monkeypatch.setattr(journal.segments, "write_all", write)
        caplog.set_level(logging.WARNING, logger="journal")
        assert j.put(tweet(2))  # taken: it waits for room in memory
        with j.changed:
            assert j.changed.wait_for(lambda: j.disk_error is not None, TIMEOUT)
        assert [j.put(tweet(n)) for n in (3, 4)] == [False, False]  # refused, counted
        assert j.refused_disk == 2 and j.committed == 1
        assert scan(only_segment(tmp_path / "j").read_bytes()).torn == 0  # the half is cut
        full.clear()  # room again
        with j.changed:  # the committer tries again within RETRY_SECONDS
            assert j.changed.wait_for(lambda: j.disk_error is None, TIMEOUT)
        assert j.wait_committed(2, timeout=TIMEOUT)
        assert j.put(tweet(5)) and j.wait_committed(timeout=TIMEOUT)
    finally:
        full.clear()
        j.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "the disk is full (No space left on device)" in errors[0]
    assert any("writing again; 2 tweets were refused" in r.getMessage()
               for r in caplog.records)
    again = Journal(tmp_path / "j")
    try:
        texts = [json.loads(line)["text"] for line in records_of(again.spans(1, 9, 10**9))]
        assert texts == [tweet(n)["text"] for n in (1, 2, 5)]
    finally:
        again.close()


def test_segments_roll_over_and_go_once_acknowledged(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", max_bytes=1024**2)  # segments of 128 KiB
    try:
        for chunk in range(30):  # committed 100 at a time: many segments
            for n in range(chunk * 100, chunk * 100 + 100):
                assert j.put(tweet(n))
            assert j.wait_committed(timeout=TIMEOUT)
        segments = sorted((tmp_path / "j").glob("seg-*.log"))
        assert len(segments) >= 3
        j.ack(2900)
        left = sorted((tmp_path / "j").glob("seg-*.log"))
        assert 1 <= len(left) < len(segments)
        assert held_seqs(j)[0] == 2901 and j.held == 100
        assert j.bytes_on_disk == sum(path.stat().st_size for path in left)
    finally:
        j.close()


# --- the spool ------------------------------------------------------------------------------


def test_a_spool_cut_at_any_byte_of_its_last_record_keeps_the_others(tmp_path: Path) -> None:
    documents = [transform.build_document(datetime(2026, 11, 29, 12, 0, n, tzinfo=UTC),
                                          [f"tweet {n}"], 704_753_890) for n in range(3)]
    template = storage.Spool(tmp_path / "template.jsonl")
    template.append(documents)
    whole = (tmp_path / "template.jsonl").read_bytes()
    last_start = whole.rindex(b"\n", 0, len(whole) - 1) + 1
    for cut in range(last_start, len(whole) + 1):
        path = tmp_path / f"spool-{cut}.jsonl"
        path.write_bytes(whole[:cut])
        spool = storage.Spool(path)
        kept = spool.documents()  # never raises, cuts the torn tail
        expected = documents if cut == len(whole) else documents[:2]
        assert [d["_id"] for d in kept] == [d["_id"] for d in expected], cut
        spool.append(documents[2:])  # appended after a cut: a record of its own
        assert [d["_id"] for d in spool.documents()] == [d["_id"] for d in expected] + [
            documents[2]["_id"]]


def test_a_failed_spool_append_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = RecordFile(tmp_path / "r")
    records.append([b'{"n":1}'])
    before = (tmp_path / "r").read_bytes()

    def full(fd: int, data: bytes) -> None:
        os.write(fd, data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.files, "write_all", full)
    with pytest.raises(OSError):
        records.append([b'{"n":2}'])
    assert (tmp_path / "r").read_bytes() == before


# --- what a hostile review found ---------------------------------------------------------


def test_a_tweets_own_delivery_fields_never_override_the_journals(tmp_path: Path) -> None:
    """A replayed capture of another producer's output carries seq, src, pos and crc."""
    j = Journal(tmp_path / "j")
    try:
        assert j.put({"id": "x", "text": "captured", "seq": 99, "src": "other", "pos": 7,
                      "crc": "00000000"})
        assert j.wait_committed(timeout=TIMEOUT)
        (record,) = j.tail(1)
        assert (record["seq"], record["src"]) == (1, j.source) and "pos" not in record
    finally:
        j.close()


def test_a_hole_is_not_held_so_a_gap_over_it_can_be_skipped(tmp_path: Path) -> None:
    whole = write_journal(tmp_path / "j", 6)
    damaged = bytearray(whole)
    damaged[whole.index(b'{"seq":3,') + 20] ^= 0x20
    only_segment(tmp_path / "j").write_bytes(bytes(damaged))
    j = Journal(tmp_path / "j")
    try:
        assert [j.next_present(seq) for seq in (1, 3, 4, 7)] == [1, 4, 4, 7]
    finally:
        j.close()


def test_acks_from_two_connections_at_once_leave_a_whole_acked_file(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    try:
        for n in range(200):
            assert j.put(tweet(n))
        assert j.wait_committed(timeout=TIMEOUT)
        start = threading.Barrier(2)

        def ack(seq: int) -> None:
            start.wait()
            for step in range(seq - 50, seq + 1):
                j.ack(step)

        threads = [threading.Thread(target=ack, args=(seq,)) for seq in (99, 100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
    finally:
        j.close()
    assert (tmp_path / "j" / "acked").read_text() == "100"
    assert not list((tmp_path / "j").glob("*.tmp"))


def test_the_newest_segment_with_records_is_kept_for_a_restarting_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk right at a rollover leaves an empty newest segment; acking all
    must not delete the last records, which tell the source where it stood."""
    j = Journal(tmp_path / "j", max_bytes=1024**2)
    try:
        for n in range(2000):
            assert j.put(tweet(n), position=n)
        assert j.wait_committed(timeout=TIMEOUT)
        j.segments.new_segment(j.committed + 1)  # what a failed write after a rollover leaves
        j.ack(j.committed)
        assert j.tail(1)[0]["pos"] == 1999
        assert j.bytes_held == 0  # acknowledged bytes no longer count against the bound
    finally:
        j.close()
    again = Journal(tmp_path / "j")
    try:
        assert again.tail(1)[0]["pos"] == 1999 and again.held == 0
    finally:
        again.close()


def test_acknowledged_records_do_not_keep_a_small_journal_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one slow fsync: a burst piles up behind it
    release = HeldSyncs(monkeypatch, first_only=True).release
    j = Journal(tmp_path / "j", max_bytes=1024**2)
    try:
        accepted = 0
        while j.put(tweet(accepted)):
            accepted += 1
        release.set()
        assert j.wait_committed(timeout=TIMEOUT)
        assert max(p.stat().st_size for p in (tmp_path / "j").glob("seg-*.log")) \
            <= j.segment_bytes + 1024  # a burst is split across segments
        j.ack(j.committed)
        assert j.held == 0 and all(j.put(tweet(n)) for n in range(3))
    finally:
        release.set()
        j.close()


def test_close_never_closes_files_under_a_write_still_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = HeldSyncs(monkeypatch).release  # the disk is stuck
    j = Journal(tmp_path / "j")
    j.committer.RETRY_SECONDS = 0.1
    assert j.put(tweet(1))
    j.close(timeout=0.1)  # the disk is stuck: close gives up waiting, and says so
    with pytest.raises(OSError, match="in use"):
        Journal(tmp_path / "j")  # still locked: the write goes on under it
    release.set()
    j.committer.join(TIMEOUT)
    assert not j.committer.is_alive() and j.committed == 1


@pytest.mark.parametrize("tweet", [["id", "text"], "text", 5])
def test_what_is_not_a_json_object_is_refused_with_a_type_error(tmp_path, tweet) -> None:
    journal = Journal(tmp_path / "journal", 1 << 20)
    try:
        with pytest.raises(TypeError, match="a tweet is a JSON object"):
            journal.put(tweet)
        assert journal.put({"id": "1", "text": "still works"})
        assert journal.wait_committed(timeout=10)
    finally:
        journal.close()


def test_a_record_has_the_members_of_the_tweet_after_seq_and_src_then_pos(tmp_path) -> None:
    journal = Journal(tmp_path / "journal", 1 << 20)
    try:
        journal.put({"id": "7", "text": "a\nb \ud83d", "seq": 99, "n": [1, 2.5, None]},
                    position=[1, 2])
        journal.put({}, position=3)
        assert journal.wait_committed(timeout=10)
    finally:
        journal.close()
    data = b"".join(path.read_bytes() for path in sorted((tmp_path / "journal").glob("seg-*")))
    first, second = (unseal(line + b"\n") for line in data.splitlines())
    assert first == (b'{"seq":1,"src":"%s","id":"7","text":"a\\nb \\ud83d","n":[1,2.5,null],'
                     b'"pos":[1,2]}' % journal.source.encode())
    assert second == b'{"seq":2,"src":"%s","pos":3}' % journal.source.encode()


# --- the group-commit window -------------------------------------------------------------


def test_a_trickle_within_the_window_shares_one_commit(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", commit_window=3600.0)  # a window that never ends by itself
    commits: list[int] = []
    j.on_commit = lambda: commits.append(j.committed)
    for n in range(5):
        assert j.put(tweet(n))
    assert not j.wait_committed(timeout=0.05)  # still gathering: not accepted yet
    j.close()  # closing ends the window at once: everything put is written
    assert commits == [5]  # one fsync for the five
    reopened = Journal(tmp_path / "j")
    try:
        assert held_seqs(reopened) == [1, 2, 3, 4, 5]
    finally:
        reopened.close()


def test_a_full_window_is_committed_without_waiting_for_its_end(tmp_path: Path) -> None:
    from journal.committer import Committer

    j = Journal(tmp_path / "j", commit_window=3600.0)
    try:
        big = {"id": "big", "text": "x" * 10_000}
        for _ in range(Committer.WINDOW_BYTES // 10_000 + 1):
            assert j.put(big)
        assert j.wait_committed(timeout=TIMEOUT)  # long before the hour is up
    finally:
        j.close()


def test_a_post_is_accepted_once_its_window_is_on_disk(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")  # the default window: a few milliseconds
    try:
        assert j.put(tweet(1))
        assert j.wait_committed(timeout=TIMEOUT)
        assert j.committed == 1
    finally:
        j.close()


@pytest.mark.parametrize("window", [-0.001, float("inf"), float("nan")])
def test_a_commit_window_must_be_a_finite_duration(tmp_path: Path, window: float) -> None:
    with pytest.raises(ValueError, match="commit_window"):
        Journal(tmp_path / "j", commit_window=window)


# --- a list at a time (put_many) -------------------------------------------------------------


def journal_named(path: Path, source: str, **kwargs: Any) -> Journal:
    """A journal at ``path`` whose producer id is ``source`` (so two hold the same bytes)."""
    path.mkdir(mode=0o700)
    (path / "source-id").write_text(source)
    return Journal(path, **kwargs)


def segment_bytes(path: Path) -> bytes:
    return b"".join(segment.read_bytes() for segment in sorted(path.glob("seg-*.log")))


def test_put_many_writes_byte_for_byte_what_put_writes_one_by_one(tmp_path: Path) -> None:
    tweets = [tweet(0), {"id": "x", "text": "captured", "seq": 99, "src": "other", "crc": "0"},
              {}, {"id": "7", "text": "a\nb \ud83d 😷", "n": [1, 2.5, None]}, tweet(4), {}]
    positions = [[1, 10], None, 3, [1, 40, "tag"], None, None]
    one_by_one = journal_named(tmp_path / "one", "abc123")
    listed = journal_named(tmp_path / "listed", "abc123")
    try:
        for item, position in zip(tweets, positions, strict=True):
            assert one_by_one.put(item, position)
        assert listed.put_many(tweets[:2], positions[:2]) == 2  # numbering goes on
        assert listed.put_many(tweets[2:], positions[2:]) == 4  # across calls
        assert one_by_one.wait_committed(timeout=TIMEOUT)
        assert listed.wait_committed(timeout=TIMEOUT)
        assert listed.committed == 6 and listed.held == 6
        assert held_seqs(listed) == [1, 2, 3, 4, 5, 6]
        # tail() reads the records back: the last tweet's position is what a source resumes
        # from, the reserved members of the captured tweet are the journal's own
        records = listed.tail(6)
        assert [record.get("pos") for record in records] == positions
        assert (records[1]["seq"], records[1]["src"]) == (2, "abc123")
    finally:
        one_by_one.close()
        listed.close()
    data = segment_bytes(tmp_path / "listed")
    assert data == segment_bytes(tmp_path / "one")
    assert all(unseal(line) is not None for line in data.splitlines(keepends=True))


def test_put_many_at_full_accepts_the_prefix_that_fits_and_counts_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    probe = journal_named(tmp_path / "probe", "abc123")
    probe.put_many([tweet(n) for n in range(10, 15)])
    probe.close()
    room = len(segment_bytes(tmp_path / "probe"))  # five records of the same sizes
    j = journal_named(tmp_path / "j", "abc123", max_bytes=room + 10)
    caplog.set_level(logging.WARNING, logger="journal")
    try:
        assert j.put_many([tweet(n) for n in range(10, 18)]) == 5
        assert (j.refused_full, j.held, j.next_seq) == (3, 5, 6)
        assert j.put_many([tweet(99)]) == 0 and j.refused_full == 4
        assert j.wait_committed(timeout=TIMEOUT)
        assert [record["text"] for record in j.tail(10)] == [tweet(n)["text"]
                                                              for n in range(10, 15)]
        j.ack(5)  # the job stored them: room again, numbering goes on after the accepted
        assert j.put_many([tweet(20), tweet(21)]) == 2 and j.wait_committed(timeout=TIMEOUT)
        assert held_seqs(j) == [6, 7]
    finally:
        j.close()
    warnings = [r.getMessage() for r in caplog.records if "is full" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].endswith("3 refused so far")


def test_put_many_accepts_none_while_the_disk_refuses_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.segments, "write_all", full)
    j = Journal(tmp_path / "j")
    try:
        assert j.put(tweet(1))  # taken: kept in memory until the disk has room
        with j.changed:
            assert j.changed.wait_for(lambda: j.disk_error is not None, TIMEOUT)
        assert j.put_many([tweet(2), tweet(3), tweet(4)]) == 0
        assert (j.refused_disk, j.held) == (3, 1)
    finally:
        monkeypatch.undo()
        j.close()


def test_put_many_puts_nothing_of_a_list_with_a_tweet_it_cannot_encode(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    try:
        with pytest.raises(TypeError):
            j.put_many([tweet(1), {"id": "2", "text": object()}])
        with pytest.raises(TypeError, match="a tweet is a JSON object"):
            j.put_many([tweet(1), "text"])
        with pytest.raises(ValueError, match="2 tweets and 1 positions"):
            j.put_many([tweet(1), tweet(2)], [5])
        assert j.held == 0 and j.put_many([]) == 0
        assert j.put_many([tweet(3)]) == 1 and j.wait_committed(timeout=TIMEOUT)
        assert held_seqs(j) == [1]
    finally:
        j.close()


def test_one_commit_of_a_long_list_rolls_over_segments_and_reads_back(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", max_bytes=1024**2, commit_window=3600.0)  # 128 KiB segments
    commits: list[int] = []
    j.on_commit = lambda: commits.append(j.committed)
    try:
        assert j.put_many([tweet(n) for n in range(3000)]) == 3000
    finally:
        j.close()  # ends the window: one commit writes the whole list
    assert commits == [3000]
    segments = sorted((tmp_path / "j").glob("seg-*.log"))
    assert len(segments) >= 3 and all(p.stat().st_size <= 128 * 1024 for p in segments)
    again = Journal(tmp_path / "j", max_bytes=1024**2)
    try:
        assert held_seqs(again) == list(range(1, 3001))
        texts = [json.loads(line)["text"] for line in records_of(again.spans(1, 3000, 10**9))]
        assert texts == [tweet(n)["text"] for n in range(3000)]
    finally:
        again.close()


# --- waiting for room (a source that can give posts again) -------------------------------


def test_a_refusal_that_will_be_retried_is_not_counted_and_a_wait_ends_on_the_ack(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A source that can give its posts again is refused without a count or a warning,
    and its wait for room ends on the acknowledgement that frees it: no poll."""
    probe = journal_named(tmp_path / "probe", "abc123")
    probe.put_many([tweet(n) for n in range(10, 15)])
    probe.close()
    room = len(segment_bytes(tmp_path / "probe"))  # five records of the same sizes
    j = journal_named(tmp_path / "j", "abc123", max_bytes=room + 10)
    caplog.set_level(logging.WARNING, logger="journal")
    try:
        assert j.put_many([tweet(n) for n in range(10, 18)], will_retry=True) == 5
        assert not j.put(tweet(18), will_retry=True)
        assert (j.refused_full, j.next_seq) == (0, 6)
        assert 0 < j.wanted_bytes <= room // 5 + 1
        assert not j.wait_for_room(j.wanted_bytes, timeout=0.05)  # nothing acknowledged
        assert j.wait_committed(timeout=TIMEOUT)
        waited: list[bool] = []
        waiter = threading.Thread(target=lambda: waited.append(j.wait_for_room(room // 2)))
        waiter.start()
        j.ack(2)  # two of five stored: not enough for half the journal
        j.ack(3)  # three: enough
        waiter.join(TIMEOUT)
        assert waited == [True]
        assert j.put_many([tweet(n) for n in range(15, 18)], will_retry=True) == 3
    finally:
        j.close()
    assert not [r for r in caplog.records if "is full" in r.getMessage()]


def test_a_wait_for_room_ends_when_asked_to_give_up_or_the_journal_closes(
    tmp_path: Path
) -> None:
    j = Journal(tmp_path / "j", max_bytes=200)
    stop = threading.Event()
    results: list[bool] = []
    waiters = [threading.Thread(target=lambda size=size: results.append(
        j.wait_for_room(size, give_up=stop.is_set))) for size in (150, 10**6)]
    try:
        assert j.put(tweet(1)) and j.wait_committed(timeout=TIMEOUT)
        for waiter in waiters:
            waiter.start()
        stop.set()
        j.wake()  # whoever sets give_up wakes the waits
        for waiter in waiters:
            waiter.join(TIMEOUT)
        assert results == [False, False]
        assert not j.wait_for_room(1, give_up=stop.is_set)
    finally:
        j.close()
    assert not j.wait_for_room(1)  # closed: no room will come


def test_a_tweet_larger_than_the_whole_journal_is_refused_for_good_not_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A source that waits for room would wait forever for a record larger than the
    journal: that one is refused for good (counted, warned), and the next ones get
    its seq."""
    j = Journal(tmp_path / "j", max_bytes=500)
    caplog.set_level(logging.WARNING, logger="journal")
    try:
        huge = {"id": "big", "text": "x" * 600}
        assert j.put_many([huge, tweet(1)], will_retry=True) == 2  # both done with
        assert j.refused_full == 1 and j.held == 1
        assert j.put(huge, will_retry=True)  # done with: not to be offered again
        assert j.refused_full == 2 and j.held == 1
        assert j.wait_committed(timeout=TIMEOUT)
        assert [(r["seq"], r["id"]) for r in j.tail(5)] == [(1, "t1")]
    finally:
        j.close()
    assert sum("larger than the whole journal" in r.getMessage() for r in caplog.records) == 2
