"""Where a Jetstream reader's reading breaks or goes on: the named hooks of BlueskySource.

Source time on Jetstream is the host's ``time_us``, and a cursor names it. Each
hook below is called at a moment that can leave source time unread (a gap) or
that bounds one, with what a record of gaps needs: the host, the cursor asked
for, the first event a connection brought, the last event before a silence or
a pause. The defaults log, and feed the reader's coverage ledger
(:class:`sources.coverage.CoverageLedger`, when it has one) by the rules below; a
subclass may override them, calling ``super()`` to keep both, in the manner of
tweepy's ``StreamingClient`` hooks.

The rules: a connection's first event tells whether anything was missed. It is
compared with the newest event handled before (after a rewind: the cursor asked
for is 5 s before it, and what lies between was read already), or with the cursor
itself after a pause or past a big event. Later by more than
:attr:`JetstreamHooks.GAP_TOLERANCE_US` means the host no longer held what lay
between: a gap from the one to the other, whose reason says what came before it
(a restart: ``restart past retention``; a silent host left by the watchdog:
``watchdog stall``; else ``cursor not honoured``). Earlier is no gap (a v2 host
starting at its archive segment). A span goes on over a reconnect to the same
host that missed nothing; a new one opens after a gap or on another host (each
host stamps ``time_us`` with its own clock). A silence that misses nothing (the
next host sends what the silent one did not) is no gap: only the log and the
reconnect counter tell of it.

* :meth:`JetstreamHooks.on_restart`: a start from a saved position (how old);
* :meth:`JetstreamHooks.on_connect` and :meth:`JetstreamHooks.on_first_event`:
  a (re)connection, the cursor it asked for and why, and the ``time_us`` of
  the first event it brought (later than the cursor by more than the usual
  spacing: the host no longer held what lay between);
* :meth:`JetstreamHooks.on_stale`: a host silent for ``stale_seconds``;
* :meth:`JetstreamHooks.on_connection_error`: a failed connection or a break;
* :meth:`JetstreamHooks.on_pause` and :meth:`JetstreamHooks.on_resume`: the
  journal refused a post (reading stops; no post is lost, but reading lags);
* ``BlueskySource.on_oversize`` and ``on_too_big``: an event skipped.
"""

from __future__ import annotations

import logging

from sources.coverage import NOT_HONOURED, PAST_RETENTION, WATCHDOG_STALL, CoverageLedger
from sources.jetstream_progress import JetstreamProgress

log = logging.getLogger("sources.bluesky")  # the source's one logger: its lines read as before

#: why a connection asks for its cursor (:meth:`JetstreamHooks.on_connect`)
LIVE = "live"  # no cursor: the live tip (a first start)
REWIND = "rewind"  # REWIND_SECONDS before the last event handled (a reconnect, a restart)
REFUSED = "refused"  # the time_us of the post the journal refused (after a pause)
OVERSIZE = "oversize"  # just past an event too big to read (sources.oversize)


class JetstreamHooks(JetstreamProgress):
    """The hooks of a Jetstream reader (see the module docstring); the defaults log."""

    #: set by the reader: the seconds of silence after which on_stale is called
    stale_seconds: float
    #: set by the reader: its coverage ledger, if it keeps one
    ledger: CoverageLedger | None = None
    #: A connection's first event later than expected by more than this is a gap.
    #: Jetstream sends some 50 post events a second network-wide (with identity and
    #: account events between), so 2 s without one is about a hundred events' spacing,
    #: not a lull; and 2 s is within the 1 s-a-side any report of a gap asks for.
    GAP_TOLERANCE_US = 2_000_000
    _gap_reason: str | None = None  # what the break before the next first event was
    _expected: int | None = None  # the source time the next first event should not pass

    def on_restart(self, time_us: int, age_seconds: float) -> None:
        """Called as the reader starts from a saved position (the cursor file or the
        journal's last posts): the last event's ``time_us``, and how old it is.
        Older than the host keeps means the events between were not all kept."""
        self._gap_reason = PAST_RETENTION
        if self.ledger is not None:
            self.ledger.restart(time_us)
        if age_seconds > self.RETENTION_SECONDS:
            log.warning("the Jetstream cursor is %.1f h old; Jetstream hosts keep about 24 h "
                        "(v1) or 36 h (v2), so older posts may not be sent again",
                        age_seconds / 3600)
        else:
            log.info("resuming Bluesky posts from %s (%.0f s ago)", self.cursor_path,
                     age_seconds)

    def on_connect(self, url: str, asked: int | None, why: str) -> None:
        """Called once a host has answered: the cursor the connection asked for (None:
        the live tip) and why that one (:data:`LIVE`, :data:`REWIND`,
        :data:`REFUSED`, :data:`OVERSIZE`)."""
        self._expected = self.last_time_us if why == REWIND else asked
        if self._gap_reason is None:
            self._gap_reason = NOT_HONOURED
        if why == LIVE and self.ledger is not None:
            self.ledger.previous = None  # from the live tip: no going on with a last run's span
        if why == LIVE:
            log.info("connected to %s: live posts from now on", url)
        elif why == OVERSIZE:
            log.debug("connected to %s: trying cursor %s, past an event too big to carry",
                      url, asked)
        elif why == REFUSED:
            log.info("connected to %s: going on from the post the journal refused "
                     "(cursor %s)", url, asked)
        else:
            log.info("connected to %s: resuming %.0f s before the last event handled "
                     "(cursor %s)", url, self.REWIND_SECONDS, asked)

    def on_first_event(self, url: str, asked: int | None, time_us: int) -> None:
        """Called with the first event a connection brings: the cursor it asked for
        (None: the live tip) and that event's ``time_us``. Later than the cursor by
        more than the events' usual spacing means the host no longer held what lay
        between (a gap); earlier is a v2 host starting at its archive segment."""
        reason, expected = self._gap_reason or NOT_HONOURED, self._expected
        self._gap_reason = None
        ledger = self.ledger
        if expected is not None and time_us - expected > self.GAP_TOLERANCE_US:
            log.warning("%s did not send what lay between the last event read (time_us %d) "
                        "and its first (%d): %.1f s of posts missed (%s)", url, expected,
                        time_us, (time_us - expected) / 1e6, reason)
            if ledger is not None:
                ledger.close_span()
                ledger.gap(url, expected, time_us, reason)
                ledger.open(url, time_us)
        elif ledger is not None and not ledger.carry_on(url):
            ledger.open(url, time_us)

    def on_stale(self, url: str, last_time_us: int | None) -> None:
        """Called when no event has come for ``stale_seconds``: the host is silent.
        ``last_time_us``: the newest event handled before the silence."""
        if self._gap_reason != PAST_RETENTION:
            self._gap_reason = WATCHDOG_STALL
        if self.ledger is not None:
            self.ledger.update()
        log.warning("no event from %s for %g s; reconnecting to another host",
                    url, self.stale_seconds)

    def on_connection_error(self, url: str, err: BaseException) -> None:
        """Called when connecting fails or a connection breaks. Before the first
        connection this is only a debug line: NoHostError says it all."""
        if self.ledger is not None and self.url is not None:
            self.ledger.update()
        reason = " ".join(str(err).split()) or type(err).__name__
        level = logging.WARNING if self.url is not None else logging.DEBUG
        log.log(level, "Jetstream %s: %s; reconnecting with backoff", url, reason[:200])

    def on_pause(self, url: str, time_us: int | None) -> None:
        """Called when ``emit`` refused the post of the event at ``time_us`` (the journal
        is full, or the disk is), once the connection is closed and the cursor saved:
        reading waits for room, then goes on from that event."""
        if self.ledger is not None:
            self.ledger.update()  # whatever of it the journal takes now
        log.warning("the journal is full (or the disk is): reading Jetstream stops until "
                    "there is room, then goes on from the post it refused (time_us %s)", time_us)

    def on_resume(self, url: str, time_us: int | None, paused_seconds: float) -> None:
        """Called when there is room again after :meth:`on_pause`, before reconnecting
        from ``time_us`` (the refused post's) to ``url``."""
        if self.ledger is not None:
            self.ledger.flush()  # the ledger's records first, in order
        log.info("room in the journal again after %.1f s: reading Jetstream from %s on",
                 paused_seconds, time_us)
