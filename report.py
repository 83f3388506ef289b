"""Look at and use what the pipeline stored, without a Mongo shell.

    python report.py inspect                 # the last 10 batches as a table
    python report.py inspect --json          # the same documents as MongoDB Extended JSON
    python report.py plot --out report.png   # tweet volume, case count, top words
    python report.py plot --since 2026-11-28T23:00Z --html report.html
    python report.py export --format csv --out tweets.csv   # one row per tweet

``--since`` (inclusive) and ``--until`` (exclusive) take ISO 8601 times; a time
without an offset is UTC. Reads MONGODB_URI (or the embedded store when unset),
MONGODB_DATABASE and MONGODB_COLLECTION like the Spark job, from flags, the
environment or .env.

``plot`` counts the tweets per batch for a short window, else per minute, hour
or day (the finest that fits the figure, at most MAX_BINS bins), and shows
the source and as-of date of the case counts. In a CSV export a text cell
that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets
a leading ``'`` so that a spreadsheet shows it instead of running it as a
formula; JSON Lines keep every text exactly as stored.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import logging
import math
import multiprocessing
import os
import pickle
import queue
import re
import signal
import string
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, islice, pairwise
from operator import itemgetter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pymongo
from bson import json_util

import config
import storage

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn, not at start-up
    from matplotlib.figure import Figure

log = logging.getLogger("report")

EXTENDED_JSON = json_util.JSONOptions(
    json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=UTC
)
EXPORT_FIELDS = ("batch_id", "timestamp", "total_case_count", "case_count_as_of",
                 "case_count_source", "position", "text")
#: A CSV text cell starting with one of these gets a leading ``'`` (spreadsheets run
#: ``=``, ``+``, ``-`` and ``@`` as formulas; tab and CR can hide such a start).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FIGSIZE = (10.0, 8.0)  # inches; at DPI this is a 1000 x 800 pixel PNG
DPI = 100
DEFAULT_TOP = 15
#: At most this many bins in the volume panel (about 600 pixels wide): 2 or
#: more pixels a bin, so the line never turns into a solid block.
MAX_BINS = 360
#: Coarser bins the volume panel may use when one per batch is too many.
BIN_UNITS = (("minute", timedelta(minutes=1)), ("hour", timedelta(hours=1)),
             ("day", timedelta(days=1)))
#: How the case count sources are named in the figure and the page.
SOURCE_NAMES = {"worldometers": "worldometers", "who": "WHO"}
_TEXTS_PER_CHUNK = 20_000  # texts joined at a time when counting words
#: Texts a word-counting worker process gets at a time (WordCounter).
WORD_CHUNK = 50_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

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
#: ASCII punctuation that is neither a word character nor an apostrophe: a piece that
#: is letters and digits with only these around them is one token, found without _WORD.
_PUNCTUATION = "".join(sorted(set(string.punctuation) - {"_", "'"}))


class EmptyWindowError(LookupError):
    """No batch is stored in the requested window; ``str(err)`` is one line."""


# --------------------------------------------------------------------------
# pure pieces: documents -> batches, table, rows, word counts, page


@dataclass(frozen=True)
class Batch:
    """One stored document, normalised: an aware UTC time, the tweets, the count and
    what the count is (the moment it is for, where it came from; ``None`` if unknown)."""

    batch_id: str
    timestamp: datetime
    content: tuple[str, ...]
    total_case_count: int | None
    case_count_as_of: datetime | None = None
    case_count_source: str | None = None

    @property
    def tweets(self) -> int:
        return len(self.content)


@dataclass(frozen=True)
class Summary:
    """What the report's table says about a window. The latest count's as-of time and
    source are ``None`` when unknown; ``count_sources`` are the sources of the window's
    counts, in order of first appearance."""

    batches: int
    tweets: int
    first: datetime
    last: datetime
    latest_count: int | None
    latest_count_as_of: datetime | None = None
    latest_count_source: str | None = None
    count_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Binning:
    """How the volume panel groups batches: one bin per batch, minute, hour or day."""

    unit: str  # "batch", "minute", "hour" or "day"
    width: timedelta

    @property
    def title(self) -> str:
        """The panel's title, e.g. ``Tweets per hour`` or ``Tweets per batch (20 s)``."""
        if self.unit == "batch":
            return f"Tweets per batch ({self.width.total_seconds():g} s)"
        return f"Tweets per {self.unit}"

    def origin(self, first: datetime) -> datetime:
        """The start of the first bin: ``first`` centred in its bin for batches, else the
        start of ``first``'s minute, hour or day (UTC)."""
        if self.unit == "batch":
            return first - self.width / 2
        return _EPOCH + self.width * ((as_utc(first) - _EPOCH) // self.width)

    def edges(self, first: datetime, last: datetime) -> list[datetime]:
        """The bin edges covering ``first`` .. ``last``: one more than the bins."""
        origin = self.origin(first)
        bins = (as_utc(last) - origin) // self.width + 1
        return [origin + self.width * i for i in range(bins + 1)]


@dataclass(frozen=True)
class CountPanel:
    """The texts of the case count panel: its title and the note on the last value."""

    title: str
    note: str | None  # e.g. "704,753,890 as of 2024-04-13"; None without a count


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


def format_count(value: float) -> str:
    """A count with thousands separators, never in scientific notation:
    ``1891850`` -> ``1,891,850``; a fraction keeps up to two decimals."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{round(float(value), 2):,}"


def format_as_of(moment: datetime | None) -> str:
    """The moment a count is for, as short as it can be: ``2024-04-13`` at midnight
    UTC (WHO's daily file), else ``2026-11-28 09:00 UTC``; ``-`` when unknown."""
    if moment is None:
        return "-"
    utc = as_utc(moment)
    if (utc.hour, utc.minute, utc.second, utc.microsecond) == (0, 0, 0, 0):
        return utc.strftime("%Y-%m-%d")
    return utc.strftime("%Y-%m-%d %H:%M UTC")


def source_name(source: str | None) -> str:
    """How a case count source is shown: ``WHO``, ``worldometers``; ``-`` when unknown."""
    if source is None:
        return "-"
    return SOURCE_NAMES.get(source, source)


def to_batch(document: Mapping[str, Any]) -> Batch:
    """The :class:`Batch` of one stored document. Older documents have no
    ``case_count_as_of`` or ``case_count_source``: both are then ``None``."""
    count = document.get("total_case_count")
    as_of = document.get("case_count_as_of")
    source = document.get("case_count_source")
    return Batch(
        batch_id=str(document["_id"]),
        timestamp=as_utc(document["timestamp"]),
        content=tuple(document.get("content") or ()),
        total_case_count=None if count is None else int(count),
        case_count_as_of=as_utc(as_of) if isinstance(as_of, datetime) else None,
        case_count_source=source if isinstance(source, str) else None,
    )


def format_table(documents: Sequence[Mapping[str, Any]], width: int = 60) -> str:
    """The documents as a fixed-width table: time, tweets, count, the moment the
    count is for, first tweet."""
    rows = [("batch time (UTC)", "tweets", "total cases", "as of", "first tweet")]
    for batch in map(to_batch, documents):
        first = batch.content[0] if batch.content else ""
        if len(first) > width:
            first = first[: width - 1] + "…"
        count = batch.total_case_count
        rows.append((batch.timestamp.strftime("%Y-%m-%d %H:%M:%S"), str(batch.tweets),
                     "-" if count is None else f"{count:,}",
                     format_as_of(batch.case_count_as_of), first))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
        f"{row[3]:<{widths[3]}}  {row[4]}"
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def format_json(documents: Sequence[Mapping[str, Any]]) -> str:
    """The documents as MongoDB Extended JSON (dates as ``{"$date": ...}``), one per line."""
    return "\n".join(json_util.dumps(doc, json_options=EXTENDED_JSON, ensure_ascii=False)
                     for doc in documents)


def summarize(batches: Sequence[Batch]) -> Summary:
    """Batches, tweets, first and last batch time, the latest non-null count with its
    as-of time and source, and the sources of the window's counts."""
    if not batches:
        raise ValueError("no batches to summarise")
    counted = [b for b in batches if b.total_case_count is not None]
    latest = counted[-1] if counted else None
    return Summary(
        batches=len(batches),
        tweets=sum(b.tweets for b in batches),
        first=min(b.timestamp for b in batches),
        last=max(b.timestamp for b in batches),
        latest_count=latest.total_case_count if latest else None,
        latest_count_as_of=latest.case_count_as_of if latest else None,
        latest_count_source=latest.case_count_source if latest else None,
        count_sources=tuple(dict.fromkeys(b.case_count_source for b in counted
                                          if b.case_count_source is not None)),
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
    return rank_words(count_tokens(texts), top)


def rank_words(tokens: Mapping[str, int], top: int = DEFAULT_TOP) -> list[tuple[str, int]]:
    """:func:`top_words` from token counts in the order the tokens were first seen
    (:func:`count_tokens`, :class:`WordCounter`)."""
    counts: dict[str, int] = {}  # case-folded word -> occurrences, first seen first
    spellings: dict[str, dict[str, int]] = {}  # its spellings, first seen first
    left_out: set[str] = set()
    for token, n in tokens.items():
        key = token.casefold()
        if key in counts:
            counts[key] += n
            spellings[key][token] = n
        elif key not in left_out:
            if len(key) < 2 or key.isdigit() or key in STOP_WORDS:
                left_out.add(key)
                continue
            counts[key] = n
            spellings[key] = {token: n}
    # most_common keeps first-seen order among equal counts, and so does max()
    return [(max(spellings[key].items(), key=itemgetter(1))[0], n)
            for key, n in Counter(counts).most_common(top)]


def count_tokens(texts: Iterable[str]) -> Counter[str]:
    r"""How often each token (:func:`tokenize`) occurs in ``texts``, in the order
    tokens are first seen: ``Counter(chain.from_iterable(map(tokenize, texts)))``,
    only faster.

    A token never spans whitespace (whitespace is neither a word character nor an
    apostrophe), so the texts' whitespace-separated pieces are counted first (in C:
    ``str.split``, ``Counter``), and only each distinct piece is tokenized, once:
    a piece of letters and digits alone (``str.isalnum``, the same characters as
    ``\w`` less ``_``) is one token as it is, and so is one with only ASCII
    punctuation around it (``word,``); any other goes through the regex.
    """
    pieces: Counter[str] = Counter()
    remaining = iter(texts)
    while chunk := list(islice(remaining, _TEXTS_PER_CHUNK)):
        pieces.update(" ".join(chunk).split())
    return _tokens_of_pieces(pieces)


def _tokens_of_pieces(pieces: Mapping[str, int]) -> Counter[str]:
    """The tokens of whitespace-free pieces, counted as the pieces are, in the order
    of the pieces."""
    tokens: dict[str, int] = {}
    get = tokens.get
    for piece, n in pieces.items():
        if piece.isalnum():  # a word alone: the usual case
            tokens[piece] = get(piece, 0) + n
        else:
            for token in _piece_tokens(piece):
                tokens[token] = get(token, 0) + n
    return Counter(tokens)


def _piece_tokens(piece: str) -> list[str]:
    """The tokens of one whitespace-free piece: :func:`tokenize`, with shortcuts."""
    if piece.isalnum():
        return [piece]
    if (core := piece.strip(_PUNCTUATION)).isalnum():  # "word," "(word)"
        return [core]
    return _WORD.findall(piece)


def _count_joined(joined: str) -> Counter[str]:
    """:func:`count_tokens` of texts joined by spaces (what a worker process gets)."""
    return _tokens_of_pieces(Counter(joined.split()))


def tweet_rows(documents: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """One row per tweet: batch_id, timestamp (ISO 8601 UTC, ``Z``), total_case_count,
    case_count_as_of (ISO 8601 UTC, ``Z``), case_count_source (``who`` or
    ``worldometers``), position (0-based, as in ``content.N``) and text; an unknown
    count, as-of time or source is ``None``."""
    for batch in map(to_batch, documents):
        stamp = iso_z(batch.timestamp)
        as_of = None if batch.case_count_as_of is None else iso_z(batch.case_count_as_of)
        for position, text in enumerate(batch.content):
            yield {"batch_id": batch.batch_id, "timestamp": stamp,
                   "total_case_count": batch.total_case_count, "case_count_as_of": as_of,
                   "case_count_source": batch.case_count_source, "position": position,
                   "text": text}


def csv_cell(value: Any) -> Any:
    """A value as written to a CSV cell: ``None`` is an empty cell, and a text that a
    spreadsheet would run as a formula (it starts with one of FORMULA_STARTS) gets a
    leading ``'``, which spreadsheets show as text: ``=1+2`` -> ``'=1+2``."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    """Write rows as CSV with a header (an unknown value is an empty cell; texts that
    would start a formula are neutralised, see :func:`csv_cell`); the row count."""
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    written = 0
    for row in rows:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
        written += 1
    return written


def write_jsonl(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    """Write rows as JSON Lines (an unknown value is ``null``; texts exactly as
    stored); the row count."""
    written = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        written += 1
    return written


def batch_interval(times: Sequence[datetime]) -> timedelta | None:
    """The batch interval the batch times show: the greatest common divisor of the
    gaps between them, in milliseconds (Spark's batch times are multiples of the
    interval, and an empty batch leaves no document, so gaps can be several
    intervals). ``None`` for fewer than two distinct times or a divisor under 1 s."""
    stamps = sorted({round((as_utc(t) - _EPOCH).total_seconds() * 1000) for t in times})
    step = 0
    for a, b in pairwise(stamps):
        step = math.gcd(step, b - a)
    return timedelta(milliseconds=step) if step >= 1000 else None


def choose_binning(first: datetime, last: datetime, interval: timedelta | None,
                   max_bins: int = MAX_BINS) -> Binning:
    """The finest binning of ``first`` .. ``last`` with at most ``max_bins`` bins:
    per batch (``interval``, when known), else per minute, hour or day (never finer
    than the batch interval); per day when even that is more."""
    choices = [Binning("batch", interval)] if interval is not None else []
    choices += [Binning(unit, width) for unit, width in BIN_UNITS
                if interval is None or width > interval]
    for binning in choices:
        if len(binning.edges(first, last)) - 1 <= max_bins:
            return binning
    return choices[-1]


def bin_tweets(batches: Sequence[Batch], binning: Binning) -> tuple[list[datetime], list[int]]:
    """``(edges, tweets)``: the tweets of the batches summed per bin, from the first
    batch's bin to the last's; a bin without a batch is 0 (nothing was stored then)."""
    first = min(b.timestamp for b in batches)
    last = max(b.timestamp for b in batches)
    edges = binning.edges(first, last)
    counts = [0] * (len(edges) - 1)
    origin = edges[0]
    for batch in batches:
        counts[(batch.timestamp - origin) // binning.width] += batch.tweets
    return edges, counts


def count_panel_texts(batches: Sequence[Batch]) -> CountPanel:
    """The case count panel's title, naming the source(s) of the counts shown, and
    the note on the last count, with the moment it is for:
    ``Total Covid-19 case count (WHO)`` and ``778,052,871 as of 2026-11-22``."""
    counted = [b for b in batches if b.total_case_count is not None]
    title = "Total Covid-19 case count"
    if not counted:
        return CountPanel(title, None)
    sources = [source_name(s) for s in dict.fromkeys(b.case_count_source for b in counted
                                                     if b.case_count_source is not None)]
    unrecorded = any(b.case_count_source is None for b in counted)
    if len(sources) > 1:
        title += f" (mixed sources: {', '.join(sources)})"
    elif sources and unrecorded:  # some older documents say nothing of the source
        title += f" ({sources[0]}, some unrecorded)"
    elif sources:
        title += f" ({sources[0]})"
    else:
        title += " (source not recorded)"
    last = counted[-1]
    assert last.total_case_count is not None
    value = format_count(last.total_case_count)
    if last.case_count_as_of is None:
        return CountPanel(title, f"{value}, as-of date not recorded")
    return CountPanel(title, f"{value} as of {format_as_of(last.case_count_as_of)}")


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

    dash = "\N{EN DASH}"
    latest = dash if summary.latest_count is None else f"{summary.latest_count:,}"
    as_of = dash
    if summary.latest_count is not None:
        as_of = ("not recorded" if summary.latest_count_as_of is None
                 else format_as_of(summary.latest_count_as_of))
    sources = ", ".join(map(source_name, summary.count_sources)) or dash
    if len(summary.count_sources) > 1:
        sources += " (mixed)"
    facts = [
        ("batches", f"{summary.batches:,}"),
        ("tweets", f"{summary.tweets:,}"),
        ("first batch (UTC)", iso_z(summary.first)),
        ("last batch (UTC)", iso_z(summary.last)),
        ("latest total case count", latest),
        ("latest count is as of", as_of),
        ("case count source", sources),
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
    """The report figure (:func:`build_figure`) as PNG bytes, FIGSIZE at DPI."""
    fig = build_figure(batches, words, title)
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


def build_figure(batches: Sequence[Batch], words: Sequence[tuple[str, int]],
                 title: str) -> Figure:
    """The report figure: the tweets over time, binned (:func:`choose_binning`) and
    drawn as steps, and the case count with its source and as-of date (left); the
    most frequent words (right). Every count has thousands separators. Its axes are
    volume, count, words, in this order."""
    from matplotlib import dates as mdates
    from matplotlib import ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts_format = ticker.FuncFormatter(lambda value, _: format_count(value))
    times = [b.timestamp for b in batches]
    binning = choose_binning(min(times), max(times), batch_interval(times))
    edges, volume = bin_tweets(batches, binning)
    x_edges = mdates.date2num(edges)

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2, width_ratios=(1.9, 1))
    ax_tweets = fig.add_subplot(grid[0, 0])
    ax_count = fig.add_subplot(grid[1, 0], sharex=ax_tweets)
    ax_words = fig.add_subplot(grid[:, 1])
    fig.suptitle(title, fontsize=13)

    ax_tweets.stairs(volume, x_edges, fill=True, color="#4878a8", alpha=0.2, linewidth=0)
    ax_tweets.stairs(volume, x_edges, color="#4878a8", linewidth=1.2)
    ax_tweets.set_ylim(0, max(max(volume) * 1.1, 1))
    ax_tweets.set_ylabel("tweets")
    ax_tweets.set_title(binning.title, loc="left", fontsize=11)
    ax_tweets.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax_tweets.yaxis.set_major_formatter(counts_format)
    ax_tweets.tick_params(labelbottom=False)

    counted = [(b.timestamp, b.total_case_count) for b in batches
               if b.total_case_count is not None]
    panel = count_panel_texts(batches)
    ax_count.set_title(panel.title, loc="left", fontsize=11)
    ax_count.set_ylabel("total cases")
    if counted:
        values = [c for _, c in counted]
        shown = counted if len(counted) <= 60 else _changes(counted)
        ax_count.plot(mdates.date2num([t for t, _ in shown]), [c for _, c in shown],
                      drawstyle="steps-post", marker="o" if shown is counted else "",
                      markersize=3, color="#c0504d")
        low, high = min(values), max(values)
        pad = max((high - low) * 0.1, high * 1e-5, 1)
        ax_count.set_ylim(low - pad, high + pad)
        ax_count.yaxis.set_major_formatter(counts_format)
        last_time, last_value = counted[-1]
        ax_count.annotate(panel.note, xy=(mdates.date2num(last_time), last_value),
                          xytext=(0, 8), textcoords="offset points", ha="right", fontsize=9,
                          color="#8c2d2a")
    else:
        ax_count.text(0.5, 0.5, "no case count in this window", transform=ax_count.transAxes,
                      ha="center", va="center", color="#666")
        ax_count.set_yticks([])
    ax_count.set_xlabel("batch time (UTC)")
    locator = mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=8)
    ax_count.xaxis.set_major_locator(locator)
    ax_count.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax_count.set_xlim(x_edges[0], x_edges[-1])
    for ax in (ax_tweets, ax_count):
        ax.grid(axis="y", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)

    ax_words.set_title("Most frequent words", loc="left", fontsize=11)
    if words:
        labels = [w for w, _ in words][::-1]
        values = [n for _, n in words][::-1]
        bars = ax_words.barh(range(len(words)), values, color="#6a9f58")
        ax_words.bar_label(bars, labels=[format_count(n) for n in values], padding=3,
                           fontsize=8, color="#444")
        ax_words.set_yticks(range(len(words)), labels)
        ax_words.set_xlim(0, max(values) * 1.25)
        ax_words.xaxis.set_major_locator(ticker.MaxNLocator(nbins=3, integer=True))
        ax_words.xaxis.set_major_formatter(counts_format)
        ax_words.set_xlabel("occurrences")
        ax_words.grid(axis="x", alpha=0.3)
    else:
        ax_words.text(0.5, 0.5, "no words", transform=ax_words.transAxes, ha="center",
                      color="#666")
        ax_words.set_xticks([])
        ax_words.set_yticks([])
    ax_words.spines[["top", "right"]].set_visible(False)
    return fig


def _changes(points: Sequence[tuple[datetime, int]]) -> list[tuple[datetime, int]]:
    """The points where the value changes, and the last one: the same steps-post line
    as all the points, drawn with far fewer."""
    kept = [point for i, point in enumerate(points) if i == 0 or point[1] != points[i - 1][1]]
    if kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


# --------------------------------------------------------------------------
# counting words while the documents are read


class WordCounter:
    """Counts the tokens of texts added in order, as :func:`count_tokens` would, with
    ``workers`` worker processes when there are many texts.

    Every ``chunk`` texts go, joined into one string, to the next worker in turn
    while the caller goes on reading; the workers start with the first full chunk,
    so a small window never starts one. Each worker counts the pieces of its
    chunks and, at the end, tokenizes each distinct piece once; the tokens are
    then put in the order they were first seen in all the texts. The counts and
    that order are the same as ``count_tokens`` of all the texts. Without
    workers, or if they cannot be started or one fails, this process counts.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, workers: int = 0, chunk: int = WORD_CHUNK) -> None:
        self.workers = workers
        self.chunk = chunk
        self._buffer: list[str] = []
        self._pieces: Counter[str] = Counter()  # counted here
        self._chunks: list[list[str]] = []  # sent to the workers (kept, to count here)
        self._inboxes: list[Any] = []
        self._outbox: Any = None
        self._processes: list[Any] = []
        self._started = False
        self._collected = False

    def __enter__(self) -> WordCounter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, texts: Iterable[str]) -> None:
        """Count ``texts`` after every text added before."""
        self._buffer.extend(texts)
        if len(self._buffer) >= self.chunk:
            chunk, self._buffer = self._buffer, []
            self._send(chunk)

    def tokens(self) -> Counter[str]:
        """The counts of every token of the texts added, in first-seen order."""
        tail, self._buffer = self._buffer, []
        if not self._chunks:  # nothing went to a worker
            self._pieces.update(" ".join(tail).split())
            return _tokens_of_pieces(self._pieces)
        for inbox in self._inboxes:
            inbox.put(None)  # "that was all": each worker sends its counts
        tail_tokens = _count_joined(" ".join(tail))
        try:
            results = self._results()
        except WorkerError as err:
            log.warning("%s; counting the words in this process instead", err)
            self.close()
            for chunk in self._chunks:
                self._pieces.update(" ".join(chunk).split())
            self._pieces.update(" ".join(tail).split())
            return _tokens_of_pieces(self._pieces)
        tokens = merge_worker_tokens(results)
        tokens.update(tail_tokens)
        return tokens

    def close(self) -> None:
        """Stop the worker processes: let them end once they sent their counts, else
        end them."""
        for process in self._processes:
            if self._collected:
                process.join(timeout=5.0)
            if process.is_alive():
                process.terminate()
                process.join()
        for box in (*self._inboxes, *([self._outbox] if self._outbox else [])):
            box.close()
            box.cancel_join_thread()  # what is still unsent, nobody will read
        self._processes, self._inboxes, self._outbox = [], [], None

    def _send(self, chunk: list[str]) -> None:
        if not self._started:
            self._started = True
            if self.workers > 0:
                self._start()
        if not self._processes:
            self._pieces.update(" ".join(chunk).split())
            return
        number = len(self._chunks)
        self._chunks.append(chunk)
        self._inboxes[number % len(self._inboxes)].put((number, " ".join(chunk)))

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        try:
            target = _worker_target()
            self._outbox = context.Queue()
            for index in range(self.workers):
                inbox = context.Queue()
                process = context.Process(target=target, args=(index, inbox, self._outbox),
                                          name=f"report-words-{index}", daemon=True)
                process.start()
                self._inboxes.append(inbox)
                self._processes.append(process)
        except (OSError, ValueError, RuntimeError, ImportError, AttributeError,
                pickle.PicklingError) as err:
            log.info("counting words in this process (no worker processes: %s)", err)
            self.close()
            self.workers = 0

    def _results(self) -> list[WorkerTokens]:
        """What each worker counted, in worker order."""
        results: dict[int, WorkerTokens] = {}
        while len(results) < len(self._processes):
            try:
                index, result = self._outbox.get(timeout=0.5)
            except queue.Empty:
                dead = [p.name for i, p in enumerate(self._processes)
                        if i not in results and not p.is_alive()]
                if dead:
                    raise WorkerError(f"word-counting process {dead[0]} ended without "
                                      "its counts") from None
                continue
            results[index] = result
        self._collected = True
        return [results[index] for index in range(len(self._processes))]


class WorkerError(RuntimeError):
    """A word-counting process failed."""


#: What a word-counting worker sends back: for each chunk it got in which tokens
#: were first seen (by it), the chunk's number and those tokens with their counts.
WorkerTokens = list[tuple[int, list[tuple[str, int]]]]


def _worker_target() -> Callable[[int, Any, Any], None]:
    """:func:`_word_worker` as a new process finds it: from the module ``report``, also
    when this file runs as a script (or under ``python -m cProfile``) as ``__main__``."""
    if __name__ == "report":
        return _word_worker
    import report  # this file once more, by its name

    return report._word_worker


def _word_worker(index: int, inbox: Any, outbox: Any) -> None:
    """A word-counting process: count the ``(number, joined)`` chunks from ``inbox``
    until ``None``, then put ``(index, WorkerTokens)`` in ``outbox``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which ends us
    outbox.put((index, count_chunks(iter(inbox.get, None))))


def count_chunks(chunks: Iterable[tuple[int, str]]) -> WorkerTokens:
    """What a worker sends back for its ``(number, joined texts)`` chunks, numbers
    rising: their pieces counted, then tokenized (:func:`tokens_by_chunk`)."""
    pieces: Counter[str] = Counter()
    starts: list[tuple[int, int]] = []  # (chunk number, distinct pieces before it)
    for number, joined in chunks:
        starts.append((number, len(pieces)))
        pieces.update(joined.split())
    return tokens_by_chunk(pieces, starts)


def tokens_by_chunk(pieces: Mapping[str, int], starts: Sequence[tuple[int, int]]
                    ) -> WorkerTokens:
    """The tokens of ``pieces`` (in first-seen order, as ``Counter.update`` leaves them)
    grouped by the chunk they were first seen in: ``starts`` gives each chunk's number
    and how many distinct pieces came before it. A token is first seen in the chunk
    of the first piece that gives it."""
    tokens: dict[str, int] = {}
    groups: list[tuple[int, list[str]]] = []
    upcoming = iter([*starts, (-1, len(pieces) + 1)])
    next_number, next_start = next(upcoming)
    for position, (piece, n) in enumerate(pieces.items()):
        while position >= next_start:
            groups.append((next_number, []))
            next_number, next_start = next(upcoming)
        for token in _piece_tokens(piece):
            if token in tokens:
                tokens[token] += n
            else:
                tokens[token] = n
                groups[-1][1].append(token)
    return [(number, [(token, tokens[token]) for token in new]) for number, new in groups
            if new]


def merge_worker_tokens(results: Iterable[WorkerTokens]) -> Counter[str]:
    """The token counts of several workers added up, in the order the tokens were first
    seen in all the chunks: chunk by chunk (each chunk went to one worker), in the
    order its worker first saw them."""
    merged: dict[str, int] = {}
    get = merged.get
    for _, items in sorted(chain.from_iterable(results), key=itemgetter(0)):
        for token, n in items:
            merged[token] = get(token, 0) + n
    return Counter(merged)


def word_workers() -> int:
    """How many processes ``report.py plot`` counts words with: one per CPU (at most
    4), none on a machine with a single CPU."""
    cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(cpus, 4)


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
                top: int = DEFAULT_TOP, workers: int = 0) -> Summary:
    """Write the figure of the window to ``out`` (PNG) and, if asked, the page to
    ``html_out``. Raises EmptyWindowError (and writes nothing) when the window is empty.

    ``workers``: processes that count the words of a window of more than WORD_CHUNK
    tweets (:class:`WordCounter`; ``report.py plot`` uses :func:`word_workers`). They
    are started the ``spawn`` way, which imports the calling script again: a script
    that asks for workers must keep its own work under ``if __name__ == "__main__":``.
    """
    started = time.perf_counter()
    batches: list[Batch] = []
    with WordCounter(workers=workers) as words_counter:
        for document in find_window(store, since, until):
            batch = to_batch(document)
            batches.append(batch)
            words_counter.add(batch.content)
        if not batches:
            raise EmptyWindowError(_empty(store, since, until))
        log.debug("read %d documents in %.1f s", len(batches), time.perf_counter() - started)
        words = rank_words(words_counter.tokens(), top)
    log.debug("counted the words in %.1f s", time.perf_counter() - started)
    summary = summarize(batches)
    window = window_text(since, until, summary)
    title = (f"Covid-19 tweets and case count, {window}\n"
             f"{summary.batches:,} batches, {summary.tweets:,} tweets")
    png = render_png(batches, words, title)
    log.debug("drew the figure in %.1f s", time.perf_counter() - started)
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
        help="a PNG of the tweets over time, the case count and the top words",
        description=(
            "A PNG: the tweets per batch, minute, hour or day (the finest that gives at "
            f"most {MAX_BINS} bins), the total case count with its source and as-of date, "
            "and the most frequent words."
        ),
    )
    plot.add_argument("--out", type=Path, default=Path("report.png"), metavar="FILE",
                      help="where to write the PNG (default: report.png)")
    plot.add_argument("--html", type=Path, metavar="FILE",
                      help="also write a self-contained HTML page with a summary table")
    plot.add_argument("--top", type=_positive_int, default=DEFAULT_TOP, metavar="N",
                      help=f"how many frequent words to show (default: {DEFAULT_TOP})")

    export = commands.add_parser(
        "export", parents=[window, store_flags],
        help="one row per tweet as CSV or JSON Lines",
        description=(
            "One row per tweet, columns " + ", ".join(EXPORT_FIELDS) + ". Times are ISO "
            "8601 UTC with Z; an unknown count, as-of time or source is an empty cell "
            "(CSV) or null (JSON Lines). CSV only: a text cell starting with =, +, -, @, "
            "a tab or a carriage return gets a leading ' so that a spreadsheet shows it "
            "instead of running it as a formula; JSON Lines keep the texts exactly."
        ),
    )
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv",
                        help="csv (default; formula-like texts get a leading ') or jsonl "
                             "(texts exactly as stored)")
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
                        top=args.top, workers=word_workers())
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
