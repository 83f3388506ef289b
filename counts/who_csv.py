"""WHO's daily CSV read row by row, as it streams in: its lines from bytes, each row
checked (the one place that decides whether a row is usable) and given as values. Pure:
no I/O."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator
from datetime import date
from typing import cast

from counts.reading import MAX_COUNT_DIGITS, WhoFileError
from counts.series import CaseRow

#: a longer line means the body is not WHO's CSV (its rows are ~50 characters)
WHO_MAX_LINE_CHARS = 1024 * 1024
#: the columns of WHO's file that the total needs (found by name, in any order)
WHO_DATE, WHO_COUNTRY, WHO_CUMULATIVE = "Date_reported", "Country", "Cumulative_cases"
#: the other columns, which the case series keeps (a missing one gives nulls)
WHO_CODE, WHO_REGION = "Country_code", "WHO_region"
WHO_NEW_CASES, WHO_NEW_DEATHS, WHO_CUMULATIVE_DEATHS = (
    "New_cases", "New_deaths", "Cumulative_deaths")

#: a usable row of WHO's file: (Date_reported, Country, Cumulative_cases or None if blank)
WhoRow = tuple[date, str, int | None]


def who_rows(lines: Iterable[str]) -> Iterator[WhoRow | str]:
    """Each data row of WHO's daily CSV, checked: what the world total needs of it
    (``Date_reported`` as a date, ``Country`` stripped, ``Cumulative_cases`` as an
    int, None when blank), or why it cannot be used (:func:`_rows`)."""
    return cast(Iterator[WhoRow | str], _rows(lines, False))


def who_case_rows(lines: Iterable[str]) -> Iterator[CaseRow | str]:
    """Each data row of WHO's daily CSV, checked, with all its values (a CaseRow), or
    why it cannot be used (:func:`_rows`). A missing optional column (any but
    ``Date_reported``, ``Country`` and ``Cumulative_cases``) gives nulls."""
    return cast(Iterator[CaseRow | str], _rows(lines, True))


def _rows(lines: Iterable[str], full: bool) -> Iterator[WhoRow | CaseRow | str]:
    """Each data row of WHO's daily CSV, checked: its values, or why it cannot be used.

    The one place that decides whether a row is usable. ``lines`` are as for
    :func:`counts.who.who_world_total`; its header (the first non-blank line) says where
    the columns are (empty names at its end, from a trailing comma, are
    dropped). Each line is one row, read on its own (WHO's rows hold no line
    breaks), so a bad line costs that line only: a quote never closed on its
    line does not swallow the lines after it. For each data row this yields
    either its values (a WhoRow, or with ``full`` a CaseRow), or a text ``line N:
    reason`` (N counts the lines given, from 1) when it cannot be used: wrong
    number of fields, a date that is not ``YYYY-MM-DD``, no country, a
    ``Cumulative_cases`` that is not a whole number, a line csv cannot split
    or whose quote is never closed; with ``full`` also a ``New_cases`` or
    ``New_deaths`` that is not a whole number (negative ones are corrections, and
    kept) or a ``Cumulative_deaths`` that is not one ≥ 0. Blank lines yield
    nothing. Raises WhoFileError when there is no header with those columns.
    Each distinct ``Date_reported`` text is parsed once.
    """
    numbered = enumerate(lines, start=1)
    quoted = _QuotedLineReader()
    header = _who_header(numbered, quoted)
    date_at, country_at, cumulative_at = _who_columns(header)
    others = _other_columns(header)
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
            count: int | None = int(raw_count)
        else:
            count = _who_count(raw_count)
            if count is None and raw_count.strip():
                yield (f"line {number}: {WHO_CUMULATIVE} {raw_count[:40]!r} is not "
                       "a whole number")
                continue
        if full:
            yield _case_row(row, others, number, day, country, count)
        else:
            yield day, country, count


def _case_row(row: list[str], columns: tuple[int | None, ...], number: int, day: date,
              country: str, cumulative: int | None) -> CaseRow | str:
    """The CaseRow of a row already checked for its date, country and Cumulative_cases,
    or why its other figures cannot be used."""
    code_at, region_at, new_at, new_deaths_at, deaths_at = columns
    try:
        new_cases = _figure(row, new_at, WHO_NEW_CASES, signed=True)
        new_deaths = _figure(row, new_deaths_at, WHO_NEW_DEATHS, signed=True)
        deaths = _figure(row, deaths_at, WHO_CUMULATIVE_DEATHS, signed=False)
    except ValueError as err:
        return f"line {number}: {err}"
    code = None if code_at is None else row[code_at].strip() or None
    region = None if region_at is None else row[region_at].strip() or None
    return CaseRow(day, country, code, region, new_cases, cumulative, new_deaths, deaths)


def _figure(row: list[str], at: int | None, name: str, *, signed: bool) -> int | None:
    """The figure in column ``at`` (named ``name``) of ``row``: an int, None when blank
    or when there is no such column; ValueError when it is not a whole number (or,
    unless ``signed``, a negative one)."""
    if at is None:
        return None
    raw = row[at]
    if not raw:  # the usual New_cases: blank
        return None
    if raw.isdigit() and raw.isascii() and len(raw) <= MAX_COUNT_DIGITS:
        return int(raw)
    text = raw.strip()
    negative = signed and text.startswith("-")
    value = _who_count(text[1:] if negative else text)
    if value is None:
        if not text:
            return None
        raise ValueError(f"{name} {raw[:40]!r} is not a whole number")
    return -value if negative else value


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


def _other_columns(header: list[str]) -> tuple[int | None, ...]:
    """Where Country_code, WHO_region, New_cases, New_deaths and Cumulative_deaths are
    (first of each name), None for a column the header lacks."""
    positions: dict[str, int] = {}
    for at, name in enumerate(header):
        positions.setdefault(name.strip().strip('"').strip().casefold(), at)
    return tuple(positions.get(name.casefold()) for name in (
        WHO_CODE, WHO_REGION, WHO_NEW_CASES, WHO_NEW_DEATHS, WHO_CUMULATIVE_DEATHS))


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

