"""The stored documents as Batch values: reading a window of them from the store,
summing them up, their times and counts as text, and binning them over time."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, pairwise
from typing import Any

import pymongo
from bson import json_util

import storage

EXTENDED_JSON = json_util.JSONOptions(
    json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=UTC
)
#: At most this many bins in the volume panel (about 600 pixels wide): 2 or
#: more pixels a bin, so the line never turns into a solid block.
MAX_BINS = 360
#: Coarser bins the volume panel may use when one per batch is too many.
BIN_UNITS = (("minute", timedelta(minutes=1)), ("hour", timedelta(hours=1)),
             ("day", timedelta(days=1)))
#: How the case count sources are named in the figure and the page.
SOURCE_NAMES = {"worldometers": "worldometers", "who": "WHO"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EmptyWindowError(LookupError):
    """No batch is stored in the requested window; ``str(err)`` is one line."""


@dataclass(frozen=True)
class Batch:
    """One stored document, normalised: an aware UTC time, the tweets, the count and
    what the count is (the moment it is for, where it came from; ``None`` if unknown)."""

    batch_id: str
    timestamp: datetime
    content: tuple[str, ...]
    total_case_count: int | None
    case_count_as_of: datetime | None = None
    case_count_source: str | None = None

    @property
    def tweets(self) -> int:
        return len(self.content)


@dataclass(frozen=True)
class Summary:
    """What the report's table says about a window. The latest count's as-of time and
    source are ``None`` when unknown; ``count_sources`` are the sources of the window's
    counts, in order of first appearance."""

    batches: int
    tweets: int
    first: datetime
    last: datetime
    latest_count: int | None
    latest_count_as_of: datetime | None = None
    latest_count_source: str | None = None
    count_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Binning:
    """How the volume panel groups batches: one bin per batch, minute, hour or day."""

    unit: str  # "batch", "minute", "hour" or "day"
    width: timedelta

    @property
    def title(self) -> str:
        """The panel's title, e.g. ``Tweets per hour`` or ``Tweets per batch (20 s)``."""
        if self.unit == "batch":
            return f"Tweets per batch ({self.width.total_seconds():g} s)"
        return f"Tweets per {self.unit}"

    def origin(self, first: datetime) -> datetime:
        """The start of the first bin: ``first`` centred in its bin for batches, else the
        start of ``first``'s minute, hour or day (UTC)."""
        if self.unit == "batch":
            return first - self.width / 2
        return _EPOCH + self.width * ((as_utc(first) - _EPOCH) // self.width)

    def edges(self, first: datetime, last: datetime) -> list[datetime]:
        """The bin edges covering ``first`` .. ``last``: one more than the bins."""
        origin = self.origin(first)
        bins = (as_utc(last) - origin) // self.width + 1
        return [origin + self.width * i for i in range(bins + 1)]


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive one is taken as UTC.

    pymongo with ``tz_aware`` gives aware datetimes; MontyDB gives naive UTC ones.
    """
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso_z(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``: ``2026-11-28T23:07:50.000Z``."""
    utc = as_utc(moment)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """An aware UTC datetime from ISO 8601 text (``2026-11-28``, ``2026-11-28T23:05Z``,
    ``2026-11-28 23:05:00+01:00``); no offset means UTC. Raises ValueError."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date or time") from None
    return as_utc(moment)


def format_count(value: float) -> str:
    """A count with thousands separators, never in scientific notation:
    ``1891850`` -> ``1,891,850``; a fraction keeps up to two decimals."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{round(float(value), 2):,}"


def format_as_of(moment: datetime | None) -> str:
    """The moment a count is for, as short as it can be: ``2024-04-13`` at midnight
    UTC (WHO's daily file), else ``2026-11-28 09:00 UTC``; ``-`` when unknown."""
    if moment is None:
        return "-"
    utc = as_utc(moment)
    if (utc.hour, utc.minute, utc.second, utc.microsecond) == (0, 0, 0, 0):
        return utc.strftime("%Y-%m-%d")
    return utc.strftime("%Y-%m-%d %H:%M UTC")


def source_name(source: str | None) -> str:
    """How a case count source is shown: ``WHO``, ``worldometers``; ``-`` when unknown."""
    if source is None:
        return "-"
    return SOURCE_NAMES.get(source, source)


def to_batch(document: Mapping[str, Any]) -> Batch:
    """The :class:`Batch` of one stored document. Older documents have no
    ``case_count_as_of`` or ``case_count_source``: both are then ``None``."""
    count = document.get("total_case_count")
    as_of = document.get("case_count_as_of")
    source = document.get("case_count_source")
    return Batch(
        batch_id=str(document["_id"]),
        timestamp=as_utc(document["timestamp"]),
        content=tuple(document.get("content") or ()),
        total_case_count=None if count is None else int(count),
        case_count_as_of=as_utc(as_of) if isinstance(as_of, datetime) else None,
        case_count_source=source if isinstance(source, str) else None,
    )


def format_table(documents: Sequence[Mapping[str, Any]], width: int = 60) -> str:
    """The documents as a fixed-width table: time, tweets, count, the moment the
    count is for, first tweet."""
    rows = [("batch time (UTC)", "tweets", "total cases", "as of", "first tweet")]
    for batch in map(to_batch, documents):
        first = batch.content[0] if batch.content else ""
        if len(first) > width:
            first = first[: width - 1] + "…"
        count = batch.total_case_count
        rows.append((batch.timestamp.strftime("%Y-%m-%d %H:%M:%S"), str(batch.tweets),
                     "-" if count is None else f"{count:,}",
                     format_as_of(batch.case_count_as_of), first))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
        f"{row[3]:<{widths[3]}}  {row[4]}"
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def format_json(documents: Sequence[Mapping[str, Any]]) -> str:
    """The documents as MongoDB Extended JSON (dates as ``{"$date": ...}``), one per line."""
    return "\n".join(json_util.dumps(doc, json_options=EXTENDED_JSON, ensure_ascii=False)
                     for doc in documents)


def summarize(batches: Sequence[Batch]) -> Summary:
    """Batches, tweets, first and last batch time, the latest non-null count with its
    as-of time and source, and the sources of the window's counts."""
    if not batches:
        raise ValueError("no batches to summarise")
    counted = [b for b in batches if b.total_case_count is not None]
    latest = counted[-1] if counted else None
    return Summary(
        batches=len(batches),
        tweets=sum(b.tweets for b in batches),
        first=min(b.timestamp for b in batches),
        last=max(b.timestamp for b in batches),
        latest_count=latest.total_case_count if latest else None,
        latest_count_as_of=latest.case_count_as_of if latest else None,
        latest_count_source=latest.case_count_source if latest else None,
        count_sources=tuple(dict.fromkeys(b.case_count_source for b in counted
                                          if b.case_count_source is not None)),
    )


def batch_interval(times: Sequence[datetime]) -> timedelta | None:
    """The batch interval the batch times show: the greatest common divisor of the
    gaps between them, in milliseconds (Spark's batch times are multiples of the
    interval, and an empty batch leaves no document, so gaps can be several
    intervals). ``None`` for fewer than two distinct times or a divisor under 1 s."""
    stamps = sorted({round((as_utc(t) - _EPOCH).total_seconds() * 1000) for t in times})
    step = 0
    for a, b in pairwise(stamps):
        step = math.gcd(step, b - a)
    return timedelta(milliseconds=step) if step >= 1000 else None


def choose_binning(first: datetime, last: datetime, interval: timedelta | None,
                   max_bins: int = MAX_BINS) -> Binning:
    """The finest binning of ``first`` .. ``last`` with at most ``max_bins`` bins:
    per batch (``interval``, when known), else per minute, hour or day (never finer
    than the batch interval); per day when even that is more."""
    choices = [Binning("batch", interval)] if interval is not None else []
    choices += [Binning(unit, width) for unit, width in BIN_UNITS
                if interval is None or width > interval]
    for binning in choices:
        if len(binning.edges(first, last)) - 1 <= max_bins:
            return binning
    return choices[-1]


def bin_tweets(batches: Sequence[Batch], binning: Binning) -> tuple[list[datetime], list[int]]:
    """``(edges, tweets)``: the tweets of the batches summed per bin, from the first
    batch's bin to the last's; a bin without a batch is 0 (nothing was stored then)."""
    first = min(b.timestamp for b in batches)
    last = max(b.timestamp for b in batches)
    edges = binning.edges(first, last)
    counts = [0] * (len(edges) - 1)
    origin = edges[0]
    for batch in batches:
        counts[(batch.timestamp - origin) // binning.width] += batch.tweets
    return edges, counts


def find_window(store: storage.BatchStore, since: datetime | None = None,
                until: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The documents with ``since <= timestamp < until``, oldest first, filtered and
    sorted by the server (the ``timestamp`` index)."""
    bounds: dict[str, datetime] = {}
    # naive UTC bounds: pymongo encodes naive datetimes as UTC, MontyDB stores naive
    # UTC and cannot compare them with aware ones, mongomock accepts both
    if since is not None:
        bounds["$gte"] = as_utc(since).replace(tzinfo=None)
    if until is not None:
        bounds["$lt"] = as_utc(until).replace(tzinfo=None)
    query = {"timestamp": bounds} if bounds else {}
    return iter(store.collection.find(query).sort("timestamp", pymongo.ASCENDING))


def _empty(store: storage.BatchStore, since: datetime | None, until: datetime | None) -> str:
    if since is None and until is None:
        return f"no batches stored yet in {store.description}"
    start = iso_z(since) if since else "the start"
    end = iso_z(until) if until else "now"
    return f"no batches from {start} to {end} in {store.description}"


def read_window(store: storage.BatchStore, since: datetime | None = None,
                until: datetime | None = None) -> Iterator[Batch]:
    """The batches with ``since <= timestamp < until``, oldest first (:func:`find_window`,
    :func:`to_batch`), read as they are iterated. Raises EmptyWindowError at once, before
    the caller writes anything, when the window has no batch."""
    documents = find_window(store, since, until)
    first = next(documents, None)
    if first is None:
        raise EmptyWindowError(_empty(store, since, until))
    return map(to_batch, chain([first], documents))
