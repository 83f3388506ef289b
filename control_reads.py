"""Range reads on the control channel: stream.py's journal read by sequence number.

The structured engine's source (:mod:`job.producer_source`) does not take the
posts from the tweet socket: Spark asks it for exact ranges of the producer's
sequence numbers, and for the same range again after a failure. Two requests
join ``ack`` and ``resend`` (:mod:`control`), sealed and numbered like them:

* ``status`` -> ``journal SRC FIRST COMMITTED``: the producer's id, the oldest
  seq it holds (not acknowledged) and the highest one on disk;
* ``read SRC FIRST LAST`` -> chunks that account, in order, for every seq from
  FIRST to LAST. A chunk is a header line, sealed like every other line,

      chunk SRC FROM TO BYTES DIGEST

  then BYTES bytes: the journal records (the wire lines) of the seqs FROM..TO
  that the producer holds, whose SHA-256 is DIGEST. A seq of FROM..TO that is
  not there was acknowledged (stored) or lost to damage; a range of another
  SRC is not there at all (a producer with a new journal has a new id). When
  the producer has not journaled LAST yet, the chunks stop where it stands and
  a ``journal`` line ends the answer instead.

A chunk costs one MAC and one SHA-256 of its bytes (~0.5 ms a MiB), not a MAC a
line, and keeps the channel's guarantees: the header's MAC covers both nonces,
the direction and the header's number on the connection, so a chunk cannot be
forged, replayed from another connection or moved; the digest binds the bytes
to it, so they cannot be changed, cut short or lengthened (anything after them
is read as the next line, whose MAC fails). The reader also checks that every
record carries SRC and a seq inside FROM..TO, increasing. A chunk that fails a
check yields nothing: the connection is dropped and the range read again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import control
from journal import Journal

STATUS, JOURNAL, READ, CHUNK = "status", "journal", "read", "chunk"
#: Most bytes of records in one chunk (at least one record, however long).
CHUNK_BYTES = 1024 * 1024
#: A chunk announcing more than this is refused before it is read (no record is this long).
MAX_CHUNK_BYTES = 256 * 1024 * 1024
DIGEST_CHARS = 64  # SHA-256, hex


class RangeNotHeldError(Exception):
    """The producer has not journaled the whole range asked for (yet); ``str(err)`` says
    how far it is. Ask again later: nothing of the range may be skipped."""


@dataclass(frozen=True)
class JournalStatus:
    """Where a producer's journal stands."""

    source: str  # the producer's id (a new journal, a new id)
    first: int  # the oldest seq held, not acknowledged (committed + 1 when none)
    committed: int  # the highest seq on disk


@dataclass(frozen=True)
class Chunk:
    """What a verified chunk holds: the wire lines of seqs ``first..last`` that were there."""

    first: int
    last: int
    lines: list[str]


# --- the producer's side -----------------------------------------------------------------


def journal_requests(journal: Journal, served: Callable[[int, int], None]
                     ) -> dict[str, control.Request]:
    """The producer's answers to ``status`` and ``read`` from ``journal``, for
    :class:`control.ControlServer`; ``served(count, last)`` is told of each chunk
    written (``count`` records, the last one ``last``)."""
    source = journal.source

    def status(session: control.Session, conn: socket.socket, words: list[str]) -> None:
        if words != [STATUS]:
            raise control.ProtocolError("not a status line")
        conn.sendall(_journal_line(session, journal))

    def read(session: control.Session, conn: socket.socket, words: list[str]) -> None:
        asked, first, last = _range_words(words)
        if asked != source:  # not this journal's: none of it is here
            conn.sendall(_chunk(session, asked, first, last, b""))
            return
        seq = first
        while seq <= last:
            # what was acknowledged is stored: never served again, though still on disk
            start = max(seq, journal.first_held())
            end = min(last, journal.committed)
            spans = journal.spans(start, end, CHUNK_BYTES) if start <= end else []
            data, upto, count = bytearray(), end, 0
            for span in spans:
                try:
                    with span.path.open("rb") as segment:
                        data += os.pread(segment.fileno(), span.length, span.offset)
                except FileNotFoundError:  # acknowledged meanwhile: stored
                    pass
                else:
                    count += span.last - span.first + 1
            if spans and spans[-1].last < end:
                upto = spans[-1].last  # the chunk is full: more follow
            if upto < seq:  # the producer has not journaled seq yet
                conn.sendall(_journal_line(session, journal))
                return
            if count:  # before the send: what the job has read, it may acknowledge
                served(count, upto)
            conn.sendall(_chunk(session, source, seq, upto, bytes(data)))
            seq = upto + 1

    return {STATUS: status, READ: read}


def _journal_line(session: control.Session, journal: Journal) -> bytes:
    return session.seal("producer", f"{JOURNAL} {journal.source} {journal.first_held()} "
                                    f"{journal.committed}")


def _chunk(session: control.Session, source: str, first: int, last: int, data: bytes) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    return session.seal("producer", f"{CHUNK} {source} {first} {last} {len(data)} {digest}") + data


def _number(word: str, what: str) -> int:
    if not word.isdigit() or len(word) > 18:
        raise control.ProtocolError(f"a {what} line with a bad number")
    return int(word)


def _range_words(words: list[str]) -> tuple[str, int, int]:
    """``(source, first, last)`` of ``read SOURCE FIRST LAST``."""
    if len(words) != 4 or words[0] != READ or not words[1].isalnum():
        raise control.ProtocolError("not a read line")
    first, last = _number(words[2], READ), _number(words[3], READ)
    if first > last:
        raise control.ProtocolError("a read line with an empty range")
    return words[1], first, last


# --- the job's side ---------------------------------------------------------------------------


class ReadClient:
    """One authenticated connection to the producer's control port that asks where
    its journal stands (:meth:`status`) and reads ranges of it (:meth:`read`).

    Any failure (OSError, :class:`control.ProtocolError`) closes the connection, so
    that nothing half read is ever taken for a whole answer; the next call opens a
    new one. Not thread-safe: one caller at a time.
    """

    TIMEOUT = 10.0

    def __init__(self, host: str, port: int, secret: bytes, timeout: float = TIMEOUT) -> None:
        self.address = (host, port)
        self.secret = secret
        self.timeout = timeout
        self._connection: tuple[socket.socket, control.LineReader, control.Session] | None = None

    def status(self) -> JournalStatus:
        """Where the producer's journal stands. Raises OSError or ProtocolError."""
        with self._failing_closes():
            sock, reader, session = self._connect()
            sock.sendall(session.seal("job", STATUS))
            return _status(session.open("producer", _line(reader)))

    def read(self, source: str, first: int, last: int) -> Iterator[Chunk]:
        """The verified chunks of ``source``'s seqs ``first..last``, in order, together
        accounting for every seq of the range. Raises OSError or ProtocolError
        (nothing of the failing chunk is yielded) and RangeNotHeldError."""
        with self._failing_closes():
            sock, reader, session = self._connect()
            sock.sendall(session.seal("job", f"{READ} {source} {first} {last}"))
            expected = first
            while expected <= last:
                words = session.open("producer", _line(reader))
                if words and words[0] == JOURNAL:
                    status = _status(words)
                    raise RangeNotHeldError(
                        f"the producer holds seqs of {status.source} up to {status.committed}, "
                        f"not yet up to {last}")
                chunk = _open_chunk(words, source, expected, last, reader)
                expected = chunk.last + 1
                yield chunk

    def ack(self, source: str, seq: int) -> None:
        """Tell the producer everything of ``source`` up to ``seq`` is stored (``ack``, as
        :class:`control.ControlClient` sends it; no answer). Raises OSError or ProtocolError."""
        with self._failing_closes():
            sock, _, session = self._connect()
            sock.sendall(session.seal("job", f"{control.ACK} {source} {seq}"))

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(OSError):
                self._connection[0].close()
        self._connection = None

    def _connect(self) -> tuple[socket.socket, control.LineReader, control.Session]:
        if self._connection is not None and control.peer_closed(self._connection[0]):
            self.close()  # the producer restarted
        if self._connection is None:
            self._connection = control.open_session(self.address, self.secret, self.timeout)
        return self._connection

    @contextlib.contextmanager
    def _failing_closes(self) -> Iterator[None]:
        try:
            yield
        except BaseException:  # a generator closed early leaves an answer half read
            self.close()
            raise


def _line(reader: control.LineReader) -> bytes:
    line = reader.readline()
    if line is None:
        raise ConnectionResetError("the producer closed the control connection")
    return line


def _status(words: list[str]) -> JournalStatus:
    if len(words) != 4 or words[0] != JOURNAL or not words[1].isalnum():
        raise control.ProtocolError("not a journal line")
    return JournalStatus(words[1], _number(words[2], JOURNAL), _number(words[3], JOURNAL))


def _open_chunk(words: list[str], source: str, first: int, last: int,
                reader: control.LineReader) -> Chunk:
    """The chunk announced by the opened header ``words``, which must start at ``first``
    and end within ``last``, its bytes read and checked."""
    if (len(words) != 6 or words[0] != CHUNK or words[1] != source
            or len(words[5]) != DIGEST_CHARS):
        raise control.ProtocolError("not the chunk asked for")
    start, end = _number(words[2], CHUNK), _number(words[3], CHUNK)
    size = _number(words[4], CHUNK)
    if start != first or not start <= end <= last or size > MAX_CHUNK_BYTES:
        raise control.ProtocolError("a chunk outside the range asked for")
    data = reader.read_exactly(size)
    if hashlib.sha256(data).hexdigest() != words[5]:
        raise control.ProtocolError("a chunk whose bytes do not match its digest")
    return Chunk(start, end, _records(data, source, start, end))


def _records(data: bytes, source: str, first: int, last: int) -> list[str]:
    """The wire lines of a chunk's bytes, each checked to be ``source``'s, with a seq in
    ``first..last`` above the one before (~1 µs a post)."""
    if not data:
        return []
    if not data.endswith(b"\n"):
        raise control.ProtocolError("a chunk that does not end a line")
    try:
        lines = data.decode("ascii").split("\n")  # the journal writes ASCII JSON
    except UnicodeDecodeError:
        raise control.ProtocolError("a chunk that is not ASCII") from None
    lines.pop()  # after the last newline
    mark = f',"src":"{source}"'
    previous = first - 1
    for line in lines:
        comma = line.find(",", 7)
        digits = line[7:comma]
        if (not line.startswith('{"seq":') or not digits.isdigit()
                or not line.startswith(mark, comma)):
            raise control.ProtocolError("a chunk with a record that is not this producer's")
        seq = int(digits)
        if not previous < seq <= last:
            raise control.ProtocolError("a chunk with a record out of its range or order")
        previous = seq
    return lines
