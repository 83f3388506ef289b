"""How far a Jetstream reader has got: counters, status line, cursor and cursor file.

:class:`JetstreamProgress` is the bookkeeping of :class:`sources.bluesky.BlueskySource`
with no network code in it; :class:`Resume` is what its cursor file holds.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from journal import Checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resume:
    """Where a restarted source goes on: the last event's time and the posts
    handled just before it (a rewind delivers them again)."""

    time_us: int
    recent: tuple[tuple[str, int], ...]  # (post uri, time_us), oldest first

    def dumps(self) -> str:
        return json.dumps({"time_us": self.time_us, "recent": [list(r) for r in self.recent]})

    @classmethod
    def loads(cls, text: str) -> Resume:
        """Raises ValueError when ``text`` is not a cursor file's content."""
        data = json.loads(text)
        time_us, recent = data["time_us"], data.get("recent", [])
        if type(time_us) is not int or not isinstance(recent, list):
            raise ValueError("not a cursor")
        pairs = tuple((uri, at) for uri, at in recent
                      if isinstance(uri, str) and type(at) is int)
        return cls(time_us, pairs)


class JetstreamProgress:
    """How far a Jetstream reader has got, with no network code in it.

    It keeps the counters (:attr:`events`, :attr:`posts`, :attr:`matched`,
    ...) and the once-a-minute :meth:`status` line, the last event's time
    (:attr:`last_time_us`: a reconnect resumes a little before it), the posts
    handled lately (:attr:`recent`: what a rewind brings again is dropped) and
    the cursor file that keeps both across a restart. :class:`BlueskySource`
    is the connection loop built on it; the constants below are the policy.
    """

    #: File (in the journal's folder) keeping where to resume after a restart.
    CURSOR_FILE = "jetstream-cursor.json"
    #: A reconnect resumes this many seconds before the last event handled: each
    #: host stamps time_us with its own clock, and events come slightly out of order.
    REWIND_SECONDS = 5.0
    #: The cursor file is rewritten at most this often (each write, and the journal
    #: sync before it, costs fsyncs). A cursor this stale loses nothing: a restart
    #: resumes REWIND_SECONDS before the later of it and the journal's last post, and
    #: the posts a rewind brings again are dropped by id; it only re-reads a few
    #: seconds more of events (at 50 events/s, 250 more a crash).
    CURSOR_SAVE_SECONDS = 5.0
    #: Jetstream hosts keep about 24 h of events (v1) or 36 h (v2); a cursor older
    #: than the shorter is warned about.
    RETENTION_SECONDS = 24 * 3600.0
    #: Post ids remembered to drop what a rewind brings again.
    RECENT_POSTS = 20_000
    #: Ids of deleted posts remembered (about an hour of the network's deletes): a
    #: rewind that brings a delete again, or the post it deleted, has it dropped.
    RECENT_DELETES = 20_000
    #: How long the ids of posts handled stay in the cursor file, past the rewind.
    RECENT_KEEP_SECONDS = 120.0

    def __init__(
        self,
        *,
        cursor_path: Path | None = None,
        before_cursor_save: Callable[[], None] | None = None,
        journaled: Iterable[dict[str, Any]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Loads the cursor file at ``cursor_path`` when there is one, then
        remembers the ``journaled`` records' posts (see :class:`BlueskySource`)."""
        self.cursor_path = cursor_path
        self._checkpoint = (None if cursor_path is None else
                            Checkpoint(cursor_path, "Jetstream cursor",
                                       every=self.CURSOR_SAVE_SECONDS,
                                       before=before_cursor_save))
        self._clock = clock
        #: frames received
        self.events = 0
        #: new posts with text among them
        self.posts = 0
        #: posts that matched the keywords and were handed to emit
        self.matched = 0
        #: deletes of posts forwarded (as sealed delete records, in order with the posts)
        self.deletes = 0
        #: matching posts and deletes dropped because a rewind delivered them again
        self.repeats = 0
        #: times reading stopped because emit refused a post (the journal was full; the
        #: post is read again, not lost), and the seconds those pauses lasted
        self.pauses = 0
        self.paused_seconds = 0.0
        #: time.monotonic() when the pause under way began (None: reading)
        self.paused_since: float | None = None
        #: frames that were not events, and post records without text
        self.malformed = 0
        #: events too big to carry, skipped (see :mod:`sources.oversize`)
        self.oversize = 0
        #: connections made after the first
        self.reconnects = 0
        self.url: str | None = None  # the host in use
        #: the time_us of the newest event handled (None before any): never moves
        #: back, also when a rewind or a v2 host's archive segment brings older ones
        self.last_time_us: int | None = None
        #: post uri -> time_us of the posts handled lately, oldest first
        self.recent: OrderedDict[str, int] = OrderedDict()
        #: post uri -> time_us of the deletes forwarded lately, oldest first
        self.deleted: OrderedDict[str, int] = OrderedDict()
        self._saved_time_us: int | None = None
        self._save_due = 0.0  # time.monotonic() from which save_cursor writes again
        self._load_cursor()
        self._remember_journaled(journaled)
        #: the last event's time_us a restart goes on from (the cursor file or the
        #: journal's last posts), None for a first start
        self.resumed_from = self.last_time_us

    # -- status

    def lag_seconds(self) -> float | None:
        """Now minus the newest event's time_us, in seconds (None before any event)."""
        if self.last_time_us is None:
            return None
        return self._clock() - self.last_time_us / 1e6

    def status(self) -> str:
        """One status line: events, posts, matches, reconnects and lag; and, once the
        journal has been full, the pauses (a pause under way first)."""
        lag = self.lag_seconds()
        line = (f"bluesky: {self.events:,} events, {self.posts:,} posts, {self.matched:,} "
                f"matched, {self.deletes:,} deletes ({self.repeats:,} repeats dropped, "
                f"{self.malformed:,} malformed, {self.oversize:,} oversize skipped), "
                f"{self.reconnects:,} reconnects, lag "
                + ("-" if lag is None else f"{lag:.1f} s")
                + (f", host {self.url}" if self.url else ""))
        if self.pauses:
            ongoing = 0.0 if self.paused_since is None else time.monotonic() - self.paused_since
            if self.paused_since is not None:
                line += f"; paused (journal full) for {ongoing:,.0f} s"
            line += (f"; {self.pauses:,} pauses for a full journal, "
                     f"{self.paused_seconds + ongoing:,.0f} s in all")
        return line

    # -- the cursor

    def resume_cursor(self) -> int | None:
        """The cursor a connection asks for: REWIND_SECONDS before the last
        event handled, or None (the live tip) before any."""
        if self.last_time_us is None:
            return None
        return max(1, self.last_time_us - int(self.REWIND_SECONDS * 1_000_000))

    def note_time(self, time_us: int) -> None:
        """Note an event's time: :attr:`last_time_us` (hence the cursor file and
        the lag) only ever moves forward."""
        if self.last_time_us is None or time_us > self.last_time_us:
            self.last_time_us = time_us

    def remember_post(self, uri: str, time_us: int | None) -> None:
        """Note a post handed on, so that a rewind bringing it again is dropped
        (the oldest is forgotten past RECENT_POSTS)."""
        self.recent[uri] = time_us or 0
        if len(self.recent) > self.RECENT_POSTS:
            self.recent.popitem(last=False)

    def remember_deleted(self, uri: str, time_us: int | None) -> None:
        """Note a delete forwarded, so that a rewind bringing it again, or the post it
        deleted, is dropped (the oldest is forgotten past RECENT_DELETES)."""
        self.deleted[uri] = time_us or 0
        if len(self.deleted) > self.RECENT_DELETES:
            self.deleted.popitem(last=False)

    def _remember_journaled(self, records: Iterable[dict[str, Any]]) -> None:
        """Posts and deletes the journal already holds: not to be emitted again."""
        for record in records:
            uri, at = record.get("id"), record.get("pos")
            if isinstance(uri, str) and uri.startswith("at://") and type(at) is int:
                if record.get("kind") == "delete":
                    self.deleted[uri] = at
                elif "kind" not in record:
                    self.recent[uri] = at
                else:
                    continue
                if self.last_time_us is None or at > self.last_time_us:
                    self.last_time_us = at

    def _load_cursor(self) -> None:
        if self.cursor_path is None or not self.cursor_path.exists():
            return
        try:
            resume = Resume.loads(self.cursor_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("ignoring the Jetstream cursor file %s (%s): starting from the live "
                        "tip", self.cursor_path, err)
            return
        self.last_time_us = self._saved_time_us = resume.time_us
        self.recent.update(resume.recent)

    def cursor_save_in(self) -> float | None:
        """Seconds until :meth:`save_cursor` would write the newest event's time
        (0: now), or None when the cursor file already has it (or there is no
        file): how long a reader with no event to read may wait before it saves."""
        if (self._checkpoint is None or self.last_time_us is None
                or self.last_time_us == self._saved_time_us):
            return None
        return max(0.0, self._save_due - time.monotonic())

    def save_cursor(self, *, force: bool = False) -> None:
        """Write the cursor file (at most every CURSOR_SAVE_SECONDS unless ``force``).

        Never raises: a failed write is logged once, and the previous file stays.
        """
        if self._checkpoint is None or self.last_time_us is None:
            return
        if self.last_time_us == self._saved_time_us or (
                not force and not self._checkpoint.due()):
            return
        keep_after = self.last_time_us - int(
            (self.REWIND_SECONDS + self.RECENT_KEEP_SECONDS) * 1_000_000)
        recent = tuple((uri, at) for uri, at in self.recent.items() if at >= keep_after)
        saved = self._checkpoint.save(Resume(self.last_time_us, recent).dumps(), force=force)
        self._save_due = time.monotonic() + self._checkpoint.every  # the checkpoint's own, or later
        if saved:
            self._saved_time_us = self.last_time_us
