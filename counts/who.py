"""WHO's daily CSV as a case source: the world total read from the file as it streams
in (each country's latest Cumulative_cases), and WhoCaseCounter, which refreshes it in
the background at most once an hour."""

from __future__ import annotations

import codecs
import csv
import io
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import requests

from counts.counter import Answer, Counter
from counts.fetch import Validators, fetch_body
from counts.reading import (
    MAX_COUNT,
    MAX_COUNT_DIGITS,
    CaseCount,
    CaseCountError,
    WhoFileError,
    utc_now,
)

# the case count's log lines keep the name operators and tests filter on
log = logging.getLogger("scrape")

#: WHO's daily file is ~25 MB and grows by a row per country per day
WHO_MAX_BYTES = 256 * 1024 * 1024
WHO_ACCEPT = "text/csv,text/plain;q=0.9,*/*;q=0.8"
#: a longer line means the body is not WHO's CSV (its rows are ~50 characters)
WHO_MAX_LINE_CHARS = 1024 * 1024
#: WHO's file is asked for at most this often (it changes every few weeks)
WHO_REFRESH_SECONDS = 3600.0
#: after a failed attempt, WHO's file is asked for again this soon (not a whole hour later)
WHO_RETRY_SECONDS = 300.0
#: how long :meth:`WhoCaseCounter.start` waits for the first reading at most
WHO_START_WAIT_SECONDS = 60.0
#: the columns of WHO's file that the total needs (found by name, in any order)
WHO_DATE, WHO_COUNTRY, WHO_CUMULATIVE = "Date_reported", "Country", "Cumulative_cases"
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


#: a usable row of WHO's file: (Date_reported, Country, Cumulative_cases or None if blank)
WhoRow = tuple[date, str, int | None]


def who_rows(lines: Iterable[str]) -> Iterator[WhoRow | str]:
    """Each data row of WHO's daily CSV, checked: its values, or why it cannot be used.

    The one place that decides whether a row is usable. ``lines`` are as for
    :func:`who_world_total`; its header (the first non-blank line) says where
    the columns are (empty names at its end, from a trailing comma, are
    dropped). Each line is one row, read on its own (WHO's rows hold no line
    breaks), so a bad line costs that line only: a quote never closed on its
    line does not swallow the lines after it. For each data row this yields
    either its values (``Date_reported`` as a date, ``Country`` stripped,
    ``Cumulative_cases`` as an int, None when blank), or a text ``line N:
    reason`` (N counts the lines given, from 1) when it cannot be used: wrong
    number of fields, a date that is not ``YYYY-MM-DD``, no country, a
    ``Cumulative_cases`` that is not a whole number, a line csv cannot split
    or whose quote is never closed. Blank lines yield nothing. Raises
    WhoFileError when there is no header with those columns. Each distinct
    ``Date_reported`` text is parsed once.
    """
    numbered = enumerate(lines, start=1)
    quoted = _QuotedLineReader()
    header = _who_header(numbered, quoted)
    date_at, country_at, cumulative_at = _who_columns(header)
    width = len(header)
    days: dict[str, date | None] = {}  # each Date_reported text parsed once
    unknown = date.min  # not in days yet (None there means "not a date")
    for number, line in numbered:
        if '"' in line:  # the rare line with quoted values: csv splits it
            row = quoted.fields(line)
            if row.__class__ is str:
                yield f"line {number}: {row}"
                continue
        else:  # the common line: as csv would split it, only faster
            row = line.rstrip("\r\n").split(",")
        if len(row) != width and (len(row) < width or "".join(row[width:]).strip()):
            if len(row) > 1 or "".join(row).strip():  # else a blank line: not a row
                yield f"line {number}: {len(row)} fields, the header has {width}"
            continue
        raw_day = row[date_at]
        day = days.get(raw_day, unknown)
        if day is unknown:
            day = days[raw_day] = _who_date(raw_day)
        if day is None:
            yield f"line {number}: {WHO_DATE} {raw_day[:40]!r} is not a YYYY-MM-DD date"
            continue
        country = row[country_at].strip()
        if not country:
            yield f"line {number}: no {WHO_COUNTRY}"
            continue
        raw_count = row[cumulative_at]
        # the common case, without a call: what _who_count says of plain digits
        if raw_count.isdigit() and raw_count.isascii() and len(raw_count) <= MAX_COUNT_DIGITS:
            yield day, country, int(raw_count)
            continue
        count = _who_count(raw_count)
        if count is None and raw_count.strip():
            yield (f"line {number}: {WHO_CUMULATIVE} {raw_count[:40]!r} is not "
                   "a whole number")
            continue
        yield day, country, count


class _QuotedLineReader:
    """Splits one line at a time with one csv reader, which never reads past that line.

    The reader's input is this object: it hands over the line given to
    :meth:`fields` and then says "no more", noting that the reader asked for
    more, which it does only when the line ended inside a quoted value.
    """

    __slots__ = ("_line", "_reader", "_starved")

    def __init__(self) -> None:
        self._line: str | None = None
        self._starved = False
        self._reader = csv.reader(self)

    def __iter__(self) -> _QuotedLineReader:
        return self

    def __next__(self) -> str:
        line = self._line
        if line is None:
            self._starved = True
            raise StopIteration
        self._line = None
        return line

    def fields(self, line: str) -> list[str] | str:
        """The values of ``line`` as csv reads them, or why it cannot be split."""
        self._line, self._starved = line, False
        try:
            row = next(self._reader, [])
        except csv.Error as err:  # e.g. a field past csv's size limit
            return str(err)
        finally:
            self._line = None
        if self._starved:
            return 'a quote (") that the line does not close'
        return row


def _who_header(numbered: Iterator[tuple[int, str]], quoted: _QuotedLineReader) -> list[str]:
    """The first non-blank line's names, trailing empty ones dropped (a trailing comma);
    WhoFileError when there is none or it is unreadable."""
    for number, line in numbered:
        if number == 1:
            line = line.removeprefix("\ufeff")
        names = quoted.fields(line)
        if names.__class__ is str:
            raise WhoFileError(f"not WHO's daily CSV: its first line is unreadable ({names})")
        if "".join(names).strip():
            while not names[-1].strip():
                names.pop()
            return names
    raise WhoFileError("the file is empty")


def _who_columns(header: list[str]) -> tuple[int, int, int]:
    """Where Date_reported, Country and Cumulative_cases are (first of each name)."""
    positions: dict[str, int] = {}
    for at, name in enumerate(header):
        positions.setdefault(name.strip().strip('"').strip().casefold(), at)
    wanted = (WHO_DATE, WHO_COUNTRY, WHO_CUMULATIVE)
    missing = [name for name in wanted if name.casefold() not in positions]
    if missing:
        shown = " ".join(",".join(header).split())
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise WhoFileError(
            f"not WHO's daily CSV: no {', '.join(missing)} column in its header {shown!r}"
        )
    date_at, country_at, cumulative_at = (positions[name.casefold()] for name in wanted)
    return date_at, country_at, cumulative_at


def _who_date(raw: str) -> date | None:
    """``2025-03-02`` (optionally followed by a time) as a date, else None."""
    text = raw.strip()
    if len(text) > 10 and text[10] in "T ":
        text = text[:10]
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _who_count(raw: str) -> int | None:
    """A Cumulative_cases value: a whole number ≥ 0 (``12``, `` 12 ``, ``12.0``), else None."""
    whole, dot, fraction = raw.strip().partition(".")
    if (whole.isdigit() and whole.isascii() and len(whole) <= MAX_COUNT_DIGITS
            and (not dot or set(fraction) <= {"0"})):
        return int(whole)
    return None


def text_lines(chunks: Iterable[bytes], max_line: int = WHO_MAX_LINE_CHARS) -> Iterator[str]:
    """The UTF-8 text of ``chunks`` as lines, ends kept, as a file opened with ``newline=""``.

    Streaming: holds one chunk and one partial line at a time. Only ``\\n`` ends
    a line (``\\r\\n`` keeps its ``\\r``, which the csv module expects); bytes
    that are not UTF-8 become U+FFFD. A line longer than ``max_line``
    characters raises WhoFileError (no CSV of WHO's has one).
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending: list[str] = []  # the start of a line that has not ended yet
    pending_length = 0
    for chunk in chunks:
        text = decoder.decode(chunk)
        cut = text.rfind("\n") + 1
        if not cut:
            pending.append(text)
            pending_length += len(text)
            if pending_length > max_line:
                raise WhoFileError(f"not WHO's daily CSV: a line is longer than {max_line} "
                                   "characters")
            continue
        pending.append(text[:cut])
        yield from io.StringIO("".join(pending), newline="\n")
        pending, pending_length = [text[cut:]], len(text) - cut
    pending.append(decoder.decode(b"", final=True))
    if rest := "".join(pending):
        yield rest


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
) -> tuple[WhoTotal | None, Validators]:
    """:func:`fetch_who_total`, conditional on ``validators``: (the total, the file's
    validators), or (None, validators) for 304 Not Modified.

    When ``cancel`` is set, the download stops at the next chunk (CaseCountError).
    """

    def read(chunks: Iterator[bytes]) -> WhoTotal:
        if cancel is not None:
            chunks = _unless_cancelled(chunks, cancel, url)
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


# --------------------------------------------------------------------------
# the counter


@dataclass(frozen=True)
class _Refresh:
    """One download and parse of WHO's file, running in its own thread."""

    thread: threading.Thread
    done: threading.Event


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
    ) -> None:
        if refresh_seconds <= 0:
            raise ValueError("refresh_seconds must be > 0")
        super().__init__(url, timeout, session, clock)
        self.refresh_every = timedelta(seconds=refresh_seconds)
        self.retry_every = min(self.refresh_every, timedelta(seconds=retry_seconds))
        self.max_wait = timeout if max_wait is None else max_wait
        self.max_bytes = max_bytes
        self.deadline = max(timeout, WHO_DEADLINE_SECONDS) if deadline is None else deadline
        # guarded by the lock, like the base's fields (the refresh thread writes)
        self._attempted_at: datetime | None = None  # when the last refresh began
        self._answered_at: datetime | None = None  # when the last refresh began, if it worked
        self._refresh: _Refresh | None = None
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
        with self._lock:
            if not self._closed.is_set():
                self._answered_at = began if answered else None
            self._refresh = None
        done.set()

    def _fetch(self, validators: Validators | None) -> Answer:
        """WHO's file now, read as it streams in; None for its reading if unchanged."""
        total, answered = fetch_who(self.url, timeout=self.timeout, session=self._session,
                                    validators=validators, max_bytes=self.max_bytes,
                                    cancel=self._closed, deadline=self.deadline)
        if total is None:
            return Answer(None, answered)
        skipped = (f"; {total.skipped} bad rows skipped, the first at {total.problem}"
                   if total.skipped else "")
        return Answer(CaseCount(total.total, total.as_of, self.source, fresh=True), answered,
                      f" from {total.countries} countries, {total.rows} rows{skipped}")

    def _took(self, answer: Answer) -> None:
        self.downloads += 1
        log.info("read WHO's file: %s%s", self._last.describe(), answer.detail)

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
        if refresh is not None:
            refresh.thread.join(self.timeout + 1)
            if refresh.thread.is_alive():
                log.debug("WHO's refresh thread is still running; leaving it (a daemon)")
        super().close()
