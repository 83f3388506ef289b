"""The soak benchmark (``make soak``): both real programs for an hour, watched for drift.

Usage: python -m bench.soak [--minutes 60] [--rate 400] [--batch-seconds 1]
                            [--every 15] [--master M] [--output bench/soak.md]
                            [--workdir DIR]

Runs ``stream.py --source replay`` at ``--rate`` posts a second from a file of
unique posts it writes first (each text unique and unchanged by cleaning, so the
store's texts identify the posts), and ``spark_streaming.py --batch-seconds 1``
with its embedded store, each with the run's own journal, spool, store, control
secret and free ports, in a temporary folder (or ``--workdir``, kept). The
saved worldometers page is served from 127.0.0.1.

From the first batch on, every ``--every`` seconds it samples: the resident
memory of the producer and of the job (driver + its JVM + Python workers: every
descendant of the driver, found by parent pid, as the JVM may run in a session
of its own); the processing time of the batches completed since the last
sample (from the job's per-batch log line); the journal's, the store's and the
logs' sizes on disk.

After ``--minutes`` it stops the job (SIGTERM: it stores the batch in flight),
then the producer, and reads the store and the journal back: every post sent
must be stored once, or still held in the journal for the next run.

Writes ``--output`` (the parameters, the machine, the targets met or missed,
drift figures: the last third of the run against the middle third, and the
samples) and a plot beside it (``soak.png``). Exit status 0 once the run is
done, whatever it found; 1 when a program failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import BENCH, PageServer, free_port
from bench.proctree import tree_rss
from bench.programs import Program, machine

MB = 1024 * 1024
TARGET_MINUTES = 60
TARGET_BATCH_SECONDS = 1.0
MAX_JOB_RSS_DRIFT_PCT = 10.0
MAX_BATCH_P50_RATIO = 1.5
MAX_PRODUCER_RSS = 150 * MB
JOURNAL_SLACK = 1.1  # the journal's last-third peak against the middle third's or a segment
START_TIMEOUT = 180.0  # Spark's start on a busy 2-core machine
#: posts written beyond rate x run: the producer starts before the job's first batch
SPARE_SECONDS = START_TIMEOUT + 60

# --- the posts ----------------------------------------------------------------------------

_WORDS = (
    "covid", "cases", "vaccine", "booster", "masks", "hospital", "nurses", "clinic", "testing",
    "symptoms", "recovery", "variant", "omicron", "lockdown", "schools", "travel", "rules",
    "data", "report", "week", "wave", "update", "today", "city", "health", "queue", "fever",
    "cough", "isolation", "pandemic", "still", "more", "fewer", "new", "in", "the", "a", "of",
    "and", "for", "our", "my", "café", "niño", "Zürich", "São", "Paulo", "коронавирус",
    "疫苗", "again?", "finally!", "(maybe)", "well,", "50%", "2020-2024", "x-ray", "near",
    "home", "spring",
)  # a prime number of words: every stride below visits them all
_POST = re.compile(r"post (\d+):")


def post_text(index: int) -> str:
    """Post ``index``'s text: unique (it starts with its number), 3 to 20 words from a
    varied vocabulary (accents, Cyrillic, Chinese, punctuation), unchanged by cleaning."""
    size = len(_WORDS)
    count = 3 + (index * 7919) % 18
    first, stride = index * 2654435761 % size, 1 + index // size % (size - 1)
    words = (_WORDS[(first + k * stride) % size] for k in range(count))
    return f"post {index}: " + " ".join(words)


def post_index(text: str) -> int | None:
    """The number of the post whose text this is; None for any other text."""
    match = _POST.match(text)
    if match is None:
        return None
    index = int(match.group(1))
    return index if post_text(index) == text else None


def write_posts(path: Path, count: int) -> None:
    """A replay file of posts 0 .. count-1 (bare tweet objects, ids ``soak-N``)."""
    with path.open("w", encoding="utf-8") as handle:
        for start in range(0, count, 10_000):
            handle.writelines(
                json.dumps({"id": f"soak-{i}", "text": post_text(i)}, ensure_ascii=False) + "\n"
                for i in range(start, min(count, start + 10_000)))


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


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def drift(samples: list[Sample], batches: list[BatchLine], duration: float) -> Drift:
    """The drift figures of a run ``duration`` seconds long."""
    middle, last = thirds(samples, duration)
    batch_middle, batch_last = thirds(
        (b for b in batches if b.processing_ms is not None), duration)
    return Drift(
        job_rss_middle=_median([s.job_rss for s in middle]) or 0,
        job_rss_last=_median([s.job_rss for s in last]) or 0,
        batch_p50_middle_ms=_median([b.processing_ms for b in batch_middle]),
        batch_p50_last_ms=_median([b.processing_ms for b in batch_last]),
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


# --- the processes ------------------------------------------------------------------------


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} soak: {message}\n")
    sys.stderr.flush()


def size_on_disk(*paths: Path) -> int:
    """Bytes of the files at or under ``paths`` (missing ones count 0)."""
    total = 0
    for path in paths:
        files = path.rglob("*") if path.is_dir() else [path]
        for file in files:
            with contextlib.suppress(OSError):
                if file.is_file():
                    total += file.stat().st_size
    return total


def journal_segment_bytes() -> int:
    """The size of one journal segment with the default JOURNAL_MAX_BYTES."""
    import config
    import journal

    return max(64 * 1024, min(journal.Journal.SEGMENT_BYTES,
                              config.Settings().journal_max_bytes // 8))


def held_texts(journal_path: Path) -> list[str]:
    """The texts the journal still holds (not acknowledged), read once stream.py is gone."""
    import journal

    if not journal_path.exists():
        return []
    kept = journal.Journal(journal_path)
    try:
        spans = kept.spans(kept.first_held(), kept.committed, 1 << 62)
        texts = []
        for record in journal.records_of(spans):
            body = journal.unseal(record)
            if body is not None:
                texts.append(json.loads(body).get("text", ""))
        return texts
    finally:
        kept.close()


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


def soak(run: Run, here: Path, page_url: str) -> Run:
    """Both programs for ``run.minutes`` from the job's first batch; samples, then the count."""
    replay = here / "posts.jsonl"
    run.posts_written = math.ceil(run.rate * (run.minutes * 60 + SPARE_SECONDS))
    log(f"writing {run.posts_written:,} posts to {replay}")
    write_posts(replay, run.posts_written)
    port, ack_port = free_port(), free_port()
    secret = ["--control-secret-file", str(here / "control.secret")]
    started: list[bool] = []
    epoch = [math.inf]  # the first batch's time: samples and batches count from it

    def on_producer_line(line: str) -> None:
        if "serving tweets on" in line:
            started.append(True)
        if (summary := parse_summary(line)) is not None:
            run.summary = summary

    def on_job_line(line: str) -> None:
        now = time.time()
        batch = parse_batch_line(line, now - epoch[0] if epoch[0] < math.inf else 0.0)
        if batch is not None:
            epoch[0] = min(epoch[0], now)
            run.batches.append(batch)

    producer_started = time.time()
    producer = Program("producer", "stream.py", [
        "--source", "replay", "--replay-file", str(replay), "--rate", f"{run.rate:g}",
        "--host", "127.0.0.1", "--port", str(port), "--ack-port", str(ack_port),
        "--journal-path", str(here / "journal"), *secret], here, on_producer_line)
    job: Program | None = None
    try:
        if not producer.wait_until(lambda: bool(started), 60):
            run.error = f"stream.py did not start: {producer.last_lines()}"
        else:
            job = Program("job", "spark_streaming.py", [
                "--host", "127.0.0.1", "--port", str(port), "--ack-port", str(ack_port),
                "--batch-seconds", f"{run.batch_seconds:g}", "--master", run.master,
                "--worldometers-url", page_url, "--embedded-db-path", str(here / "db"),
                "--spool-path", str(here / "spool.jsonl"),
                "--quarantine-path", str(here / "quarantine.jsonl"), *secret], here,
                on_job_line)
        if job is not None and not job.wait_until(lambda: bool(run.batches), START_TIMEOUT):
            run.error = ("spark_streaming.py " + (
                f"exited (status {job.process.returncode})" if not job.running
                else f"stored no batch in {START_TIMEOUT:g} s") + f": {job.last_lines()}")
        if job is not None and not run.error:
            log(f"first batch; sampling every {run.every:g} s for {run.minutes:g} minutes")
            sample_until(run, producer, job, here, epoch[0])
    finally:
        run.duration = time.time() - epoch[0] if epoch[0] < math.inf else 0.0
        run.errors = {p.name: p.errors for p in (producer, job) if p is not None}
        if job is not None:
            log("stopping the job (SIGTERM), then the producer")
            run.job_exit = job.stop(run.batch_seconds * 3 + 60)
        run.producer_exit = producer.stop(60)
        run.producer_seconds = time.time() - producer_started
    if not run.error and run.summary is None:
        run.error = f"stream.py wrote no summary line: {producer.last_lines()}"
    if run.summary is not None:
        from bench.backlog import stored_texts

        log("reading the store and the journal back")
        run.count = count_posts(run.summary.emitted, stored_texts(here / "db"),
                                held_texts(here / "journal"))
        run.count.refused = run.summary.refused
    return run


def sample_until(run: Run, producer: Program, job: Program, here: Path, epoch: float) -> None:
    """A sample every ``run.every`` seconds until ``run.minutes`` have passed."""
    end = epoch + run.minutes * 60
    logs = [producer.log_path, job.log_path]
    taken = 0
    for k in range(int(run.minutes * 60 // run.every) + 1):
        time.sleep(max(0.0, min(epoch + k * run.every, end) - time.time()))
        if not (producer.running and job.running):
            which = producer if not producer.running else job
            run.error = (f"{which.name} exited (status {which.process.returncode}) after "
                         f"{time.time() - epoch:.0f} s: {which.last_lines()}")
            return
        now = time.time() - epoch
        done = [b for b in run.batches[taken:] if b.processing_ms is not None]
        taken = len(run.batches)
        job_rss = tree_rss(job.process.pid)
        sample = Sample(
            t=now, producer_rss=sum(tree_rss(producer.process.pid).values()),
            driver_rss=job_rss["driver"], jvm_rss=job_rss["jvm"],
            workers_rss=job_rss["workers"], batches=len(done),
            batch_p50_ms=_median([b.processing_ms for b in done]),
            journal_bytes=size_on_disk(here / "journal"), store_bytes=size_on_disk(here / "db"),
            log_bytes=size_on_disk(*logs))
        run.samples.append(sample)
        log(f"{now / 60:5.1f} min: producer {sample.producer_rss / MB:,.0f} MB, job "
            f"{sample.job_rss / MB:,.0f} MB, {sample.batches} batches"
            + ("" if sample.batch_p50_ms is None else f" p50 {sample.batch_p50_ms:,.0f} ms")
            + f", journal {sample.journal_bytes / MB:,.1f} MB")


def main(argv: list[str] | None = None) -> int:
    from bench.soak_report import write_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=TARGET_MINUTES,
                        help=f"how long to run from the first batch on (default "
                             f"{TARGET_MINUTES})")
    parser.add_argument("--rate", type=float, default=400, help="posts a second (default 400)")
    parser.add_argument("--batch-seconds", type=float, default=TARGET_BATCH_SECONDS)
    parser.add_argument("--every", type=float, default=15, help="seconds between samples")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--output", type=Path, default=BENCH / "soak.md")
    parser.add_argument("--workdir", type=Path,
                        help="keep the logs, journal and store here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.every <= 0 or args.batch_seconds <= 0:
        parser.error("--minutes, --rate, --every and --batch-seconds must be above 0")
    # the warnings of bench.programs (a program killed) in the shape of this file's log()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s soak: %(message)s",
                        datefmt="%H:%M:%S")
    run = Run(args.minutes, args.rate, args.batch_seconds, args.every, args.master)
    about = machine()
    page = PageServer()
    try:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
            here = args.workdir or Path(tmp)
            here.mkdir(parents=True, exist_ok=True)
            soak(run, here, page.url)
    finally:
        page.close()
    checks = write_report(args.output, run, about, journal_segment_bytes())
    sys.stdout.write("\n".join(checks) + "\n")
    log(f"wrote {args.output}" + (f"; {run.error}" if run.error else ""))
    return 1 if run.error else 0


if __name__ == "__main__":
    sys.exit(main())
