"""What a Jetstream reader does with each frame: :class:`JetstreamHandler`.

Each frame is read (:func:`sources.bluesky_events.read_event`); a new post that
matches the keywords goes to ``emit`` as a wire tweet carrying ``matched``, and a
delete of a post goes to ``emit`` as a sealed delete record (every one, whether
its post matched or not: the producer cannot know the posts of weeks ago), both
with their event's ``time_us``, in the order the host sent them. What a rewind
brings again is dropped: a post or a delete handled lately, and the post of a
delete handled lately (a rewind never sends a post its author deleted on again).
A refusal (the journal is full) stops the reading, which goes on from that event
once there is room (:class:`sources.bluesky.BlueskySource`). Events too big to
carry are skipped (:mod:`sources.oversize`). Each event's time feeds the cursor,
the hooks' first-event rule and the coverage ledger.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import wire_records
from sources import Emit
from sources.bluesky_events import (
    DELETE,
    MALFORMED,
    Deletion,
    KeywordMatcher,
    read_event,
    wire_tweet,
)
from sources.coverage import CoverageLedger, Seal, moment
from sources.jetstream_hooks import JetstreamHooks
from sources.oversize import OversizeSkip

log = logging.getLogger("sources.bluesky")  # the source's one logger

#: Where an event's ``time_us`` is found without parsing it: Jetstream writes it
#: among the first fields.
_TIME_US = re.compile(r'"time_us"\s*:\s*(\d{1,20})')


class JetstreamHandler(JetstreamHooks):
    """The frames of a Jetstream reader: posts and deletes to ``emit``, the rest
    counted; the connection loop is :class:`sources.bluesky.BlueskySource`'s."""

    #: At most one warning about malformed frames per this many seconds.
    MALFORMED_WARNING_SECONDS = 60.0

    def __init__(self, matcher: KeywordMatcher, emit: Emit, *, max_event_bytes: int,
                 seal: Seal | None = None, ledger: CoverageLedger | None = None,
                 cursor_path: Path | None = None,
                 before_cursor_save: Callable[[], None] | None = None,
                 journaled: Iterable[dict[str, Any]] = (),
                 clock: Callable[[], float] = time.time) -> None:
        """``seal`` makes a delete record authentic (without it deletes are skipped,
        as other events are); ``ledger`` is told of each event and break."""
        self.matcher = matcher
        self._emit = emit
        self._seal = seal
        self.ledger = ledger
        self.max_event_bytes = max_event_bytes
        self._last_malformed_warning = -float("inf")
        self._skip = OversizeSkip()
        self._asked: int | None = None  # the cursor the current connection asked for
        self._newest_here: int | None = None  # its newest event at or after that cursor
        self._first_here = False  # whether the current connection has had an event yet
        #: (host, time_us) of the first event emit refused: reading stops, and goes on
        #: from there (on that host) once there is room
        self._refused_at: tuple[str, int | None] | None = None
        super().__init__(cursor_path=cursor_path, before_cursor_save=before_cursor_save,
                         journaled=journaled, clock=clock)
        if ledger is not None:
            ledger.counts = lambda: (self.events, self.posts, self.matched, 0)

    def status(self) -> str:
        """The status line (:meth:`JetstreamProgress.status`), and the gaps in the
        coverage once there are any."""
        line = super().status()
        ledger = self.ledger
        if ledger is not None and ledger.gaps:
            line += (f"; {ledger.gaps:,} gaps in the coverage "
                     f"({ledger.gap_seconds:,.1f} s of source time)")
        return line

    def on_frame(self, frame: str | bytes) -> None:
        """Handle one frame: a matching new post, or a delete, goes to ``emit``; one
        ``emit`` refuses stops the reading (:meth:`on_pause`)."""
        if len(frame) * 4 > self.max_event_bytes and _size(frame) > self.max_event_bytes:
            self.on_oversize(frame)
            self.events += 1
            return
        verdict, what, time_us = read_event(frame)
        if time_us is not None:
            self._note_event(time_us)  # first: a span it opens counts it
        self.events += 1
        if what is None:
            if verdict == MALFORMED:
                self._malformed(frame)
            return
        if verdict == DELETE:
            assert isinstance(what, Deletion)
            self._delete(what, time_us)
            return
        self.posts += 1
        matched = self.matcher.matching(what.text, what.tags)  # type: ignore[union-attr]
        if not matched:
            return
        uri = what.uri
        if uri in self.recent or uri in self.deleted:
            self.repeats += 1  # a rewind brought it again (or its delete came already)
            return
        if not self._hand_on(wire_tweet(what, matched), time_us):  # type: ignore[arg-type]
            return
        self.matched += 1
        self.remember_post(uri, time_us)

    def _delete(self, deletion: Deletion, time_us: int | None) -> None:
        """Forward a delete as a sealed record (once: a rewind's repeat is dropped)."""
        if self._seal is None:
            return
        uri = deletion.uri
        if uri in self.deleted:
            self.repeats += 1
            return
        at = moment(time_us) if time_us is not None else moment(int(self._clock() * 1e6))
        if not self._hand_on(self._seal(wire_records.delete_record(uri, at)), time_us):
            return
        self.deletes += 1
        self.remember_deleted(uri, time_us)

    def _hand_on(self, line: dict[str, Any], time_us: int | None) -> bool:
        """``emit`` a post or a record, the ledger's waiting records first; on a
        refusal, reading stops (to go on from this event) and False is returned."""
        ledger = self.ledger
        if (ledger is None or not ledger.pending or ledger.flush()) \
                and self._emit(line, time_us):
            return True
        self._refused_at = (self.url or "", time_us)
        self.paused_since = time.monotonic()
        self.pauses += 1
        return False

    def _malformed(self, frame: str | bytes) -> None:
        self.malformed += 1
        now = time.monotonic()
        if now - self._last_malformed_warning >= self.MALFORMED_WARNING_SECONDS:
            self._last_malformed_warning = now
            log.warning("skipping a Jetstream frame that is no event or a post without "
                        "text (%d so far): %.80r", self.malformed, frame)

    def _note_event(self, time_us: int) -> None:
        """An event's time: the cursor and lag, the oversize rule, the first event
        of the connection, the end of a pause once it is read again, the ledger."""
        self.note_time(time_us)
        if self._asked is None or time_us >= self._asked:
            self._newest_here = max(time_us, self._newest_here or time_us)
            self._skip.event(time_us)
        if not self._first_here:
            self._first_here = True
            self.on_first_event(self.url or "", self._asked, time_us)
        if self._refused_at is not None and time_us > (self._refused_at[1] or 0):
            self._refused_at = None  # read past the refused post: its cursor is spent
        if self.ledger is not None:
            self.ledger.note(time_us)

    # -- events skipped (hooks too: see sources.jetstream_hooks)

    def on_oversize(self, frame: str | bytes) -> None:
        """Called with an event over ``max_event_bytes`` that the host sent anyway (it
        ignored ``maxMessageSizeBytes``): skipped, counted and logged, unparsed."""
        head = frame[:256] if isinstance(frame, str) else frame[:256].decode("utf-8", "replace")
        found = _TIME_US.search(head)
        time_us = int(found.group(1)) if found else None
        if time_us is not None:
            self._note_event(time_us)
        self.oversize += 1
        log.warning("skipping a Jetstream event over %d bytes (%d bytes, time_us %s) from %s "
                    "(%d skipped so far)", self.max_event_bytes, _size(frame), time_us,
                    self.url, self.oversize)

    def on_too_big(self, url: str) -> None:
        """Called when ``url`` sent an event over ``max_event_bytes`` (the host
        ignored ``maxMessageSizeBytes``): the next connection goes past it."""
        if self._skip.too_big(url, self._asked, self._newest_here):
            self.oversize += 1
            log.warning("skipping a Jetstream event over %d bytes from %s, after the event of "
                        "time_us %s (%d skipped so far)", self.max_event_bytes, url,
                        self._newest_here, self.oversize)
        else:
            log.debug("the event over %d bytes came first again from %s", self.max_event_bytes,
                      url)


def _size(frame: str | bytes) -> int:
    """A frame's size in bytes, as the host counts it."""
    return len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "replace"))
