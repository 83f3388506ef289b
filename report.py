"""Look at and use what the pipeline stored, without a Mongo shell.

    python report.py inspect                 # the last 10 batches as a table
    python report.py inspect --json          # the same documents as MongoDB Extended JSON
    python report.py plot --out report.png   # tweets per batch, case count, top words
    python report.py plot --since 2026-11-28T23:00Z --html report.html
    python report.py export --format csv --out tweets.csv   # one row per tweet

``--since`` (inclusive) and ``--until`` (exclusive) take ISO 8601 times; a time
without an offset is UTC. Reads MONGODB_URI (or the embedded store when unset),
MONGODB_DATABASE and MONGODB_COLLECTION like the Spark job, from flags, the
environment or .env.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import logging
import os
import re
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, pairwise
from pathlib import Path
from typing import IO, Any

import pymongo
from bson import json_util

import config
import storage

log = logging.getLogger("report")

EXTENDED_JSON = json_util.JSONOptions(
    json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=UTC
)
EXPORT_FIELDS = ("batch_id", "timestamp", "total_case_count", "position", "text")
FIGSIZE = (10.0, 8.0)  # inches; at DPI this is a 1000 x 800 pixel PNG
DPI = 100
DEFAULT_TOP = 15

# Small on purpose: the commonest function words of the stream's main languages
# (English, Spanish, French, Portuguese, German); an analyst can filter more in the export.
STOP_WORDS = frozenset(" ".join((
    "a about after again all also am an and any are as at be because been before being but",
    "by can could did do does doing don't for from get got had has have having he her here",
    "him his how i i'm if in into is it it's its just let's me more most my no not now of on",
    "one only or other our out over re she so some still such than that the their them then",
    "there these they this those through to too up us very was we were what when where which",
    "who why will with would you you're your yours",
    "de del el en es la las lo los por se un una y con para al su",
    "le les des du et au aux pour est une dans sur pas ne vous",
    "da do dos das em com um uma os",
    "der die und im am ist zu den mit nicht",
)).split())
_WORD = re.compile(r"\w+(?:['\N{RIGHT SINGLE QUOTATION MARK}]\w+)*")


class EmptyWindowError(LookupError):
    """No batch is stored in the requested window; ``str(err)`` is one line."""


# --------------------------------------------------------------------------
# pure pieces: documents -> batches, table, rows, word counts, page


@dataclass(frozen=True)
class Batch:
    """One stored document, normalised: an aware UTC time, the tweets, the count."""

    batch_id: str
    timestamp: datetime
    content: tuple[str, ...]
    total_case_count: int | None

    @property
    def tweets(self) -> int:
        return len(self.content)


@dataclass(frozen=True)
class Summary:
    """What the report's table says about a window."""

    batches: int
    tweets: int
    first: datetime
    last: datetime
    latest_count: int | None


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive one is taken as UTC.

    pymongo with ``tz_aware`` gives aware datetimes; MontyDB gives naive UTC ones.
    """
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso_z(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``: ``2026-11-28T23:07:50.000Z``."""
    utc = as_utc(moment)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """An aware UTC datetime from ISO 8601 text (``2026-11-28``, ``2026-11-28T23:05Z``,
    ``2026-11-28 23:05:00+01:00``); no offset means UTC. Raises ValueError."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date or time") from None
    return as_utc(moment)


def to_batch(document: Mapping[str, Any]) -> Batch:
    """The :class:`Batch` of one stored document."""
    count = document.get("total_case_count")
    return Batch(
        batch_id=str(document["_id"]),
        timestamp=as_utc(document["timestamp"]),
        content=tuple(document.get("content") or ()),
        total_case_count=None if count is None else int(count),
    )


def format_table(documents: Sequence[Mapping[str, Any]], width: int = 60) -> str:
    """The documents as a fixed-width table: time, tweets, count, first tweet."""
    rows = [("batch time (UTC)", "tweets", "total cases", "first tweet")]
    for batch in map(to_batch, documents):
        first = batch.content[0] if batch.content else ""
        if len(first) > width:
            first = first[: width - 1] + "…"
        count = batch.total_case_count
        rows.append((batch.timestamp.strftime("%Y-%m-%d %H:%M:%S"), str(batch.tweets),
                     "-" if count is None else f"{count:,}", first))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}"
        for row in rows
    ]
    return "\n".join(lines)


def format_json(documents: Sequence[Mapping[str, Any]]) -> str:
    """The documents as MongoDB Extended JSON (dates as ``{"$date": ...}``), one per line."""
    return "\n".join(json_util.dumps(doc, json_options=EXTENDED_JSON, ensure_ascii=False)
                     for doc in documents)


def summarize(batches: Sequence[Batch]) -> Summary:
    """Batches, tweets, first and last batch time and the latest non-null count."""
    if not batches:
        raise ValueError("no batches to summarise")
    counts = [b.total_case_count for b in batches if b.total_case_count is not None]
    return Summary(
        batches=len(batches),
        tweets=sum(b.tweets for b in batches),
        first=min(b.timestamp for b in batches),
        last=max(b.timestamp for b in batches),
        latest_count=counts[-1] if counts else None,
    )


def tokenize(text: str) -> list[str]:
    """The words of a cleaned tweet: runs of letters/digits (apostrophes inside kept)."""
    return _WORD.findall(text)


def top_words(texts: Iterable[str], top: int = DEFAULT_TOP) -> list[tuple[str, int]]:
    """The ``top`` most frequent words, counted case-insensitively.

    Hashtags arrive without ``#`` (the pipeline removes it), so ``COVID19`` is a
    word like any other. Stop words, one-character tokens and numbers are left
    out. Each word is shown in its most frequent spelling; ties by first seen.
    """
    counts: Counter[str] = Counter()
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    for text in texts:
        for token in tokenize(text):
            key = token.casefold()
            if len(key) < 2 or key.isdigit() or key in STOP_WORDS:
                continue
            counts[key] += 1
            spellings[key][token] += 1
    return [(spellings[key].most_common(1)[0][0], n) for key, n in counts.most_common(top)]


def tweet_rows(documents: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """One row per tweet: batch_id, timestamp (ISO 8601 UTC, ``Z``), total_case_count
    (``None`` when unknown), position (0-based, as in ``content.N``) and text."""
    for batch in map(to_batch, documents):
        stamp = iso_z(batch.timestamp)
        for position, text in enumerate(batch.content):
            yield {"batch_id": batch.batch_id, "timestamp": stamp,
                   "total_case_count": batch.total_case_count, "position": position,
                   "text": text}


def write_csv(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    """Write rows as CSV with a header (an unknown count is an empty cell); the row count."""
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    written = 0
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        written += 1
    return written


def write_jsonl(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    """Write rows as JSON Lines (an unknown count is ``null``); the row count."""
    written = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        written += 1
    return written


def window_text(since: datetime | None, until: datetime | None, summary: Summary) -> str:
    """The window in words: the requested bounds, else the first and last batch."""
    start = since or summary.first
    end = until or summary.last
    fmt = "%Y-%m-%d %H:%M:%S"
    if start.date() == end.date():
        return f"{start.strftime(fmt)} \N{EN DASH} {end.strftime('%H:%M:%S')} UTC"
    return f"{start.strftime(fmt)} \N{EN DASH} {end.strftime(fmt)} UTC"


def render_html(summary: Summary, words: Sequence[tuple[str, int]], png: bytes,
                title: str) -> str:
    """A self-contained page: the figure as a data URI, a summary table, the top words."""
    def cell(value: object) -> str:
        return html.escape(str(value))

    latest = "\N{EN DASH}" if summary.latest_count is None else f"{summary.latest_count:,}"
    facts = [
        ("batches", f"{summary.batches:,}"),
        ("tweets", f"{summary.tweets:,}"),
        ("first batch (UTC)", iso_z(summary.first)),
        ("last batch (UTC)", iso_z(summary.last)),
        ("latest total case count", latest),
    ]
    fact_rows = "\n".join(f"<tr><th>{cell(k)}</th><td>{cell(v)}</td></tr>" for k, v in facts)
    word_rows = "\n".join(f"<tr><td>{cell(w)}</td><td>{n:,}</td></tr>" for w, n in words)
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{cell(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1040px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: .3em .8em; text-align: left; }}
td:last-child {{ text-align: right; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
<h1>{cell(title)}</h1>
<table>
{fact_rows}
</table>
<img src="data:image/png;base64,{image}" alt="{cell(title)}">
<h2>Most frequent words</h2>
<table>
<tr><th>word</th><th>occurrences</th></tr>
{word_rows}
</table>
</body>
</html>
"""


# --------------------------------------------------------------------------
# the figure (matplotlib, Agg: no screen needed)


def render_png(batches: Sequence[Batch], words: Sequence[tuple[str, int]], title: str) -> bytes:
    """The report figure as PNG bytes, FIGSIZE at DPI: tweets per batch and the case
    count over time (left), the most frequent words (right)."""
    from matplotlib import dates as mdates
    from matplotlib import ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    times = [b.timestamp for b in batches]
    step = _batch_step(times)

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2, width_ratios=(1.9, 1))
    ax_tweets = fig.add_subplot(grid[0, 0])
    ax_count = fig.add_subplot(grid[1, 0], sharex=ax_tweets)
    ax_words = fig.add_subplot(grid[:, 1])
    fig.suptitle(title, fontsize=13)

    ax_tweets.bar(times, [b.tweets for b in batches], width=step * 0.8, color="#4878a8",
                  align="center")
    ax_tweets.set_ylabel("tweets")
    ax_tweets.set_title("Tweets per batch", loc="left", fontsize=11)
    ax_tweets.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax_tweets.tick_params(labelbottom=False)

    counted = [(b.timestamp, b.total_case_count) for b in batches
               if b.total_case_count is not None]
    ax_count.set_title("Total Covid-19 case count (worldometers)", loc="left", fontsize=11)
    ax_count.set_ylabel("total cases")
    if counted:
        values = [c for _, c in counted]
        ax_count.plot([t for t, _ in counted], values, drawstyle="steps-post", marker="o",
                      markersize=3, color="#c0504d")
        low, high = min(values), max(values)
        pad = max((high - low) * 0.1, high * 1e-5, 1)
        ax_count.set_ylim(low - pad, high + pad)
        ax_count.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
        last_time, last_value = counted[-1]
        ax_count.annotate(f"{last_value:,}", xy=(last_time, last_value), xytext=(0, 8),
                          textcoords="offset points", ha="right", fontsize=9, color="#8c2d2a")
    else:
        ax_count.text(0.5, 0.5, "no case count in this window", transform=ax_count.transAxes,
                      ha="center", va="center", color="#666")
        ax_count.set_yticks([])
    ax_count.set_xlabel("batch time (UTC)")
    locator = mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=8)
    ax_count.xaxis.set_major_locator(locator)
    ax_count.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax_count.set_xlim(min(times) - step, max(times) + step)
    for ax in (ax_tweets, ax_count):
        ax.grid(axis="y", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)

    ax_words.set_title("Most frequent words", loc="left", fontsize=11)
    if words:
        labels = [w for w, _ in words][::-1]
        bars = ax_words.barh(range(len(words)), [n for _, n in words][::-1], color="#6a9f58")
        ax_words.bar_label(bars, padding=3, fontsize=8, color="#444")
        ax_words.set_yticks(range(len(words)), labels)
        ax_words.set_xlim(0, max(n for _, n in words) * 1.15)
        ax_words.xaxis.set_major_locator(ticker.MaxNLocator(nbins=4, integer=True))
        ax_words.set_xlabel("occurrences")
        ax_words.grid(axis="x", alpha=0.3)
    else:
        ax_words.text(0.5, 0.5, "no words", transform=ax_words.transAxes, ha="center",
                      color="#666")
        ax_words.set_xticks([])
        ax_words.set_yticks([])
    ax_words.spines[["top", "right"]].set_visible(False)

    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(buffer, format="png", dpi=DPI)
    missing = [w for w in caught if "missing from font" in str(w.message)]
    if missing:  # one line instead of one warning per character
        log.warning("the figure's font lacks some characters of the words shown; they are "
                    "drawn as boxes (the HTML page and the export have the real text)")
    for other in caught:
        if other not in missing:
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    return buffer.getvalue()


def _batch_step(times: Sequence[datetime]) -> timedelta:
    """The usual gap between batches (the median), 20 s when there is one batch."""
    gaps = sorted(b - a for a, b in pairwise(times) if b > a)
    return gaps[len(gaps) // 2] if gaps else timedelta(seconds=20)


# --------------------------------------------------------------------------
# reading the store


def find_window(store: storage.BatchStore, since: datetime | None = None,
                until: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The documents with ``since <= timestamp < until``, oldest first, filtered and
    sorted by the server (the ``timestamp`` index)."""
    bounds: dict[str, datetime] = {}
    # naive UTC bounds: pymongo encodes naive datetimes as UTC, MontyDB stores naive
    # UTC and cannot compare them with aware ones, mongomock accepts both
    if since is not None:
        bounds["$gte"] = as_utc(since).replace(tzinfo=None)
    if until is not None:
        bounds["$lt"] = as_utc(until).replace(tzinfo=None)
    query = {"timestamp": bounds} if bounds else {}
    return iter(store.collection.find(query).sort("timestamp", pymongo.ASCENDING))


def _empty(store: storage.BatchStore, since: datetime | None, until: datetime | None) -> str:
    if since is None and until is None:
        return f"no batches stored yet in {store.description}"
    start = iso_z(since) if since else "the start"
    end = iso_z(until) if until else "now"
    return f"no batches from {start} to {end} in {store.description}"


def plot_report(store: storage.BatchStore, out: Path, *, since: datetime | None = None,
                until: datetime | None = None, html_out: Path | None = None,
                top: int = DEFAULT_TOP) -> Summary:
    """Write the figure of the window to ``out`` (PNG) and, if asked, the page to
    ``html_out``. Raises EmptyWindowError (and writes nothing) when the window is empty."""
    batches = [to_batch(doc) for doc in find_window(store, since, until)]
    if not batches:
        raise EmptyWindowError(_empty(store, since, until))
    summary = summarize(batches)
    words = top_words((text for b in batches for text in b.content), top)
    window = window_text(since, until, summary)
    title = (f"Covid-19 tweets and case count, {window}\n"
             f"{summary.batches:,} batches, {summary.tweets:,} tweets")
    png = render_png(batches, words, title)
    out.write_bytes(png)
    log.info("wrote %s: %d batches, %d tweets", out, summary.batches, summary.tweets)
    if html_out is not None:
        page = render_html(summary, words, png, f"Covid-19 tweets and case count, {window}")
        html_out.write_text(page, encoding="utf-8")
        log.info("wrote %s", html_out)
    return summary


def export_tweets(store: storage.BatchStore, out: IO[str] | Path, fmt: str, *,
                  since: datetime | None = None, until: datetime | None = None) -> int:
    """Write one row per tweet of the window as ``csv`` or ``jsonl`` to a text stream
    or a file; the number of rows. Raises EmptyWindowError (and writes nothing, no
    file either) when the window has no batch."""
    writer = {"csv": write_csv, "jsonl": write_jsonl}[fmt]
    documents = find_window(store, since, until)
    first = next(documents, None)
    if first is None:
        raise EmptyWindowError(_empty(store, since, until))
    rows = tweet_rows(chain([first], documents))
    if isinstance(out, Path):
        with out.open("w", encoding="utf-8", newline="") as handle:
            written = writer(rows, handle)
        log.info("wrote %s: %d tweets", out, written)
        return written
    return writer(rows, out)


# --------------------------------------------------------------------------
# command line


def _time_arg(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``report.py`` parser: ``inspect``, ``plot`` and ``export``."""
    parser = argparse.ArgumentParser(
        prog="report.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    store_flags = config.build_parser("report.py", "", config.STORE_OPTIONS, add_help=False)
    window = argparse.ArgumentParser(add_help=False)
    window.add_argument("--since", type=_time_arg, metavar="ISO",
                        help="first batch time to include, e.g. 2026-11-28T23:00Z (UTC "
                             "when no offset is given)")
    window.add_argument("--until", type=_time_arg, metavar="ISO",
                        help="batch time to stop before (exclusive)")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="print the last stored batches",
                                  parents=[store_flags])
    inspect.add_argument("--last", type=int, default=10, metavar="N",
                         help="how many of the most recent batches (default: 10)")
    inspect.add_argument("--json", action="store_true",
                         help="print MongoDB Extended JSON instead of a table")

    plot = commands.add_parser(
        "plot", parents=[window, store_flags],
        help="a PNG of tweets per batch, the case count and the top words",
    )
    plot.add_argument("--out", type=Path, default=Path("report.png"), metavar="FILE",
                      help="where to write the PNG (default: report.png)")
    plot.add_argument("--html", type=Path, metavar="FILE",
                      help="also write a self-contained HTML page with a summary table")
    plot.add_argument("--top", type=_positive_int, default=DEFAULT_TOP, metavar="N",
                      help=f"how many frequent words to show (default: {DEFAULT_TOP})")

    export = commands.add_parser("export", parents=[window, store_flags],
                                 help="one row per tweet as CSV or JSON Lines")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv",
                        help="csv (default) or jsonl")
    export.add_argument("--out", type=Path, metavar="FILE",
                        help="file to write (default: standard output)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = config.settings_from_args(parser, config.STORE_OPTIONS, args)
    config.configure_logging(settings)
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since and until and since >= until:
        parser.error("--since must be before --until")
    try:
        store = storage.open_store(settings)
    except storage.StoreError as err:
        parser.exit(1, f"report.py: error: {err}\n")
    try:
        if args.command == "inspect":
            return _inspect(store, args.last, as_json=args.json)
        if args.command == "plot":
            plot_report(store, args.out, since=since, until=until, html_out=args.html,
                        top=args.top)
        else:
            export_tweets(store, args.out or sys.stdout, args.format, since=since,
                          until=until)
    except EmptyWindowError as err:
        parser.exit(1, f"report.py: {err}\n")
    except BrokenPipeError:  # `report.py export | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        store.close()
    return 0


def _inspect(store: storage.BatchStore, last: int, *, as_json: bool) -> int:
    documents = store.latest(max(last, 0))
    if not documents:
        sys.stdout.write(f"no batches stored yet in {store.description}\n")
        return 0
    sys.stdout.write((format_json(documents) if as_json else format_table(documents)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
