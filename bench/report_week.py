"""How long ``report.py plot`` takes on a week of stored batches (not a test).

Usage: python -m bench.report_week [--days 7] [--tweets 1500000] [--texts unique|pooled]
                                   [--post-fields] [--commands plot,csv,parquet]
                                   [--store DIR] [--baseline GIT_REF] [--repeat N]
                                   [--profile N]

1. Builds a week of 20 s batches (30,240 documents, ~1.5 M tweets) in an
   embedded store (MontyDB, SQLite) in a temporary folder, or in ``--store DIR``
   (reused as it is when it already holds documents, since building takes a
   few minutes). Each text is one of bench.tweets' synthetic tweets (eight
   languages, hashtags, mentions, links, emoji) cleaned by
   ``transform.clean_text``, with 2-12 words of a Zipf-distributed vocabulary
   (common English words, then made-up ones) around it, so that texts are unique
   and the number of distinct words grows as in real posts (~120 characters a
   text); with ``--texts pooled``, drawn from a pool of synthetic tweets instead,
   like a replayed sample file (fewer distinct words, less to count). The volume
   follows a daily cycle. Every document has
   ``total_case_count``, ``case_count_as_of`` and ``case_count_source``: WHO's
   weekly figure, which changes once in the week, after a first hour without any
   count. With ``--post-fields``, every document also has ``posts`` (id, created_at,
   lang, url: what POST_FIELDS=id,created_at,lang,url stores).
2. Times ``python report.py plot --embedded-db-path <store> --out <dir>/week.png``
   as a subprocess, end to end (start-up, reading, counting, drawing), ``--repeat``
   times, and samples its memory (psutil, every 50 ms): the peak RSS of the
   ``report.py`` process and the peak of its RSS summed with its word-counting
   workers'. With ``--baseline REF`` also the ``report.py`` (and ``analysis/``,
   the whole tree) of that git commit (e.g. ``HEAD``), run the same way against
   the same store, for a before/after. Runs alternate between the versions, so
   that both see the same machine load. Targets: a week in at most 10 s, at most
   300 MB peak RSS. ``--commands`` times ``export --format csv`` and/or
   ``export --format parquet`` (to a file) the same way, instead of or besides ``plot``.
3. With ``--profile N``, runs each version once more under cProfile and prints
   its N most expensive functions (own time, then cumulative); cProfile sees the
   main process only, so words counted by worker processes show as waiting.

Prints where the PNG(s) are; look at them.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import psutil

import config
import storage
import transform
from bench.week_texts import (
    BATCH_SECONDS,
    POOL_SIZE,
    SEED,
    START,
    pooled_texts,
    tweet_texts,
    tweets_per_batch,
)

PROJECT = Path(__file__).resolve().parents[1]
CHUNK = 500  # documents per insert_many
# WHO's world total (docs/design.md): the file changes in bursts; one update mid-week
WHO_COUNTS = ((778_041_233, datetime(2026, 11, 15, tzinfo=UTC)),
              (778_052_871, datetime(2026, 11, 22, tzinfo=UTC)))
WHO_UPDATE_AT = timedelta(days=3, hours=14, minutes=7)  # when the job saw the new file
NO_COUNT_UNTIL = timedelta(hours=1)  # the first fetches failed
STORE_ENV = ("MONGODB_URI", "MONGODB_DATABASE", "MONGODB_COLLECTION", "EMBEDDED_DB_PATH")
TARGET_SECONDS = 10.0  # a week
TARGET_RSS_MB = 300.0
SAMPLE_EVERY = 0.05  # seconds between memory samples

log = logging.getLogger("bench.report_week")


def case_count(offset: timedelta) -> tuple[int | None, datetime | None, str | None]:
    if offset < NO_COUNT_UNTIL:
        return None, None, None
    count, as_of = WHO_COUNTS[0] if offset < WHO_UPDATE_AT else WHO_COUNTS[1]
    return count, as_of, "who"


POST_LANGS = ("en",) * 12 + ("pt",) * 3 + ("es", "ja", "de", "fr") + (None,)


def week_posts(offset: timedelta, first: int, size: int, rng: np.random.Generator
               ) -> list[dict[str, Any]]:
    """The posts of one batch, as POST_FIELDS=id,created_at,lang,url stores them."""
    langs = rng.integers(0, len(POST_LANGS), size=size).tolist()
    lags = rng.integers(200, 20_000, size=size).tolist()  # ms before the batch
    posts = []
    for n, (lang, lag) in enumerate(zip(langs, lags, strict=True), start=first):
        did, rkey = f"did:plc:{n % 50_000:024d}", f"3m{n:011d}"
        posts.append({"id": f"at://{did}/app.bsky.feed.post/{rkey}",
                      "created_at": START + offset - timedelta(milliseconds=lag),
                      "lang": POST_LANGS[lang],
                      "url": f"https://bsky.app/profile/{did}/post/{rkey}"})
    return posts


def week_documents(days: float, total_tweets: int, texts_kind: str = "unique",
                   post_fields: bool = False) -> Iterator[dict[str, Any]]:
    """The documents of ``days`` of 20 s batches, oldest first, as the job stores them."""
    rng = np.random.default_rng(SEED)
    batches = round(days * 86_400 / BATCH_SECONDS)
    sizes = tweets_per_batch(batches, total_tweets, rng).tolist()
    make = tweet_texts if texts_kind == "unique" else pooled_texts
    texts = make(sum(sizes), rng)
    for i, size in enumerate(sizes):
        offset = timedelta(seconds=i * BATCH_SECONDS)
        count, as_of, source = case_count(offset)
        posts = week_posts(offset, i * 100_000, size, rng) if post_fields else None
        document = transform.build_document(START + offset, list(islice(texts, size)), count,
                                            posts=posts)
        document["case_count_as_of"] = as_of
        document["case_count_source"] = source
        yield document


def build_store(path: Path, days: float, total_tweets: int, texts_kind: str = "unique",
                post_fields: bool = False) -> tuple[int, int]:
    """Fill the embedded store at ``path``; (documents, tweets). Reuses a filled one."""
    store = storage.open_store(config.Settings(embedded_db_path=path))
    try:
        existing = store.collection.count_documents({})
        if existing:
            log.info("reusing the %d documents already in %s", existing, path)
            tweets = sum(len(d.get("content") or ())
                         for d in store.collection.find({}, {"content": 1}))
            return existing, tweets
        started = time.perf_counter()
        documents = tweets = 0
        chunk: list[dict[str, Any]] = []
        for document in week_documents(days, total_tweets, texts_kind, post_fields):
            chunk.append(document)
            tweets += len(document["content"])
            if len(chunk) == CHUNK:
                store.collection.insert_many(chunk)
                documents += len(chunk)
                chunk = []
                if documents % 5_000 == 0:
                    log.info("  %d documents stored", documents)
        if chunk:
            store.collection.insert_many(chunk)
            documents += len(chunk)
        log.info("built %s: %d documents, %d tweets in %.0f s", path, documents, tweets,
                 time.perf_counter() - started)
        return documents, tweets
    finally:
        store.close()


def baseline_script(ref: str, folder: Path) -> Path:
    """``report.py`` as it was at git ``ref``, with the whole tree it imports
    (``analysis/``, ``storage.py``, ...), written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=PROJECT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "report.py"


@dataclass(frozen=True)
class Run:
    """One ``report.py plot`` run: seconds end to end, the peak RSS of the report
    process and the peak of its RSS plus its children's (word workers), in MB, and
    the CPU seconds (user + system) of all of them: what a loaded machine does not
    change much, unlike the time."""

    seconds: float
    peak_mb: float
    peak_tree_mb: float
    cpu_seconds: float = 0.0


def _watch_memory(pid: int, done: threading.Event, peaks: list[float]) -> None:
    """Sample ``pid``'s RSS and its descendants' until ``done``: peaks = [own, tree]."""
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not done.is_set():
        try:
            own = process.memory_info().rss
            tree = own
            for child in process.children(recursive=True):
                try:
                    tree += child.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
        except psutil.NoSuchProcess:
            return
        peaks[0] = max(peaks[0], own / 2**20)
        peaks[1] = max(peaks[1], tree / 2**20)
        done.wait(SAMPLE_EVERY)


#: What each of --commands runs (report.py's arguments before --out FILE) and its file.
COMMANDS = {"plot": (("plot",), "png"), "csv": (("export", "--format", "csv"), "csv"),
            "parquet": (("export", "--format", "parquet"), "parquet")}


def run_plot(script: Path, store: Path, out: Path, workdir: Path,
             profile_to: Path | None = None, command: str = "plot",
             arguments: tuple[str, ...] | None = None) -> Run:
    """One ``report.py plot`` (or another of COMMANDS; or ``arguments``, report.py's
    arguments before ``--embedded-db-path``) run as a subprocess (start-up included),
    timed and sampled."""
    env = {k: v for k, v in os.environ.items() if k not in STORE_ENV}
    env["PYTHONPATH"] = str(script.parent)  # the version's own modules
    profile = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
    command_line = [sys.executable, *profile, str(script),
                    *(COMMANDS[command][0] if arguments is None else arguments),
                    "--embedded-db-path", str(store), "--out", str(out)]
    peaks = [0.0, 0.0]
    done = threading.Event()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command_line, cwd=workdir, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    watcher = threading.Thread(target=_watch_memory, args=(process.pid, done, peaks),
                               daemon=True)
    watcher.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise RuntimeError(f"{script} failed ({process.returncode}):\n{stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(seconds, peaks[0], peaks[1], cpu)


def top_functions(profile: Path, n: int) -> str:
    buffer = io.StringIO()
    stats = pstats.Stats(str(profile), stream=buffer)
    stats.strip_dirs().sort_stats("tottime").print_stats(n)
    stats.sort_stats("cumulative").print_stats(n)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--tweets", type=int, default=1_500_000,
                        help="about how many tweets in all (default: 1,500,000)")
    parser.add_argument("--texts", choices=("unique", "pooled"), default="unique",
                        help="unique texts with a realistic vocabulary (default), or texts "
                             f"drawn from {POOL_SIZE:,} synthetic tweets, like a replayed "
                             "sample file")
    parser.add_argument("--post-fields", action="store_true",
                        help="documents with posts (id, created_at, lang, url), as "
                             "POST_FIELDS stores them")
    parser.add_argument("--commands", default="plot",
                        type=lambda raw: [c.strip() for c in raw.split(",") if c.strip()],
                        help="what to time, a comma list of plot, csv (export --format csv) "
                             "and parquet (export --format parquet) (default: plot)")
    parser.add_argument("--store", type=Path,
                        help="the embedded store's folder (kept; reused when filled)")
    parser.add_argument("--baseline", metavar="GIT_REF",
                        help="also time report.py as it was at this commit, e.g. HEAD")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per version")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N most expensive functions of each version")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")

    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    unknown = sorted(set(args.commands) - set(COMMANDS))
    if unknown or not args.commands:
        parser.error(f"--commands: use plot, csv and/or parquet, not {', '.join(unknown)}")
    workdir = Path(tempfile.mkdtemp(prefix="report-week-"))
    store = args.store or workdir / "db"
    try:
        documents, tweets = build_store(store, args.days, args.tweets, args.texts,
                                        args.post_fields)
        log.info("store %s: %s documents, %s tweets", store, f"{documents:,}", f"{tweets:,}")
        time_versions(args, store, workdir, documents, tweets)
    finally:
        if args.store is None:  # a temporary store: a few hundred MB
            shutil.rmtree(store, ignore_errors=True)
    return 0


def time_versions(args: argparse.Namespace, store: Path, workdir: Path, documents: int,
                  tweets: int) -> None:
    """Time each of ``args.commands`` (and the baseline's) on ``store``; log the results."""

    versions = {"current": PROJECT / "report.py"}
    if args.baseline:
        versions[f"baseline ({args.baseline})"] = baseline_script(args.baseline,
                                                                   workdir / "baseline")
    runs_of = [(name, command) for command in args.commands for name in versions]
    results: dict[tuple[str, str], list[Run]] = {key: [] for key in runs_of}
    outputs = {(name, command): workdir / f"week-{number}.{COMMANDS[command][1]}"
               for number, (name, command) in enumerate(runs_of)}
    for _ in range(args.repeat):  # alternate, so that all see the same machine load
        for name, command in runs_of:
            run = run_plot(versions[name], store, outputs[name, command], workdir,
                           command=command)
            results[name, command].append(run)
            log.info("%s %s: %.1f s (%.1f CPU s), peak RSS %.0f MB (%.0f MB with its "
                     "workers) (load average %.2f)", name, command, run.seconds,
                     run.cpu_seconds, run.peak_mb, run.peak_tree_mb, os.getloadavg()[0])
    if args.profile:
        for number, (name, script) in enumerate(versions.items()):
            profile = workdir / f"week-{number}.prof"
            run_plot(script, store, workdir / f"week-{number}-profiled.png", workdir, profile)
            log.info("profile of %s (this process only; worker processes show as "
                     "waiting):\n%s", name, top_functions(profile, args.profile))
    for (name, command), runs in results.items():
        seconds = statistics.median(r.seconds for r in runs)
        peak = max(r.peak_mb for r in runs)
        out = outputs[name, command]
        size = f", {out.stat().st_size / 2**20:.0f} MB" if out.exists() else ""
        log.info("report.py %s, %s documents, %s tweets, %s: median %.1f s of %s (CPU "
                 "%.1f s); peak RSS %.0f MB (%.0f MB with its workers); wrote %s%s",
                 " ".join(COMMANDS[command][0]), f"{documents:,}", f"{tweets:,}", name,
                 seconds, ", ".join(f"{r.seconds:.1f}" for r in runs),
                 statistics.median(r.cpu_seconds for r in runs), peak,
                 max(r.peak_tree_mb for r in runs), out, size)
        if args.days >= 7 and command == "plot":
            log.info("  targets for a week: <= %.0f s (%s), <= %.0f MB peak RSS (%s)",
                     TARGET_SECONDS, "met" if seconds <= TARGET_SECONDS else "NOT met",
                     TARGET_RSS_MB, "met" if peak <= TARGET_RSS_MB else "NOT met")


if __name__ == "__main__":
    sys.exit(main())
