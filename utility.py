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
import fcntl
import itertools
import json
import logging
import math
import os
import select
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
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


class Journal:
    """The producer's durable record of the tweets it accepted, kept until the
    Spark job acknowledges them as stored.

    A folder with three files: ``tweets.jsonl`` (the wire lines, with their
    sequence numbers, appended), ``acked`` (the highest acknowledged sequence
    number) and ``source-id`` (this producer's id, made once). On start the
    unacknowledged lines are read back to be sent again, and numbering goes on
    where it stopped, so the job can tell a resent tweet from a new one.
    """

    LINES = "tweets.jsonl"
    ACKED = "acked"
    SOURCE_ID = "source-id"
    #: Rewrite the lines file without its acknowledged lines past this size.
    COMPACT_BYTES = 64 * 1024 * 1024

    def __init__(self, path: Path) -> None:
        """Open (or create) the journal at ``path``. Raises OSError if it cannot
        be used, including when another producer has it open."""
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = (self.path / "lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise OSError(f"journal {self.path} is in use by another stream.py") from None
        id_file = self.path / self.SOURCE_ID
        if not id_file.exists():
            _replace_text(id_file, uuid.uuid4().hex[:12])
        self.source = id_file.read_text().strip()
        acked_file = self.path / self.ACKED
        self.acked = int(acked_file.read_text()) if acked_file.exists() else 0
        #: ``(seq, line)`` of every journaled line not acknowledged yet, in order
        self.unacked: list[tuple[int, bytes]] = []
        last = self.acked
        lines_file = self.path / self.LINES
        if lines_file.exists():
            with lines_file.open("rb") as handle:
                for line in handle:
                    seq = _line_seq(line)
                    if seq is None:
                        continue  # a line torn by a crash mid-write
                    last = max(last, seq)
                    if seq > self.acked:
                        self.unacked.append((seq, line if line.endswith(b"\n") else line + b"\n"))
        self.next_seq = last + 1
        self._file = lines_file.open("ab")

    def append(self, line: bytes) -> None:
        """Record one wire line (buffered: :meth:`flush` makes it reach the OS)."""
        self._file.write(line)

    def flush(self) -> None:
        self._file.flush()

    def ack(self, seq: int, unacked: Iterable[bytes]) -> None:
        """Remember that everything up to ``seq`` is stored; ``unacked`` (the
        lines after it) are what a compaction keeps."""
        if seq <= self.acked:
            return
        self.acked = seq
        _replace_text(self.path / self.ACKED, str(seq))
        if self._file.tell() > self.COMPACT_BYTES:
            self._file.close()
            tmp = self.path / (self.LINES + ".tmp")
            with tmp.open("wb") as handle:
                handle.writelines(unacked)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path / self.LINES)
            self._file = (self.path / self.LINES).open("ab")

    def close(self) -> None:
        """Flush and fsync: what was accepted survives for the next start."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._lock.close()  # releases the flock


def _line_seq(line: bytes) -> int | None:
    try:
        seq = json.loads(line).get("seq")
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) else None


def _replace_text(path: Path, text: str) -> None:
    """Write ``path`` atomically (a crash leaves the old or the new content)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class TweetServer:
    """A TCP server that feeds one consumer at a time with newline-delimited JSON tweets.

    Typical use::

        server = TweetServer("127.0.0.1", 5555, buffer_size=10_000)
        server.start()
        server.put({"id": "1", "text": "hello"})   # never blocks
        server.wait_until_drained(timeout=None)    # True once a consumer got it all
        server.close()

    Each accepted tweet gets a sequence number and this producer's source id
    (wire fields ``seq`` and ``src``). Without ``ack_port`` a tweet is done once
    written to a consumer. With ``ack_port`` the server also listens there for
    the Spark job's ``ack``/``resend`` lines (:mod:`transform`): a tweet is kept,
    and sent again to the next consumer, until it is acknowledged as stored;
    with a ``journal`` it is kept on disk too, across restarts.

    At most ``buffer_size`` tweets are held (waiting or unacknowledged); past
    that, new tweets are refused and counted in :attr:`dropped`, so an accepted
    tweet is never dropped.
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

    def __init__(
        self,
        host: str,
        port: int,
        buffer_size: int,
        *,
        ack_port: int | None = None,
        journal: Journal | None = None,
    ) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self.host = host
        self.port = port
        self.ack_port = ack_port
        self.buffer_size = buffer_size
        self.journal = journal
        self.source = journal.source if journal else uuid.uuid4().hex[:12]
        #: tweets written to a consumer socket (resends included)
        self.sent = 0
        #: tweets refused because the buffer was full
        self.dropped = 0
        #: consumers accepted so far
        self.connections = 0
        #: tweets acknowledged as stored by the Spark job
        self.acked = 0
        # (seq, line) of every tweet held, in order of their consecutive seqs; those
        # before _cursor were written to the current consumer (and wait for an ack)
        self._held: deque[tuple[int, bytes]] = deque(journal.unacked if journal else ())
        self._next_seq = journal.next_seq if journal else 1
        self._cursor = self._first_held()  # seq of the next line to write
        self._rewinds = 0  # resend requests so far
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._listener: socket.socket | None = None
        self._ack_listener: socket.socket | None = None
        self._consumer: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._last_drop_warning = -math.inf
        if self._held:
            log.info("journal %s: %d unacknowledged tweets will be sent again",
                     journal.path if journal else "", len(self._held))

    # -- life cycle

    def start(self) -> None:
        """Bind and listen (and the ack port, if any), then start serving.

        Raises OSError (``socket.gaierror`` included) when an address cannot be
        bound; nothing is left open in that case.
        """
        if self._listener is not None:
            raise RuntimeError("TweetServer already started")
        self._listener = _listen(self.host, self.port, self.LISTEN_BACKLOG)
        if self.ack_port is not None:
            try:
                self._ack_listener = _listen(self.host, self.ack_port, self.LISTEN_BACKLOG)
            except OSError:
                self._listener.close()
                self._listener = None
                raise
            self._spawn(self._serve_acks, "ack-listener")
        self._spawn(self._serve, "tweet-server")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound (the real port when 0 was asked for)."""
        if self._listener is None:
            raise RuntimeError("TweetServer not started")
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def ack_address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the ack listener, or None without one."""
        if self._ack_listener is None:
            return None
        host, port = self._ack_listener.getsockname()[:2]
        return host, port

    def close(self) -> None:
        """Stop serving: close the consumer connection and the listening sockets.

        Tweets still held are kept by the journal, if there is one (see
        :attr:`pending`). Safe to call twice.
        """
        with self._cond:
            if self._closing.is_set():
                return
            self._closing.set()
            consumer = self._consumer
            self._cond.notify_all()
        for sock in (consumer, self._listener, self._ack_listener):
            if sock is not None:
                with contextlib.suppress(OSError):  # already gone
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept/sendall
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(self.CLOSE_TIMEOUT)
        for sock in (self._listener, self._ack_listener):
            if sock is not None:
                sock.close()
        if self.journal is not None:
            with self._cond:
                self.journal.close()

    # -- producer side

    def put(self, tweet: Tweet) -> bool:
        """Accept one tweet for the consumer; never blocks, thread-safe.

        Returns False (and counts it in :attr:`dropped`) when the buffer is
        full. Raises TypeError or ValueError if the tweet cannot be encoded.
        """
        warn_total = None
        with self._cond:
            accepted = len(self._held) < self.buffer_size
            if not accepted:
                self.dropped += 1
                warn_total = self._drop_warning_due()
            else:
                seq = self._next_seq
                line = transform.encode_tweet({**tweet, "seq": seq, "src": self.source})
                self._next_seq += 1
                if self.journal is not None:
                    self.journal.append(line)
                self._held.append((seq, line))
                self._cond.notify_all()
        if warn_total is not None:
            log.warning(
                "tweet buffer full (%d held): refusing new tweets until the job catches "
                "up; %d refused so far", self.buffer_size, warn_total,
            )
        return accepted

    @property
    def pending(self) -> int:
        """Tweets held: not yet written to a consumer, or (with acks) not yet acknowledged."""
        with self._cond:
            return len(self._held)

    def wait_until_drained(self, timeout: float | None = None) -> bool:
        """Block until every tweet accepted so far is done: written to a
        consumer or, with acks, acknowledged as stored.

        Returns True when drained, False when ``timeout`` seconds passed first
        or the server was closed with tweets still pending.
        """
        with self._cond:
            self._cond.wait_for(lambda: not self._held or self._closing.is_set(), timeout)
            return not self._held

    # -- acknowledgements

    def ack(self, seq: int) -> None:
        """Forget the tweets up to ``seq``: the job has stored them."""
        with self._cond:
            forgotten = 0
            while self._held and self._held[0][0] <= seq:
                self._held.popleft()
                forgotten += 1
            self._cursor = max(self._cursor, self._first_held())
            self.acked += forgotten
            if self.journal is not None:
                self.journal.ack(seq, (line for _, line in self._held))
            self._cond.notify_all()

    def resend_from(self, seq: int) -> None:
        """Write the held tweets from ``seq`` on again (the job saw a gap)."""
        with self._cond:
            self._cursor = max(min(self._cursor, seq), self._first_held())
            self._rewinds += 1
            self._cond.notify_all()
        log.info("the job asked for the tweets from seq %d again", seq)

    def _serve_acks(self) -> None:
        assert self._ack_listener is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._ack_listener.accept()
            except OSError:
                if self._closing.is_set():
                    return
                self._closing.wait(self.ACCEPT_RETRY_SECONDS)
                continue
            self._spawn(lambda conn=conn: self._read_acks(conn), "ack-reader")

    def _read_acks(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                control = transform.parse_control_line(line)
                if control is None:
                    log.warning("ignoring a line on the ack port that is no ack")
                    continue
                verb, source, seq = control
                if source != self.source:
                    continue  # for another producer
                if verb == "ack":
                    self.ack(seq)
                else:
                    self.resend_from(seq)

    # -- sender thread

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
                    self._cursor = self._first_held()  # it gets every unacknowledged tweet
                log.info("consumer connected from %s:%d", peer[0], peer[1])
                try:
                    self._feed(conn)
                finally:
                    with self._cond:
                        self._consumer = None

    def _first_held(self) -> int:
        """Seq of the oldest tweet held, or of the next one to come (lock held)."""
        return self._held[0][0] if self._held else self._next_seq

    def _unsent(self) -> bool:
        return bool(self._held) and self._held[-1][0] >= self._cursor

    def _feed(self, conn: socket.socket) -> None:
        """Write held lines to ``conn`` until it disconnects or we close."""
        acks = self._ack_listener is not None
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._unsent() or self._closing.is_set(), self.IDLE_CHECK_SECONDS
                )
                if self._closing.is_set():
                    return
                start = self._cursor - self._first_held()
                batch = [line for _, line in itertools.islice(
                    self._held, start, start + self.SEND_BATCH_LINES)]
                after = self._cursor + len(batch)
                rewinds = self._rewinds
                if self.journal is not None and batch:
                    self.journal.flush()  # written ahead: what is sent is on record
            try:
                if peer_has_closed(conn):
                    raise ConnectionResetError("consumer closed the connection")
                if batch:
                    conn.sendall(b"".join(batch))
            except OSError:  # BrokenPipeError, ConnectionResetError, ...
                if not self._closing.is_set():
                    log.info("consumer disconnected; holding tweets until one reconnects")
                return
            with self._cond:
                self.sent += len(batch)
                if self._rewinds == rewinds:  # no resend request meanwhile
                    self._cursor = max(self._cursor, after)
                if not acks:  # written is done
                    while self._held and self._held[0][0] < after:
                        self._held.popleft()
                self._cond.notify_all()


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(sockaddr)
        listener.listen(backlog)
    except OSError:
        listener.close()
        raise
    return listener


def peer_has_closed(sock: socket.socket) -> bool:
    """True when the other end has closed ``sock``; never waits.

    For connections where the other end never writes (the tweet consumer, the
    producer's ack port): checked before each write, so that nothing is written
    into a connection already closed, where it would be lost without an error.
    Anything the other end does send is read and ignored.
    """
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


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
