"""What a release's card says, counted while the release's files are written: the
posts per day, languages and sources, the case figures beside them, deletions, the
longest stretches without a batch (:class:`Tally`), what cases.parquet holds
(:class:`CaseFacts`), and all of it with the window, version and files
(:class:`Facts`). Counts only, never posts, so memory stays flat."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from analysis.batches import Batch, as_utc
from analysis.coverage import Coverage, KeywordSet
from analysis.posts import language_mix

#: the files of a release (posts.parquet, or posts/<day>.parquet, and SHA256SUMS beside)
CARD, IDS, CASES = "DATASET.md", "ids.txt", "cases.parquet"
COVERAGE, KEYWORDS = "coverage.json", "keywords.csv"
#: stretches without a stored batch longer than this are counted, the longest listed
QUIET = timedelta(minutes=10)
QUIET_SHOWN = 10


@dataclass
class Figure:
    """The case figures beside the window's batches, of one source."""

    batches: int = 0
    first_as_of: datetime | None = None
    last_as_of: datetime | None = None
    youngest: timedelta | None = None  # batch time - as-of, smallest
    oldest: timedelta | None = None
    latest_count: int | None = None
    latest_as_of: datetime | None = None

    def add(self, batch: Batch) -> None:
        self.batches += 1
        self.latest_count, as_of = batch.total_case_count, batch.case_count_as_of
        self.latest_as_of = as_of
        if as_of is None:
            return
        age = batch.timestamp - as_of
        self.first_as_of = min(self.first_as_of or as_of, as_of)
        self.last_as_of = max(self.last_as_of or as_of, as_of)
        self.youngest = age if self.youngest is None else min(self.youngest, age)
        self.oldest = age if self.oldest is None else max(self.oldest, age)


@dataclass
class Day:
    batches: int = 0
    posts: int = 0
    deleted: int = 0


class Tally:
    """What the card says of the window's posts, counted as they pass on their way to
    the files: per UTC day, languages, post sources, case figures, deletions and the
    longest stretches without a batch. Holds counts, never posts."""

    def __init__(self) -> None:
        self.batches = self.posts = self.deleted = 0
        self.days: dict[date, Day] = {}
        self.languages: Counter[str] = Counter()
        self.languages_stored = False
        self.sources: Counter[str] = Counter()  # posts per post source
        self.figures: dict[str, Figure] = {}
        self.without_figure = 0
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.quiet: list[tuple[timedelta, datetime, datetime]] = []  # a heap, QUIET_SHOWN
        self.quiet_count = 0
        self.quiet_total = timedelta()
        self._filter_source: str | None = None

    def observe_documents(self, documents: Iterable[Mapping[str, Any]]
                  ) -> Iterator[Mapping[str, Any]]:
        """The stored documents as they come: their ``deleted`` counts (posts removed
        since their authors deleted them) and the post source their ``filter`` names."""
        for document in documents:
            removed, stamp = document.get("deleted"), document.get("timestamp")
            if type(removed) is int and removed > 0 and isinstance(stamp, datetime):
                self.deleted += removed
                self._day(as_utc(stamp).date()).deleted += removed
            chosen = document.get("filter")
            source = chosen.get("source") if isinstance(chosen, Mapping) else None
            self._filter_source = source if isinstance(source, str) else None
            yield document

    def observe_batches(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """The batches as they come, counted."""
        for batch in batches:
            self._count(batch)
            yield batch

    def _day(self, day: date) -> Day:
        found = self.days.get(day)
        if found is None:
            found = self.days[day] = Day()
        return found

    def _count(self, batch: Batch) -> None:
        stamp = batch.timestamp
        if self.last is not None and stamp - self.last > QUIET:
            self.quiet_count += 1
            self.quiet_total += stamp - self.last
            heapq.heappush(self.quiet, (stamp - self.last, self.last, stamp))
            if len(self.quiet) > QUIET_SHOWN:
                heapq.heappop(self.quiet)
        self.first = self.first or stamp
        self.last = stamp
        self.batches += 1
        self.posts += batch.tweets
        day = self._day(stamp.date())
        day.batches += 1
        day.posts += batch.tweets
        mix = language_mix([batch])
        if mix is not None:
            self.languages_stored = True
            self.languages.update(mix)
        self.sources[self._source_of(batch)] += batch.tweets
        if batch.total_case_count is None:
            self.without_figure += 1
        else:
            source = batch.case_count_source or "unknown"
            self.figures.setdefault(source, Figure()).add(batch)

    def _source_of(self, batch: Batch) -> str:
        """The batch's post source: its document's ``filter``, else its first post's id
        (``at://``: Bluesky; digits: X), else unknown."""
        if self._filter_source:
            return self._filter_source
        first = batch.posts[0].get("id") if batch.posts else None
        if isinstance(first, str):
            if first.startswith("at://"):
                return "bluesky"
            if first.split("~", 1)[0].isdigit():
                return "twitter"
        return "unknown"

    def earliest_as_of(self) -> dict[str, datetime]:
        """Per case source, the earliest date a figure beside the window's posts is for."""
        return {source: figure.first_as_of for source, figure in self.figures.items()
                if figure.first_as_of is not None}


@dataclass
class CaseFacts:
    """What cases.parquet holds: from which date (per source) to ``until``, its rows
    and their versions, and each source's latest file read (seen, as of)."""

    starts: dict[str, datetime]
    until: datetime
    rows: int = 0
    versions: int = 0
    revised: int = 0
    countries: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None
    loads: dict[str, tuple[datetime | None, datetime | None]] = field(default_factory=dict)
    by_source: Counter[str] = field(default_factory=Counter)

    def add(self, document: Mapping[str, Any]) -> None:
        revisions = len(document.get("revisions") or ())
        self.rows += 1
        self.versions += 1 + revisions
        self.revised += bool(revisions)
        self.countries.add(document["country"])
        self.by_source[document["source"]] += 1
        day = document["date"]
        self.first = min(self.first or day, day)
        self.last = max(self.last or day, day)


@dataclass
class Facts:
    """Everything the card says, filled in as the release is written."""

    since: datetime
    until: datetime
    version: str
    generated_at: datetime
    tally: Tally = field(default_factory=Tally)
    columns: tuple[str, ...] = ()
    posts_files: tuple[str, ...] = ()
    one_file_posts: int = 0  # more posts than this: a file per day
    ids: int = 0
    without_id: int = 0
    cases: CaseFacts | None = None
    coverage: Coverage | None = None
    keywords: list[KeywordSet] = field(default_factory=list)
    cleaning: str | None = None
    field_warning: str | None = None
    skipped: str | None = None

    def ids_warning(self) -> str | None:
        """The one line said when the posts' ids are not stored."""
        if "id" in self.columns:
            return None
        return (f"no {IDS}: the posts were stored without ids (POST_FIELDS without id), "
                "and posts stored without ids cannot be rehydrated")
