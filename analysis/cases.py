"""The case series as a report shows it: one country's rows, or the world's figures per
date (WHO's rows summed; worldometers' one figure), as a table or a pandas DataFrame,
and the world's new cases per week for the figure."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any

from analysis.batches import SOURCE_NAMES, format_count
from counts.series import WORLD
from storage.case_series import FIGURES, VALUES, CaseSeries

if TYPE_CHECKING:
    import pandas

#: the columns of load_cases(), in order (``rows`` and ``revisions`` are counts)
CASE_COLUMNS = ("date", "source", "country", "code", "who_region", *FIGURES, "rows",
                "revisions", "first_seen")
#: weeks of new cases the figure shows at most
WEEKS_SHOWN = 52


class UnknownCountryError(LookupError):
    """No stored row is of the country asked for; ``str(err)`` is one line."""


@dataclass(frozen=True)
class CaseDay:
    """One line of a series: a country's row, or the world's figures of one date.

    The figures are None when blank (never 0). ``rows``: how many stored rows it
    stands for (a country: 1; the world from WHO: the countries of that date);
    ``revisions``: how many earlier versions of them are kept (WHO revised them);
    ``first_seen``: when these values were first read (the world: the latest of
    its rows')."""

    date: datetime
    source: str
    country: str
    code: str | None
    who_region: str | None
    new_cases: int | None
    cumulative_cases: int | None
    new_deaths: int | None
    cumulative_deaths: int | None
    rows: int = 1
    revisions: int = 0
    first_seen: datetime | None = None


def as_known_at(document: Mapping[str, Any], when: datetime | None
                ) -> Mapping[str, Any] | None:
    """The values of a stored row as they were known at ``when`` (the latest version
    first seen by then: the current one, or one of its ``revisions``), None if the row
    was not seen yet; the row as it is when ``when`` is None."""
    if when is None:
        return document
    first_seen = document.get("first_seen")
    if first_seen is not None and first_seen <= when:
        return document
    revisions = list(document.get("revisions") or ())
    for at in range(len(revisions) - 1, -1, -1):
        earlier = revisions[at]
        if earlier.get("first_seen") is not None and earlier["first_seen"] <= when:
            return {**document, **{name: earlier.get(name) for name in VALUES},
                    "first_seen": earlier["first_seen"], "revisions": revisions[:at]}
    return None


def _day(document: Mapping[str, Any]) -> CaseDay:
    return CaseDay(document["date"], document["source"], document["country"],
                   document.get("code"), document.get("who_region"),
                   *(document.get(name) for name in FIGURES),
                   revisions=len(document.get("revisions") or ()),
                   first_seen=document.get("first_seen"))


def country_days(series: CaseSeries, country: str, since: datetime | None = None,
                 until: datetime | None = None, known_at: datetime | None = None
                 ) -> Iterator[CaseDay]:
    """The rows of ``country`` (a stored name), by date: each source's in turn."""
    for document in series.rows(since=since, until=until, country=country):
        known = as_known_at(document, known_at)
        if known is not None:
            yield _day(known)


def world_days(series: CaseSeries, since: datetime | None = None,
               until: datetime | None = None, known_at: datetime | None = None
               ) -> Iterator[CaseDay]:
    """The world's figures by date: WHO's rows of each date summed (a blank figure
    adds nothing; one that every row of the date leaves blank stays None), then
    worldometers' own world figure. Reads the rows once, in order, holding one date."""
    yield from _summed(series.rows("who", since, until), known_at)
    for document in series.rows("worldometers", since, until, country=WORLD):
        known = as_known_at(document, known_at)
        if known is not None:
            yield _day(known)


def _summed(documents: Iterable[Mapping[str, Any]], known_at: datetime | None
            ) -> Iterator[CaseDay]:
    current: dict[str, Any] | None = None
    for document in documents:
        known = as_known_at(document, known_at)
        if known is None:
            continue
        if current is not None and current["date"] != known["date"]:
            yield CaseDay(**current)
            current = None
        if current is None:
            current = {"date": known["date"], "source": known["source"], "country": WORLD,
                       "code": None, "who_region": None, "rows": 0, "revisions": 0,
                       "first_seen": None, **dict.fromkeys(FIGURES)}
        current["rows"] += 1
        current["revisions"] += len(known.get("revisions") or ())
        seen = known.get("first_seen")
        if seen is not None and (current["first_seen"] is None or seen > current["first_seen"]):
            current["first_seen"] = seen
        for name in FIGURES:
            value = known.get(name)
            if value is not None:
                current[name] = value if current[name] is None else current[name] + value
    if current is not None:
        yield CaseDay(**current)


def resolve_country(series: CaseSeries, text: str) -> tuple[str, str | None]:
    """The stored country ``text`` names, and its code: ``World`` (any case) is the
    world; a code (``DE``, Namibia's ``NA``; any case) or a name (any case) is looked
    up among the stored rows. Raises UnknownCountryError."""
    wanted = text.strip()
    if wanted.casefold() == WORLD.casefold():
        return WORLD, None
    by_name = None
    for name, code in series.countries():
        if code is not None and code.casefold() == wanted.casefold():
            return name, code
        if name.casefold() == wanted.casefold():
            by_name = (name, code)
    if by_name is None:
        raise UnknownCountryError(f"no stored rows of a country named or coded {wanted!r} in "
                                  f"{series.description} (python report.py cases lists "
                                  "the world; --country takes a code such as DE or a name)")
    return by_name


# ------------------------------------------------------------------------ the table


def format_cases(days: Iterable[CaseDay], *, world: bool) -> str:
    """The series as a fixed-width table, a line per date: the four figures (``-`` for
    blank), then for the world how many countries each date sums, for a country how
    many earlier versions of the row WHO revised (blank when none)."""
    last = "countries" if world else "revised"
    rows = [("date", "source", "new cases", "cumulative cases", "new deaths",
             "cumulative deaths", last)]
    for day in days:
        extra = (f"{day.rows:,}" if world and day.source != "worldometers" else
                 "" if world else f"{day.revisions:,}" if day.revisions else "")
        rows.append((day.date.strftime("%Y-%m-%d"), SOURCE_NAMES.get(day.source, day.source),
                     *("-" if getattr(day, name) is None else format_count(getattr(day, name))
                       for name in FIGURES), extra))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [f"{row[0]:<{widths[0]}}", f"{row[1]:<{widths[1]}}",
                 *(f"{cell:>{width}}" for cell, width in zip(row[2:], widths[2:], strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def heading(country: str, code: str | None, days: list[CaseDay], *, world: bool) -> str:
    """The line above the table: what it shows and from which source."""
    if not days:
        return f"{country}: no rows stored"
    sources = ", ".join(dict.fromkeys(SOURCE_NAMES.get(d.source, d.source) for d in days))
    span = f"{min(d.date for d in days):%Y-%m-%d} to {max(d.date for d in days):%Y-%m-%d}"
    dates = f"{len(days):,} date" + ("" if len(days) == 1 else "s")
    if world:
        what = "the world: WHO's rows summed per date" if any(
            d.source == "who" for d in days) else "the world"
        return f"Covid-19 cases of {what} ({sources}), {span}, {dates}"
    named = f"{country} ({code})" if code else country
    return f"Covid-19 cases of {named} ({sources}), {span}, {dates}"


# -------------------------------------------------------------------- the DataFrame


#: rows converted to Arrow's compact form at a time, when a frame is built
FRAME_ROWS = 65_536


def cases_frame(days: Iterable[CaseDay]) -> pandas.DataFrame:
    """``days`` as a DataFrame with CASE_COLUMNS: dates as UTC timestamps (ms), the
    figures and counts as Int64 (<NA> where blank), texts as strings (Namibia's code
    ``NA`` stays a text; a blank code is <NA>). Held as Python values FRAME_ROWS rows
    at a time, then in Arrow's form, so a whole series (~545,000 rows) fits."""
    import pandas as pd  # the analysis extra: only when a frame is asked for
    import pyarrow as pa

    stamp = pa.timestamp("ms", tz="UTC")
    types = {"date": stamp, "first_seen": stamp,
             **dict.fromkeys(("source", "country", "code", "who_region"), pa.string()),
             **dict.fromkeys((*FIGURES, "rows", "revisions"), pa.int64())}
    schema = pa.schema([(name, types[name]) for name in CASE_COLUMNS])
    batches: list[pa.RecordBatch] = []
    remaining = iter(days)
    while chunk := list(islice(remaining, FRAME_ROWS)):
        batches.append(pa.record_batch(
            [pa.array([getattr(day, name) for day in chunk], type=types[name])
             for name in CASE_COLUMNS], schema=schema))
    table = pa.Table.from_batches(batches, schema=schema)
    mapping = {pa.int64(): pd.Int64Dtype(), pa.string(): pd.StringDtype("pyarrow")}
    return table.to_pandas(types_mapper=mapping.get)


def all_days(series: CaseSeries, since: datetime | None = None,
             until: datetime | None = None, known_at: datetime | None = None
             ) -> Iterator[CaseDay]:
    """Every stored row (each country, each source), by source, date and country."""
    for document in series.rows(since=since, until=until):
        known = as_known_at(document, known_at)
        if known is not None:
            yield _day(known)


# ----------------------------------------------------------- every stored version


#: the columns of a release's ``cases.parquet``: a row per stored version of a row
VERSION_COLUMNS = ("source", "date", "country", "code", "who_region", *FIGURES, "version",
                   "current", "first_seen", "last_seen")


def case_versions(document: Mapping[str, Any], latest_load: datetime | None
                  ) -> Iterator[dict[str, Any]]:
    """Every version of a stored row, oldest first, with VERSION_COLUMNS: its earlier
    values (``revisions``: ``version`` 1, 2, ..., ``current`` False, each with when it
    was first and last seen), then its current values (``current`` True, first seen
    at ``first_seen``; last seen at ``latest_load``, the latest file its source
    gave, since an unchanged row is not written again)."""
    key = {"source": document["source"], "date": document["date"],
           "country": document["country"]}
    earlier = list(document.get("revisions") or ())
    for number, old in enumerate(earlier, start=1):
        yield {**key, **{name: old.get(name) for name in VALUES}, "version": number,
               "current": False, "first_seen": old.get("first_seen"),
               "last_seen": old.get("last_seen")}
    yield {**key, **{name: document.get(name) for name in VALUES},
           "version": len(earlier) + 1, "current": True,
           "first_seen": document.get("first_seen"), "last_seen": latest_load}


# ------------------------------------------------------------------ for the figure


@dataclass(frozen=True)
class WeeklyCases:
    """The world's new cases per week (WHO's New_cases summed, Monday to Sunday, UTC):
    ``weeks`` their Mondays, ``new_cases`` None for a week all blank; ``latest`` the
    latest date WHO's rows have."""

    weeks: list[datetime]
    new_cases: list[int | None]
    latest: datetime


def weekly_new_cases(series: CaseSeries, end: datetime, weeks: int = WEEKS_SHOWN
                     ) -> WeeklyCases | None:
    """The ``weeks`` weeks of world new cases up to the week of ``end`` (or up to
    WHO's latest date, when its rows stop before ``end``); None without WHO rows."""
    latest = series.latest_date("who")
    if latest is None:
        return None
    last_week = _monday(min(end, latest))
    first_week = last_week - timedelta(weeks=weeks - 1)
    sums: dict[datetime, int | None] = {first_week + timedelta(weeks=i): None
                                        for i in range(weeks)}
    for day in world_days(series, first_week, last_week + timedelta(weeks=1)):
        if day.source != "who" or day.new_cases is None:
            continue
        week = _monday(day.date)
        sums[week] = day.new_cases + (sums[week] or 0)
    return WeeklyCases(list(sums), list(sums.values()), latest)


def _monday(moment: datetime) -> datetime:
    day = moment.astimezone(UTC).date()
    monday = day - timedelta(days=day.weekday())
    return datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
