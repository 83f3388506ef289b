"""The producer journal's segment files: reading them back, appending, and their index.

A journal's records live in segment files ``seg-<first seq>.log`` of sealed
wire lines. :class:`SegmentFiles` opens them (cutting a torn tail off),
appends committed records to the newest one (starting a new one when it is
full), deletes those all of whose seqs are acknowledged, and keeps an index
in memory (seq -> byte range, 16 bytes a tweet) from which the sender gets
:class:`Span` s to send straight from the files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

from journal.files import PRIVATE_FILE, sync_directory, write_all
from journal.records import record_seq, scan

log = logging.getLogger("journal")  # the journal's one logger: its lines read as before


@dataclass
class Segment:
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

    def add_run(self, first: int, bounds: list[int]) -> None:
        """Records of seqs ``first``... lying back to back: record i from ``bounds[i]``
        to ``bounds[i + 1]``; the segment's size becomes ``bounds[-1]``."""
        if self.first + len(self.starts) != first:
            for i, seq in enumerate(range(first, first + len(bounds) - 1)):
                self.add(seq, bounds[i], bounds[i + 1])
        else:
            self.starts.extend(bounds[:-1])
            self.ends.extend(bounds[1:])
        self.size = bounds[-1]


@dataclass(frozen=True)
class Span:
    """Bytes of one segment file holding the records of seqs ``first..last``, in order.

    The file may be gone by the time it is read: its seqs were acknowledged
    meanwhile (see :meth:`journal.Journal.ack`), so there is nothing left to send.
    """

    path: Path
    offset: int
    length: int
    first: int
    last: int


class SegmentFiles:
    """The segment files of the journal folder ``path`` and their index.

    ``lock`` is the journal's: the committer thread appends a new segment to
    the list under it, and :meth:`acknowledge`, :meth:`spans` and
    :meth:`next_present` are called with it held. :meth:`write` and
    :meth:`new_segment` run on the committer thread, outside it.
    """

    GLOB = "seg-*.log"

    def __init__(self, path: Path, segment_bytes: int, lock: threading.Condition,
                 acked: int) -> None:
        self.path = path
        self.segment_bytes = segment_bytes
        self.lock = lock
        #: the highest seq acknowledged: segments all of whose seqs are at or below it go
        self.acked = acked
        self.damaged = 0  # records lost to damage found at open
        #: bytes of the segment files; grows when the committer takes a batch off its queue
        self.disk_bytes = 0
        self.acked_bytes = 0  # bytes of acknowledged records still in the segments
        self._segments: list[Segment] = []
        self._append_fd: int | None = None

    # -- opening

    def open(self) -> int:
        """Read every segment back; the highest seq found (0 if none)."""
        last = 0
        for path in sorted(self.path.glob(self.GLOB)):
            segment = self._load(path)
            if segment is None:
                continue
            self._segments.append(segment)
            self.disk_bytes += segment.size
            last = max(last, segment.last)
        if self.damaged:
            log.error("journal %s: %d damaged record(s) could not be read; those tweets are "
                      "lost", self.path, self.damaged)
        self._drop_acked()
        return last

    def _load(self, path: Path) -> Segment | None:
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
        segment = Segment(path, first, size=found.end)
        for offset, record in found.records:
            seq = record_seq(record)
            if seq is None or seq < segment.first + len(segment.starts):
                self.damaged += 1  # sealed but not ours, or out of order: unusable
                continue
            segment.add(seq, offset, offset + len(record))
        return segment

    # -- appending (the committer thread)

    def write(self, first: int, batch: list[bytes]) -> tuple[int, OSError | None]:
        """Append ``batch`` (seqs ``first``...) to the segments, fsynced, starting a
        new segment when the next record does not fit in the last (a record longer
        than a segment gets one of its own) or it holds only acknowledged records
        (so that it can go); ``(records written, the error that stopped it)``. The index
        grows only once a part is on disk; on error the segment is cut back."""
        ends = list(accumulate(map(len, batch)))  # bytes of batch[:i + 1]
        written = 0
        while written < len(batch):
            segment = self._segments[-1] if self._segments else None
            try:
                done = ends[written - 1] if written else 0
                if segment is None or (segment.size and (
                        segment.last <= self.acked  # only acknowledged records: it can go
                        or ends[written] - done > self.segment_bytes - segment.size)):  # full
                    segment = self.new_segment(first + written)
                # as many records as fit in the segment's room, at least one
                take = max(1, bisect_right(ends, done + self.segment_bytes - segment.size,
                                           written) - written)
                self._append(segment, first + written, batch[written:written + take])
            except OSError as err:
                return written, err
            written += take
        return written, None

    def _append(self, segment: Segment, first: int, records: list[bytes]) -> None:
        if self._append_fd is None:
            self._append_fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND)
        try:
            write_all(self._append_fd, b"".join(records))
            os.fdatasync(self._append_fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._append_fd, segment.size)
            raise
        segment.add_run(first, list(accumulate(map(len, records), initial=segment.size)))

    def new_segment(self, first: int) -> Segment:
        """A new, empty segment file for the seqs from ``first`` on, the one appended to
        from now on. Raises OSError when it cannot be created."""
        path = self.path / f"seg-{first:020d}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        os.close(fd)
        sync_directory(self.path)
        segment = Segment(path, first)
        with self.lock:
            self._segments.append(segment)
        if self._append_fd is not None:
            os.close(self._append_fd)
            self._append_fd = None
        return segment

    def close(self) -> None:
        """Close the file appended to (once the committer has stopped)."""
        if self._append_fd is not None:
            os.close(self._append_fd)
            self._append_fd = None

    # -- reading (lock held)

    def spans(self, first: int, last: int, limit: int) -> list[Span]:
        """Byte ranges holding the records ``first..last`` (all on disk), at most
        ``limit`` bytes in all (at least one record); missing seqs are skipped."""
        spans: list[Span] = []
        budget = limit
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

    def next_present(self, seq: int) -> int | None:
        """The first seq from ``seq`` on that a segment holds (records lost to damage
        are skipped); None when there is none."""
        for segment in self._segments:
            if segment.last < seq:
                continue
            for index in range(max(seq, segment.first) - segment.first,
                               len(segment.starts)):
                if segment.starts[index] >= 0:
                    return segment.first + index
        return None

    # -- acknowledgements (lock held)

    def acknowledge(self, seq: int) -> None:
        """Everything up to ``seq`` is acknowledged: delete the segments that hold
        nothing else (see :meth:`_drop_acked`)."""
        self.acked = max(self.acked, seq)
        self._drop_acked()

    def _drop_acked(self) -> None:
        """Delete every segment all of whose seqs are acknowledged, but the newest one
        that holds records (its last record tells a restarted source where it was)."""
        keep = max((i for i, segment in enumerate(self._segments) if segment.size),
                   default=len(self._segments) - 1)
        while keep > 0 and self._segments[0].last <= self.acked:
            segment = self._segments.pop(0)
            self.disk_bytes -= segment.size
            segment.path.unlink(missing_ok=True)
            keep -= 1
        self.acked_bytes = self._count_acked_bytes()

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


def records_of(spans: Iterable[Span]) -> Iterator[bytes]:
    """The records the spans hold (for tests and tools; the sender sends spans whole)."""
    for span in spans:
        with span.path.open("rb") as handle:
            handle.seek(span.offset)
            yield from handle.read(span.length).splitlines(keepends=True)
