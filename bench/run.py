"""The benchmark (``make bench``): how many tweets per second, and where the CPU goes.

Usage: python -m bench.run [--jobs ceiling,bare,full,default,backlog] [--master M]
                           [--skip-parse] [--skip-sources] [--no-profile]
                           [--workdir DIR] [--output bench/results.md]

1. Case-count parse on a full-size (~1 MB) page (bench.bigpage):
   ``scrape.parse_total_cases`` vs a full ``BeautifulSoup(html, "html.parser")``.
2. How fast the Bluesky source turns Jetstream frames into wire tweets (bench.bluesky),
   and what storing post fields costs per post, off vs on (bench.post_fields).
3. Spark jobs, one after the other, each in its own processes (bench.measure
   steps each through offered rates to its limit, bench.load feeds them):
   (a) ``ceiling``: Spark's bare receiver (socketTextStream, each batch only
       counted in the JVM) fed by bench.plain, which writes pre-made lines and
       nothing else: the most the receiver takes;
   (b) ``bare``: the same receiver fed by bench.producer, the product's
       producer (TweetServer, journal, acknowledgements) with synthetic tweets;
   (c) ``full``: spark_streaming.py's own main() fed by bench.producer, with the
       saved worldometers page served from 127.0.0.1 and the embedded store;
       then a py-spy profile of its processes at its sustained rate;
   (d) ``structured``: the same full pipeline on Structured Streaming
       (``--engine structured``), side by side with (c);
   all four with 2 s batches, so that a step is short; then
   (e) ``default`` and ``structured-default``: the full pipeline with the
       default settings (20 s batches) on each engine, stepped from its 2 s
       rate to its own limit;
   (f) ``backlog``: the full pipeline, 20 s batches, at 20,000 tweets/s,
       SIGKILLed for 60 s and restarted: the producer's memory while it holds
       over a million tweets, and whether every one is stored once.

Prints the tables and writes them, with every step, the profiles and
bench/notes.md (where the time goes, what was tried) to --output. About 15
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bs4 import BeautifulSoup

import config
import scrape
from bench import bluesky_speed, post_fields_cost, producer_alone, tables
from bench.backlog import BacklogResult, run_backlog
from bench.load import BENCH, PageServer
from bench.measure import JobResult, Plan, log, run_job
from bench.programs import machine
from bench.worldometers_page import CASES, build_page

BACKLOG_RATE = 20_000
BACKLOG_DOWN_SECONDS = 60.0


# --- 1. the parse micro-benchmark -------------------------------------------------------


def time_call(fn: Any, arg: Any, min_runs: int, min_seconds: float) -> float:
    """Median seconds of one call, over at least ``min_runs`` calls and ``min_seconds``."""
    runs: list[float] = []
    started = time.perf_counter()
    while len(runs) < min_runs or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        fn(arg)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def parse_bench() -> list[dict[str, Any]]:
    rows = []
    for where, counters_last in (("counters at the top (as on the site)", False),
                                 ("counters after the tables (worst case)", True)):
        page = build_page(counters_last=counters_last).encode()
        assert scrape.parse_total_cases(page) == CASES
        assert scrape.parse_total_cases_full(page) == CASES
        full = time_call(lambda html: BeautifulSoup(html, "html.parser"), page, 3, 2.0)
        fast = time_call(scrape.parse_total_cases, page, 20, 1.0)
        rows.append({"page": where, "bytes": len(page), "full_ms": full * 1000,
                     "fast_ms": fast * 1000, "ratio": fast / full})
        log(f"parse, {where}: full {full * 1000:.1f} ms, project {fast * 1000:.2f} ms")
    return rows



def plans(master_interval: float, default_interval: float, profile: bool) -> dict[str, Plan]:
    """Each job's feeder, batch interval and rate steps (the default job's start is
    set from the full job's result)."""
    return {
        # the receivers without RECEIVER_MAX_RATE's cap: what they take, not the policy
        "ceiling": Plan("ceiling", "bare", "plain", master_interval, start=75_000, factor=2,
                        ceiling=1_600_000, receiver_max_rate=0),
        "bare": Plan("bare", "bare", "producer", master_interval, start=10_000, factor=2,
                     ceiling=640_000, receiver_max_rate=0),
        "full": Plan("full", "full", "producer", master_interval, start=10_000, factor=2,
                     ceiling=640_000, profile=profile),
        "default": Plan(f"full, {default_interval:g} s batches", "full", "producer",
                        default_interval, start=20_000, factor=1.2, ceiling=640_000,
                        warmup=0, measured=2),  # rates change at a batch boundary
        # the same two on Structured Streaming (--engine structured), side by side
        "structured": Plan("full, structured", "full", "producer", master_interval,
                           start=10_000, factor=2, ceiling=640_000, engine="structured"),
        "structured-default": Plan(f"full, structured, {default_interval:g} s batches", "full",
                                   "producer", default_interval, start=20_000, factor=1.2,
                                   ceiling=640_000, warmup=0, measured=2, engine="structured"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--batch-seconds", type=float, default=2.0,
                        help="the batch interval of the ceiling, bare and full jobs")
    parser.add_argument("--jobs",
                        default="ceiling,bare,full,structured,default,structured-default,backlog",
                        type=lambda raw: raw.split(","),
                        help="any of ceiling, bare, full, structured, default, "
                             "structured-default, backlog")
    parser.add_argument("--skip-parse", action="store_true")
    parser.add_argument("--skip-sources", action="store_true",
                        help="skip the Bluesky source's frames-per-second measurement")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the py-spy profile of the full pipeline")
    parser.add_argument("--output", type=Path, default=BENCH / "results.md")
    parser.add_argument("--workdir", type=Path,
                        help="keep the processes' logs and the stores here (default: a temp dir)")
    args = parser.parse_args(argv)
    unknown = set(args.jobs) - {"ceiling", "bare", "full", "structured", "default",
                                "structured-default", "backlog"}
    if unknown:
        parser.error(f"unknown job(s): {', '.join(sorted(unknown))}")

    default_interval = config.Settings().batch_seconds
    jobs_to_run = plans(args.batch_seconds, default_interval, args.profile)
    started = time.time()
    about = machine()
    parse_rows = [] if args.skip_parse else parse_bench()
    source_lines: list[str] = []
    if not args.skip_sources:
        log("Bluesky source: Jetstream frames -> wire tweets, one core")
        source_lines = bluesky_speed.table()
    log("post fields: executors + driver, off vs on, 200,000 posts, one core")
    post_lines = post_fields_cost.table()
    log("the producer alone at saturation: put vs put_many, 3 rounds of 200,000 posts")
    producer_lines, producer_us = producer_alone.table()
    page = PageServer()
    jobs: dict[str, JobResult] = {}
    backlog: BacklogResult | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            workdir = args.workdir or Path(tmp)
            for key in args.jobs:
                if key == "backlog":
                    log(f"backlog: {default_interval:g} s batches at {BACKLOG_RATE:,}/s, the job "
                        f"down for {BACKLOG_DOWN_SECONDS:g} s")
                    backlog = run_backlog(default_interval, BACKLOG_RATE, BACKLOG_DOWN_SECONDS,
                                          args.master, page.url, workdir)
                    continue
                plan = jobs_to_run[key]
                two_second = {"default": "full", "structured-default": "structured"}.get(key)
                if two_second in jobs and jobs[two_second].best:
                    plan.start = jobs[two_second].best.rate  # where its 2 s batches stopped
                log(f"{plan.name}: starting ({plan.interval:g} s batches, {args.master}, fed "
                    f"by the {plan.feeder})")
                jobs[key] = run_job(plan, args.master, page.url, workdir)
    finally:
        page.close()
    checks = tables.targets(jobs, backlog, parse_rows, producer_us)
    sys.stdout.write("\n".join(checks) + "\n")
    tables.write_report(args.output, about, args.master, jobs, backlog, checks, parse_rows,
                        source_lines, time.time() - started, post_lines,
                        producer_lines)
    log(f"done in {(time.time() - started) / 60:.1f} minutes; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
