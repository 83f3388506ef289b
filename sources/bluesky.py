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
* :class:`BlueskySource`, the WebSocket client built on it and on the named
  hooks of :mod:`sources.jetstream_hooks` (where reading breaks or goes on),
  reading in one thread (:mod:`sources.jetstream_socket`): it rotates through the hosts,
  backs off with jitter, reconnects when a host goes silent, skips an event
  too big to carry (:mod:`sources.oversize`), hands each matching post to
  ``emit``, and, when ``emit`` refuses one (the journal is full), stops
  reading until there is room and goes on from that post.

Typical use (what ``stream.py --source bluesky`` does)::

    source = BlueskySource(urls, KeywordMatcher(keywords),
                           functools.partial(server.put, will_retry=True),
                           cursor_path=journal_path / BlueskySource.CURSOR_FILE,
                           wait_for_room=server.wait_for_room)
    source.run(stop)          # until stop is set; NoHostError if none answers at start
"""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.frames import CloseCode

import transform
from sources import Emit, Tweet
from sources.bluesky_conversation import conversation_fields
from sources.jetstream_hooks import LIVE, OVERSIZE, REFUSED, REWIND, JetstreamHooks
from sources.jetstream_socket import JetstreamConnection, WakeOnStop
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
            with JetstreamConnection.open(subscribe_url(url, None), max_size=2**20,
                                          open_timeout=min(left, BlueskySource.OPEN_TIMEOUT),
                                          user_agent=USER_AGENT, close_timeout=1):
                return url
        except (OSError, websockets.exceptions.WebSocketException) as err:
            log.debug("Jetstream %s does not answer: %s", url, err)
    return None


# --- the WebSocket client --------------------------------------------------------------


class BlueskySource(JetstreamHooks):
    """Posts from Jetstream that match the keywords, each handed to ``emit``.

    :meth:`run` connects to the first URL that answers, reads events until
    ``stop`` is set and reconnects for as long as it runs, all in the thread
    that calls it (:class:`~sources.jetstream_socket.JetstreamConnection`).
    The constants below (and :class:`JetstreamProgress`'s) are the policy.

    When ``emit`` refuses a post (the journal is full) nothing is lost: the
    source stops reading, closes the connection (a host drops a client that
    leaves its socket unread), waits for room (``wait_for_room``) and
    reconnects to the same host from that post's own ``time_us``; the posts
    handed on before it come again and are dropped by the dedup.

    The hooks, the moments where reading breaks or goes on with what a record
    of gaps needs, are :class:`~sources.jetstream_hooks.JetstreamHooks`'s
    (``on_restart``, ``on_connect``, ``on_first_event``, ``on_stale``,
    ``on_connection_error``, ``on_pause``, ``on_resume``), with
    :meth:`on_oversize` and :meth:`on_too_big` here; the counters
    (:attr:`events`, :attr:`posts`, :attr:`matched`, ...), :meth:`status` and
    the cursor file are :class:`~sources.jetstream_progress.JetstreamProgress`'s.
    This class is the connection loop and what it does with each frame.
    """

    #: At start, give up (NoHostError) if no host has answered within this.
    START_TIMEOUT = 15.0
    #: Frames are read up to this many times ``max_event_bytes`` (see the constant).
    READ_LIMIT_FACTOR = READ_LIMIT_FACTOR
    #: Most seconds one opening handshake may take.
    OPEN_TIMEOUT = 10.0
    #: Most seconds a closing handshake waits for the host.
    CLOSE_TIMEOUT = 2.0
    #: A host sends each event as it comes (50 a second from Jetstream, each on a
    #: wake-up of its own); after a read, the frames that come within this many
    #: seconds are read together, at one wake-up: far less CPU a frame, for a delay
    #: that 20 s batches do not see. A stop still ends the wait at once.
    GATHER_SECONDS = 0.25
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
        wait_for_room: Callable[[threading.Event], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``emit`` gets each matching post as a wire tweet, with its event's time_us
        (the journal keeps it in the post's record), and says whether it took it.
        ``wait_for_room(stop)``, after a refusal, returns True once ``emit`` may
        take posts again (False: ``stop`` was set first); without it the source
        tries again after the back-off. ``before_cursor_save`` runs before the
        cursor file is written: stream.py makes the journal durable there, so the
        cursor never runs ahead of what was kept. ``journaled``: the journal's
        last records (stream.py passes them at start), so that a restart resumes
        after the last post kept, and drops the ones a rewind brings again, even
        those kept after the cursor file was last written. ``max_event_bytes``:
        the largest event (frame) carried; hosts are asked to skip bigger ones,
        and one sent anyway is skipped by the client."""
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
        self._wait_for_room = wait_for_room
        self.stale_seconds = stale_seconds
        #: set once a host has answered
        self.connected = threading.Event()
        self._last_malformed_warning = -float("inf")
        self._attempt = 0
        self._rng = random.Random()
        self._skip = OversizeSkip()
        self._asked: int | None = None  # the cursor the current connection asked for
        self._newest_here: int | None = None  # its newest event at or after that cursor
        self._first_here = False  # whether the current connection has had an event yet
        #: (host, time_us) of the first post emit refused: reading stops, and goes on
        #: from there (on that host) once there is room
        self._refused_at: tuple[str, int | None] | None = None
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
        when ``stop`` wakes the socket wait (:class:`WakeOnStop`, which also
        sets ``stop`` when this returns or raises); the connection is then
        closed by this thread.
        """
        if self.resumed_from is not None:
            self.on_restart(self.resumed_from, self._clock() - self.resumed_from / 1e6)
        deadline = time.monotonic() + self.START_TIMEOUT
        tried: list[str] = []
        turn = 0
        with WakeOnStop(stop) as wakeup:
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
                    self._session(url, min(self.OPEN_TIMEOUT, left), wakeup, stop)
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
                if self.paused_since is not None:  # emit refused a post: wait for room
                    turn -= 1  # then the same host again: the post's time_us is in its times
                    if not self._pause(stop):
                        break
                    continue
                self._attempt += 1
                wait = self._backoff()
                if not self.connected.is_set():
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                stop.wait(wait)
            self.save_cursor(force=True)

    def _session(self, url: str, open_timeout: float, wakeup: socket.socket,
                 stop: threading.Event) -> None:
        """One connection: open it, read until stop, silence, a refusal or a failure."""
        self._asked, why = self._cursor_for(url)
        self._newest_here = None
        self._first_here = False
        with JetstreamConnection.open(
                subscribe_url(url, self._asked, self.max_event_bytes),
                open_timeout=open_timeout, user_agent=USER_AGENT,
                max_size=self.max_event_bytes * self.READ_LIMIT_FACTOR,
                close_timeout=self.CLOSE_TIMEOUT, wakeup=wakeup,
                gather_seconds=self.GATHER_SECONDS) as connection:
            if self.connected.is_set():
                self.reconnects += 1
            self.url = url
            self.connected.set()
            self.on_connect(url, self._asked, why)
            self._read(connection, stop)

    def _cursor_for(self, url: str) -> tuple[int | None, str]:
        """The cursor a connection to ``url`` asks for, and why: past an event too big
        to carry (:mod:`sources.oversize`); at the post emit refused, on its host;
        else a few seconds before the last event handled (:meth:`resume_cursor`),
        or the live tip before any."""
        skip_cursor = self._skip.cursor_for(url)
        if skip_cursor is not None:
            return skip_cursor, OVERSIZE
        refused = self._refused_at
        if refused is not None and refused[0] == url and refused[1] is not None:
            return refused[1], REFUSED
        cursor = self.resume_cursor()
        return cursor, LIVE if cursor is None else REWIND

    def _read(self, connection: JetstreamConnection, stop: threading.Event) -> None:
        """Handle frames until ``stop``, ``stale_seconds`` of silence, a refusal or a
        failure. With no frame, the wait lasts until the stale deadline, or until
        the cursor file is due to get the last event's time, whichever is first."""
        stale_at = time.monotonic() + self.stale_seconds
        while not stop.is_set():
            wait = stale_at - time.monotonic()
            save_in = self.cursor_save_in()
            if save_in is not None:
                wait = min(wait, save_in)
            try:
                frames = connection.read(timeout=max(0.0, wait))
            except websockets.exceptions.ConnectionClosed:
                if stop.is_set():
                    return
                raise
            if not frames:
                if stop.is_set():
                    return  # woken by the stop: the caller closes the connection
                if time.monotonic() >= stale_at:
                    self.on_stale(self.url or "", self.last_time_us)
                    return
                self.save_cursor()
                continue
            stale_at = time.monotonic() + self.stale_seconds
            self._attempt = 0  # events flow: the next failure starts the backoff afresh
            for frame in frames:
                self.on_frame(frame)
                if self.paused_since is not None:
                    return  # refused: the rest comes again from the refused post's cursor
            self.save_cursor()

    def _pause(self, stop: threading.Event) -> bool:
        """Emit refused a post and the connection is closed: save the cursor, wait
        for room (or the back-off, without ``wait_for_room``); False when ``stop``
        came first."""
        assert self._refused_at is not None and self.paused_since is not None
        url, time_us = self._refused_at
        self.save_cursor(force=True)  # a restart meanwhile goes on from the refused post
        self.on_pause(url, time_us)
        if self._wait_for_room is not None:
            room = self._wait_for_room(stop)
        else:
            self._attempt += 1
            room = not stop.wait(self._backoff())
        waited = time.monotonic() - self.paused_since
        self.paused_seconds += waited
        self.paused_since = None
        if room:
            self.on_resume(url, time_us, waited)
        return room and not stop.is_set()

    def _backoff(self) -> float:
        ceiling = min(self.BACKOFF_MAX, self.BACKOFF_BASE * 2 ** min(self._attempt, 16))
        return self._rng.uniform(0, ceiling)

    def _no_host_line(self, tried: list[str]) -> str:
        names = ", ".join(dict.fromkeys(tried)) or ", ".join(self.urls)
        return (f"no Jetstream host answered within {self.START_TIMEOUT:g} s (tried {names}); "
                "check the network or a proxy, or use --source replay to run offline")

    # -- handling a frame

    def on_frame(self, frame: str | bytes) -> None:
        """Handle one frame: a matching new post goes to ``emit``; one ``emit``
        refuses stops the reading (:meth:`on_pause`)."""
        self.events += 1
        if len(frame) * 4 > self.max_event_bytes and _size(frame) > self.max_event_bytes:
            self.on_oversize(frame)
            return
        verdict, post, time_us = read_event(frame)
        if time_us is not None:
            self._note_event(time_us)
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
            self._refused_at = (self.url or "", time_us)
            self.paused_since = time.monotonic()
            self.pauses += 1
            return
        self.matched += 1
        self.remember_post(uri, time_us)

    def _note_event(self, time_us: int) -> None:
        """An event's time: the cursor and lag, the oversize rule, the first event
        of the connection, and the end of a pause once it is read again."""
        self.note_time(time_us)
        if self._asked is None or time_us >= self._asked:
            self._newest_here = max(time_us, self._newest_here or time_us)
            self._skip.event(time_us)
        if not self._first_here:
            self._first_here = True
            self.on_first_event(self.url or "", self._asked, time_us)
        if self._refused_at is not None and time_us > (self._refused_at[1] or 0):
            self._refused_at = None  # read past the refused post: its cursor is spent

    # -- events skipped (hooks too: see sources.jetstream_hooks)

    def on_oversize(self, frame: str | bytes) -> None:
        """Called with an event over ``max_event_bytes`` that the host sent anyway (it
        ignored ``maxMessageSizeBytes``): skipped, counted and logged, unparsed."""
        head = frame[:256] if isinstance(frame, str) else frame[:256].decode("utf-8", "replace")
        found = _TIME_US.search(head)
        time_us = int(found.group(1)) if found else None
        if time_us is not None:
            self._note_event(time_us)
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


def _size(frame: str | bytes) -> int:
    """A frame's size in bytes, as the host counts it."""
    return len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "replace"))


def _too_big(err: websockets.exceptions.ConnectionClosed) -> bool:
    """Whether the connection closed because a frame was over the size limit (1009)."""
    return any(close is not None and close.code == CloseCode.MESSAGE_TOO_BIG
               for close in (err.sent, err.rcvd))
