"""worldometers.info as a case source: the "Coronavirus Cases:" counter (a fast path
and a full parse), the page's "Last updated:" date, and CaseCounter, which asks the
page once per batch."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import requests
from bs4 import BeautifulSoup, Tag, UnicodeDammit

from counts.counter import Answer, Counter
from counts.fetch import Validators, fetch_page, fetch_page_if_changed
from counts.reading import (
    MAX_COUNT_DIGITS,
    CaseCount,
    CounterNotFoundError,
    utc_now,
)
from counts.series import CaseFile, CaseRow, CaseSeriesSink, world_row

# the case count's log lines keep the name operators and tests filter on
log = logging.getLogger("scrape")

#: after the case series failed to store the page's row, it is tried again this late
SERIES_RETRY = timedelta(hours=1)
CASES_LABEL = "Coronavirus Cases:"
COUNTER_CLASS = "maincounter-number"
WRAPPER_ID = "maincounter-wrap"

_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_NOT_DIGITS = re.compile(r"[\s,]")  # \s covers NBSP and the other Unicode spaces
_DIGITS = re.compile(r"[0-9]+")

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
# sit between the parts; the time (and its zone, GMT assumed) may be missing. After the
# time: AM/PM, then a zone (a name, a name with an offset, or an offset), maybe in (...)
_GAP = r"(?:\s|&nbsp;|&#160;|&#xa0;|<[^<>]*>)"
_SIGN = "[+\u2212-]"  # the minus may be U+2212
_OFFSET = rf"{_SIGN}\s?\d{{1,2}}(?::?\d{{2}})?(?![0-9])"
_LAST_UPDATED = re.compile(
    rf"Last{_GAP}+updated{_GAP}*:?{_GAP}*(?P<month>[A-Za-z]{{3,9}})\.?{_GAP}+(?P<day>\d{{1,2}})"
    rf"(?:st|nd|rd|th)?{_GAP}*,?{_GAP}*(?P<year>\d{{4}})"
    rf"(?:{_GAP}*,?{_GAP}*(?P<hour>\d{{1,2}})"
    rf"(?::(?P<minute>\d{{2}})(?::(?P<second>\d{{2}}))?|(?={_GAP}*[ap]\.?m\b))"
    rf"(?:{_GAP}*(?P<ampm>[ap])\.?m\b\.?)?"
    rf"(?:{_GAP}*\(?(?P<zone>[a-z]{{1,5}}(?:\s?{_OFFSET})?|{_OFFSET})(?![a-z0-9])\)?)?)?",
    re.IGNORECASE,
)
#: zone names read, and their offsets from UTC in hours
_ZONES = {"GMT": 0, "UTC": 0, "UT": 0, "Z": 0, "EST": -5, "EDT": -4, "CST": -6, "CDT": -5,
          "MST": -7, "MDT": -6, "PST": -8, "PDT": -7, "CET": 1, "CEST": 2}
_ZONE_PARTS = re.compile(rf"(?P<name>[a-z]*)\s?(?:(?P<sign>{_SIGN})\s?(?P<hours>\d{{1,2}})"
                         r"(?::?(?P<minutes>\d{2}))?)?", re.IGNORECASE)
_MAX_OFFSET = timedelta(hours=14)  # UTC-12 to UTC+14 are in use
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")


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
    count = parse_counter_block(page)
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


def parse_counter_block(page: str | bytes) -> int | None:
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


def parse_last_updated(page: str | bytes,
                       warned: UnreadableLines | None = None) -> datetime | None:
    """When a worldometers page says its figures are from, as an aware UTC datetime.

    Reads the page's ``Last updated: April 13, 2024, 00:00 GMT`` line: English
    month names (full or abbreviated), spaces that may be ``&nbsp;``, inline
    tags between the parts; a missing time means 00:00 and a missing zone GMT.
    The time may say AM or PM (``9:30 PM``, ``9 p.m.``) and its zone is
    honoured: GMT, UTC, Z, an offset (``GMT+2``, ``UTC-5``, ``UTC+5:30``,
    ``+0200``), or EST/EDT, CST/CDT, MST/MDT, PST/PDT, CET/CEST (any case).
    A line this cannot read (a zone written in capitals that is not one of
    those, such as ``AEST``; an offset past 14 hours; ``13:00 PM``; a day or
    month that does not exist) gives no date: it is skipped with a WARNING
    (logger ``scrape``), never read as some other time; pass the same
    ``warned`` to each call to warn once per distinct line (a counter does).
    Occurrences inside comments, scripts or styles are skipped. Returns None
    when the page has no line it can read.

    Cheap: one regular-expression search over the decoded text (no HTML parse).
    """
    text = _decoded(page)
    if text is None:
        return None
    for found in _LAST_UPDATED.finditer(text):
        if _in_opaque_text(text, found.start()):
            continue
        when = _read_last_updated(found)
        if isinstance(when, datetime):
            return when
        (warned or UnreadableLines()).warn(found[0], when)
    return None


def _read_last_updated(found: re.Match[str]) -> datetime | str:
    """The moment a matched "Last updated" line gives, in UTC, or why it gives none."""
    month = _month_number(found["month"])
    if month is None:
        return f"{found['month']!r} is not a month"
    hour = int(found["hour"] or 0)
    if found["ampm"]:
        if not 1 <= hour <= 12:
            return f"{hour} is not an hour of a 12-hour clock"
        hour = hour % 12 + (12 if found["ampm"].lower() == "p" else 0)
    zone = _zone_of(found["zone"])
    if isinstance(zone, str):
        return zone
    try:
        local = datetime(int(found["year"]), month, int(found["day"]), hour,
                         int(found["minute"] or 0), int(found["second"] or 0), tzinfo=zone)
    except ValueError as err:
        return str(err)  # e.g. February 30, 25:00
    return local.astimezone(UTC)


def _zone_of(text: str | None) -> timezone | str:
    """The zone a "Last updated" time is in (None: GMT), or why it cannot be read.

    A name that is not a zone is read as the text after the line (GMT then),
    unless it is written in capitals, as zone names are.
    """
    if text is None:
        return UTC
    parts = _ZONE_PARTS.fullmatch(text)
    if parts is None:  # cannot happen: the zone group has this shape
        return f"the time zone {text!r} is not one this reads"
    name = parts["name"].upper()
    if name and name not in _ZONES:
        if parts["sign"] is None and parts["name"] != name:
            return UTC  # e.g. "Source": words after the line, not a zone
        return f"the time zone {text!r} is not one this reads"
    offset = timedelta(hours=_ZONES.get(name, 0))
    if parts["sign"] is not None:
        if name not in ("", "GMT", "UTC", "UT"):
            return f"the time zone {text!r} is not one this reads"
        shift = timedelta(hours=int(parts["hours"]), minutes=int(parts["minutes"] or 0))
        if int(parts["minutes"] or 0) >= 60 or shift > _MAX_OFFSET:
            return f"the offset in {text!r} is not a time zone's"
        offset = -shift if parts["sign"] != "+" else shift
    return UTC if not offset else timezone(offset)


class UnreadableLines:
    """The distinct unreadable "Last updated" lines already warned about (the
    oldest forgotten past :attr:`LIMIT`): one WARNING each, DEBUG when seen again."""

    LIMIT = 256

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}  # insertion-ordered: the oldest is dropped first
        self._lock = threading.Lock()

    def warn(self, line: str, reason: str) -> None:
        shown = " ".join(re.sub(r"<[^<>]*>|&nbsp;|&#160;|&#xa0;", " ", line).split())
        with self._lock:
            seen = shown in self._seen
            if not seen:
                if len(self._seen) >= self.LIMIT:
                    del self._seen[next(iter(self._seen))]
                self._seen[shown] = None
        (log.debug if seen else log.warning)(
            "cannot read the page's %r (%s): it gives the case count no date", shown[:120],
            reason)


def _month_number(name: str) -> int | None:
    """1-12 for an English month name or its abbreviation (``Apr``, ``Sept``), else None."""
    name = name.lower()
    for number, month in enumerate(_MONTHS, start=1):
        if len(name) >= 3 and month.startswith(name):
            return number
    return None


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


def reading_of_page(url: str, page: bytes,
                    warned: UnreadableLines | None = None) -> tuple[int, datetime | None]:
    """(count, as of) of a worldometers page; the page is decoded once for both."""
    text = _decoded(page)
    source = page if text is None else text
    return _count_in_page(url, source), parse_last_updated(source, warned)


class CaseCounter(Counter):
    """worldometers' current total case count, falling back to the last good one.

    Made once by the Spark driver and asked once per batch; it keeps one
    requests.Session (the one given, left open by :meth:`close`, or its own).
    The page is fetched conditionally: the ``ETag`` / ``Last-Modified`` of the
    last page that gave a count are sent back, and a 304 Not Modified answer
    means that count (and its date) is still current, without downloading the
    page again. ``clock`` (aware UTC datetimes) tells the staleness check what
    time it is. Not thread-safe: use it from one thread.

    With a ``series`` (the store's case series), the page's figure is also kept
    there as one row (:func:`counts.series.world_row`: country ``World``, the
    date it is as of), whenever a page gives a figure or date not stored yet;
    after a failure to store it, it is tried again at most every
    SERIES_RETRY (an hour). That happens on the batch's thread: a store that
    is down costs a batch its server-selection timeout, once an hour at most.
    """

    source = "worldometers"
    unchanged = "page"

    def __init__(self, url: str, timeout: float, session: requests.Session | None = None,
                 *, clock: Callable[[], datetime] = utc_now,
                 series: CaseSeriesSink | None = None) -> None:
        super().__init__(url, timeout, session, clock, series)
        self._stored_row: CaseRow | None = None  # the row the series has
        self._row_failed_at: datetime | None = None  # when storing a row last failed
        self._warned_no_date = False
        self._unreadable = UnreadableLines()  # "Last updated" lines warned about

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
        answered = self._ask()
        if answered and self._series is not None:
            self._keep_row()
        return replace(self._last, fresh=True) if answered else self._last.carried_over()

    def _keep_row(self) -> None:
        """Store the page's figure in the series if it is not there yet."""
        row = world_row(self._last)
        if row is None or row == self._stored_row:
            return
        now = self._clock()
        failed = self._row_failed_at
        if failed is not None and timedelta(0) <= now - failed < SERIES_RETRY:
            return
        file = CaseFile(self.source, now, self.url, self._validators, self._last.as_of, 1)
        if self._store_series(file, [row]):
            self._stored_row, self._row_failed_at = row, None
        else:
            self._row_failed_at = now

    def _fetch(self, validators: Validators | None) -> Answer:
        """The page now, or None for its reading if it has not changed since."""
        page = fetch_page_if_changed(self.url, timeout=self.timeout, session=self._session,
                                     validators=validators)
        if page.body is None:
            return Answer(None, page.validators)
        count, as_of = reading_of_page(self.url, page.body, self._unreadable)
        if as_of is None and not self._warned_no_date:
            self._warned_no_date = True
            log.warning("%s has no readable 'Last updated:' line: the case count's "
                        "date is unknown (case_count_as_of stays null)", self.url)
        return Answer(CaseCount(count, as_of, self.source, fresh=True), page.validators)
