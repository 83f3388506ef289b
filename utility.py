"""Where tweets come from and how they reach Spark: the producer's building blocks.

* :func:`tweet_from_payload` turns one X API v2 stream payload (or a bare
  tweet object) into the tweet object that goes on the wire.
* :class:`TweetServer` is the TCP socket Spark's receiver connects to. Sources
  hand it tweets with :meth:`TweetServer.put`, which never blocks; a sender
  thread writes them to the consumer, one JSON object per line
  (:func:`transform.encode_tweet`), holding them while no consumer is connected.
* :class:`ReplaySource` replays a newline-delimited JSON file at a chosen rate.
* :class:`TwitterSource` is a tweepy ``StreamingClient`` on the X API v2
  filtered stream; tweepy does the reconnecting and the backoff.

``stream.py`` wires one source to one server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import tweepy

import transform

log = logging.getLogger(__name__)

Tweet = dict[str, Any]
Emit = Callable[[Tweet], None]


# --- tweets ------------------------------------------------------------------


def _tweet_or_reason(obj: Any) -> tuple[Tweet | None, str]:
    """``(tweet, "")`` for a payload or bare tweet, else ``(None, short reason)``."""
    if not isinstance(obj, dict):
        return None, f"JSON {type(obj).__name__}, not an object"
    if "data" in obj:
        tweet = obj["data"]
        if not isinstance(tweet, dict):
            return None, "payload 'data' is not an object"
    elif "errors" in obj and "text" not in obj:
        return None, f"payload with errors and no tweet: {_describe_errors(obj['errors'])}"
    else:
        tweet = obj
    tweet_id, text = tweet.get("id"), tweet.get("text")
    if isinstance(tweet_id, bool) or not isinstance(tweet_id, str | int) or tweet_id == "":
        return None, "no string or integer id"
    if not isinstance(text, str):
        return None, "no string text"
    return tweet, ""


def _describe_errors(errors: Any) -> str:
    """A short, single-line summary of a v2 ``errors`` list."""
    if not isinstance(errors, list) or not errors:
        return "unreadable errors field"
    parts = []
    for error in errors[:3]:
        if isinstance(error, dict):
            title = error.get("title") or error.get("type") or "error"
            detail = error.get("detail") or error.get("message") or ""
            parts.append(f"{title}: {detail}" if detail else str(title))
        else:
            parts.append(str(error))
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return ("; ".join(parts) + more).replace("\n", " ")[:300]


def tweet_from_payload(obj: Any) -> Tweet | None:
    """The tweet object carried by ``obj``, or None if it carries none.

    ``obj`` is either a v2 stream payload ``{"data": {...}, "matching_rules":
    [...], "includes": ...}``, whose ``data`` dict is returned as it is (every
    field the source gave), or a bare tweet object, returned itself. Anything
    without a string or integer ``id`` and a string ``text`` gives None.
    """
    tweet, _ = _tweet_or_reason(obj)
    return tweet


# --- the socket Spark reads ------------------------------------------------------


class TweetServer:
    """A TCP server that feeds one consumer at a time with newline-delimited JSON tweets.

    Typical use::

        server = TweetServer("127.0.0.1", 5555, buffer_size=10_000)
        server.start()
        server.put({"id": "1", "text": "hello"})   # never blocks
        server.wait_until_drained(timeout=None)    # True once a consumer got it all
        server.close()

    Tweets wait in a bounded buffer until a consumer takes them; when the buffer
    is full the oldest tweet is dropped (and counted in :attr:`dropped`). When the
    consumer goes away the tweets not yet written are put back, in order, for
    the next one.
    """

    #: Most lines joined into one ``sendall`` call.
    SEND_BATCH_LINES = 256
    #: How often an idle sender checks whether its consumer has gone away.
    IDLE_CHECK_SECONDS = 0.5
    #: At most one "buffer full" warning per this many seconds.
    DROP_WARNING_INTERVAL = 10.0
    #: Pause after a failed ``accept`` (for example too many open files).
    ACCEPT_RETRY_SECONDS = 1.0
    #: How long :meth:`close` waits for the sender thread to finish.
    CLOSE_TIMEOUT = 5.0
    LISTEN_BACKLOG = 5

    def __init__(self, host: str, port: int, buffer_size: int) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self.host = host
        self.port = port
        self.buffer_size = buffer_size
        #: tweets written to a consumer socket
        self.sent = 0
        #: tweets dropped because the buffer was full
        self.dropped = 0
        #: consumers accepted so far
        self.connections = 0
        self._buffer: deque[bytes] = deque()  # encoded lines, oldest on the left
        self._in_flight = 0  # lines taken from the buffer, not yet written
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._listener: socket.socket | None = None
        self._consumer: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._last_drop_warning = -math.inf

    # -- life cycle

    def start(self) -> None:
        """Bind and listen, then start the sender thread.

        Raises OSError (``socket.gaierror`` included) when the address cannot be
        bound; nothing is left open in that case.
        """
        if self._listener is not None:
            raise RuntimeError("TweetServer already started")
        family, _, _, _, sockaddr = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(sockaddr)
            listener.listen(self.LISTEN_BACKLOG)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="tweet-server", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound (the real port when 0 was asked for)."""
        if self._listener is None:
            raise RuntimeError("TweetServer not started")
        host, port = self._listener.getsockname()[:2]
        return host, port

    def close(self) -> None:
        """Stop serving: close the consumer connection and the listening socket.

        Tweets still buffered are discarded (see :attr:`pending`). Safe to call twice.
        """
        with self._cond:
            if self._closing.is_set():
                return
            self._closing.set()
            consumer = self._consumer
            self._cond.notify_all()
        for sock in (consumer, self._listener):
            if sock is not None:
                with contextlib.suppress(OSError):  # already gone
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept/sendall
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.CLOSE_TIMEOUT)
        if self._listener is not None:
            self._listener.close()

    # -- producer side

    def put(self, tweet: Tweet) -> None:
        """Queue one tweet for the consumer; never blocks, thread-safe.

        When the buffer already holds ``buffer_size`` tweets the oldest is
        dropped. Raises TypeError or ValueError if the tweet cannot be encoded
        as JSON.
        """
        line = transform.encode_tweet(tweet)
        warn_total = None
        with self._cond:
            if len(self._buffer) >= self.buffer_size:
                self._buffer.popleft()
                self.dropped += 1
                warn_total = self._drop_warning_due()
            self._buffer.append(line)
            self._cond.notify_all()
        if warn_total is not None:
            log.warning(
                "tweet buffer full (%d): dropping the oldest tweets; %d dropped so far",
                self.buffer_size, warn_total,
            )

    @property
    def pending(self) -> int:
        """Tweets queued or being written, not yet delivered to a consumer."""
        with self._cond:
            return len(self._buffer) + self._in_flight

    def wait_until_drained(self, timeout: float | None = None) -> bool:
        """Block until every tweet put so far has been written to a consumer.

        Returns True when drained, False when ``timeout`` seconds passed first
        or the server was closed with tweets still pending.
        """
        with self._cond:
            self._cond.wait_for(
                lambda: self._drained() or self._closing.is_set(), timeout
            )
            return self._drained()

    # -- sender thread

    def _drained(self) -> bool:
        return not self._buffer and self._in_flight == 0

    def _drop_warning_due(self) -> int | None:
        """The running total if a drop warning is due now (call with the lock held)."""
        now = time.monotonic()
        if now - self._last_drop_warning < self.DROP_WARNING_INTERVAL:
            return None
        self._last_drop_warning = now
        return self.dropped

    def _serve(self) -> None:
        """Accept one consumer at a time and feed it until it goes or we close."""
        assert self._listener is not None
        while not self._closing.is_set():
            try:
                conn, peer = self._listener.accept()
            except OSError as err:
                if self._closing.is_set():
                    return
                log.warning("accepting a consumer failed: %s", err)
                self._closing.wait(self.ACCEPT_RETRY_SECONDS)
                continue
            with conn:
                with self._cond:
                    if self._closing.is_set():
                        return
                    self._consumer = conn
                    self.connections += 1
                log.info("consumer connected from %s:%d", peer[0], peer[1])
                try:
                    self._feed(conn)
                finally:
                    with self._cond:
                        self._consumer = None

    def _feed(self, conn: socket.socket) -> None:
        """Write buffered lines to ``conn`` until it disconnects or we close."""
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._buffer or self._closing.is_set(), self.IDLE_CHECK_SECONDS
                )
                if self._closing.is_set():
                    return
                batch = [
                    self._buffer.popleft()
                    for _ in range(min(len(self._buffer), self.SEND_BATCH_LINES))
                ]
                self._in_flight = len(batch)
            try:
                if _peer_has_closed(conn):
                    raise ConnectionResetError("consumer closed the connection")
                if batch:
                    conn.sendall(b"".join(batch))
            except OSError:  # BrokenPipeError, ConnectionResetError, ...
                self._put_back(batch)
                if not self._closing.is_set():
                    log.info("consumer disconnected; holding tweets until one reconnects")
                return
            with self._cond:
                self.sent += len(batch)
                self._in_flight = 0
                self._cond.notify_all()

    def _put_back(self, batch: list[bytes]) -> None:
        """Return unsent lines to the front of the buffer, in order; trim the oldest."""
        warn_total = None
        with self._cond:
            self._buffer.extendleft(reversed(batch))
            self._in_flight = 0
            overflow = len(self._buffer) - self.buffer_size
            for _ in range(max(overflow, 0)):
                self._buffer.popleft()
                self.dropped += 1
            if overflow > 0:
                warn_total = self._drop_warning_due()
            self._cond.notify_all()
        if warn_total is not None:
            log.warning(
                "tweet buffer full (%d): dropping the oldest tweets; %d dropped so far",
                self.buffer_size, warn_total,
            )


def _peer_has_closed(conn: socket.socket) -> bool:
    """True when the consumer has closed its end (it never sends us anything).

    Checked before each write so that tweets are not written into a connection
    already closed by the other side, where they would be lost. Anything the
    consumer does send is read and ignored.
    """
    conn.setblocking(False)
    try:
        data = conn.recv(4096)
    except BlockingIOError:
        return False
    finally:
        conn.setblocking(True)
    return data == b""


# --- replay source ------------------------------------------------------------------


class ReplaySource:
    """Replays a newline-delimited JSON file of tweets at a chosen rate.

    Each line is a v2 stream payload or a bare tweet object. ``rate`` is in
    tweets per second (0 = as fast as possible). With ``loop`` the file is
    replayed until stopped; on pass N >= 2 every id gets the suffix ``~N`` so
    that downstream deduplication by id keeps the looped tweets.

    After :meth:`run`, :attr:`emitted` and :attr:`skipped` (bad lines, every
    pass counted) say what happened.
    """

    #: If replay falls this far behind schedule, restart the schedule instead of bursting.
    MAX_LAG_SECONDS = 1.0

    def __init__(self, path: Path, rate: float, loop: bool) -> None:
        if rate < 0 or not math.isfinite(rate):
            raise ValueError("rate must be a finite number >= 0")
        self.path = Path(path)
        self.rate = rate
        self.loop = loop
        self.emitted = 0
        self.skipped = 0

    def run(self, emit: Emit, stop: threading.Event) -> int:
        """Emit the file's tweets with ``emit`` until done or ``stop`` is set.

        Returns the number of tweets emitted. Raises OSError if the file cannot
        be read.
        """
        self.emitted = self.skipped = 0
        schedule = _Schedule(self.rate, self.MAX_LAG_SECONDS)
        pass_number = 0
        while not stop.is_set():
            pass_number += 1
            emitted_before = self.emitted
            with self.path.open("rb") as handle:
                for tweet in self._tweets(handle, pass_number):
                    if not schedule.wait_turn(stop):
                        break
                    emit(tweet)
                    self.emitted += 1
            if not self.loop:
                break
            if self.emitted == emitted_before and not stop.is_set():
                log.warning("%s holds no tweets; nothing to loop over", self.path)
                break
        log.info(
            "replay of %s ended: %d tweets emitted, %d bad lines skipped, %d pass(es)",
            self.path, self.emitted, self.skipped, pass_number,
        )
        return self.emitted

    def _tweets(self, handle: BinaryIO, pass_number: int) -> Iterator[Tweet]:
        """The tweets of one pass through the file, ids suffixed from pass 2 on."""
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            tweet, reason = self._parse(raw)
            if tweet is None:
                self.skipped += 1
                level = logging.WARNING if pass_number == 1 else logging.DEBUG
                log.log(level, "%s:%d: skipped: %s", self.path, number, reason)
                continue
            if pass_number >= 2:
                tweet = {**tweet, "id": f"{tweet['id']}~{pass_number}"}
            yield tweet

    @staticmethod
    def _parse(raw: bytes) -> tuple[Tweet | None, str]:
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return None, "not UTF-8"
        except ValueError as err:
            return None, f"not JSON ({err.msg})" if hasattr(err, "msg") else "not JSON"
        except RecursionError:
            return None, "JSON nested too deeply"
        return _tweet_or_reason(obj)


class _Schedule:
    """Paces emits at ``rate`` per second on the monotonic clock (0 = no pacing)."""

    def __init__(self, rate: float, max_lag: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._max_lag = max_lag
        self._next_due = time.monotonic()

    def wait_turn(self, stop: threading.Event) -> bool:
        """Wait until the next emit is due; False if ``stop`` was set first."""
        if self._interval:
            delay = self._next_due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return False
            if delay < -self._max_lag:  # fell far behind: do not burst to catch up
                self._next_due = time.monotonic()
            self._next_due += self._interval
        return not stop.is_set()


# --- X API source ---------------------------------------------------------------------


class TwitterSource(tweepy.StreamingClient):
    """The X API v2 filtered stream, each tweet handed to ``emit``.

    tweepy reconnects with its own backoff (network errors: 0.25 s steps up to
    16 s; HTTP errors: 5 s doubling up to 320 s, at least 60 s after a 429);
    the constants below only configure it. The bearer token is never logged.
    """

    RULE_TAG = "covid19-live-stream"
    TWEET_FIELDS = ("created_at", "lang", "author_id")
    #: Consecutive failed connection attempts before tweepy gives up; it resets
    #: the count after each good connection. inf = keep trying until stopped.
    MAX_RETRIES = math.inf
    #: Rules requests (get/add/delete) wait out a rate limit instead of failing.
    WAIT_ON_RATE_LIMIT = True
    #: Bytes per socket read: tweepy's default, about half a tweet (low latency).
    CHUNK_SIZE = 512
    #: HTTP statuses after which retrying cannot help.
    FATAL_STATUSES = (401, 403)

    def __init__(self, bearer_token: str, emit: Emit, **kwargs: Any) -> None:
        kwargs.setdefault("max_retries", self.MAX_RETRIES)
        kwargs.setdefault("wait_on_rate_limit", self.WAIT_ON_RATE_LIMIT)
        kwargs.setdefault("chunk_size", self.CHUNK_SIZE)
        super().__init__(bearer_token, **kwargs)
        self._emit = emit
        #: tweets handed to emit
        self.received = 0
        #: the HTTP status that made the stream stop for good, if any
        self.fatal_status: int | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} running={self.running}>"

    # -- rules

    def sync_rules(self, wanted: Sequence[str]) -> None:
        """Make the stream's rules tagged :attr:`RULE_TAG` exactly ``wanted``.

        Adds the wanted rules that are missing, deletes rules carrying our tag
        that are no longer wanted, and never touches rules with other tags.
        Raises tweepy.TweepyException (or a requests error) when the X API
        refuses or cannot be reached.
        """
        wanted = list(dict.fromkeys(wanted))
        current = list(self.get_rules().data or [])
        ours = [rule for rule in current if rule.tag == self.RULE_TAG]
        values = {rule.value: rule for rule in current}

        stale = [rule for rule in ours if rule.value not in wanted]
        if stale:
            self.delete_rules([rule.id for rule in stale])
            log.info("deleted %d stale stream rule(s): %s",
                     len(stale), "; ".join(rule.value for rule in stale))

        for value in wanted:
            rule = values.get(value)
            if rule is not None and rule.tag != self.RULE_TAG:
                log.info("stream rule %r already exists with tag %r; leaving it as it is",
                         value, rule.tag)
        missing = [value for value in wanted if value not in values]
        if missing:
            response = self.add_rules(
                [tweepy.StreamRule(value, tag=self.RULE_TAG) for value in missing]
            )
            errors = getattr(response, "errors", None)
            if errors:
                log.error("the X API rejected stream rule(s): %s", _describe_errors(errors))
            log.info("added %d stream rule(s): %s", len(missing), "; ".join(missing))

        if not stale and not missing:
            log.info("stream rules already up to date: %s", "; ".join(wanted))

    # -- streaming

    def start(self) -> None:
        """Connect to the filtered stream and emit tweets until disconnected (blocks)."""
        self.filter(tweet_fields=list(self.TWEET_FIELDS), threaded=False)

    def on_connect(self) -> None:
        log.info("connected to the X API filtered stream")

    def on_data(self, raw_data: bytes | str) -> None:
        """Parse one stream message and emit its tweet; bad messages are logged and skipped."""
        try:
            payload = json.loads(raw_data)
        except (ValueError, RecursionError):
            log.warning("ignoring a stream message that is not JSON (%d bytes)", len(raw_data))
            return
        tweet, reason = _tweet_or_reason(payload)
        if tweet is None:
            log.warning("ignoring a stream message without a tweet: %s", reason)
            return
        self._emit(tweet)
        self.received += 1

    def on_connection_error(self) -> None:
        log.warning(
            "the connection to the X API stream failed or timed out; "
            "tweepy reconnects with backoff"
        )

    def on_request_error(self, status_code: int) -> None:
        if status_code in self.FATAL_STATUSES:
            self.fatal_status = status_code
            log.error(
                "the X API refused the stream (HTTP %d): the bearer token is invalid "
                "or your X API tier does not include the filtered stream; stopping",
                status_code,
            )
            self.disconnect()
        elif status_code in (420, 429):
            log.warning(
                "the X API stream is rate limited (HTTP %d): too many connections; "
                "tweepy waits at least 60 s before reconnecting", status_code,
            )
        else:
            log.warning(
                "the X API stream answered HTTP %d; tweepy retries with backoff", status_code
            )

    def on_disconnect(self) -> None:
        log.info("disconnected from the X API filtered stream")
