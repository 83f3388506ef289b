"""Benchmark of the WHO case count: a full-size daily file, served from 127.0.0.1.

Usage: python -m bench.who [--countries N] [--days N] [--repeat N] [--workdir DIR]
                           [--baseline CHECKOUT]

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
  with ``max_wait`` 0.1 s (it returns then; the refresh ends in the background).

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
import random
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import scrape
from counts.fetch import fetch_body
from counts.who import fetch_who, text_lines

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
    args = parser.parse_args(argv)
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
            run(url, path, total, as_of, args.repeat)
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


if __name__ == "__main__":
    sys.exit(main())
