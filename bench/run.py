"""The benchmark (``make bench``): the bare Spark receiver vs the full pipeline.

Usage: python -m bench.run [--batch-seconds S] [--rates R,R,...] [--master M]
                           [--jobs bare,full,default] [--default-rates R,R,...]
                           [--skip-parse] [--no-profile] [--workdir DIR]
                           [--output bench/results.md]

1. Case-count parse on a full-size (~1 MB) page (bench.bigpage):
   ``scrape.parse_total_cases`` vs a full ``BeautifulSoup(html, "html.parser")``
   parse of the same bytes.
2. Spark jobs fed by the same generator (bench.producer: synthetic tweets
   through the real utility.TweetServer, with its journal and acknowledgements,
   on a real socket), one after the other, each in its own processes:
   (a) ``bare``: socketTextStream, each batch only counted (bench.job bare);
   (b) ``full``: spark_streaming.py's own main(), with the saved worldometers
       page served from 127.0.0.1 and the embedded store (bench.job full);
   both with --batch-seconds (2 s by default, so that a run stays short); and
   (c) ``default``: the full pipeline again with the default 20 s batches, at
       --default-rates, to show what the defaults sustain.
   The offered rate is stepped up; a step is *sustained* when Spark received
   what was offered, batches took less than the batch interval and the
   scheduling delay stayed flat (read from a StreamingListener). Stepping stops
   at the first step that is not. Per job: the highest sustained rate, batch
   processing time p50/p99, tweet-to-stored latency p50/p99 (each tweet
   carries its send time), time to the first stored batch, peak RSS and CPU
   per tweet of the producer and of Spark (driver, JVM, Python workers,
   sampled every 0.25 s). Then a py-spy profile of the full pipeline at its
   sustained rate.

Prints the comparison table and the targets, and writes them with the
machine's description, every step and bench/notes.md (where the time goes,
what was tried) to --output. About 6-7 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

PROJECT = Path(__file__).resolve().parents[1]
BENCH = PROJECT / "bench"
DEFAULT_RATES = (10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 60_000, 80_000, 100_000,
                 130_000)
LATENCY_RATE = 10_000  # the latency target is stated at this rate
RSS_RATE = 30_000  # the producer's memory target is stated at this rate
WARMUP_BATCHES = 1  # batches after a rate change that are not measured
MEASURED_BATCHES = 4
DEFAULT_CHECK_RATES = (5_000, 10_000)  # the run with the default (20 s) batch interval
DEFAULT_CHECK_BATCHES = 2
START_RATE = 1_000  # offered while the job starts
START_TIMEOUT = 120.0
MB = 1024 * 1024


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the machine --------------------------------------------------------------------


def machine() -> dict[str, str]:
    import bs4
    import pyspark

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    return {
        "cores": f"{os.cpu_count()} ({cpu})",
        "RAM": f"{psutil.virtual_memory().total / 1024**3:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Java": (java.stderr.splitlines() or ["?"])[0],
        "Spark (pyspark)": pyspark.__version__,
        "BeautifulSoup": bs4.__version__,
    }


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
    from bs4 import BeautifulSoup

    import scrape
    from bench.bigpage import CASES, build_page

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


# --- 2. the streaming benchmark -----------------------------------------------------------


class PageServer:
    """samples/ served from 127.0.0.1 (Last-Modified and 304s included)."""

    def __init__(self) -> None:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        handler = functools.partial(Quiet, directory=str(PROJECT / "samples"))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/worldometers.html"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class JsonLines:
    """A child process's JSON-lines stdout, collected by a thread."""

    def __init__(self, stream: TextIO) -> None:
        self.items: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            with self.changed:
                self.items.append(item)
                self.changed.notify_all()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.changed:
            return list(self.items)

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.items), timeout)


CATEGORIES = ("producer", "jvm", "driver", "workers")


@dataclass
class Sample:
    t: float
    rss: dict[str, int]  # bytes resident now, per category
    cpu: dict[str, float]  # CPU seconds used so far, per category (and "other")

    @property
    def spark_rss(self) -> int:
        return self.rss["jvm"] + self.rss["driver"] + self.rss["workers"]


class ProcessSampler:
    """Memory and CPU of the producer and of the job's process tree, every 0.25 s.

    Categories: the producer; Spark's JVM; the Python driver (the job process);
    the Python workers (every other process under the JVM). CPU time of
    processes that end is kept (counted per pid as it grows); "other" is the
    machine's CPU time used by processes outside both.
    """

    def __init__(self, producer_pid: int, job_pid: int) -> None:
        self.samples: list[Sample] = []
        self._producer = psutil.Process(producer_pid)
        self._job = psutil.Process(job_pid)
        self._seen: dict[int, float] = {}  # pid -> CPU seconds last read
        self._cpu = dict.fromkeys((*CATEGORIES, "other"), 0.0)
        self._machine_busy = self._busy()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

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
            ours += self._read(self._job, "driver", rss)
            try:
                children = self._job.children(recursive=True)
            except psutil.Error:
                children = []
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

    def peak(self, category: str, start: float = 0, end: float = float("inf")) -> int:
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


@dataclass
class Step:
    rate: int
    offered: float = 0.0  # tweets/s the producer actually offered while measured
    received: float = 0.0  # tweets/s Spark's receiver took (listener numRecords)
    processing_s: list[float] = field(default_factory=list)
    scheduling_s: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    producer_rss: int = 0
    spark_rss: int = 0
    refused: int = 0
    held_max: int = 0  # most tweets the producer held (waiting for an ack) while measured
    cpu_us_per_tweet: dict[str, float] = field(default_factory=dict)
    machine_cpu_share: float = 0.0  # of all cores, used by anything, while measured
    sustained: bool = False
    producer_limited: bool = False
    why: str = ""


@dataclass
class JobResult:
    name: str  # "bare", "full", ...; also the heading of its step table
    steps: list[Step] = field(default_factory=list)
    first_batch_s: float | None = None
    rss: ProcessSampler | None = None
    error: str = ""
    profiles: list[Profile] = field(default_factory=list)
    profile_rate: int | None = None

    @property
    def best(self) -> Step | None:
        sustained = [s for s in self.steps if s.sustained]
        return max(sustained, key=lambda s: s.rate) if sustained else None

    def step_at(self, rate: int) -> Step | None:
        return next((s for s in self.steps if s.rate == rate), None)


def evaluate(step: Step, interval: float) -> None:
    """Decide whether ``step`` was sustained, and why not."""
    problems = []
    if step.offered < 0.95 * step.rate:
        problems.append(f"producer offered only {step.offered:,.0f}/s")
    if step.received < 0.95 * step.offered:
        problems.append(f"received {step.received:,.0f}/s of {step.offered:,.0f}/s")
    if step.processing_s and statistics.median(step.processing_s) > interval:
        problems.append(f"batches take {statistics.median(step.processing_s):.2f} s "
                        f"> {interval:g} s")
    sched = step.scheduling_s
    if sched and (sched[-1] > interval or sched[-1] - sched[0] > interval / 2):
        problems.append(f"scheduling delay grows {sched[0]:.2f} -> {sched[-1]:.2f} s")
    if step.refused:
        problems.append(f"producer buffer full, {step.refused} refused")
    step.sustained = not problems
    step.why = "; ".join(problems)
    # Spark kept up (batches in time, no backlog) and only the producer could not
    # offer more: it was too slow, or its buffer of unacknowledged tweets was full
    # (then what it refused is missing from what Spark received, too)
    spark_kept_up = not any(p.startswith(("batches take", "scheduling delay"))
                            for p in problems)
    step.producer_limited = bool(problems) and spark_kept_up and (
        step.refused > 0 or all(p.startswith("producer offered") for p in problems))


def clean_env() -> dict[str, str]:
    """This environment without the project's own variables (as a fresh shell would be)."""
    import config

    ours = {option.env for option in config.OPTIONS.values()}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update(PYTHONPATH=str(PROJECT), PYTHONUNBUFFERED="1")
    return env


@dataclass
class Plan:
    """One job's run: its batch interval, the rates offered in turn, batches measured per step."""

    name: str
    kind: str  # "bare" or "full"
    interval: float
    rates: list[int]
    measured: int = MEASURED_BATCHES
    profile: bool = False


def run_job(plan: Plan, args: argparse.Namespace, page_url: str, workdir: Path) -> JobResult:
    kind = plan.kind
    result = JobResult(plan.name)
    interval = plan.interval
    port, ack_port = free_port(), free_port()
    here = workdir / plan.name  # each job's cwd (no .env there), logs, journal, store
    here.mkdir(parents=True, exist_ok=True)
    env = clean_env()
    producer = subprocess.Popen(
        [sys.executable, "-m", "bench.producer", "--port", str(port), "--ack-port",
         str(ack_port), "--journal", str(here / "journal")],
        cwd=here, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=(here / "producer.log").open("w"), text=True,
    )
    assert producer.stdin is not None and producer.stdout is not None
    status = JsonLines(producer.stdout)
    if not status.wait_for(bool, 30):
        result.error = f"the producer did not start (see {here}/producer.log)"
        producer.kill()
        return result
    source = status.snapshot()[0]["source"]

    def set_rate(rate: int | str) -> None:
        assert producer.stdin is not None
        producer.stdin.write(f"rate {rate}\n")
        producer.stdin.flush()

    set_rate(START_RATE)
    launched = time.time()
    if kind == "bare":
        job_cmd = [sys.executable, "-m", "bench.job", "bare", "--port", str(port),
                   "--ack-port", str(ack_port), "--ack-source", source,
                   "--batch-seconds", str(interval), "--master", args.master]
    else:
        job_cmd = [sys.executable, "-m", "bench.job", "full", "--",
                   "--host", "127.0.0.1", "--port", str(port), "--ack-port", str(ack_port),
                   "--batch-seconds", str(interval), "--master", args.master,
                   "--worldometer-url", page_url, "--embedded-db-path", str(here / "db"),
                   "--spool-path", str(here / "spool.jsonl"),
                   "--quarantine-path", str(here / "quarantine.jsonl")]
    job = subprocess.Popen(job_cmd, cwd=here, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=(here / "job.log").open("w"),
                           text=True)
    assert job.stdout is not None
    events = JsonLines(job.stdout)
    rss = result.rss = ProcessSampler(producer.pid, job.pid)
    first_event = "stored" if kind == "full" else "counted"

    def first_output(items: list[dict[str, Any]]) -> bool:
        return any(i["event"] == first_event and (i.get("tweets") or i.get("lines"))
                   for i in items)

    try:
        if not events.wait_for(first_output, START_TIMEOUT):
            result.error = f"no batch output within {START_TIMEOUT:g} s (see {here}/job.log)"
            return result
        first = next(i for i in events.snapshot() if first_output([i]))
        result.first_batch_s = first["t"] - launched
        log(f"{plan.name}: first batch out {result.first_batch_s:.1f} s after start")
        for rate in plan.rates:
            step = measure_step(rate, set_rate, events, status, rss, interval, plan.measured)
            result.steps.append(step)
            evaluate(step, interval)
            lat = percentile(step.latencies_s, 99)
            log(f"{plan.name}: {rate:>7,}/s offered {step.offered:>9,.0f} received "
                f"{step.received:>9,.0f} proc p50 "
                f"{statistics.median(step.processing_s or [0]):.2f} s sched "
                f"{step.scheduling_s[-1] if step.scheduling_s else 0:.2f} s"
                + (f" latency p99 {lat:.2f} s" if lat is not None else "")
                + ("  ok" if step.sustained else f"  NOT SUSTAINED: {step.why}"))
            if not step.sustained:
                break
        if plan.profile:
            profile_rate = result.best.rate if result.best else plan.rates[0]
            result.profile_rate = profile_rate
            set_rate(profile_rate)
            time.sleep(interval * 2)  # past the backlog of a failed step, if any
            targets = {"producer": (producer.pid, False), "driver": (job.pid, False)}
            daemon = spark_python_daemon(job.pid)
            if daemon is not None:
                targets["Python workers"] = (daemon, True)
            log(f"{plan.name}: profiling {', '.join(targets)} for {PROFILE_SECONDS} s "
                f"at {profile_rate:,}/s")
            result.profiles = profile_processes(targets, PROFILE_SECONDS, here)
    finally:
        set_rate(0)
        job.send_signal(signal.SIGTERM)  # as Ctrl-C: stop once the batch in flight is stored
        try:
            job.wait(interval * 3 + 45)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()
        with contextlib.suppress(OSError):
            producer.stdin.write("quit\n")
            producer.stdin.flush()
        try:
            producer.wait(15)
        except subprocess.TimeoutExpired:
            producer.kill()
            producer.wait()
        rss.stop()
    return result


def measure_step(rate: int, set_rate: Any, events: JsonLines, status: JsonLines,
                 rss: ProcessSampler, interval: float, wanted: int) -> Step:
    step = Step(rate)
    changed_at = time.time()
    set_rate(rate)
    # batches whose whole interval came after the change, past the warm-up ones
    first_ms = (changed_at + interval * WARMUP_BATCHES) * 1000

    def measured(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [i for i in items if i["event"] == "batch"
                and i["batch_ms"] - interval * 1000 >= first_ms]

    deadline = (WARMUP_BATCHES + wanted + 1) * interval * 2 + 15
    events.wait_for(lambda items: len(measured(items)) >= wanted, deadline)
    batches = measured(events.snapshot())[:wanted]
    if not batches:
        step.why = "no batch completed in time"
        return step
    window_start = batches[0]["batch_ms"] / 1000 - interval
    window_end = batches[-1]["batch_ms"] / 1000
    step.received = sum(b["records"] for b in batches) / (window_end - window_start)
    step.processing_s = [b["processing_delay_ms"] / 1000 for b in batches]
    step.scheduling_s = [b["scheduling_delay_ms"] / 1000 for b in batches]
    stats = status.snapshot()
    inside = [s for s in stats if window_start <= s["t"] <= window_end]
    if len(inside) >= 2:
        step.offered = ((inside[-1]["offered"] - inside[0]["offered"])
                        / (inside[-1]["t"] - inside[0]["t"]))
        step.refused = inside[-1]["refused"] - inside[0]["refused"]
        step.held_max = max(s["pending"] for s in inside)
    stored_by = {b["batch_ms"] for b in batches}
    for item in events.snapshot():
        if item["event"] == "stored" and item.get("document_id"):
            batch_ms = _batch_ms(item["document_id"])
            if batch_ms in stored_by:
                step.latencies_s.extend(ms / 1000 for ms in item["latencies_ms"])
    step.producer_rss = rss.peak("producer", changed_at)
    step.spark_rss = rss.peak("spark", changed_at)
    cpu = rss.cpu_between(window_start, window_end)
    tweets = step.received * (window_end - window_start)
    if cpu and tweets:
        step.cpu_us_per_tweet = {key: seconds / tweets * 1e6 for key, seconds in cpu.items()}
        step.machine_cpu_share = (sum(cpu.values())
                                  / ((window_end - window_start) * (os.cpu_count() or 1)))
    return step


def _batch_ms(document_id: str) -> int | None:
    """The batch time of a document ``_id`` like 2026-11-28T23:07:50.000Z (or -partN)."""
    from datetime import UTC, datetime

    try:
        moment = datetime.strptime(document_id[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    except ValueError:
        return None
    return round(moment.timestamp() * 1000)


# --- profiles (py-spy) ------------------------------------------------------------------


PROFILE_SECONDS = 10
PROFILE_TOP = 12


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    name: str
    busy_s: float  # CPU-busy samples, in seconds of the profile
    top: list[tuple[str, float]]  # (function, share of busy samples it or its callees used)
    error: str = ""


def summarize(path: Path, name: str, seconds: float) -> Profile:
    """Inclusive time per function from a py-spy speedscope file (idle samples excluded)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return Profile(name, 0.0, [], f"no profile ({err})")
    frames = data["shared"]["frames"]
    total = 0.0
    inclusive: dict[str, float] = {}
    for prof in data["profiles"]:
        for sample, weight in zip(prof["samples"], prof["weights"], strict=False):
            total += weight
            seen = set()
            for index in sample:
                frame = frames[index]
                key = f"{frame['name']} ({Path(frame.get('file') or '?').name})"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] = inclusive.get(key, 0.0) + weight
    if not total:
        return Profile(name, 0.0, [], "no busy samples")
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])
    top = [(key, value / total) for key, value in ranked
           if not _plumbing(key) and value / total >= 0.01][:PROFILE_TOP]
    return Profile(name, total / seconds, top)


#: Frames that only carry the work (thread and process entry points, Spark's and
#: py4j's dispatch loops), left out of the profile summaries.
PLUMBING_FILES = ("(threading.py)", "(<frozen runpy>)", "(daemon.py)", "(worker.py)",
                  "(clientserver.py)", "(java_gateway.py)", "(util.py)")


def _plumbing(key: str) -> bool:
    return key.endswith(PLUMBING_FILES) or key.startswith(("<module> ", "process "))


def profile_processes(targets: dict[str, tuple[int, bool]], seconds: float,
                      outdir: Path) -> list[Profile]:
    """py-spy on each ``name: (pid, with subprocesses)`` at once, for ``seconds``."""
    spy = py_spy()
    if spy is None:
        return [Profile(name, 0.0, [], "py-spy is not installed") for name in targets]
    running = {}
    for name, (pid, children) in targets.items():
        out = outdir / f"profile-{name}.json"
        cmd = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100",
               "-f", "speedscope", "-o", str(out), "--nonblocking"]
        if children:
            cmd.append("--subprocesses")
        running[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True), out)
    profiles = []
    for name, (process, out) in running.items():
        try:
            _, err = process.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            err = "py-spy did not finish"
        profile = summarize(out, name, seconds)
        if profile.error and err:
            profile.error += f": {err.strip().splitlines()[-1] if err.strip() else ''}"
        profiles.append(profile)
    return profiles


def spark_python_daemon(job_pid: int) -> int | None:
    """The pyspark.daemon under the job's JVM (it forks the Python workers)."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(job_pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "pyspark.daemon" in " ".join(child.cmdline()):
                    return child.pid
    return None


# --- the report ---------------------------------------------------------------------------


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_pair(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):.2f} / {percentile(values, 99):.2f}"


def fmt_mb(value: int) -> str:
    return f"{value / MB:,.0f}" if value else "-"


def results_table(bare: JobResult, full: JobResult, interval: float) -> list[str]:
    def best_rate(job: JobResult) -> int | None:
        return job.best.rate if job.best else None

    def limited(job: JobResult) -> bool:
        """True when the job kept up with everything the producer could offer."""
        failed = next((s for s in job.steps if not s.sustained), None)
        return bool(job.steps) and (failed is None or failed.producer_limited)

    def rate_cell(job: JobResult) -> str:
        best = best_rate(job)
        return ("≥ " if best and limited(job) else "") + fmt_rate(best)

    def ratio(a: float | None, b: float | None) -> str:
        if not (a and b):
            return "-"
        return ("≤ " if limited(bare) and not limited(full) else "") + f"{a / b:.0%}"

    def stopped(job: JobResult) -> str:
        if job.error:
            return job.error
        failed = next((s for s in job.steps if not s.sustained), None)
        if failed is None:
            return f"all steps up to {job.steps[-1].rate:,}/s sustained" if job.steps else "-"
        return f"{failed.rate:,}/s: {failed.why}"

    def at(job: JobResult, rate: int | None, attr: str) -> list[float]:
        step = job.step_at(rate) if rate else None
        return getattr(step, attr) if step else []

    rows = [
        "| | bare receiver | full pipeline | full / bare |",
        "|---|---:|---:|---:|",
        f"| sustained tweets/s (no growing backlog; ≥: the producer's limit) | "
        f"{rate_cell(bare)} | {rate_cell(full)} | {ratio(best_rate(full), best_rate(bare))} |",
        f"| first step not sustained | {stopped(bare)} | {stopped(full)} | |",
    ]
    bare_best, full_best = best_rate(bare), best_rate(full)
    rows += [
        f"| batch processing p50 / p99 at the sustained rate (s) | "
        f"{fmt_pair(at(bare, bare_best, 'processing_s'))} | "
        f"{fmt_pair(at(full, full_best, 'processing_s'))} | |",
        f"| batch processing p50 / p99 at {LATENCY_RATE:,}/s (s) | "
        f"{fmt_pair(at(bare, LATENCY_RATE, 'processing_s'))} | "
        f"{fmt_pair(at(full, LATENCY_RATE, 'processing_s'))} | |",
        f"| tweet-to-stored p50 / p99 at {LATENCY_RATE:,}/s (s) | - (stores nothing) | "
        f"{fmt_pair(at(full, LATENCY_RATE, 'latencies_s'))} | |",
        f"| tweet-to-stored p50 / p99 at the sustained rate (s) | - | "
        f"{fmt_pair(at(full, full_best, 'latencies_s'))} | |",
        f"| first batch out after the job's start (s) | "
        f"{bare.first_batch_s or 0:.1f} | {full.first_batch_s or 0:.1f} | |",
    ]
    for label, job_attr in (("peak RSS producer, whole run (MB)", "producer"),
                            ("peak RSS Spark: driver + JVM + workers (MB)", "spark"),
                            ("  of which JVM (MB)", "jvm"),
                            ("  of which Python driver (MB)", "driver"),
                            ("  of which Python workers (MB)", "workers")):
        values = [fmt_mb(job.rss.peak(job_attr)) if job.rss else "-" for job in (bare, full)]
        rows.append(f"| {label} | {values[0]} | {values[1]} | |")
    rows.append("| CPU µs per tweet at the sustained rate: producer / JVM / driver / "
                "workers (+ other processes on the machine) | "
                + " | ".join(fmt_cpu(job.best.cpu_us_per_tweet) if job.best else "-"
                             for job in (bare, full)) + " | |")
    producer_at = [job.step_at(RSS_RATE) for job in (bare, full)]
    rows.append(f"| peak RSS producer at {RSS_RATE:,}/s (MB) | "
                + " | ".join(fmt_mb(s.producer_rss) if s else "-" for s in producer_at)
                + " | |")
    return rows


def step_table(job: JobResult) -> list[str]:
    rows = [f"**{job.name}**" + (f" — {job.error}" if job.error else ""), "",
            "| offered (target) | offered | received | processing p50 / p99 (s) | "
            "scheduling delay first → last (s) | tweet-to-stored p50 / p99 (s) | "
            "tweets held by the producer (max) | producer / Spark RSS (MB) | "
            "CPU µs per tweet: producer / JVM / driver / workers (+ other processes) | "
            "machine CPU busy | sustained |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in job.steps:
        sched = (f"{s.scheduling_s[0]:.2f} → {s.scheduling_s[-1]:.2f}"
                 if s.scheduling_s else "-")
        rows.append(f"| {s.rate:,} | {s.offered:,.0f} | {s.received:,.0f} | "
                    f"{fmt_pair(s.processing_s)} | {sched} | {fmt_pair(s.latencies_s)} | "
                    f"{s.held_max:,} | {fmt_mb(s.producer_rss)} / {fmt_mb(s.spark_rss)} | "
                    f"{fmt_cpu(s.cpu_us_per_tweet)} | {s.machine_cpu_share:.0%} | "
                    f"{'yes' if s.sustained else 'no: ' + s.why} |")
    return rows


def fmt_cpu(per_tweet: dict[str, float]) -> str:
    if not per_tweet:
        return "-"
    ours = " / ".join(f"{per_tweet[key]:.1f}" for key in CATEGORIES)
    return f"{ours} (+{per_tweet['other']:.1f})"


def targets(bare: JobResult, full: JobResult, default: JobResult | None,
            parse_rows: list[dict[str, Any]], interval: float,
            default_interval: float) -> list[str]:
    """The issue's targets, each with what was measured and whether it is met."""

    def row(target: str, measured: str, ok: bool | None) -> str:
        verdict = "-" if ok is None else ("met" if ok else "**missed**")
        return f"| {target} | {measured} | {verdict} |"

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    def latency_row(job: JobResult, batch: float) -> str:
        step = job.step_at(LATENCY_RATE)
        p99 = percentile(step.latencies_s, 99) if step and step.sustained else None
        measured = seconds(p99) if step is None or step.sustained else (
            f"not sustained ({step.why})")
        ok = None if step is None else (p99 is not None and p99 <= batch + 2)
        return row(f"{batch:g} s batches: tweet-to-stored p99 ≤ batch interval + 2 s = "
                   f"{batch + 2:g} s at {LATENCY_RATE:,}/s", measured, ok)

    def first_row(job: JobResult, batch: float) -> str:
        first = job.first_batch_s
        return row(f"{batch:g} s batches: first batch stored ≤ batch interval + 15 s = "
                   f"{batch + 15:g} s after start", seconds(first),
                   None if first is None else first <= batch + 15)

    bare_best = bare.best.rate if bare.best else None
    full_best = full.best.rate if full.best else None
    ratio = full_best / bare_best if full_best and bare_best else None
    # the bare receiver kept up with all the producer could offer: its own limit is higher
    bare_limited = bool(bare.steps) and all(s.sustained or s.producer_limited
                                            for s in bare.steps)
    producer30 = max((s.producer_rss for j in (bare, full) if (s := j.step_at(RSS_RATE))),
                     default=0)
    parse_ratio = max((r["ratio"] for r in parse_rows), default=None)
    producer_text = "-"
    if producer30:
        where = [j.name for j in (bare, full) if j.step_at(RSS_RATE)]
        producer_text = f"{fmt_mb(producer30)} MB ({' and '.join(where)} run)"
        if full.steps and not full.step_at(RSS_RATE):
            top = max(full.steps, key=lambda s: s.rate)
            producer_text += (f"; the full run stopped before it: {fmt_mb(top.producer_rss)} "
                              f"MB at {top.rate:,}/s, holding {top.held_max:,} tweets")
    lines = [
        "| target | measured | |",
        "|---|---|---|",
        row("full pipeline ≥ 75 % of the bare receiver's sustained rate",
            "-" if ratio is None else f"{'≤ ' if bare_limited else ''}{ratio:.0%}",
            None if ratio is None else ratio >= 0.75),
        row("full pipeline ≥ 30,000 tweets/s sustained", fmt_rate(full_best),
            None if full_best is None else full_best >= 30_000),
        latency_row(full, interval),
        row(f"producer ≤ 150 MB RSS at {RSS_RATE:,}/s", producer_text,
            None if not producer30 else producer30 <= 150 * MB),
        first_row(full, interval),
    ]
    if default is not None:
        lines += [latency_row(default, default_interval), first_row(default, default_interval)]
    lines.append(row("case-count parse ≤ 1/5 of a full parse (1 MB page)",
                     "-" if parse_ratio is None else f"1/{1 / parse_ratio:,.0f}",
                     None if parse_ratio is None else parse_ratio <= 0.2))
    return lines


def parse_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| page (~1 MB, bench/bigpage.py) | bytes | full `BeautifulSoup(html, "
             "\"html.parser\")` (ms) | `scrape.parse_total_cases` (ms) | ratio |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['page']} | {row['bytes']:,} | {row['full_ms']:.1f} | "
                     f"{row['fast_ms']:.2f} | 1/{1 / row['ratio']:,.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-seconds", type=float, default=2.0)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)),
                        type=lambda raw: [int(r) for r in raw.split(",")])
    parser.add_argument("--default-rates", default=",".join(map(str, DEFAULT_CHECK_RATES)),
                        type=lambda raw: [int(r) for r in raw.split(",")],
                        help="rates for the run with the default batch interval")
    parser.add_argument("--jobs", default="bare,full,default",
                        type=lambda raw: raw.split(","),
                        help="bare, full (both with --batch-seconds), default (the full "
                             "pipeline with the default batch interval)")
    parser.add_argument("--skip-parse", action="store_true")
    parser.add_argument("--skip-sources", action="store_true",
                        help="skip the Bluesky source's frames-per-second measurement")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the py-spy profile of the full pipeline")
    parser.add_argument("--output", type=Path, default=BENCH / "results.md")
    parser.add_argument("--workdir", type=Path,
                        help="keep the processes' logs and the store here (default: a temp dir)")
    args = parser.parse_args(argv)

    import config

    default_interval = config.Settings().batch_seconds
    plans = {
        "bare": Plan("bare", "bare", args.batch_seconds, args.rates),
        "full": Plan("full", "full", args.batch_seconds, args.rates, profile=args.profile),
        "default": Plan(f"full, {default_interval:g} s batches", "full", default_interval,
                        args.default_rates, measured=DEFAULT_CHECK_BATCHES),
    }
    started = time.time()
    about = machine()
    parse_rows = [] if args.skip_parse else parse_bench()
    source_lines: list[str] = []
    if not args.skip_sources:
        from bench import bluesky

        log("Bluesky source: Jetstream frames -> wire tweets, one core")
        source_lines = bluesky.table()
        sys.stdout.write("\n".join(source_lines) + "\n\n")
    page = PageServer()
    jobs: dict[str, JobResult] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            workdir = args.workdir or Path(tmp)
            for key in args.jobs:
                plan = plans[key]
                log(f"{plan.name}: starting (batches of {plan.interval:g} s, {args.master})")
                jobs[key] = run_job(plan, args, page.url, workdir)
    finally:
        page.close()
    bare, full = jobs.get("bare", JobResult("bare")), jobs.get("full", JobResult("full"))
    default = jobs.get("default")
    table = results_table(bare, full, args.batch_seconds)
    checks = targets(bare, full, default, parse_rows, args.batch_seconds, default_interval)
    sys.stdout.write("\n".join(table) + "\n\n" + "\n".join(parse_table(parse_rows)) + "\n\n"
                     + "\n".join(checks) + "\n")
    write_report(args, about, table, checks, jobs, parse_rows, source_lines,
                 time.time() - started)
    log(f"done in {time.time() - started:.0f} s; wrote {args.output}")
    return 0


def write_report(args: argparse.Namespace, about: dict[str, str], table: list[str],
                 checks: list[str], jobs: dict[str, JobResult],
                 parse_rows: list[dict[str, Any]], source_lines: list[str],
                 took: float) -> None:
    notes = BENCH / "notes.md"
    full = jobs.get("full")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`python -m bench.run`) on "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, in {took:.0f} s. "
        "Absolute numbers are noisy on a shared 2-core machine (the \"other processes\" "
        "CPU column shows what else ran); compare within one run.",
        "",
        "## Machine",
        "",
        *(f"* {key}: {value}" for key, value in about.items()),
        f"* Spark master `{args.master}`; the two jobs compared use batches of "
        f"{args.batch_seconds:g} s and rate steps {', '.join(f'{r:,}' for r in args.rates)} "
        f"tweets/s ({WARMUP_BATCHES} warm-up + {MEASURED_BATCHES} measured batches each), "
        "stopping at the first step not sustained",
        "",
        "## Bare receiver vs full pipeline",
        "",
        *table,
        "",
        "## Targets",
        "",
        *checks,
        "",
        "## Case-count parse on a full-size page",
        "",
        *parse_table(parse_rows),
        "",
        "## The Bluesky source (`python -m bench.bluesky`)",
        "",
        *(source_lines or ["Skipped (--skip-sources)."]),
        "",
        "## Every step",
        "",
    ]
    for job in jobs.values():
        lines += [*step_table(job), ""]
    if full is not None and full.profiles:
        lines += [f"## Where the full pipeline's time goes (py-spy, {PROFILE_SECONDS} s at "
                  f"{full.profile_rate:,} tweets/s)", "",
                  "CPU-busy seconds per second of each Python process, and the share of those "
                  "samples spent in each function (callees included; entry frames left out).",
                  ""]
        for profile in full.profiles:
            if profile.error:
                lines += [f"* **{profile.name}**: {profile.error}", ""]
                continue
            top = "; ".join(f"{key} {share:.0%}" for key, share in profile.top)
            lines += [f"* **{profile.name}**, {profile.busy_s:.2f} CPU s/s: {top}", ""]
    if notes.exists():
        lines += [notes.read_text(encoding="utf-8").rstrip(), ""]
    args.output.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
