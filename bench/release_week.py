"""How long ``report.py release`` takes on a week of stored batches, and its peak
memory (not a test).

Usage: python -m bench.release_week [--store DIR] [--repeat N] [--profile N]

1. Builds the week of ``bench.report_week`` (30,240 documents of 20 s batches,
   ~1.5 M posts, realistic mostly unique texts) with post fields (id,
   created_at, lang, url) in an embedded store in a temporary folder, or in
   ``--store DIR`` (reused when it already holds documents), and WHO's case series
   beside it: 240 countries a day from 35 days before the week to its end, read
   in two files, the second revising a few rows.
2. Runs ``python report.py release --since 2026-11-23 --until 2026-11-30 --out
   <new folder>`` as a subprocess ``--repeat`` times (2 by default), sampling the
   memory of the process (psutil, every 50 ms): the time, the CPU time and the
   peak RSS of each run. Targets for a week: at most 60 s and 500 MB peak RSS.
3. Compares the releases: every file byte for byte, but for DATASET.md's "generated
   at" line (and SHA256SUMS, which covers it).
4. With ``--profile N``, runs once more under cProfile and prints the N most
   expensive functions.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

import config
import storage
from bench.report_week import (
    PROJECT,
    START,
    Run,
    build_store,
    run_plot,
    top_functions,
)
from counts.fetch import Validators
from counts.series import CaseFile, CaseRow
from storage import case_series

DAYS = 7
TWEETS = 1_500_000
TARGET_SECONDS = 60.0
TARGET_RSS_MB = 500.0
COUNTRIES = 240
SERIES_DAYS_BEFORE = 35
REVISED = 5  # rows the second file revises

log = logging.getLogger("bench.release_week")


def case_rows(first: date, last: date, revised: bool = False) -> list[CaseRow]:
    """WHO-like rows, one per country per day from ``first`` to ``last``; with
    ``revised``, REVISED of the first day's rows corrected."""
    rows = []
    days = (last - first).days + 1
    for d in range(days):
        day = first + timedelta(days=d)
        for c in range(COUNTRIES):
            new = (c * 7 + d * 13) % 50 or None  # some blanks, never 0
            correction = 1 if revised and d == 0 and c < REVISED else 0
            rows.append(CaseRow(day, f"Country {c:03d}", f"C{c:03d}", "EUR",
                                None if new is None else new + correction,
                                1_000 * c + 40 * d + correction, None, 10 * c))
    return rows


def add_case_series(path: Path) -> int:
    """WHO's series beside the week (two files; a no-op when it is already there); the
    rows stored."""
    store = storage.open_store(config.Settings(embedded_db_path=path))
    try:
        series = case_series.of_store(store)
        if series.last_load("who") is None:
            first = START.date() - timedelta(days=SERIES_DAYS_BEFORE)
            midweek = START + timedelta(days=3, hours=14)
            series.store(CaseFile("who", START - timedelta(hours=6), "http://127.0.0.1/who",
                                  Validators('"1"'), START - timedelta(days=1), 0),
                         case_rows(first, START.date() - timedelta(days=1)))
            series.store(CaseFile("who", midweek, "http://127.0.0.1/who", Validators('"2"'),
                                  midweek - timedelta(days=1), 0),
                         case_rows(first, midweek.date() - timedelta(days=1), revised=True))
        return sum(1 for _ in series.rows("who"))
    finally:
        store.close()


def differences(one: Path, two: Path) -> list[str]:
    """The files of two releases that differ (DATASET.md: its lines that differ)."""
    names = sorted({p.relative_to(one).as_posix() for p in one.rglob("*") if p.is_file()}
                   | {p.relative_to(two).as_posix() for p in two.rglob("*") if p.is_file()})
    found = []
    for name in names:
        a, b = one / name, two / name
        if not (a.is_file() and b.is_file()):
            found.append(f"{name}: in one release only")
        elif name == "DATASET.md":
            lines = zip(a.read_text().splitlines(), b.read_text().splitlines(), strict=False)
            found += [f"DATASET.md: {x!r}" for x, y in lines if x != y]
        elif a.read_bytes() != b.read_bytes():
            found.append(name)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path,
                        help="the embedded store's folder (kept; reused when filled)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs (default: 2)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N most expensive functions of one more run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    workdir = Path(tempfile.mkdtemp(prefix="release-week-"))
    store = args.store or workdir / "db"
    try:
        documents, posts = build_store(store, DAYS, TWEETS, "unique", post_fields=True)
        rows = add_case_series(store)
        log.info("store %s: %s documents, %s posts, %s case rows", store,
                 f"{documents:,}", f"{posts:,}", f"{rows:,}")
        time_releases(args, store, workdir)
    finally:
        if args.store is None:
            shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def time_releases(args: argparse.Namespace, store: Path, workdir: Path) -> None:
    window = ("release", "--since", START.date().isoformat(),
              "--until", (START + timedelta(days=DAYS)).date().isoformat())
    script = PROJECT / "report.py"
    runs: list[Run] = []
    outs = [workdir / f"release-{n}" for n in range(args.repeat)]
    for out in outs:
        run = run_plot(script, store, out, workdir, arguments=window)
        runs.append(run)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        log.info("report.py release: %.1f s (%.1f CPU s), peak RSS %.0f MB; wrote %d files, "
                 "%.0f MB", run.seconds, run.cpu_seconds, run.peak_mb,
                 sum(1 for p in out.rglob("*") if p.is_file()), size / 2**20)
    seconds = statistics.median(r.seconds for r in runs)
    peak = max(r.peak_mb for r in runs)
    log.info("report.py release of a week: median %.1f s of %s (CPU %.1f s); peak RSS %.0f MB",
             seconds, ", ".join(f"{r.seconds:.1f}" for r in runs),
             statistics.median(r.cpu_seconds for r in runs), peak)
    log.info("  targets: <= %.0f s (%s), <= %.0f MB peak RSS (%s)", TARGET_SECONDS,
             "met" if seconds <= TARGET_SECONDS else "NOT met", TARGET_RSS_MB,
             "met" if peak <= TARGET_RSS_MB else "NOT met")
    for other in outs[1:]:
        found = differences(outs[0], other)
        log.info("  %s against %s: %s", other.name, outs[0].name,
                 "; ".join(found) if found else "identical")
    if args.profile:
        profile = workdir / "release.prof"
        run_plot(script, store, workdir / "release-profiled", workdir, profile,
                 arguments=window)
        log.info("profile:\n%s", top_functions(profile, args.profile))


if __name__ == "__main__":
    sys.exit(main())
