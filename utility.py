"""The socket the producer serves: how tweets reach Spark.

:class:`TweetServer` is the TCP socket Spark's receiver connects to. Sources
(:mod:`sources`) hand it tweets with :meth:`TweetServer.put`, which numbers
them and queues them in the :class:`journal.Journal`; once a tweet is on disk
a sender thread writes it to the consumer, one JSON object per line, straight
from the journal's file. A tweet is kept until the Spark job acknowledges it
as stored on the control port (:mod:`control`), and sent again to the next
consumer until then.

``stream.py`` wires one source to one server.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
from typing import Any

import control
from journal import Journal

log = logging.getLogger(__name__)


class TweetServer:
    """A TCP server that feeds one consumer at a time with the journal's tweets.

    Typical use::

        server = TweetServer("127.0.0.1", 5555, Journal(path), ack_port=5556, secret=secret)
        server.start()
        server.put({"id": "1", "text": "hello"})   # never waits for the disk or a consumer
        server.wait_until_drained(timeout=None)    # True once the job has stored it all
        server.close()

    Each tweet gets a sequence number and this producer's source id (wire
    fields ``seq`` and ``src``). With ``ack_port`` the server listens there for
    the job's authenticated ``ack``/``resend`` lines: a tweet is sent again to
    each new consumer until it is acknowledged. An ``ack`` above the highest
    seq sent is refused, and a ``resend`` rewinds at most once every
    RESEND_MIN_SECONDS. Without ``ack_port`` (tests, tools) a tweet is done
    once written to a consumer.

    A consumer that does not read for SEND_TIMEOUT seconds is dropped; what it
    was sent and did not acknowledge goes to the next one.
    """

    #: Most bytes of the journal sent in one go.
    SEND_CHUNK_BYTES = 256 * 1024
    #: A consumer that takes nothing for this long is dropped.
    SEND_TIMEOUT = 30.0
    #: How often an idle sender checks whether its consumer has gone away.
    IDLE_CHECK_SECONDS = 0.5
    #: A resend request rewinds the sender at most once per this many seconds.
    RESEND_MIN_SECONDS = 1.0
    #: At most one warning about refused control lines per this many seconds.
    REFUSED_WARNING_SECONDS = 60.0
    #: Pause after a failed ``accept`` (for example too many open files).
    ACCEPT_RETRY_SECONDS = 1.0
    #: How long :meth:`close` waits for the sender thread to finish.
    CLOSE_TIMEOUT = 5.0
    LISTEN_BACKLOG = 5

    def __init__(
        self,
        host: str,
        port: int,
        journal: Journal,
        *,
        ack_port: int | None = None,
        secret: bytes | None = None,
    ) -> None:
        if ack_port is not None and secret is None:
            raise ValueError("a control port needs the control secret")
        self.host = host
        self.port = port
        self.ack_port = ack_port
        self.journal = journal
        self.source = journal.source
        self._secret = secret
        #: tweets written to a consumer socket (resends included)
        self.sent = 0
        #: consumers accepted so far
        self.connections = 0
        #: tweets acknowledged as stored by the Spark job, since start
        self.acked = 0
        #: control lines refused: acks beyond what was sent
        self.refused_acks = 0
        # what the journal holds at start may have been sent before a restart
        self._highest_sent = journal.committed
        self._sending_end = 0  # the seq after the spans being written right now, if any
        self._cond = threading.Condition()
        self._cursor = journal.first_held()  # seq of the next tweet to write
        self._rewinds = 0  # resend requests that rewound the sender
        self._last_rewind = -math.inf
        self._last_refused_warning = -math.inf
        self._closing = threading.Event()
        self._listener: socket.socket | None = None
        self._control: control.ControlServer | None = None
        self._consumer: socket.socket | None = None
        self._sender: threading.Thread | None = None
        journal.on_commit = self._committed
        if journal.held:
            log.info("journal %s: %d unacknowledged tweets will be sent again", journal.path,
                     journal.held)

    # -- life cycle

    def start(self) -> None:
        """Bind and listen (and the control port, if any), then start serving.

        Raises OSError (``socket.gaierror`` included) when an address cannot be
        bound; nothing is left open in that case.
        """
        if self._listener is not None:
            raise RuntimeError("TweetServer already started")
        self._listener = _listen(self.host, self.port, self.LISTEN_BACKLOG)
        if self.ack_port is not None:
            assert self._secret is not None
            try:
                control_listener = _listen(self.host, self.ack_port, self.LISTEN_BACKLOG)
            except OSError:
                self._listener.close()
                self._listener = None
                raise
            self._control = control.ControlServer(control_listener, self._secret, self.source,
                                                  self.ack, self.resend_from)
            self._control.start()
        self._sender = threading.Thread(target=self._serve, name="tweet-server", daemon=True)
        self._sender.start()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound (the real port when 0 was asked for)."""
        if self._listener is None:
            raise RuntimeError("TweetServer not started")
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def ack_address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the control port, or None without one."""
        if self._control is None:
            return None
        host, port = self._control.listener.getsockname()[:2]
        return host, port

    def close(self) -> None:
        """Stop serving, then close the journal (what was put is written first).

        Tweets not acknowledged stay in the journal for the next start. Safe to
        call twice.
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
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept/send
        if self._control is not None:
            self._control.close()
            with contextlib.suppress(OSError):
                self._control.listener.shutdown(socket.SHUT_RDWR)
        if self._sender is not None:
            self._sender.join(self.CLOSE_TIMEOUT)
        for listener in (self._listener, self._control.listener if self._control else None):
            if listener is not None:
                listener.close()
        self.journal.close()

    # -- producer side

    def put(self, tweet: dict[str, Any], position: Any = None) -> bool:
        """Accept one tweet for the consumer; never waits for the disk. Thread-safe.

        ``position``: where the source stands after it (:meth:`journal.Journal.put`).
        Returns False when the journal refuses it (full, or the disk is); see
        :attr:`dropped`. Raises TypeError or ValueError if it cannot be encoded.
        """
        return self.journal.put(tweet, position)

    def sync(self, timeout: float | None = None) -> None:
        """Wait until every tweet put so far is on disk (accepted). A source that can
        resume (Jetstream's cursor, the replay position) calls this before it
        records how far it got. Raises OSError when that does not happen in
        ``timeout`` seconds (a full disk, say)."""
        if not self.journal.wait_committed(timeout=timeout):
            raise OSError(f"the journal {self.journal.path} has not written everything put: "
                          f"{self.journal.disk_error or 'closed or too slow'}")

    @property
    def dropped(self) -> int:
        """Tweets refused: the journal was full or the disk was."""
        return self.journal.refused_full + self.journal.refused_disk

    @property
    def pending(self) -> int:
        """Tweets held: not yet acknowledged (or, without acks, not yet written)."""
        return self.journal.held

    def wait_until_drained(self, timeout: float | None = None) -> bool:
        """Block until every tweet put so far is done: acknowledged as stored (or,
        without acks, written to a consumer). False when ``timeout`` seconds passed
        first or the server was closed with tweets still held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.journal.held and not self._closing.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(self.IDLE_CHECK_SECONDS if left is None
                                else min(left, self.IDLE_CHECK_SECONDS))
            return not self.journal.held

    def _committed(self) -> None:
        """The journal wrote more: wake the sender."""
        with self._cond:
            self._cond.notify_all()

    # -- the control port's callbacks

    def ack(self, seq: int) -> bool:
        """Forget the tweets up to ``seq``: the job has stored them. Refused (False)
        when ``seq`` is beyond the highest seq sent: no job can have stored it."""
        with self._cond:
            highest, before = self._highest_sent, self.journal.held
            refused = seq > highest
            if refused:
                self.refused_acks += 1
                now = time.monotonic()
                warn = now - self._last_refused_warning >= self.REFUSED_WARNING_SECONDS
                if warn:
                    self._last_refused_warning = now
        if refused:
            if warn:
                log.warning("refused an ack up to seq %d: only seqs up to %d were sent (%d "
                            "refused so far)", seq, highest, self.refused_acks)
            return False
        try:
            self.journal.ack(seq)
        except OSError as err:  # the next batch repeats the ack
            log.warning("cannot record an ack in the journal %s: %s", self.journal.path,
                        err.strerror or err)
            return False
        with self._cond:
            self.acked += max(0, before - self.journal.held)
            self._cursor = max(self._cursor, self.journal.first_held())
            self._cond.notify_all()
        return True

    def resend_from(self, seq: int) -> tuple[int, int]:
        """Send the held tweets from ``seq`` on again (the job saw a gap), at most
        once per RESEND_MIN_SECONDS. The answer is ``(the first seq from ``seq`` on
        that it holds, the next seq)``: the job skips what lies before the first
        (acknowledged earlier, or lost to damage in the journal)."""
        with self._cond:
            # the first seq from ``seq`` on that it still holds: one acknowledged, or lost
            # to a damaged record, is gone
            first = self.journal.next_present(max(seq, self.journal.first_held()))
            now = time.monotonic()
            target = first
            # sent, or being sent: the sender may not have moved its cursor past it yet
            sent_end = max(self._cursor, self._sending_end)
            if now - self._last_rewind >= self.RESEND_MIN_SECONDS and target < sent_end:
                self._last_rewind = now
                self._cursor = target
                self._rewinds += 1
                self._cond.notify_all()
                log.info("the job asked for the tweets from seq %d again", target)
            return first, self.journal.next_seq

    # -- sender thread

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
                    # it gets every tweet not acknowledged
                    self._cursor = self.journal.first_held()
                log.info("consumer connected from %s:%d", peer[0], peer[1])
                try:
                    self._feed(conn)
                finally:
                    with self._cond:
                        self._consumer = None
                        self._sending_end = 0

    def _feed(self, conn: socket.socket) -> None:
        """Write the journal's tweets to ``conn`` until it disconnects, stalls or we close."""
        conn.settimeout(self.SEND_TIMEOUT)
        acks = self._control is not None
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._cursor <= self.journal.committed or self._closing.is_set(),
                    self.IDLE_CHECK_SECONDS)
                if self._closing.is_set():
                    return
                first, rewinds = self._cursor, self._rewinds
            spans = self.journal.spans(first, self.journal.committed, self.SEND_CHUNK_BYTES)
            if spans:
                with self._cond:  # before the send: the job may ack as soon as it reads
                    self._highest_sent = max(self._highest_sent, spans[-1].last)
                    self._sending_end = spans[-1].last + 1
            try:
                if control.peer_closed(conn):
                    raise ConnectionResetError("consumer closed the connection")
                for span in spans:
                    try:
                        with span.path.open("rb") as segment:
                            conn.sendfile(segment, span.offset, span.length)
                    except FileNotFoundError:
                        continue  # acknowledged meanwhile: nothing to send
            except TimeoutError:
                log.warning("consumer took nothing for %g s: dropped; what it was sent goes "
                            "to the next consumer", self.SEND_TIMEOUT)
                return
            except OSError:  # BrokenPipeError, ConnectionResetError, ...
                if not self._closing.is_set():
                    log.info("consumer disconnected; holding tweets until one reconnects")
                return
            if not spans:  # every seq from the cursor on was lost to damage: step over
                with self._cond:
                    if self._rewinds == rewinds:
                        self._cursor = max(self._cursor,
                                           self.journal.next_present(first))
                    self._cond.wait(self.IDLE_CHECK_SECONDS)
                continue
            last = spans[-1].last
            with self._cond:
                self.sent += sum(span.last - span.first + 1 for span in spans)
                self._sending_end = 0
                if self._rewinds == rewinds:  # no resend request meanwhile
                    self._cursor = max(self._cursor, last + 1)
            if not acks:  # written is done
                self.journal.ack(last)
                with self._cond:
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
