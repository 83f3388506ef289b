"""Benchmark of the WHO case count: a full-size daily file, served from 127.0.0.1.

Usage: python -m bench.who [--countries N] [--days N] [--repeat N] [--workdir DIR]
                           [--baseline CHECKOUT] [--series-only]

Writes a file shaped like WHO's ``WHO-COVID-19-global-daily-data.csv`` (by
default 240 countries x 2,300 days from 2020-01-05: ~540,000 rows, ~25 MB, with
its quirks: a UTF-8 byte order mark, CRLF line ends, rows grouped by country,
Namibia's code ``NA``, a blank code for ``Other``, quoted names with commas,
``New_cases`` mostly blank) to a temporary folder, serves it with Python's
http.server on 127.0.0.1 (which answers ``If-Modified-Since`` with 304), and
measures, best and median of --repeat runs:

* download + parse: ``scrape.fetch_who_total`` (what a refresh does);
* download only: the same GET, body counted and dropped;
* parse only, from the file on disk (``scrape.who_world_total``) and from
  bytes in memory (decode + split + parse, as during a download);
* a 304 re-check: the conditional GET a refresh makes when the file is unchanged;
* what a batch waits when a full refresh is due: ``WhoCaseCounter.current()``
  with ``max_wait`` 0.1 s (it returns then; the refresh ends in the background);
* the case series in the embedded store (``case_counts``), each step in a process
  of its own (time, CPU, and the process's memory after its imports and at its
  peak): a first load of the whole file into an empty store, then a refresh with a
  second file in which a few past rows changed (blanks became numbers, figures
  revised) and a new day was added for every country; then the same second file
  again (nothing to write). Each step reads the file from disk as the refresh
  thread reads its copy (``who_case_rows``), and is checked against the store.

With ``--baseline CHECKOUT`` (another checkout of this project, e.g. the main
branch), the parse from bytes is also timed with that checkout's
``counts/who.py`` on the same file, the two taking turns, so that a change to
the parser is measured before and after in one run, under the same load.

A benchmark, not a test: it prints its numbers and asserts only that the
answers are right. Timings on a loaded 2-core machine move by ±10-20 %.
"""

from __future__ import annotations

import argparse
import csv
import functools
import http.server
import importlib.util
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import config
import scrape
import storage
from counts.fetch import Validators, fetch_body
from counts.series import CaseFile
from counts.who import fetch_who, text_lines
from counts.who_csv import who_case_rows
from storage import case_series

HEADER = ("Date_reported", "Country_code", "Country", "WHO_region", "New_cases",
          "Cumulative_cases", "New_deaths", "Cumulative_deaths")
FIRST_DAY = date(2020, 1, 5)
REGIONS = ("AFR", "AMR", "EMR", "EUR", "SEAR", "WPR")
SEED = 9
_SYLLABLES = ("ka", "ri", "to", "ma", "lan", "dor", "be", "si", "gua", "nes", "tia",
              "mor", "que", "val", "zu", "ar", "bia", "stan", "land", "o")


def build_csv(path: Path, countries: int, days: int) -> tuple[int, datetime]:
    """Write the file; return (its world total, its as-of) computed while writing."""
    rng = random.Random(SEED)
    names = ["Namibia", "Other", "Bonaire, Saint Eustatius and Saba",
             "C\u00f4te d\u2019Ivoire", "Saint Helena, Ascension and Tristan da Cunha"]
    while len(names) < countries:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()
        if name not in names:
            names.append(name)
    codes = {"Namibia": "NA", "Other": ""}
    total = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("\ufeff")
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(HEADER)
        for index, name in enumerate(names[:countries]):
            code = codes.get(name, f"{chr(65 + index // 26 % 26)}{chr(65 + index % 26)}")
            region = "OTHER" if name == "Other" else rng.choice(REGIONS)
            # a few countries stop reporting early; each reports every 7 days after 2023
            span = days if rng.random() > 0.05 else rng.randint(days // 2, days)
            cases = deaths = 0
            scale = rng.randint(1, 10_000)
            for offset in range(span):
                day = FIRST_DAY + timedelta(days=offset)
                weekly = day.year >= 2023
                new = rng.randint(0, scale) if (not weekly or offset % 7 == 0) else 0
                new_deaths = new // rng.randint(50, 400)
                cases += new
                deaths += new_deaths
                writer.writerow((day.isoformat(), code, name, region, new or "", cases,
                                 new_deaths or "", deaths))
            total += cases
    last = FIRST_DAY + timedelta(days=days - 1)
    return total, datetime(last.year, last.month, last.day, tzinfo=UTC)


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def show(name: str, times: list[float]) -> None:
    sys.stdout.write(f"{name:<56} best {min(times) * 1000:8.1f} ms   "
                     f"median {statistics.median(times) * 1000:8.1f} ms\n")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.who", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--countries", type=int, default=240)
    parser.add_argument("--days", type=int, default=2300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                        help="also time the parse of this checkout's counts/who.py")
    parser.add_argument("--series-only", action="store_true",
                        help="only the case series steps (first load, refresh)")
    parser.add_argument("--series-step", nargs=3, metavar=("FILE", "STORE", "SEEN"),
                        help=argparse.SUPPRESS)  # one step, in a process of its own
    args = parser.parse_args(argv)
    if args.series_step:
        return series_step(*args.series_step)
    baseline = None if args.baseline is None else load_baseline(args.baseline)

    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        path = Path(folder) / "WHO-COVID-19-global-daily-data.csv"
        started = time.perf_counter()
        total, as_of = build_csv(path, args.countries, args.days)
        size = path.stat().st_size
        sys.stdout.write(f"file: {size / 1e6:.1f} MB, {args.countries} countries x up to "
                         f"{args.days} days, total {total:,} as of {as_of.date()} "
                         f"(written in {time.perf_counter() - started:.1f} s)\n")

        handler = functools.partial(_QuietHandler, directory=folder)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{path.name}"
        try:
            if baseline is not None:
                compare(baseline, path, total, args.repeat)
            if not args.series_only:
                run(url, path, total, as_of, args.repeat)
            series(path, Path(folder))
        finally:
            httpd.shutdown()
            httpd.server_close()
    return 0


def load_baseline(checkout: Path) -> Callable[[Iterator[str]], Any]:
    """``who_world_total`` of another checkout's ``counts/who.py`` (its imports of the
    rest of ``counts`` resolve to this checkout's)."""
    path = checkout / "counts" / "who.py"
    spec = importlib.util.spec_from_file_location("baseline_who", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise SystemExit(f"python -m bench.who: error: no counts/who.py in {checkout}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module.who_world_total


def compare(baseline: Callable[[Iterator[str]], Any], path: Path, total: int,
            repeat: int) -> None:
    """The parse from bytes, this checkout's and the baseline's, taking turns."""
    data = path.read_bytes()

    def parse_with(parse: Callable[[Iterator[str]], Any]) -> float:
        chunks = (data[i:i + scrape.CHUNK_BYTES]
                  for i in range(0, len(data), scrape.CHUNK_BYTES))
        started = time.perf_counter()
        result = parse(text_lines(chunks))
        took = time.perf_counter() - started
        assert result.total == total, result
        return took

    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(repeat):
        theirs.append(parse_with(baseline))
        ours.append(parse_with(scrape.who_world_total))
    show("parse from bytes, baseline checkout (before)", theirs)
    show("parse from bytes, this checkout (after)", ours)


def run(url: str, path: Path, total: int, as_of: datetime, repeat: int) -> None:
    data = path.read_bytes()

    def full() -> None:
        result = scrape.fetch_who_total(url, timeout=30)
        assert (result.total, result.as_of) == (total, as_of), result

    def download_only() -> None:
        received, _ = fetch_body(url, timeout=30, session=None, validators=None,
                                 max_bytes=scrape.WHO_MAX_BYTES,
                                 read=lambda chunks: sum(len(c) for c in chunks))
        assert received == len(data)

    def parse_file() -> None:
        with path.open(encoding="utf-8", newline="") as handle:
            assert scrape.who_world_total(handle).total == total

    def chunks() -> Iterator[bytes]:
        return (data[i:i + scrape.CHUNK_BYTES] for i in range(0, len(data), scrape.CHUNK_BYTES))

    def parse_bytes() -> None:
        assert scrape.who_world_total(text_lines(chunks())).total == total

    def split_only() -> None:  # as who_rows splits: csv only for lines with a quote
        for line in text_lines(chunks()):
            if '"' in line:
                next(csv.reader([line]))
            else:
                line.rstrip("\r\n").split(",")

    show("download + parse (fetch_who_total)", timed(full, repeat))
    show("download only (body counted, dropped)", timed(download_only, repeat))
    show("parse only, from the file (who_world_total)", timed(parse_file, repeat))
    show("parse only, from bytes (decode + split + parse)", timed(parse_bytes, repeat))
    show("  of which decode + split into lines and values", timed(split_only, repeat))

    _, validators = fetch_who(url, timeout=30, session=None, validators=None,
                              max_bytes=scrape.WHO_MAX_BYTES)
    assert validators.last_modified, "http.server sends Last-Modified"

    def recheck() -> None:
        result, _ = fetch_who(url, timeout=30, session=None, validators=validators,
                              max_bytes=scrape.WHO_MAX_BYTES)
        assert result is None  # 304 Not Modified

    show("304 re-check (conditional GET, new session)", timed(recheck, repeat * 4))

    now = [as_of]
    waits = []
    for _ in range(repeat):  # a new counter's first batch: a full refresh is due
        with scrape.WhoCaseCounter(url, 30, max_wait=0.1, clock=lambda: now[0]) as counter:
            started = time.perf_counter()
            counter.current()
            waits.append(time.perf_counter() - started)
            assert counter.wait_for_refresh(60)
    show("batch wait when a full refresh is due (max_wait 0.1 s)", waits)
    with scrape.WhoCaseCounter(url, 30, clock=lambda: now[0]) as counter:
        assert counter.start().total == total
        checks = []
        for _ in range(repeat * 4):
            now[0] += timedelta(hours=1)
            started = time.perf_counter()
            reading = counter.current()
            checks.append(time.perf_counter() - started)
            assert reading.fresh and reading.total == total
        show("batch wait when a 304 re-check is due (counter)", checks)
        show("batch wait within the hour (no request)", timed(counter.current, 1000))

    tracemalloc.start()
    parse_bytes()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    sys.stdout.write(f"parse from a stream: peak {peak / 1e6:.1f} MB allocated for a "
                     f"{len(data) / 1e6:.1f} MB file (the bytes themselves not counted)\n")



# --------------------------------------------------------------------------
# the case series


def revised_copy(path: Path, out: Path, every: int = 100_000) -> tuple[int, int]:
    """``path`` with a few past rows changed (every ``every``-th data row: a blank
    New_cases becomes a number, else New_cases + 1) and a new day for each country;
    returns (rows changed, rows added)."""
    changed = added = 0
    latest: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as source, \
            out.open("w", encoding="utf-8", newline="") as target:
        writer = csv.writer(target, lineterminator="\r\n")
        target.write(source.readline())  # the header, byte order mark kept
        for number, row in enumerate(csv.reader(source), start=1):
            if number % every == 0:
                row[4] = str(int(row[4] or 0) + 1)
                changed += 1
            latest[row[2]] = row
            writer.writerow(row)
        for row in latest.values():
            day = date.fromisoformat(row[0]) + timedelta(days=1)
            writer.writerow([day.isoformat(), *row[1:4], "5", str(int(row[5]) + 5), "", row[7]])
            added += 1
    return changed, added


def series_step(file: str, store_path: str, seen: str) -> int:
    """One step, in this process: store ``file``'s rows in the embedded store at
    ``store_path``; print what it did, its time, CPU and memory as JSON."""
    before = _vm("VmRSS")
    store = storage.open_store(config.Settings(embedded_db_path=Path(store_path)))
    series_of_store = case_series.of_store(store)
    started, cpu = time.perf_counter(), time.process_time()
    with open(file, encoding="utf-8", newline="") as handle:
        rows = (row for row in who_case_rows(handle) if row.__class__ is not str)
        summary = series_of_store.store(
            CaseFile("who", datetime.fromisoformat(seen), file, Validators(), None, 0), rows)
    result = {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
              "rss_before_mb": before / 1024, "peak_mb": _vm("VmHWM") / 1024,
              "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "rows": summary.rows, "added": summary.added, "revised": summary.revised,
              "unchanged": summary.unchanged}
    store.close()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def _vm(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: now, VmHWM: the peak so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def series(path: Path, folder: Path) -> None:
    """The case series steps, each in a process of its own, checked against the store."""
    second = folder / "revised.csv"
    changed, added = revised_copy(path, second)
    store = folder / "store"
    steps = (("first load (empty store)", path, "2026-12-01T00:00:00+00:00"),
             (f"refresh ({changed} revised, {added} new rows)", second,
              "2026-12-08T00:00:00+00:00"),
             ("the same file again (nothing to write)", second, "2026-12-09T00:00:00+00:00"))
    sys.stdout.write("case series, embedded store (each step a process of its own):\n")
    results = []
    for name, file, seen in steps:
        output = subprocess.run(
            [sys.executable, "-m", "bench.who", "--series-step", str(file), str(store), seen],
            check=True, capture_output=True, text=True).stdout
        result = json.loads(output.splitlines()[-1])
        results.append(result)
        sys.stdout.write(
            f"  {name:<44} {result['seconds']:6.1f} s (CPU {result['cpu']:5.1f} s)  "
            f"memory {result['rss_before_mb']:5.0f} MB after imports, peak "
            f"{result['peak_mb']:5.0f} MB  [{result['rows']:,} rows: {result['added']:,} new, "
            f"{result['revised']:,} revised, {result['unchanged']:,} unchanged]\n")
    first, refresh, again = results
    assert first["added"] == first["rows"] and refresh["revised"] == changed, results
    assert refresh["added"] == added and again["unchanged"] == again["rows"], results
    size = sum(f.stat().st_size for f in (store / "covid19").glob("case_counts*"))
    sys.stdout.write(f"  store: {size / 1e6:.0f} MB on disk for {first['rows']:,} + "
                     f"{added:,} rows\n")


if __name__ == "__main__":
    sys.exit(main())
