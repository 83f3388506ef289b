"""Measurement: a Spark job stepped through offered rates, and the held-backlog check.

:func:`run_job` starts a feeder (bench.load) and a job (bench.job), then
:func:`find_limit` offers rates in a coarse pass (each step ``factor`` times the
last) until one is not sustained, and a fine pass between the last sustained
step and it until they are at most 10 % apart. A step is *sustained* when
Spark received what was offered, batches took less than the batch interval
and the scheduling delay stayed flat (read from a StreamingListener). After a
step that was not, the feeder pauses until the job has caught up.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

import config
from bench.load import Feeder, JsonLines, clean_env
from bench.profiles import PROFILE_SECONDS, Profile, profile_processes, spark_python_daemon
from bench.steps import START_RATE, Plan, Step, evaluate, find_limit
from job import spark_setup

MB = 1024 * 1024
START_TIMEOUT = 120.0
RECOVER_TIMEOUT = 150.0
CATEGORIES = ("producer", "jvm", "driver", "workers")


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} bench: {message}\n")
    sys.stderr.flush()


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# --- memory and CPU of the processes --------------------------------------------------


@dataclass
class Sample:
    t: float
    rss: dict[str, int]  # bytes resident now, per category
    cpu: dict[str, float]  # CPU seconds used so far, per category (and "other")

    @property
    def spark_rss(self) -> int:
        return self.rss["jvm"] + self.rss["driver"] + self.rss["workers"]


class ProcessSampler:
    """Memory and CPU of the feeder and of the job's process tree, every 0.25 s.

    Categories: the feeder ("producer"); Spark's JVM; the Python driver (the
    job process); the Python workers (every other process under the job). CPU
    time of processes that end is kept (counted per pid as it grows); "other"
    is the machine's CPU time used by processes outside both. :meth:`watch_job`
    follows a restarted job.
    """

    def __init__(self, producer_pid: int, job_pid: int | None) -> None:
        self.samples: list[Sample] = []
        self._producer = psutil.Process(producer_pid)
        self._job = psutil.Process(job_pid) if job_pid else None
        self._seen: dict[int, float] = {}  # pid -> CPU seconds last read
        self._cpu = dict.fromkeys((*CATEGORIES, "other"), 0.0)
        self._machine_busy = self._busy()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch_job(self, job_pid: int | None) -> None:
        self._job = psutil.Process(job_pid) if job_pid else None

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return times.user + times.system + times.nice + getattr(times, "irq", 0) + getattr(
            times, "softirq", 0) + getattr(times, "steal", 0)

    def _read(self, process: psutil.Process, category: str, rss: dict[str, int]) -> float:
        try:
            with process.oneshot():
                memory = process.memory_info().rss
                times = process.cpu_times()
        except psutil.Error:
            return 0.0
        used = times.user + times.system
        grown = max(0.0, used - self._seen.get(process.pid, 0.0))
        self._seen[process.pid] = used
        rss[category] += memory
        self._cpu[category] += grown
        return grown

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            rss = dict.fromkeys(CATEGORIES, 0)
            ours = self._read(self._producer, "producer", rss)
            job = self._job
            children: list[psutil.Process] = []
            if job is not None:
                ours += self._read(job, "driver", rss)
                with contextlib.suppress(psutil.Error):
                    children = job.children(recursive=True)
            for child in children:
                try:
                    category = "jvm" if child.name() == "java" else "workers"
                except psutil.Error:
                    continue
                ours += self._read(child, category, rss)
            busy = self._busy()
            self._cpu["other"] += max(0.0, busy - self._machine_busy - ours)
            self._machine_busy = busy
            self.samples.append(Sample(time.time(), rss, dict(self._cpu)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def peak(self, category: str, start: float = 0, end: float = math.inf) -> int:
        """Peak RSS of a category ("spark" = JVM + driver + workers) between two times."""
        return max((s.spark_rss if category == "spark" else s.rss[category]
                    for s in self.samples if start <= s.t <= end), default=0)

    def cpu_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds per category used between two times (nearest samples)."""
        inside = [s for s in self.samples if start <= s.t <= end]
        if len(inside) < 2:
            return {}
        first, last = inside[0], inside[-1]
        return {key: last.cpu[key] - first.cpu[key] for key in last.cpu}


# --- the Spark job --------------------------------------------------------------------


class SparkJob:
    """bench.job (bare or full) reading ``feeder``'s port, as a child process in ``here``."""

    def __init__(self, kind: str, feeder: Feeder, interval: float, master: str,
                 page_url: str, here: Path, receiver_max_rate: int | None = None,
                 engine: str = "dstream") -> None:
        self.kind = kind
        self.interval = interval
        self.engine = engine
        if kind == "bare":
            cmd = [sys.executable, "-m", "bench.job", "bare", "--port", str(feeder.port),
                   "--batch-seconds", str(interval), "--master", master]
            if feeder.ack_port is not None:
                cmd += ["--ack-port", str(feeder.ack_port), "--ack-source", feeder.source]
        else:
            cmd = [sys.executable, "-m", "bench.job", "full", "--",
                   "--host", "127.0.0.1", "--port", str(feeder.port),
                   "--ack-port", str(feeder.ack_port), "--batch-seconds", str(interval),
                   "--master", master, "--worldometers-url", page_url,
                   "--embedded-db-path", str(here / "db"),
                   "--spool-path", str(here / "spool.jsonl"),
                   "--quarantine-path", str(here / "quarantine.jsonl"),
                   "--engine", engine, "--checkpoint-path", str(here / "checkpoint")]
        if receiver_max_rate is not None:
            cmd.append(f"--receiver-max-rate={receiver_max_rate}")
        self.log_path = here / "job.log"
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.launched = time.time()
        self.process = subprocess.Popen(cmd, cwd=here, env=clean_env(),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=(here / "job.log").open("a"), text=True)
        assert self.process.stdout is not None
        self.events = JsonLines(self.process.stdout)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _output(self, item: dict[str, Any]) -> bool:
        if self.kind == "full":
            return item["event"] == "stored" and bool(item.get("tweets"))
        return item["event"] == "counted" and bool(item.get("lines"))

    def first_output(self, timeout: float = START_TIMEOUT) -> float | None:
        """Seconds from the launch to the first batch stored (full) or counted (bare)."""
        if not self.events.wait_for(lambda items: any(map(self._output, items)), timeout):
            return None
        first = next(i for i in self.events.snapshot() if self._output(i))
        return first["t"] - self.launched

    def stuck(self, since: float) -> bool:
        """No batch completed for three intervals + 6 s after ``since`` (or the last
        batch after it): the job died or hangs (its JVM out of heap, say)."""
        last = max((i["t"] for i in self.events.snapshot() if i["event"] == "batch"),
                   default=since)
        return time.time() - max(since, last) > self.interval * 3 + 6

    def log_has(self, needle: str) -> bool:
        """True when this launch's part of job.log holds ``needle``."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self._log_start)
                return needle.encode() in log_file.read()
        except OSError:
            return False

    def why_stuck(self) -> str:
        if self.log_has("OutOfMemoryError"):
            return "the JVM ran out of heap (OutOfMemoryError in job.log)"
        if self.process.poll() is not None:
            return f"no batch completed: the job exited with status {self.process.returncode}"
        return "no batch completed in time"

    def stop(self) -> None:
        """As Ctrl-C: stop once the batch in flight is stored."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(self.interval * 3 + 45)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the job and everything under it (its JVM, the Python workers)."""
        with contextlib.suppress(psutil.Error):
            tree = [psutil.Process(self.pid), *psutil.Process(self.pid).children(recursive=True)]
            for process in tree:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            psutil.wait_procs(tree, timeout=30)
        self.process.wait()


# --- steps ------------------------------------------------------------------------------


@dataclass
class JobResult:
    plan: Plan
    steps: list[Step] = field(default_factory=list)
    first_batch_s: float | None = None
    sampler: ProcessSampler | None = None
    error: str = ""
    profiles: list[Profile] = field(default_factory=list)
    profile_rate: int | None = None

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def best(self) -> Step | None:
        sustained = [s for s in self.steps if s.sustained]
        return max(sustained, key=lambda s: s.rate) if sustained else None

    @property
    def first_failed(self) -> Step | None:
        """The lowest rate that was not sustained."""
        failed = [s for s in self.steps if not s.sustained]
        return min(failed, key=lambda s: s.rate) if failed else None

    @property
    def feeder_limited(self) -> bool:
        """True when every step that failed failed only because the feeder could not
        offer more: the job's own limit is higher than its best step."""
        return bool(self.steps) and all(s.sustained or s.producer_limited for s in self.steps)

    def step_at(self, rate: int) -> Step | None:
        return next((s for s in self.steps if s.rate == rate), None)


def measure_step(rate: int, feeder: Feeder, job: SparkJob, sampler: ProcessSampler,
                 plan: Plan) -> Step:
    """Offer ``rate`` from the next batch boundary on; measure ``plan.measured`` batches
    after ``plan.warmup`` batches."""
    interval = plan.interval
    step = Step(rate)
    # Spark's batch times are multiples of the interval: change at one, so that
    # the batches measured hold only this rate's tweets
    boundary = math.ceil(time.time() / interval) * interval
    time.sleep(max(0.0, boundary - time.time()))
    changed_at = time.time()
    feeder.set_rate(rate)
    first_start = changed_at + interval * plan.warmup - 0.5

    def measured(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [i for i in items if i["event"] == "batch"
                and i["batch_ms"] / 1000 - interval >= first_start]

    deadline = time.time() + (plan.warmup + plan.measured + 1) * interval * 2 + 15
    while (not job.events.wait_for(lambda items: len(measured(items)) >= plan.measured, 1.0)
           and time.time() < deadline and not job.stuck(changed_at)):
        pass
    batches = measured(job.events.snapshot())[:plan.measured]
    if len(batches) < plan.measured:
        step.why = job.why_stuck()
        step.job_failed = True
        return step
    window_start = batches[0]["batch_ms"] / 1000 - interval
    window_end = batches[-1]["batch_ms"] / 1000
    step.received = sum(b["records"] for b in batches) / (window_end - window_start)
    if step.received == 0 and job.log_has("OutOfMemoryError"):
        step.why = job.why_stuck()  # batches go on, empty: the receiver died with the heap
        step.job_failed = True
        return step
    step.processing_s = [b["processing_delay_ms"] / 1000 for b in batches]
    step.scheduling_s = [b["scheduling_delay_ms"] / 1000 for b in batches]
    inside = [s for s in feeder.status.snapshot() if window_start <= s["t"] <= window_end]
    if len(inside) >= 2:
        span = inside[-1]["t"] - inside[0]["t"]
        step.offered = (inside[-1]["offered"] - inside[0]["offered"]) / span
        step.sent = (inside[-1]["sent"] - inside[0]["sent"]) / span
        step.refused = inside[-1]["refused"] - inside[0]["refused"]
        step.held_max = max(s["pending"] for s in inside)
        if "blocked" in inside[-1]:
            step.blocked_share = min(1.0, (inside[-1]["blocked"] - inside[0]["blocked"]) / span)
    stored_by = {b["batch_ms"] for b in batches}
    stored = set()
    for item in job.events.snapshot():
        if (item["event"] == "stored" and item.get("document_id")
                and _batch_ms(item["document_id"]) in stored_by):
            stored.add(_batch_ms(item["document_id"]))
            step.latencies_s.extend(ms / 1000 for ms in item["latencies_ms"])
    if job.kind == "full":
        step.unstored = sum(1 for b in batches if b["records"] and b["batch_ms"] not in stored)
    step.producer_rss = sampler.peak("producer", changed_at)
    step.spark_rss = sampler.peak("spark", changed_at)
    cpu = sampler.cpu_between(window_start, window_end)
    tweets = step.received * (window_end - window_start)
    if cpu and tweets:
        step.cpu_us_per_tweet = {key: seconds / tweets * 1e6 for key, seconds in cpu.items()}
        step.machine_cpu_share = (sum(cpu.values())
                                  / ((window_end - window_start) * (os.cpu_count() or 1)))
    max_rate = plan.receiver_max_rate
    if max_rate is None:  # the product's default
        max_rate = spark_setup.receiver_rate(config.Settings().receiver_max_rate, interval)
    evaluate(step, interval, max_rate)
    return step


def recover(feeder: Feeder, job: SparkJob, interval: float) -> bool:
    """Pause the feeder until the job has caught up: a batch completed with little
    scheduling delay (DStreams: the structured engine runs none without posts), and the
    producer holds nothing. False after RECOVER_TIMEOUT."""
    feeder.set_rate(0)
    paused = time.time()

    def caught_up(items: list[dict[str, Any]]) -> bool:
        return any(i["event"] == "batch" and i["batch_ms"] / 1000 > paused + interval
                   and i["scheduling_delay_ms"] < interval * 500 for i in items)

    # the structured engine runs no batch while nothing comes: the producer holding
    # nothing is the sign (it is acknowledged once Spark has committed a batch)
    if job.engine == "dstream" and not job.events.wait_for(caught_up, RECOVER_TIMEOUT):
        return False
    return feeder.status.wait_for(
        lambda items: bool(items) and items[-1]["pending"] == 0 and items[-1]["t"] > paused,
        max(1.0, RECOVER_TIMEOUT - (time.time() - paused)))


def run_job(plan: Plan, master: str, page_url: str, workdir: Path) -> JobResult:
    """Start ``plan``'s feeder and job, find its limit, profile it if asked, stop both."""
    result = JobResult(plan)
    here = workdir / plan.name.replace(" ", "-").replace(",", "")
    here.mkdir(parents=True, exist_ok=True)
    try:
        feeder = Feeder(plan.feeder, here)
    except RuntimeError as err:
        result.error = str(err)
        return result
    feeder.set_rate(START_RATE)

    def start_job() -> SparkJob:
        return SparkJob(plan.kind, feeder, plan.interval, master, page_url, here,
                        plan.receiver_max_rate, plan.engine)

    job = start_job()
    sampler = result.sampler = ProcessSampler(feeder.pid, job.pid)
    try:
        result.first_batch_s = job.first_output()
        if result.first_batch_s is None:
            result.error = f"no batch output within {START_TIMEOUT:g} s (see {job.log_path})"
            return result
        log(f"{plan.name}: first batch out {result.first_batch_s:.1f} s after start")

        def try_rate(rate: int, fine: bool) -> Step:
            nonlocal job
            previous = result.steps[-1] if result.steps else None
            if previous is not None and previous.job_failed:
                log(f"{plan.name}: restarting the job ({previous.why})")
                feeder.set_rate(0)
                job.kill()
                job = start_job()
                sampler.watch_job(job.pid)
                feeder.set_rate(START_RATE)
                job.first_output()
            elif (previous is not None and not previous.sustained
                    and not recover(feeder, job, plan.interval)):
                log(f"{plan.name}: did not catch up within {RECOVER_TIMEOUT:g} s")
            step = measure_step(rate, feeder, job, sampler, plan)
            step.fine = fine
            result.steps.append(step)
            lat = percentile(step.latencies_s, 99)
            log(f"{plan.name}: {'fine ' if fine else ''}{rate:>7,}/s offered "
                f"{step.offered:>9,.0f} received {step.received:>9,.0f} proc p50 "
                f"{statistics.median(step.processing_s or [0]):.2f} s sched "
                f"{step.scheduling_s[-1] if step.scheduling_s else 0:.2f} s"
                + (f" latency p99 {lat:.2f} s" if lat is not None else "")
                + ("  ok" if step.sustained else f"  NOT SUSTAINED: {step.why}"))
            return step

        find_limit(try_rate, plan)
        if plan.profile:
            profile_rate = result.best.rate if result.best else plan.start
            result.profile_rate = profile_rate
            if result.steps and not result.steps[-1].sustained:
                recover(feeder, job, plan.interval)
            feeder.set_rate(profile_rate)
            time.sleep(plan.interval * 2)
            targets = {"producer": (feeder.pid, False), "driver": (job.pid, False)}
            daemon = spark_python_daemon(job.pid)
            if daemon is not None:
                targets["Python workers"] = (daemon, True)
            log(f"{plan.name}: profiling {', '.join(targets)} for {PROFILE_SECONDS} s "
                f"at {profile_rate:,}/s")
            result.profiles = profile_processes(targets, PROFILE_SECONDS, here)
    finally:
        feeder.set_rate(0)
        job.stop()
        feeder.close()
        sampler.stop()
    return result


def _batch_ms(document_id: str) -> int | None:
    """The batch time of a document ``_id`` like 2026-11-28T23:07:50.000Z (or #2)."""
    try:
        moment = datetime.strptime(document_id[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    except ValueError:
        return None
    return round(moment.timestamp() * 1000)
