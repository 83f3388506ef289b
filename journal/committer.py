"""The producer journal's committer: the thread that writes what was put, many tweets at a time.

:class:`Committer` holds the queue of records put and not on disk yet. Its
thread waits for a short window from the first record queued (``window``
seconds, or until ``window_bytes`` are queued), takes the whole queue,
appends it to the segment files and fsyncs them (a group commit), then moves
:attr:`committed`: a trickle of tweets shares one fsync per window instead of
paying one each. A commit that took longer than the window (saturation) is
followed at once by the next.
A write that fails (a full disk) sets :attr:`disk_error`: the journal
refuses new tweets while what was put is kept, and written as soon as a
retry works.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from journal.files import DISK_FULL
from journal.segments import SegmentFiles

log = logging.getLogger("journal")  # the journal's one logger: its lines read as before


class Committer(threading.Thread):
    """The group-commit thread of a journal, and the queue it writes.

    ``changed`` is the journal's condition: the queue, :attr:`committed`,
    :attr:`disk_error` and :attr:`closing` change under it, and it is
    notified after each commit. :meth:`queue` is called with it held.
    """

    #: how often a refused commit (full disk) is tried again
    RETRY_SECONDS = 0.5
    #: the window's default: a tweet is on disk at most this long after it was put
    #: (plus the write itself)
    WINDOW_SECONDS = 0.005
    #: a window ends early once this many bytes are queued
    WINDOW_BYTES = 256 * 1024

    def __init__(self, segments: SegmentFiles, changed: threading.Condition,
                 committed: int, window: float = WINDOW_SECONDS,
                 window_bytes: int = WINDOW_BYTES) -> None:
        super().__init__(name="journal-commit", daemon=True)
        if window < 0 or window_bytes < 1:
            raise ValueError("the commit window must be >= 0 s and >= 1 byte")
        self.segments = segments
        self.changed = changed
        self.window = window
        self.window_bytes = window_bytes
        self._window_opened = 0.0  # when the first record of the queue was put
        #: the highest seq on disk
        self.committed = committed
        self.disk_error: str | None = None  # why commits fail now (None: they work)
        #: tweets refused while the disk refuses writes (counted by the journal's put)
        self.refused_disk = 0
        self.pending: list[bytes] = []  # records put, not committed yet, in seq order
        self.pending_bytes = 0
        self.in_flight = 0  # records the committer is writing now
        self.closing = False
        #: called (from the committer thread) after each commit
        self.on_commit: Callable[[], None] | None = None

    def queue(self, records: list[bytes], size: int) -> None:
        """Queue ``records`` (``size`` bytes in all; the seqs after the last one queued)
        for the next commit (``changed`` held)."""
        was_empty, before = not self.pending, self.pending_bytes
        self.pending.extend(records)
        self.pending_bytes += size
        if was_empty:
            self._window_opened = time.monotonic()
            self.changed.notify_all()
        elif self.pending_bytes >= self.window_bytes > before:
            self.changed.notify_all()  # the window is full: commit now

    def wait_committed(self, target: int, timeout: float | None = None) -> bool:
        """Wait until every seq up to ``target`` is on disk; False at once while the disk
        refuses writes, and when ``timeout`` passed first or the journal closed."""
        with self.changed:
            self.changed.wait_for(lambda: self.committed >= target or self.closing
                                  or self.disk_error is not None, timeout)
            return self.committed >= target

    # -- the thread

    def run(self) -> None:
        """The group commit: write the whole queue, again and again, until closing."""
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.pending or self.closing)
                if not self.pending:
                    return  # closing, and nothing left to write
                self._gather()
                batch, self.pending = self.pending, []
                self.in_flight = len(batch)
                first = self.committed + 1
            written, error = self.segments.write(first, batch)
            with self.changed:
                if written:
                    # what is on disk moves from the queue to the disk in one step (put's bound)
                    size = sum(map(len, batch[:written]))
                    self.pending_bytes -= size
                    self.segments.disk_bytes += size
                    self.committed = first + written - 1
                if error is None:
                    self._recovered()
                else:
                    self.pending[:0] = batch[written:]  # kept, in order, for the next try
                    self._failed(error)
                self.in_flight = 0
                self.changed.notify_all()
                if error is not None and not self.closing:
                    self.changed.wait(self.RETRY_SECONDS)
            if written and self.on_commit is not None:
                self.on_commit()
            if error is not None and self.closing:
                return

    def _gather(self) -> None:
        """Let the window fill (lock held): until ``window`` seconds after its first
        record was put, ``window_bytes`` are queued, or the journal closes."""
        left = self._window_opened + self.window - time.monotonic()
        if left > 0:
            self.changed.wait_for(
                lambda: self.pending_bytes >= self.window_bytes or self.closing, left)

    def _failed(self, err: OSError) -> None:
        """A commit failed (lock held): refuse new tweets until one works again."""
        reason = (f"the disk is full ({err.strerror})" if err.errno in DISK_FULL
                  else f"cannot write ({err.strerror or err})")
        if self.disk_error is None:
            log.error("journal %s: %s: refusing new tweets until it can write again; the %d "
                      "tweets put and not yet written are kept", self.segments.path, reason,
                      len(self.pending))
        self.disk_error = reason

    def _recovered(self) -> None:
        if self.disk_error is not None:
            log.warning("journal %s: writing again; %d tweets were refused meanwhile",
                        self.segments.path, self.refused_disk)
            self.disk_error = None

    # -- closing

    def stop(self, timeout: float) -> bool:
        """Write what was queued (waiting at most ``timeout`` s), then end the thread.

        True once it has ended; False when it was stopped before, or when a write
        is still under way after that (logged: its files must stay open).
        """
        with self.changed:
            if self.closing:
                return False
            deadline = time.monotonic() + timeout
            self.changed.wait_for(lambda: not self.pending or self.disk_error is not None,
                                  timeout)
            self.closing = True
            self.changed.notify_all()
        self.join(max(0.0, deadline - time.monotonic()) + self.RETRY_SECONDS)
        with self.changed:
            left = len(self.pending) + self.in_flight
        if left:
            log.error("journal %s: %d tweets put could not be written before closing",
                      self.segments.path, left)
        if self.is_alive():
            log.error("journal %s: a write is still under way; leaving the journal to it",
                      self.segments.path)
            return False
        return True
