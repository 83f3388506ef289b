"""Bluesky posts, live and free, from Bluesky's public Jetstream service.

Jetstream turns the Bluesky network into JSON: one event per WebSocket text
frame from ``wss://HOST/subscribe?wantedCollections=app.bsky.feed.post``, no
account and no key (docs/design.md, "Bluesky posts"). Three parts, the first and
last in this module:

* pure functions: :class:`KeywordMatcher` (a keyword as a whole word, or a
  tag) and :func:`read_event` (one frame -> a :class:`Post`, or why not), and
  :func:`wire_tweet` (a post -> the tweet object of the wire format);
* :class:`~sources.jetstream_progress.JetstreamProgress`, the bookkeeping
  (its own module): the counters and the status
  line, the last event's time a reconnect resumes from (a few seconds before
  it, so a dropped connection loses nothing), the posts handled lately (so
  those a rewind delivers again are dropped), and the cursor file beside the
  journal that keeps both (so a restart goes on where it stopped);
* :class:`BlueskySource`, the WebSocket client built on it: it rotates
  through the hosts, backs off with jitter, reconnects when a host goes
  silent, skips an event too big to carry (:mod:`sources.oversize`), and
  hands each matching post to ``emit``.

Typical use (what ``stream.py --source bluesky`` does)::

    source = BlueskySource(urls, KeywordMatcher(keywords), server.put,
                           cursor_path=journal_path / BlueskySource.CURSOR_FILE)
    source.run(stop)          # until stop is set; NoHostError if none answers at start
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection, connect

import transform
from sources import Emit, Tweet
from sources.bluesky_conversation import conversation_fields
from sources.jetstream_progress import JetstreamProgress
from sources.oversize import OversizeSkip

log = logging.getLogger(__name__)

USER_AGENT = f"covid19-live-stream (websockets/{websockets.__version__})"
POST_COLLECTION = "app.bsky.feed.post"
_FACET_TAG = "app.bsky.richtext.facet#tag"
#: Largest event the client carries by default (and asks the host to skip above).
DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024
#: A frame is read up to this many times ``max_event_bytes``, so that an event a
#: host sends although it is over the limit is skipped whole, by its size, with no
#: post after it lost; only a frame past even that closes the connection (1009)
#: and is got past by :mod:`sources.oversize`'s cursor rule.
READ_LIMIT_FACTOR = 16
#: Where an event's ``time_us`` is found without parsing it: Jetstream writes it
#: among the first fields.
_TIME_US = re.compile(r'"time_us"\s*:\s*(\d{1,20})')
#: Query options a configured URL may not keep: the client sets them itself, or
#: (requireHello) they would make the host wait for a message the client never sends.
_OWN_OPTIONS = ("wantedCollections", "cursor", "compress", "maxMessageSizeBytes", "requireHello")

# what read_event makes of a frame
POST = "post"  # a new post with text: match it against the keywords
OTHER = "other"  # a well-formed event that is no new post (identity, account, like, delete...)
MALFORMED = "malformed"  # not JSON, not an event, or a post record without text


class NoHostError(ConnectionError):
    """No Jetstream host answered in time at start; ``str(err)`` is one line."""


# --- pure: events -> posts -> wire tweets -----------------------------------------


@dataclass(frozen=True)
class Post:
    """The parts of a post-creating Jetstream event that the pipeline uses."""

    did: str
    rkey: str
    text: str
    created_at: str | None
    lang: str | None
    facets: Any  # the record's facets as they came (checked when used)
    tags: tuple[str, ...]  # record.tags and the tags of #tag facets
    reply: Any = None  # record.reply as it came (checked when used)
    embed: Any = None  # record.embed as it came (checked when used)
    record_tags: tuple[str, ...] = ()  # record.tags alone

    @property
    def uri(self) -> str:
        """The post's at:// URI, its id on the wire."""
        return f"at://{self.did}/{POST_COLLECTION}/{self.rkey}"


def read_event(frame: str | bytes) -> tuple[str, Post | None, int | None]:
    """``(verdict, post, time_us)`` of one Jetstream frame.

    ``verdict`` is POST (``post`` is set), OTHER or MALFORMED (``post`` is
    None). ``time_us`` is the event's time (microseconds since the epoch) when
    it has one, whatever the verdict: it is where a reconnect resumes.

    A post is an event with ``kind == "commit"``, ``commit.operation ==
    "create"``, ``commit.collection == "app.bsky.feed.post"`` and a record
    that is an object with a string ``text``.
    """
    if isinstance(frame, bytes):
        return MALFORMED, None, None  # text frames only: compressed frames were not asked for
    try:
        event = json.loads(frame)
    except (ValueError, RecursionError):
        return MALFORMED, None, None
    if not isinstance(event, dict):
        return MALFORMED, None, None
    time_us = event.get("time_us")
    if type(time_us) is not int or time_us <= 0:
        time_us = None
    did, kind, commit = event.get("did"), event.get("kind"), event.get("commit")
    if not isinstance(did, str) or not isinstance(kind, str):
        return MALFORMED, None, time_us
    if kind != "commit":
        return OTHER, None, time_us  # identity, account (sent whatever the collection)
    if not isinstance(commit, dict):
        return MALFORMED, None, time_us
    if commit.get("operation") != "create" or commit.get("collection") != POST_COLLECTION:
        return OTHER, None, time_us  # update, delete, or another collection
    rkey, record = commit.get("rkey"), commit.get("record")
    if (not did.startswith("did:") or not isinstance(rkey, str) or not rkey
            or "/" in rkey or not isinstance(record, dict)
            or not isinstance(record.get("text"), str)):
        return MALFORMED, None, time_us
    langs, created = record.get("langs"), record.get("createdAt")
    lang = langs[0] if isinstance(langs, list) and langs and isinstance(langs[0], str) else None
    tags, facets = record.get("tags"), record.get("facets")
    listed = tuple(tag for tag in tags if isinstance(tag, str)) if isinstance(tags, list) else ()
    post = Post(did=did, rkey=rkey, text=record["text"],
                created_at=created if isinstance(created, str) else None, lang=lang,
                facets=facets, tags=listed + _facet_tags(facets), reply=record.get("reply"),
                embed=record.get("embed"), record_tags=listed)
    return POST, post, time_us


def _facet_tags(facets: Any) -> tuple[str, ...]:
    """The ``tag`` of every ``#tag`` facet (whatever its range: the keywords match it)."""
    found = []
    for facet in facets if isinstance(facets, list) else ():
        features = facet.get("features") if isinstance(facet, dict) else None
        for feature in features if isinstance(features, list) else ():
            if (isinstance(feature, dict) and feature.get("$type") == _FACET_TAG
                    and isinstance(feature.get("tag"), str)):
                found.append(feature["tag"])
    return tuple(found)


class KeywordMatcher:
    """Whether a post is about the keywords (docs/design.md, "Keywords").

    A post matches when, case-insensitively, a keyword occurs in its text as
    posted as a whole word (not preceded or followed by a word character,
    ``\\w``, Unicode), or equals one of its tags. With the default keywords,
    ``#COVID19``, ``COVID-19`` and ``(covid)`` match; ``LongCovid``,
    ``coronaviruses`` and ``covid2`` do not.
    """

    def __init__(self, keywords: Iterable[str]) -> None:
        words = sorted({word.casefold() for word in keywords if word}, key=len, reverse=True)
        if not words:
            raise ValueError("at least one keyword is needed")
        self.keywords = tuple(words)
        self._words = re.compile(
            r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE)
        self._tags = frozenset(words)

    def matches(self, text: str, tags: Iterable[str] = ()) -> bool:
        """True when ``text`` holds a keyword as a whole word or a tag equals one."""
        return (any(tag.casefold() in self._tags for tag in tags)
                or self._words.search(text) is not None)


def wire_tweet(post: Post) -> Tweet:
    """The wire format's tweet object for ``post``.

    ``text`` has the post's links and mentions taken out already
    (:func:`transform.strip_post_markup`, which needs the record's facets);
    the job's executors then clean it like any tweet. ``lang`` is absent when
    the post names none. Then its place in the conversation, each field only when
    it has a value (:func:`~sources.bluesky_conversation.conversation_fields`).
    """
    tweet: Tweet = {"id": post.uri, "text": transform.strip_post_markup(post.text, post.facets)}
    if post.created_at is not None:
        tweet["created_at"] = post.created_at
    if post.lang is not None:
        tweet["lang"] = post.lang
    tweet["author_id"] = post.did
    tweet["url"] = f"https://bsky.app/profile/{post.did}/post/{post.rkey}"
    tweet.update(conversation_fields(post))
    return tweet


def subscribe_url(base: str, cursor: int | None, max_event_bytes: int | None = None) -> str:
    """``base`` (``wss://HOST/subscribe``) asking for posts only, uncompressed,
    without ``requireHello`` (this client sends no hello), skipping events over
    ``max_event_bytes`` when given, from ``cursor`` (a ``time_us``) on when given."""
    parts = urlsplit(base)
    query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True)
             if key not in _OWN_OPTIONS]
    query.append(("wantedCollections", POST_COLLECTION))
    if max_event_bytes is not None:
        query.append(("maxMessageSizeBytes", str(max_event_bytes)))
    if cursor is not None:
        query.append(("cursor", str(cursor)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def first_answering(urls: Sequence[str], timeout: float) -> str | None:
    """The first of ``urls`` whose Jetstream answers a subscription within
    ``timeout`` seconds in all, or None (``make run`` asks this to choose
    between the live source and the sample replay)."""
    deadline = time.monotonic() + timeout
    for url in urls:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with connect(subscribe_url(url, None), close_timeout=1, user_agent_header=USER_AGENT,
                         open_timeout=min(left, BlueskySource.OPEN_TIMEOUT)):
                return url
        except (OSError, websockets.exceptions.WebSocketException) as err:
            log.debug("Jetstream %s does not answer: %s", url, err)
    return None


# --- the WebSocket client --------------------------------------------------------------


class BlueskySource(JetstreamProgress):
    """Posts from Jetstream that match the keywords, each handed to ``emit``.

    :meth:`run` connects to the first URL that answers, reads events until
    ``stop`` is set and reconnects for as long as it runs. The hooks
    (``on_connect``, ``on_frame``, ``on_connection_error``, ``on_stale``)
    can be overridden; the constants below (and :class:`JetstreamProgress`'s)
    are the policy.

    The counters (:attr:`events`, :attr:`posts`, :attr:`matched`, ...),
    :meth:`status` and the cursor file are :class:`JetstreamProgress`'s: this
    class is the connection loop and what it does with each frame.
    """

    #: At start, give up (NoHostError) if no host has answered within this.
    START_TIMEOUT = 15.0
    #: Frames are read up to this many times ``max_event_bytes`` (see the constant).
    READ_LIMIT_FACTOR = READ_LIMIT_FACTOR
    #: Most seconds one opening handshake may take.
    OPEN_TIMEOUT = 10.0
    #: Wait before reconnect attempt n: a random time up to
    #: min(BACKOFF_MAX, BACKOFF_BASE * 2**n) seconds ("full jitter").
    BACKOFF_BASE = 0.5
    BACKOFF_MAX = 30.0
    #: At most one warning about malformed frames per this many seconds.
    MALFORMED_WARNING_SECONDS = 60.0

    def __init__(
        self,
        urls: Sequence[str],
        matcher: KeywordMatcher,
        emit: Emit,
        *,
        cursor_path: Path | None = None,
        stale_seconds: float = 60.0,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        before_cursor_save: Callable[[], None] | None = None,
        journaled: Iterable[dict[str, Any]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``emit`` gets each matching post as a wire tweet, with its event's time_us
        (the journal keeps it in the post's record). ``before_cursor_save`` runs
        before the cursor file is written: stream.py makes the journal durable
        there, so the cursor never runs ahead of what was kept. ``journaled``:
        the journal's last records (stream.py passes them at start), so that a
        restart resumes after the last post kept, and drops the ones a rewind
        brings again, even those kept after the cursor file was last written.
        ``max_event_bytes``: the largest event (frame) carried; hosts are asked
        to skip bigger ones, and one sent anyway is skipped by the client."""
        if not urls:
            raise ValueError("at least one Jetstream URL is needed")
        if max_event_bytes < 1:
            raise ValueError("max_event_bytes must be at least 1")
        self.urls = tuple(urls)
        self.max_event_bytes = max_event_bytes
        for url in self.urls:
            if "requireHello" in dict(parse_qsl(urlsplit(url).query, keep_blank_values=True)):
                log.warning("leaving requireHello out of the Jetstream URL %s: this client "
                            "sends no hello, so the host would send nothing", url)
        self.matcher = matcher
        self._emit = emit
        self.stale_seconds = stale_seconds
        #: set once a host has answered
        self.connected = threading.Event()
        self._last_malformed_warning = -float("inf")
        self._attempt = 0
        self._rng = random.Random()
        self._skip = OversizeSkip()
        self._asked: int | None = None  # the cursor the current connection asked for
        self._newest_here: int | None = None  # its newest event at or after that cursor
        super().__init__(cursor_path=cursor_path, before_cursor_save=before_cursor_save,
                         journaled=journaled, clock=clock)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} url={self.url!r} matched={self.matched}>"

    # -- running

    def run(self, stop: threading.Event) -> None:
        """Read posts until ``stop`` is set, reconnecting whenever a host fails.

        Raises NoHostError when no host answered within START_TIMEOUT of the
        start; once connected, it never gives up. No timer wakes it to look at
        ``stop``: the back-off waits on it, and a wait for the next frame ends
        when the connection is closed on stop (:class:`_CloseOnStop`, which also
        sets ``stop`` when this returns or raises).
        """
        deadline = time.monotonic() + self.START_TIMEOUT
        tried: list[str] = []
        turn = 0
        with _CloseOnStop(stop) as closer:
            while not stop.is_set():
                url = self.urls[turn % len(self.urls)]
                turn += 1
                if not self.connected.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise NoHostError(self._no_host_line(tried))
                    tried.append(url)
                else:
                    left = self.OPEN_TIMEOUT
                try:
                    self._session(url, min(self.OPEN_TIMEOUT, left), closer)
                except websockets.exceptions.ConnectionClosed as err:
                    if _too_big(err):
                        turn -= 1  # the same host again: the cursor past the event is in its times
                        self.on_too_big(url)
                        stop.wait(self._backoff())
                        continue
                    self.on_connection_error(url, err)
                except (OSError, websockets.exceptions.WebSocketException) as err:
                    self.on_connection_error(url, err)
                if stop.is_set():
                    break
                self._attempt += 1
                wait = self._backoff()
                if not self.connected.is_set():
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                stop.wait(wait)
            self.save_cursor(force=True)

    def _session(self, url: str, open_timeout: float, closer: _CloseOnStop) -> None:
        """One connection: open it, read until stop, silence or a failure."""
        skip_cursor = self._skip.cursor_for(url)
        self._asked = self.resume_cursor() if skip_cursor is None else skip_cursor
        self._newest_here = None
        target = subscribe_url(url, self._asked, self.max_event_bytes)
        with connect(target, open_timeout=open_timeout,
                     max_size=self.max_event_bytes * self.READ_LIMIT_FACTOR,
                     close_timeout=2, user_agent_header=USER_AGENT) as websocket, \
                closer.holding(websocket):
            if self.connected.is_set():
                self.reconnects += 1
            self.url = url
            self.connected.set()
            self.on_connect(url, target)
            self._read(websocket, closer.stop)

    def _read(self, websocket: ClientConnection, stop: threading.Event) -> None:
        """Handle frames until ``stop``, ``stale_seconds`` of silence or a failure.
        With no frame, the wait lasts until the stale deadline, or until the
        cursor file is due to get the last event's time, whichever is first."""
        stale_at = time.monotonic() + self.stale_seconds
        while not stop.is_set():
            wait = stale_at - time.monotonic()
            save_in = self.cursor_save_in()
            if save_in is not None:
                wait = min(wait, save_in)
            try:
                frame = websocket.recv(timeout=max(0.0, wait))
            except TimeoutError:
                if time.monotonic() >= stale_at:
                    self.on_stale(self.url or "")
                    return
                self.save_cursor()
                continue
            except websockets.exceptions.ConnectionClosed:
                if stop.is_set():
                    return  # closed on stop
                raise
            stale_at = time.monotonic() + self.stale_seconds
            self._attempt = 0  # events flow: the next failure starts the backoff afresh
            self.on_frame(frame)
            self.save_cursor()

    def _backoff(self) -> float:
        ceiling = min(self.BACKOFF_MAX, self.BACKOFF_BASE * 2 ** min(self._attempt, 16))
        return self._rng.uniform(0, ceiling)

    def _no_host_line(self, tried: list[str]) -> str:
        names = ", ".join(dict.fromkeys(tried)) or ", ".join(self.urls)
        return (f"no Jetstream host answered within {self.START_TIMEOUT:g} s (tried {names}); "
                "check the network or a proxy, or use --source replay to run offline")

    # -- hooks

    def on_connect(self, url: str, target: str) -> None:
        """Called once a host has answered."""
        if self.last_time_us is None:
            log.info("connected to %s: live posts from now on", url)
        elif self._skip.cursor_for(url) is not None:
            log.debug("connected to %s: trying cursor %s, past an event too big to carry",
                      url, self._asked)
        else:
            log.info("connected to %s: resuming %.0f s before the last event handled "
                     "(cursor %d)", url, self.REWIND_SECONDS, self.resume_cursor())

    def on_frame(self, frame: str | bytes) -> None:
        """Handle one frame: a matching new post goes to ``emit``."""
        self.events += 1
        if len(frame) * 4 > self.max_event_bytes and _size(frame) > self.max_event_bytes:
            self.on_oversize(frame)
            return
        verdict, post, time_us = read_event(frame)
        if time_us is not None:
            self.note_time(time_us)
            if self._asked is None or time_us >= self._asked:
                self._newest_here = max(time_us, self._newest_here or time_us)
                self._skip.event(time_us)
        if verdict == MALFORMED:
            self.malformed += 1
            now = time.monotonic()
            if now - self._last_malformed_warning >= self.MALFORMED_WARNING_SECONDS:
                self._last_malformed_warning = now
                log.warning("skipping a Jetstream frame that is no event or a post without "
                            "text (%d so far): %.80r", self.malformed, frame)
            return
        if post is None:
            return
        self.posts += 1
        if not self.matcher.matches(post.text, post.tags):
            return
        uri = post.uri
        if uri in self.recent:
            self.repeats += 1  # a rewind brought it again
            return
        if not self._emit(wire_tweet(post), time_us):
            self.refused += 1  # counted and logged by the server; a rewind may bring it back
            return
        self.matched += 1
        self.remember_post(uri, time_us)

    def on_connection_error(self, url: str, err: BaseException) -> None:
        """Called when connecting fails or a connection breaks. Before the first
        connection this is only a debug line: :class:`NoHostError` says it all."""
        reason = " ".join(str(err).split()) or type(err).__name__
        level = logging.WARNING if self.connected.is_set() else logging.DEBUG
        log.log(level, "Jetstream %s: %s; reconnecting with backoff", url, reason[:200])

    def on_oversize(self, frame: str | bytes) -> None:
        """Called with an event over ``max_event_bytes`` that the host sent anyway (it
        ignored ``maxMessageSizeBytes``): skipped, counted and logged, unparsed."""
        head = frame[:256] if isinstance(frame, str) else frame[:256].decode("utf-8", "replace")
        found = _TIME_US.search(head)
        time_us = int(found.group(1)) if found else None
        if time_us is not None:
            self.note_time(time_us)
            if self._asked is None or time_us >= self._asked:
                self._newest_here = max(time_us, self._newest_here or time_us)
                self._skip.event(time_us)
        self.oversize += 1
        log.warning("skipping a Jetstream event over %d bytes (%d bytes, time_us %s) from %s "
                    "(%d skipped so far)", self.max_event_bytes, _size(frame), time_us,
                    self.url, self.oversize)

    def on_too_big(self, url: str) -> None:
        """Called when ``url`` sent an event over ``max_event_bytes`` (the host
        ignored ``maxMessageSizeBytes``): the next connection goes past it."""
        if self._skip.too_big(url, self._asked, self._newest_here):
            self.oversize += 1
            log.warning("skipping a Jetstream event over %d bytes from %s, after the event of "
                        "time_us %s (%d skipped so far)", self.max_event_bytes, url,
                        self._newest_here, self.oversize)
        else:
            log.debug("the event over %d bytes came first again from %s", self.max_event_bytes,
                      url)

    def on_stale(self, url: str) -> None:
        """Called when no event has come for ``stale_seconds``: the host is silent."""
        log.warning("no event from %s for %g s; reconnecting to another host",
                    url, self.stale_seconds)


class _CloseOnStop:
    """For the length of a ``with`` block, a thread that waits for ``stop`` and
    then closes the connection being read (:meth:`holding`): a read waiting for
    its next frame ends at once, with no timer. A connection opened after that
    looks at ``stop`` before its first read. Leaving the block sets ``stop``,
    which ends the thread also when no host ever answered."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._lock = threading.Lock()
        self._websocket: ClientConnection | None = None
        self._thread = threading.Thread(target=self._close_on_stop, name="bluesky-stop",
                                        daemon=True)

    def __enter__(self) -> _CloseOnStop:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self._thread.join()

    @contextlib.contextmanager
    def holding(self, websocket: ClientConnection) -> Iterator[None]:
        """Close ``websocket`` on stop while the block lasts."""
        with self._lock:
            self._websocket = websocket
        try:
            yield
        finally:
            with self._lock:
                self._websocket = None

    def _close_on_stop(self) -> None:
        self.stop.wait()
        with self._lock:
            websocket = self._websocket
        if websocket is None:
            return
        try:
            websocket.close()  # thread-safe; waits for the host's answer (close_timeout)
        except (OSError, websockets.exceptions.WebSocketException) as err:
            log.debug("closing the Jetstream connection on stop: %s", err)


def _size(frame: str | bytes) -> int:
    """A frame's size in bytes, as the host counts it."""
    return len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "replace"))


def _too_big(err: websockets.exceptions.ConnectionClosed) -> bool:
    """Whether the connection closed because a frame was over the size limit (1009)."""
    return any(close is not None and close.code == CloseCode.MESSAGE_TOO_BIG
               for close in (err.sent, err.rcvd))
