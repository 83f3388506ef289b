"""The stored documents as Batch values: reading a window of them from the store
(documents a report cannot use are skipped and counted), their times and counts
as text, and the bins of time the volume is counted in."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
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
#: The bins of time the volume panel counts posts in, finest first: the finest that
#: gives at most MAX_BINS bins (and is not shorter than the usual batch) is used.
BIN_UNITS = (("minute", timedelta(minutes=1)), ("hour", timedelta(hours=1)),
             ("day", timedelta(days=1)))
#: How the case count sources are named in the figure and the page.
SOURCE_NAMES = {"worldometers": "worldometers", "who": "WHO"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EmptyWindowError(LookupError):
    """No batch is stored in the requested window; ``str(err)`` is one line."""


class UnusableDocumentError(ValueError):
    """A stored document lacks a field a report needs or has it with another type;
    ``str(err)`` says which, e.g. ``no timestamp``."""


class SkippedDocuments:
    """Documents a report left out (:class:`UnusableDocumentError`), counted by reason."""

    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()

    @property
    def count(self) -> int:
        return self.reasons.total()

    def message(self) -> str | None:
        """One line for the end of a report, or ``None`` when nothing was skipped:
        ``skipped 3 documents with missing or wrongly typed fields (no timestamp: 2,
        content not a list of texts: 1)``, the commonest reason first."""
        if not self.count:
            return None
        noun = "document" if self.count == 1 else "documents"
        ranked = sorted(self.reasons.items(), key=lambda item: (-item[1], item[0]))
        why = ", ".join(f"{reason}: {n:,}" for reason, n in ranked)
        return f"skipped {self.count:,} {noun} with missing or wrongly typed fields ({why})"


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
    #: the stored post fields of each text (POST_FIELDS), dates in UTC; None without
    posts: tuple[dict[str, Any], ...] | None = None

    @property
    def tweets(self) -> int:
        return len(self.content)


@dataclass(frozen=True)
class Summary:
    """What the report's table says about a window. The latest count's as-of time and
    source are ``None`` when unknown; ``count_sources`` are the sources of the window's
    counts, in order of first appearance; ``unrecorded_sources``: some counts have no
    recorded source (older documents)."""

    batches: int
    tweets: int
    first: datetime
    last: datetime
    latest_count: int | None
    latest_count_as_of: datetime | None = None
    latest_count_source: str | None = None
    count_sources: tuple[str, ...] = ()
    unrecorded_sources: bool = False


@dataclass(frozen=True)
class Binning:
    """How the volume panel groups posts: per minute, hour or day (UTC, from midnight),
    or per batch (``width``: the usual batch; :class:`analysis.digest.VolumeBins`)."""

    unit: str  # "batch", "minute", "hour" or "day"
    width: timedelta

    @property
    def title(self) -> str:
        """The panel's title, e.g. ``Posts per hour`` or ``Posts per batch (5 s)``."""
        if self.unit == "batch":
            return f"Posts per batch ({self.width.total_seconds():g} s)"
        return f"Posts per {self.unit}"

    def index(self, moment: datetime) -> int:
        """The number of ``moment``'s bin, counted from 1970-01-01 (UTC)."""
        return (as_utc(moment) - _EPOCH) // self.width

    def origin(self, first: datetime) -> datetime:
        """The start of ``first``'s minute, hour or day (UTC): where the first bin starts."""
        return _EPOCH + self.width * self.index(first)

    def edges(self, first: datetime, last: datetime) -> list[datetime]:
        """The bin edges covering ``first`` .. ``last``: one more than the bins."""
        origin = self.origin(first)
        bins = self.index(last) - self.index(first) + 1
        return [origin + self.width * i for i in range(bins + 1)]


#: The binnings of BIN_UNITS, finest first.
BINNINGS = tuple(Binning(unit, width) for unit, width in BIN_UNITS)


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
    ``case_count_as_of`` or ``case_count_source``: both are then ``None``. Raises
    UnusableDocumentError for a document without a date ``timestamp`` or a list of
    texts ``content``, or with a count, as-of time or source of another type, or
    ``posts`` that are not one object per text."""
    timestamp = document.get("timestamp")
    if not isinstance(timestamp, datetime):
        raise UnusableDocumentError("no timestamp" if timestamp is None
                                    else "timestamp not a date")
    content = document.get("content")
    if not isinstance(content, list | tuple) or not all(isinstance(t, str) for t in content):
        raise UnusableDocumentError("no content" if content is None
                                    else "content not a list of texts")
    count = document.get("total_case_count")
    if isinstance(count, float) and count.is_integer():
        count = int(count)
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise UnusableDocumentError("total_case_count not a whole number")
    as_of = document.get("case_count_as_of")
    if as_of is not None and not isinstance(as_of, datetime):
        raise UnusableDocumentError("case_count_as_of not a date")
    source = document.get("case_count_source")
    if source is not None and not isinstance(source, str):
        raise UnusableDocumentError("case_count_source not a text")
    posts = document.get("posts")
    if posts is not None:
        if (not isinstance(posts, list | tuple) or len(posts) != len(content)
                or not all(isinstance(post, dict) for post in posts)):
            raise UnusableDocumentError("posts not aligned with content")
        posts = tuple({k: as_utc(v) if isinstance(v, datetime) else v for k, v in post.items()}
                      for post in posts)
    return Batch(
        batch_id=str(document.get("_id", "")),
        timestamp=as_utc(timestamp),
        content=tuple(content),
        total_case_count=count,
        case_count_as_of=None if as_of is None else as_utc(as_of),
        case_count_source=source,
        posts=posts,
    )


def usable_batches(documents: Iterable[Mapping[str, Any]], skipped: SkippedDocuments
                   ) -> Iterator[Batch]:
    """The batches of ``documents`` (:func:`to_batch`), in order; a document that is
    unusable is counted in ``skipped`` and left out."""
    for document in documents:
        try:
            yield to_batch(document)
        except UnusableDocumentError as err:
            skipped.reasons[str(err)] += 1


def format_table(documents: Sequence[Mapping[str, Any]], width: int = 60,
                 skipped: SkippedDocuments | None = None) -> str:
    """The documents as a fixed-width table: time, posts, count, the moment the
    count is for, first post. Unusable documents are left out (and counted in
    ``skipped``)."""
    rows = [("batch time (UTC)", "posts", "total cases", "as of", "first post")]
    for batch in usable_batches(documents, skipped or SkippedDocuments()):
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


def choose_binning(first: datetime, last: datetime, at_least: timedelta | None = None,
                   max_bins: int = MAX_BINS) -> Binning:
    """The finest binning of ``first`` .. ``last`` (BINNINGS) with at most ``max_bins``
    bins and no shorter than ``at_least`` (the usual batch: a bin shorter than a
    batch would draw every other bin as 0); per day when even that is more."""
    for binning in BINNINGS:
        if at_least is not None and binning.width < at_least:
            continue
        if binning.index(last) - binning.index(first) + 1 <= max_bins:
            return binning
    return BINNINGS[-1]


def usual_gap(gaps: Mapping[int, int]) -> timedelta | None:
    """The usual time between two batches from ``{seconds: how often}``: the most
    frequent gap (the shorter one among equals), ``None`` without gaps. A quiet
    batch leaves no document, so a gap can be several batches; batches of two
    lengths in one window (a 5 s demo, then a 20 s run) give two frequent gaps."""
    if not gaps:
        return None
    seconds = max(gaps.items(), key=lambda item: (item[1], -item[0]))[0]
    return timedelta(seconds=seconds)


def find_latest(store: storage.BatchStore, last: int, since: datetime | None = None,
                until: datetime | None = None) -> list[dict[str, Any]]:
    """The ``last`` most recent documents with ``since <= timestamp < until``,
    oldest first."""
    newest = (store.collection.find(storage.window_filter(since, until))
              .sort("timestamp", pymongo.DESCENDING).limit(last))
    return list(reversed(list(newest)))


def find_window(store: storage.BatchStore, since: datetime | None = None,
                until: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The documents with ``since <= timestamp < until``, oldest first, one at a time
    (:meth:`storage.BatchStore.window`)."""
    return store.window(since, until)


def empty_window_text(store: storage.BatchStore, since: datetime | None,
                      until: datetime | None) -> str:
    """The line for a window without a batch: ``no batches from ... to ... in ...``."""
    if since is None and until is None:
        return f"no batches stored yet in {store.description}"
    start = iso_z(since) if since else "the start"
    end = iso_z(until) if until else "now"
    return f"no batches from {start} to {end} in {store.description}"


def read_window(store: storage.BatchStore, since: datetime | None = None,
                until: datetime | None = None, skipped: SkippedDocuments | None = None,
                documents: Iterable[Mapping[str, Any]] | None = None) -> Iterator[Batch]:
    """The batches with ``since <= timestamp < until``, oldest first (:func:`find_window`,
    :func:`usable_batches`: an unusable document is counted in ``skipped`` and left
    out), read as they are iterated. Raises EmptyWindowError at once, before the
    caller writes anything, when the window has no usable batch (all of them
    unusable: the first line of the window's skipped documents with it).
    ``documents``: the window's documents as :func:`find_window` gives them, passed
    through something that looks at them on the way (default: find_window's own)."""
    skipped = SkippedDocuments() if skipped is None else skipped
    if documents is None:
        documents = find_window(store, since, until)
    batches = usable_batches(documents, skipped)
    first = next(batches, None)
    if first is None:
        text = empty_window_text(store, since, until)
        if skipped.count:
            text = text.replace("no batches", "no usable batches", 1) + f"; {skipped.message()}"
        raise EmptyWindowError(text)
    return chain([first], batches)
