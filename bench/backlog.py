"""The held-backlog check: the job down for a minute while the producer takes tweets.

:func:`run_backlog` runs the full pipeline with numbered tweets (bench.tweets),
SIGKILLs the job once its first batch is stored, keeps offering tweets for
``down_s`` seconds (the producer holds them all in its journal, none
acknowledged), then restarts the job and waits until everything is
acknowledged. The producer's memory is read while it holds the most; then the
store is read back: every number offered must be there exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import config
import storage
from bench.load import Feeder
from bench.measure import MB, START_TIMEOUT, ProcessSampler, SparkJob, log
from bench.steps import START_RATE
from bench.tweets import number_of


@dataclass
class BacklogResult:
    interval: float
    rate: int
    down_s: float
    offered: int = 0
    refused: int = 0
    held_max: int = 0  # tweets the producer held at most (not yet acknowledged)
    rss_at_held_max: int = 0  # the producer's RSS then
    rss_peak: int = 0  # the producer's RSS at most, over the whole check
    journal_bytes_max: int = 0
    catch_up_s: float | None = None  # restart -> everything acknowledged
    stored: int = 0  # numbered tweets in the store, counting repeats
    unique: int = 0
    lost: int = 0
    twice: int = 0
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and self.lost == 0 and self.twice == 0 and self.offered > 0


def run_backlog(interval: float, rate: int, down_s: float, master: str, page_url: str,
                workdir: Path, catch_up_timeout: float = 420.0) -> BacklogResult:
    """The full job with numbered tweets, SIGKILLed once its first batch is stored,
    restarted ``down_s`` later: the producer offers ``rate`` meanwhile, then nothing.
    Then every tweet offered must be in the store exactly once."""
    result = BacklogResult(interval, rate, down_s)
    here = workdir / "backlog"
    here.mkdir(parents=True, exist_ok=True)
    feeder = Feeder("producer", here, numbered=True)
    feeder.set_rate(START_RATE)
    job = SparkJob("full", feeder, interval, master, page_url, here)
    sampler = ProcessSampler(feeder.pid, job.pid)
    try:
        if job.first_output() is None:
            result.error = f"no batch stored within {START_TIMEOUT:g} s (see {job.log_path})"
            return result
        log(f"backlog: first batch stored; SIGKILL the job, {down_s:g} s down at {rate:,}/s")
        feeder.set_rate(rate)
        job.kill()
        sampler.watch_job(None)
        time.sleep(down_s)  # the producer takes tweets; nobody acknowledges them
        feeder.set_rate(0)
        stopped_offering = time.time()
        statuses = [s for s in feeder.status.snapshot() if s["t"] <= stopped_offering + 1]
        top = max(statuses, key=lambda s: s["pending"])
        result.held_max = top["pending"]
        result.rss_at_held_max = max((s.rss["producer"] for s in sampler.samples
                                      if abs(s.t - top["t"]) <= 0.5), default=0)
        result.journal_bytes_max = _size_of(here / "journal")
        log(f"backlog: {result.held_max:,} tweets held, producer RSS "
            f"{result.rss_at_held_max / MB:,.0f} MB, journal {result.journal_bytes_max / MB:,.0f}"
            " MB; restarting the job")
        restarted = time.time()
        job = SparkJob("full", feeder, interval, master, page_url, here)
        sampler.watch_job(job.pid)

        def all_acknowledged(items: list[dict[str, Any]]) -> bool:
            last = items[-1] if items else {}
            return last.get("t", 0) > restarted and last["pending"] == 0

        if not feeder.status.wait_for(all_acknowledged, catch_up_timeout):
            result.error = (f"not everything was acknowledged {catch_up_timeout:g} s after "
                            f"the restart ({feeder.status.latest().get('pending')} held)")
        else:
            result.catch_up_s = time.time() - restarted
        last = feeder.status.latest()
        result.offered, result.refused = last.get("offered", 0), last.get("refused", 0)
    finally:
        feeder.set_rate(0)
        job.stop()
        feeder.close()
        sampler.stop()
    result.rss_peak = sampler.peak("producer")
    if not result.error:
        count_stored(result, here / "db")
    log(f"backlog: {result.offered:,} offered, {result.refused:,} refused, {result.unique:,} "
        f"stored, {result.lost:,} lost, {result.twice:,} twice"
        + (f"; {result.error}" if result.error else ""))
    return result


def count_stored(result: BacklogResult, db_path: Path) -> None:
    """Count the numbered tweets in the store the job wrote (through storage.open_store)."""
    counts: Counter[int] = Counter(n for text in stored_texts(db_path)
                                   if (n := number_of(text)) is not None)
    result.stored = sum(counts.values())
    result.unique = len(counts)
    result.twice = sum(1 for n in counts.values() if n > 1)
    # every tweet made was numbered 0, 1, ...; those the journal refused never went out
    result.lost = max(0, result.offered - result.refused - result.unique)
    if any(n >= result.offered for n in counts):
        result.error = "the store holds numbers that were never offered"


def stored_texts(db_path: Path) -> Iterator[str]:
    """Every cleaned text in the embedded store at ``db_path`` (through
    storage.open_store), repeats included: a text stored twice comes twice."""
    store = storage.open_store(config.Settings(embedded_db_path=db_path))
    try:
        for document in store.collection.find({}, {"content": 1}):
            yield from document.get("content", ())
    finally:
        store.close()


def _size_of(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*") if path.is_file())
