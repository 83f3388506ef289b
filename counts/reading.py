"""What a case count reading is (CaseCount), how getting one fails, and when one is stale."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

# every module of the package logs as "scrape": the name operators and tests filter on
log = logging.getLogger("scrape")

MAX_COUNT_DIGITS = 18  # a larger "count" is garbage (and would overflow BSON's int64)
MAX_COUNT = 10**MAX_COUNT_DIGITS - 1
#: the case sources, by the names of the CASE_SOURCE setting
SOURCES = ("worldometers", "who")

#: a reading older than this gets a warning: at start, then at most once per STALE_WARN_EVERY
STALE_AFTER = timedelta(days=30)
STALE_WARN_EVERY = timedelta(hours=24)
WORLDOMETERS_STALE_ADVICE = ("worldometers stopped updating its counters; "
                             "use --case-source who for WHO's figures")
WHO_STALE_ADVICE = ("that is the latest Date_reported in WHO's file, and WHO publishes "
                    "in bursts weeks apart")


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
        """A short text for a log line: ``704,753,890 (worldometers, as of 2024-04-13, fetched
        now)``: where the figure is from and when it is for, then whether the source gave
        it at this check (``fetched now``; for WHO, within the hour) or it is the ``last
        good`` one, carried over because the source did not answer. "Fetched now" says
        nothing of the figure's age: that is its as-of date."""
        if self.total is None:
            return "none (no count obtained yet)"
        return f"{self.total:,} ({self.origin()}, {'fetched now' if self.fresh else 'last good'})"

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


def utc_now() -> datetime:
    """The current time, aware, in UTC (the counters' default clock)."""
    return datetime.now(UTC)


def check_source(source: str) -> None:
    """Raise ValueError unless ``source`` is one of SOURCES."""
    if source not in SOURCES:
        raise ValueError(f"unknown case source {source!r}: worldometers or who")


# --------------------------------------------------------------------------
# staleness


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
    check_source(source)
    if source == "who":
        return StalenessWarning("WHO", WHO_STALE_ADVICE)
    return StalenessWarning("worldometers", WORLDOMETERS_STALE_ADVICE)
