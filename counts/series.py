"""What a counter hands to the case series: the rows of a file it newly read (CaseRow),
what that file was (CaseFile), and who takes them (CaseSeriesSink). Pure values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import NamedTuple, Protocol

from counts.fetch import Validators
from counts.reading import CaseCount

#: the country of worldometers' one row: its figure is the world's
WORLD = "World"


class CaseRow(NamedTuple):
    """One country's figures for one day, as the source gave them.

    ``country`` tells countries apart (WHO's ``Country``: codes are blank for
    some rows and Namibia's is ``NA``); ``code`` and ``who_region`` are None when
    blank. Each figure is an int, or None when blank: a blank is "not reported",
    never 0. ``new_cases`` and ``new_deaths`` may be negative (WHO corrects
    earlier days that way); the cumulative figures never are.
    """

    date: date
    country: str
    code: str | None
    who_region: str | None
    new_cases: int | None
    cumulative_cases: int | None
    new_deaths: int | None
    cumulative_deaths: int | None


@dataclass(frozen=True)
class CaseFile:
    """One version of a source's file, newly read: ``source`` (``who`` or
    ``worldometers``), when it was read (``seen``, aware UTC), where from, its
    validators (ETag / Last-Modified), the date its total is for, and how many of
    its rows were read and skipped (unusable) by the count."""

    source: str
    seen: datetime
    url: str
    validators: Validators
    as_of: datetime | None
    rows: int
    skipped: int = 0


class CaseSeriesSink(Protocol):
    """Where a counter puts the rows of each file it newly reads (the store's
    ``case_counts``). ``rows`` is read once, as it comes; the counter may stop it
    early (it raises then). Any exception is the sink's failure alone: the counter
    logs it and its count goes on."""

    def store(self, file: CaseFile, rows: Iterable[CaseRow]) -> object:
        """Keep ``rows``, the rows of ``file``: new ones added, changed ones revised."""
        ...


def world_row(reading: CaseCount) -> CaseRow | None:
    """worldometers' one row: its world figure as of its date (None without a count
    or a date: a row needs a day)."""
    if reading.total is None or reading.as_of is None:
        return None
    day = reading.as_of.astimezone(UTC).date()
    return CaseRow(day, WORLD, None, None, None, reading.total, None, None)
