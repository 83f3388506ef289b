"""The producer's journal (:class:`Journal`): what stream.py accepted and the job has not stored.

The face stream.py and the sender use: :meth:`Journal.put` numbers a tweet
and hands it to the :class:`~journal.committer.Committer` (it never waits
for the disk); the records live in :class:`~journal.segments.SegmentFiles`;
:meth:`Journal.ack` forgets what the job stored.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from journal.committer import Committer
from journal.files import PRIVATE_FILE, private_folder, write_atomically
from journal.records import RESERVED, encode_json, seal_numbered, unseal
from journal.segments import SegmentFiles, Span, records_of

log = logging.getLogger("journal")  # the journal's one logger: its lines read as before


class Journal:
    """What stream.py accepted and the Spark job has not acknowledged as stored.

    A private folder (mode 0700) holding ``source-id`` (this producer's id),
    ``acked`` (the highest seq acknowledged) and segment files
    ``seg-<first seq>.log`` of sealed wire lines. Opening it reads the
    segments back (cutting a torn tail off), so numbering goes on where it
    stopped and every unacknowledged tweet is sent again.

    :meth:`put` numbers a tweet and queues it; the committer thread lets
    the queue gather for ``commit_window`` seconds, writes it and fsyncs it
    (group commit); :attr:`committed` is the highest seq on disk. A full disk
    makes :meth:`put` refuse new tweets, logged once, while what was put is
    kept and written as soon as there is room.
    ``max_bytes`` bounds the segments on disk plus the queue: past it,
    :meth:`put` refuses too. Segments are deleted once every seq in them is
    acknowledged.
    """

    LOCK = "lock"
    ACKED = "acked"
    SOURCE_ID = "source-id"
    #: largest segment; smaller journals get segments of max_bytes / 8
    SEGMENT_BYTES = 64 * 1024 * 1024
    #: at most one "journal full" warning per this many seconds
    FULL_WARNING_SECONDS = 10.0

    def __init__(self, path: Path, max_bytes: int = 2 * 1024**3,
                 commit_window: float = Committer.WINDOW_SECONDS) -> None:
        """Open (or create) the journal at ``path``. Raises OSError when it cannot
        be used, including when another stream.py has it open.

        ``commit_window``: seconds the committer lets tweets gather before one
        fsync writes them all (a tweet is accepted once its window is on disk)."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if not 0 <= commit_window < math.inf:
            raise ValueError("commit_window must be a finite number of seconds >= 0")
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
        self.source = _read_source_id(self.path / self.SOURCE_ID)
        #: a record's start; ``% (seq, members)`` (the source id is alphanumeric)
        self._head = b'{"seq":%%d,"src":%s%%s' % encode_json(self.source).encode("ascii")
        #: guards everything that changes after open; notified when committed, acked or
        #: disk_error changes
        self.changed = threading.Condition()
        self.segments = SegmentFiles(self.path, self.segment_bytes, self.changed,
                                     _read_acked(self.path / self.ACKED))
        last = self.segments.open()
        self.committer = Committer(self.segments, self.changed, max(last, self.acked),
                                   window=commit_window)
        #: the seq the next put gets
        self.next_seq = self.committed + 1
        #: tweets refused: journal full (max_bytes); see also refused_disk
        self.refused_full = 0
        #: bytes of the first record the last refused put could not take: what a caller
        #: that will retry must at least find free (:meth:`wait_for_room`)
        self.wanted_bytes = 0
        self._ack_lock = threading.Lock()
        self._put_lock = threading.Lock()
        self._last_full_warning = -math.inf
        self.committer.start()

    # -- the parts' state, as before the split

    @property
    def committed(self) -> int:
        """The highest seq on disk."""
        return self.committer.committed

    @property
    def acked(self) -> int:
        """The highest seq acknowledged."""
        return self.segments.acked

    @property
    def damaged(self) -> int:
        """Records lost to damage found at open."""
        return self.segments.damaged

    @property
    def disk_error(self) -> str | None:
        """Why commits fail now (None: they work)."""
        return self.committer.disk_error

    @property
    def refused_disk(self) -> int:
        """Tweets refused because the disk refused writes."""
        return self.committer.refused_disk

    @property
    def on_commit(self) -> Callable[[], None] | None:
        """Called (from the committer thread) after each commit."""
        return self.committer.on_commit

    @on_commit.setter
    def on_commit(self, callback: Callable[[], None] | None) -> None:
        self.committer.on_commit = callback

    # -- putting

    def put(self, tweet: dict[str, Any], position: Any = None, *,
            will_retry: bool = False) -> bool:
        """Number ``tweet`` and queue it for the next commit; never waits for the disk.

        ``position`` (JSON-encodable) is where the source stands after this
        tweet (a replay's offset, Jetstream's time_us): it is written in the
        same record, as ``pos``, so a restarted source can go on exactly after
        the last tweet the journal holds (:meth:`tail`).

        Returns False (and counts it) when the journal is full or the disk is;
        what was put before stays. ``will_retry``: the caller offers a refused
        tweet again once there is room (:meth:`wait_for_room`), so a refusal
        loses nothing: it is neither counted nor warned about (the caller says
        that it waits); True then also means "do not offer it again" for a tweet
        larger than the whole journal, refused for good (see :meth:`put_many`).
        Raises TypeError or ValueError when the tweet cannot be encoded as JSON.
        """
        return self._queue([_member(tweet, position)], will_retry) == 1

    def put_many(self, tweets: Sequence[dict[str, Any]],
                 positions: Sequence[Any] | None = None, *, will_retry: bool = False) -> int:
        """:meth:`put` for a list: the same records, numbered in order, with one trip
        through the journal's lock (what saturation pays per tweet otherwise).

        ``positions``: one a tweet (None: that tweet has none), or None for none.
        Returns how many were accepted, always a prefix of ``tweets``: all of
        them; or, when the journal fills up, those before the first that does
        not fit (the rest are refused and counted in :attr:`refused_full`,
        as :meth:`put` would count each); 0 when the disk refuses writes (all
        counted in :attr:`refused_disk`) or the journal is closing. With
        ``will_retry`` nothing refused is counted (see :meth:`put`), except a
        tweet whose record alone is larger than ``max_bytes``: no wait would
        make room for it, so it is refused for good, counted, and counted in
        the return value as one the caller is done with. Raises
        TypeError or ValueError, with nothing put, when a tweet cannot be
        encoded as JSON.
        """
        if positions is None:
            members = [_member(tweet, None) for tweet in tweets]  # encoded before any lock
        elif len(positions) == len(tweets):
            members = list(map(_member, tweets, positions))
        else:
            raise ValueError(f"{len(tweets)} tweets and {len(positions)} positions")
        return self._queue(members, will_retry) if members else 0

    def _queue(self, members: list[bytes], will_retry: bool = False) -> int:
        """Number, seal and queue the records of ``members`` (:func:`_member`): how many
        were accepted, as :meth:`put_many` says. With ``will_retry``, a first record
        larger than the whole journal is refused for good (counted, warned about) and
        counted among those the caller is done with: waiting would never make room."""
        too_big: list[int] = []
        with self._put_lock:  # putters one at a time: only they move next_seq
            records = seal_numbered(self._head, self.next_seq, members)
            while will_retry and records and len(records[0]) > self.max_bytes:
                too_big.append(len(records[0]))
                members = members[1:]  # renumbered: the next record takes its seq
                records = seal_numbered(self._head, self.next_seq, members)
            size = sum(map(len, records))
            with self.changed:
                self.refused_full += len(too_big)
                if self.committer.closing:
                    return len(too_big)
                if self.committer.disk_error is not None:
                    if not will_retry:
                        self.committer.refused_disk += len(records)
                    elif records:
                        self.wanted_bytes = len(records[0])
                    return len(too_big)
                room = self.max_bytes - self.bytes_held
                if size > room:  # the longest prefix that fits
                    size = taken = 0
                    while size + len(records[taken]) <= room:
                        size += len(records[taken])
                        taken += 1
                    self.wanted_bytes = len(records[taken])
                    refused, records = len(records) - taken, records[:taken]
                    warn = False
                    if not will_retry:
                        self.refused_full += refused
                        warn = (time.monotonic() - self._last_full_warning
                                >= self.FULL_WARNING_SECONDS)
                    if warn:
                        self._last_full_warning = time.monotonic()
                else:
                    refused, warn = 0, False
                if records:
                    self.next_seq += len(records)
                    self.committer.queue(records, size)
        for length in too_big:
            log.warning("journal %s: refusing a tweet of %s for good: it is larger than the "
                        "whole journal (JOURNAL_MAX_BYTES %s)", self.path, _size(length),
                        _size(self.max_bytes))
        if warn:
            log.warning("journal %s is full (%s of JOURNAL_MAX_BYTES %s held until the job "
                        "stores them): refusing new tweets; %d refused so far", self.path,
                        _size(self.bytes_held), _size(self.max_bytes), self.refused_full)
        return len(too_big) + len(records)

    def wait_for_room(self, size: int, timeout: float | None = None, *,
                      give_up: Callable[[], bool] | None = None) -> bool:
        """Wait until the journal would take ``size`` more bytes of records: they fit
        under ``max_bytes`` (a size above ``max_bytes`` waits for an empty journal)
        and the disk takes writes. True then; False when the journal closes,
        ``give_up()`` returns True, or ``timeout`` seconds pass first.

        Nothing polls: the wait is woken by each acknowledgement (which frees
        room), each commit (the disk writes again) and the close; whoever makes
        ``give_up`` true calls :meth:`wake`.
        """
        need = min(size, self.max_bytes)

        def done() -> bool:
            return (self.committer.closing or (give_up is not None and give_up())
                    or (self.committer.disk_error is None
                        and self.max_bytes - self.bytes_held >= need))

        with self.changed:
            self.changed.wait_for(done, timeout)
            return (not self.committer.closing and not (give_up is not None and give_up())
                    and self.committer.disk_error is None
                    and self.max_bytes - self.bytes_held >= need)

    def wake(self) -> None:
        """Wake every :meth:`wait_for_room` to look at its ``give_up`` again."""
        with self.changed:
            self.changed.notify_all()

    def wait_committed(self, seq: int | None = None, timeout: float | None = None) -> bool:
        """Wait until every seq up to ``seq`` (default: everything put so far) is on
        disk; False at once while the disk refuses writes, and when ``timeout``
        passed first or the journal closed."""
        with self.changed:  # reentrant: the target and the wait under one hold, as ever
            target = self.next_seq - 1 if seq is None else seq
            return self.committer.wait_committed(target, timeout)

    # -- reading, for the sender

    def spans(self, first: int, last: int, limit: int) -> list[Span]:
        """Byte ranges holding the committed records ``first..last``, at most
        ``limit`` bytes in all (at least one record); missing seqs are skipped."""
        with self.changed:
            return self.segments.spans(first, min(last, self.committed), limit)

    def tail(self, count: int) -> list[dict[str, Any]]:
        """The last ``count`` records on disk (acknowledged or not, while their segment
        is kept), oldest first, as objects: what a restarted source had handed over."""
        with self.changed:
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
        with self.changed:
            return self.acked + 1

    @property
    def held(self) -> int:
        """Tweets put and not acknowledged."""
        with self.changed:
            return self.next_seq - 1 - self.acked

    @property
    def bytes_on_disk(self) -> int:
        """Bytes of the segment files (acknowledged records in a live segment included)."""
        return self.segments.disk_bytes

    @property
    def bytes_held(self) -> int:
        """Bytes of the records not acknowledged, on disk or queued: what JOURNAL_MAX_BYTES
        bounds."""
        return (self.segments.disk_bytes - self.segments.acked_bytes
                + self.committer.pending_bytes)

    def next_present(self, seq: int) -> int:
        """The first seq from ``seq`` on that the journal holds on disk (records lost to
        damage are skipped); ``committed + 1`` when there is none."""
        with self.changed:
            found = self.segments.next_present(seq)
            return self.committed + 1 if found is None else found

    # -- acknowledgements

    def ack(self, seq: int) -> None:
        """Everything up to ``seq`` is stored: remember it (durably) and delete the
        segments that hold nothing else. Raises OSError if it cannot be recorded."""
        with self._ack_lock:  # one writer of the acked file at a time, in order
            with self.changed:
                if seq <= self.acked:
                    return
                seq = min(seq, self.committed)
            write_atomically(self.path / self.ACKED, str(seq))
            with self.changed:
                self.segments.acknowledge(seq)
                self.changed.notify_all()

    # -- closing

    def close(self, timeout: float = 5.0) -> None:
        """Write what was put (waiting at most ``timeout`` s), then release the journal.

        If the disk is so slow that a write is still under way after that, the
        journal is left open and locked (the process is ending; its lock goes with
        it) rather than closing files under the committer.
        """
        if not self.committer.stop(timeout):
            return
        self.segments.close()
        self._lock_file.close()  # releases the flock


def _member(tweet: dict[str, Any], position: Any) -> bytes:
    """A tweet's members after ``seq`` and ``src`` (``,"id":...``, its position last as
    ``"pos"``; reserved keys dropped), as ASCII bytes. Raises TypeError or ValueError
    when it cannot be encoded."""
    if not isinstance(tweet, dict):
        raise TypeError(f"a tweet is a JSON object, not {type(tweet).__name__}")
    if not RESERVED.isdisjoint(tweet):
        tweet = {key: value for key, value in tweet.items() if key not in RESERVED}
    fields = encode_json(tweet)[1:-1]
    if position is not None:
        fields += ("," if fields else "") + '"pos":' + encode_json(position)
    return ("," + fields).encode("ascii") if fields else b""


def _read_source_id(id_file: Path) -> str:
    """This producer's id, from ``id_file`` (made the first time). Raises OSError when
    the file holds none."""
    if not id_file.exists():
        write_atomically(id_file, uuid.uuid4().hex[:12])
    source = id_file.read_text().strip()
    if not source or not source.isalnum():
        raise OSError(f"journal {id_file.parent}: {id_file.name} holds no producer id")
    return source


def _read_acked(acked_file: Path) -> int:
    """The highest seq acknowledged; 0 (send everything again: the job drops what
    it has) when the file is missing or unreadable."""
    try:
        text = acked_file.read_text().strip()
    except FileNotFoundError:
        return 0
    if not text.isdigit():
        log.warning("journal %s: %s holds %.40r, not a seq: every tweet kept is sent "
                    "again (the job drops those it has)", acked_file.parent, acked_file.name,
                    text)
        return 0
    return int(text)


def _size(count: int) -> str:
    if count < 1024**2:
        return f"{count / 1024:,.1f} KiB"
    return f"{count / 1024**2:,.1f} MiB"
