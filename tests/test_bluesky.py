"""The Bluesky source: Jetstream events -> matching posts -> wire tweets.

A local WebSocket server (tests/processes.py, JetstreamStandIn) stands in for
Jetstream and serves events the tests write themselves, in the shape docs/design.md
documents. Waits are on events and conditions, never on sleeps.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import (
    T0_US,
    JetstreamStandIn,
    Program,
    capture_logs,
    clean_env,
    facet,
    free_port,
    post_event,
)
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.sync.server import ServerConnection, serve
from websockets.uri import parse_uri

import control
import transform
from sources import bluesky
from sources.bluesky import (
    DELETE,
    MALFORMED,
    OTHER,
    POST,
    BlueskySource,
    Deletion,
    KeywordMatcher,
    NoHostError,
    read_event,
    subscribe_url,
    wire_tweet,
)
from sources.jetstream_hooks import REFUSED, REWIND
from sources.jetstream_socket import JetstreamConnection
from sources.oversize import OversizeSkip

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_KEYWORDS = ("covid", "covid19", "covid-19", "coronavirus", "sars-cov-2")
TIMEOUT = 30


def covid_posts(count: int, start: int = 0, *, step_us: int = 1_000_000) -> list[dict[str, Any]]:
    return [post_event(f"k{n}", f"post {n} about covid", T0_US + n * step_us)
            for n in range(start, start + count)]


def uri(rkey: str, did: str = "did:plc:alice") -> str:
    return f"at://{did}/app.bsky.feed.post/{rkey}"


# --- events ---------------------------------------------------------------------------


def test_every_kind_and_operation_but_a_new_post_or_a_deleted_one_is_other() -> None:
    commit = post_event("k1", "covid", T0_US)["commit"]
    others = [
        {"did": "did:plc:a", "time_us": T0_US, "kind": "identity",
         "identity": {"did": "did:plc:a", "seq": 1, "time": "2026-11-30T08:00:00Z"}},
        {"did": "did:plc:a", "time_us": T0_US, "kind": "account",
         "account": {"active": True, "did": "did:plc:a", "seq": 2}},
        {"did": "did:plc:a", "time_us": T0_US, "kind": "commit",
         "commit": {**commit, "operation": "update"}},
        {"did": "did:plc:a", "time_us": T0_US, "kind": "commit",
         "commit": {"rev": "r", "operation": "delete", "collection": "app.bsky.feed.like",
                    "rkey": "k1"}},
        {"did": "did:plc:a", "time_us": T0_US, "kind": "commit",
         "commit": {**commit, "collection": "app.bsky.feed.like",
                    "record": {"$type": "app.bsky.feed.like", "subject": {}}}},
        {"did": "did:plc:a", "time_us": T0_US, "kind": "commit",
         "commit": {**commit, "collection": "app.bsky.feed.repost"}},
    ]
    for event in others:
        assert read_event(json.dumps(event)) == (OTHER, None, T0_US), event
    verdict, post, time_us = read_event(json.dumps(post_event("k1", "covid", T0_US)))
    assert (verdict, time_us) == (POST, T0_US)
    assert post is not None and post.uri == uri("k1")
    # a post's delete names it (no record comes with it), whatever the post was
    delete = {"did": "did:plc:a", "time_us": T0_US + 7, "kind": "commit",
              "commit": {"rev": "r", "operation": "delete",
                         "collection": "app.bsky.feed.post", "rkey": "k1"}}
    verdict, deletion, time_us = read_event(json.dumps(delete))
    assert (verdict, time_us) == (DELETE, T0_US + 7)
    assert deletion == Deletion("did:plc:a", "k1") and deletion.uri == uri("k1", "did:plc:a")
    for bad in ({"rkey": "a/b"}, {"rkey": ""}, {"rkey": 5}):
        broken = {**delete, "commit": {**delete["commit"], **bad}}
        assert read_event(json.dumps(broken))[:2] == (MALFORMED, None), bad


@pytest.mark.parametrize("frame", [
    "not json", "[1, 2]", "null", '"text"', "{}", b'{"did": "did:plc:a"}',
    json.dumps({"did": "did:plc:a", "time_us": 5, "kind": "commit", "commit": "x"}),
    json.dumps({"did": 7, "time_us": 5, "kind": "commit"}),
    "[" * 100_000,
])
def test_malformed_frames(frame: str | bytes) -> None:
    assert read_event(frame)[:2] == (MALFORMED, None)


@pytest.mark.parametrize("record", [
    {"$type": "app.bsky.feed.post", "createdAt": "2026-11-30T08:00:01.000Z"},
    {"$type": "app.bsky.feed.post", "text": None},
    {"$type": "app.bsky.feed.post", "text": ["covid"]},
])
def test_a_post_without_text_is_malformed_but_keeps_its_time(record: dict[str, Any]) -> None:
    event = post_event("k1", "x", T0_US)
    event["commit"]["record"] = record
    assert read_event(json.dumps(event)) == (MALFORMED, None, T0_US)
    event["commit"].pop("record")
    assert read_event(json.dumps(event)) == (MALFORMED, None, T0_US)


def test_the_wire_tweet_has_the_documented_fields_in_order() -> None:
    event = post_event("3mzkey", "Masks on @bob.bsky.social see cdc.gov/covid...",
                       T0_US, did="did:plc:abc123", langs=["en", "de"])
    text = event["commit"]["record"]["text"]
    event["commit"]["record"]["facets"] = [
        facet(text, "@bob.bsky.social", "mention", did="did:plc:bob")]
    _, post, _ = read_event(json.dumps(event))
    assert post is not None
    tweet = wire_tweet(post)
    assert list(tweet) == ["id", "text", "created_at", "lang", "author_id", "url", "mentions"]
    assert tweet["mentions"] == ["did:plc:bob"]  # its place in the conversation: what it has
    assert tweet["id"] == "at://did:plc:abc123/app.bsky.feed.post/3mzkey"
    assert tweet["url"] == "https://bsky.app/profile/did:plc:abc123/post/3mzkey"
    assert (tweet["lang"], tweet["author_id"]) == ("en", "did:plc:abc123")
    assert tweet["created_at"] == "2026-11-30T08:00:01.000Z"
    assert transform.clean_text(tweet["text"]) == "Masks on see cdc.gov/covid..."
    # a post naming no language has no lang at all
    _, bare, _ = read_event(json.dumps(post_event("k2", "covid", T0_US, langs=[])))
    assert bare is not None and "lang" not in wire_tweet(bare)


# --- keywords -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "matches"), [
    ("#COVID19 is back", True),
    ("COVID-19 numbers", True),
    ("masks (covid) again", True),
    ("Covid.", True),
    ("sars-cov-2 variant", True),
    ("Coronavirus update", True),
    ("LongCovid is real", False),
    ("coronaviruses in bats", False),
    ("covid2 is not a word", False),
    ("postcovid", False),
    ("covid_19 with an underscore", False),
    ("\u043a\u043e\u0432\u0438\u0434covid", False),  # Cyrillic letters are word characters
    ("\u65e5\u672ccovid", False),  # so are CJK ones
    ("Nothing to see here", False),
])
def test_keywords_match_whole_words_in_any_case(text: str, matches: bool) -> None:
    assert KeywordMatcher(DEFAULT_KEYWORDS).matches(text) is matches


def test_a_tag_alone_matches() -> None:
    matcher = KeywordMatcher(DEFAULT_KEYWORDS)
    assert matcher.matches("nothing in the text", ["COVID19"])
    assert not matcher.matches("nothing in the text", ["LongCovid"])
    text = "see #Covid19"
    event = post_event("k1", "tagged only", T0_US, tags=["news"])
    event["commit"]["record"]["facets"] = [
        {"index": {"byteStart": 0, "byteEnd": 3},
         "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "Coronavirus"}]}]
    _, post, _ = read_event(json.dumps(event))
    assert post is not None and post.tags == ("news", "Coronavirus")
    assert matcher.matches(post.text, post.tags)
    assert matcher.matches(text)


def test_other_keywords_are_escaped() -> None:
    matcher = KeywordMatcher(["c++", "long covid"])
    assert matcher.matches("learning C++ today")
    assert matcher.matches("Long Covid clinics")
    assert not matcher.matches("abc++")  # preceded by a word character


# --- cleaning a post -------------------------------------------------------------------------


def clean_post(text: str, facets: list[dict[str, Any]] | None = None) -> str:
    return transform.clean_text(transform.strip_post_markup(text, facets))


def test_facets_are_utf8_byte_ranges_after_multibyte_text() -> None:
    text = "😷 Impfung für ältere 日本 nytimes.com/2026/11/cov... #COVID19 @carol.example.com"
    facets = [facet(text, "nytimes.com/2026/11/cov...", uri="https://nytimes.com/x"),
              facet(text, "#COVID19", "tag", tag="COVID19"),
              facet(text, "@carol.example.com", "mention", did="did:plc:carol")]
    assert clean_post(text, facets) == "Impfung für ältere 日本 COVID19"


@pytest.mark.parametrize("index", [
    {"byteStart": 5, "byteEnd": 5},  # empty
    {"byteStart": 9, "byteEnd": 4},  # reversed
    {"byteStart": 4, "byteEnd": 400},  # past the end
    {"byteStart": 1, "byteEnd": 8},  # inside the emoji's four bytes
    {"byteStart": -3, "byteEnd": 4},
    {"byteStart": "0", "byteEnd": 4},
    {"byteStart": True, "byteEnd": 4},
])
def test_a_bad_facet_range_is_ignored(index: dict[str, Any]) -> None:
    text = "😷 covid link.example/x"
    facets = [{"index": index, "features": [{"$type": "app.bsky.richtext.facet#link"}]}]
    assert clean_post(text, facets) == "covid link.example/x"


def test_malformed_facets_are_ignored_and_overlaps_replaced_once() -> None:
    text = "covid abc def"
    assert clean_post(text, "not a list") == "covid abc def"  # type: ignore[arg-type]
    assert clean_post(text, [1, {"index": None}, {"index": {}, "features": "x"}]) == text
    overlapping = [
        {"index": {"byteStart": 6, "byteEnd": 10}, "features": [
            {"$type": "app.bsky.richtext.facet#link"}]},
        {"index": {"byteStart": 8, "byteEnd": 13}, "features": [
            {"$type": "app.bsky.richtext.facet#mention"}]},
    ]
    assert transform.strip_post_markup(text, overlapping) == "covid  "


@pytest.mark.parametrize(("text", "expected"), [
    ("hi @alice.bsky.social and @bob", "hi and"),
    ("@carol.example.com: covid", ": covid"),
    ("mail info@who.int about covid", "mail info@who.int about covid"),
    ("(@dave.co.uk) covid", "( ) covid"),  # replaced by one space, as a mention is
    ("@a-b.c-d.e covid", "covid"),
])
def test_domain_handles_without_a_facet_are_dropped(text: str, expected: str) -> None:
    assert clean_post(text) == expected


# --- the client against a local Jetstream --------------------------------------------------------


@pytest.fixture
def jetstream() -> Iterator[JetstreamStandIn]:
    stand_in = JetstreamStandIn()
    yield stand_in
    stand_in.close()


class Collector:
    """``emit`` for a source: keeps the wire tweets and lets a test wait for them."""

    def __init__(self, accept: bool = True) -> None:
        self.tweets: list[dict[str, Any]] = []
        self.accept = accept
        self._cond = threading.Condition()

    def __call__(self, tweet: dict[str, Any], position: Any = None) -> bool:
        with self._cond:
            if self.accept:
                self.tweets.append(tweet)
            self._cond.notify_all()
            return self.accept

    def wait_for(self, count: int) -> list[str]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.tweets) >= count, TIMEOUT), (
                f"{len(self.tweets)} tweets instead of {count}")
            return [tweet["id"] for tweet in self.tweets]


class Running:
    """A BlueskySource running in a thread until the test ends."""

    def __init__(self, source: BlueskySource) -> None:
        self.source = source
        self.stop = threading.Event()
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.source.run(self.stop)
        except NoHostError as err:
            self.error.append(err)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()


@pytest.fixture
def start() -> Iterator[Any]:
    running: list[Running] = []

    def start_source(urls: list[str], emit: Collector, **options: Any) -> BlueskySource:
        source = BlueskySource(urls, KeywordMatcher(DEFAULT_KEYWORDS), emit, **options)
        source.BACKOFF_BASE = 0.01  # reconnect at once: the tests wait on events anyway
        running.append(Running(source))
        return source

    yield start_source
    for run in running:
        run.close()


def test_matching_posts_arrive_in_order_and_the_rest_is_counted(
    jetstream: JetstreamStandIn, start: Any
) -> None:
    emitted = Collector()
    source = start([jetstream.url], emitted)
    jetstream.wait_for_connections(1)
    assert jetstream.paths[0] == ("/subscribe?wantedCollections=app.bsky.feed.post"
                                  "&maxMessageSizeBytes=4194304")
    like = post_event("l1", "covid", T0_US + 2)
    like["commit"]["collection"] = "app.bsky.feed.like"
    jetstream.publish(
        post_event("k1", "First covid post", T0_US + 1),
        like,
        {"did": "did:plc:a", "time_us": T0_US + 3, "kind": "identity", "identity": {}},
        "{broken",
        post_event("k2", "nothing to see", T0_US + 4),
        post_event("k3", "#COVID19 second", T0_US + 5, did="did:plc:bob"),
        post_event("k4", "tag only", T0_US + 6, tags=["covid"]),
    )
    assert emitted.wait_for(3) == [uri("k1"), uri("k3", "did:plc:bob"), uri("k4")]
    assert emitted.tweets[1]["text"] == "#COVID19 second"
    assert (source.events, source.posts, source.matched, source.malformed) == (7, 4, 3, 1)
    status = source.status()
    assert "7 events, 4 posts, 3 matched" in status and "0 reconnects" in status
    assert re.search(r", lag -?[0-9]+\.[0-9] s,", status), status


def test_a_dropped_connection_resumes_from_a_rewound_cursor_without_repeats(
    jetstream: JetstreamStandIn, start: Any
) -> None:
    jetstream.cut_first_after = 3
    emitted = Collector()
    source = start([jetstream.url], emitted)
    jetstream.wait_for_connections(1)
    posts = covid_posts(6)  # one second apart
    jetstream.publish(*posts)
    ids = emitted.wait_for(6)
    assert ids == [uri(f"k{n}") for n in range(6)]  # each once, in order
    cursors = jetstream.cursors()
    assert cursors[0] is None
    # the reconnect asks for everything from 5 s before the last event handled (k2)
    assert cursors[1] == T0_US + 2_000_000 - 5_000_000
    assert source.repeats == 3 and source.reconnects == 1


def test_a_silent_host_is_left_for_the_next_one(jetstream: JetstreamStandIn, start: Any) -> None:
    quiet = JetstreamStandIn()
    quiet.silent = True
    try:
        emitted = Collector()
        source = start([quiet.url, jetstream.url], emitted, stale_seconds=0.5)
        quiet.wait_for_connections(1)
        jetstream.wait_for_connections(1)  # the watchdog gave up on the quiet one
        jetstream.publish(*covid_posts(2))
        assert emitted.wait_for(2) == [uri("k0"), uri("k1")]
        assert source.url == jetstream.url
    finally:
        quiet.close()


class RecvCalls:
    """Counts the client's reads (``JetstreamConnection.read``): each is a wake-up of
    the source's thread, for a frame, a deadline or a timer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.cond = threading.Condition()
        read = JetstreamConnection.read

        def counting(connection: JetstreamConnection, *args: Any, **kwargs: Any) -> Any:
            with self.cond:
                self.count += 1
                self.cond.notify_all()
            return read(connection, *args, **kwargs)

        monkeypatch.setattr(JetstreamConnection, "read", counting)

    def during_an_idle_second(self) -> int:
        """The reads begun during one second in which nothing comes."""
        before = self.count
        threading.Event().wait(1.0)  # an observation window, not a synchronisation
        return self.count - before


def test_an_idle_source_waits_on_its_socket_and_a_stop_ends_the_wait_at_once(
    jetstream: JetstreamStandIn, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    reads = RecvCalls(monkeypatch)
    emitted = Collector()
    # the silence watchdog is an hour off: only the stop can end the wait for a frame
    source = BlueskySource([jetstream.url], KeywordMatcher(DEFAULT_KEYWORDS), emitted,
                           stale_seconds=3600)
    run = Running(source)
    jetstream.wait_for_connections(1)
    jetstream.publish(*covid_posts(1))
    emitted.wait_for(1)
    # at most the read that follows the post: a 0.25 s poll read 4 times a second
    assert reads.during_an_idle_second() <= 1
    caplog.set_level(logging.INFO, logger="sources.bluesky")
    run.close()  # joins the thread; the wait for a frame has no timer to end it
    assert "reconnecting" not in caplog.text  # a stop is no connection error


def test_the_last_cursor_before_a_silence_is_saved_in_it_then_the_source_sleeps(
    jetstream: JetstreamStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = RecvCalls(monkeypatch)
    cursor = tmp_path / BlueskySource.CURSOR_FILE
    saves: list[int] = []  # how many reads had begun at each save

    def before_save() -> None:
        with reads.cond:
            saves.append(reads.count)

    class SavesSoon(BlueskySource):
        CURSOR_SAVE_SECONDS = 0.5  # the test's silence need not last the real interval

    emitted = Collector()
    source = SavesSoon([jetstream.url], KeywordMatcher(DEFAULT_KEYWORDS), emitted,
                       cursor_path=cursor, before_cursor_save=before_save)
    run = Running(source)
    jetstream.wait_for_connections(1)
    # the first is saved at once, the second within CURSOR_SAVE_SECONDS: not yet
    jetstream.publish(*covid_posts(1))
    emitted.wait_for(1)
    with reads.cond:
        assert reads.cond.wait_for(lambda: len(saves) == 1, TIMEOUT)
    jetstream.publish(*covid_posts(1, start=1))
    emitted.wait_for(2)
    with reads.cond:  # saved while no event comes, and read again after the write
        assert reads.cond.wait_for(
            lambda: len(saves) == 2 and reads.count > saves[1], TIMEOUT), saves
    assert json.loads(cursor.read_text())["time_us"] == T0_US + 1_000_000
    assert reads.during_an_idle_second() == 0  # nothing left to save: asleep till an event
    run.close()
    assert len(saves) == 2  # the clean stop had nothing more to write


def test_the_connection_joins_fragments_and_gives_a_text_that_is_no_utf8_as_bytes() -> None:
    def handler(connection: ServerConnection) -> None:
        connection.send(iter(['{"did": ', '"did:plc:a"}']))  # one message, two frames
        connection.send(b"\xff\xfe not UTF-8", text=True)
        connection.send(b"\x00binary")
        connection.recv()  # until the client closes

    with serve(handler, "127.0.0.1", 0, compression=None) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/subscribe"
        with JetstreamConnection.open(url, open_timeout=TIMEOUT, max_size=2**20,
                                      user_agent="test") as connection:
            messages: list[str | bytes] = []
            while len(messages) < 3:
                messages += connection.read(TIMEOUT)
        server.shutdown()
    assert messages == ['{"did": "did:plc:a"}', b"\xff\xfe not UTF-8", b"\x00binary"]
    assert read_event(messages[1])[0] == MALFORMED  # counted and skipped, not a failure


def test_a_read_after_messages_lets_more_gather_and_a_wake_up_ends_that_wait(
    jetstream: JetstreamStandIn
) -> None:
    wakeup, waker = socket.socketpair()
    with wakeup, waker, JetstreamConnection.open(
            jetstream.url, open_timeout=TIMEOUT, max_size=2**20, user_agent="test",
            wakeup=wakeup, gather_seconds=3600) as connection:
        jetstream.wait_for_connections(1)
        jetstream.publish(*covid_posts(1))
        assert len(connection.read(TIMEOUT)) == 1
        jetstream.publish(*covid_posts(1, start=1))
        assert connection.read(0.2) == []  # gathering: the timeout still holds
        waker.send(b"s")
        assert connection.read(None) == []  # a wake-up ends the wait at once


def test_a_backlog_is_read_at_once_the_gathering_only_paces_a_trickle(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a pause or a restart the host sends a backlog as fast as it can: a read
    that fills the buffer is followed at once, not after the gathering time."""
    monkeypatch.setattr(JetstreamConnection, "READ_BYTES", 1024)
    frames = [json.dumps(post_event(f"k{n}", "x" * 600, T0_US + n)) for n in range(10)]
    host, client = socket.socketpair()
    with host, JetstreamConnection(
            client, ClientProtocol(parse_uri("ws://h/subscribe"), state=OPEN),
            close_timeout=0.1, gather_seconds=3600) as connection:
        host.sendall(b"".join(Frame(Opcode.TEXT, f.encode()).serialize(mask=False)
                              for f in frames))  # all waiting before the first read
        got: list[str | bytes] = []
        while len(got) < len(frames):
            read = connection.read(0.0)  # no waiting at all: each read finds its bytes
            assert read, f"a read after a full buffer waited ({len(got)} read)"
            got += read
        assert got == frames
        host.sendall(Frame(Opcode.TEXT, frames[0].encode()).serialize(mask=False))
        assert connection.read(0.2) == []  # the last read was not full: it gathers


def test_the_hosts_pings_are_answered_so_it_keeps_the_connection(start: Any) -> None:
    """Jetstream pings every 30 s; this stand-in pings every 0.2 s and drops a client
    that leaves a ping unanswered for 0.2 s."""
    host = JetstreamStandIn(ping_interval=0.2)
    try:
        emitted = Collector()
        source = start([host.url], emitted, stale_seconds=3600)
        host.wait_for_connections(1)
        threading.Event().wait(1.5)  # an observation window: seven pings, no event
        host.publish(*covid_posts(1))
        assert emitted.wait_for(1) == [uri("k0")]
        assert len(host.paths) == 1 and source.reconnects == 0
    finally:
        host.close()


def test_the_request_names_the_client_and_offers_no_compression(
    jetstream: JetstreamStandIn, start: Any
) -> None:
    start([jetstream.url], Collector())
    jetstream.wait_for_connections(1)
    headers = jetstream.headers[0]
    assert headers["User-Agent"] == bluesky.USER_AGENT
    assert "Sec-WebSocket-Extensions" not in headers  # frames are not inflated per frame


def test_a_host_that_never_answers_the_handshake_is_left_after_the_open_timeout(
    jetstream: JetstreamStandIn, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BlueskySource, "OPEN_TIMEOUT", 0.5)
    with socket.create_server(("127.0.0.1", 0)) as mute:  # accepts, never answers
        dead = f"ws://127.0.0.1:{mute.getsockname()[1]}/subscribe"
        emitted = Collector()
        start([dead, jetstream.url], emitted)
        jetstream.wait_for_connections(1)
        jetstream.publish(*covid_posts(1))
        assert emitted.wait_for(1) == [uri("k0")]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"no openssl to make a certificate: {err}")
    return cert, key


def test_wss_is_tls_checked_against_the_trusted_certificates(
    certificate: tuple[Path, Path], start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wss:// host is read over TLS, its certificate checked against the system's
    trust store (here: SSL_CERT_FILE); an untrusted one is never read from."""
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    host = JetstreamStandIn(tls=context)
    try:
        assert host.url.startswith("wss://")
        untrusted = BlueskySource([host.url], KeywordMatcher(DEFAULT_KEYWORDS), Collector())
        untrusted.START_TIMEOUT = 1.0
        with pytest.raises(NoHostError):
            untrusted.run(threading.Event())
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        emitted = Collector()
        start([host.url], emitted)
        host.wait_for_connections(1)
        host.publish(*covid_posts(2))
        assert emitted.wait_for(2) == [uri("k0"), uri("k1")]
    finally:
        host.close()


def test_a_stop_during_the_back_off_ends_it_at_once() -> None:
    host = JetstreamStandIn()
    source = BlueskySource([host.url], KeywordMatcher(DEFAULT_KEYWORDS), Collector())
    source.BACKOFF_BASE = source.BACKOFF_MAX = 3600.0  # a wait only the stop can cut short
    with capture_logs("sources.bluesky") as logs:
        run = Running(source)
        host.wait_for_connections(1)
        host.close()  # the host goes away: the source backs off before it tries again
        logs.wait_for("reconnecting with backoff")
        run.close()  # joins the thread


def test_a_refusing_host_is_skipped(jetstream: JetstreamStandIn, start: Any) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{closed.getsockname()[1]}/subscribe"
    emitted = Collector()
    start([dead, jetstream.url], emitted)
    jetstream.wait_for_connections(1)
    jetstream.publish(*covid_posts(1))
    assert emitted.wait_for(1) == [uri("k0")]


def test_a_restart_resumes_from_the_cursor_file(
    jetstream: JetstreamStandIn, tmp_path: Path, start: Any
) -> None:
    cursor = tmp_path / BlueskySource.CURSOR_FILE
    synced: list[int] = []
    first = Collector()
    source = BlueskySource([jetstream.url], KeywordMatcher(DEFAULT_KEYWORDS), first,
                           cursor_path=cursor, before_cursor_save=lambda: synced.append(1))
    run = Running(source)
    jetstream.wait_for_connections(1)
    jetstream.publish(*covid_posts(3))
    first.wait_for(3)
    run.close()  # a clean stop writes the cursor
    saved = json.loads(cursor.read_text())
    assert saved["time_us"] == T0_US + 2_000_000
    assert [entry[0] for entry in saved["recent"]] == [uri(f"k{n}") for n in range(3)]
    assert synced, "the journal is made durable before the cursor is written"

    jetstream.publish(*covid_posts(2, start=3))  # while stream.py is down
    second = Collector()
    start([jetstream.url], second, cursor_path=cursor)
    assert second.wait_for(2) == [uri("k3"), uri("k4")]  # nothing lost, nothing twice
    assert jetstream.cursors()[1] == T0_US + 2_000_000 - 5_000_000


def test_a_torn_cursor_file_starts_from_the_live_tip(
    jetstream: JetstreamStandIn, tmp_path: Path, start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cursor = tmp_path / BlueskySource.CURSOR_FILE
    cursor.write_text('{"time_us": 17960000')
    caplog.set_level(logging.WARNING, logger="sources.bluesky")
    start([jetstream.url], Collector(), cursor_path=cursor)
    jetstream.wait_for_connections(1)
    assert jetstream.cursors() == [None]
    assert "ignoring the Jetstream cursor file" in caplog.text


class SmallJournal:
    """``emit`` and ``wait_for_room`` of a journal with room for ``room`` posts, which
    a test makes bigger (as the job's acknowledgements would) with :meth:`grow`."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.tweets: list[dict[str, Any]] = []
        self.positions: list[Any] = []
        self.refusals = 0
        self._cond = threading.Condition()

    def emit(self, tweet: dict[str, Any], position: Any = None) -> bool:
        with self._cond:
            if len(self.tweets) >= self.room:
                self.refusals += 1
                self._cond.notify_all()
                return False
            self.tweets.append(tweet)
            self.positions.append(position)
            self._cond.notify_all()
            return True

    def wait_for_room(self, stop: threading.Event) -> bool:
        """As TweetServer.wait_for_room: True once there is room, False on stop."""
        waker = threading.Thread(target=lambda: (stop.wait(), self.grow(0)), daemon=True)
        waker.start()  # stream.py wakes the wait on stop the same way
        with self._cond:
            self._cond.wait_for(lambda: len(self.tweets) < self.room or stop.is_set())
            return not stop.is_set()

    def grow(self, more: int) -> None:
        with self._cond:
            self.room += more
            self._cond.notify_all()

    def wait_for(self, count: int) -> list[str]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.tweets) >= count, TIMEOUT), (
                f"{len(self.tweets)} tweets instead of {count}")
            return [tweet["id"] for tweet in self.tweets]


def test_a_full_journal_stops_the_reading_which_goes_on_from_the_refused_post(
    jetstream: JetstreamStandIn, start: Any, tmp_path: Path
) -> None:
    """The journal refuses k2b: the source stops reading and closes the connection,
    and once there is room it asks the same host for k2b's own time_us. Nothing is
    lost (k3, k4 and k5, published during the pause, arrive), nothing comes twice
    (k2a, accepted in the same microsecond as k2b, is dropped as a repeat), nothing
    is counted as refused, and the status line says that it was paused."""
    journal = SmallJournal(room=3)
    cursor = tmp_path / BlueskySource.CURSOR_FILE
    with capture_logs("sources.bluesky") as logs:
        source = start([jetstream.url], journal.emit, wait_for_room=journal.wait_for_room,
                       cursor_path=cursor)
        jetstream.wait_for_connections(1)
        k2 = T0_US + 2_000_000
        jetstream.publish(*covid_posts(2), post_event("k2a", "covid a", k2),
                          post_event("k2b", "covid b", k2), *covid_posts(1, start=3))
        logs.wait_for("reading Jetstream stops")
        assert journal.wait_for(3) == [uri("k0"), uri("k1"), uri("k2a")]
        status = source.status()
        assert "paused (journal full) for" in status and "1 pauses for a full journal" in status
        assert " refused" not in status
        # the cursor file names the refused post's time: a restart now loses nothing
        assert json.loads(cursor.read_text())["time_us"] == k2
        jetstream.publish(*covid_posts(2, start=4))  # while paused
        journal.grow(10)  # the job stored some: room again
        ids = journal.wait_for(7)
    assert ids == [uri(f"k{n}") for n in ("0", "1", "2a", "2b", "3", "4", "5")]
    assert jetstream.cursors() == [None, k2]  # the same host, from the refused post
    assert (source.matched, source.repeats, source.pauses, journal.refusals) == (7, 1, 1, 1)
    assert source.paused_since is None and "paused (journal full)" not in source.status()
    assert "1 pauses for a full journal" in source.status()
    # each post with its own event's time: the journal's records say where to resume
    assert journal.positions == [T0_US, T0_US + 1_000_000, k2, k2, T0_US + 3_000_000,
                                 T0_US + 4_000_000, T0_US + 5_000_000]


def test_the_hooks_name_each_break_with_what_a_record_of_gaps_needs(
    jetstream: JetstreamStandIn, tmp_path: Path
) -> None:
    """A restart from a cursor file 100 s old, a rewound connection and its first
    event, a pause for a full journal and the connection after it, a silent host:
    each hook is called with the host, the cursors and the times a ledger needs."""
    calls: list[tuple[Any, ...]] = []

    class Recording(BlueskySource):
        def on_restart(self, time_us: int, age_seconds: float) -> None:
            calls.append(("restart", time_us, round(age_seconds)))

        def on_connect(self, url: str, asked: int | None, why: str) -> None:
            calls.append(("connect", asked, why))

        def on_first_event(self, url: str, asked: int | None, time_us: int) -> None:
            calls.append(("first", asked, time_us))

        def on_pause(self, url: str, time_us: int | None) -> None:
            calls.append(("pause", time_us))
            super().on_pause(url, time_us)

        def on_resume(self, url: str, time_us: int | None, paused_seconds: float) -> None:
            calls.append(("resume", time_us))

        def on_stale(self, url: str, last_time_us: int | None) -> None:
            calls.append(("stale", last_time_us))
            super().on_stale(url, last_time_us)

    cursor = tmp_path / BlueskySource.CURSOR_FILE
    cursor.write_text(json.dumps({"time_us": T0_US + 6_000_000, "recent": []}))
    jetstream.publish(*covid_posts(3, start=10))  # kept by the host since before
    journal = SmallJournal(room=2)
    source = Recording([jetstream.url], KeywordMatcher(DEFAULT_KEYWORDS), journal.emit,
                       cursor_path=cursor, wait_for_room=journal.wait_for_room,
                       stale_seconds=1.0, clock=lambda: T0_US / 1e6 + 106)
    with capture_logs("sources.bluesky") as logs:
        run = Running(source)
        logs.wait_for("reading Jetstream stops")
        journal.grow(5)
        assert journal.wait_for(3) == [uri(f"k{n}") for n in (10, 11, 12)]
        logs.wait_for("no event from")  # then the host has nothing more: silent
        run.close()
    k12 = T0_US + 12_000_000
    assert calls[:7] == [
        ("restart", T0_US + 6_000_000, 100),
        ("connect", T0_US + 1_000_000, REWIND),  # 5 s before the saved event
        ("first", T0_US + 1_000_000, T0_US + 10_000_000),  # 9 s later: the host's first
        ("pause", k12),
        ("resume", k12),
        ("connect", k12, REFUSED),
        ("first", k12, k12),
    ]
    assert calls[7] == ("stale", k12)


def test_without_a_wait_for_room_a_refused_post_is_tried_again_after_the_back_off(
    jetstream: JetstreamStandIn, start: Any
) -> None:
    journal = SmallJournal(room=0)
    source = start([jetstream.url], journal.emit)
    jetstream.wait_for_connections(1)
    jetstream.publish(*covid_posts(2))
    with journal._cond:
        assert journal._cond.wait_for(lambda: journal.refusals >= 2, TIMEOUT)
    assert source.matched == 0 and uri("k0") not in source.recent
    journal.grow(2)
    assert journal.wait_for(2) == [uri("k0"), uri("k1")]
    assert set(jetstream.cursors()[1:]) == {T0_US}  # each time from the refused post


def test_no_host_at_start_raises_naming_the_urls() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{closed.getsockname()[1]}/subscribe"
    source = BlueskySource([dead], KeywordMatcher(DEFAULT_KEYWORDS), Collector())
    source.START_TIMEOUT = 0.5
    with pytest.raises(NoHostError) as err:
        source.run(threading.Event())
    message = str(err.value)
    assert dead in message and "--source replay" in message and "\n" not in message


def test_the_subscribe_url_asks_for_posts_uncompressed_from_the_cursor() -> None:
    url = subscribe_url("wss://h.example/subscribe?compress=true&wantedDids=did:plc:a", 42)
    assert url == ("wss://h.example/subscribe?wantedDids=did%3Aplc%3Aa"
                   "&wantedCollections=app.bsky.feed.post&cursor=42")
    assert subscribe_url("ws://127.0.0.1:1/subscribe", None) == (
        "ws://127.0.0.1:1/subscribe?wantedCollections=app.bsky.feed.post")


def test_a_cursor_that_cannot_be_saved_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    source = BlueskySource(["ws://x/subscribe"], KeywordMatcher(["covid"]), Collector(),
                           cursor_path=tmp_path / "c.json", before_cursor_save=disk_full)
    source.on_frame(json.dumps(post_event("k1", "covid", T0_US)))
    caplog.set_level(logging.WARNING, logger="sources.bluesky")
    source.save_cursor(force=True)
    assert "No space left on device" in caplog.text
    assert not (tmp_path / "c.json").exists()


# --- stream.py --source bluesky -----------------------------------------------------------------


def test_cli_exits_1_with_one_line_when_no_host_answers(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{closed.getsockname()[1]}/subscribe"
    ports = []
    for _ in range(2):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        ports.append(probe)
    numbers = [str(p.getsockname()[1]) for p in ports]
    for probe in ports:
        probe.close()
    result = subprocess.run(
        [sys.executable, str(PROJECT / "stream.py"), "--source", "bluesky",
         "--jetstream-url", dead, "--port", numbers[0], "--ack-port", numbers[1],
         "--journal-path", str(tmp_path / "journal")],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines()
              if "error" in line.lower() or "warning" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("stream.py: error: no Jetstream host answered within 15 s")
    assert dead in errors[0] and "--source replay" in errors[0]
    assert "Traceback" not in result.stderr


def bluesky_stream(tmp_path: Path, url: str, port: int, ack_port: int) -> Program:
    """stream.py --source bluesky into a 1 MiB journal."""
    return Program(["stream.py", "--source", "bluesky", "--jetstream-url", url,
                    "--port", str(port), "--ack-port", str(ack_port),
                    "--journal-path", str(tmp_path / "journal"), "--journal-max-bytes",
                    "1MiB", "--control-secret-file", str(tmp_path / "control.secret")])


def test_cli_a_full_journal_pauses_the_reading_and_a_stop_or_a_kill_meanwhile_loses_nothing(
    jetstream: JetstreamStandIn, tmp_path: Path
) -> None:
    """1.6 MB of matching posts into a 1 MiB journal with no job: stream.py stops
    reading instead of refusing. A SIGTERM during the pause ends it at once; a kill
    -9 during the next; started again with a job that acknowledges as it reads, it
    delivers every post exactly once."""
    port, ack_port = free_port(), free_port()
    count = 1_500
    posts = [post_event(f"k{n}", f"post {n} about covid " + "x" * 1_000, T0_US + n * 10_000)
             for n in range(count)]
    first = bluesky_stream(tmp_path, jetstream.url, port, ack_port)
    try:
        jetstream.wait_for_connections(1)  # at the live tip: what comes next is read
        jetstream.publish(*posts)
        first.wait_for_text("reading Jetstream stops")
        assert first.stop() == 0  # SIGTERM ends the wait for room
    finally:
        first.kill()
    summary = next(line for line in first.lines if "summary:" in line)
    assert "1 pauses for a full journal" in summary and " 0 refused" in summary, summary
    assert "Traceback" not in first.log

    again = bluesky_stream(tmp_path, jetstream.url, port, ack_port)
    try:  # the journal is still full: it reads up to the refused post again, and waits
        again.wait_for_text("reading Jetstream stops")
    finally:
        again.kill()

    second = bluesky_stream(tmp_path, jetstream.url, port, ack_port)
    second.wait_for_text("serving tweets on")
    stored: dict[int, str] = {}  # seq -> id, as the job keeps them
    records: dict[int, dict[str, Any]] = {}  # the keyword sets and coverage spans
    secret = control.load_secret(None, tmp_path / "control.secret")
    job = control.ControlClient("127.0.0.1", ack_port, secret)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            reader = sock.makefile("rb")
            while len(stored) < count:
                line = reader.readline()
                assert line, f"the producer closed after {len(stored)} posts"
                obj = json.loads(line)
                if "kind" in obj:
                    assert records.setdefault(obj["seq"], obj) == obj
                else:
                    assert stored.setdefault(obj["seq"], obj["id"]) == obj["id"]
                if obj["seq"] % 100 == 0 or len(stored) == count:
                    job.send({obj["src"]: obj["seq"]}, {})
        assert second.stop() == 0
    finally:
        job.close()
        second.kill()
    ids = list(stored.values())
    assert len(ids) == len(set(ids)) == count  # nothing lost, nothing twice
    assert set(ids) == {uri(f"k{n}") for n in range(count)}
    summary = next(line for line in second.lines if "summary:" in line)
    assert " 0 refused" in summary, summary
    # three runs, each naming its keywords; the pauses and restarts lost nothing: no gap
    kinds = [record["kind"] for record in records.values()]
    assert kinds.count("filter") == 3 and "gap" not in kinds, kinds


def test_status_line_names_every_figure() -> None:
    source = BlueskySource(["ws://x/subscribe"], KeywordMatcher(["covid"]), Collector(),
                           clock=lambda: T0_US / 1e6 + 2.5)
    assert "lag -" in source.status()
    source.on_frame(json.dumps(post_event("k1", "covid", T0_US)))
    source.on_frame(json.dumps(post_event("k1", "covid", T0_US)))  # again: a repeat
    status = source.status()
    assert status.startswith("bluesky: 2 events, 2 posts, 1 matched, 0 deletes "
                             "(1 repeats dropped")
    assert "0 reconnects, lag 2.5 s" in status


def test_module_docstring_is_the_usage() -> None:
    assert bluesky.__doc__ and "wantedCollections=app.bsky.feed.post" in bluesky.__doc__


def test_a_restart_goes_on_after_the_posts_the_journal_holds(
    jetstream: JetstreamStandIn, tmp_path: Path, start: Any
) -> None:
    """Killed between two cursor files: the journal's own records (each post with its
    time_us) say where to resume, and which posts a rewind brings again."""
    jetstream.publish(*covid_posts(6))  # published before the restart
    kept = [{"id": uri(f"k{n}"), "pos": T0_US + n * 1_000_000} for n in range(4)]
    emitted = Collector()
    start([jetstream.url], emitted, cursor_path=tmp_path / "cursor.json", journaled=kept)
    assert emitted.wait_for(2) == [uri("k4"), uri("k5")]  # nothing the journal holds
    assert jetstream.cursors() == [T0_US + 3_000_000 - 5_000_000]


# --- issue #15: oversize events, archive segments, requireHello ---------------------------------


def big_post(rkey: str, time_us: int, size: int) -> dict[str, Any]:
    """A covid post whose event is over ``size`` bytes."""
    return post_event(rkey, "covid " + "x" * size, time_us)


def test_the_client_asks_the_host_to_skip_events_it_cannot_carry(
    jetstream: JetstreamStandIn, start: Any
) -> None:
    emitted = Collector()
    source = start([jetstream.url], emitted, max_event_bytes=65_536)
    jetstream.wait_for_connections(1)
    jetstream.publish(*covid_posts(2), big_post("big", T0_US + 2_500_000, 70_000),
                      *covid_posts(2, start=3))
    assert emitted.wait_for(4) == [uri(f"k{n}") for n in (0, 1, 3, 4)]
    assert "maxMessageSizeBytes=65536" in jetstream.paths[0]
    assert len(jetstream.paths) == 1 and source.oversize == 0


def test_an_event_too_big_from_a_host_that_ignores_the_limit_is_skipped_once(
    jetstream: JetstreamStandIn, start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A v1 host sends an event over the client's limit (4 MiB by default) although
    it was asked not to: the client reads it, skips it by its size, counts and logs
    it once, and stays connected: every post after it arrives, even one long after."""
    caplog.set_level(logging.WARNING, logger="sources.bluesky")
    jetstream.ignores_max_size = True
    emitted = Collector()
    source = start([jetstream.url], emitted)
    jetstream.wait_for_connections(1)
    jetstream.publish(*covid_posts(3, step_us=1_000),
                      big_post("big", T0_US + 3_000, bluesky.DEFAULT_MAX_EVENT_BYTES),
                      *covid_posts(3, start=4, step_us=1_000),
                      post_event("k7", "post 7 about covid", T0_US + 5_000_000))
    ids = emitted.wait_for(7)
    assert ids == [uri(f"k{n}") for n in (0, 1, 2, 4, 5, 6, 7)]
    assert len(jetstream.paths) == 1, jetstream.cursors()  # no reconnect at all
    assert source.oversize == 1 and "1 oversize skipped" in source.status()
    assert caplog.text.count("skipping a Jetstream event over 4194304 bytes") == 1


def test_a_frame_past_even_the_read_limit_is_got_past_without_a_loop(
    jetstream: JetstreamStandIn, start: Any, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A frame the WebSocket cannot read at all closes the connection with 1009 and
    the client must not ask for it again and again; the posts after it arrive.
    Events a millisecond apart, as on the firehose."""
    monkeypatch.setattr(BlueskySource, "READ_LIMIT_FACTOR", 1)
    caplog.set_level(logging.WARNING, logger="sources.bluesky")
    jetstream.ignores_max_size = True
    emitted = Collector()
    source = start([jetstream.url], emitted)
    jetstream.wait_for_connections(1)
    jetstream.publish(*covid_posts(3, step_us=1_000),
                      big_post("big", T0_US + 3_000, bluesky.DEFAULT_MAX_EVENT_BYTES),
                      *covid_posts(3, start=4, step_us=1_000))
    ids = emitted.wait_for(6)
    assert ids == [uri(f"k{n}") for n in (0, 1, 2, 4, 5, 6)]
    assert len(jetstream.paths) <= 3, jetstream.cursors()
    assert source.oversize == 1 and "1 oversize skipped" in source.status()
    assert caplog.text.count("skipping a Jetstream event over 4194304 bytes") == 1


def test_getting_past_a_big_event_always_moves_the_cursor_on() -> None:
    """Where the client reconnects after closes with 1009: strictly later each time
    (no loop), and the same event met again after a rewind is neither counted twice
    nor tried from the start again."""
    skip = OversizeSkip()
    last = T0_US
    assert skip.too_big("h1", T0_US - 5_000_000, last) is True  # read up to `last`, then 1009
    cursors = [skip.cursor_for("h1")]
    assert cursors == [last + 1]
    for _ in range(12):  # the big event keeps coming first: it lies further on
        assert skip.too_big("h1", cursors[-1], None) is False
        cursors.append(skip.cursor_for("h1"))
    assert all(b > a for a, b in itertools.pairwise(cursors))
    assert cursors[-1] - cursors[0] > 2_000_000  # doubling steps: seconds away in 12 tries
    assert skip.skipped == 1
    skip.event(cursors[-1] + 10)  # past it
    assert skip.cursor_for("h1") is None
    # a later reconnect rewinds and meets it again after the same event
    assert skip.too_big("h1", T0_US - 5_000_000, last) is False
    assert skip.cursor_for("h1") == cursors[-1]
    assert skip.skipped == 1
    # another host stamps its own times: the attempt is given up there
    assert skip.cursor_for("h2") is None


def test_the_cursor_file_and_the_lag_never_move_back(
    jetstream: JetstreamStandIn, tmp_path: Path
) -> None:
    """A v2 host restarts a cursor at the start of its archive segment (up to an hour
    back): older events come again. Dedup drops them; the cursor file and the lag
    stay with the newest event."""

    class EveryEvent(BlueskySource):
        CURSOR_SAVE_SECONDS = 0.0  # write the cursor after every event

    jetstream.segment_us = 3600 * 1_000_000
    jetstream.cut_first_after = 3
    cursor = tmp_path / BlueskySource.CURSOR_FILE
    saved: list[int] = []  # each value the cursor file held, in order
    lags: list[float | None] = []
    sources: list[BlueskySource] = []

    def before_save() -> None:
        if cursor.exists():
            saved.append(json.loads(cursor.read_text())["time_us"])
        lags.append(sources[0].lag_seconds())

    emitted = Collector()
    source = EveryEvent([jetstream.url], KeywordMatcher(DEFAULT_KEYWORDS), emitted,
                        cursor_path=cursor, before_cursor_save=before_save,
                        clock=lambda: T0_US / 1e6 + 100)
    source.BACKOFF_BASE = 0.01
    sources.append(source)
    run = Running(source)
    jetstream.wait_for_connections(1)
    jetstream.publish(*covid_posts(6))
    assert emitted.wait_for(6) == [uri(f"k{n}") for n in range(6)]
    run.close()
    saved.append(json.loads(cursor.read_text())["time_us"])
    assert source.repeats == 3  # k0..k2 came again from the segment's start
    assert saved == sorted(saved) and saved[-1] == T0_US + 5_000_000
    assert lags == sorted(lags, reverse=True) and source.lag_seconds() == pytest.approx(95.0)


def test_require_hello_is_left_out_of_a_configured_url(
    jetstream: JetstreamStandIn, start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """With requireHello=true a host waits for a message this client never sends."""
    caplog.set_level(logging.WARNING, logger="sources.bluesky")
    jetstream.cut_first_after = 1
    emitted = Collector()
    start([jetstream.url + "?requireHello=true"], emitted)
    jetstream.wait_for_connections(1)
    jetstream.publish(*covid_posts(2))
    assert emitted.wait_for(2) == [uri("k0"), uri("k1")]
    assert len(jetstream.paths) == 2 and not any("requireHello" in p for p in jetstream.paths)
    assert caplog.text.count("leaving requireHello out") == 1  # once, not per connection


def test_the_subscribe_url_replaces_the_options_the_client_sets() -> None:
    url = subscribe_url("wss://h.example/subscribe?requireHello=true&maxMessageSizeBytes=9"
                        "&wantedDids=did:plc:a", 42, 1_000_000)
    assert url == ("wss://h.example/subscribe?wantedDids=did%3Aplc%3Aa"
                   "&wantedCollections=app.bsky.feed.post&maxMessageSizeBytes=1000000&cursor=42")


def test_frames_and_a_close_that_come_with_the_handshake_answer_are_read_in_order() -> None:
    """A host may send its first events, even its close, in the same TCP segment as its
    handshake answer (seen on a loaded machine): the events are read, then the close.
    Before, the opening waited for an OPEN state that never came, timed out, and the
    event was lost with the connection (the reconnect had no cursor to ask for it)."""
    server_protocol = ServerProtocol()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def answer_all_at_once() -> None:
            conn, _ = listener.accept()
            with conn:
                server_protocol.receive_data(conn.recv(65536))  # the whole request
                request = server_protocol.events_received()[0]
                server_protocol.send_response(server_protocol.accept(request))
                server_protocol.send_text(b'{"time_us": 1}')
                server_protocol.send_close(1000)
                conn.sendall(b"".join(server_protocol.data_to_send()))  # one segment
                conn.recv(1024)  # the client's close

        serving = threading.Thread(target=answer_all_at_once, daemon=True)
        serving.start()
        connection = JetstreamConnection.open(
            f"ws://127.0.0.1:{listener.getsockname()[1]}/subscribe", open_timeout=30,
            max_size=1 << 20, user_agent="test")
        try:
            assert connection.read(timeout=30) == ['{"time_us": 1}']
            with pytest.raises(ConnectionClosed):
                connection.read(timeout=30)
        finally:
            connection.close()
        serving.join(30)
