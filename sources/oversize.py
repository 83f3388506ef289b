"""Getting past a Jetstream event too big to carry (a close with code 1009).

An event over the client's limit that still fits the WebSocket's read limit (16
times it) is read and skipped by its size in ``BlueskySource.on_oversize``, with
nothing lost; this module is for the rarer frame too big even to read.

The client asks the host to skip events over its frame limit
(``maxMessageSizeBytes``), but a v1 host may ignore that and send one anyway.
The client's WebSocket then closes the connection with 1009 (message too big)
before it could read the event, so its ``time_us`` is never known, and
resuming from the usual cursor would bring the same event again, forever.

:class:`OversizeSkip` is the rule for where to reconnect instead, with no
network code in it. On one host events come in ``time_us`` order and a cursor
``C`` replays the events with ``time_us >= C``:

* a connection that read events up to ``time_us`` ``L`` and then closed with
  1009 met an event ``X`` with ``time_us >= L``: the next connection, to the
  same host (another host stamps its own times), asks for ``L + 1``;
* a connection closed with 1009 before any event at or after its cursor ``C``
  means ``X`` is the first event from ``C`` on, and no event lies between
  ``C`` and ``X``: the next one asks for ``C + step``, the step being 1 ms,
  then doubling (2, 4, 8 ms, ...).

(v1 hosts replay from the exact cursor; v2 hosts, which restart at the start of
an archive segment, honour ``maxMessageSizeBytes`` and never get here.) Each
cursor is larger than the one before, so the host sends something else
after a bounded number of tries (about log2 of the gap in ms): it cannot loop.
The price: events stamped after ``X`` but before the cursor that got past it
are not seen. That window is shorter than the last step, about the gap between
``X`` and the event before it (under a millisecond or two on the live
firehose); with ``L + 1`` the events stamped in the very microsecond of ``L``
after ``X`` are not seen either. Once past, the (host, ``L``) pair and the
cursor that worked are remembered, so a later rewind that meets the same event
jumps over it at once and it is counted and logged only once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class _Probe:
    url: str
    after: int | None  # time_us of the last event before the big one, if known
    cursor: int  # the cursor being tried
    step: int  # added to ``cursor`` if the big event comes first again


class OversizeSkip:
    """Where to reconnect after closes with 1009; see the module docstring."""

    #: The second try moves the cursor this many microseconds, the next ones double it.
    STEP_US = 1_000
    #: Big events remembered (host, time_us before it) -> the cursor past it.
    REMEMBERED = 64

    def __init__(self) -> None:
        #: events skipped (each counted once, however many tries it took)
        self.skipped = 0
        self._probe: _Probe | None = None
        self._past: OrderedDict[tuple[str, int], int] = OrderedDict()

    def cursor_for(self, url: str) -> int | None:
        """The cursor to ask ``url`` for while getting past a big event, or None
        (then the usual resume cursor). Going to another host gives up the
        attempt: that host's times are its own."""
        if self._probe is not None and self._probe.url != url:
            self._probe = None
        return None if self._probe is None else self._probe.cursor

    def too_big(self, url: str, asked: int | None, newest: int | None) -> bool:
        """Note that a connection to ``url`` that asked for ``asked`` (None: the
        live tip) and read events up to ``newest`` (the largest time_us it read
        at or after ``asked``, None if none) was closed with 1009.

        Returns True when this is an event met for the first time (counted in
        :attr:`skipped`; the caller logs it), False for a further try at the
        same one. The next connection to ``url`` should ask for
        :meth:`cursor_for`; when that is None (nothing is known about where the
        event lies, as at the live tip), the usual cursor.
        """
        probe = self._probe
        if newest is None and probe is not None and probe.url == url and probe.cursor == asked:
            # the big event came first again: it lies further on
            self._probe = _Probe(url, probe.after, probe.cursor + probe.step, probe.step * 2)
            return False
        if newest is not None:
            known = self._past.get((url, newest))
            if known is not None:  # the same event again, after a rewind
                self._probe = _Probe(url, newest, known, self.STEP_US)
                return False
            self._probe = _Probe(url, newest, newest + 1, self.STEP_US)
        elif asked is not None:  # the first event from ``asked`` on is the big one
            self._probe = _Probe(url, None, asked + 1, self.STEP_US)
        else:
            self._probe = None  # the very first event at the live tip: it is past now
        self.skipped += 1
        return True

    def event(self, time_us: int) -> None:
        """Note an event read: one at or after the cursor being tried means the
        big event is behind."""
        probe = self._probe
        if probe is None or time_us < probe.cursor:
            return
        if probe.after is not None:
            self._past[(probe.url, probe.after)] = probe.cursor
            self._past.move_to_end((probe.url, probe.after))
            while len(self._past) > self.REMEMBERED:
                self._past.popitem(last=False)
        self._probe = None
