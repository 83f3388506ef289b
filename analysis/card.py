"""A release's card, DATASET.md: its text, from the facts gathered while the release's
files were written (:mod:`analysis.release_facts`). The text depends on the facts
alone, so the same store gives the same card, but for its "generated at" line."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from analysis.batches import as_utc, format_as_of, iso_z, source_name
from analysis.coverage import HOUR
from analysis.posts import NO_LANGUAGE
from analysis.release_facts import (
    CARD,
    CASES,
    COVERAGE,
    IDS,
    KEYWORDS,
    QUIET,
    Facts,
)

PROJECT = Path(__file__).resolve().parents[1]
#: where the cleaning rules a card copies are documented
CLEANING_PAGE = PROJECT / "docs" / "data-model.md"
#: at most this many gaps of the coverage ledger are listed (coverage.json has all)
GAPS_SHOWN = 50
LANGUAGES_SHOWN = 20

#: what each column of posts.parquet holds (docs/data-model.md has the stored fields)
POST_COLUMNS = {
    "batch_id": "the stored document's `_id`: its batch time as text (`#2`, `#3` for "
                "the parts of a batch too big for one document)",
    "timestamp": "the batch time (UTC): when the pipeline's 20 s batch that took the "
                 "post ended",
    "total_case_count": "the world's total Covid-19 cases beside the batch (null: none "
                        "known yet)",
    "case_count_as_of": "the date that count is for (model against this, not the batch "
                        "time)",
    "case_count_source": "where the count came from: `who` or `worldometers`",
    "position": "the post's place in its document (0-based)",
    "text": "the post's text, cleaned (see below)",
    "id": "the post's id (Bluesky: an `at://` URI; X: the numeric id)",
    "created_at": "when the post says it was written (UTC; null if it does not say)",
    "lang": "the first language the post declares (null: none)",
    "url": "a link to the post (Bluesky)",
    "author_id": "the author's DID or X user id (personal data)",
    "reply_to": "the id of the post it replies to",
    "reply_root": "the id of the first post of its thread",
    "quote_of": "the id of the post it quotes",
    "hashtags": "its tags, as a list",
    "links": "the full URLs it links to, as a list",
    "mentions": "the DIDs or X user ids it mentions, as a list (personal data)",
    "matched": "what chose it, as a list: every keyword that alone would have chosen it "
               "(Bluesky), the values (else tags) of the X rules that matched",
}


def cleaning_rules(page: Path = CLEANING_PAGE) -> str | None:
    """The "Cleaning" section of the data model page, as a card copies it (its links to
    other pages named, not linked); None when the page is not there."""
    try:
        text = page.read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(r"^## Cleaning\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    if found is None:
        return None
    rules = re.sub(r"\[([^\]]+)\]\(([^)#]*)(#[^)]*)?\)",
                   lambda m: f"{m[1]} (docs/{m[2] or page.name}{m[3] or ''})",
                   found[1].strip())
    return rules


# --- the text ------------------------------------------------------------------------------


def dataset_card(facts: Facts) -> str:
    """DATASET.md: what the release is, how it was collected, its gaps, posts per day
    and languages, deletions, version, licence, citation and rehydration."""
    parts = [_heading(facts), _files(facts), _posts_columns(facts), _collection(facts),
             _case_figures(facts), _gaps(facts), _per_day(facts), _languages(facts),
             _deletions(facts), _licence(facts), _citation(facts), _rehydration(facts)]
    return "\n\n".join(part.strip("\n") for part in parts if part) + "\n"


def _day_text(moment: datetime) -> str:
    return format_as_of(moment)


def _window(facts: Facts) -> str:
    return f"{_day_text(facts.since)} to {_day_text(facts.until)}"


def _heading(facts: Facts) -> str:
    tally = facts.tally
    sources = ", ".join(_source_title(s) for s, _ in _ranked(tally.sources)) or "unknown"
    return f"""# Covid-19 posts and case counts, {_window(facts)}

Generated at {facts.generated_at.strftime("%Y-%m-%dT%H:%M:%SZ")} (the only line that \
differs between two releases of the same store).

{tally.posts:,} posts ({sources}) about Covid-19, stored in {tally.batches:,} batches \
from {iso_z(facts.since)} (inclusive) to {iso_z(facts.until)} (exclusive), batch time, \
UTC; each post next to the world's total case count of its batch and the date that count \
is for. Written by `python report.py release` of the covid19 live-stream pipeline, \
version `{facts.version}`."""


def _files(facts: Facts) -> str:
    posts = facts.posts_files
    if len(posts) == 1:
        where = f"`{posts[0]}`"
        layout = (f"one file: the window has at most {facts.one_file_posts:,} posts "
                  "(more are written one file per UTC day of batch time, in `posts/`)")
        read = f'pd.read_parquet("{posts[0]}", dtype_backend="numpy_nullable")'
    else:
        where = f"`posts/` ({len(posts)} files: `{posts[0]}` to `{posts[-1]}`)"
        layout = (f"one file per UTC day of batch time, since the window has more than "
                  f"{facts.one_file_posts:,} posts; read together they are one table")
        read = 'pd.read_parquet("posts", dtype_backend="numpy_nullable")  # every day'
    lines = [
        "## Files", "",
        "| file | what it holds |", "|---|---|",
        f"| {where} | one row per post, {facts.tally.posts:,} rows; {layout} |",
    ]
    if facts.cases is not None:
        lines.append(f"| `{CASES}` | the case series around the window, every stored "
                     f"version of each row, {facts.cases.versions:,} rows |")
    if "id" in facts.columns:
        lines.append(f"| `{IDS}` | the posts' ids, one a line in the order of the posts' "
                     f"rows, {facts.ids:,} lines: for rehydration |")
    lines += [f"| `{COVERAGE}` | the coverage ledger over the window: every gap in the "
              "source time read (from, to, reason, posts refused) and each hour's share "
              "read, as `report.py coverage --json` prints it |",
              f"| `{KEYWORDS}` | the keywords (X: rules) in force, a row per keyword, with "
              f"the first and last batch of its set: {_keyword_rows(facts):,} rows |",
              f"| `{CARD}` | this card |",
              "| `SHA256SUMS` | the SHA-256 of every other file: `sha256sum -c SHA256SUMS` |",
              "", "In Python (pandas with pyarrow; `numpy_nullable` keeps the counts whole "
              "numbers, null where unknown):", "", "```python", "import pandas as pd",
              f"posts = {read}",
              f'cases = pd.read_parquet("{CASES}", dtype_backend="numpy_nullable")', "```"]
    if "id" not in facts.columns:
        lines += ["", f"There is no `{IDS}`: the posts were stored without ids (the "
                  "pipeline's `POST_FIELDS` did not name `id`), and posts stored without "
                  "ids cannot be rehydrated."]
    return "\n".join(lines)


def _keyword_rows(facts: Facts) -> int:
    return sum(len(found.keywords or found.rules or ()) for found in facts.keywords)


def _posts_columns(facts: Facts) -> str:
    names = ("batch_id", "timestamp", "total_case_count", "case_count_as_of",
             "case_count_source", "position", "text", *facts.columns)
    lines = ["## posts: the columns", "", "| column | what it holds |", "|---|---|"]
    lines += [f"| `{name}` | {POST_COLUMNS.get(name, '')} |" for name in names]
    lines.append("")
    lines.append("Times are UTC timestamps (milliseconds), counts 64-bit integers, lists "
                 "lists of text; null where unknown. The post fields are those stored "
                 "with the window's first batch.")
    if facts.field_warning:
        lines.append(f"Left out: {facts.field_warning}.")
    return "\n".join(lines)


def _source_title(source: str) -> str:
    return {"bluesky": "Bluesky", "twitter": "X"}.get(source, source)


def _ranked(counts: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _collection(facts: Facts) -> str:
    tally = facts.tally
    how = {"bluesky": "Bluesky's public Jetstream (every new post of the network, kept when "
                      "its text, tags or links hold one of the keywords)",
           "twitter": "the X API v2 filtered stream (posts matching the rules)",
           "replay": "a replayed file (`stream.py --source replay`: every post of the file; "
                     "no keyword chose them here)",
           "unknown": "a source the store does not name (no post ids or filter stored)"}
    lines = ["## What was collected, and how", ""]
    for source, posts in _ranked(tally.sources):
        lines.append(f"* {posts:,} posts from {how.get(source, source)}.")
    lines += [
        "* The pipeline (`stream.py`, then a PySpark Streaming job, `spark_streaming.py`) "
        "stores each batch of posts (20 s by default) as one document, with the case "
        "count it had at that moment. A batch without posts stores nothing.",
    ]
    lines += ["", "### Keywords", ""]
    if facts.keywords:
        lines += ["The keyword sets (X: rule sets) in force in the window, with the first and "
                  f"last batch each chose posts for (`{KEYWORDS}` has a row per keyword):", "",
                  "| first batch (UTC) | last batch (UTC) | source | keywords or rules |",
                  "|---|---|---|---|"]
        lines += [f"| {iso_z(found.first)} | {iso_z(found.last)} | "
                  f"{_source_title(found.source)} | {found.terms()} |"
                  for found in facts.keywords]
    else:
        lines.append("No keyword set is recorded for this window (the store was filled by a "
                     "`stream.py` that did not record the keywords it used).")
    if facts.cleaning:
        lines += ["", "### Cleaning", "",
                  f"Each text was cleaned before it was stored (the rules of version "
                  f"`{facts.version}`, from docs/data-model.md):", "", facts.cleaning]
    else:
        lines += ["", "The cleaning rules: docs/data-model.md, \"Cleaning\", of version "
                  f"`{facts.version}`."]
    return "\n".join(lines)


def _case_figures(facts: Facts) -> str:
    tally = facts.tally
    lines = ["## The case count beside the posts", ""]
    for source, figure in sorted(tally.figures.items()):
        span = (f"as of {_day_text(figure.first_as_of)}" if figure.first_as_of ==
                figure.last_as_of else f"as of {_day_text(figure.first_as_of)} to "
                f"{_day_text(figure.last_as_of)}") if figure.first_as_of else "as of unknown"
        age = ""
        if figure.youngest is not None and figure.oldest is not None:
            young, old = _days(figure.youngest), _days(figure.oldest)
            ages = young if young == old else f"{young} to {old}"
            age = f"; at batch time they were {ages} old"
        count = ("" if figure.latest_count is None else
                 f"; the last is {figure.latest_count:,}, as of "
                 f"{_day_text(figure.latest_as_of) if figure.latest_as_of else 'unknown'}")
        lines.append(f"* {source_name(source)}: {_count(figure.batches, 'batch', 'batches')}, "
                     "figures "
                     f"{span}{age}{count}.")
    if tally.without_figure:
        lines.append(f"* {_count(tally.without_figure, 'batch', 'batches')} "
                     f"{'has' if tally.without_figure == 1 else 'have'} no count (none was "
                     "known yet).")
    if "worldometers" in tally.figures:
        lines.append("* worldometers stopped its counters on 2024-04-13: its figure is "
                     "frozen.")
    lines.append("")
    lines.append("Model against `case_count_as_of`, not the batch time: a count can be "
                 "weeks (WHO) or years (worldometers) older than the posts beside it.")
    cases = facts.cases
    if cases is not None:
        lines += ["", f"### {CASES}", ""]
        starts = sorted(set(cases.starts.values()))
        start = _day_text(starts[0]) if len(starts) == 1 else " / ".join(
            f"{source_name(s)} {_day_text(d)}" for s, d in sorted(cases.starts.items()))
        lines.append(
            f"The case series the pipeline kept (`case_counts`), every row dated from "
            f"{start} to {_day_text(cases.until)} (exclusive): 28 days before the window "
            f"(a model's lead-in), or from the earliest date a count beside the posts is "
            f"for, if earlier, so that every count can be traced to its rows.")
        if cases.rows:
            per_source = ", ".join(f"{source_name(source)} {n:,}"
                                   for source, n in sorted(cases.by_source.items()))
            lines.append(
                f"{cases.rows:,} rows ({per_source}) "
                f"of {len(cases.countries):,} countries, dated {_day_text(cases.first)} to "
                f"{_day_text(cases.last)}; {cases.revised:,} of them revised later, "
                f"{cases.versions:,} versions in all.")
        else:
            lines.append("No case rows are stored for these dates (the pipeline keeps them "
                         "with `CASE_SERIES` on, from WHO's file or worldometers).")
        lines += ["",
                  "One row per stored version: `version` 1 is the first values seen, "
                  "`current` marks the values now held; `first_seen` is when a file first "
                  "gave them, `last_seen` the last file read that still gave them (the "
                  "current values: the latest file read). To rerun a model on what was "
                  "known at time T, keep each row's latest version with `first_seen` <= T. "
                  "Figures: WHO's `New_cases`, `Cumulative_cases`, `New_deaths`, "
                  "`Cumulative_deaths`; a blank is null, never 0."]
        if cases.loads:
            lines.append("")
        for source, (seen, as_of) in sorted(cases.loads.items()):
            lines.append(f"* {source_name(source)}: the latest file read at "
                         f"{iso_z(seen) if seen else 'an unknown time'}"
                         + (f", its data as of {_day_text(as_of)}." if as_of else "."))
    return "\n".join(lines)


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _days(age: timedelta) -> str:
    days = age / timedelta(days=1)
    return f"{days:.1f} days" if days < 10 else f"{round(days):,} days"


def _gaps(facts: Facts) -> str:
    tally = facts.tally
    lines = ["## Known gaps", "", *_ledger_gaps(facts)]
    lines.append(
        f"* Stretches of more than {QUIET.seconds // 60} minutes without a stored batch: "
        f"{tally.quiet_count:,}, {_hours(tally.quiet_total)} in all. A quiet stream stores "
        "no batch, so not all of them are outages.")
    if tally.quiet:
        lines += ["", "  | from (UTC) | to (UTC) | length |", "  |---|---|---|"]
        for length, start, end in sorted(tally.quiet, key=lambda q: (-q[0], q[1])):
            lines.append(f"  | {iso_z(start)} | {iso_z(end)} | {_hours(length)} |")
        lines.append("")
    if facts.skipped:
        lines.append(f"* Left out: {facts.skipped}.")
    return "\n".join(lines)


def _ledger_gaps(facts: Facts) -> list[str]:
    """What the coverage ledger says of the window: the share of source time read, and
    every gap (the first GAPS_SHOWN)."""
    found = facts.coverage
    if found is None or not found.hours:
        return [f"* No coverage recorded for this window (`{COVERAGE}` is empty): the store "
                "was filled by a `stream.py` that kept no coverage ledger, so only the "
                "batches below show where the stream may have stopped."]
    start, end = as_utc(facts.since), as_utc(facts.until)
    weights = [(min(hour + HOUR, end) - max(hour, start)).total_seconds()
               for hour, _ in found.hours]
    share = sum(w * covered for w, (_, covered) in zip(weights, found.hours, strict=True))
    short = sum(1 for _, covered in found.hours if covered < 1)
    lines = [f"* The coverage ledger (`{COVERAGE}`): {share / sum(weights):.2%} of the "
             f"window's source time was read without a break; {short:,} of its "
             f"{len(found.hours):,} hours were not read whole; {len(found.gaps):,} "
             f"{'gap' if len(found.gaps) == 1 else 'gaps'} recorded"
             + (":" if found.gaps else ".")]
    if found.gaps:
        lines += ["", "  | from (UTC) | to (UTC) | reason | posts refused |",
                  "  |---|---|---|---:|"]
        lines += [f"  | {iso_z(gap.start)} | {iso_z(gap.end)} | {gap.reason} | "
                  f"{gap.refused:,} |" for gap in found.gaps[:GAPS_SHOWN]]
        if len(found.gaps) > GAPS_SHOWN:
            lines.append(f"  | ... {len(found.gaps) - GAPS_SHOWN:,} more in `{COVERAGE}` "
                         "| | | |")
        lines.append("")
    lines.append("  Source time is the clock the platform published by (a cursor's); a "
                 "batch's time is within seconds of it. Time outside every span read (before "
                 "`stream.py` started, after it stopped) counts as not read.")
    return lines


def _hours(length: timedelta) -> str:
    minutes = length / timedelta(minutes=1)
    return f"{minutes:,.0f} min" if minutes < 120 else f"{minutes / 60:,.1f} h"


def _per_day(facts: Facts) -> str:
    lines = ["## Posts per day (UTC, batch time)", "",
             "| day | batches | posts | removed (deleted by their authors) |",
             "|---|---:|---:|---:|"]
    for day, counts in sorted(facts.tally.days.items()):
        lines.append(f"| {day.isoformat()} | {counts.batches:,} | {counts.posts:,} | "
                     f"{counts.deleted:,} |")
    return "\n".join(lines)


def _languages(facts: Facts) -> str:
    tally = facts.tally
    if not tally.languages_stored:
        return ("## Languages\n\nNot stored (the pipeline's `POST_FIELDS` did not name "
                "`lang`).")
    total = tally.languages.total()
    ranked = _ranked(tally.languages)
    lines = ["## Languages", "",
             f"The first language each post declares (`{NO_LANGUAGE}`: it declares none).",
             "",
             "| language | posts | share |", "|---|---:|---:|"]
    for lang, n in ranked[:LANGUAGES_SHOWN]:
        lines.append(f"| {lang} | {n:,} | {n / total:.1%} |")
    rest = ranked[LANGUAGES_SHOWN:]
    if rest:
        n = sum(count for _, count in rest)
        lines.append(f"| {len(rest)} others | {n:,} | {n / total:.1%} |")
    return "\n".join(lines)


def _deletions(facts: Facts) -> str:
    removed = facts.tally.deleted
    was = "was" if removed == 1 else "were"
    return f"""## Deletions

{_count(removed, "post", "posts")} of this window {was} removed from the store before \
this release, because their authors deleted them (the pipeline honours Bluesky's deletes \
by default; a store run with `KEEP_DELETED` keeps them). A post deleted after this \
release was written is still in it: write the release again from the store to drop it, \
and prefer sharing `{IDS}`, which only ever gives back the posts that still exist."""


def _licence(facts: Facts) -> str:
    return f"""## Licence and sharing

* The posts' texts belong to their authors; this release grants no rights to them. Posts \
are personal data: keep them no longer than your use needs, and honour deletions.
* Bluesky: posts are public, and Bluesky's developer guidelines \
(https://docs.bsky.app/docs/support/developer-guidelines) ask every service to delete \
content its author asked to be deleted. A published copy of the texts cannot follow \
later deletions: share `{IDS}` (rehydrating gives back only the posts that still exist) \
and keep `posts` for your own analysis, or publish the texts only where you can take \
posts down on request and replace the release as the store honours deletions.
* X: the Developer Policy (https://developer.x.com/en/developer-terms/policy) lets you \
share Post IDs, not the posts' contents, in datasets: up to 1,500,000 Post IDs to one \
recipient in 30 days, or without that limit on behalf of an academic institution for \
non-commercial research. Share `{IDS}` only; the texts stay with you.
* The case series is WHO's (WHO COVID-19 dashboard data, \
https://data.who.int/dashboards/covid19/data) or worldometers': attribute it to them \
as their terms ask (WHO: "WHO, title of the dataset, year, date of access", and the \
countries that reported the figures).
* What the release adds (the counts per day and language, the coverage and keyword \
history, this card) is yours to share under a licence of your choice, e.g. CC BY 4.0."""


def _citation(facts: Facts) -> str:
    since, until = facts.since.strftime("%Y-%m-%d"), facts.until.strftime("%Y-%m-%d")
    year = facts.until.year
    key = f"covid19posts{since.replace('-', '')}"
    return f"""## How to cite

Replace the author and the address with yours:

> <Author> ({year}). *Covid-19 posts and case counts, {_window(facts)}* [Data set]. \
Collected with the covid19 live-stream pipeline, version {facts.version}. <address of \
this release>

```bibtex
@misc{{{key},
  author = {{<Author>}},
  title  = {{Covid-19 posts and case counts, {since} to {until}}},
  year   = {{{year}}},
  note   = {{Collected with the covid19 live-stream pipeline, version {facts.version}}},
  howpublished = {{<address of this release>}}
}}
```"""


def _rehydration(facts: Facts) -> str:
    return f"""## How to rehydrate

`{IDS}` holds one post id a line. Rehydrating fetches each post again from its \
platform, so a post deleted since is not returned.

* Bluesky ids are `at://` URIs. The public AppView answers without an account, 25 URIs \
a request (`app.bsky.feed.getPosts`):

  ```sh
  curl -G https://public.api.bsky.app/xrpc/app.bsky.feed.getPosts \\
      --data-urlencode "uris=at://did:plc:.../app.bsky.feed.post/..." \\
      --data-urlencode "uris=at://..."
  ```

* X ids are numeric: `GET https://api.x.com/2/tweets?ids=...` takes 100 ids a request \
with an app's bearer token. X bills each post read on its pay-per-use tier (the \
developer console has the current rates). An id with a `~N` suffix was replayed from a \
file by the pipeline's tests, not read from X."""
