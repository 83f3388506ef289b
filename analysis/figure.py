"""The report figure (a PNG drawn with matplotlib's Agg, no screen needed) and the
HTML page around it, for a window of stored batches."""

from __future__ import annotations

import base64
import html
import io
import logging
import textwrap
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import storage
from analysis.batches import (
    SkippedDocuments,
    Summary,
    format_as_of,
    format_count,
    iso_z,
    read_window,
    source_name,
)
from analysis.cases import WeeklyCases, weekly_new_cases
from analysis.digest import WindowDigest
from analysis.posts import LanguageFilter
from analysis.words import DEFAULT_TOP, WordCounter, keyword_words, rank_apart, rank_words
from storage import case_series

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn, not at start-up
    from matplotlib.figure import Figure

log = logging.getLogger("report")  # the report tool's log, as its lines always said

FIGSIZE = (10.0, 8.0)  # inches; at DPI this is a 1000 x 800 pixel PNG
#: with the world's new cases per week below: 1000 x 1050 pixels
FIGSIZE_WITH_CASES = (10.0, 10.5)
DPI = 100
#: how the words panel says what it counts
WORDS_NOTE = "occurrences, case folded (each word in its most frequent spelling)"


@dataclass(frozen=True)
class CountPanel:
    """The texts of the case count panel: its title and the note on the last value."""

    title: str
    note: str | None  # e.g. "704,753,890 as of 2024-04-13"; None without a count


def count_panel_texts(summary: Summary) -> CountPanel:
    """The case count panel's title, naming the source(s) of the counts shown, and
    the note on the last count, with the moment it is for:
    ``Total Covid-19 case count (WHO)`` and ``778,052,871 as of 2026-11-22``."""
    title = "Total Covid-19 case count"
    if summary.latest_count is None:
        return CountPanel(title, None)
    sources = [source_name(s) for s in summary.count_sources]
    if len(sources) > 1:
        title += f" (mixed sources: {', '.join(sources)})"
    elif sources and summary.unrecorded_sources:  # some older documents say nothing of it
        title += f" ({sources[0]}, some unrecorded)"
    elif sources:
        title += f" ({sources[0]})"
    else:
        title += " (source not recorded)"
    value = format_count(summary.latest_count)
    if summary.latest_count_as_of is None:
        return CountPanel(title, f"{value}, as-of date not recorded")
    return CountPanel(title, f"{value} as of {format_as_of(summary.latest_count_as_of)}")


def window_text(since: datetime | None, until: datetime | None, summary: Summary) -> str:
    """The window in words: the requested bounds, else the first and last batch."""
    start = since or summary.first
    end = until or summary.last
    fmt = "%Y-%m-%d %H:%M:%S"
    if start.date() == end.date():
        return f"{start.strftime(fmt)} \N{EN DASH} {end.strftime('%H:%M:%S')} UTC"
    return f"{start.strftime(fmt)} \N{EN DASH} {end.strftime(fmt)} UTC"


def keywords_note(apart: Sequence[tuple[str, int]]) -> str | None:
    """The line saying which tracked keywords the word count left out, with their
    counts: ``left out, being in every post (the tracked keywords): COVID19 42, ...``."""
    if not apart:
        return None
    listed = ", ".join(f"{word} {format_count(n)}" for word, n in apart)
    return f"left out, being in every post (the tracked keywords): {listed}"


def render_html(summary: Summary, words: Sequence[tuple[str, int]], png: bytes,
                title: str, apart: Sequence[tuple[str, int]] = ()) -> str:
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
        ("posts", f"{summary.tweets:,}"),
        ("first batch (UTC)", iso_z(summary.first)),
        ("last batch (UTC)", iso_z(summary.last)),
        ("latest total case count", latest),
        ("latest count is as of", as_of),
        ("case count source", sources),
    ]
    fact_rows = "\n".join(f"<tr><th>{cell(k)}</th><td>{cell(v)}</td></tr>" for k, v in facts)
    word_rows = "\n".join(f"<tr><td>{cell(w)}</td><td>{n:,}</td></tr>" for w, n in words)
    note = keywords_note(apart)
    words_note = "<p>Case folded: each word in its most frequent spelling." + (
        f" {cell(note[:1].upper() + note[1:])}.</p>" if note else "</p>")
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
{words_note}
<table>
<tr><th>word</th><th>occurrences</th></tr>
{word_rows}
</table>
</body>
</html>
"""


def render_png(window: WindowDigest, words: Sequence[tuple[str, int]], title: str, *,
               apart: Sequence[tuple[str, int]] = (), weekly: WeeklyCases | None = None
               ) -> bytes:
    """The report figure (:func:`build_figure`) as PNG bytes, FIGSIZE (or
    FIGSIZE_WITH_CASES) at DPI."""
    fig = build_figure(window, words, title, apart=apart, weekly=weekly)
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


def build_figure(window: WindowDigest, words: Sequence[tuple[str, int]],
                 title: str, *, apart: Sequence[tuple[str, int]] = (),
                 weekly: WeeklyCases | None = None) -> Figure:
    """The report figure: the posts over time, per batch, minute, hour or day
    (:class:`analysis.digest.VolumeBins`) drawn as steps, and the case count with its
    source and as-of date (left); the most frequent words, case folded, with the
    tracked keywords ``apart`` named below them (right). With ``weekly``, the
    world's new cases per week below the count (:func:`draw_weekly`). Every count
    has thousands separators. Its axes are volume, count, words (, weekly cases),
    in this order."""
    from matplotlib import dates as mdates
    from matplotlib import ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts_format = ticker.FuncFormatter(lambda value, _: format_count(value))
    binning, edges, volume = window.volume.result()
    x_edges = mdates.date2num(edges)

    fig = Figure(figsize=FIGSIZE_WITH_CASES if weekly else FIGSIZE, dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3 if weekly else 2, 2, width_ratios=(1.9, 1))
    ax_tweets = fig.add_subplot(grid[0, 0])
    ax_count = fig.add_subplot(grid[1, 0], sharex=ax_tweets)
    ax_words = fig.add_subplot(grid[:, 1])
    fig.suptitle(title, fontsize=13)

    ax_tweets.stairs(volume, x_edges, fill=True, color="#4878a8", alpha=0.2, linewidth=0)
    ax_tweets.stairs(volume, x_edges, color="#4878a8", linewidth=1.2)
    ax_tweets.set_ylim(0, max(max(volume) * 1.1, 1))
    ax_tweets.set_ylabel("posts")
    ax_tweets.set_title(binning.title, loc="left", fontsize=11)
    ax_tweets.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax_tweets.yaxis.set_major_formatter(counts_format)
    ax_tweets.tick_params(labelbottom=False)

    steps = window.counts
    panel = count_panel_texts(window.summary())
    ax_count.set_title(panel.title, loc="left", fontsize=11)
    ax_count.set_ylabel("total cases")
    if steps.low is not None and steps.high is not None:
        shown = steps.points()
        ax_count.plot(mdates.date2num([t for t, _ in shown]), [c for _, c in shown],
                      drawstyle="steps-post", marker="o" if steps.every_point else "",
                      markersize=3, color="#c0504d")
        low, high = steps.low, steps.high
        pad = max((high - low) * 0.1, high * 1e-5, 1)
        ax_count.set_ylim(low - pad, high + pad)
        ax_count.yaxis.set_major_formatter(counts_format)
        last_time, last_value = shown[-1]
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
        note = keywords_note(apart)
        ax_words.set_xlabel("\n".join([*textwrap.wrap(WORDS_NOTE, 38),
                                        *textwrap.wrap(note or "", 38)]), fontsize=9)
        ax_words.grid(axis="x", alpha=0.3)
    else:
        ax_words.text(0.5, 0.5, "no words", transform=ax_words.transAxes, ha="center",
                      color="#666")
        ax_words.set_xticks([])
        ax_words.set_yticks([])
    ax_words.spines[["top", "right"]].set_visible(False)
    if weekly:
        draw_weekly(fig.add_subplot(grid[2, 0]), weekly, x_edges[0], x_edges[-1])
    return fig


def draw_weekly(ax: Any, weekly: WeeklyCases, start: float, end: float) -> None:
    """The world's new cases per week as bars (WHO's countries summed), the posts'
    window (``start`` .. ``end``, matplotlib dates) shaded where it falls within, or
    named when it falls after WHO's latest week."""
    from matplotlib import dates as mdates
    from matplotlib import ticker

    weeks = mdates.date2num(weekly.weeks)
    values = [0 if n is None else n for n in weekly.new_cases]
    ax.bar(weeks, values, width=6, align="edge", color="#8064a2", alpha=0.8)
    ax.set_ylim(0, max(max(values) * 1.2, 1))  # room for the note above the bars
    ax.set_title("World new cases per week (WHO, its countries summed)", loc="left",
                 fontsize=11)
    ax.set_ylabel("new cases")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: format_count(v)))
    low, high = weeks[0], weeks[-1] + 7
    ax.set_xlim(low, high)
    if end >= low and start <= high:
        ax.axvspan(max(start, low), min(end, high), color="#4878a8", alpha=0.25, lw=0)
        ax.text(max(start, low), 1.0, " the posts", transform=ax.get_xaxis_transform(),
                va="top", fontsize=8, color="#2a4d70")
    elif start > high:
        ax.text(0.99, 0.95, f"the posts ({mdates.num2date(start):%Y-%m-%d}) come after "
                f"WHO's latest date ({weekly.latest:%Y-%m-%d})", transform=ax.transAxes,
                ha="right", va="top", fontsize=8, color="#444")
    locator = mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.set_xlabel("week (UTC, from Monday)")
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def _weekly(store: storage.BatchStore, end: datetime) -> WeeklyCases | None:
    """The world's weekly new cases up to ``end``, None when WHO's series is not stored
    (or cannot be read: said in one line, the figure drawn without it)."""
    try:
        return weekly_new_cases(case_series.of_store(store), end)
    except storage.STORE_ERRORS as err:
        log.warning("drawing no weekly cases: the case series cannot be read (%s)", err)
        return None


def _texts(store: storage.BatchStore, since: datetime | None, until: datetime | None,
           langs: Sequence[str] | None = None) -> Iterator[str]:
    """Every text of the window (of ``langs`` only, if given), read again (to count
    the words once more)."""
    batches = read_window(store, since, until)
    for batch in LanguageFilter(langs)(batches) if langs else batches:
        yield from batch.content


def plot_report(store: storage.BatchStore, out: Path, *, since: datetime | None = None,
                until: datetime | None = None, html_out: Path | None = None,
                top: int = DEFAULT_TOP, workers: int = 0,
                langs: Sequence[str] | None = None, keywords: Sequence[str] = ()) -> Summary:
    """Write the figure of the window to ``out`` (PNG) and, if asked, the page to
    ``html_out``. Raises EmptyWindowError (and writes nothing) when the window is
    empty. Documents a report cannot use are left out, with one warning line.

    The batches stream by once: what the figure needs is counted as they do
    (:class:`WindowDigest`, :class:`WordCounter`), and no text is kept, so memory
    grows with the bins and the vocabulary, not with the posts.

    ``workers``: processes that count the words of a window of more than WORD_CHUNK
    posts (:class:`WordCounter`; ``report.py plot`` uses :func:`word_workers`). They
    are started the ``spawn`` way, which imports the calling script again: a script
    that asks for workers must keep its own work under ``if __name__ == "__main__":``.
    If one fails, the window is read again to count its words in this process.

    ``langs``: the posts of these languages only (their stored ``lang``, POST_FIELDS);
    batches without stored languages are left out, with one warning line, and a
    window without any raises NoPostFieldsError (and writes nothing).

    ``keywords``: the tracked keywords (KEYWORDS), which every post carries by
    construction: left out of the most frequent words and named below them. With
    WHO's case series stored (``case_counts``), the world's new cases per week are
    drawn below the count (:func:`analysis.cases.weekly_new_cases`).
    """
    started = time.perf_counter()
    digest = WindowDigest()
    skipped = SkippedDocuments()
    only = LanguageFilter(langs) if langs else None
    with WordCounter(workers=workers,
                     recount=lambda: _texts(store, since, until, langs)) as words_counter:
        batches = read_window(store, since, until, skipped)
        for batch in only(batches) if only else batches:
            digest.add(batch)
            words_counter.add(batch.content)
        log.debug("read %d documents in %.1f s", digest.batches, time.perf_counter() - started)
        if only:
            only.check(store.description)
        tokens = words_counter.tokens()
        apart = keyword_words(keywords)
        words = rank_words(tokens, top, apart)
        kept_apart = rank_apart(tokens, apart)
        del tokens
    log.debug("counted the words in %.1f s", time.perf_counter() - started)
    summary = digest.summary()
    weekly = _weekly(store, summary.last)
    window = window_text(since, until, summary)
    posts = f"posts in {', '.join(langs)}" if langs else "posts"
    title = (f"Covid-19 {posts} and case count, {window}\n"
             f"{summary.batches:,} batches, {summary.tweets:,} {posts}")
    png = render_png(digest, words, title, apart=kept_apart, weekly=weekly)
    log.debug("drew the figure in %.1f s", time.perf_counter() - started)
    out.write_bytes(png)
    log.info("wrote %s: %d batches, %d posts", out, summary.batches, summary.tweets)
    if html_out is not None:
        page = render_html(summary, words, png, f"Covid-19 {posts} and case count, {window}",
                           kept_apart)
        html_out.write_text(page, encoding="utf-8")
        log.info("wrote %s", html_out)
    if only and only.without:
        log.warning("left out %d batches without stored post languages (--lang needs "
                    "POST_FIELDS with lang)", only.without)
    if skipped.count:
        log.warning("%s", skipped.message())
    return summary
