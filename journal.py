"""Crash-consistent files: checksummed records, the producer's journal, atomic writes.

Every record is one JSON object on one line, sealed with the CRC32 of its
bytes as its last member (:func:`seal`)::

    {"seq":7,"src":"9009d11d4f17","id":"1","text":"hi","crc":"5c7b1f2a"}\\n

A record cut short by a crash (a SIGKILL, a power cut, a full disk) or
damaged later fails :func:`unseal`, so a file is read back as its valid
records; a torn tail is cut off when the file is opened, never appended to
(:func:`scan`). The producer's journal lines are the wire lines themselves:
Spark's executors ignore the ``crc`` member, so a tweet goes from the disk to
the socket without being decoded again.

* :class:`Journal`: what ``stream.py`` accepted and the job has not stored yet,
  on disk in segment files. :meth:`Journal.put` never waits for the disk: a
  committer thread writes what was put and fsyncs it, many tweets at a time
  (a group commit, within milliseconds); a tweet is *accepted* once it is on
  disk, and only then is it sent. In memory there is only an index (seq ->
  byte range, 16 bytes a tweet) and the tweets not committed yet.
* :class:`RecordFile`: a small append-only file of records (the job's spool).
* :func:`write_atomically`: a whole small file or nothing (cursors, counts).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import threading
import time
import uuid
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_CRC_OPEN = b',"crc":"'
_CRC_CLOSE = b'"}\n'
#: bytes a seal adds after the object's body: ,"crc":"xxxxxxxx"}\n
SEAL_BYTES = len(_CRC_OPEN) + 8 + len(_CRC_CLOSE)
#: errors that mean "no room on the disk" (ENOSPC), a quota, or a file size limit
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
#: a record's own members: a tweet's fields of the same names (a replayed capture of
#: another producer's output has them) are dropped, never taken for the journal's
RESERVED = frozenset({"seq", "src", "pos", "crc"})


def _encoder() -> Callable[[Any], str]:
    """Compact ASCII JSON (lone surrogates and newlines escaped), as transform.encode_tweet.

    CPython's C encoder made once, without the circular-reference check that
    costs ``JSONEncoder.encode`` ~2 µs per tweet (a tweet parsed from JSON has no
    cycle; one that has raises ValueError all the same).
    """
    standard = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
    make = json.encoder.c_make_encoder
    if make is None:  # not CPython
        return standard.encode
    fast = make(None, standard.default, json.encoder.encode_basestring_ascii, None,
                standard.key_separator, standard.item_separator, False, False, True)

    def encode(value: Any) -> str:
        try:
            return "".join(fast(value, 0))
        except RecursionError:
            raise ValueError("cannot encode as JSON: nested too deeply or circular") from None

    return encode


_ENCODE = _encoder()


# --- records: pure --------------------------------------------------------------


def seal(obj: bytes) -> bytes:
    """A JSON object's bytes (``{...}``, at least one member) as a record:
    the same object with ``"crc"`` added last, then ``\\n``."""
    if not obj.startswith(b"{") or not obj.endswith(b"}") or obj == b"{}":
        raise ValueError("a record is a JSON object with at least one member")
    body = obj[:-1]
    return b"%s%s%08x%s" % (body, _CRC_OPEN, zlib.crc32(body), _CRC_CLOSE)


def unseal(record: bytes) -> bytes | None:
    """The JSON object a record holds, without its ``crc``; None when the record
    is torn or damaged (no newline, no seal, or a checksum that does not match)."""
    if (len(record) <= SEAL_BYTES or not record.endswith(_CRC_CLOSE)
            or record[-SEAL_BYTES:-SEAL_BYTES + len(_CRC_OPEN)] != _CRC_OPEN):
        return None
    body = record[:-SEAL_BYTES]
    if b"%08x" % zlib.crc32(body) != record[-11:-3]:
        return None
    return body + b"}"


@dataclass
class Scan:
    """What :func:`scan` found in a file of records."""

    records: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, record)
    end: int = 0  # where the valid records end: a torn tail starts here
    damaged: int = 0  # damaged records before ``end`` (skipped)
    torn: int = 0  # bytes after ``end``


def scan(data: bytes) -> Scan:
    """The valid records of ``data`` with their offsets.

    A record that fails :func:`unseal` but is followed by valid ones is
    damaged (counted, skipped); whatever follows the last valid record is a
    torn tail (its length in ``torn``), to be cut off before appending.
    """
    found = Scan()
    start = damaged_since_valid = 0
    while start < len(data):
        cut = data.find(b"\n", start)
        end = len(data) if cut < 0 else cut + 1
        record = data[start:end]
        if unseal(record) is not None:
            found.records.append((start, record))
            found.damaged += damaged_since_valid
            damaged_since_valid = 0
            found.end = end
        elif record.strip():
            damaged_since_valid += 1
        start = end
    found.torn = len(data) - found.end
    return found


# --- small files -----------------------------------------------------------------


def write_atomically(path: Path, text: str, mode: int = PRIVATE_FILE) -> None:
    """Write ``path`` whole or not at all: a crash or a full disk leaves the old
    content or the new, never a mix. Raises OSError (the old content stays)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def sync_directory(path: Path) -> None:
    """fsync a folder, so that a file created, renamed or removed in it stays so."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_folder(path: Path) -> Path:
    """``path`` created if needed, readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_DIR)
    return path


class Checkpoint:
    """A small file recording how far a source got (Jetstream's cursor, the replay's
    position), rewritten whole (:func:`write_atomically`) at most every ``every``
    seconds, each time after ``before``: stream.py makes its journal durable
    there, so the file never claims more than the journal holds.

    :meth:`save` never raises: a failure (a full disk) keeps the previous file,
    and is logged once until a save works again.
    """

    def __init__(self, path: Path, what: str, *, every: float = 1.0,
                 before: Callable[[], None] | None = None) -> None:
        self.path = Path(path)
        self.what = what
        self.every = every
        self.before = before
        self._next = 0.0
        self._failing = False

    def due(self) -> bool:
        """True when :meth:`save` would write now (``every`` seconds have passed)."""
        return time.monotonic() >= self._next

    def save(self, text: str, *, force: bool = False) -> bool:
        """Write ``text`` if due (or ``force``); True when it was written."""
        if not force and not self.due():
            return False
        self._next = time.monotonic() + self.every
        try:
            if self.before is not None:
                self.before()
            write_atomically(self.path, text)
        except OSError as err:
            if not self._failing:
                log.warning("cannot save the %s to %s: %s; trying again", self.what,
                            self.path, err.strerror or err)
            self._failing = True
            return False
        if self._failing:
            log.info("the %s is saved to %s again", self.what, self.path)
        self._failing = False
        return True


class RecordFile:
    """An append-only file of sealed records, durable on each append.

    At open a torn or damaged tail is cut off (and damaged records before it
    skipped), so a crash at any byte leaves the records appended before it.
    An append that fails (a full disk) is undone before the error is raised.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.damaged = 0  # damaged records skipped by the last read
        self._records: list[bytes] | None = None

    def read(self) -> list[bytes]:
        """The objects of the valid records, oldest first (the torn tail cut off)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        found = scan(data)
        if found.torn:
            log.warning("%s: cutting off a torn last record (%d bytes)", self.path, found.torn)
            with self.path.open("r+b") as handle:
                handle.truncate(found.end)
                os.fsync(handle.fileno())
        if found.damaged:
            log.error("%s: %d damaged record(s) skipped", self.path, found.damaged)
        self.damaged = found.damaged
        return [obj for _, record in found.records if (obj := unseal(record)) is not None]

    def append(self, objects: Iterable[bytes]) -> None:
        """Seal and append ``objects``, then fsync. Raises OSError with the file
        as it was before (a partial write is cut off again)."""
        data = b"".join(seal(obj) for obj in objects)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# --- the producer's journal -------------------------------------------------------------


@dataclass
class _Segment:
    """One segment file: records of consecutive seqs from ``first``."""

    path: Path
    first: int
    size: int = 0  # bytes of committed records
    starts: array = field(default_factory=lambda: array("q"))  # offset per seq, -1 = missing
    ends: array = field(default_factory=lambda: array("q"))

    @property
    def last(self) -> int:
        """The last seq this segment has a place for."""
        return self.first + len(self.starts) - 1

    def add(self, seq: int, start: int, end: int) -> None:
        while self.first + len(self.starts) < seq:  # a seq lost to damage: a hole
            self.starts.append(-1)
            self.ends.append(-1)
        self.starts.append(start)
        self.ends.append(end)


@dataclass(frozen=True)
class Span:
    """Bytes of one segment file holding the records of seqs ``first..last``, in order.

    The file may be gone by the time it is read: its seqs were acknowledged
    meanwhile (see :meth:`Journal.ack`), so there is nothing left to send.
    """

    path: Path
    offset: int
    length: int
    first: int
    last: int


class Journal:
    """What stream.py accepted and the Spark job has not acknowledged as stored.

    A private folder (mode 0700) holding ``source-id`` (this producer's id),
    ``acked`` (the highest seq acknowledged) and segment files
    ``seg-<first seq>.log`` of sealed wire lines. Opening it reads the
    segments back (cutting a torn tail off), so numbering goes on where it
    stopped and every unacknowledged tweet is sent again.

    :meth:`put` numbers a tweet and queues it; the committer thread writes
    the queue and fsyncs it (group commit); :attr:`committed` is the highest
    seq on disk. A full disk makes :meth:`put` refuse new tweets, logged once,
    while what was put is kept and written as soon as there is room.
    ``max_bytes`` bounds the segments on disk plus the queue: past it,
    :meth:`put` refuses too. Segments are deleted once every seq in them is
    acknowledged.
    """

    LOCK = "lock"
    ACKED = "acked"
    SOURCE_ID = "source-id"
    SEGMENT_GLOB = "seg-*.log"
    #: largest segment; smaller journals get segments of max_bytes / 8
    SEGMENT_BYTES = 64 * 1024 * 1024
    #: how often a refused commit (full disk) is tried again
    RETRY_SECONDS = 0.5
    #: at most one "journal full" warning per this many seconds
    FULL_WARNING_SECONDS = 10.0

    def __init__(self, path: Path, max_bytes: int = 2 * 1024**3) -> None:
        """Open (or create) the journal at ``path``. Raises OSError when it cannot
        be used, including when another stream.py has it open."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.path = private_folder(Path(path))
        self.max_bytes = max_bytes
        self.segment_bytes = max(64 * 1024, min(self.SEGMENT_BYTES, max_bytes // 8))
        lock_fd = os.open(self.path / self.LOCK, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
        self._lock_file = os.fdopen(lock_fd, "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise OSError(f"journal {self.path} is in use by another stream.py") from None
        self.source = self._read_source_id()
        self._source_json = _ENCODE(self.source).encode("ascii")
        self.acked = self._read_acked()
        self._segments: list[_Segment] = []
        self._disk_bytes = 0
        self._acked_bytes = 0  # bytes of acknowledged records still in the segments
        self.damaged = 0  # records lost to damage found at open
        last = self._open_segments()
        #: the highest seq on disk
        self.committed = max(last, self.acked)
        #: the seq the next put gets
        self.next_seq = self.committed + 1
        #: tweets refused: journal full (max_bytes) / disk full
        self.refused_full = 0
        self.refused_disk = 0
        self.disk_error: str | None = None  # why commits fail now (None: they work)
        self._pending: list[bytes] = []  # records put, not committed yet, in seq order
        self._pending_bytes = 0
        self._in_flight = 0  # records the committer is writing now
        self._cond = threading.Condition()  # guards everything that changes after open
        self._ack_lock = threading.Lock()
        self._closing = False
        self._last_full_warning = -math.inf
        self._append_fd: int | None = None
        #: called (from the committer thread) after each commit
        self.on_commit: Callable[[], None] | None = None
        self._committer = threading.Thread(target=self._commit_loop, name="journal-commit",
                                           daemon=True)
        self._committer.start()

    # -- opening

    def _read_source_id(self) -> str:
        id_file = self.path / self.SOURCE_ID
        if not id_file.exists():
            write_atomically(id_file, uuid.uuid4().hex[:12])
        source = id_file.read_text().strip()
        if not source or not source.isalnum():
            raise OSError(f"journal {self.path}: {id_file.name} holds no producer id")
        return source

    def _read_acked(self) -> int:
        """The highest seq acknowledged; 0 (send everything again: the job drops what
        it has) when the file is missing or unreadable."""
        try:
            text = (self.path / self.ACKED).read_text().strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit():
            log.warning("journal %s: %s holds %.40r, not a seq: every tweet kept is sent "
                        "again (the job drops those it has)", self.path, self.ACKED, text)
            return 0
        return int(text)

    def _open_segments(self) -> int:
        """Read every segment back; the highest seq found (0 if none)."""
        last = 0
        for path in sorted(self.path.glob(self.SEGMENT_GLOB)):
            segment = self._load_segment(path)
            if segment is None:
                continue
            self._segments.append(segment)
            self._disk_bytes += segment.size
            last = max(last, segment.last)
        if self.damaged:
            log.error("journal %s: %d damaged record(s) could not be read; those tweets are "
                      "lost", self.path, self.damaged)
        self._drop_acked_segments()
        return last

    def _load_segment(self, path: Path) -> _Segment | None:
        try:
            first = int(path.stem.removeprefix("seg-"))
        except ValueError:
            log.warning("journal %s: ignoring %s (not a segment)", self.path, path.name)
            return None
        data = path.read_bytes()
        found = scan(data)
        if found.torn:
            log.warning("journal %s: cutting off a torn last record of %s (%d bytes)",
                        self.path, path.name, found.torn)
            with path.open("r+b") as handle:
                handle.truncate(found.end)
                os.fsync(handle.fileno())
        self.damaged += found.damaged
        segment = _Segment(path, first, size=found.end)
        for offset, record in found.records:
            seq = _record_seq(record)
            if seq is None or seq < segment.first + len(segment.starts):
                self.damaged += 1  # sealed but not ours, or out of order: unusable
                continue
            segment.add(seq, offset, offset + len(record))
        return segment

    # -- putting

    def put(self, tweet: dict[str, Any], position: Any = None) -> bool:
        """Number ``tweet`` and queue it for the next commit; never waits for the disk.

        ``position`` (JSON-encodable) is where the source stands after this
        tweet (a replay's offset, Jetstream's time_us): it is written in the
        same record, as ``pos``, so a restarted source can go on exactly after
        the last tweet the journal holds (:meth:`tail`).

        Returns False (and counts it) when the journal is full or the disk is;
        what was put before stays. Raises TypeError or ValueError when the
        tweet cannot be encoded as JSON.
        """
        if not isinstance(tweet, dict):
            raise TypeError(f"a tweet is a JSON object, not {type(tweet).__name__}")
        if not RESERVED.isdisjoint(tweet):
            tweet = {key: value for key, value in tweet.items() if key not in RESERVED}
        # encoded before the lock (the seq, known only under it, is spliced in front)
        fields = _ENCODE(tweet)[1:-1]
        if position is not None:
            fields += ("," if fields else "") + '"pos":' + _ENCODE(position)
        members = ("," + fields).encode("ascii") if fields else b""
        with self._cond:
            if self._closing:
                return False
            if self.disk_error is not None:
                self.refused_disk += 1
                return False
            seq = self.next_seq
            record = seal(b'{"seq":%d,"src":%s%s}' % (seq, self._source_json, members))
            if self.bytes_held + len(record) > self.max_bytes:
                self.refused_full += 1
                warn = time.monotonic() - self._last_full_warning >= self.FULL_WARNING_SECONDS
                if warn:
                    self._last_full_warning = time.monotonic()
            else:
                self.next_seq += 1
                self._pending.append(record)
                self._pending_bytes += len(record)
                if len(self._pending) == 1:
                    self._cond.notify_all()
                return True
        if warn:
            log.warning("journal %s is full (%s of JOURNAL_MAX_BYTES %s held until the job "
                        "stores them): refusing new tweets; %d refused so far", self.path,
                        _size(self.bytes_held), _size(self.max_bytes), self.refused_full)
        return False

    def wait_committed(self, seq: int | None = None, timeout: float | None = None) -> bool:
        """Wait until every seq up to ``seq`` (default: everything put so far) is on
        disk; False at once while the disk refuses writes, and when ``timeout``
        passed first or the journal closed."""
        with self._cond:
            target = self.next_seq - 1 if seq is None else seq
            self._cond.wait_for(lambda: self.committed >= target or self._closing
                                or self.disk_error is not None, timeout)
            return self.committed >= target

    # -- the committer

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closing)
                if not self._pending:
                    return  # closing, and nothing left to write
                batch, self._pending = self._pending, []
                self._in_flight = len(batch)
                first = self.committed + 1
            written, error = self._write(first, batch)
            with self._cond:
                if written:
                    # what is on disk moves from the queue to the disk in one step (put's bound)
                    size = sum(map(len, batch[:written]))
                    self._pending_bytes -= size
                    self._disk_bytes += size
                    self.committed = first + written - 1
                if error is None:
                    self._recovered()
                else:
                    self._pending[:0] = batch[written:]  # kept, in order, for the next try
                    self._failed(error)
                self._in_flight = 0
                self._cond.notify_all()
                if error is not None and not self._closing:
                    self._cond.wait(self.RETRY_SECONDS)
            if written and self.on_commit is not None:
                self.on_commit()
            if error is not None and self._closing:
                return

    def _write(self, first: int, batch: list[bytes]) -> tuple[int, OSError | None]:
        """Append ``batch`` (seqs ``first``...) to the segments, fsynced, starting a
        new segment when the last is full (or holds only acknowledged records, so
        that it can go); ``(records written, the error that stopped it)``. The index
        grows only once a part is on disk; on error the segment is cut back."""
        written = 0
        while written < len(batch):
            segment = self._segments[-1] if self._segments else None
            try:
                if segment is None or segment.size >= self.segment_bytes or (
                        segment.size and segment.last <= self.acked):
                    segment = self._new_segment(first + written)
                room = self.segment_bytes - segment.size
                take, size = 1, len(batch[written])  # at least one record a segment
                while written + take < len(batch) and size + len(batch[written + take]) <= room:
                    size += len(batch[written + take])
                    take += 1
                self._append(segment, first + written, batch[written:written + take])
            except OSError as err:
                return written, err
            written += take
        return written, None

    def _append(self, segment: _Segment, first: int, records: list[bytes]) -> None:
        if self._append_fd is None:
            self._append_fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND)
        try:
            _write_all(self._append_fd, b"".join(records))
            os.fdatasync(self._append_fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._append_fd, segment.size)
            raise
        offset = segment.size
        for seq, record in enumerate(records, start=first):
            segment.add(seq, offset, offset + len(record))
            offset += len(record)
        segment.size = offset

    def _new_segment(self, first: int) -> _Segment:
        path = self.path / f"seg-{first:020d}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        os.close(fd)
        sync_directory(self.path)
        segment = _Segment(path, first)
        with self._cond:
            self._segments.append(segment)
        if self._append_fd is not None:
            os.close(self._append_fd)
            self._append_fd = None
        return segment

    def _failed(self, err: OSError) -> None:
        """A commit failed (lock held): refuse new tweets until one works again."""
        reason = (f"the disk is full ({err.strerror})" if err.errno in DISK_FULL
                  else f"cannot write ({err.strerror or err})")
        if self.disk_error is None:
            log.error("journal %s: %s: refusing new tweets until it can write again; the %d "
                      "tweets put and not yet written are kept", self.path, reason,
                      len(self._pending))
        self.disk_error = reason

    def _recovered(self) -> None:
        if self.disk_error is not None:
            log.warning("journal %s: writing again; %d tweets were refused meanwhile",
                        self.path, self.refused_disk)
            self.disk_error = None

    # -- reading, for the sender

    def spans(self, first: int, last: int, limit: int) -> list[Span]:
        """Byte ranges holding the committed records ``first..last``, at most
        ``limit`` bytes in all (at least one record); missing seqs are skipped."""
        spans: list[Span] = []
        budget = limit
        with self._cond:
            last = min(last, self.committed)
            for segment in self._segments:
                if segment.last < first or segment.first > last:
                    continue
                seq = max(first, segment.first)
                stop = min(last, segment.last)
                while seq <= stop and (budget > 0 or not spans):
                    index = seq - segment.first
                    if segment.starts[index] < 0:
                        seq += 1
                        continue
                    run_end = index
                    end_limit = segment.starts[index] + max(budget, 1)
                    while (run_end + 1 <= stop - segment.first
                           and segment.starts[run_end + 1] == segment.ends[run_end]
                           and segment.ends[run_end + 1] <= end_limit):
                        run_end += 1
                    start = segment.starts[index]
                    length = segment.ends[run_end] - start
                    spans.append(Span(segment.path, start, length, seq,
                                      segment.first + run_end))
                    budget -= length
                    seq = segment.first + run_end + 1
                if budget <= 0:
                    break
        return spans

    def tail(self, count: int) -> list[dict[str, Any]]:
        """The last ``count`` records on disk (acknowledged or not, while their segment
        is kept), oldest first, as objects: what a restarted source had handed over."""
        with self._cond:
            last = self.committed
            first = max(1, last - count + 1)
        found = []
        for record in records_of(self.spans(first, last, 1 << 62)):
            obj = unseal(record)
            if obj is not None:
                found.append(json.loads(obj))
        return found

    def first_held(self) -> int:
        """The oldest seq not acknowledged (``next_seq`` when none is held)."""
        with self._cond:
            return self.acked + 1

    @property
    def held(self) -> int:
        """Tweets put and not acknowledged."""
        with self._cond:
            return self.next_seq - 1 - self.acked

    @property
    def bytes_on_disk(self) -> int:
        """Bytes of the segment files (acknowledged records in a live segment included)."""
        return self._disk_bytes

    @property
    def bytes_held(self) -> int:
        """Bytes of the records not acknowledged, on disk or queued: what JOURNAL_MAX_BYTES
        bounds."""
        return self._disk_bytes - self._acked_bytes + self._pending_bytes

    def next_present(self, seq: int) -> int:
        """The first seq from ``seq`` on that the journal holds on disk (records lost to
        damage are skipped); ``committed + 1`` when there is none."""
        with self._cond:
            for segment in self._segments:
                if segment.last < seq:
                    continue
                for index in range(max(seq, segment.first) - segment.first,
                                   len(segment.starts)):
                    if segment.starts[index] >= 0:
                        return segment.first + index
            return self.committed + 1

    # -- acknowledgements

    def ack(self, seq: int) -> None:
        """Everything up to ``seq`` is stored: remember it (durably) and delete the
        segments that hold nothing else. Raises OSError if it cannot be recorded."""
        with self._ack_lock:  # one writer of the acked file at a time, in order
            with self._cond:
                if seq <= self.acked:
                    return
                seq = min(seq, self.committed)
            write_atomically(self.path / self.ACKED, str(seq))
            with self._cond:
                self.acked = max(self.acked, seq)
                self._drop_acked_segments()
                self._cond.notify_all()

    def _drop_acked_segments(self) -> None:
        """Delete every segment all of whose seqs are acknowledged, but the newest one
        that holds records (its last record tells a restarted source where it was)."""
        keep = max((i for i, segment in enumerate(self._segments) if segment.size),
                   default=len(self._segments) - 1)
        while keep > 0 and self._segments[0].last <= self.acked:
            segment = self._segments.pop(0)
            self._disk_bytes -= segment.size
            segment.path.unlink(missing_ok=True)
            keep -= 1
        self._acked_bytes = self._count_acked_bytes()

    def _count_acked_bytes(self) -> int:
        """Bytes of acknowledged records in the segments kept."""
        total = 0
        for segment in self._segments:
            if segment.last <= self.acked:
                total += segment.size
                continue
            index = min(self.acked - segment.first, len(segment.starts) - 1)
            while index >= 0 and segment.starts[index] < 0:
                index -= 1
            if index >= 0:
                total += segment.ends[index]
            break
        return total

    # -- closing

    def close(self, timeout: float = 5.0) -> None:
        """Write what was put (waiting at most ``timeout`` s), then release the journal.

        If the disk is so slow that a write is still under way after that, the
        journal is left open and locked (the process is ending; its lock goes with
        it) rather than closing files under the committer.
        """
        with self._cond:
            if self._closing:
                return
            deadline = time.monotonic() + timeout
            self._cond.wait_for(lambda: not self._pending or self.disk_error is not None,
                                timeout)
            self._closing = True
            self._cond.notify_all()
        self._committer.join(max(0.0, deadline - time.monotonic()) + self.RETRY_SECONDS)
        with self._cond:
            left = len(self._pending) + self._in_flight
        if left:
            log.error("journal %s: %d tweets put could not be written before closing",
                      self.path, left)
        if self._committer.is_alive():
            log.error("journal %s: a write is still under way; leaving the journal to it",
                      self.path)
            return
        if self._append_fd is not None:
            os.close(self._append_fd)
            self._append_fd = None
        self._lock_file.close()  # releases the flock


def _record_seq(record: bytes) -> int | None:
    """The ``seq`` of a journal record (``{"seq":N,...``), None if it has none there."""
    if not record.startswith(b'{"seq":'):
        return None
    end = record.find(b",", 7)
    digits = record[7:end]
    return int(digits) if end > 0 and digits.isdigit() else None


def _size(count: int) -> str:
    if count < 1024**2:
        return f"{count / 1024:,.1f} KiB"
    return f"{count / 1024**2:,.1f} MiB"


def records_of(spans: Iterable[Span]) -> Iterator[bytes]:
    """The records the spans hold (for tests and tools; the sender sends spans whole)."""
    for span in spans:
        with span.path.open("rb") as handle:
            handle.seek(span.offset)
            yield from handle.read(span.length).splitlines(keepends=True)

