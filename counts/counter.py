"""What both counters share: the session, the last good reading, conditional asking
(validators, 304s), the failure log and the staleness warning; each source adds only
how it fetches and parses."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

import requests

from counts.fetch import Validators
from counts.reading import NO_COUNT, CaseCount, CaseCountError, staleness_warning
from counts.series import CaseFile, CaseRow, CaseSeriesSink

# the case count's log lines keep the name operators and tests filter on
log = logging.getLogger("scrape")


class CaseCountSource(Protocol):
    """What the Spark driver needs of a counter: both counters have this surface."""

    source: str

    def start(self) -> CaseCount:
        """Called once at job start: the first reading, logged, and the staleness check."""
        ...

    def current(self) -> CaseCount:
        """The reading for a batch; never raises, never waits longer than the timeout."""
        ...

    def close(self) -> None:
        """Release the session (if the counter made it) and any background work."""
        ...

    def __enter__(self) -> CaseCountSource: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


@dataclass(frozen=True)
class Answer:
    """What a source said when asked: a new reading, or None for "not modified since
    the last good one" (304), with the validators of what it answered about."""

    reading: CaseCount | None
    validators: Validators
    #: what the reading was made of, for the log line of a download (may be empty)
    detail: str = ""


class FailureLog:
    """The log lines of a source that fails and recovers: one WARNING when a failure
    window opens, DEBUG while it lasts, one INFO when the source answers again."""

    def __init__(self) -> None:
        self.failures = 0  # consecutive failed attempts since the last success

    def failed(self, err: CaseCountError, last_good: CaseCount) -> None:
        """Log the failure ``err``; ``last_good`` is what batches get meanwhile."""
        self.failures += 1
        if self.failures == 1:
            fallback = (
                f"using the last good count {last_good.total} ({last_good.origin()})"
                if last_good.total is not None
                else "no count obtained yet, so batches get none"
            )
            log.warning("case count unavailable: %s; %s", err, fallback)
        else:
            log.debug("case count still unavailable (%d failed attempts in a row): %s",
                      self.failures, err)

    def succeeded(self, reading: CaseCount) -> None:
        """Log ``reading``: at INFO when it ends a failure window, else at DEBUG."""
        if self.failures:
            log.info("case count available again after %d failed attempts: %s",
                     self.failures, reading.describe())
        else:
            log.debug("case count: %s", reading.describe())
        self.failures = 0


class Counter:
    """A source's current total case count, falling back to the last good one.

    Keeps one requests.Session (the one given, left open by :meth:`close`, or
    its own). The source is asked conditionally: the ``ETag`` /
    ``Last-Modified`` of the last answer that gave a count are sent back, and
    a 304 Not Modified means that count (and its date) is still current.
    ``clock`` (aware UTC datetimes) tells the staleness check what time it is.
    Failures never raise: the last good reading is used, with the log lines of
    :class:`FailureLog`. ``with counter:`` closes it at the end of the block.

    ``series``, if given, is where the rows of each newly read file go
    (:meth:`_store_series`); its failures are logged and never touch the count.

    A subclass sets ``source`` and ``unchanged`` (what a 304 is about, for
    the log) and supplies :meth:`_fetch`.
    """

    source: str
    unchanged: str

    def __init__(self, url: str, timeout: float, session: requests.Session | None,
                 clock: Callable[[], datetime], series: CaseSeriesSink | None = None) -> None:
        self.url = url
        self._series = series
        self.timeout = timeout
        self._clock = clock
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._staleness = staleness_warning(self.source)
        self._closed = threading.Event()  # set by a counter whose results may come late
        self._lock = threading.Lock()  # guards the fields below (a refresh thread may write)
        self._last = NO_COUNT  # the last good reading
        self._validators = Validators()  # of the answer the last good reading came from
        self._failures = FailureLog()
        #: answers "304 Not Modified" so far (each a body not downloaded again)
        self.not_modified = 0

    @property
    def last_good(self) -> int | None:
        """The last count obtained, or None if none ever was."""
        with self._lock:
            return self._last.total

    def _fetch(self, validators: Validators | None) -> Answer:
        """Ask the source now, conditionally on ``validators`` (None: unconditionally).

        Raises CaseCountError when it gives no count.
        """
        raise NotImplementedError

    def _took(self, answer: Answer) -> None:
        """Called (under the lock, the new reading kept) for each answer with a new
        reading: for what a source logs or counts of its downloads."""

    def _ask(self) -> bool:
        """One attempt: ask the source and record its answer or its failure (unless
        the counter was closed meanwhile). True if the source answered."""
        with self._lock:
            known = self._validators if self._last.total is not None else None
        try:
            answer = self._fetch(known)
        except CaseCountError as err:
            self._failed(err)
            return False
        with self._lock:
            if self._closed.is_set():
                return True
            if answer.reading is None:
                assert self._last.total is not None  # only then were validators sent
                self.not_modified += 1
                log.debug("%s not modified since the last good count", self.unchanged)
            else:
                self._last = answer.reading
                self._took(answer)
            self._validators = answer.validators
            self._failures.succeeded(replace(self._last, fresh=True))
        return True

    def _store_series(self, file: CaseFile, rows: Iterable[CaseRow]) -> bool:
        """Hand ``rows`` of ``file`` to the case series; True if it took them. Its
        failure (any exception: a store down, a bug) is logged, never raised."""
        if self._series is None:
            return False
        try:
            self._series.store(file, rows)
        except Exception as err:  # noqa: BLE001 - the series never fails the count
            if self._closed.is_set():
                log.debug("the case series of %s was not stored: %s", file.source, err)
            else:
                text = " ".join(str(err).split())[:300] or type(err).__name__
                log.warning("the case series was not stored (the count goes on): %s", text)
            return False
        return True

    def _failed(self, err: CaseCountError) -> None:
        """Record a failed attempt: logged, the last good reading kept."""
        with self._lock:
            if not self._closed.is_set():
                self._failures.failed(err, self._last)

    def close(self) -> None:
        """Close the session if this counter made it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
