"""The socket the producer serves: how tweets reach Spark.

:class:`TweetServer` is the TCP socket Spark's receiver connects to. Sources
(:mod:`sources`) hand it tweets with :meth:`TweetServer.put`, which numbers
them and queues them in the :class:`journal.Journal`; once a tweet is on disk
a sender thread writes it to the consumer, one JSON object per line, straight
from the journal's file. A tweet is kept until the Spark job acknowledges it
as stored on the control port (:mod:`control`), and sent again to the next
consumer until then.

Its two working parts: :class:`Sender`, the thread that serves a consumer
(accepts it, feeds it with ``sendfile``), and :class:`SendCursor`, the resend
bookkeeping (where the sender stands, what the job's ``ack`` and ``resend``
lines do to it).

``stream.py`` wires one source to one server.
"""

from __future__ import annotations

import contextlib
import logging
import math
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import control
import control_reads
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
    each new consumer until it is acknowledged. The same port serves range reads
    of the journal (:mod:`control_reads`), which the structured engine reads
    instead of the socket. An ``ack`` above the highest
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
    #: Pause after finding only records lost to damage from the sender's position on.
    IDLE_CHECK_SECONDS = 0.5
    #: A resend request rewinds the sender at most once per this many seconds.
    RESEND_MIN_SECONDS = 1.0
    #: At most one warning about refused control lines per this many seconds.
    REFUSED_WARNING_SECONDS = 60.0
    #: Pause after a failed ``accept`` (for example too many open files).
    ACCEPT_RETRY_SECONDS = 1.0
    #: How long :meth:`close` waits for the sender thread to finish.
    CLOSE_TIMEOUT = 5.0
    #: A source paused by a full journal goes on once this share of it is free again:
    #: it then puts a quarter of the journal at a go, rather than a post or two after
    #: each acknowledgement (each resumption costs a Jetstream source a reconnect).
    RESUME_SHARE = 0.25
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
        self._cursor = SendCursor(journal, resend_min_seconds=self.RESEND_MIN_SECONDS,
                                  refused_warning_seconds=self.REFUSED_WARNING_SECONDS)
        self._closing = threading.Event()
        self._listener: socket.socket | None = None
        self._control: control.ControlServer | None = None
        self._sender: Sender | None = None
        journal.on_commit = self._cursor.wake  # the journal wrote more: wake the sender
        if journal.held:
            log.info("journal %s: %d unacknowledged tweets will be sent again", journal.path,
                     journal.held)

    # -- life cycle

    def start(self) -> None:
        """Bind and listen (and the control port, if any), then start serving.

        Raises :class:`ListenError` naming the port when an address cannot be
        bound (or resolved); nothing is left open in that case.
        """
        if self._listener is not None:
            raise RuntimeError("TweetServer already started")
        self._listener = _listen(self.host, self.port, self.LISTEN_BACKLOG, "posts")
        if self.ack_port is not None:
            assert self._secret is not None
            try:
                control_listener = _listen(self.host, self.ack_port, self.LISTEN_BACKLOG,
                                           "control")
            except OSError:
                self._listener.close()
                self._listener = None
                raise
            self._control = control.ControlServer(
                control_listener, self._secret, self.source, self.ack, self.resend_from,
                control_reads.journal_requests(self.journal, self._cursor.served))
            self._control.start()
        self._sender = Sender(
            self._listener, self.journal, self._cursor, self._closing,
            acks=self._control is not None, chunk_bytes=self.SEND_CHUNK_BYTES,
            send_timeout=self.SEND_TIMEOUT, idle_check_seconds=self.IDLE_CHECK_SECONDS,
            accept_retry_seconds=self.ACCEPT_RETRY_SECONDS)
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
        with self._cursor.changed:
            if self._closing.is_set():
                return
            self._closing.set()
            consumer = self._sender.consumer if self._sender is not None else None
            self._cursor.wake()
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
        if self._sender is None or not self._sender.is_alive():
            self._cursor.close()
        self.journal.close()

    # -- producer side

    def put(self, tweet: dict[str, Any], position: Any = None, *,
            will_retry: bool = False) -> bool:
        """Accept one tweet for the consumer; never waits for the disk. Thread-safe.

        ``position``: where the source stands after it (:meth:`journal.Journal.put`).
        Returns False when the journal refuses it (full, or the disk is); see
        :attr:`dropped`. A source that can give the tweet again passes
        ``will_retry``, waits (:meth:`wait_for_room`) and offers it again: its
        refusals lose nothing and are not counted. Raises TypeError or
        ValueError if it cannot be encoded.
        """
        return self.journal.put(tweet, position, will_retry=will_retry)

    def put_many(self, tweets: Sequence[dict[str, Any]],
                 positions: Sequence[Any] | None = None, *, will_retry: bool = False) -> int:
        """:meth:`put` for a list, in order, cheaper a tweet (one trip through the
        journal's lock); ``positions``, if any, one a tweet. Returns how many were
        accepted: a prefix of ``tweets``, all of them unless the journal is full
        or the disk is (:meth:`journal.Journal.put_many`, which also says what
        ``will_retry`` changes). Raises TypeError or ValueError, with none
        accepted, if one cannot be encoded."""
        return self.journal.put_many(tweets, positions, will_retry=will_retry)

    def wait_for_room(self, stop: threading.Event, timeout: float | None = None) -> bool:
        """After a refusal: wait until the journal takes posts again, with
        RESUME_SHARE of JOURNAL_MAX_BYTES free (and at least the refused record's
        size) and the disk writing. True then; False once ``stop`` is set (the
        caller calls :meth:`wake` then: stream.py does), the server closes, or
        ``timeout`` seconds passed. Woken by the job's acknowledgements: no poll."""
        journal = self.journal
        size = max(int(journal.max_bytes * self.RESUME_SHARE), journal.wanted_bytes)
        return journal.wait_for_room(size, timeout, give_up=stop.is_set)

    def wake(self) -> None:
        """Wake every :meth:`wait_for_room` to look at its ``stop`` again."""
        self.journal.wake()

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
        with self._cursor.changed:  # notified on each ack, and when closing
            self._cursor.changed.wait_for(
                lambda: not self.journal.held or self._closing.is_set(), timeout)
            return not self.journal.held

    # -- counters

    @property
    def sent(self) -> int:
        """Tweets written to a consumer socket (resends included)."""
        return self._cursor.sent

    @property
    def connections(self) -> int:
        """Consumers accepted so far."""
        return self._sender.connections if self._sender is not None else 0

    @property
    def acked(self) -> int:
        """Tweets acknowledged as stored by the Spark job, since start."""
        return self._cursor.acked

    @property
    def refused_acks(self) -> int:
        """Control lines refused: acks beyond what was sent."""
        return self._cursor.refused_acks

    # -- the control port's callbacks

    def ack(self, seq: int) -> bool:
        """Forget the tweets up to ``seq``: the job has stored them. Refused (False)
        when ``seq`` is beyond the highest seq sent: no job can have stored it."""
        return self._cursor.ack(seq)

    def resend_from(self, seq: int) -> tuple[int, int]:
        """Send the held tweets from ``seq`` on again (the job saw a gap), at most
        once per RESEND_MIN_SECONDS. The answer is ``(the first seq from ``seq`` on
        that it holds, the next seq)``: the job skips what lies before the first
        (acknowledged earlier, or lost to damage in the journal)."""
        return self._cursor.resend_from(seq)


class SendCursor:
    """The resend bookkeeping: where the sender stands in the journal, and what the
    job's ``ack`` and ``resend`` lines do to it.

    ``changed`` guards it all (its lock is reentrant): it is notified when the
    cursor is moved back, tweets are acknowledged, or the journal wrote more
    (:meth:`wake`). The sender, which waits on its consumer's socket as well,
    is woken through :attr:`wakeup`, a socket that gets a byte from
    :meth:`wake` (once per commit: the journal commits a window at a time).
    """

    def __init__(self, journal: Journal, *, resend_min_seconds: float,
                 refused_warning_seconds: float) -> None:
        self.journal = journal
        self.resend_min_seconds = resend_min_seconds
        self.refused_warning_seconds = refused_warning_seconds
        self.changed = threading.Condition()
        self.position = journal.first_held()  # seq of the next tweet to write
        self.rewinds = 0  # resend requests that rewound the sender
        #: tweets written to a consumer socket (resends included)
        self.sent = 0
        #: tweets acknowledged as stored by the Spark job, since start
        self.acked = 0
        #: control lines refused: acks beyond what was sent
        self.refused_acks = 0
        # what the journal holds at start may have been sent before a restart
        self._highest_sent = journal.committed
        self._counted_to = journal.first_held()  # acks counted in :attr:`acked` up to here
        self._sending_end = 0  # the seq after the spans being written right now, if any
        self._last_rewind = -math.inf
        self._last_refused_warning = -math.inf
        #: readable once :meth:`wake` was called (the sender selects on it)
        self.wakeup, self._waker = socket.socketpair()
        for end in (self.wakeup, self._waker):
            end.setblocking(False)

    def wake(self) -> None:
        """Wake whoever waits on :attr:`changed` and the sender (the journal wrote
        more, the cursor moved back, the server closes)."""
        with self.changed:
            self.changed.notify_all()
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake is pending anyway
            self._waker.send(b"w")

    def take_wakes(self) -> None:
        """Empty :attr:`wakeup` (before checking whether there is work)."""
        with contextlib.suppress(BlockingIOError, OSError):
            while self.wakeup.recv(4096):
                pass

    def close(self) -> None:
        self.wakeup.close()
        self._waker.close()

    # -- the sender's moves

    def restart(self) -> None:
        """A new consumer: it gets every tweet not acknowledged."""
        with self.changed:
            self.position = self.journal.first_held()

    def writing(self, last: int) -> None:
        """The sender is about to write the tweets up to ``last`` (before the send: the
        job may ack as soon as it reads)."""
        with self.changed:
            self._highest_sent = max(self._highest_sent, last)
            self._sending_end = last + 1

    def written(self, count: int, last: int, rewinds: int) -> None:
        """``count`` tweets up to ``last`` were written, from a position taken when
        :attr:`rewinds` was ``rewinds``: move past them, unless a resend request
        moved the cursor meanwhile."""
        with self.changed:
            self.sent += count
            self._sending_end = 0
            if self.rewinds == rewinds:  # no resend request meanwhile
                self.position = max(self.position, last + 1)

    def step_over(self, first: int, rewinds: int) -> None:
        """Nothing from ``first`` on could be read (lost to damage): move to the next
        seq the journal holds, unless a resend request moved the cursor meanwhile."""
        with self.changed:
            if self.rewinds == rewinds:
                self.position = max(self.position, self.journal.next_present(first))

    def stopped(self) -> None:
        """The consumer is gone: nothing is being written."""
        with self.changed:
            self._sending_end = 0

    def served(self, count: int, last: int) -> None:
        """A range read on the control port (the structured engine's source) is about
        to be given ``count`` tweets, up to seq ``last``: they count as sent, and may be
        acknowledged."""
        with self.changed:
            self._highest_sent = max(self._highest_sent, last)
            self.sent += count

    # -- the control port's lines

    def ack(self, seq: int) -> bool:
        """Forget the tweets up to ``seq``: the job has stored them. Refused (False)
        when ``seq`` is beyond the highest seq sent: no job can have stored it."""
        with self.changed:
            highest = self._highest_sent
            refused = seq > highest
            if refused:
                self.refused_acks += 1
                now = time.monotonic()
                warn = now - self._last_refused_warning >= self.refused_warning_seconds
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
        with self.changed:
            # counted by seq, not by how many are held (tweets are journaled meanwhile),
            # and from where the last count stopped: two acks may cross (each control
            # connection has its thread), and each tweet is counted once
            first_held = self.journal.first_held()
            self.acked += max(0, first_held - self._counted_to)
            self._counted_to = max(self._counted_to, first_held)
            self.position = max(self.position, first_held)
            self.changed.notify_all()
        return True

    def resend_from(self, seq: int) -> tuple[int, int]:
        """Move the cursor back to ``seq`` (the job saw a gap), at most once per
        ``resend_min_seconds``; ``(the first seq from ``seq`` on that the journal
        holds, the next seq)``."""
        with self.changed:
            # the first seq from ``seq`` on that it still holds: one acknowledged, or lost
            # to a damaged record, is gone
            first = self.journal.next_present(max(seq, self.journal.first_held()))
            now = time.monotonic()
            target = first
            # sent, or being sent: the sender may not have moved its cursor past it yet
            sent_end = max(self.position, self._sending_end)
            if now - self._last_rewind >= self.resend_min_seconds and target < sent_end:
                self._last_rewind = now
                self.position = target
                self.rewinds += 1
                self.wake()
                log.info("the job asked for the tweets from seq %d again", target)
            return first, self.journal.next_seq


class Sender(threading.Thread):
    """The thread that serves consumers: accepts one at a time on ``listener`` and
    writes it the journal's tweets from the :class:`SendCursor` on, straight from
    the segment files (``sendfile``), until it goes or ``closing`` is set.

    Without ``acks`` (no control port) a tweet is acknowledged once written.
    """

    def __init__(self, listener: socket.socket, journal: Journal, cursor: SendCursor,
                 closing: threading.Event, *, acks: bool, chunk_bytes: int,
                 send_timeout: float, idle_check_seconds: float,
                 accept_retry_seconds: float) -> None:
        super().__init__(name="tweet-server", daemon=True)
        self.listener = listener
        self.journal = journal
        self.cursor = cursor
        self.closing = closing
        self.acks = acks
        self.chunk_bytes = chunk_bytes
        self.send_timeout = send_timeout
        self.idle_check_seconds = idle_check_seconds
        self.accept_retry_seconds = accept_retry_seconds
        #: the consumer being fed, if any (set and cleared under ``cursor.changed``)
        self.consumer: socket.socket | None = None
        #: consumers accepted so far
        self.connections = 0

    def run(self) -> None:
        """Accept one consumer at a time and feed it until it goes or we close."""
        changed = self.cursor.changed
        while not self.closing.is_set():
            try:
                conn, peer = self.listener.accept()
            except OSError as err:
                if self.closing.is_set():
                    return
                log.warning("accepting a consumer failed: %s", err)
                self.closing.wait(self.accept_retry_seconds)
                continue
            with conn:
                with changed:
                    if self.closing.is_set():
                        return
                    self.consumer = conn
                    self.connections += 1
                    self.cursor.restart()
                log.info("consumer connected from %s:%d", peer[0], peer[1])
                try:
                    self._feed(conn)
                except Exception:  # a fault here must not end the sending for good
                    log.exception("sending to the consumer from %s:%d failed; dropped it: the "
                                  "next consumer gets every post not acknowledged", *peer[:2])
                finally:
                    with changed:
                        self.consumer = None
                        self.cursor.stopped()

    def _feed(self, conn: socket.socket) -> None:
        """Write the journal's tweets to ``conn`` until it disconnects, stalls or we close."""
        conn.settimeout(self.send_timeout)
        with selectors.DefaultSelector() as selector:  # not select(): fds from 1024 on
            selector.register(conn, selectors.EVENT_READ)
            selector.register(self.cursor.wakeup, selectors.EVENT_READ)
            self._feed_until_gone(conn, selector)

    def _feed_until_gone(self, conn: socket.socket, selector: selectors.BaseSelector) -> None:
        """:meth:`_feed`'s loop; ``selector`` watches ``conn`` and the cursor's wakeup."""
        cursor, changed = self.cursor, self.cursor.changed
        while True:
            cursor.take_wakes()  # before the check: a wake after it is seen by select
            with changed:
                if self.closing.is_set():
                    return
                idle = cursor.position > self.journal.committed
                first, rewinds = cursor.position, cursor.rewinds
            if idle:  # sleep until the journal commits more, the cursor moves or we close,
                # or the consumer goes away: no timeout, nothing polls
                ready = selector.select()
                if any(key.fileobj is conn for key, _ in ready) and _consumer_gone(conn):
                    if not self.closing.is_set():
                        log.info("consumer disconnected; holding tweets until one reconnects")
                    return
                continue
            spans = self.journal.spans(first, self.journal.committed, self.chunk_bytes)
            if spans:
                cursor.writing(spans[-1].last)
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
                            "to the next consumer", self.send_timeout)
                return
            except OSError:  # BrokenPipeError, ConnectionResetError, ...
                if not self.closing.is_set():
                    log.info("consumer disconnected; holding tweets until one reconnects")
                return
            if not spans:  # every seq from the cursor on was lost to damage: step over
                with changed:
                    cursor.step_over(first, rewinds)
                    changed.wait(self.idle_check_seconds)
                continue
            last = spans[-1].last
            cursor.written(sum(span.last - span.first + 1 for span in spans), last, rewinds)
            if not self.acks:  # written is done
                self.journal.ack(last)
                cursor.wake()


def _consumer_gone(conn: socket.socket) -> bool:
    """``conn`` is readable: True when the consumer closed it (or it was reset). A
    consumer sends nothing on the tweet socket; anything it does send is dropped."""
    try:
        return not conn.recv(65536)
    except (BlockingIOError, TimeoutError):
        return False
    except OSError:
        return True


_PORT_SETTINGS = {"posts": ("--port", "STREAM_PORT"), "control": ("--ack-port", "ACK_PORT")}


class ListenError(OSError):
    """One of the producer's ports cannot be listened on; ``role`` says which
    ("posts" or "control"), ``str(err)`` is one line naming it."""

    def __init__(self, role: str, host: str, port: int, err: OSError) -> None:
        super().__init__(err.errno, err.strerror or str(err))
        self.role, self.host, self.port = role, host, port
        #: the flag and the variable that set this port
        self.flag, self.env = _PORT_SETTINGS[role]

    def __str__(self) -> str:
        return f"cannot listen on {self.host}:{self.port}, the {self.role} port: {self.strerror}"


def _listen(host: str, port: int, backlog: int, role: str) -> socket.socket:
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, socket.SOCK_STREAM)
    except OSError as err:
        raise ListenError(role, host, port, err) from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(sockaddr)
        listener.listen(backlog)
    except OSError as err:
        listener.close()
        raise ListenError(role, host, port, err) from None
    return listener
