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
import sys
import tempfile
import time
from pathlib import Path

import config
import journal
from bench.backlog import stored_texts
from bench.load import BENCH, PageServer, free_port
from bench.proctree import tree_rss
from bench.programs import Program, machine
from bench.replay_posts import write_posts
from bench.soak_figures import (
    MB,
    TARGET_BATCH_SECONDS,
    TARGET_MINUTES,
    Run,
    Sample,
    count_posts,
    median_or_none,
    parse_batch_line,
    parse_summary,
)
from bench.soak_report import write_report

START_TIMEOUT = 180.0  # Spark's start on a busy 2-core machine
#: posts written beyond rate x run: the producer starts before the job's first batch
SPARE_SECONDS = START_TIMEOUT + 60

# --- what the programs leave on disk -----------------------------------------------------


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
    return max(64 * 1024, min(journal.Journal.SEGMENT_BYTES,
                              config.Settings().journal_max_bytes // 8))


def held_texts(journal_path: Path) -> list[str]:
    """The texts the journal still holds (not acknowledged), read once stream.py is gone."""
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
            batch_p50_ms=median_or_none([b.processing_ms for b in done]),
            journal_bytes=size_on_disk(here / "journal"), store_bytes=size_on_disk(here / "db"),
            log_bytes=size_on_disk(*logs))
        run.samples.append(sample)
        log(f"{now / 60:5.1f} min: producer {sample.producer_rss / MB:,.0f} MB, job "
            f"{sample.job_rss / MB:,.0f} MB, {sample.batches} batches"
            + ("" if sample.batch_p50_ms is None else f" p50 {sample.batch_p50_ms:,.0f} ms")
            + f", journal {sample.journal_bytes / MB:,.1f} MB")


def main(argv: list[str] | None = None) -> int:
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
