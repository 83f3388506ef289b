"""WHO's daily CSV as a case source: the world total read from the file as it streams
in (each country's latest Cumulative_cases), and WhoCaseCounter, which refreshes it in
the background at most once an hour (and hands each new file's rows to the case series)."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import IO

import requests

from counts.counter import Answer, Counter
from counts.fetch import CHUNK_BYTES, Validators, fetch_body
from counts.reading import MAX_COUNT, CaseCount, CaseCountError, WhoFileError, utc_now
from counts.series import CaseFile, CaseRow, CaseSeriesSink
from counts.who_csv import WHO_CUMULATIVE, text_lines, who_case_rows, who_rows

# the case count's log lines keep the name operators and tests filter on
log = logging.getLogger("scrape")

#: WHO's daily file is ~25 MB and grows by a row per country per day
WHO_MAX_BYTES = 256 * 1024 * 1024
WHO_ACCEPT = "text/csv,text/plain;q=0.9,*/*;q=0.8"
#: WHO's file is asked for at most this often (it changes every few weeks)
WHO_REFRESH_SECONDS = 3600.0
#: after a failed attempt, WHO's file is asked for again this soon (not a whole hour later)
WHO_RETRY_SECONDS = 300.0
#: how long :meth:`WhoCaseCounter.start` waits for the first reading at most
WHO_START_WAIT_SECONDS = 60.0
#: a whole refresh (connecting, downloading and reading the ~25 MB file) gives up after
#: this long, so that a server sending a byte now and then cannot hold refreshes up
WHO_DEADLINE_SECONDS = 300.0

@dataclass(frozen=True)
class WhoTotal:
    """The world total read from WHO's daily file, with what the reading was made of.

    ``total``: the sum over countries of each one's latest ``Cumulative_cases``;
    ``as_of``: the latest ``Date_reported`` of a row with a count, at 00:00 UTC; ``countries``:
    distinct ``Country`` names seen; ``rows``: data rows read, of which
    ``skipped`` could not be used, the first of them described by ``problem``.
    """

    total: int
    as_of: datetime
    countries: int
    rows: int
    skipped: int = 0
    problem: str | None = None


def who_world_total(lines: Iterable[str]) -> WhoTotal:
    """The world's total case count from the lines of WHO's daily CSV file.

    ``lines`` are the file's text lines (line ends kept or not), as from
    ``open(path, newline="", encoding="utf-8")``: one row per country per day
    under the header ``Date_reported,Country_code,Country,WHO_region,New_cases,
    Cumulative_cases,New_deaths,Cumulative_deaths``. Columns are found by name
    (case and surrounding spaces ignored, a UTF-8 byte order mark tolerated), so
    their order and any extra columns do not matter; quoted values may hold
    commas. Each line is one row, read on its own (WHO's rows hold no line
    breaks): a bad line costs that line only. A trailing comma in the header
    (an empty last name) is tolerated.

    The rules:

    * countries are told apart by ``Country``, never by ``Country_code`` (which
      is ``NA`` for Namibia and blank for some rows, e.g. ``Other``);
    * each country contributes the ``Cumulative_cases`` of its latest
      ``Date_reported``, wherever its rows are in the file (no order is
      assumed); a country whose rows stop early still counts with its last
      value. When that latest row's ``Cumulative_cases`` is blank, the country's
      latest row that has a number is used (the count is cumulative: a blank
      means "not reported", not zero); a country with no number at all adds
      nothing. Two rows for the same country and day: the later one in the file
      wins;
    * ``as_of`` is the latest ``Date_reported`` of a row whose ``Cumulative_cases``
      is a number, at 00:00 UTC: the date the total is for. A row whose count
      is blank does not move it (it adds nothing to the total);
    * ``New_cases`` and the other columns are not read (often blank anyway).

    A row that cannot be used (wrong number of fields, a date that is not
    ``YYYY-MM-DD``, no country, a ``Cumulative_cases`` that is not a whole
    number, a quote its line does not close) is skipped and counted, never
    fatal; the rows after it are read as usual; blank lines are ignored.

    Raises WhoFileError (one line) when the file has no header with those
    columns, when no row has a number, when more than half of the rows cannot
    be used (the format must have changed), or when the total is absurdly large.
    """
    latest: dict[str, tuple[date, int]] = {}  # country -> (date, Cumulative_cases)
    countries: set[str] = set()
    newest = date.min
    read = skipped = 0
    problem: str | None = None
    for values in who_rows(lines):
        read += 1
        if values.__class__ is str:
            skipped += 1
            problem = problem or values
            continue
        day, country, count = values
        countries.add(country)
        if count is not None:
            if day > newest:
                newest = day
            known = latest.get(country)
            if known is None or day >= known[0]:
                latest[country] = (day, count)
    if skipped * 2 > read:
        raise WhoFileError(f"{skipped} of {read} rows cannot be read, e.g. {problem}")
    if not latest:
        raise WhoFileError(f"no row has a {WHO_CUMULATIVE} number")
    total = sum(count for _, count in latest.values())
    if total > MAX_COUNT:
        raise WhoFileError(f"the world total {total} is too large to be a count")
    return WhoTotal(total, datetime(newest.year, newest.month, newest.day, tzinfo=UTC),
                    len(countries), read, skipped, problem)



# --------------------------------------------------------------------------
# fetching


def fetch_who_total(
    url: str,
    *,
    timeout: float,
    session: requests.Session | None = None,
    max_bytes: int = WHO_MAX_BYTES,
    deadline: float | None = None,
) -> WhoTotal:
    """The world total read from WHO's daily CSV at ``url``, parsed as it downloads.

    ``timeout`` bounds connecting and each wait for data; ``deadline`` (default
    WHO_DEADLINE_SECONDS, at least ``timeout``) the whole download and parse.
    Raises CaseCountError like :func:`counts.fetch.fetch_page` (the size cap is
    ``max_bytes``), WhoFileError when the file does not give a total; the
    message names the URL.
    """
    total, _ = fetch_who(url, timeout=timeout, session=session, validators=None,
                         max_bytes=max_bytes, deadline=deadline)
    assert total is not None  # only a conditional request can be answered "not modified"
    return total


def fetch_who(
    url: str,
    *,
    timeout: float,
    session: requests.Session | None,
    validators: Validators | None,
    max_bytes: int,
    cancel: threading.Event | None = None,
    deadline: float | None = None,
    copy: BodyCopy | None = None,
) -> tuple[WhoTotal | None, Validators]:
    """:func:`fetch_who_total`, conditional on ``validators``: (the total, the file's
    validators), or (None, validators) for 304 Not Modified.

    When ``cancel`` is set, the download stops at the next chunk (CaseCountError).
    ``copy`` keeps the body as it streams in, for reading its rows again later.
    """

    def read(chunks: Iterator[bytes]) -> WhoTotal:
        if cancel is not None:
            chunks = _unless_cancelled(chunks, cancel, url)
        if copy is not None:
            chunks = copy.keep(chunks)
        try:
            return who_world_total(text_lines(chunks))
        except WhoFileError as err:
            raise WhoFileError(f"{url}: {err}") from None

    limit = max(timeout, WHO_DEADLINE_SECONDS) if deadline is None else deadline
    return fetch_body(url, timeout=timeout, session=session, validators=validators,
                      max_bytes=max_bytes, read=read, accept=WHO_ACCEPT, deadline=limit)


def _unless_cancelled(chunks: Iterator[bytes], cancel: threading.Event,
                      url: str) -> Iterator[bytes]:
    for chunk in chunks:
        if cancel.is_set():
            raise CaseCountError(f"cannot fetch {url}: stopped (the counter was closed)")
        yield chunk


class BodyCopy:
    """A download's body kept in an anonymous temporary file (gone when closed), so
    that its rows can be read again once the count is taken, without holding the
    ~25 MB in memory. Keeping it never fails the download: a disk that refuses (full,
    or no temporary folder) ends the copy and ``problem`` says why."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self._file: IO[bytes] | None = None
        try:  # closed by close()
            self._file = tempfile.TemporaryFile(prefix="who-daily-")  # noqa: SIM115
        except OSError as err:
            self.problem = f"no temporary file for WHO's file: {err.strerror or err}"

    def keep(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """``chunks``, each also written to the copy (while it can be)."""
        for chunk in chunks:
            if self._file is not None and self.problem is None:
                try:
                    self._file.write(chunk)
                except OSError as err:
                    self.problem = (f"cannot keep a copy of WHO's file: "
                                    f"{err.strerror or err}")
            yield chunk

    def chunks(self) -> Iterator[bytes]:
        """The copy's bytes again, from the start, a chunk at a time."""
        if self._file is None or self.problem is not None:
            raise CaseCountError(self.problem or "no copy of WHO's file")
        self._file.seek(0)
        while chunk := self._file.read(CHUNK_BYTES):
            yield chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# --------------------------------------------------------------------------
# the counter


@dataclass(frozen=True)
class _Refresh:
    """One download and parse of WHO's file (or the storing of its rows), running in
    its own thread."""

    thread: threading.Thread
    done: threading.Event


@dataclass(frozen=True)
class _Download:
    """A downloaded file kept for the case series: its copy, total and validators."""

    copy: BodyCopy
    total: WhoTotal
    validators: Validators


class WhoCaseCounter(Counter):
    """WHO's world total case count, refreshed in the background at most once an hour.

    :meth:`current` starts a refresh when ``refresh_seconds`` have passed since
    the last one began (``retry_seconds`` after one that failed), and waits for it at most
    ``max_wait`` seconds (default: ``timeout``); past that it returns the last
    good reading with ``fresh=False`` and the refresh goes on in a background
    thread, whose result a later :meth:`current` returns. One refresh at a
    time. A refresh asks conditionally (ETag / Last-Modified of the last good
    file): a 304 keeps the last reading, otherwise the file (at most
    ``max_bytes``) is parsed by :func:`who_world_total` as it streams in.

    A reading is fresh while its refresh is less than ``refresh_seconds`` old
    and worked. Failures never raise: the last good reading is used, with one
    WARNING per failure window, DEBUG while it lasts and INFO on recovery, as
    :class:`~counts.worldometers.CaseCounter` does. ``timeout`` bounds
    connecting and each wait for data; ``deadline`` (default
    WHO_DEADLINE_SECONDS, at least ``timeout``) a whole refresh, which past it
    is abandoned and logged as a failure (the next one is due ``retry_seconds``
    after it began). ``clock`` (aware UTC datetimes) drives both the hourly
    schedule and the staleness check. Call its methods from one thread; the
    refresh thread is its own.

    With a ``series`` (the store's case series), each newly downloaded file (not a
    304) is kept in a temporary file as it streams in, and once its count is taken
    (batches get it at once) the same refresh thread reads the copy again and hands
    its rows (:func:`counts.who_csv.who_case_rows`) to ``series.store``, one at a
    time: a slow or failing store never delays or fails the count (its failure is
    logged). One file is stored at a time; :meth:`wait_for_series` waits for it.
    """

    source = "who"
    unchanged = "WHO's file"

    def __init__(
        self,
        url: str,
        timeout: float,
        *,
        session: requests.Session | None = None,
        refresh_seconds: float = WHO_REFRESH_SECONDS,
        retry_seconds: float = WHO_RETRY_SECONDS,
        max_wait: float | None = None,
        max_bytes: int = WHO_MAX_BYTES,
        deadline: float | None = None,
        clock: Callable[[], datetime] = utc_now,
        series: CaseSeriesSink | None = None,
    ) -> None:
        if refresh_seconds <= 0:
            raise ValueError("refresh_seconds must be > 0")
        super().__init__(url, timeout, session, clock, series)
        self.refresh_every = timedelta(seconds=refresh_seconds)
        self.retry_every = min(self.refresh_every, timedelta(seconds=retry_seconds))
        self.max_wait = timeout if max_wait is None else max_wait
        self.max_bytes = max_bytes
        self.deadline = max(timeout, WHO_DEADLINE_SECONDS) if deadline is None else deadline
        # guarded by the lock, like the base's fields (the refresh thread writes)
        self._attempted_at: datetime | None = None  # when the last refresh began
        self._answered_at: datetime | None = None  # when the last refresh began, if it worked
        self._refresh: _Refresh | None = None
        self._fetched: _Download | None = None  # the refresh thread's latest download
        self._kept: _Download | None = None  # ... once its reading was kept
        self._storing: _Refresh | None = None  # the file being stored in the series
        self._series_lock = threading.Lock()  # one file stored at a time
        #: files downloaded and read, so far
        self.downloads = 0

    def start(self, wait: float = WHO_START_WAIT_SECONDS) -> CaseCount:
        """Begin the first refresh and wait for it at most ``wait`` seconds (the file is
        ~25 MB); log the reading at INFO and check its staleness. Never raises."""
        now = self._clock()
        refresh, _ = self._refresh_if_due(now)
        if refresh is not None and not refresh.done.wait(wait):
            log.info("WHO's file is still being read after %g s; batches get the last good "
                     "count until it is", wait)
        reading = self._reading(now)
        log.info("case count at start: %s", reading.describe())
        self._staleness.check(reading, now)
        return reading

    def current(self) -> CaseCount:
        """The reading for a batch: waits at most ``max_wait`` seconds, never raises.

        Starts a refresh if one is due and waits for that one only; a refresh
        already running from an earlier call is not waited for.
        """
        now = self._clock()
        refresh, began = self._refresh_if_due(now)
        if refresh is not None and began:
            refresh.done.wait(self.max_wait)
        reading = self._reading(now)
        self._staleness.check(reading, now)
        return reading

    def wait_for_refresh(self, timeout: float | None = None) -> bool:
        """Wait until no refresh is running (at most ``timeout`` s); True if none is."""
        with self._lock:
            refresh = self._refresh
        return refresh is None or refresh.done.wait(timeout)

    def wait_for_series(self, timeout: float | None = None) -> bool:
        """Wait until no refresh is running and no file is being stored in the case
        series (at most ``timeout`` s each); True if none is."""
        if not self.wait_for_refresh(timeout):
            return False
        with self._lock:
            storing = self._storing
        return storing is None or storing.done.wait(timeout)

    def _refresh_if_due(self, now: datetime) -> tuple[_Refresh | None, bool]:
        """(the running refresh, False), or (a new one, True) if one is due, else (None, False)."""
        with self._lock:
            if self._refresh is not None or self._closed.is_set():
                return self._refresh, False
            last = self._attempted_at
            failed = last is not None and self._answered_at != last
            every = self.retry_every if failed else self.refresh_every
            if last is not None and timedelta(0) <= now - last < every:
                return None, False
            self._attempted_at = now
            done = threading.Event()
            thread = threading.Thread(target=self._run_refresh, args=(now, done),
                                      name="who-case-count", daemon=True)
            self._refresh = _Refresh(thread, done)
            thread.start()
            return self._refresh, True

    def _run_refresh(self, began: datetime, done: threading.Event) -> None:
        """The refresh thread: fetch and parse, record the outcome, say it is done."""
        try:
            answered = self._ask()
        except Exception as err:  # a bug must not end the counter: log it as a failure
            log.exception("refreshing WHO's case count failed unexpectedly")
            self._failed(CaseCountError(f"{type(err).__name__}: {err}"))
            answered = False
        stored = threading.Event()
        with self._lock:
            if not self._closed.is_set():
                self._answered_at = began if answered else None
            self._refresh = None
            kept, self._kept = self._kept, None
            dropped, self._fetched = self._fetched, None
            if kept is not None:
                self._storing = _Refresh(threading.current_thread(), stored)
        done.set()
        if dropped is not None:  # a download whose reading was not kept
            dropped.copy.close()
        if kept is not None:
            try:
                with self._series_lock:
                    file = CaseFile(self.source, began, self.url, kept.validators,
                                    kept.total.as_of, kept.total.rows, kept.total.skipped)
                    self._store_series(file, self._rows_of(kept.copy))
            finally:
                kept.copy.close()
                with self._lock:
                    if self._storing is not None and self._storing.done is stored:
                        self._storing = None
                stored.set()

    def _rows_of(self, copy: BodyCopy) -> Iterator[CaseRow]:
        """The rows of the file kept in ``copy``, read again; rows the series cannot use
        are left out (one WARNING at the end). Stops (CaseCountError) once the counter
        is closed."""
        left_out, problem = 0, None
        for number, row in enumerate(who_case_rows(text_lines(copy.chunks()))):
            if not number % 4096 and self._closed.is_set():
                raise CaseCountError("stopped: the counter was closed")
            if row.__class__ is str:
                left_out += 1
                problem = problem or row
                continue
            yield row
        if left_out:
            log.warning("the case series left out %d rows of WHO's file, the first at %s",
                        left_out, problem)

    def _fetch(self, validators: Validators | None) -> Answer:
        """WHO's file now, read as it streams in; None for its reading if unchanged.
        With a series, the body is also kept (``_fetched``) for :meth:`_rows_of`."""
        copy = BodyCopy() if self._series is not None else None
        try:
            total, answered = fetch_who(
                self.url, timeout=self.timeout, session=self._session, validators=validators,
                max_bytes=self.max_bytes, cancel=self._closed, deadline=self.deadline,
                copy=copy)
        except BaseException:
            if copy is not None:
                copy.close()
            raise
        if total is None:
            if copy is not None:
                copy.close()
            return Answer(None, answered)
        if copy is not None:
            self._fetched = _Download(copy, total, answered)
        skipped = (f"; {total.skipped} bad rows skipped, the first at {total.problem}"
                   if total.skipped else "")
        return Answer(CaseCount(total.total, total.as_of, self.source, fresh=True), answered,
                      f" from {total.countries} countries, {total.rows} rows{skipped}")

    def _took(self, answer: Answer) -> None:
        self.downloads += 1
        log.info("read WHO's file: %s%s", self._last.describe(), answer.detail)
        self._kept, self._fetched = self._fetched, None

    def _reading(self, now: datetime) -> CaseCount:
        """The last good reading, fresh if its refresh worked and is less than an hour old."""
        with self._lock:
            answered = self._answered_at
            fresh = (self._refresh is None and answered is not None
                     and timedelta(0) <= now - answered < self.refresh_every)
            return replace(self._last, fresh=True) if fresh else self._last.carried_over()

    def close(self) -> None:
        """Stop: no refresh starts any more, a running one is abandoned (its result
        dropped; it ends within about ``timeout`` s, waited for here), and the
        session is closed if this counter made it."""
        with self._lock:
            self._closed.set()
            refresh = self._refresh
            storing = self._storing
        if refresh is not None:
            refresh.thread.join(self.timeout + 1)
            if refresh.thread.is_alive():
                log.debug("WHO's refresh thread is still running; leaving it (a daemon)")
        if storing is not None and storing.thread is not threading.current_thread():
            storing.done.wait(self.timeout + 1)  # it stops at its next rows
            if not storing.done.is_set():
                log.debug("the case series is still being stored; leaving it (a daemon)")
        super().close()
