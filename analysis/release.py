"""``report.py release``: one folder a researcher can publish, written from a window of
stored batches: the posts (Parquet, by day when many), the case series with its
revisions, the post ids, the coverage and keyword history, a card (DATASET.md) and
SHA256SUMS. The same store gives the same bytes, but for the card's one
"generated at" line; memory stays flat however long the window.

The folder is written under a temporary name beside ``--out`` and renamed to it
at the end, so a failed release leaves nothing under the name, and an ``--out``
that holds anything is refused: a release is never written over another.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import groupby, islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import storage
from analysis import card, coverage
from analysis.batches import Batch, SkippedDocuments, as_utc, find_window, iso_z, read_window
from analysis.cases import VERSION_COLUMNS, case_versions
from analysis.export import FieldWatch
from analysis.posts import arrow_schema, first_columns, write_parquet
from analysis.release_facts import CARD, CASES, COVERAGE, IDS, KEYWORDS, CaseFacts, Facts
from counts.reading import SOURCES
from storage import case_series
from storage.case_series import FIGURES

if TYPE_CHECKING:
    import pyarrow

log = logging.getLogger("report")

#: a window of more posts than this is written one Parquet file per UTC day, in posts/
ONE_FILE_POSTS = 1_000_000
#: cases.parquet starts this long before the window (at the latest): a model's lead-in
CASE_LEAD_IN = timedelta(days=28)
#: case rows converted to Arrow's compact form at a time
CASE_CHUNK = 4_096
SUMS = "SHA256SUMS"
POSTS_FILE, POSTS_FOLDER = "posts.parquet", "posts"


class ReleaseError(Exception):
    """A release cannot be written where it was asked; ``str(err)`` is one line."""


@dataclass(frozen=True)
class Release:
    """What a release wrote: its folder, the files in it (relative, sorted) and its
    posts."""

    folder: Path
    files: tuple[str, ...]
    posts: int


def check_out(out: Path) -> None:
    """Raise ReleaseError unless ``out`` can take a release: it does not exist yet, or
    is an empty folder (never written over); its parent folder exists."""
    if not out.parent.is_dir():
        raise ReleaseError(f"no folder {out.parent} to write the release into (create it "
                           "first)")
    if out.is_symlink():
        raise ReleaseError(f"--out {out} is a symbolic link: name the folder itself")
    if out.exists():
        if not out.is_dir():
            raise ReleaseError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()):
            raise ReleaseError(f"--out {out} exists and is not empty: a release is never "
                               "written over another (name a new folder)")


def software_version(project: Path) -> str:
    """``git describe --always --dirty`` of the checkout ``project`` is, or ``unknown``
    outside one (a copy of the files, an archive) or without git."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=project, capture_output=True,
                                  text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != project.resolve():
        return "unknown"  # not a checkout of its own (perhaps inside another repository)
    return git("describe", "--always", "--dirty") or "unknown"


def write_release(store: storage.BatchStore, out: Path, since: datetime, until: datetime,
                  *, version: str, generated_at: datetime | None = None,
                  one_file_posts: int = ONE_FILE_POSTS) -> Release:
    """Write the release of ``since`` <= batch time < ``until`` into the folder ``out``
    (posts, cases.parquet, ids.txt, coverage.json, keywords.csv, DATASET.md,
    SHA256SUMS). ``version``: the software's (``software_version``);
    ``generated_at``: the card's one changing line (default: now). Raises
    ReleaseError for an ``out`` that cannot take it and EmptyWindowError for a
    window without a batch, both before anything is written."""
    out = Path(os.path.abspath(out))  # "." and "a/.." have a name and a parent
    check_out(out)
    facts = Facts(since=since, until=until, version=version,
                  generated_at=generated_at or datetime.now(UTC),
                  one_file_posts=one_file_posts)
    tally = facts.tally
    skipped = SkippedDocuments()
    facts.columns, window = first_columns(read_window(
        store, since, until, skipped,
        documents=tally.observe_documents(find_window(store, since, until))))
    watch = FieldWatch(facts.columns)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)  # a leftover of this pid's earlier crash
    work.mkdir()
    try:
        batches = tally.observe_batches(watch(window))
        facts.posts_files = _write_posts(batches, work, facts, one_file_posts)
        facts.field_warning = watch.message()
        facts.skipped = skipped.message()
        facts.cases = _write_cases(store, work / CASES, since, until,
                                   tally.earliest_as_of())
        facts.coverage = coverage.read_coverage(store, since, until)
        _write_text(work / COVERAGE, coverage.coverage_json(facts.coverage) + "\n")
        facts.keywords = [found for found in coverage.keyword_sets(store)
                          if found.first < until and found.last >= since]
        _write_keywords(work / KEYWORDS, facts.keywords)
        facts.cleaning = card.cleaning_rules()
        _write_text(work / CARD, card.dataset_card(facts))
        files = _write_sums(work)
        _publish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    for message in (facts.field_warning, facts.skipped, facts.ids_warning()):
        if message:
            log.warning("%s", message)
    log.info("wrote the release of %s posts to %s: %s", f"{tally.posts:,}", out,
             ", ".join(name for name in files if "/" not in name)
             + (f", {POSTS_FOLDER}/ ({len(facts.posts_files)} files)"
                if POSTS_FOLDER + "/" in "".join(files) else ""))
    return Release(out, files, tally.posts)


# --- posts.parquet (or posts/<day>.parquet) and ids.txt ------------------------------------


def _write_posts(batches: Iterable[Batch], work: Path, facts: Facts,
                 one_file_posts: int) -> tuple[str, ...]:
    """Write the posts a file per UTC day of batch time (posts/2026-11-23.parquet), and
    their ids to ids.txt (when stored); then, if they are ``one_file_posts`` or fewer,
    join the days into one posts.parquet, row group by row group. The files written,
    relative to ``work``."""
    folder = work / POSTS_FOLDER
    folder.mkdir()
    days: list[Path] = []
    with_ids = "id" in facts.columns
    ids = (work / IDS).open("w", encoding="utf-8", newline="\n") if with_ids else None
    try:
        stream = _ids_written(batches, ids, facts) if ids is not None else batches
        for day, group in groupby(stream, key=_day):
            path = folder / f"{day.isoformat()}.parquet"
            write_parquet(group, path, facts.columns)
            days.append(path)
    finally:
        if ids is not None:
            ids.close()
    if facts.tally.posts > one_file_posts:
        return tuple(f"{POSTS_FOLDER}/{path.name}" for path in days)
    _join(days, work / POSTS_FILE, facts.columns)
    shutil.rmtree(folder)
    return (POSTS_FILE,)


def _day(batch: Batch) -> date:
    return batch.timestamp.date()


def _ids_written(batches: Iterable[Batch], out: IO[str], facts: Facts
                 ) -> Iterator[Batch]:
    """``batches`` as they come, their posts' stored ids written to ``out`` one a line
    (in the order of the posts' rows); posts without one are counted."""
    for batch in batches:
        if batch.posts:
            found = [post["id"] for post in batch.posts if isinstance(post.get("id"), str)]
            if found:
                out.write("\n".join(found) + "\n")
            facts.ids += len(found)
            facts.without_id += batch.tweets - len(found)
        else:
            facts.without_id += batch.tweets
        yield batch


def _join(parts: list[Path], out: Path, columns: tuple[str, ...]) -> None:
    """The Parquet files ``parts`` as one file, their row groups copied in order."""
    import pyarrow.parquet as pq

    with pq.ParquetWriter(str(out), arrow_schema(columns), compression="zstd") as writer:
        for part in parts:
            with pq.ParquetFile(str(part)) as source:
                for group in range(source.num_row_groups):
                    writer.write_table(source.read_row_group(group))


# --- cases.parquet --------------------------------------------------------------------------


def case_window(since: datetime, earliest_as_of: dict[str, datetime]
                ) -> dict[str, datetime]:
    """Per case source, the first date cases.parquet holds: CASE_LEAD_IN before the
    window, or the earliest date a figure beside its posts is as of, if earlier (so
    that every figure can be traced to its rows)."""
    start = as_utc(since) - CASE_LEAD_IN
    first = datetime(start.year, start.month, start.day, tzinfo=UTC)
    return {source: min(first, earliest_as_of.get(source, first)) for source in SOURCES}


def _write_cases(store: storage.BatchStore, out: Path, since: datetime, until: datetime,
                 earliest_as_of: dict[str, datetime]) -> CaseFacts:
    """Write every stored version of the case rows dated from :func:`case_window` to
    ``until`` (exclusive), each source in turn, by date and country, oldest version
    first; what the card says of them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    series = case_series.of_store(store)
    starts = case_window(since, earliest_as_of)
    facts = CaseFacts(starts=starts, until=until)
    schema = case_schema()
    try:
        with pq.ParquetWriter(str(out), schema, compression="zstd") as writer:
            for source in sorted(starts):
                load = series.last_load(source)
                latest = _aware(load.get("seen")) if load else None
                if load:
                    facts.loads[source] = (latest, _aware(load.get("as_of")))
                versions = _versions(series.rows(source, starts[source], until), latest,
                                     facts)
                while chunk := list(islice(versions, CASE_CHUNK)):
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
    finally:
        series.close()
    return facts


def _versions(documents: Iterable[dict[str, Any]], latest: datetime | None,
              facts: CaseFacts) -> Iterator[dict[str, Any]]:
    for document in documents:
        facts.add(document)
        yield from case_versions(document, latest)


def case_schema() -> pyarrow.Schema:
    """cases.parquet's columns (VERSION_COLUMNS), typed as load_cases() types them:
    dates as UTC timestamps (ms), figures as int64 (null where blank)."""
    import pyarrow as pa

    stamp = pa.timestamp("ms", tz="UTC")
    types = {"date": stamp, "first_seen": stamp, "last_seen": stamp,
             "version": pa.int64(), "current": pa.bool_()}
    return pa.schema([(name, types.get(name, pa.int64() if name in FIGURES
                                         else pa.string())) for name in VERSION_COLUMNS])


def _aware(moment: Any) -> datetime | None:
    return as_utc(moment) if isinstance(moment, datetime) else None


# --- keywords.csv ---------------------------------------------------------------------------

#: keywords.csv's columns: a row per keyword (X: per rule) of each set in force
KEYWORD_COLUMNS = ("source", "first_batch", "last_batch", "keyword", "rule_tag")


def _write_keywords(out: Path, sets: Iterable[coverage.KeywordSet]) -> None:
    """A row per keyword of each set (X: per rule, its value and tag), with the first
    and last batch time the set was in force, in the order the sets were first used."""
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(KEYWORD_COLUMNS)
        for found in sets:
            when = (found.source, iso_z(found.first), iso_z(found.last))
            for keyword in found.keywords or ():
                writer.writerow((*when, keyword, ""))
            for rule in found.rules or ():
                writer.writerow((*when, rule.get("value", ""), rule.get("tag") or ""))


# --- the card, the sums, the folder ---------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def _write_sums(work: Path) -> tuple[str, ...]:
    """SHA256SUMS over every other file of ``work``, as ``sha256sum`` writes them
    (``<hex>  <path>``, sorted by path); every file, SHA256SUMS included."""
    names = sorted(path.relative_to(work).as_posix() for path in work.rglob("*")
                   if path.is_file())
    lines = []
    for name in names:
        digest = hashlib.sha256()
        with (work / name).open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        lines.append(f"{digest.hexdigest()}  {name}\n")
    _write_text(work / SUMS, "".join(lines))
    return tuple(sorted([*names, SUMS]))


def _publish(work: Path, out: Path) -> None:
    """``work`` renamed to ``out`` (an empty ``out`` folder is replaced); re-checked
    first, so a release that appeared meanwhile is not overwritten."""
    check_out(out)
    if out.is_dir():
        out.rmdir()
    work.rename(out)
