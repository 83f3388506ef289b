"""Bluesky posts, live and free, from Bluesky's public Jetstream service.

Jetstream turns the Bluesky network into JSON: one event per WebSocket text
frame from ``wss://HOST/subscribe?wantedCollections=app.bsky.feed.post``, no
account and no key (docs/design.md, "Bluesky posts"). Four parts, the last here:

* :mod:`sources.bluesky_events`, pure functions: :func:`read_event` (one frame ->
  a :class:`Post`, a :class:`Deletion`, or why neither), :class:`KeywordMatcher`
  (which keywords, as whole words or tags, chose a post) and :func:`wire_tweet`
  (a post -> the tweet object of the wire format);
* :class:`~sources.jetstream_progress.JetstreamProgress`, the bookkeeping: the
  counters and the status line, the last event's time a reconnect resumes from (a
  few seconds before it, so a dropped connection loses nothing), the posts and
  deletes handled lately (so those a rewind delivers again are dropped), and the
  cursor file beside the journal that keeps them (so a restart goes on where it
  stopped);
* the named hooks of :mod:`sources.jetstream_hooks` (where reading breaks or goes
  on), which feed the coverage ledger (:mod:`sources.coverage`);
* :class:`BlueskySource`, the WebSocket client built on them, reading in one
  thread (:mod:`sources.jetstream_socket`): it rotates through the hosts, backs
  off with jitter, reconnects when a host goes silent, skips an event too big to
  carry (:mod:`sources.oversize`), hands each matching post, and each delete of a
  post as a sealed record, to ``emit``, and, when ``emit`` refuses one (the journal
  is full), stops reading until there is room and goes on from there.

Typical use (what ``stream.py --source bluesky`` does)::

    put = functools.partial(server.put, will_retry=True)
    seal = functools.partial(control.seal_record, secret)
    source = BlueskySource(urls, KeywordMatcher(keywords), put,
                           cursor_path=journal_path / BlueskySource.CURSOR_FILE,
                           wait_for_room=server.wait_for_room, seal=seal,
                           ledger=CoverageLedger("bluesky", put, seal))
    source.run(stop)          # until stop is set; NoHostError if none answers at start
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.frames import CloseCode

from sources import Emit
from sources.bluesky_events import (
    DELETE,
    MALFORMED,
    OTHER,
    POST,
    POST_COLLECTION,
    Deletion,
    KeywordMatcher,
    Post,
    read_event,
    wire_tweet,
)
from sources.coverage import CoverageLedger, Seal
from sources.jetstream_handler import JetstreamHandler
from sources.jetstream_hooks import LIVE, OVERSIZE, REFUSED, REWIND
from sources.jetstream_socket import JetstreamConnection, WakeOnStop

__all__ = ["DELETE", "MALFORMED", "OTHER", "POST", "BlueskySource", "Deletion",
           "KeywordMatcher", "NoHostError", "Post", "first_answering", "read_event",
           "subscribe_url", "wire_tweet"]

log = logging.getLogger(__name__)

USER_AGENT = f"covid19-live-stream (websockets/{websockets.__version__})"
#: Largest event the client carries by default (and asks the host to skip above).
DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024
#: A frame is read up to this many times ``max_event_bytes``, so that an event a
#: host sends although it is over the limit is skipped whole, by its size, with no
#: post after it lost; only a frame past even that closes the connection (1009)
#: and is got past by :mod:`sources.oversize`'s cursor rule.
READ_LIMIT_FACTOR = 16
#: Query options a configured URL may not keep: the client sets them itself, or
#: (requireHello) they would make the host wait for a message the client never sends.
_OWN_OPTIONS = ("wantedCollections", "cursor", "compress", "maxMessageSizeBytes", "requireHello")


class NoHostError(ConnectionError):
    """No Jetstream host answered in time at start; ``str(err)`` is one line."""


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


class BlueskySource(JetstreamHandler):
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
    #: that 20 s batches do not see. A stop still ends the wait at once. A second
    #: rather than a quarter: what a round hands the journal is one commit (and one
    #: send), and with the network's ~5 deletes a second forwarded nearly every
    #: round hands it something (measured: stream.py 0.83 % of a core at 0.25 s,
    #: 0.43 % at 1 s; docs/performance.md).
    GATHER_SECONDS = 1.0
    #: Wait before reconnect attempt n: a random time up to
    #: min(BACKOFF_MAX, BACKOFF_BASE * 2**n) seconds ("full jitter").
    BACKOFF_BASE = 0.5
    BACKOFF_MAX = 30.0

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
        seal: Seal | None = None,
        ledger: CoverageLedger | None = None,
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
        and one sent anyway is skipped by the client. ``seal``
        (``control.seal_record`` with the secret) makes each delete of a post a
        record ``emit`` takes too; without it deletes are skipped. ``ledger`` keeps
        the coverage (spans and gaps; :mod:`sources.jetstream_hooks` says when)."""
        if not urls:
            raise ValueError("at least one Jetstream URL is needed")
        if max_event_bytes < 1:
            raise ValueError("max_event_bytes must be at least 1")
        self.urls = tuple(urls)
        for url in self.urls:
            if "requireHello" in dict(parse_qsl(urlsplit(url).query, keep_blank_values=True)):
                log.warning("leaving requireHello out of the Jetstream URL %s: this client "
                            "sends no hello, so the host would send nothing", url)
        self._wait_for_room = wait_for_room
        self.stale_seconds = stale_seconds
        #: set once a host has answered
        self.connected = threading.Event()
        self._attempt = 0
        self._rng = random.Random()
        super().__init__(matcher, emit, max_event_bytes=max_event_bytes, seal=seal,
                         ledger=ledger, cursor_path=cursor_path,
                         before_cursor_save=before_cursor_save, journaled=journaled,
                         clock=clock)

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
        if self.ledger is not None:
            self.ledger.declare(keywords=list(self.matcher.keywords))
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
            if self.ledger is not None:
                self.ledger.close()
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
            if self.ledger is not None:
                self.ledger.tick()  # the span, once a minute while events come

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


def _too_big(err: websockets.exceptions.ConnectionClosed) -> bool:
    """Whether the connection closed because a frame was over the size limit (1009)."""
    return any(close is not None and close.code == CloseCode.MESSAGE_TOO_BIG
               for close in (err.sent, err.rcvd))
