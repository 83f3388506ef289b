"""The producer: tweet sources, the TCP tweet server and the stream.py command line.

No network: the X API is replaced by recorded payloads fed to ``on_data`` and
by fakes of the rules calls. Nothing here sleeps blindly; waits are on events,
conditions or socket reads with timeouts.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tweepy
from conftest import SELECT_LIMIT
from processes import LogWaiter, capture_logs
from tweepy.client import Response

import config
import control
import transform
import utility
from journal import Journal, records_of, seal, unseal
from sources import tweet_from_payload
from sources.replay import ReplaySource
from sources.twitter import DailyCap, TwitterSource
from utility import TweetServer

PROJECT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v2_stream_payloads.jsonl"
SAMPLE = PROJECT / "samples" / "tweets.jsonl"
TIMEOUT = 5.0
TOKEN = "sekrit-token-123"
TAG = TwitterSource.RULE_TAG


# --- helpers ----------------------------------------------------------------------


SECRET = b"test-control-secret-0123456789"


def without_delivery(obj: dict[str, Any]) -> dict[str, Any]:
    """A wire object less the producer's delivery fields (seq, src, the source's
    position) and its checksum."""
    return {k: v for k, v in obj.items() if k not in ("seq", "src", "pos", "crc")}


class Consumer:
    """A stand-in for Spark's socket receiver: connects and reads lines."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.reader = self.sock.makefile("rb")

    def read_lines(self, count: int) -> list[bytes]:
        lines = []
        for _ in range(count):
            line = self.reader.readline()
            assert line.endswith(b"\n"), f"connection ended after {len(lines)} lines"
            lines.append(line)
        return lines

    def read_tweets(self, count: int) -> list[dict[str, Any]]:
        return [without_delivery(json.loads(line)) for line in self.read_lines(count)]

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def server_log() -> Iterator[LogWaiter]:
    with capture_logs("utility", "journal", "control") as waiter:
        yield waiter


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[threading.ExceptHookArgs]:
    """Exceptions that escaped any thread during the test."""
    errors: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    return errors


def make_server(path: Path, max_bytes: int = 64 * 1024**2, *, acks: bool = False
                ) -> TweetServer:
    """A started server on a journal at ``path``; with ``acks``, a control port too."""
    server = TweetServer("127.0.0.1", 0, Journal(path, max_bytes),
                         ack_port=0 if acks else None, secret=SECRET if acks else None)
    server.IDLE_CHECK_SECONDS = 0.05  # step over damaged records quickly
    server.start()
    return server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TweetServer]:
    srv = make_server(tmp_path / "journal")
    yield srv
    srv.close()


def collect(into: list[dict[str, Any]]) -> Any:
    """A source's emit that keeps the tweets in ``into``."""
    def emit(tweet: dict[str, Any], position: Any = None) -> bool:
        into.append(tweet)
        return True

    return emit


def tweets(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"id": str(1000 + n), "text": f"tweet number {n} #COVID19"} for n in range(start, stop)]


# --- tweet_from_payload --------------------------------------------------------------


def test_payload_gives_its_data_with_every_field() -> None:
    data = {"id": "2035118890412263425", "text": "masks &amp; tests", "lang": "en",
            "created_at": "2026-04-02T10:15:03.000Z", "author_id": "7",
            "edit_history_tweet_ids": ["2035118890412263425"]}
    payload = {"data": data, "matching_rules": [{"id": "1", "tag": TAG}],
               "includes": {"users": [{"id": "7", "username": "someone"}]}}
    assert tweet_from_payload(payload) == data


def test_bare_tweet_gives_itself() -> None:
    bare = {"id": 12345, "text": "an integer id is allowed", "lang": "en"}
    assert tweet_from_payload(bare) == bare


@pytest.mark.parametrize(
    "obj",
    [
        [], "text", 5, None,
        {"id": "1"},
        {"text": "no id"},
        {"id": "", "text": "empty id"},
        {"id": 1.5, "text": "float id"},
        {"id": True, "text": "bool id"},
        {"id": "1", "text": None},
        {"id": "1", "text": ["not", "a", "string"]},
        {"data": "not an object", "matching_rules": []},
        {"data": {"id": "1"}, "matching_rules": []},
        {"errors": [{"title": "operational-disconnect", "detail": "gone"}]},
    ],
)
def test_anything_without_id_and_text_gives_none(obj: Any) -> None:
    assert tweet_from_payload(obj) is None


# --- TweetServer ------------------------------------------------------------------------


def test_each_tweet_arrives_as_one_line_in_order(
    server: TweetServer, thread_errors: list[Any]
) -> None:
    tricky = [
        {"id": "1", "text": "two\nlines"},
        {"id": "2", "text": "windows\r\nline end"},
        {"id": "3", "text": "line\u2028separator and paragraph\u2029separator"},
        {"id": "4", "text": "lone surrogate \ud83d here"},
        {"id": "5", "text": "Привет, マスク, مرحبا, नमस्ते 😷🇫🇷", "lang": "und"},
        {"id": "6", "text": "tab\tand NUL\x00 and bell\x07"},
        {"id": 7, "text": "", "author_id": "42", "created_at": "2026-04-02T10:15:03.000Z"},
    ]
    sent = tricky + tweets(0, 500)
    consumer = Consumer(server.address)
    try:
        for tweet in sent:
            server.put(tweet)
        lines = consumer.read_lines(len(sent))
    finally:
        consumer.close()
    assert all(line.count(b"\n") == 1 for line in lines)
    objects = [json.loads(line) for line in lines]
    assert [without_delivery(obj) for obj in objects] == sent
    # every line carries the producer's delivery fields: consecutive seqs, one source
    assert [obj["seq"] for obj in objects] == list(range(1, len(sent) + 1))
    assert {obj["src"] for obj in objects} == {server.source}
    # each line is a sealed journal record: the wire object with its checksum last
    assert unseal(lines[0]) == json.dumps({"seq": 1, "src": server.source, **tricky[0]},
                                          separators=(",", ":")).encode()
    assert server.wait_until_drained(TIMEOUT)
    assert (server.sent, server.dropped, server.connections) == (len(sent), 0, 1)
    assert thread_errors == []


def test_the_sender_feeds_its_consumer_through_descriptors_past_select_s_limit(
    tmp_path: Path, high_fds: None
) -> None:
    """A busy stream.py holds more than 1024 descriptors; select() raises ValueError for
    those, which would kill the sender while the journal goes on taking tweets."""
    server = make_server(tmp_path / "journal")
    consumer = Consumer(server.address)
    try:
        assert consumer.sock.fileno() >= SELECT_LIMIT  # and so is every new one
        for round_ in range(3):  # between rounds the sender waits, idle, for more
            sent = tweets(round_ * 10, round_ * 10 + 10)
            assert server.put_many(sent) == 10
            assert consumer.read_tweets(10) == sent
        with capture_logs("utility") as log:  # and it sees its consumer go
            consumer.close()
            log.wait_for("consumer disconnected")
    finally:
        consumer.close()
        server.close()


def test_consumer_reconnects_after_a_clean_disconnect(
    server: TweetServer, server_log: LogWaiter, thread_errors: list[Any]
) -> None:
    first = Consumer(server.address)
    for tweet in tweets(0, 5):
        server.put(tweet)
    assert first.read_tweets(5) == tweets(0, 5)
    first.close()
    server_log.wait_for("consumer disconnected")

    for tweet in tweets(5, 10):
        server.put(tweet)
    assert not server.wait_until_drained(0.05)  # held: nobody to send to
    second = Consumer(server.address)
    try:
        assert second.read_tweets(5) == tweets(5, 10)
        assert server.wait_until_drained(TIMEOUT)
        assert server.connections == 2
        # counted while the second is still connected: the sender sees a close at once
        assert server_log.count("consumer disconnected; holding tweets until one reconnects") == 1
        assert server_log.count("consumer connected from 127.0.0.1:") == 2
    finally:
        second.close()
    assert not [m for level, m in server_log.messages if level >= logging.ERROR]
    assert thread_errors == []


def test_a_fault_while_feeding_a_consumer_drops_it_and_the_next_one_gets_everything(
    server: TweetServer, server_log: LogWaiter, thread_errors: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected error in the sender (a bug, a file gone wrong) costs that consumer
    its connection, never the sender thread: stream.py must not go on journaling posts
    that nothing sends."""
    spans, failed = server.journal.spans, []

    def fail_once(*args: Any) -> Any:
        if not failed:
            failed.append(True)
            raise RuntimeError("a fault nobody foresaw")
        return spans(*args)

    monkeypatch.setattr(server.journal, "spans", fail_once)
    for tweet in tweets(0, 5):
        server.put(tweet)
    first = Consumer(server.address)
    try:
        assert first.reader.readline() == b""  # dropped, nothing sent
    finally:
        first.close()
    server_log.wait_for("failed; dropped it")
    second = Consumer(server.address)
    try:
        assert second.read_tweets(5) == tweets(0, 5)
    finally:
        second.close()
    assert thread_errors == []


def test_consumer_vanishing_mid_stream_loses_nothing_put_after(
    server: TweetServer, server_log: LogWaiter, thread_errors: list[Any]
) -> None:
    first = Consumer(server.address)
    for tweet in tweets(0, 50):
        server.put(tweet)
    first.read_lines(1)
    first.close()  # unread data: the server's side sees a reset, not a clean close
    for tweet in tweets(50, 60):  # put right after the disconnect, maybe before it is noticed
        server.put(tweet)
    server_log.wait_for("consumer disconnected")

    second = Consumer(server.address)
    try:
        received = []
        while not received or received[-1]["id"] != "1059":
            received.extend(second.read_tweets(1))
        assert server.wait_until_drained(TIMEOUT)
        # the first consumer's going was logged once (the sender notices a close at once,
        # so this is counted before the second one goes)
        assert server_log.count("consumer disconnected") == 1
    finally:
        second.close()
    ids = [int(tweet["id"]) for tweet in received]
    assert ids == sorted(ids)  # order kept, put-back tweets first
    assert received[-10:] == tweets(50, 60)
    assert thread_errors == []


def test_an_idle_sender_notices_its_consumer_go_without_polling(
    tmp_path: Path, server_log: LogWaiter, thread_errors: list[Any]
) -> None:
    server = TweetServer("127.0.0.1", 0, Journal(tmp_path / "journal"))
    server.IDLE_CHECK_SECONDS = 3600.0  # a sender that polled would not look again for an hour
    server.start()
    try:
        consumer = Consumer(server.address)
        server.put(tweets(0, 1)[0])
        assert consumer.read_tweets(1) == tweets(0, 1)  # the sender is idle from here on
        consumer.close()
        server_log.wait_for("consumer disconnected")  # seen on its socket, at once
        second = Consumer(server.address)
        try:
            server.put(tweets(1, 2)[0])  # woken by the commit, not by a timer
            assert second.read_tweets(1) == tweets(1, 2)
        finally:
            second.close()
    finally:
        server.close()
    assert thread_errors == []


def record_bytes(server_source: str, tweet: dict[str, Any], seq: int) -> int:
    return len(seal(json.dumps({"seq": seq, "src": server_source, **tweet},
                               separators=(",", ":")).encode()))


def server_with_room_for_five(journal: Path) -> TweetServer:
    """A server whose journal holds exactly the first five of :func:`tweets`."""
    probe = Journal(journal)
    source = probe.source
    probe.close()
    room = sum(record_bytes(source, tweet, seq)
               for seq, tweet in enumerate(tweets(0, 5), start=1))
    return make_server(journal, max_bytes=room)


def test_tweets_wait_for_a_consumer_and_the_newest_overflow(
    tmp_path: Path, server_log: LogWaiter, thread_errors: list[Any]
) -> None:
    server = server_with_room_for_five(tmp_path / "journal")
    try:
        accepted = [server.put(tweet) for tweet in tweets(0, 8)]
        # an accepted tweet is never dropped: past the bound new ones are refused
        assert accepted == [True] * 5 + [False] * 3
        assert (server.dropped, server.pending, server.sent) == (3, 5, 0)
        assert not server.wait_until_drained(0.05)
        warnings = [m for level, m in server_log.messages if level == logging.WARNING]
        assert len(warnings) == 1 and "is full" in warnings[0]
        assert warnings[0].endswith("refusing new tweets; 1 refused so far")

        consumer = Consumer(server.address)
        try:
            assert consumer.read_tweets(5) == tweets(0, 5)
        finally:
            consumer.close()
        assert server.wait_until_drained(TIMEOUT)
        assert (server.sent, server.dropped, server.pending) == (5, 3, 0)
    finally:
        server.close()
    assert thread_errors == []


def test_a_list_put_at_once_arrives_in_order_and_only_what_fits_is_taken(
    tmp_path: Path, thread_errors: list[Any]
) -> None:
    server = server_with_room_for_five(tmp_path / "journal")
    try:
        assert server.put_many(tweets(0, 8)) == 5  # the first five; the rest refused
        assert (server.dropped, server.pending) == (3, 5)
        consumer = Consumer(server.address)
        try:
            lines = [json.loads(line) for line in consumer.read_lines(5)]
        finally:
            consumer.close()
        assert [without_delivery(obj) for obj in lines] == tweets(0, 5)
        assert [obj["seq"] for obj in lines] == [1, 2, 3, 4, 5]
        assert server.wait_until_drained(TIMEOUT)
    finally:
        server.close()
    assert thread_errors == []


def test_close_is_prompt_idempotent_and_ends_the_consumer_stream(tmp_path: Path) -> None:
    server = make_server(tmp_path / "journal")
    consumer = Consumer(server.address)
    server.put({"id": "1", "text": "last one"})
    assert consumer.read_tweets(1) == [{"id": "1", "text": "last one"}]
    started = time.monotonic()
    server.close()
    server.close()
    assert time.monotonic() - started < 1.0
    assert consumer.reader.readline() == b""  # end of stream
    consumer.close()
    assert server.wait_until_drained(0)


def test_bind_failure_raises_oserror(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        server = TweetServer("127.0.0.1", taken.getsockname()[1], Journal(tmp_path / "j"))
        with pytest.raises(OSError):
            server.start()
        server.close()


# --- ReplaySource -----------------------------------------------------------------------


def run_replay(source: ReplaySource, stop_after: int | None = None) -> list[dict[str, Any]]:
    emitted: list[dict[str, Any]] = []
    stop = threading.Event()

    def emit(tweet: dict[str, Any], position: Any = None) -> bool:
        emitted.append(tweet)
        if stop_after is not None and len(emitted) >= stop_after:
            stop.set()
        return True

    result = source.run(emit, stop)
    assert result == len(emitted) == source.emitted
    return emitted


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join(
        (line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines
    ))
    return path


def test_replay_emits_payload_and_bare_lines_and_skips_bad_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payload = {"data": {"id": "11", "text": "payload &amp; all", "lang": "en",
                        "author_id": "3", "created_at": "2026-03-14T09:00:00.000Z"},
               "matching_rules": [{"id": "1", "tag": TAG}]}
    bare = {"id": "12", "text": "bare\nline", "created_at": "2026-03-14T09:00:01.000Z"}
    path = write_lines(tmp_path / "t.jsonl", [
        json.dumps(payload),
        "{not json at all: secret-garbage-xyz",
        "",
        json.dumps(bare),
        "[1, 2, 3]",
        '{"id": "13"}',
        b'{"id": "14", "text": "\xff\xfe"}',
        '{"errors": [{"title": "operational-disconnect", "detail": "gone"}]}',
    ])
    caplog.set_level(logging.WARNING, logger="sources.replay")
    source = ReplaySource(path, rate=0, loop=False)
    # a payload's post carries what chose it when it was recorded: its rules' tags
    assert run_replay(source) == [{**payload["data"], "matched": [TAG]}, bare]
    assert source.skipped == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5
    line_numbers = [w.split(": skipped")[0].rsplit(":", 1)[1] for w in warnings]
    assert line_numbers == ["2", "5", "6", "7", "8"]
    assert "secret-garbage-xyz" not in caplog.text  # the reason, not the line


def test_replay_rate_zero_emits_the_whole_sample_file() -> None:
    source = ReplaySource(SAMPLE, rate=0, loop=False)
    emitted = run_replay(source)
    assert len(emitted) == 60
    assert source.skipped == 0


def test_the_sample_file_is_what_the_design_asks_for() -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    objects = [json.loads(line) for line in lines]
    tweets_in = [tweet_from_payload(obj) for obj in objects]
    assert all(tweet is not None for tweet in tweets_in)
    ids = [tweet["id"] for tweet in tweets_in]
    assert len(set(ids)) == len(ids) == 60
    assert all(isinstance(i, str) and i.isdigit() and len(i) == 19 for i in ids)
    assert any("data" in obj for obj in objects) and any("data" not in obj for obj in objects)
    cleaned = [transform.clean_text(tweet["text"]) for tweet in tweets_in]
    assert cleaned.count("") == 1  # the tweet that is only a URL and emoji
    text = "\n".join(tweet["text"] for tweet in tweets_in)
    for needle in ["&amp;", "&lt;", "&gt;", "RT @", "https://t.co/", "www.", "#COVID19",
                   "\u200d", "\U0001f1eb\U0001f1f7", "\U0001f3fd", "\u20e3", "\t",
                   "info@who.int", "é", "ñ", "ك", "न", "マ", "Б"]:
        assert needle in text, needle


def test_replay_loop_suffixes_ids_from_the_second_pass(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [
        json.dumps({"id": "1", "text": "a"}),
        json.dumps({"data": {"id": "2", "text": "b", "lang": "en"}}),
        json.dumps({"id": 3, "text": "c"}),
    ])
    emitted = run_replay(ReplaySource(path, rate=0, loop=True), stop_after=7)
    assert [t["id"] for t in emitted] == ["1", "2", 3, "1~2", "2~2", "3~2", "1~3"]
    assert emitted[4] == {"id": "2~2", "text": "b", "lang": "en"}


@pytest.mark.parametrize("content", [[], ["", "not json", '{"id": "1"}']])
def test_replay_loop_over_a_file_without_tweets_returns(
    tmp_path: Path, content: list[str]
) -> None:
    path = write_lines(tmp_path / "t.jsonl", content) if content else tmp_path / "t.jsonl"
    path.touch()
    source = ReplaySource(path, rate=0, loop=True)
    thread = threading.Thread(target=run_replay, args=(source,), daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "looping over a file without tweets spins"
    assert source.emitted == 0


def test_replay_paces_at_the_rate(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(t) for t in tweets(0, 31)])
    started = time.monotonic()
    assert len(run_replay(ReplaySource(path, rate=50, loop=False))) == 31
    # paced in slices: a tweet goes out at most a slice before it is due
    assert time.monotonic() - started >= (30 / 50 - ReplaySource.SLICE_SECONDS) * 0.9


def test_a_fast_replay_wakes_once_a_slice_not_once_a_tweet(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(t) for t in tweets(0, 200)])
    waits: list[float] = []

    class CountingStop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout or 0.0)
            return super().wait(timeout)

    emitted: list[dict[str, Any]] = []
    source = ReplaySource(path, rate=1000, loop=False)  # 0.2 s: two slices
    assert source.run(collect(emitted), CountingStop()) == 200
    assert emitted == tweets(0, 200)
    assert len(waits) <= 200 * ReplaySource.SLICE_SECONDS  # a tweet each would be 199


def test_stop_interrupts_a_slow_replay_promptly(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(t) for t in tweets(0, 3)])
    source = ReplaySource(path, rate=0.2, loop=True)  # one tweet every 5 s
    stop, first = threading.Event(), threading.Event()
    result: list[int] = []

    def emit(tweet: dict[str, Any], position: Any = None) -> bool:
        first.set()
        return True

    thread = threading.Thread(target=lambda: result.append(source.run(emit, stop)), daemon=True)
    thread.start()
    assert first.wait(TIMEOUT)
    started = time.monotonic()
    stop.set()
    thread.join(TIMEOUT)
    assert time.monotonic() - started < 1.0
    assert result == [1]


def test_a_killed_replay_goes_on_exactly_after_what_the_journal_holds(tmp_path: Path) -> None:
    """The position file is written at most once a second; the journal's records
    carry each tweet's position, so a restart neither skips nor repeats a line."""
    path = tmp_path / "t.jsonl"
    write_lines(path, [json.dumps({"id": str(n), "text": f"tweet {n}"}) for n in range(100)])
    position_file = tmp_path / "position.json"
    journal = Journal(tmp_path / "journal")
    first = ReplaySource(path, rate=0, loop=False, position_path=position_file)
    first.SAVE_SECONDS = 3600  # as if killed before the next save
    stop = threading.Event()

    def put(tweet: dict[str, Any], position: Any = None) -> bool:
        if tweet["id"] == "40":
            stop.set()  # the kill: after tweet 40 is in the journal
        return journal.put(tweet, position)

    save = first._save_position
    saves: list[dict[str, Any]] = []

    def first_save_only(**kwargs: Any) -> None:  # the one before the first tweet, then none
        saves.append(kwargs)
        if len(saves) == 1:
            save(**kwargs)

    first._save_position = first_save_only  # type: ignore[method-assign]
    first.run(put, stop)
    assert journal.wait_committed(timeout=TIMEOUT)
    last = journal.tail(1)[0]
    journal.close()
    assert last["id"] == "40" and json.loads(position_file.read_text())["offset"] == 0
    emitted: list[dict[str, Any]] = []
    again = ReplaySource(path, rate=0, loop=False, position_path=position_file,
                         resume_at=last["pos"])
    again.run(collect(emitted), threading.Event())
    assert [tweet["id"] for tweet in emitted] == [str(n) for n in range(41, 100)]


def test_a_replay_handing_over_lists_gives_the_same_tweets_and_positions(
    tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(t) for t in tweets(0, 700)])
    one_by_one: list[tuple[dict[str, Any], Any]] = []
    ReplaySource(path, rate=0, loop=False).run(
        lambda tweet, position: one_by_one.append((tweet, position)) or True, threading.Event())
    lists: list[list[tuple[dict[str, Any], Any]]] = []

    def emit_many(batch: list[dict[str, Any]], positions: list[Any]) -> int:
        lists.append(list(zip(batch, positions, strict=True)))
        return len(batch)

    def emit(tweet: dict[str, Any], position: Any = None) -> bool:
        raise AssertionError("emit_many is given: emit is not called")

    source = ReplaySource(path, rate=0, loop=False)
    assert source.run(emit, threading.Event(), emit_many=emit_many) == 700
    assert [pair for handed in lists for pair in handed] == one_by_one
    assert [len(handed) for handed in lists] == [256, 256, 188]  # at most BATCH at once


def test_a_paced_replay_hands_a_slice_over_before_it_waits_for_the_next(
    tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(t) for t in tweets(0, 3)])
    source = ReplaySource(path, rate=0.2, loop=True)  # one tweet every 5 s
    stop, first = threading.Event(), threading.Event()
    handed: list[list[dict[str, Any]]] = []

    def emit_many(batch: list[dict[str, Any]], positions: list[Any]) -> int:
        handed.append(batch)
        first.set()
        return len(batch)

    thread = threading.Thread(target=source.run, args=(collect([]), stop),
                              kwargs={"emit_many": emit_many}, daemon=True)
    thread.start()
    try:
        assert first.wait(TIMEOUT)  # not kept back until a list fills
        assert handed == [tweets(0, 1)]
    finally:
        stop.set()
        thread.join(TIMEOUT)


def test_a_replay_handing_over_lists_saves_no_position_past_what_it_handed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed producer resumes from the position file: it must never claim a tweet
    still gathered in memory for the next list."""
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(t) for t in tweets(0, 600)])
    position_file = tmp_path / "position.json"
    monkeypatch.setattr(ReplaySource, "SAVE_SECONDS", 0.0)  # saved after every tweet
    source = ReplaySource(path, rate=0, loop=False, position_path=position_file)
    handed_to = [0]  # the offset after the last tweet handed over
    claimed: list[tuple[int, int]] = []

    def emit_many(batch: list[dict[str, Any]], positions: list[Any]) -> int:
        # what the file says now was written before this list was handed over
        claimed.append((json.loads(position_file.read_text())["offset"], handed_to[0]))
        handed_to[0] = positions[-1][1]
        return len(batch)

    assert source.run(lambda tweet, position: True, threading.Event(),
                      emit_many=emit_many) == 600
    assert len(claimed) >= 3
    assert [(saved, handed) for saved, handed in claimed if saved > handed] == []


def test_a_replay_into_a_full_journal_waits_and_every_post_arrives_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, thread_errors: list[Any]
) -> None:
    """The job is late and the journal has room for five posts: the replay waits for
    room (nothing refused), its position file never passes a post not accepted, and
    once a consumer takes what the journal holds every post arrives once, in order."""
    monkeypatch.setattr(ReplaySource, "SAVE_SECONDS", 0.0)  # saved after every post
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(t) for t in tweets(0, 300)])
    position_file = tmp_path / "position.json"
    server = server_with_room_for_five(tmp_path / "journal")  # no acks: written is stored
    source = ReplaySource(path, rate=0, loop=False, position_path=position_file,
                          before_save=lambda: server.sync(TIMEOUT))
    stop = threading.Event()
    emitted: list[int] = []
    run = threading.Thread(target=lambda: emitted.append(source.run(
        functools.partial(server.put, will_retry=True), stop,
        emit_many=functools.partial(server.put_many, will_retry=True),
        wait_for_room=server.wait_for_room)), daemon=True)
    try:
        with capture_logs("sources.replay") as logs:
            run.start()
            logs.wait_for("the replay waits for room")
        # waiting, not refusing: what fits is accepted (with its position, fewer than
        # five), and the position file claims no more
        accepted = source.emitted
        assert 1 <= accepted < 5 and (server.pending, server.dropped) == (accepted, 0)
        server.sync(TIMEOUT)
        last = server.journal.tail(1)[0]
        assert last["id"] == tweets(accepted - 1, accepted)[0]["id"]
        assert json.loads(position_file.read_text())["offset"] == last["pos"][1]

        consumer = Consumer(server.address)  # the job comes: room again, post by post
        try:
            assert consumer.read_tweets(300) == tweets(0, 300)  # each once, in order
        finally:
            consumer.close()
        run.join(TIMEOUT)
        assert emitted == [300] and server.dropped == 0 and source.pauses >= 1
        assert server.wait_until_drained(TIMEOUT)
    finally:
        stop.set()
        server.wake()
        run.join(TIMEOUT)
        server.close()
    assert thread_errors == []


def test_a_stop_ends_a_wait_for_room_at_once(tmp_path: Path) -> None:
    """Ctrl-C while the replay waits for the job: the wait ends at once (stream.py
    wakes it on stop), and the position names the last post accepted."""
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(t) for t in tweets(0, 20)])
    server = server_with_room_for_five(tmp_path / "journal")
    source = ReplaySource(path, rate=0, loop=False, position_path=tmp_path / "position.json")
    stop = threading.Event()
    run = threading.Thread(target=source.run, daemon=True,
                           args=(functools.partial(server.put, will_retry=True), stop),
                           kwargs={"wait_for_room": server.wait_for_room})
    try:
        with capture_logs("sources.replay") as logs:
            run.start()
            logs.wait_for("the replay waits for room")
        stop.set()
        server.wake()
        run.join(TIMEOUT)
        assert not run.is_alive()
        assert 1 <= source.emitted < 20 and server.dropped == 0
        saved = json.loads((tmp_path / "position.json").read_text())
        # it goes on with the first post not accepted
        assert (saved["line"], saved["finished"]) == (source.emitted, False)
    finally:
        server.close()


def test_a_replay_larger_than_the_journal_survives_a_stop_and_a_kill_while_it_waits(
    tmp_path: Path
) -> None:
    """stream.py replays 2.5 MB into a 1 MiB journal with no job: it waits; SIGTERM
    stops it at once, a kill -9 while it waits loses nothing; the next start, with a
    job that acknowledges as it reads, delivers every line exactly once, 0 refused."""
    count = 2_500
    lines = [json.dumps({"id": f"p{n}", "text": f"post {n} " + "x" * 1_000})
             for n in range(count)]
    replay = write_lines(tmp_path / "big.jsonl", lines)
    args = ("--replay-file", str(replay), "--rate", "0", "--journal-max-bytes", "1MiB")

    for stop_with in (signal.SIGTERM, signal.SIGKILL):
        proc, _ = start_producer(tmp_path, *args)
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                if "the replay waits for room" in line:
                    break
            proc.send_signal(stop_with)
            code = proc.wait(TIMEOUT)
        finally:
            proc.kill()
            rest = proc.stderr.read()
            proc.stderr.close()
        if stop_with == signal.SIGTERM:
            assert code == 0 and "Traceback" not in rest
            assert " 0 refused" in rest and "waited" in rest, rest
        journal = Journal(tmp_path / "data" / "journal")
        try:
            last = journal.tail(1)[0]
        finally:
            journal.close()
        position = json.loads(
            (tmp_path / "data" / "journal" / ReplaySource.POSITION_FILE).read_text())
        assert position["offset"] <= last["pos"][1]  # never past what the journal holds

    proc, port = start_producer(tmp_path, *args)
    assert proc.stderr is not None
    stored: dict[int, str] = {}  # seq -> id, as the job keeps them
    secret = control.load_secret(None, tmp_path / "data" / "control.secret")
    job = control.ControlClient("127.0.0.1", ACK_PORTS[port], secret)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            reader = sock.makefile("rb")
            while line := reader.readline():
                obj = json.loads(line)
                if "kind" in obj:  # the replay's keyword set and coverage span
                    assert control.record_authentic(secret, obj), obj
                else:
                    assert stored.setdefault(obj["seq"], obj["id"]) == obj["id"]
                if obj["seq"] % 100 == 0 or len(stored) == count:
                    job.send({obj["src"]: obj["seq"]}, {})
        assert proc.wait(TIMEOUT) == 0  # every line stored: the producer is done
    finally:
        job.close()
        proc.kill()
        rest = proc.stderr.read()
        proc.stderr.close()
    ids = list(stored.values())
    assert sorted(ids, key=lambda i: int(i[1:])) == [f"p{n}" for n in range(count)]
    assert len(ids) == len(set(ids)) == count  # nothing lost, nothing twice
    assert " 0 refused" in rest and "Traceback" not in rest


def test_replay_of_a_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        ReplaySource(tmp_path / "missing.jsonl", rate=0, loop=False).run(
            lambda tweet: None, threading.Event()
        )


# --- TwitterSource ---------------------------------------------------------------------------


def test_recorded_stream_payloads_become_tweets(caplog: pytest.LogCaptureFixture) -> None:
    raw_lines = FIXTURE.read_bytes().splitlines()
    # each with what chose it: the tags of its matching rules (their values once
    # sync_rules has set them)
    expected = [{**payload["data"], "matched": [rule["tag"].lower()
                                                for rule in payload["matching_rules"]]}
                for payload in map(json.loads, raw_lines) if "data" in payload]
    emitted: list[dict[str, Any]] = []
    source = TwitterSource(TOKEN, collect(emitted))
    caplog.set_level(logging.WARNING, logger="sources.twitter")
    for raw in raw_lines:
        source.on_data(raw)
    source.on_data(b"\x00 not json")
    assert emitted == expected
    assert len(emitted) == 4 and source.received == 4
    assert any("\n" in tweet["text"] for tweet in emitted)
    assert emitted[1]["edit_history_tweet_ids"] == [emitted[1]["id"]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "operational-disconnect" in warnings[0]


def test_the_daily_cap_counts_posts_read_per_utc_day_across_restarts(tmp_path: Path) -> None:
    now = [datetime(2026, 11, 29, 23, 59, 0, tzinfo=UTC).timestamp()]
    path = tmp_path / DailyCap.FILE
    cap = DailyCap(3, path, clock=lambda: now[0])
    assert [cap.count() for _ in range(3)] == [False, False, True]  # the third reaches it
    assert cap.reached and cap.seconds_to_reset() == 60
    again = DailyCap(3, path, clock=lambda: now[0])  # a restart the same day
    assert again.reached and again.used == 3
    now[0] += 61  # the next UTC day
    assert not again.reached and again.used == 0 and again.day == "2026-11-30"
    path.write_text('{"day": "2026-11-30", "posts": "many"}')
    assert DailyCap(3, path, clock=lambda: now[0]).used == 0  # unreadable: counted afresh


def test_at_the_cap_the_stream_disconnects_and_the_status_says_so(tmp_path: Path) -> None:
    emitted: list[dict[str, Any]] = []
    cap = DailyCap(2, tmp_path / DailyCap.FILE)
    source = TwitterSource(TOKEN, collect(emitted), daily_cap=cap)
    source.running = True  # as while tweepy streams
    source.on_data(json.dumps({"data": {"id": "1", "text": "a"}}))
    assert source.running
    source.on_data(json.dumps({"errors": [{"title": "not a post"}]}))  # not billed, not counted
    source.on_data(json.dumps({"data": {"id": "2", "text": "b"}}))
    assert not source.running  # tweepy stops after this message
    assert [tweet["id"] for tweet in emitted] == ["1", "2"]  # what was read is kept
    assert json.loads((tmp_path / DailyCap.FILE).read_text())["posts"] == 2
    assert source.status().startswith("twitter: 2 posts read, 2 of 2 today")

    stop = threading.Event()
    waiter = LogWaiter()
    logging.getLogger("sources.twitter").addHandler(waiter)
    runner = threading.Thread(target=source.run, args=(stop,))
    runner.start()  # the cap is reached: it waits for the next UTC day instead of connecting
    try:
        waiter.wait_for("daily cap of 2 X posts reached")
    finally:
        stop.set()
        runner.join(TIMEOUT)
        logging.getLogger("sources.twitter").removeHandler(waiter)
    assert not runner.is_alive()
    assert waiter.count("daily cap") == 1


def test_an_x_post_the_journal_refuses_is_counted_as_refused_a_gap_it_cannot_refill(
    tmp_path: Path
) -> None:
    """X's filtered stream cannot send a post again: the only source whose refusals
    are losses, counted by the source and the journal, each a call to on_refused."""
    server = server_with_room_for_five(tmp_path / "journal")
    gaps: list[str] = []

    class Recording(TwitterSource):
        def on_refused(self, tweet: dict[str, Any]) -> None:
            gaps.append(tweet["id"])

    source = Recording(TOKEN, server.put)
    try:
        for tweet in tweets(0, 7):
            source.on_data(json.dumps({"data": tweet}))
        assert (source.received, source.refused, server.dropped) == (7, 2, 2)
        assert gaps == [tweet["id"] for tweet in tweets(5, 7)]
        assert "7 sent on, 2 refused (journal full)" in source.status()
    finally:
        server.close()


class FakeRulesApi:
    """Stands in for the three rules endpoints; records what sync_rules asks."""

    def __init__(self, rules: list[tweepy.StreamRule] | None) -> None:
        self.rules = rules
        self.added: list[list[tweepy.StreamRule]] = []
        self.deleted: list[list[str]] = []

    def get_rules(self, **params: Any) -> Response:
        return Response(self.rules, {}, [], {})

    def add_rules(self, add: list[tweepy.StreamRule], **params: Any) -> Response:
        self.added.append(list(add))
        return Response(None, {}, [], {})

    def delete_rules(self, ids: list[str], **params: Any) -> Response:
        self.deleted.append(list(ids))
        return Response(None, {}, [], {})


def source_with_rules(
    monkeypatch: pytest.MonkeyPatch, rules: list[tweepy.StreamRule] | None
) -> tuple[TwitterSource, FakeRulesApi]:
    source = TwitterSource(TOKEN, lambda tweet, position: True)
    fake = FakeRulesApi(rules)
    for name in ("get_rules", "add_rules", "delete_rules"):
        monkeypatch.setattr(source, name, getattr(fake, name))
    return source, fake


def test_sync_rules_adds_missing_deletes_our_stale_leaves_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, fake = source_with_rules(monkeypatch, [
        tweepy.StreamRule("covid", TAG, "1"),
        tweepy.StreamRule("old rule of ours", TAG, "2"),
        tweepy.StreamRule("someone else's rule", "other-tag", "3"),
        tweepy.StreamRule("untagged rule", None, "4"),
        tweepy.StreamRule("vaccine", "other-tag", "5"),
    ])
    source.sync_rules(["covid", "masks OR lockdown", "vaccine", "covid"])
    assert fake.deleted == [["2"]]
    assert fake.added == [[tweepy.StreamRule("masks OR lockdown", TAG)]]


def test_sync_rules_with_no_rules_yet_adds_all(monkeypatch: pytest.MonkeyPatch) -> None:
    source, fake = source_with_rules(monkeypatch, None)
    source.sync_rules(["covid", "#COVID19"])
    assert fake.added == [[tweepy.StreamRule("covid", TAG), tweepy.StreamRule("#COVID19", TAG)]]
    assert fake.deleted == []


def test_sync_rules_up_to_date_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    source, fake = source_with_rules(monkeypatch, [tweepy.StreamRule("covid", TAG, "1")])
    caplog.set_level(logging.INFO, logger="sources.twitter")
    source.sync_rules(["covid"])
    assert (fake.added, fake.deleted) == ([], [])
    assert "already up to date" in caplog.text


def test_the_stream_asks_for_each_posts_place_in_the_conversation(monkeypatch) -> None:
    source = TwitterSource(TOKEN, lambda tweet, position: True)
    asked: list[dict[str, Any]] = []
    monkeypatch.setattr(source, "_connect", lambda method, endpoint, params: asked.append(params))
    source.start()
    [params] = asked
    assert set(params["tweet.fields"].split(",")) == {
        "created_at", "lang", "author_id", "conversation_id", "referenced_tweets", "entities"}


def test_tweepy_is_configured_not_rewritten() -> None:
    source = TwitterSource(TOKEN, lambda tweet, position: True)
    assert source.max_retries == TwitterSource.MAX_RETRIES
    assert source.wait_on_rate_limit is TwitterSource.WAIT_ON_RATE_LIMIT
    assert "_connect" not in TwitterSource.__dict__


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_stop_the_stream_with_a_clear_message(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    source = TwitterSource(TOKEN, lambda tweet, position: True)
    source.running = True
    source.on_request_error(status)
    assert source.running is False
    assert source.fatal_status == status
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "token is invalid" in errors[0] and "tier" in errors[0]


def test_other_http_errors_leave_reconnecting_to_tweepy() -> None:
    source = TwitterSource(TOKEN, lambda tweet, position: True)
    source.running = True
    source.on_request_error(503)
    source.on_request_error(429)
    source.on_connection_error()
    assert source.running is True and source.fatal_status is None


def test_the_bearer_token_never_reaches_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    source = TwitterSource(TOKEN, lambda tweet, position: True)
    source.on_request_error(401)
    source.on_request_error(500)
    source.on_connection_error()
    source.on_connect()
    source.on_data(b"garbage")
    source.on_disconnect()
    assert caplog.records
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(source)

    # and what reaches stderr goes through the redacting formatter, which also
    # masks tweepy's own DEBUG request log (it prints the Authorization header)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    try:
        config.configure_logging(config.Settings(bearer_token=TOKEN, log_level="DEBUG"), out)
        source.on_request_error(401)
        source.on_connection_error()
        logging.getLogger("tweepy.client").debug(
            "Headers: {'Authorization': 'Bearer %s'}", TOKEN
        )
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert "token is invalid" in out.getvalue()
    assert "Bearer ***" in out.getvalue()
    assert TOKEN not in out.getvalue()


# --- stream.py command line -------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any of the project's variables."""
    ours = {opt.env for opt in config.OPTIONS.values()}
    env = {key: value for key, value in os.environ.items() if key not in ours}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # cwd is a temporary folder so that a developer's .env cannot change the outcome, and
    # the journal and control secret go to its data/, not the project's
    return subprocess.run(
        [sys.executable, str(PROJECT / "stream.py"), *args], cwd=cwd,
        env=clean_env(DATA_DIR=str(cwd / "data"), **env),
        capture_output=True, text=True, timeout=30, check=False,
    )


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


ACK_PORTS: dict[int, int] = {}  # tweet port -> ack port of the producers started here


def acknowledge(cwd: Path, port: int, source: str, seq: int) -> None:
    """Acknowledge ``source`` up to ``seq`` on a stream.py's control port, as the
    Spark driver does, with the secret stream.py made in its folder."""
    secret = control.load_secret(None, cwd / "data" / "control.secret")
    client = control.ControlClient("127.0.0.1", port, secret)
    try:
        client.send({source: seq}, {})
    finally:
        client.close()


def test_cli_help_lists_the_options(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for flag in ["--source", "--replay-file", "--rate", "--loop", "--host", "--port"]:
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [(["--port", "abc"], "--port"),
     (["--source", "replay", "--replay-file", "/nonexistent"], "--replay-file"),
     (["--source", "bluesky", "--jetstream-url", "http://x/subscribe"], "--jetstream-url")],
)
def test_cli_bad_value_is_one_line_and_status_2(
    tmp_path: Path, args: list[str], named: str
) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stream.py: error: ") and named in lines[0]


def test_cli_twitter_without_a_token_says_what_to_do(tmp_path: Path) -> None:
    result = run_cli("--source", "twitter", cwd=tmp_path)
    assert result.returncode == 2
    assert "TWITTER_BEARER_TOKEN" in result.stderr and "--source bluesky" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("busy", "role", "flag"), [("posts", "posts", "--port"),
                                                     ("control", "control", "--ack-port")])
def test_cli_port_in_use_names_the_busy_port_in_one_line(
    tmp_path: Path, busy: str, role: str, flag: str
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        ports = ([str(port), str(free_port())] if busy == "posts"
                 else [str(free_port()), str(port)])
        result = run_cli("--source", "replay", "--port", ports[0], "--ack-port", ports[1],
                         cwd=tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.strip().splitlines() if " INFO " not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"stream.py: error: cannot listen on 127.0.0.1:{port}, the "
                               f"{role} port: Address already in use; "), lines[0]
    assert f"choose another port with {flag}," in lines[0]
    assert "Traceback" not in result.stderr


def start_producer(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    """Start stream.py and return once its socket is listening (acks on port + 1...)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT / "stream.py"), "--source", "replay", "--port", str(port),
         "--ack-port", str(ACK_PORTS.setdefault(port, free_port())), *args],
        cwd=tmp_path, env=clean_env(DATA_DIR=str(tmp_path / "data")), stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the banner is logged once the socket listens
        if "serving tweets on" in line:
            return proc, port
    proc.wait(TIMEOUT)
    pytest.fail(f"stream.py ended before listening (status {proc.returncode})")


def read_posts(reader: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` posts a stream.py sends, past the sealed records between
    them (its keyword set, its coverage spans: see tests/test_coverage.py)."""
    posts: list[dict[str, Any]] = []
    while len(posts) < count:
        line = json.loads(reader.readline())
        if "kind" not in line:
            posts.append(line)
    return posts


def job_reads_all(tmp_path: Path, port: int, reader: Any) -> list[dict[str, Any]]:
    """Every line a stream.py sends until it is done, each acknowledged as the job
    would once stored: the producer then closes the socket."""
    received = []
    while line := reader.readline():
        received.append(json.loads(line))
        acknowledge(tmp_path, ACK_PORTS[port], received[-1]["src"], received[-1]["seq"])
    return received


def replay_run(tmp_path: Path, count: int, *args: str) -> tuple[list[str], str]:
    """One stream.py --source replay run to its end: the ids of the ``count`` tweets
    it sends (acknowledged as the job would) and its log."""
    proc, port = start_producer(tmp_path, "--rate", "0", *args)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            received = [line for line in job_reads_all(tmp_path, port, sock.makefile("rb"))
                        if "kind" not in line]
            assert len(received) == count
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
        assert proc.stderr is not None
        log = proc.stderr.read()
        proc.stderr.close()
    return [tweet["id"] for tweet in received], log


def test_cli_from_start_replays_a_finished_file_again_as_new_posts(tmp_path: Path) -> None:
    replay = write_lines(tmp_path / "small.jsonl",
                         [json.dumps({"id": str(n), "text": f"tweet {n}"}) for n in range(3)])
    file = ("--replay-file", str(replay))
    assert replay_run(tmp_path, 3, *file)[0] == ["0", "1", "2"]
    ids, log = replay_run(tmp_path, 0, *file)  # remembered: nothing twice
    assert ids == [] and "--from-start replays it again" in log
    ids, log = replay_run(tmp_path, 3, *file, "--from-start")
    assert ids == ["0~2", "1~2", "2~2"]  # new posts to the job's deduplication
    assert replay_run(tmp_path, 3, *file, "--from-start")[0] == ["0~3", "1~3", "2~3"]
    assert "Traceback" not in log


def test_cli_replay_delivers_everything_then_exits_0(tmp_path: Path) -> None:
    sent = [
        {"id": "1", "text": "bare tweet"},
        {"id": "2", "text": "line one\nline two", "lang": "en"},
        {"id": "3", "text": "Вакцина 💉", "created_at": "2026-03-14T09:00:00.000Z"},
    ]
    lines = [json.dumps(sent[0]), json.dumps({"data": sent[1], "matching_rules": []}),
             "oops", json.dumps(sent[2], ensure_ascii=False)]
    replay = write_lines(tmp_path / "small.jsonl", lines)
    proc, port = start_producer(tmp_path, "--replay-file", str(replay), "--rate", "0")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            # the job's acknowledgements: only then is the producer done (and closes)
            received = job_reads_all(tmp_path, port, sock.makefile("rb"))
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
        assert proc.stderr is not None
        rest = proc.stderr.read()
        proc.stderr.close()
    assert [without_delivery(line) for line in received if "kind" not in line] == sent
    # its keyword set first (none: a file is sent whole), its span as it opens and as
    # it ends
    kinds = [line.get("kind") for line in received]
    assert kinds == ["filter", "coverage", None, None, None, "coverage"], kinds
    assert received[0]["keywords"] == [] and received[0]["source"] == "replay"
    span = received[-1]
    assert (span["events"], span["posts"], span["matched"], span["host"]) == (
        4, 3, 3, str(replay))
    assert f"summary: 3 tweets emitted, 1 bad lines skipped; {len(received)} sent, " \
        f"{len(received)} stored, 0 refused, 0 held" in rest
    assert "Traceback" not in rest


def test_cli_sigterm_stops_cleanly(tmp_path: Path) -> None:
    proc, _ = start_producer(tmp_path, "--loop", "--rate", "2")
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
        assert proc.stderr is not None
        rest = proc.stderr.read()
        proc.stderr.close()
    assert "Traceback" not in rest
    assert "summary:" in rest


def test_cli_sigterm_keeps_unacknowledged_tweets_for_the_next_start(tmp_path: Path) -> None:
    lines = [json.dumps({"id": str(i), "text": f"tweet {i}"}) for i in range(5)]
    replay = write_lines(tmp_path / "five.jsonl", lines)
    proc, port = start_producer(tmp_path, "--replay-file", str(replay), "--rate", "0")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            reader = sock.makefile("rb")
            first = read_posts(reader, len(lines))
            src = first[1]["src"]
            secret = control.load_secret(None, tmp_path / "data" / "control.secret")
            job = control.ControlClient("127.0.0.1", ACK_PORTS[port], secret)
            try:  # an ack, then a resend it reads after it on the same connection
                job.send({src: first[1]["seq"]}, {src: first[2]["seq"]})
            finally:
                job.close()
            # the resent tweet says the ack was applied: a stop at once keeps it
            assert read_posts(reader, 1) == first[2:3]
            proc.send_signal(signal.SIGTERM)  # 3 tweets still unacknowledged
            assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
        assert proc.stderr is not None
        proc.stderr.close()

    empty = write_lines(tmp_path / "none.jsonl", [])
    proc, port = start_producer(tmp_path, "--replay-file", str(empty), "--rate", "0")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            reader = sock.makefile("rb")
            again = read_posts(reader, 3)
    finally:
        proc.kill()
        assert proc.stderr is not None
        proc.stderr.close()
    assert again == first[2:]  # same ids, seqs and source: the job can drop any it stored


def sleeps(pid: int) -> dict[int, int]:
    """How many times each thread of process ``pid`` has gone to sleep so far (its
    voluntary context switches, from Linux's /proc): a thread that polls adds to
    its count on each wake-up, one that waits on a socket or an event does not."""
    counts = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                counts[int(task.name)] = int(line.split()[1])
    return counts


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts sleeps in /proc")
def test_a_finished_replay_waits_for_the_job_without_waking_and_stops_at_once(
    tmp_path: Path
) -> None:
    replay = write_lines(tmp_path / "two.jsonl",
                         [json.dumps({"id": str(n), "text": f"tweet {n}"}) for n in range(2)])
    proc, port = start_producer(tmp_path, "--replay-file", str(replay), "--rate", "0")
    assert proc.stderr is not None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            reader = sock.makefile("rb")
            assert all(reader.readline() for _ in range(2))  # sent; the job never acks
            for line in proc.stderr:
                if "replay done; waiting until the job has stored" in line:
                    break
            threading.Event().wait(1.0)  # the wait begins: a thread starts, main blocks
            before = sleeps(proc.pid)
            threading.Event().wait(1.0)  # then an idle second: nothing is to happen in it
            after = sleeps(proc.pid)
            proc.send_signal(signal.SIGTERM)  # ends the wait for the job at once
            assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
        rest = proc.stderr.read()
        proc.stderr.close()
    # every thread waits on a socket or an event, the main thread on the stop request
    # alone (a poll for it woke the main thread 4 times a second); one stray wake-up is
    # let pass
    woke = {tid: count - before.get(tid, 0) for tid, count in after.items()}
    assert sum(woke.values()) <= 1, f"threads woke while idle: {woke} (main {proc.pid})"
    # held: the 2 posts, the keyword set, the span as it opened and as it ended
    assert "summary: 2 tweets emitted" in rest and "5 held" in rest
    assert "Traceback" not in rest


def test_unacknowledged_tweets_go_to_the_next_consumer_again(
    tmp_path: Path, server_log: LogWaiter, thread_errors: list[Any]
) -> None:
    server = make_server(tmp_path / "journal", acks=True)
    job = control.ControlClient("127.0.0.1", server.ack_address[1], SECRET)
    try:
        for tweet in tweets(0, 5):
            server.put(tweet)
        first = Consumer(server.address)
        assert first.read_tweets(5) == tweets(0, 5)
        job.send({server.source: 2}, {})  # seqs 1, 2 stored
        with server.journal.changed:  # the ack is handled (the sender may see the close first)
            assert server.journal.changed.wait_for(lambda: server.journal.acked >= 2, TIMEOUT)
        first.close()
        second = Consumer(server.address)
        try:
            assert second.read_tweets(3) == tweets(2, 5)
            # a gap seen by the job: it asks again from seq 4 on the same connection
            job.send({server.source: 2}, {server.source: 4})
            assert second.read_tweets(2) == tweets(3, 5)
            assert not server.wait_until_drained(0.05)  # nothing acknowledged past 2
            # another producer's ack, on the same connection and so handled first:
            # ignored (neither applied nor refused)
            job.send({"anotherproducer": 99, server.source: 5}, {})
            assert server.wait_until_drained(TIMEOUT)
        finally:
            second.close()
        assert (server.acked, server.pending, server.refused_acks) == (5, 0, 0)
    finally:
        job.close()
        server.close()
    assert thread_errors == []


def test_a_resend_asked_while_the_tweets_are_still_being_written_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, thread_errors: list[Any]
) -> None:
    # The job can read a tweet, see a gap and ask for it again before the sender
    # has moved its cursor past what it just wrote: the request used to be taken
    # for one about tweets not sent yet, and ignored (flaky under load in CI).
    written, go_on = threading.Event(), threading.Event()
    sendfile = socket.socket.sendfile

    def held_after_writing(self: socket.socket, *args: Any, **kwargs: Any) -> int:
        sent = sendfile(self, *args, **kwargs)
        written.set()
        assert go_on.wait(TIMEOUT)
        return sent

    asked = threading.Event()
    resend_from = utility.TweetServer.resend_from

    def noted(self: utility.TweetServer, seq: int) -> tuple[int, int]:
        try:
            return resend_from(self, seq)
        finally:
            asked.set()

    monkeypatch.setattr(socket.socket, "sendfile", held_after_writing)
    monkeypatch.setattr(utility.TweetServer, "resend_from", noted)
    server = make_server(tmp_path / "journal", acks=True)
    job = control.ControlClient("127.0.0.1", server.ack_address[1], SECRET)
    consumer = None
    try:
        for tweet in tweets(0, 3):
            server.put(tweet)
        server.sync(TIMEOUT)
        consumer = Consumer(server.address)
        assert consumer.read_tweets(3) == tweets(0, 3)
        assert written.wait(TIMEOUT)  # the sender sits between the write and its cursor
        job.send({}, {server.source: 2})  # seq 2 again
        assert asked.wait(TIMEOUT)  # handled while the sender still sits there
        go_on.set()
        assert consumer.read_tweets(2) == tweets(1, 3)
    finally:
        go_on.set()
        if consumer is not None:
            consumer.close()
        job.close()
        server.close()
    assert thread_errors == []


def test_the_journal_keeps_what_was_not_acknowledged(tmp_path: Path) -> None:
    server = make_server(tmp_path / "journal", acks=True)
    source = server.source
    consumer = Consumer(server.address)
    for tweet in tweets(0, 4):
        server.put(tweet)
    consumer.read_lines(4)
    assert server.ack(1)
    consumer.close()
    server.close()
    again = Journal(tmp_path / "journal")
    try:
        assert again.source == source
        assert again.first_held() == 2 and again.committed == 4 and again.next_seq == 5
        held = [json.loads(line)["seq"] for line in records_of(again.spans(2, 4, 10**6))]
        assert held == [2, 3, 4]
        with pytest.raises(OSError, match="in use"):
            Journal(tmp_path / "journal")
    finally:
        again.close()
    assert (tmp_path / "journal").stat().st_mode & 0o077 == 0  # private
    assert all(path.stat().st_mode & 0o077 == 0 for path in (tmp_path / "journal").iterdir())


def test_cli_warns_when_the_socket_is_reachable_from_the_network(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT / "stream.py"), "--source", "replay", "--host", "0.0.0.0",
         "--port", str(free_port()), "--ack-port", str(free_port()), "--loop", "--rate", "1"],
        cwd=tmp_path, env=clean_env(DATA_DIR=str(tmp_path / "data")), stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # the warning comes before the banner
            seen.append(line)
            if "serving tweets on" in line:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
        assert proc.stderr is not None
        proc.stderr.close()
    warnings = [line for line in seen if "WARNING" in line]
    assert len(warnings) == 1 and "reachable from the network" in warnings[0]


def test_a_consumer_that_stops_reading_is_dropped_and_the_next_gets_its_tweets(
    tmp_path: Path, server_log: LogWaiter, thread_errors: list[Any]
) -> None:
    server = TweetServer("127.0.0.1", 0, Journal(tmp_path / "journal"), ack_port=0,
                         secret=SECRET)
    server.SEND_TIMEOUT = 0.5
    server.start()
    try:
        stalled = socket.create_connection(server.address, timeout=TIMEOUT)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
        big = [{"id": str(n), "text": "x" * 2000} for n in range(2000)]  # ~4 MB
        for tweet in big:
            assert server.put(tweet)
        server_log.wait_for("consumer took nothing for 0.5 s: dropped")
        stalled.close()
        reader_sock = socket.create_connection(server.address, timeout=TIMEOUT)
        with reader_sock, reader_sock.makefile("rb") as reader:
            ids = [json.loads(reader.readline())["id"] for _ in big]
        assert ids == [tweet["id"] for tweet in big]  # every one, to the next consumer
    finally:
        server.close()
    assert thread_errors == []


def test_a_finished_replay_is_not_sent_twice_but_a_loop_goes_on(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl",
                       [json.dumps({"id": str(n), "text": f"tweet {n}"}) for n in range(3)])
    position = tmp_path / "position.json"
    first: list[dict[str, Any]] = []
    ReplaySource(path, 0, False, position_path=position).run(collect(first),
                                                             threading.Event())
    assert [t["id"] for t in first] == ["0", "1", "2"]
    again: list[dict[str, Any]] = []
    ReplaySource(path, 0, False, position_path=position).run(collect(again),
                                                             threading.Event())
    assert again == []  # a restart after the end sends nothing twice
    looped: list[dict[str, Any]] = []
    stop = threading.Event()

    def emit(tweet: dict[str, Any], position: Any = None) -> bool:
        looped.append(tweet)
        if len(looped) == 4:
            stop.set()
        return True

    ReplaySource(path, 0, True, position_path=position).run(emit, stop)
    assert [t["id"] for t in looped] == ["0~2", "1~2", "2~2", "0~3"]  # the next passes


def test_from_start_after_an_interrupted_replay_is_a_new_pass_from_the_top(
    tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "t.jsonl",
                       [json.dumps({"id": str(n), "text": f"tweet {n}"}) for n in range(3)])
    position = tmp_path / "position.json"
    first = run_replay(ReplaySource(path, 0, False, position_path=position), stop_after=2)
    assert [t["id"] for t in first] == ["0", "1"]
    again = run_replay(ReplaySource(path, 0, False, from_start=True, position_path=position))
    assert [t["id"] for t in again] == ["0~2", "1~2", "2~2"]
