"""What the figure and the page need of a window, gathered as its batches stream by,
without keeping the batches or their texts: memory in bins, not in posts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

from analysis.batches import (
    BINNINGS,
    MAX_BINS,
    Batch,
    Binning,
    Summary,
    as_utc,
    choose_binning,
    usual_gap,
)

#: Up to this many counts, the count panel draws every one (with a marker);
#: beyond, only the points where the count changes, and the last one.
ALL_COUNT_POINTS = 60
#: Gaps between batches this long or longer are pauses, not batch lengths.
LONGEST_GAP = timedelta(days=1)
#: While the batches span at most this, the volume is drawn per batch: three 5 s
#: batches are three bars, not one bin of a whole minute.
PER_BATCH_SPAN = timedelta(minutes=5)


class VolumeBins:
    """Posts per batch, minute, hour or day, added batch by batch in time order.

    While the batches span at most PER_BATCH_SPAN (and number at most
    ``max_bins``), each batch is its own bin, as long as the usual batch (the
    bins of batches far apart are 0 between them: nothing was stored then).
    Meanwhile, and after, it counts per minute while the batches span at most
    ``max_bins`` minutes, then per hour (the minutes added up: bins are aligned
    on UTC midnight, so they nest), then per day: at most ``max_bins`` bins are
    kept, except per day. It also counts the gaps between batches, so that a bin
    is never shorter than the usual batch (:func:`analysis.batches.usual_gap`)."""

    def __init__(self, max_bins: int = MAX_BINS) -> None:
        self.max_bins = max_bins
        self.binning = BINNINGS[0]
        self._posts: Counter[int] = Counter()  # bin number -> posts
        #: batch time -> posts, while the window is drawn per batch (else None)
        self._per_batch: dict[datetime, int] | None = {}
        self._gaps: Counter[int] = Counter()  # whole seconds between batches -> how often
        self.first: datetime | None = None
        self.last: datetime | None = None
        self._previous: datetime | None = None

    @property
    def held(self) -> int:
        """How many bins are held now."""
        return len(self._posts)

    def add(self, moment: datetime, posts: int) -> None:
        """Count ``posts`` at ``moment`` (batches in time order)."""
        moment = as_utc(moment)
        if self._previous is not None and moment > self._previous:
            gap = moment - self._previous
            if gap < LONGEST_GAP:
                self._gaps[round(gap.total_seconds())] += 1
        self._previous = moment
        self.first = moment if self.first is None else min(self.first, moment)
        self.last = moment if self.last is None else max(self.last, moment)
        self._posts[self.binning.index(moment)] += posts
        self._coarsen(choose_binning(self.first, self.last, None, self.max_bins))
        if self._per_batch is not None:
            if (self.last - self.first > PER_BATCH_SPAN
                    or (len(self._per_batch) >= self.max_bins and moment not in self._per_batch)):
                self._per_batch = None
            else:  # the parts of one batch (same time) are one bin
                self._per_batch[moment] = self._per_batch.get(moment, 0) + posts

    def result(self) -> tuple[Binning, list[datetime], list[int]]:
        """``(binning, edges, posts)``: the posts per bin from the first batch's bin to
        the last's, a bin without a batch 0 (nothing was stored then). Raises
        ValueError when nothing was added."""
        if self.first is None or self.last is None:
            raise ValueError("no batches to bin")
        gap = usual_gap(self._gaps)
        if self._per_batch and gap is not None:
            return self._batch_bins(gap)
        self._coarsen(choose_binning(self.first, self.last, usual_gap(self._gaps),
                                     self.max_bins))
        edges = self.binning.edges(self.first, self.last)
        start = self.binning.index(self.first)
        return self.binning, edges, [self._posts[start + i] for i in range(len(edges) - 1)]

    def _batch_bins(self, gap: timedelta) -> tuple[Binning, list[datetime], list[int]]:
        """One bin per batch, ending at its time and ``gap`` long (or back to the
        previous batch, if that is nearer); a 0 bin where batches are further apart."""
        assert self._per_batch is not None
        edges: list[datetime] = []
        posts: list[int] = []
        for moment, count in sorted(self._per_batch.items()):
            start = moment - gap
            if not edges:
                edges.append(start)
            elif start > edges[-1]:  # no batch stored in between
                posts.append(0)
                edges.append(start)
            posts.append(count)
            edges.append(moment)
        return Binning("batch", gap), edges, posts

    def _coarsen(self, binning: Binning) -> None:
        if binning.width <= self.binning.width:
            return
        ratio = binning.width // self.binning.width  # the units nest
        coarser: Counter[int] = Counter()
        for number, posts in self._posts.items():
            coarser[number // ratio] += posts
        self._posts, self.binning = coarser, binning


class CountSteps:
    """The total case count over time, added in time order: every point while there
    are at most ALL_COUNT_POINTS, then only where the count changes, and the last."""

    def __init__(self) -> None:
        self.added = 0
        self.low: int | None = None
        self.high: int | None = None
        self._points: list[tuple[datetime, int]] = []
        self._last: tuple[datetime, int] | None = None

    def add(self, moment: datetime, count: int) -> None:
        self.added += 1
        self._last = (moment, count)
        self.low = count if self.low is None else min(self.low, count)
        self.high = count if self.high is None else max(self.high, count)
        if self.added == ALL_COUNT_POINTS + 1:
            self._points = [point for i, point in enumerate(self._points)
                            if i == 0 or point[1] != self._points[i - 1][1]]
        if self.added <= ALL_COUNT_POINTS or count != self._points[-1][1]:
            self._points.append(self._last)

    @property
    def every_point(self) -> bool:
        """Whether :meth:`points` are all the counts (else only their changes)."""
        return self.added <= ALL_COUNT_POINTS

    def points(self) -> list[tuple[datetime, int]]:
        """The points to draw as steps: the same line as every count."""
        if self._last is None or self.every_point or self._points[-1] is self._last:
            return list(self._points)
        return [*self._points, self._last]


class WindowDigest:
    """The summary, the volume bins and the count steps of a window's batches, added
    one by one in time order (:meth:`add`); the batches are not kept."""

    def __init__(self, max_bins: int = MAX_BINS) -> None:
        self.volume = VolumeBins(max_bins)
        self.counts = CountSteps()
        self.batches = 0
        self.posts = 0
        self._latest: Batch | None = None  # the last batch with a count
        self._sources: dict[str, None] = {}
        self._unrecorded = False

    @classmethod
    def of(cls, batches: Iterable[Batch], max_bins: int = MAX_BINS) -> WindowDigest:
        """The digest of ``batches`` (in time order)."""
        digest = cls(max_bins)
        for batch in batches:
            digest.add(batch)
        return digest

    def add(self, batch: Batch) -> None:
        """Take in one batch (after every earlier one)."""
        self.batches += 1
        self.posts += batch.tweets
        self.volume.add(batch.timestamp, batch.tweets)
        if batch.total_case_count is None:
            return
        self.counts.add(batch.timestamp, batch.total_case_count)
        self._latest = batch
        if batch.case_count_source is None:
            self._unrecorded = True
        else:
            self._sources.setdefault(batch.case_count_source, None)

    def summary(self) -> Summary:
        """Batches, posts, first and last batch time, the latest count with its as-of
        time and source, the sources of the window's counts. Raises ValueError when
        no batch was added."""
        if self.volume.first is None or self.volume.last is None:
            raise ValueError("no batches to summarise")
        latest = self._latest
        return Summary(
            batches=self.batches,
            tweets=self.posts,
            first=self.volume.first,
            last=self.volume.last,
            latest_count=latest.total_case_count if latest else None,
            latest_count_as_of=latest.case_count_as_of if latest else None,
            latest_count_source=latest.case_count_source if latest else None,
            count_sources=tuple(self._sources),
            unrecorded_sources=self._unrecorded,
        )


def summarize(batches: Iterable[Batch]) -> Summary:
    """:meth:`WindowDigest.summary` of ``batches``."""
    return WindowDigest.of(batches).summary()
