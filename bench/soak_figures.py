"""The soak's targets and what it records: the programs' log lines read, the samples and
their drift, the count of posts read back, and the run that holds them all."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.replay_posts import post_index

# --- the targets --------------------------------------------------------------------------

MB = 1024 * 1024
TARGET_MINUTES = 60
TARGET_BATCH_SECONDS = 1.0
MAX_JOB_RSS_DRIFT_PCT = 10.0
MAX_BATCH_P50_RATIO = 1.5
MAX_PRODUCER_RSS = 150 * MB
JOURNAL_SLACK = 1.1  # the journal's last-third peak against the middle third's or a segment


# --- the programs' log lines --------------------------------------------------------------

_BATCH_LINE = re.compile(r"batch (\S+): .*; Spark: (\d+) records, scheduling delay (\d+|None) "
                         r"ms, processing (\d+|None) ms")
_SUMMARY_LINE = re.compile(r"summary: ([\d,]+) tweets emitted, ([\d,]+) bad lines skipped; "
                           r"([\d,]+) sent, ([\d,]+) stored, ([\d,]+) refused, ([\d,]+) held")


@dataclass(frozen=True)
class BatchLine:
    """One batch, as the job's per-batch log line tells it."""

    batch_id: str
    records: int
    processing_ms: int | None  # None when Spark had no figure
    t: float = 0.0  # when the line was read (seconds since the run started)


def parse_batch_line(line: str, t: float = 0.0) -> BatchLine | None:
    """The batch of a job log line like ``batch 2026-..Z: 400 lines, ...; Spark: 400
    records, scheduling delay 3 ms, processing 212 ms``; None for any other line."""
    match = _BATCH_LINE.search(line)
    if match is None:
        return None
    processing = match.group(4)
    return BatchLine(match.group(1), int(match.group(2)),
                     None if processing == "None" else int(processing), t)


@dataclass(frozen=True)
class ProducerSummary:
    emitted: int
    skipped: int
    sent: int
    stored: int
    refused: int
    held: int


def parse_summary(line: str) -> ProducerSummary | None:
    """stream.py's last line for a replay (``summary: N tweets emitted, ...``), or None."""
    match = _SUMMARY_LINE.search(line)
    if match is None:
        return None
    return ProducerSummary(*(int(group.replace(",", "")) for group in match.groups()))


# --- samples and drift --------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the first batch
    producer_rss: int
    driver_rss: int
    jvm_rss: int
    workers_rss: int
    batches: int  # completed since the last sample
    batch_p50_ms: float | None  # their processing time, p50
    journal_bytes: int
    store_bytes: int
    log_bytes: int

    @property
    def job_rss(self) -> int:
        return self.driver_rss + self.jvm_rss + self.workers_rss


@dataclass(frozen=True)
class Drift:
    """The last third of a run against its middle third."""

    job_rss_middle: float  # median of the samples, bytes
    job_rss_last: float
    batch_p50_middle_ms: float | None  # p50 of every batch completed in the third
    batch_p50_last_ms: float | None
    producer_rss_max: int
    journal_max_middle: int
    journal_max_last: int

    @property
    def job_rss_drift_pct(self) -> float | None:
        if not self.job_rss_middle:
            return None
        return (self.job_rss_last / self.job_rss_middle - 1) * 100

    @property
    def batch_p50_ratio(self) -> float | None:
        if not self.batch_p50_middle_ms or self.batch_p50_last_ms is None:
            return None
        return self.batch_p50_last_ms / self.batch_p50_middle_ms

    def journal_bounded(self, segment_bytes: int) -> bool:
        """Bounded: the last third's largest journal is at most 10 % larger than the
        middle third's, or than one segment (acknowledged tweets stay on disk until
        their whole segment is, so a healthy journal saws between 0 and a segment,
        plus the tweets not acknowledged yet)."""
        return self.journal_max_last <= JOURNAL_SLACK * max(self.journal_max_middle,
                                                             segment_bytes)


def thirds(items: Iterable[Any], duration: float) -> tuple[list[Any], list[Any]]:
    """The items (each with a ``t`` in seconds since the start) of the middle third
    and of the last third of ``duration`` seconds."""
    middle, last = [], []
    for item in items:
        if item.t >= duration * 2 / 3:
            last.append(item)
        elif item.t >= duration / 3:
            middle.append(item)
    return middle, last


def median_or_none(values: list[float]) -> float | None:
    """The median of ``values``; None when there are none."""
    return statistics.median(values) if values else None


def drift(samples: list[Sample], batches: list[BatchLine], duration: float) -> Drift:
    """The drift figures of a run ``duration`` seconds long."""
    middle, last = thirds(samples, duration)
    batch_middle, batch_last = thirds(
        (b for b in batches if b.processing_ms is not None), duration)
    return Drift(
        job_rss_middle=median_or_none([s.job_rss for s in middle]) or 0,
        job_rss_last=median_or_none([s.job_rss for s in last]) or 0,
        batch_p50_middle_ms=median_or_none([b.processing_ms for b in batch_middle]),
        batch_p50_last_ms=median_or_none([b.processing_ms for b in batch_last]),
        producer_rss_max=max((s.producer_rss for s in samples), default=0),
        journal_max_middle=max((s.journal_bytes for s in middle), default=0),
        journal_max_last=max((s.journal_bytes for s in last), default=0),
    )


@dataclass
class Count:
    """The posts sent, against the store and the journal read back after the stop."""

    sent: int = 0  # posts 0 .. sent-1 left the replay file
    refused: int = 0  # by a full journal (stream.py's summary)
    stored: int = 0  # texts in the store, repeats included
    distinct: int = 0
    twice: int = 0  # posts stored more than once
    held: int = 0  # sent, not stored, kept in the journal for the next run
    lost: int = 0  # sent, neither stored nor held
    foreign: int = 0  # texts in the store that are no post sent

    @property
    def exact(self) -> bool:
        return self.sent > 0 and self.lost == 0 and self.twice == 0 and self.foreign == 0


def count_posts(sent: int, stored_texts: Iterable[str], held_texts: Iterable[str]) -> Count:
    """Which of posts 0 .. sent-1 were stored once, twice, held or lost."""
    count = Count(sent=sent)
    times = bytearray(sent)  # per post, how often stored (at most 255 kept)
    for text in stored_texts:
        count.stored += 1
        index = post_index(text)
        if index is None or index >= sent:
            count.foreign += 1
        elif times[index] < 255:
            times[index] += 1
    count.distinct = sum(1 for n in times if n)
    count.twice = sum(1 for n in times if n > 1)
    held = {i for text in held_texts if (i := post_index(text)) is not None and i < sent}
    count.held = sum(1 for i in held if not times[i])
    count.lost = sent - count.distinct - count.held
    return count


# --- the run ------------------------------------------------------------------------------


@dataclass
class Run:
    minutes: float
    rate: float
    batch_seconds: float
    every: float
    master: str
    posts_written: int = 0
    duration: float = 0.0  # seconds from the first batch to the stop
    producer_seconds: float = 0.0  # from stream.py's start to its stop
    errors: dict[str, int] = field(default_factory=dict)  # ERROR lines before the stop
    samples: list[Sample] = field(default_factory=list)
    batches: list[BatchLine] = field(default_factory=list)
    summary: ProducerSummary | None = None
    count: Count | None = None
    job_exit: int | None = None
    producer_exit: int | None = None
    error: str = ""
