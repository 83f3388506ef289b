"""The socket the producer serves: how tweets reach Spark.

* :class:`TweetServer` is the TCP socket Spark's receiver connects to. Sources
  (:mod:`sources`) hand it tweets with :meth:`TweetServer.put`; a sender
  thread writes them to the consumer, one JSON object per line
  (:func:`transform.encode_tweet`), holding them while no consumer is connected.
* :class:`Journal` keeps every accepted tweet on disk until the Spark job
  acknowledges it as stored.

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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import transform

log = logging.getLogger(__name__)



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
            write_atomically(id_file, uuid.uuid4().hex[:12])
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

    def sync(self) -> None:
        """Flush and fsync: every line appended so far survives a power cut."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())

    def ack(self, seq: int, unacked: Iterable[bytes]) -> None:
        """Remember that everything up to ``seq`` is stored; ``unacked`` (the
        lines after it) are what a compaction keeps."""
        if seq <= self.acked:
            return
        self.acked = seq
        write_atomically(self.path / self.ACKED, str(seq))
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


def write_atomically(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a crash or a full disk leaves the old
    content or the new, never a mix. Raises OSError (the old content stays)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


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

    def put(self, tweet: dict[str, Any]) -> bool:
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

    def sync(self) -> None:
        """Make every tweet accepted so far durable in the journal (flush and fsync).

        A source that can resume (Jetstream's cursor) calls this before it
        records how far it got. Raises OSError when the disk refuses.
        """
        with self._cond:
            if self.journal is not None:
                self.journal.sync()

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
