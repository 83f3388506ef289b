"""Print the world's total Covid-19 case count, from worldometers.info or from WHO.

Usage: python scrape.py [--case-source {worldometers,who}] [--url URL] [--who-url URL]
                        [--timeout SECONDS] [--log-level LEVEL]

Two sources (--case-source, env CASE_SOURCE):

* ``worldometers`` (the default): fetches worldometers.info/coronavirus and
  reads the number under the heading "Coronavirus Cases:", found by that label
  and never by its place on the page. The page's "Last updated: April 13, 2024,
  00:00 GMT" line says when the figure is from. These counters stopped on
  2024-04-13 at 704,753,890 and the site says they are no longer updated.
* ``who``: reads WHO's daily file (--who-url, a CSV of about 25 MB, one row per
  country per day) and sums each country's latest ``Cumulative_cases``; the
  figure is as of the file's latest ``Date_reported``. WHO publishes it in
  bursts, weeks apart.

The count is printed alone on stdout; one INFO line on stderr names the source
and the date the count is for, and a WARNING follows when that date is more
than 30 days ago:

    $ python scrape.py
    704753890
    $ python scrape.py --case-source who
    $ python scrape.py --url http://127.0.0.1:8000/worldometers.html --timeout 5

The timeout applies to connecting and to each wait for data; a page larger
than 8 MiB (WHO's file: 256 MiB) is refused. Exit status: 0 with the count on
stdout, 1 when the count cannot be obtained (one line on stderr says why), 2
for a bad option.

The Spark driver uses the same code through a counter, which never raises and
falls back to the last good reading:

    counter = open_counter(settings)    # CaseCounter or WhoCaseCounter
    counter.start()                     # once, at job start: first reading, staleness check
    reading = counter.current()         # once per batch: a CaseCount
    reading.total, reading.as_of, reading.source, reading.fresh
    counter.close()

CaseCounter asks worldometers on every ``current()``, conditionally (ETag /
Last-Modified of the last good page), so an unchanged page costs a 304 answer
instead of a ~1 MB download and a parse. WhoCaseCounter asks for WHO's file at
most once an hour, conditionally too, and downloads and parses it in a
background thread: a batch waits at most the scrape timeout for it, and
otherwise gets the last good reading while the refresh finishes.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from types import TracebackType
from typing import Protocol, Self, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3
from bs4 import BeautifulSoup, Tag, UnicodeDammit

import config

log = logging.getLogger("scrape")

CASES_LABEL = "Coronavirus Cases:"
COUNTER_CLASS = "maincounter-number"
WRAPPER_ID = "maincounter-wrap"
MAX_PAGE_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
MAX_COUNT_DIGITS = 18  # a larger "count" is garbage (and would overflow BSON's int64)
MAX_COUNT = 10**MAX_COUNT_DIGITS - 1
# worldometers answers scripted clients (python-requests/x.y) with errors; look like a browser.
BROWSER_HEADERS = {
    "User-Agent": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36"
    ),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.9",
}

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

#: a reading older than this gets a warning: at start, then at most once per STALE_WARN_EVERY
STALE_AFTER = timedelta(days=30)
STALE_WARN_EVERY = timedelta(hours=24)
WORLDOMETERS_STALE_ADVICE = ("worldometers stopped updating its counters; "
                             "use --case-source who for WHO's figures")
WHO_STALE_ADVICE = ("that is the latest Date_reported in WHO's file, and WHO publishes "
                    "in bursts weeks apart")

_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_NOT_DIGITS = re.compile(r"[\s,]")  # \s covers NBSP and the other Unicode spaces
_DIGITS = re.compile(r"[0-9]+")
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")

# the fast path of parse_total_cases: plain-text searches that find the label's block
# the label as markup: its two words apart by whitespace, &nbsp; or inline tags
_LABEL_HINT = re.compile(r"Coronavirus(?:\s|&nbsp;|&#160;|&#xa0;|<[^<>]*>)+Cases:",
                         re.IGNORECASE)
# an opening tag whose id attribute is exactly the wrapper's
_WRAPPER_OPEN = re.compile(
    rf"<[a-z][a-z0-9]*\s(?:[^<>]*?\s)?id\s*=\s*(?:\"{WRAPPER_ID}\"|'{WRAPPER_ID}'"
    rf"|{WRAPPER_ID}(?=[\s/>]))", re.IGNORECASE)
# where the label's block certainly ends: the next heading or the next wrapper
_BLOCK_END = re.compile(rf"<h[1-6][\s/>]|{_WRAPPER_OPEN.pattern}", re.IGNORECASE)
_RAW_OPEN = re.compile(r"<(script|style)[\s/>]", re.IGNORECASE)
_BLOCK_LOOKBEHIND = 16 * 1024  # the wrapper's opening tag must be this close to the label
_BLOCK_LOOKAHEAD = 64 * 1024  # a block running to the end of the page must be this short

# "Last updated: April 13, 2024, 00:00 GMT"; spaces may be &nbsp; and inline tags may
# sit between the parts; the time (and its zone, GMT assumed) may be missing
_GAP = r"(?:\s|&nbsp;|&#160;|&#xa0;|<[^<>]*>)"
_LAST_UPDATED = re.compile(
    rf"Last{_GAP}+updated{_GAP}*:?{_GAP}*(?P<month>[A-Za-z]{{3,9}})\.?{_GAP}+(?P<day>\d{{1,2}})"
    rf"(?:st|nd|rd|th)?{_GAP}*,?{_GAP}*(?P<year>\d{{4}})"
    rf"(?:{_GAP}*,?{_GAP}*(?P<hour>\d{{1,2}}):(?P<minute>\d{{2}})(?::(?P<second>\d{{2}}))?"
    rf"(?:{_GAP}*(?:GMT|UTC|Z)\b)?)?",
    re.IGNORECASE,
)
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")

_T = TypeVar("_T")


class CaseCountError(Exception):
    """The case count could not be obtained; ``str(err)`` is one line saying why."""


class CounterNotFoundError(CaseCountError):
    """The page has no readable "Coronavirus Cases:" counter."""


class WhoFileError(CaseCountError):
    """WHO's file was fetched but does not give a world total (wrong columns, no data)."""


# --------------------------------------------------------------------------
# what a batch stores


@dataclass(frozen=True)
class CaseCount:
    """One reading of the world's total case count: what one batch stores.

    ``total``: the count, None when no count was ever obtained (then ``as_of``
    and ``source`` are None too). ``as_of``: the moment the figure is for, an
    aware UTC datetime, None when the source does not say. ``source``:
    ``"worldometers"`` or ``"who"``. ``fresh``: True when the source answered
    at this check (a 304 Not Modified, or a WHO reading still within its hour,
    counts as an answer); False when the last good reading is carried over.
    """

    total: int | None = None
    as_of: datetime | None = None
    source: str | None = None
    fresh: bool = False

    def __post_init__(self) -> None:
        if (self.total is None) != (self.source is None):
            raise ValueError("a CaseCount has a source exactly when it has a total")
        if self.as_of is not None:
            if self.total is None:
                raise ValueError("a CaseCount without a total has no as_of")
            if self.as_of.utcoffset() is None:
                raise ValueError("as_of must be an aware datetime")
            object.__setattr__(self, "as_of", self.as_of.astimezone(UTC))

    def carried_over(self) -> CaseCount:
        """This reading, marked as not fresh (the source did not answer this time)."""
        return replace(self, fresh=False) if self.fresh else self

    def describe(self) -> str:
        """A short text for a log line: ``704,753,890 (worldometers, as of 2024-04-13, fresh)``."""
        if self.total is None:
            return "none (no count obtained yet)"
        return f"{self.total:,} ({self.origin()}, {'fresh' if self.fresh else 'carried over'})"

    def origin(self) -> str:
        """Where and when the figure is from: ``worldometers, as of 2024-04-13``."""
        if self.as_of is None:
            return f"{self.source}, date unknown"
        shown = self.as_of.date().isoformat()
        if (self.as_of.hour, self.as_of.minute, self.as_of.second) != (0, 0, 0):
            shown = f"{self.as_of:%Y-%m-%d %H:%M} UTC"
        return f"{self.source}, as of {shown}"


#: the reading before any count was obtained
NO_COUNT = CaseCount()


# --------------------------------------------------------------------------
# parsing: pure


def parse_total_cases(page: str | bytes) -> int:
    """The number under the "Coronavirus Cases:" heading of a worldometers page.

    The heading is any ``h1``-``h6`` whose whitespace-normalised text is
    exactly ``Coronavirus Cases:``. Its counter is the ``div.maincounter-number``
    inside the same ``#maincounter-wrap`` block or, when the heading is in no
    such block, the first one after it before the next heading. Commas and
    (non-breaking) spaces in the number are ignored.

    The answer is always that of :func:`parse_total_cases_full`, only faster:
    a cheap text search finds the label and its enclosing ``#maincounter-wrap``
    block, and only that block is parsed with BeautifulSoup (a full page is
    about 1 MB; the block a few hundred bytes). Whenever that shortcut is not
    sure (no such block, no counter in it, a counter that does not read as a
    number, ...) the whole page is parsed.

    Raises CounterNotFoundError when there is no such counter or it does not
    read as a whole number (``N/A``, empty, ...).
    """
    count = _parse_counter_block(page)
    if count is not None:
        return count
    return parse_total_cases_full(page)


def parse_total_cases_full(page: str | bytes) -> int:
    """:func:`parse_total_cases` by parsing the whole page with BeautifulSoup.

    The reference answer, and the fallback of the fast path; same result, same errors.
    """
    return _counter_in(BeautifulSoup(page, "html.parser"), require_wrapper=False)


def _counter_in(soup: BeautifulSoup, *, require_wrapper: bool) -> int:
    """The count under the first labelled heading of ``soup`` that has a counter.

    With ``require_wrapper`` (a parsed fragment), the first labelled heading
    must sit in a ``#maincounter-wrap`` block holding a counter, else
    CounterNotFoundError: the caller then parses the whole page.
    """
    for heading in soup.find_all(_HEADINGS):
        if " ".join(heading.get_text().split()) != CASES_LABEL:
            continue
        if require_wrapper and heading.find_parent(id=WRAPPER_ID) is None:
            break
        counter = _counter_of(heading)
        if require_wrapper and (counter is None or not _ends_before_more(counter)):
            break  # the fragment may have cut the counter short
        if counter is not None:
            return _to_int(counter.get_text())
    raise CounterNotFoundError(f"the page has no {CASES_LABEL!r} counter")


def _parse_counter_block(page: str | bytes) -> int | None:
    """The fast path of :func:`parse_total_cases`: the count, or None when unsure.

    Finds the first "Coronavirus Cases:" label in the markup that is not inside
    a comment, script or style, takes the ``#maincounter-wrap`` opening tag just
    before it and parses from there to the next heading or counter block. The
    fragment begins with the block's own opening tag, so every element opened
    in it is built exactly as in the whole page; a label heading that the
    fragment does not show inside that block, or a block without a readable
    counter, sends the caller to the full parse.
    """
    text = _decoded(page)
    if text is None:
        return None
    for hint in _LABEL_HINT.finditer(text):
        if _in_opaque_text(text, hint.start()):
            continue  # e.g. the label quoted in an HTML comment
        start = None
        window_start = max(0, hint.start() - _BLOCK_LOOKBEHIND)
        for wrapper in _WRAPPER_OPEN.finditer(text, window_start, hint.start()):
            start = wrapper.start()
        if start is None or _in_opaque_text(text, start):
            return None
        end_match = _BLOCK_END.search(text, hint.end())
        if end_match is not None:
            end = end_match.start()
            if _in_opaque_text(text, end):
                return None
        elif len(text) - hint.end() <= _BLOCK_LOOKAHEAD:
            end = len(text)
        else:
            return None
        try:
            return _counter_in(BeautifulSoup(text[start:end], "html.parser"),
                               require_wrapper=True)
        except CounterNotFoundError:
            return None  # the full parse decides, and words the error
    return None


def _ends_before_more(element: Tag) -> bool:
    """True when something follows ``element`` outside it: it was closed, not cut off."""
    node: Tag | None = element
    while node is not None:
        if node.next_sibling is not None:
            return True
        node = node.parent
    return False


def _decoded(page: str | bytes) -> str | None:
    """``page`` as text, decoded as BeautifulSoup would decode it; None if it cannot be."""
    if isinstance(page, str):
        return page
    return UnicodeDammit(page, is_html=True).unicode_markup


def _in_opaque_text(text: str, position: int) -> bool:
    """True when ``position`` may be inside a comment, a script or a style element."""
    opened = text.rfind("<!--", 0, position)
    if opened != -1 and text.find("-->", opened + 4, position) == -1:
        return True
    raw_elements = list(_RAW_OPEN.finditer(text, 0, position))
    if not raw_elements:
        return False
    last_raw = raw_elements[-1]
    closing = re.compile(rf"</{last_raw.group(1)}\s*>", re.IGNORECASE)
    return closing.search(text, last_raw.end(), position) is None


def _counter_of(heading: Tag) -> Tag | None:
    """The counter belonging to ``heading``, or None."""
    wrapper = heading.find_parent(id=WRAPPER_ID)
    if wrapper is not None:
        return wrapper.find("div", class_=COUNTER_CLASS)
    for element in heading.next_elements:
        if not isinstance(element, Tag):
            continue
        if element.name in _HEADINGS or element.get("id") == WRAPPER_ID:
            return None  # the next block starts: its number is not ours
        if element.name == "div" and COUNTER_CLASS in (element.get("class") or ()):
            return element
    return None


def _to_int(text: str) -> int:
    digits = _NOT_DIGITS.sub("", text)
    problem = None
    if not _DIGITS.fullmatch(digits):
        problem = "not a number"
    elif len(digits.lstrip("0")) > MAX_COUNT_DIGITS:
        problem = "too large to be a count"  # and it would not fit a BSON int64
    if problem:
        shown = " ".join(text.split())
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise CounterNotFoundError(f"the {CASES_LABEL!r} counter reads {shown!r}, {problem}")
    return int(digits)


def parse_last_updated(page: str | bytes) -> datetime | None:
    """When a worldometers page says its figures are from, as an aware UTC datetime.

    Reads the page's ``Last updated: April 13, 2024, 00:00 GMT`` line: English
    month names (full or abbreviated), spaces that may be ``&nbsp;``, inline
    tags between the parts; a missing time means 00:00 and a missing zone GMT.
    Occurrences inside comments, scripts or styles are skipped. Returns None
    when the page has no such line or its date does not exist.

    Cheap: one regular-expression search over the decoded text (no HTML parse).
    """
    text = _decoded(page)
    if text is None:
        return None
    for found in _LAST_UPDATED.finditer(text):
        if _in_opaque_text(text, found.start()):
            continue
        month = _month_number(found["month"])
        if month is None:
            continue
        try:
            return datetime(int(found["year"]), month, int(found["day"]),
                            int(found["hour"] or 0), int(found["minute"] or 0),
                            int(found["second"] or 0), tzinfo=UTC)
        except ValueError:
            continue  # e.g. February 30
    return None


def _month_number(name: str) -> int | None:
    """1-12 for an English month name or its abbreviation (``Apr``, ``Sept``), else None."""
    name = name.lower()
    for number, month in enumerate(_MONTHS, start=1):
        if len(name) >= 3 and month.startswith(name):
            return number
    return None


@dataclass(frozen=True)
class WhoTotal:
    """The world total read from WHO's daily file, with what the reading was made of.

    ``total``: the sum over countries of each one's latest ``Cumulative_cases``;
    ``as_of``: the file's latest ``Date_reported`` at 00:00 UTC; ``countries``:
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
    commas.

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
    * ``as_of`` is the latest ``Date_reported`` of any usable row, at 00:00 UTC;
    * ``New_cases`` and the other columns are not read (often blank anyway).

    A row that cannot be used (wrong number of fields, a date that is not
    ``YYYY-MM-DD``, no country, a ``Cumulative_cases`` that is not a whole
    number) is skipped and counted, never fatal; blank lines are ignored.

    Raises WhoFileError (one line) when the file has no header with those
    columns, when no row has a number, when more than half of the rows cannot
    be used (the format must have changed), or when the total is absurdly large.
    """
    rows = csv.reader(_without_bom(lines))
    header = _who_header(rows)
    date_at, country_at, cumulative_at = _who_columns(header)
    width = len(header)
    latest: dict[str, tuple[date, int]] = {}  # country -> (date, Cumulative_cases)
    countries: set[str] = set()
    days: dict[str, date | None] = {}  # each Date_reported text parsed once
    newest = date.min
    read = skipped = 0
    problem: str | None = None
    while True:
        try:
            for row in rows:
                read += 1
                if len(row) == width or (len(row) > width
                                         and not "".join(row[width:]).strip()):
                    raw_day, raw_count = row[date_at], row[cumulative_at]
                    day = days.get(raw_day, date.min)
                    if day is date.min:
                        day = days[raw_day] = _who_date(raw_day)
                    if raw_count.isdigit() and raw_count.isascii() and len(raw_count) <= 18:
                        count: int | None = int(raw_count)
                    else:
                        count = _who_count(raw_count)
                    country = row[country_at].strip()
                else:
                    day = count = None
                    country = ""
                if day is None or not country or (count is None and raw_count.strip()):
                    reason = _who_row_problem(row, width, date_at, country_at, cumulative_at)
                    if reason is None:
                        read -= 1  # a blank line: not a row
                        continue
                    skipped += 1
                    problem = problem or f"line {rows.line_num}: {reason}"
                    continue
                countries.add(country)
                if day > newest:
                    newest = day
                if count is not None:
                    known = latest.get(country)
                    if known is None or day >= known[0]:
                        latest[country] = (day, count)
        except csv.Error as err:  # e.g. a field past csv's size limit: that row only
            read += 1
            skipped += 1
            problem = problem or f"line {rows.line_num}: {err}"
            continue
        break
    if skipped * 2 > read:
        raise WhoFileError(f"{skipped} of {read} rows cannot be read, e.g. {problem}")
    if not latest:
        raise WhoFileError(f"no row has a {WHO_CUMULATIVE} number")
    total = sum(count for _, count in latest.values())
    if total > MAX_COUNT:
        raise WhoFileError(f"the world total {total} is too large to be a count")
    return WhoTotal(total, datetime(newest.year, newest.month, newest.day, tzinfo=UTC),
                    len(countries), read, skipped, problem)


def _who_row_problem(row: list[str], width: int, date_at: int, country_at: int,
                     cumulative_at: int) -> str | None:
    """Why a row of WHO's file cannot be used; None when it is a blank line."""
    if len(row) <= 1 and not "".join(row).strip():
        return None
    if len(row) < width or "".join(row[width:]).strip():
        return f"{len(row)} fields, the header has {width}"
    raw_day, raw_count = row[date_at], row[cumulative_at]
    if _who_date(raw_day) is None:
        return f"{WHO_DATE} {raw_day[:40]!r} is not a YYYY-MM-DD date"
    if not row[country_at].strip():
        return f"no {WHO_COUNTRY}"
    if _who_count(raw_count) is None and raw_count.strip():
        return f"{WHO_CUMULATIVE} {raw_count[:40]!r} is not a whole number"
    return "unreadable"  # not reached: the checks above are those of who_world_total


def _without_bom(lines: Iterable[str]) -> Iterator[str]:
    """``lines`` with a byte order mark dropped from the first one."""
    iterator = iter(lines)
    for first in iterator:
        yield first.removeprefix("\ufeff")
        break
    yield from iterator


def _who_header(rows: Iterator[list[str]]) -> list[str]:
    """The first non-blank row; WhoFileError when there is none or it is unreadable."""
    try:
        for row in rows:
            if "".join(row).strip():
                return row
    except csv.Error as err:
        raise WhoFileError(f"not WHO's daily CSV: its first line is unreadable ({err})") from None
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
    if raw.isdigit() and raw.isascii() and len(raw) <= MAX_COUNT_DIGITS:
        return int(raw)
    text = raw.strip()
    whole, dot, fraction = text.partition(".")
    if (whole.isdigit() and whole.isascii() and len(whole) <= MAX_COUNT_DIGITS
            and (not dot or set(fraction) <= {"0"})):
        return int(whole)
    return None


def _text_lines(chunks: Iterable[bytes], max_line: int = WHO_MAX_LINE_CHARS) -> Iterator[str]:
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
# fetching: HTTP


@dataclass(frozen=True)
class Validators:
    """What identifies one version of a page: the server's ``ETag`` and ``Last-Modified``."""

    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Validators:
        """The validators in a response's headers (either may be missing)."""
        return cls(headers.get("ETag") or None, headers.get("Last-Modified") or None)

    def __bool__(self) -> bool:
        return bool(self.etag or self.last_modified)

    def request_headers(self) -> dict[str, str]:
        """``If-None-Match`` / ``If-Modified-Since``: "send the page only if it changed"."""
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


@dataclass(frozen=True)
class FetchedPage:
    """A conditional fetch's answer: the body, or None for 304 Not Modified."""

    body: bytes | None
    validators: Validators


def fetch_page(url: str, *, timeout: float, session: requests.Session | None = None) -> bytes:
    """The body of ``url`` (decoded if compressed), at most MAX_PAGE_BYTES long.

    Only http and https URLs are fetched. ``timeout`` (seconds) bounds the
    connection and each wait for data. A browser-like User-Agent is sent.
    ``session`` is used if given (and left open), else a new one is made and closed.

    Raises CaseCountError naming the URL and the reason on any failure: bad URL,
    connection error, timeout, HTTP error status, page too large.
    """
    body = fetch_page_if_changed(url, timeout=timeout, session=session).body
    assert body is not None  # only a conditional request can be answered "not modified"
    return body


def fetch_page_if_changed(
    url: str,
    *,
    timeout: float,
    session: requests.Session | None = None,
    validators: Validators | None = None,
) -> FetchedPage:
    """:func:`fetch_page`, made conditional on ``validators`` (those of a page already read).

    Sends ``If-None-Match`` / ``If-Modified-Since``; when the server answers
    304 Not Modified, nothing is downloaded and the result's ``body`` is None.
    Otherwise ``body`` is the page. ``validators`` of the result are the
    server's for the page it means (kept from the request when a 304 names none).
    Raises CaseCountError like :func:`fetch_page`, and for a 304 to a request
    that had no validators.
    """
    body, answered = _fetch(url, timeout=timeout, session=session, validators=validators,
                            max_bytes=MAX_PAGE_BYTES, read=b"".join)
    return FetchedPage(body, answered)


def _fetch(
    url: str,
    *,
    timeout: float,
    session: requests.Session | None,
    validators: Validators | None,
    max_bytes: int,
    read: Callable[[Iterator[bytes]], _T],
    accept: str | None = None,
) -> tuple[_T | None, Validators]:
    """GET ``url`` (conditionally on ``validators``) and ``read`` its body as it streams in.

    ``read`` gets the body's chunks (decompressed, at most ``max_bytes`` in
    all, else CaseCountError) and returns what the caller wants of them; it
    may stop early or raise CaseCountError itself. Returns ``(what read
    returned, the server's validators)``, or ``(None, validators)`` for 304 Not
    Modified. ``accept`` replaces the browser-like ``Accept`` header. Every
    requests/urllib3 failure, also one while ``read`` is consuming the body,
    becomes a CaseCountError naming the URL and the reason.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise CaseCountError(f"cannot fetch {url!r}: not an http(s) URL")
    validators = validators or Validators()
    headers = {**BROWSER_HEADERS, **({"Accept": accept} if accept else {}),
               **validators.request_headers()}
    try:
        if session is None:
            with requests.Session() as own:
                return _download(own, url, timeout, headers, validators, max_bytes, read)
        return _download(session, url, timeout, headers, validators, max_bytes, read)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
        raise CaseCountError(f"cannot fetch {url}: {_reason(err, timeout)}") from err


def _download(
    session: requests.Session,
    url: str,
    timeout: float,
    headers: Mapping[str, str],
    validators: Validators,
    max_bytes: int,
    read: Callable[[Iterator[bytes]], _T],
) -> tuple[_T | None, Validators]:
    with session.get(url, headers=headers, timeout=timeout, stream=True) as response:
        if response.status_code == HTTPStatus.NOT_MODIFIED:
            if not validators:
                raise CaseCountError(
                    f"cannot fetch {url}: HTTP 304 Not Modified to an unconditional request"
                )
            return None, Validators.of(response.headers) or validators
        response.raise_for_status()
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise CaseCountError(
                f"cannot fetch {url}: the page is {int(declared)} bytes, "
                f"more than the {max_bytes} allowed"
            )
        return read(_capped(response, url, max_bytes)), Validators.of(response.headers)


def _capped(response: requests.Response, url: str, max_bytes: int) -> Iterator[bytes]:
    """The response's body in chunks; CaseCountError once more than ``max_bytes`` came."""
    received = 0
    for chunk in response.iter_content(CHUNK_BYTES):
        received += len(chunk)
        if received > max_bytes:
            raise CaseCountError(
                f"cannot fetch {url}: the page is larger than the {max_bytes} bytes allowed"
            )
        yield chunk


def _reason(err: Exception, timeout: float) -> str:
    """A short, one-line reason for a requests/urllib3 failure."""
    if isinstance(err, requests.HTTPError) and err.response is not None:
        response = err.response
        return f"HTTP {response.status_code} {response.reason or ''}".rstrip()
    timed_out = isinstance(err, requests.Timeout | urllib3.exceptions.TimeoutError) or (
        # requests reports a read timeout while streaming the body as a ConnectionError
        bool(err.args) and isinstance(err.args[0], urllib3.exceptions.TimeoutError)
    )
    if timed_out:
        return f"no answer within {timeout:g} s"
    text = " ".join(str(err).split())
    if isinstance(err, requests.ConnectionError):
        errno = _ERRNO.search(text)
        return f"connection failed: {errno.group(0).strip() if errno else text[:200]}"
    return f"{type(err).__name__}: {text[:200]}"


def fetch_total_cases(
    url: str, *, timeout: float, session: requests.Session | None = None
) -> int:
    """The world's total case count read from ``url``.

    Raises CaseCountError (CounterNotFoundError when the page was fetched but
    holds no readable counter); the message names the URL.
    """
    return _count_in_page(url, fetch_page(url, timeout=timeout, session=session))


def _count_in_page(url: str, page: str | bytes) -> int:
    try:
        return parse_total_cases(page)
    except CounterNotFoundError as err:
        raise CounterNotFoundError(f"{url}: {err}") from None


def _reading_of_page(url: str, page: bytes) -> tuple[int, datetime | None]:
    """(count, as of) of a worldometers page; the page is decoded once for both."""
    text = _decoded(page)
    source = page if text is None else text
    return _count_in_page(url, source), parse_last_updated(source)


def fetch_who_total(
    url: str,
    *,
    timeout: float,
    session: requests.Session | None = None,
    max_bytes: int = WHO_MAX_BYTES,
) -> WhoTotal:
    """The world total read from WHO's daily CSV at ``url``, parsed as it downloads.

    Raises CaseCountError like :func:`fetch_page` (the size cap is
    ``max_bytes``), WhoFileError when the file does not give a total; the
    message names the URL.
    """
    total, _ = _fetch_who(url, timeout=timeout, session=session, validators=None,
                          max_bytes=max_bytes)
    assert total is not None  # only a conditional request can be answered "not modified"
    return total


def _fetch_who(
    url: str,
    *,
    timeout: float,
    session: requests.Session | None,
    validators: Validators | None,
    max_bytes: int,
    cancel: threading.Event | None = None,
) -> tuple[WhoTotal | None, Validators]:
    """:func:`fetch_who_total`, conditional on ``validators`` (None total: 304).

    When ``cancel`` is set, the download stops at the next chunk (CaseCountError).
    """

    def read(chunks: Iterator[bytes]) -> WhoTotal:
        if cancel is not None:
            chunks = _unless_cancelled(chunks, cancel, url)
        try:
            return who_world_total(_text_lines(chunks))
        except WhoFileError as err:
            raise WhoFileError(f"{url}: {err}") from None

    return _fetch(url, timeout=timeout, session=session, validators=validators,
                  max_bytes=max_bytes, read=read, accept=WHO_ACCEPT)


def _unless_cancelled(chunks: Iterator[bytes], cancel: threading.Event,
                      url: str) -> Iterator[bytes]:
    for chunk in chunks:
        if cancel.is_set():
            raise CaseCountError(f"cannot fetch {url}: stopped (the counter was closed)")
        yield chunk


def fetch_case_count(settings: config.Settings,
                     session: requests.Session | None = None) -> CaseCount:
    """One reading from ``settings.case_source``, now, without fallback.

    What ``python scrape.py`` prints. Raises CaseCountError saying why there is
    no count (the counters of :func:`open_counter` never raise).
    """
    timeout = settings.scrape_timeout
    if settings.case_source == "who":
        total = fetch_who_total(settings.who_url, timeout=timeout, session=session)
        return CaseCount(total.total, total.as_of, "who", fresh=True)
    _check_source(settings.case_source)
    url = settings.worldometer_url
    count, as_of = _reading_of_page(url, fetch_page(url, timeout=timeout, session=session))
    return CaseCount(count, as_of, "worldometers", fresh=True)


def _check_source(source: str) -> None:
    if source not in ("worldometers", "who"):
        raise ValueError(f"unknown case source {source!r}: worldometers or who")


# --------------------------------------------------------------------------
# the driver's view: last good reading, one warning per failure window


def utc_now() -> datetime:
    """The current time, aware, in UTC (the counters' default clock)."""
    return datetime.now(UTC)


class StalenessWarning:
    """Warns when a reading is old: its ``as_of`` more than ``after`` before now.

    The first stale reading it is shown logs one WARNING naming the date and
    giving ``advice``; after that it warns at most once per ``every`` (a day),
    however often it is asked. Readings without a count or a date never warn.
    Shared by both counters and the command line.
    """

    def __init__(self, name: str, advice: str, *, after: timedelta = STALE_AFTER,
                 every: timedelta = STALE_WARN_EVERY) -> None:
        self.name = name
        self.advice = advice
        self.after = after
        self.every = every
        self._warned_at: datetime | None = None

    def check(self, reading: CaseCount, now: datetime) -> bool:
        """Warn if ``reading`` is stale and no warning was given within ``every``; True if so."""
        if reading.total is None or reading.as_of is None:
            return False
        age = now - reading.as_of
        if age <= self.after:
            return False
        if self._warned_at is not None and timedelta(0) <= now - self._warned_at < self.every:
            return False
        self._warned_at = now
        log.warning("the %s case count is as of %s (%d days old): %s", self.name,
                    reading.as_of.date().isoformat(), age.days, self.advice)
        return True


def staleness_warning(source: str) -> StalenessWarning:
    """The staleness warning for ``source`` (``worldometers`` or ``who``), with its advice."""
    _check_source(source)
    if source == "who":
        return StalenessWarning("WHO", WHO_STALE_ADVICE)
    return StalenessWarning("worldometers", WORLDOMETERS_STALE_ADVICE)


class _FailureLog:
    """The log lines of a source that fails and recovers: one WARNING when a failure
    window opens, DEBUG while it lasts, one INFO when the source answers again."""

    def __init__(self) -> None:
        self.failures = 0  # consecutive failed attempts since the last success

    def failed(self, err: CaseCountError, last_good: CaseCount) -> None:
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
        if self.failures:
            log.info("case count available again after %d failed attempts: %s",
                     self.failures, reading.describe())
        else:
            log.debug("case count: %s", reading.describe())
        self.failures = 0


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


class _ClosedOnExit:
    """``with counter:`` closes the counter at the end of the block."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class CaseCounter(_ClosedOnExit):
    """worldometers' current total case count, falling back to the last good one.

    Made once by the Spark driver and asked once per batch; it keeps one
    requests.Session (the one given, left open by :meth:`close`, or its own).
    The page is fetched conditionally: the ``ETag`` / ``Last-Modified`` of the
    last page that gave a count are sent back, and a 304 Not Modified answer
    means that count (and its date) is still current, without downloading the
    page again. ``clock`` (aware UTC datetimes) tells the staleness check what
    time it is. Not thread-safe: use it from one thread.
    """

    source = "worldometers"

    def __init__(self, url: str, timeout: float, session: requests.Session | None = None,
                 *, clock: Callable[[], datetime] = utc_now) -> None:
        self.url = url
        self.timeout = timeout
        self._clock = clock
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._last = NO_COUNT  # the last good reading
        self._failures = _FailureLog()
        self._staleness = staleness_warning(self.source)
        self._validators = Validators()  # of the page the last good count came from
        self._warned_no_date = False
        #: answers "304 Not Modified" so far (each a page not downloaded again)
        self.not_modified = 0

    @property
    def last_good(self) -> int | None:
        """The last count obtained, or None if none ever was."""
        return self._last.total

    def start(self) -> CaseCount:
        """The first reading, logged at INFO, and the staleness check; never raises."""
        reading = self._read()
        log.info("case count at start: %s", reading.describe())
        self._staleness.check(reading, self._clock())
        return reading

    def current(self) -> CaseCount:
        """The count now, fetched conditionally; never raises CaseCountError.

        On success (a new page, or 304 Not Modified) the reading is fresh. On
        failure it is the last good reading with ``fresh=False`` (NO_COUNT if
        none); the first failure after a success (or after start) logs one
        WARNING, the following ones log at DEBUG, and the first success after
        failures logs at INFO. A stale reading warns as :class:`StalenessWarning` says.
        """
        reading = self._read()
        self._staleness.check(reading, self._clock())
        return reading

    def _read(self) -> CaseCount:
        try:
            reading = self._fetch()
        except CaseCountError as err:
            self._failures.failed(err, self._last)
            return self._last.carried_over()
        self._failures.succeeded(reading)
        self._last = reading
        return reading

    def _fetch(self) -> CaseCount:
        """The reading now: the last good one (fresh) if the page has not changed since."""
        known = self._validators if self._last.total is not None else None
        page = fetch_page_if_changed(self.url, timeout=self.timeout, session=self._session,
                                     validators=known)
        if page.body is None:
            assert self._last.total is not None  # only then were validators sent
            self.not_modified += 1
            log.debug("page not modified since the last good count")
            reading = replace(self._last, fresh=True)
        else:
            count, as_of = _reading_of_page(self.url, page.body)
            if as_of is None and not self._warned_no_date:
                self._warned_no_date = True
                log.warning("%s has no readable 'Last updated:' line: the case count's "
                            "date is unknown (case_count_as_of stays null)", self.url)
            reading = CaseCount(count, as_of, self.source, fresh=True)
        self._validators = page.validators
        return reading

    def close(self) -> None:
        """Close the session if this counter made it."""
        if self._owns_session:
            self._session.close()


@dataclass(frozen=True)
class _Refresh:
    """One download and parse of WHO's file, running in its own thread."""

    thread: threading.Thread
    done: threading.Event


class WhoCaseCounter(_ClosedOnExit):
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
    :class:`CaseCounter` does. ``timeout`` bounds connecting and each wait for
    data. ``clock`` (aware UTC datetimes) drives both the hourly schedule and
    the staleness check. Call its methods from one thread; the refresh thread
    is its own.
    """

    source = "who"

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
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if refresh_seconds <= 0:
            raise ValueError("refresh_seconds must be > 0")
        self.url = url
        self.timeout = timeout
        self.refresh_every = timedelta(seconds=refresh_seconds)
        self.retry_every = min(self.refresh_every, timedelta(seconds=retry_seconds))
        self.max_wait = timeout if max_wait is None else max_wait
        self.max_bytes = max_bytes
        self._clock = clock
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._staleness = staleness_warning(self.source)
        self._closed = threading.Event()
        self._lock = threading.Lock()  # guards the fields below (the refresh thread writes)
        self._last = NO_COUNT  # the last good reading
        self._validators = Validators()  # of the file the last good reading came from
        self._failures = _FailureLog()
        self._attempted_at: datetime | None = None  # when the last refresh began
        self._answered_at: datetime | None = None  # when the last refresh began, if it worked
        self._refresh: _Refresh | None = None
        #: answers "304 Not Modified" and files downloaded and read, so far
        self.not_modified = 0
        self.downloads = 0

    @property
    def last_good(self) -> int | None:
        """The last count obtained, or None if none ever was."""
        with self._lock:
            return self._last.total

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
            known = self._validators if self._last.total is not None else None
            done = threading.Event()
            thread = threading.Thread(target=self._run_refresh, args=(now, known, done),
                                      name="who-case-count", daemon=True)
            self._refresh = _Refresh(thread, done)
            thread.start()
            return self._refresh, True

    def _run_refresh(self, began: datetime, known: Validators | None,
                     done: threading.Event) -> None:
        """The refresh thread: fetch and parse, then record the outcome."""
        try:
            total, validators = _fetch_who(self.url, timeout=self.timeout, session=self._session,
                                           validators=known, max_bytes=self.max_bytes,
                                           cancel=self._closed)
        except CaseCountError as err:
            self._record_failure(err)
        except Exception as err:  # a bug must not end the counter: log it as a failure
            log.exception("refreshing WHO's case count failed unexpectedly")
            self._record_failure(CaseCountError(f"{type(err).__name__}: {err}"))
        else:
            self._record_success(began, total, validators)
        finally:
            with self._lock:
                self._refresh = None
            done.set()

    def _record_failure(self, err: CaseCountError) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._answered_at = None
            self._failures.failed(err, self._last)

    def _record_success(self, began: datetime, total: WhoTotal | None,
                        validators: Validators) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            if total is None:
                self.not_modified += 1
                log.debug("WHO's file not modified since the last good count")
            else:
                self.downloads += 1
                self._last = CaseCount(total.total, total.as_of, self.source, fresh=True)
                skipped = (f"; {total.skipped} bad rows skipped, the first at {total.problem}"
                           if total.skipped else "")
                log.info("read WHO's file: %s from %d countries, %d rows%s",
                         self._last.describe(), total.countries, total.rows, skipped)
            self._validators = validators
            self._answered_at = began
            self._failures.succeeded(replace(self._last, fresh=True))

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
        if self._owns_session:
            self._session.close()


def open_counter(
    settings: config.Settings,
    session: requests.Session | None = None,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> CaseCountSource:
    """The counter for ``settings.case_source``: CaseCounter (``worldometers``, asked
    at ``settings.worldometer_url``) or WhoCaseCounter (``who``, ``settings.who_url``),
    both with ``settings.scrape_timeout``. Call ``start()`` once, ``current()`` per
    batch, ``close()`` at the end (or use it as a context manager)."""
    _check_source(settings.case_source)
    if settings.case_source == "who":
        return WhoCaseCounter(settings.who_url, settings.scrape_timeout, session=session,
                              clock=clock)
    return CaseCounter(settings.worldometer_url, settings.scrape_timeout, session, clock=clock)


# --------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (option errors exit with 2 directly)."""
    settings = config.load_settings(
        "scrape.py", config.SCRAPE_OPTIONS, argv, description=__doc__,
        aliases={"worldometer_url": "--url", "scrape_timeout": "--timeout"},
    )
    config.configure_logging(settings)
    url = settings.who_url if settings.case_source == "who" else settings.worldometer_url
    log.debug("fetching %s (timeout %g s)", url, settings.scrape_timeout)
    try:
        reading = fetch_case_count(settings)
    except CaseCountError as err:
        sys.stderr.write(f"scrape.py: error: {err}\n")
        return 1
    log.info("case count %s", reading.describe())
    staleness_warning(settings.case_source).check(reading, utc_now())
    sys.stdout.write(f"{reading.total}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
