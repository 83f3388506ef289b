"""The cost benchmark: what the producer and the job cost while they run at live rates.

Usage: python -m bench.cost [--seconds 60] [--warmup 60] [--rows idle,replay-5,...]
                            [--master M] [--project DIR] [--output bench/results.md]
                            [--workdir DIR]

Runs both real programs, ``stream.py`` and ``spark_streaming.py`` (each with
the run's own journal, spool, embedded store, control secret and free ports,
the saved worldometers page served from 127.0.0.1), once per row:

* ``idle``: the Bluesky source against a local Jetstream stand-in that sends
  nothing; 20 s batches; ``idle-structured`` the same with ``--engine structured``;
* ``replay-5``: the replay source at 5 posts/s; 20 s batches;
* ``bluesky-50``: the Bluesky source against the stand-in sending 50 post
  events a second, about 1 in 50 matching the keywords (bench.bluesky's
  frames), the way the live network looks; 20 s batches; ``bluesky-50-structured``
  the same with ``--engine structured``;
* ``bluesky-50-deletes``: the same with deletes of posts at the network's rate,
  one event in eleven (about 5 a second), each forwarded to the job;
* ``replay-400``: the replay source at 400 posts/s; 20 s batches;
* ``replay-400-1s``: the same with 1 s batches.

From the job's first batch (the structured engine at idle: its query running) it
waits ``--warmup`` seconds, then reads the CPU
time (user + system, from /proc through psutil) of each program's process
tree for ``--seconds``: the producer, and the job = the driver + its JVM +
the Python workers (the JVM is found as a descendant by parent pid: it runs
in a session of its own). Each is reported as % of one core and as µs of CPU
per post offered (per post event for the Bluesky row). CPU time per post holds
on a busy machine; a row measured while /proc/loadavg shows much other load
says so.

``--project DIR`` runs another checkout's programs (a before/after comparison).
The table goes into ``--output`` (bench/results.md), replacing its earlier
cost section, or is added. Exit status 0 once every row ran; 1 when one failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.jetstream_frames import make_frames
from bench.load import BENCH, PROJECT, PageServer, free_port
from bench.proctree import CpuMeter, jvm_pid, task_times, thread_cpu
from bench.programs import Program
from bench.replay_posts import write_posts
from bench.results import COST_HEADING, replace_section
from tests.processes import JetstreamStandIn

log = logging.getLogger("bench.cost")

START_TIMEOUT = 240.0  # Spark's start on a busy 2-core machine
BATCH_LINE = re.compile(r"batch \S+: (\d+) lines")
#: a row is flagged when the machine ran this much more than the two programs (cores)
OTHER_LOAD_CORES = 0.5
MATCH_SHARE = 1 / 50  # of the Bluesky row's post events
#: the stand-in publishes in slices this long: a host sends each event as it comes, so at
#: 50 a second a slice holds one (in 0.1 s slices, five came at once: cheaper to read
#: than the real service is)
PUBLISH_SLICE = 0.02


@dataclass(frozen=True)
class Row:
    key: str
    source: str  # "replay" or "bluesky"
    rate: float  # posts (post events) a second
    batch_seconds: float
    engine: str = "dstream"
    delete_share: float = 0.02  # of the Bluesky row's events: deletes of posts

    @property
    def label(self) -> str:
        what = ("idle (Bluesky, nothing sent)" if self.rate == 0 else
                f"{self.rate:g} post events/s, Bluesky, 1 in {1 / MATCH_SHARE:g} matching"
                if self.source == "bluesky" else f"{self.rate:g} posts/s, replay")
        if self.source == "bluesky" and self.rate and self.delete_share != 0.02:
            what += f", {self.rate * self.delete_share:g} deletes/s"
        engine = ", structured engine" if self.engine == "structured" else ""
        return f"{what}, {self.batch_seconds:g} s batches{engine}"


ROWS = {row.key: row for row in (
    Row("idle", "bluesky", 0, 20),
    Row("idle-structured", "bluesky", 0, 20, "structured"),
    Row("replay-5", "replay", 5, 20),
    Row("bluesky-50", "bluesky", 50, 20),
    Row("bluesky-50-structured", "bluesky", 50, 20, "structured"),
    Row("bluesky-50-deletes", "bluesky", 55, 20, delete_share=1 / 11),
    Row("replay-400", "replay", 400, 20),
    Row("replay-400-1s", "replay", 400, 1),
)}
#: the structured engine logs no line for a batch without posts: it runs once it says so
RUNNING_LINE = "query running"


@dataclass
class Result:
    row: Row
    seconds: float = 0.0  # the measured window
    producer: float = 0.0  # CPU seconds in the window
    job: dict[str, float] = field(default_factory=dict)  # driver / jvm / workers
    batches: int = 0  # completed in the window
    lines: int = 0  # the job received in those batches
    load: float = 0.0  # /proc/loadavg, 1 minute, at the window's end
    #: the JVM's CPU seconds in the window by kind of thread (those alive at both ends)
    jvm_threads: dict[str, float] = field(default_factory=dict)
    #: the producer's CPU seconds in the window: user and system time, and each of its
    #: threads (alive at both ends), busiest first
    producer_user: float = 0.0
    producer_system: float = 0.0
    producer_threads: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def job_total(self) -> float:
        return sum(self.job.values())

    def pct(self, cpu: float) -> float:
        """``cpu`` seconds as % of one core over the window."""
        return 100 * cpu / self.seconds if self.seconds else math.nan

    def us_per_post(self, cpu: float) -> float | None:
        posts = self.row.rate * self.seconds
        return 1e6 * cpu / posts if posts else None

    @property
    def other_load(self) -> float:
        """Cores busy with something else than the two programs (roughly: the load
        average counts runnable tasks, not CPU time)."""
        return max(0.0, self.load - (self.producer + self.job_total) / max(self.seconds, 1e-9))


# --- the load ------------------------------------------------------------------------------


class Publisher:
    """The Jetstream stand-in (tests/processes.py) and a thread publishing ``rate``
    post events a second into it, stamped with the current time."""

    def __init__(self, rate: float, delete_share: float = 0.02) -> None:
        self.stand_in = JetstreamStandIn()
        self.url = self.stand_in.url
        self.rate = rate
        self._events = [json.loads(frame) for frame in make_frames(
            5_000, MATCH_SHARE, delete_share=delete_share)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if not self.rate:
            return
        sent, started = 0, time.monotonic()
        while not self._stop.wait(PUBLISH_SLICE):
            due = int((time.monotonic() - started) * self.rate)
            batch = []
            for n in range(sent, due):
                event = dict(self._events[n % len(self._events)])
                event["time_us"] = time.time_ns() // 1000
                if "commit" in event:  # a new post each time round: never a repeat
                    event["commit"] = {**event["commit"], "rkey": f"3k{n:012d}",
                                       "cid": f"bafyrei{n:012d}"}
                batch.append(event)
            sent = due
            self.stand_in.publish(*batch)  # it keeps them all: ~15 MB an hour at 50/s

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.stand_in.close()


def measure(row: Row, here: Path, page_url: str, warmup: float, seconds: float,
            master: str, project: Path) -> Result:
    """Both programs at ``row``'s load; the CPU they used over ``seconds`` after the
    first batch and ``warmup``."""
    result = Result(row)
    port, ack_port = free_port(), free_port()
    secret = ["--control-secret-file", str(here / "control.secret")]
    publisher = Publisher(row.rate, row.delete_share) if row.source == "bluesky" else None
    if publisher is not None:
        source = ["--source", "bluesky", "--jetstream-url", publisher.url]
    else:
        replay = here / "posts.jsonl"
        write_posts(replay, math.ceil(row.rate * (START_TIMEOUT + warmup + seconds + 120)))
        source = ["--source", "replay", "--replay-file", str(replay), "--rate", f"{row.rate:g}",
                  "--loop"]
    started: list[bool] = []
    batches: list[tuple[float, int]] = []  # (when read, lines)

    def on_producer_line(line: str) -> None:
        if "serving tweets on" in line:
            started.append(True)

    running: list[bool] = []

    def on_job_line(line: str) -> None:
        if (match := BATCH_LINE.search(line)) is not None:
            batches.append((time.monotonic(), int(match.group(1))))
        elif RUNNING_LINE in line:
            running.append(True)

    producer = Program("producer", "stream.py", [
        *source, "--host", "127.0.0.1", "--port", str(port), "--ack-port", str(ack_port),
        "--journal-path", str(here / "journal"), *secret], here, on_producer_line, project)
    job: Program | None = None
    try:
        if not producer.wait_until(lambda: bool(started), 60):
            result.error = f"stream.py did not start: {producer.last_lines()}"
            return result
        job = Program("job", "spark_streaming.py", [
            "--host", "127.0.0.1", "--port", str(port), "--ack-port", str(ack_port),
            "--batch-seconds", f"{row.batch_seconds:g}", "--master", master,
            "--worldometers-url", page_url, "--embedded-db-path", str(here / "db"),
            "--spool-path", str(here / "spool.jsonl"),
            "--quarantine-path", str(here / "quarantine.jsonl"), *secret,
            *(["--engine", row.engine, "--checkpoint-path", str(here / "checkpoint")]
              if row.engine != "dstream" else [])], here, on_job_line, project)
        idle_structured = row.engine == "structured" and not row.rate
        if not job.wait_until(lambda: bool(batches or (idle_structured and running)),
                              START_TIMEOUT):
            result.error = ("spark_streaming.py " + (
                f"exited (status {job.process.returncode})" if not job.running
                else f"stored no batch in {START_TIMEOUT:g} s") + f": {job.last_lines()}")
            return result
        log.info("%s: first batch; %g s warm-up, then %g s measured", row.key, warmup, seconds)
        time.sleep(warmup)
        meter = CpuMeter({"producer": producer.process.pid, "job": job.process.pid})
        jvm = jvm_pid(job.process.pid)
        threads_before = thread_cpu(jvm) if jvm else {}
        tasks_before = task_times(producer.process.pid)
        began = time.monotonic()
        meter.start()
        time.sleep(seconds)
        used = meter.stop()
        tasks = task_times(producer.process.pid)
        spent = {tid: (user - tasks_before[tid][0], system - tasks_before[tid][1])
                 for tid, (user, system) in tasks.items() if tid in tasks_before}
        result.producer_user = sum(user for user, _ in spent.values())
        result.producer_system = sum(system for _, system in spent.values())
        result.producer_threads = sorted((sum(pair) for pair in spent.values() if sum(pair)),
                                         reverse=True)
        if jvm:
            result.jvm_threads = {
                name: spent - threads_before.get(name, 0.0)
                for name, spent in thread_cpu(jvm).items()
                if spent - threads_before.get(name, 0.0) > 0}
        result.seconds = time.monotonic() - began
        result.load = os.getloadavg()[0]
        result.producer = sum(used["producer"].values())
        result.job = used["job"]
        window = [lines for at, lines in batches if began <= at <= began + result.seconds]
        result.batches, result.lines = len(window), sum(window)
        for program in (producer, job):
            if not program.running:
                result.error = (f"{program.name} exited (status "
                                f"{program.process.returncode}): {program.last_lines()}")
    finally:
        if job is not None:
            job.stop(row.batch_seconds * 3 + 60)
        producer.stop(60)
        if publisher is not None:
            publisher.close()
    return result


# --- the report ----------------------------------------------------------------------------


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def table(results: list[Result]) -> list[str]:
    """The cost table, Markdown."""
    lines = ["| load | producer: % of a core | µs/post | job: % of a core (driver / JVM / "
             "workers) | µs/post | both: % of a core | lines the job received | note |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if r.error and not r.seconds:
            lines.append(f"| {r.row.label} | - | - | - | - | - | - | failed: {r.error[:200]} |")
            continue
        parts = " / ".join(f"{r.pct(r.job.get(part, 0.0)):.1f}"
                           for part in ("driver", "jvm", "workers"))
        note = (f"other load ≈ {r.other_load:.1f} cores (loadavg {r.load:.1f})"
                if r.other_load > OTHER_LOAD_CORES else "")
        if r.error:
            note = (note + "; " if note else "") + f"failed: {r.error[:200]}"
        lines.append(
            f"| {r.row.label} | {r.pct(r.producer):.2f} | {_us(r.us_per_post(r.producer))} "
            f"| {r.pct(r.job_total):.2f} ({parts}) | {_us(r.us_per_post(r.job_total))} "
            f"| {r.pct(r.producer + r.job_total):.2f} | {r.lines:,} in {r.batches} batches "
            f"| {note} |")
    return lines


def targets(results: list[Result]) -> list[str]:
    """The cost targets, met or missed, for the rows measured."""
    found = {r.row.key: r for r in results if r.seconds}
    lines = ["| target | measured | |", "|---|---|---|"]

    def row(target: str, measured: str, ok: bool) -> None:
        lines.append(f"| {target} | {measured} | {'met' if ok else '**missed**'} |")

    if (r := found.get("replay-400")) is not None:
        us = r.us_per_post(r.producer) or math.inf
        row("producer at 400 posts/s (20 s batches) ≤ 2 % of a core, ≤ 50 µs a post",
            f"{r.pct(r.producer):.2f} %, {us:,.0f} µs", r.pct(r.producer) <= 2 and us <= 50)
    for key, engine in (("bluesky-50", ""), ("bluesky-50-structured", ", structured engine")):
        if (r := found.get(key)) is not None:
            both = r.pct(r.producer + r.job_total)
            row(f"both programs at 50 post events/s (1 in 50 matching), 20 s batches{engine} "
                "≤ 5 % of a core", f"{both:.2f} %", both <= 5)
    for key, engine, most in (("idle", "", 2.0), ("idle-structured", ", structured engine", 1.5)):
        if (r := found.get(key)) is not None:
            both = r.pct(r.producer + r.job_total)
            row(f"both programs idle{engine} ≤ {most:g} % of a core", f"{both:.2f} %",
                both <= most)
    return lines


def section(results: list[Result], seconds: float, warmup: float, master: str,
            project: Path) -> list[str]:
    where = "" if project == PROJECT else f", programs from `{project}`"
    return [
        COST_HEADING, "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')}: CPU time (user + system) of each "
        f"program's process tree over {seconds:g} s, after the job's first batch and a "
        f"{warmup:g} s warm-up; Spark master `{master}`{where}. µs/post: CPU per post offered "
        "(per post event for the Bluesky row, of which only the matching ones reach the job).",
        "", *table(results), "", *targets(results), "", *producer_profile(results),
        *jvm_profile(results)]


def producer_profile(results: list[Result]) -> list[str]:
    """Where each row's producer CPU went: user and system time (% of a core, and µs a
    post), and its threads, busiest first (% of a core; threads alive at both ends)."""
    rows = [r for r in results if r.seconds and r.producer_threads]
    if not rows:
        return []
    lines = ["Where the producer's CPU went (stream.py; % of a core, µs a post in brackets; "
             "its threads by id, busiest first):", "",
             "| load | user | system | threads |", "|---|---:|---:|---|"]
    for r in rows:
        user, system = r.producer_user, r.producer_system
        threads = ", ".join(f"{r.pct(spent):.2f}" for spent in r.producer_threads[:6])
        lines.append(f"| {r.row.label} | {r.pct(user):.2f} ({_us(r.us_per_post(user))}) "
                     f"| {r.pct(system):.2f} ({_us(r.us_per_post(system))}) | {threads} |")
    return [*lines, ""]


def jvm_profile(results: list[Result], top: int = 6) -> list[str]:
    """Where each row's JVM CPU went: its busiest kinds of thread (from /proc), as %
    of a core over the window."""
    rows = [r for r in results if r.jvm_threads and r.seconds]
    if not rows:
        return []
    lines = ["Where the JVM's CPU went (its threads by name, % of a core; threads alive "
             "at both ends of the window):", "",
             "| load | JVM | busiest threads |", "|---|---:|---|"]
    for r in rows:
        busiest = sorted(r.jvm_threads.items(), key=lambda item: -item[1])[:top]
        names = ", ".join(f"{name} {r.pct(spent):.2f}" for name, spent in busiest)
        lines.append(f"| {r.row.label} | {r.pct(r.job.get('jvm', 0.0)):.2f} | {names} |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60,
                        help="how long each row is measured (default 60)")
    parser.add_argument("--warmup", type=float, default=60,
                        help="seconds after the first batch before measuring (default 60: "
                             "the JVM's JIT compiler is busy for minutes after the start)")
    parser.add_argument("--rows", default=",".join(ROWS), type=lambda raw: raw.split(","),
                        help=f"any of {', '.join(ROWS)}")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--project", type=Path, default=PROJECT,
                        help="run this checkout's stream.py and spark_streaming.py")
    parser.add_argument("--output", type=Path, default=BENCH / "results.md")
    parser.add_argument("--workdir", type=Path,
                        help="keep the logs, journals and stores here (default: a temp dir)")
    args = parser.parse_args(argv)
    unknown = set(args.rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown row(s): {', '.join(sorted(unknown))}")
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be above 0 and --warmup at least 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s cost: %(message)s",
                        datefmt="%H:%M:%S")
    results = []
    page = PageServer()
    try:
        with tempfile.TemporaryDirectory(prefix="cost-") as tmp:
            for key in args.rows:
                here = (args.workdir or Path(tmp)) / key
                here.mkdir(parents=True, exist_ok=True)
                log.info("%s: %s", key, ROWS[key].label)
                results.append(measure(ROWS[key], here, page.url, args.warmup, args.seconds,
                                       args.master, args.project.resolve()))
                if results[-1].error:
                    log.error("%s: %s", key, results[-1].error)
    finally:
        page.close()
    lines = section(results, args.seconds, args.warmup, args.master, args.project.resolve())
    sys.stdout.write("\n".join(lines) + "\n")
    old = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    args.output.write_text(replace_section(old, COST_HEADING, lines), encoding="utf-8")
    log.info("wrote %s", args.output)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
