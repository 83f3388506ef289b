"""The coverage ledger: what a source has read without a break, and every break, as
sealed records through the journal.

A source's hooks feed a :class:`CoverageLedger` (docs/design.md, "Coverage"):

* a **span** is source time read without a break, on one host: it opens at the
  first event (post) read after a break, grows with each one (:meth:`note`) and
  is sent as a ``coverage`` record, with its counts, as it opens, about once a
  minute, at each break and at stop (the same random span id each time: the job
  keeps the latest);
* a **gap** is source time not read, with its reason (``wire_records.GAP_REASONS``):
  sent as a ``gap`` record once the source knows its end (:meth:`gap`), or, for
  posts refused, as it grows (:meth:`refused`);
* a **filter** record says which keywords (X: rules) choose the posts from now on.

Source time is the source's own clock, in microseconds since the epoch
(Jetstream's ``time_us``; X: the posts' ``created_at``; a replay: when it read).
Each record is sealed with the control secret and put in the journal like a post,
so it reaches the job exactly once and in order with the posts; one the journal
refuses (full) waits in :attr:`pending` and goes first once there is room. The
span in progress is kept in a small file beside the journal (:data:`STATE_FILE`),
so that a restarted producer closes it where the last run stopped reading, and
goes on with it when nothing was missed in between.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import wire_records
from journal import write_atomically
from sources import Emit

log = logging.getLogger(__name__)

#: (events, posts, matched, refused): a source's totals since it started
Counts = tuple[int, int, int, int]
#: What seals a record with the control secret (``control.seal_record``)
Seal = Callable[[dict[str, Any]], dict[str, Any]]
#: The file beside the journal that keeps the span in progress across a restart.
STATE_FILE = "coverage.json"
#: why source time was not read (wire_records.GAP_REASONS, by name)
NOT_HONOURED, PAST_RETENTION, WATCHDOG_STALL, X_DISCONNECT, REFUSED = wire_records.GAP_REASONS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def moment(time_us: int) -> datetime:
    """A source time in microseconds since the epoch as an aware UTC datetime (exact)."""
    return _EPOCH + timedelta(microseconds=time_us)


def time_us_of(value: datetime) -> int:
    """An aware datetime as microseconds since the epoch (exact)."""
    return (value - _EPOCH) // timedelta(microseconds=1)


@dataclass
class Span:
    """Source time read without a break on one ``host``: ``start`` to ``end`` (µs), and
    the source's totals when it opened (``base``: its counts are the totals minus these)."""

    span: str
    host: str
    start: int
    end: int
    base: Counts

    def counts(self, totals: Counts) -> Counts:
        a, b, c, d = (max(0, total - base) for total, base in zip(totals, self.base,
                                                                  strict=True))
        return a, b, c, d


class CoverageLedger:
    """The spans and gaps of one source, sent as sealed records with ``put``.

    ``put(record, position)`` is the journal's (``TweetServer.put`` with
    ``will_retry``: a refusal is kept here and tried again, never counted);
    ``seal`` adds the mac; ``position()`` is what the source puts beside a record
    (a replay's position: the journal's last record says where to resume; None
    elsewhere). The source sets :attr:`counts` to its totals. ``state_path``:
    the file that keeps the span in progress (None: none kept)."""

    #: A span in progress is sent again at most this often (and at each break, at stop).
    UPDATE_SECONDS = 60.0

    def __init__(self, source: str, put: Emit, seal: Seal, *,
                 state_path: Path | None = None,
                 position: Callable[[], Any] = lambda: None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if source not in wire_records.RECORD_SOURCES:
            raise ValueError(f"unknown source {source!r}")
        self.source = source
        self._put = put
        #: what seals a record (the source seals its deletes with it too)
        self.seal = seal
        #: what the source puts beside a record in the journal
        self.position = position
        self._monotonic = monotonic
        self.state_path = state_path
        #: the source's totals (events, posts, matched, refused); the source sets it
        self.counts: Callable[[], Counts] = lambda: (0, 0, 0, 0)
        #: the span in progress (None before the first event, and after a stop)
        self.span: Span | None = None
        #: the last run's span in progress, from the state file: closed at start, and
        #: gone on with if the first event shows nothing was missed (:meth:`carry_on`)
        self.previous: Span | None = None
        #: the newest source time read (this run, or the last one's, from the state file)
        self.last_us: int | None = None
        #: records the journal refused, first to go once it takes records again
        self.pending: list[dict[str, Any]] = []
        #: gaps recorded since start, and the source seconds they cover
        self.gaps = 0
        self.gap_seconds = 0.0
        self._sent: tuple[str, int, Counts] | None = None  # the last span record sent
        self._refusal: list[Any] | None = None  # [host, start, end, refused] of posts refused
        self._due = monotonic() + self.UPDATE_SECONDS
        self._load_state()

    # -- what the source reads

    def declare(self, *, keywords: list[str] | None = None,
                rules: list[dict[str, str]] | None = None) -> None:
        """Send the keyword set (X: rule set) in force from now on (a filter record)."""
        self._send(wire_records.filter_record(self.source, keywords=keywords, rules=rules))

    def note(self, time_us: int) -> None:
        """An event (post) read at source time ``time_us``: the span grows to it."""
        span = self.span
        if span is not None and time_us > span.end:
            span.end = time_us
        if self.last_us is None or time_us > self.last_us:
            self.last_us = time_us

    def open(self, host: str, start_us: int, *, counted: Counts | None = None) -> None:
        """A new span from ``start_us`` on ``host``, after a break (the one in progress
        is sent first, as it ends); sent at once, so that a restart knows of it. Its
        counts start at 0, or from the source's totals as they were ``counted``."""
        self.close_span()
        self.previous = None  # not gone on with: closed at start (restart) as it stood
        base = self.counts() if counted is None else counted
        self.span = Span(secrets.token_hex(8), host, start_us, start_us, base)
        self.note(start_us)
        self._send_span(self.span, self.span.counts(self.counts()))

    def carry_on(self, host: str) -> bool:
        """Whether reading on ``host`` goes on with the span in progress (the same
        host, no gap between: True), or with the last run's when none is in progress
        yet and it was on ``host``; False: the caller opens a new one."""
        if self.span is not None:
            return self.span.host == host
        previous, self.previous = self.previous, None
        if previous is None or previous.host != host:
            return False
        self.span = previous  # its counts go on from the last run's (its base is theirs)
        return True

    def restart(self, last_us: int) -> None:
        """A restarted source read up to ``last_us`` before it stopped (its cursor):
        the last run's span ends there, if it reached no further."""
        previous = self.previous
        if previous is None:
            return
        previous.end = max(previous.end, last_us)
        self._send_span(previous, previous.counts((0, 0, 0, 0)))

    def gap(self, host: str, start_us: int, end_us: int, reason: str,
            refused: int = 0) -> None:
        """Source time ``start_us`` to ``end_us`` not read on ``host``, and why."""
        end_us = max(start_us, end_us)
        self.gaps += 1
        self.gap_seconds += (end_us - start_us) / 1e6
        log.warning("coverage: %s of %s source time not read (%s to %s, %s)",
                    _duration(end_us - start_us), self.source, _iso(start_us), _iso(end_us),
                    reason)
        self._send(wire_records.gap_record(self.source, host, moment(start_us),
                                           moment(end_us), reason, refused))

    def refused(self, host: str, time_us: int) -> None:
        """A post at ``time_us`` that the journal refused (X: lost): a gap of reason
        ``refused`` from the last post accepted before it, to the first accepted
        after (:meth:`accepted`), sent as it grows."""
        run = self._refusal
        if run is None:
            start = self.last_us if self.last_us is not None else time_us
            run = self._refusal = [host, min(start, time_us), time_us, 0]
            self.gaps += 1
        run[2] = max(run[2], time_us)
        run[3] += 1

    def accepted(self, time_us: int) -> None:
        """A post at ``time_us`` was accepted: a run of refused posts ends at it."""
        if self._refusal is not None:
            self._refusal[2] = max(self._refusal[2], time_us)
            self._send_refusal()
            self.gap_seconds += (self._refusal[2] - self._refusal[1]) / 1e6
            self._refusal = None
        self.note(time_us)

    # -- sending

    def tick(self) -> None:
        """Send the span in progress if UPDATE_SECONDS have passed (cheap otherwise)."""
        if self._monotonic() >= self._due:
            self.update()

    def update(self) -> None:
        """Send what changed: the records waiting, the span in progress (if it grew),
        a run of refused posts; keep the span in the state file."""
        self._due = self._monotonic() + self.UPDATE_SECONDS
        self.flush()
        if self.span is not None:
            self._send_span(self.span, self.span.counts(self.counts()))
        if self._refusal is not None:
            self._send_refusal()

    def close_span(self) -> None:
        """The span in progress ends (a break): sent one last time."""
        if self.span is not None:
            self._send_span(self.span, self.span.counts(self.counts()))
            self.span = None

    def close(self) -> None:
        """At stop: send what is left (the span stays open in the state file, for the
        next run to close or go on with)."""
        self.update()
        if self._refusal is not None:
            self.gap_seconds += (self._refusal[2] - self._refusal[1]) / 1e6
            self._refusal = None
        if self.pending:
            log.warning("coverage: %d record(s) could not be journaled before the stop "
                        "(the journal is full); the span is kept in %s", len(self.pending),
                        self.state_path)

    def flush(self) -> bool:
        """Put the records the journal refused earlier, oldest first; True once none
        is left waiting."""
        while self.pending:
            if not self._put(self.pending[0], self.position()):
                return False
            del self.pending[0]
        return True

    def _send(self, record: dict[str, Any]) -> None:
        sealed = self.seal(record)
        if not self.flush() or not self._put(sealed, self.position()):
            self.pending.append(sealed)

    def _send_span(self, span: Span, counts: Counts) -> None:
        if self._sent == (span.span, span.end, counts):
            return  # nothing new
        events, posts, matched, refused = counts
        self.pending = [record for record in self.pending if record.get("span") != span.span]
        self._send(wire_records.coverage_record(
            span.span, self.source, span.host, moment(span.start), moment(span.end),
            events=events, posts=posts, matched=matched, refused=refused))
        self._sent = (span.span, span.end, counts)
        self._save_state(span, counts)

    def _send_refusal(self) -> None:
        assert self._refusal is not None
        host, start, end, refused = self._refusal
        record = wire_records.gap_record(self.source, host, moment(start), moment(end),
                                         REFUSED, refused)
        self.pending = [pending for pending in self.pending
                        if (pending.get("kind"), pending.get("from")) != ("gap", record["from"])]
        self._send(record)

    # -- the state file

    def _save_state(self, span: Span, counts: Counts) -> None:
        if self.state_path is None:
            return
        state = {"source": self.source, "span": span.span, "host": span.host,
                 "from": span.start, "to": span.end, "counts": list(counts),
                 "last": self.last_us}
        try:
            write_atomically(self.state_path, json.dumps(state))
        except OSError as err:
            log.warning("cannot save the coverage span to %s: %s", self.state_path,
                        err.strerror or err)

    def _load_state(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            counts = tuple(int(n) for n in state["counts"])
            span = Span(str(state["span"]), str(state["host"]), int(state["from"]),
                        int(state["to"]), tuple(-n for n in counts))  # type: ignore[arg-type]
            last = state.get("last")
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("ignoring %s (%s): the last run's span stays as it was sent",
                        self.state_path, err)
            return
        if state.get("source") != self.source or len(counts) != 4:
            return  # another source's span: nothing to go on with
        self.previous = span
        self.last_us = max(span.end, last) if type(last) is int else span.end


def _iso(time_us: int) -> str:
    return wire_records.iso_time(moment(time_us))


def _duration(microseconds: int) -> str:
    seconds = microseconds / 1e6
    return f"{seconds:,.1f} s" if seconds < 600 else f"{seconds / 60:,.0f} min"
