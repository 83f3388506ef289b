"""Look at and use what the pipeline stored, without a Mongo shell.

    python report.py inspect                 # the last 10 batches as a table
    python report.py inspect --json          # the same documents as MongoDB Extended JSON
    python report.py plot --out report.png   # post volume, case count, top words
    python report.py plot --since 2026-11-28T23:00Z --html report.html
    python report.py plot --lang en,pt --out en-pt.png       # those languages only
    python report.py export --format csv --out tweets.csv   # one row per post
    python report.py export --format parquet --out posts.parquet  # typed columns
    python report.py cases                   # the world's cases per date (WHO's summed)
    python report.py cases --country DE --since 2025-01-01   # one country's rows
    python report.py coverage                # per hour, the source time read; every gap
    python report.py coverage --json         # the same as JSON
    python report.py keywords                # each keyword set, first and last batch
    python report.py release --since 2026-11-23 --until 2026-11-30 --out release-w48

In a notebook (pandas: pip install -r requirements-analysis.txt):

    from report import load_cases, load_posts
    df = load_posts(since="2026-11-28", until="2026-11-29")
    cases = load_cases(country="DE", since="2025-01-01")   # country=None: every row

``--since`` (inclusive) and ``--until`` (exclusive) take ISO 8601 times; a time
without an offset is UTC. Reads MONGODB_URI (or the embedded store when unset),
MONGODB_DATABASE and MONGODB_COLLECTION like the Spark job, from flags, the
environment or .env; a store that does not exist is an error, never created.

``cases`` prints the case series the job keeps with CASE_SERIES on (the
``case_counts`` collection): by default the world, WHO's countries summed per date
(and worldometers' one figure); ``--country`` one country's rows, by code (``DE``,
Namibia's ``NA``) or name; ``--known-at`` the values as they were known then (WHO
revises past rows; the earlier values are kept).

``release`` writes a dataset to publish into a new folder: the window's posts
(Parquet), the case series around it with its revisions, the post ids, the
coverage and keyword history, a card (DATASET.md) and SHA256SUMS
(docs/using-the-data.md, "Publishing a dataset").

``plot`` counts the posts per minute, hour or day (the finest that fits the
figure, at most MAX_BINS bins, and not shorter than the usual batch), and shows
the source and as-of date of the case counts. Documents without a timestamp, or
with a field of another type, are left out and counted in one warning line at
the end. In a CSV export a text cell
that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets
a leading ``'`` so that a spreadsheet shows it instead of running it as a
formula; JSON Lines keep every text exactly as stored. With post fields stored
(the job's POST_FIELDS), ``inspect`` shows the language mix, ``plot --lang``
draws some languages only, and the exports have the post fields as columns.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import config
import storage
from analysis import batches, cases, coverage, export, figure, posts, release, words
from startup import StartupError, program
from storage import case_series

if TYPE_CHECKING:
    import pandas

log = logging.getLogger("report")
PROJECT = Path(__file__).resolve().parent


def _time_arg(text: str) -> datetime:
    try:
        return batches.parse_time(text)
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


def _languages(text: str) -> tuple[str, ...]:
    try:
        return posts.parse_languages(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``report.py`` parser: ``inspect``, ``plot``, ``export``, ``cases``,
    ``coverage``, ``keywords`` and ``release``."""
    return _build_parsers()[0]


def _build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and each command's own (for its usage line with an error)."""
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
                                  parents=[window, store_flags])
    inspect.add_argument("--last", type=_positive_int, default=10, metavar="N",
                         help="how many of the most recent batches (of the window), at "
                              "least 1 (default: 10)")
    inspect.add_argument("--json", action=argparse.BooleanOptionalAction, default=False,
                         help="print MongoDB Extended JSON instead of a table")

    keyword_flags = config.build_parser("report.py", "", ("keywords",), add_help=False)
    plot = commands.add_parser(
        "plot", parents=[window, store_flags, keyword_flags],
        help="a PNG of the posts over time, the case count and the top words",
        description=(
            "A PNG: the posts per minute, hour or day (the finest that gives at most "
            f"{batches.MAX_BINS} bins), the total case count with its source and as-of "
            "date, and the most frequent words."
        ),
    )
    plot.add_argument("--out", type=Path, default=Path("report.png"), metavar="FILE",
                      help="where to write the PNG (default: report.png)")
    plot.add_argument("--html", type=Path, metavar="FILE",
                      help="also write a self-contained HTML page with a summary table")
    plot.add_argument("--top", type=_positive_int, default=words.DEFAULT_TOP, metavar="N",
                      help=f"how many frequent words to show (default: {words.DEFAULT_TOP})")
    plot.add_argument("--lang", type=_languages, metavar="LANGS",
                      help="volume and words of the posts in these languages only, e.g. en "
                           "or en,pt (needs post languages stored: POST_FIELDS with lang)")

    export_command = commands.add_parser(
        "export", parents=[window, store_flags],
        help="one row per post as CSV, JSON Lines or Parquet",
        description=(
            "One row per post, columns " + ", ".join(export.EXPORT_FIELDS) + ". Times are "
            "ISO 8601 UTC with Z; an unknown count, as-of time or source is an empty cell "
            "(CSV) or null (JSON Lines). CSV only: a text cell starting with =, +, -, @, "
            "a tab or a carriage return gets a leading ' so that a spreadsheet shows it "
            "instead of running it as a formula; JSON Lines keep the texts exactly. "
            "Parquet: typed columns (times as UTC timestamps, counts as int64), written "
            "in row groups. The post fields stored with the window's first batch "
            "(POST_FIELDS) are columns too."
        ),
    )
    export_command.add_argument("--format", choices=("csv", "jsonl", "parquet"),
                                default="csv",
                                help="csv (default; formula-like texts get a leading '), "
                                     "jsonl (texts exactly as stored) or parquet (typed; "
                                     "needs --out)")
    export_command.add_argument("--out", type=Path, metavar="FILE",
                                help="file to write (default: standard output)")
    cases_command = commands.add_parser(
        "cases", parents=[store_flags],
        help="the case series: the world's (or a country's) cases per date",
        description=(
            "The case series kept by the job (CASE_SERIES on): by default the world, "
            "WHO's countries summed per date (a blank adds nothing) and worldometers' one "
            "figure; with --country, that country's rows and how many earlier versions "
            "WHO revised. --since and --until bound the dates (UTC)."),
    )
    cases_command.add_argument("--country", metavar="CODE",
                               help="a country's code (DE, NA) or name; default: World")
    cases_command.add_argument("--since", type=_time_arg, metavar="ISO",
                               help="first date to include, e.g. 2025-01-01")
    cases_command.add_argument("--until", type=_time_arg, metavar="ISO",
                               help="date to stop before (exclusive)")
    cases_command.add_argument("--known-at", type=_time_arg, metavar="ISO",
                               help="the values as they were known at that time (each "
                                    "row's version first seen by then)")
    coverage_command = commands.add_parser(
        "coverage", parents=[window, store_flags],
        help="per hour, the share of source time the stream read, and every gap",
        description=(
            "From the coverage ledger stream.py records: per UTC hour of the window, the "
            "share of source time read without a break, then every gap (source time not "
            "read) with its bounds, reason and posts refused. --since and --until bound "
            "source time here (default: all that is recorded)."),
    )
    coverage_command.add_argument(
        "--json", action=argparse.BooleanOptionalAction, default=False,
        help='print {"gaps": [{"from", "to", "reason", "refused"}], "hours": [{"hour", '
             '"covered"}]} instead of a table')
    keywords_command = commands.add_parser(
        "keywords", parents=[store_flags],
        help="each keyword set (X: rule set) with the first and last batch it chose posts for")
    keywords_command.add_argument("--json", action=argparse.BooleanOptionalAction,
                                  default=False, help="print JSON instead of a table")
    release_command = commands.add_parser(
        "release", parents=[store_flags],
        help="write a dataset to publish: posts, case series, ids, a card, checksums",
        description=(
            "Write a window's dataset into a new folder: posts.parquet (one row per post; "
            f"past {release.ONE_FILE_POSTS:,} posts, posts/<day>.parquet, one per UTC day), "
            "cases.parquet (every stored version of the case rows around the window), "
            "ids.txt (the post ids, for rehydration), coverage.json and keywords.csv (the "
            "ledger's gaps and keyword sets), DATASET.md (a card: how it was collected, "
            "gaps, posts per day, languages, deletions, licence, citation) and SHA256SUMS. "
            "The same store gives the same files, but for the card's 'generated at' line. "
            "--out must not exist or be an empty folder."),
    )
    release_command.add_argument("--since", type=_time_arg, metavar="ISO", required=True,
                                 help="first batch time to include, e.g. 2026-11-23 (UTC "
                                      "when no offset is given)")
    release_command.add_argument("--until", type=_time_arg, metavar="ISO", required=True,
                                 help="batch time to stop before (exclusive)")
    release_command.add_argument("--out", type=Path, required=True, metavar="DIR",
                                 help="the folder to write (new, or empty)")
    return parser, {"inspect": inspect, "plot": plot, "export": export_command,
                    "cases": cases_command, "coverage": coverage_command,
                    "keywords": keywords_command, "release": release_command}


def _missing_folder(args: argparse.Namespace) -> Path | None:
    """The first folder that an output file (``--out``, ``--html``) would go in and
    that does not exist."""
    for out in (getattr(args, "out", None), getattr(args, "html", None)):
        if out is not None and not out.parent.is_dir():
            return out.parent
    return None


@program("report.py")
def main(argv: list[str] | None = None) -> int:
    """Run ``report.py`` with ``argv`` (default: the command line); the exit status. A
    usage error, an unusable or missing store, a missing output folder or an empty
    window exits with one line on stderr."""
    parser, commands = _build_parsers()
    args = parser.parse_args(argv)
    settings = config.settings_from_args(parser, (*config.STORE_OPTIONS, "keywords"), args)
    config.configure_logging(settings)
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since and until and since >= until:
        commands[args.command].error("--since must be before --until")
    if args.command == "export" and args.format == "parquet" and args.out is None:
        commands["export"].error("--format parquet needs --out FILE (it is not text)")
    missing = _missing_folder(args)
    if missing is not None:
        raise StartupError(f"no folder {missing} to write into (create it first)")
    if args.command == "release":
        try:
            release.check_out(args.out)
        except release.ReleaseError as err:
            raise StartupError(str(err)) from None
    try:
        store = storage.open_store(settings, create=False)
    except storage.StoreError as err:
        raise StartupError(str(err)) from None
    try:
        if args.command == "cases":
            return _cases(store, args.country, since, until, args.known_at)
        if args.command == "release":
            release.write_release(store, args.out, since, until,
                                  version=release.software_version(PROJECT))
            return 0
        if args.command == "inspect":
            return _inspect(store, args.last, since, until, as_json=args.json)
        if args.command == "coverage":
            found = coverage.read_coverage(store, since, until)
            sys.stdout.write((coverage.coverage_json(found) if args.json
                              else coverage.coverage_text(found, store.description)) + "\n")
            return 0
        if args.command == "keywords":
            sets = coverage.keyword_sets(store)
            sys.stdout.write((coverage.keywords_json(sets) if args.json
                              else coverage.keywords_text(sets, store.description)) + "\n")
            return 0
        if args.command == "plot":
            figure.plot_report(store, args.out, since=since, until=until,
                               html_out=args.html, top=args.top,
                               workers=words.word_workers(), langs=args.lang,
                               keywords=settings.keywords)
        else:
            export.export_tweets(store, args.out or sys.stdout, args.format, since=since,
                                 until=until)
    except (batches.EmptyWindowError, posts.NoPostFieldsError,
            cases.UnknownCountryError, release.ReleaseError) as err:
        parser.exit(1, f"report.py: {err}\n")
    except BrokenPipeError:  # `report.py export | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # an output file that cannot be written
        if err.filename is None:
            raise
        raise StartupError(f"cannot write {err.filename}: {err.strerror or err}") from None
    finally:
        store.close()
    return 0


def _inspect(store: storage.BatchStore, last: int, since: datetime | None,
             until: datetime | None, *, as_json: bool) -> int:
    documents = batches.find_latest(store, last, since, until)
    if not documents:
        sys.stdout.write(batches.empty_window_text(store, since, until) + "\n")
        return 0
    if as_json:  # the documents as they are, unusable ones too
        sys.stdout.write(batches.format_json(documents) + "\n")
        return 0
    skipped = batches.SkippedDocuments()
    sys.stdout.write(batches.format_table(documents, skipped=skipped) + "\n")
    mix = posts.language_mix(batches.usable_batches(documents, batches.SkippedDocuments()))
    if mix:
        shown = "this batch" if len(documents) == 1 else f"these {len(documents)} batches"
        sys.stdout.write(f"languages of the posts of {shown}: "
                         f"{posts.format_language_mix(mix)}\n")
    if skipped.count:
        log.warning("%s", skipped.message())
    return 0


def _cases(store: storage.BatchStore, country: str | None, since: datetime | None,
           until: datetime | None, known_at: datetime | None) -> int:
    series = case_series.of_store(store)
    name, code = cases.resolve_country(series, country or cases.WORLD)
    world = name == cases.WORLD
    days = list(cases.world_days(series, since, until, known_at) if world
                else cases.country_days(series, name, since, until, known_at))
    if not days:
        what = "the world" if world else name
        sys.stdout.write(f"no case rows of {what} stored in {series.description}"
                         + ("" if world else " for these dates") + " (the job keeps them "
                         "with CASE_SERIES on)\n")
        return 0
    sys.stdout.write(cases.heading(name, code, days, world=world) + "\n")
    sys.stdout.write(cases.format_cases(days, world=world) + "\n")
    return 0


def load_cases(country: str | None = None, since: datetime | str | None = None,
               until: datetime | str | None = None, *, known_at: datetime | str | None = None,
               store: storage.BatchStore | None = None) -> pandas.DataFrame:
    """The case series as a pandas DataFrame, one row per country per date, by source,
    date and country, with the columns of ``analysis.cases.CASE_COLUMNS``: ``date`` and
    ``first_seen`` as UTC timestamps; ``new_cases``, ``cumulative_cases``,
    ``new_deaths``, ``cumulative_deaths`` as Int64, <NA> where the source left them
    blank (never 0); ``code`` a string (Namibia's is ``NA``, some are <NA>);
    ``revisions``: how many earlier versions WHO's revisions left.

    ``country``: None for every stored row; ``"World"`` for the world's figures per
    date (WHO's countries summed, ``rows`` saying how many; and worldometers' one
    row); else a code (``DE``) or a name. ``since`` (inclusive) / ``until``
    (exclusive): dates or ISO 8601 text, UTC. ``known_at``: the values as they were
    known then. The store is the one the settings name, unless ``store`` is given.
    Needs pandas (``pip install -r requirements-analysis.txt``). Raises
    UnknownCountryError for a country without stored rows.
    """
    export.require_pandas()
    bounds = [batches.parse_time(t) if isinstance(t, str) else t
              for t in (since, until, known_at)]
    if store is not None:
        return _cases_frame(store, country, *bounds)
    settings = config.load_settings("load_cases", config.STORE_OPTIONS, [])
    opened = storage.open_store(settings, create=False)
    try:
        return _cases_frame(opened, country, *bounds)
    finally:
        opened.close()


def _cases_frame(store: storage.BatchStore, country: str | None, since: datetime | None,
                 until: datetime | None, known_at: datetime | None) -> pandas.DataFrame:
    series = case_series.of_store(store)
    if country is None:
        return cases.cases_frame(cases.all_days(series, since, until, known_at))
    name, _ = cases.resolve_country(series, country)
    if name == cases.WORLD:
        return cases.cases_frame(cases.world_days(series, since, until, known_at))
    return cases.cases_frame(cases.country_days(series, name, since, until, known_at))


def load_posts(since: datetime | str | None = None, until: datetime | str | None = None,
               *, store: storage.BatchStore | None = None) -> pandas.DataFrame:
    """The posts stored from ``since`` (inclusive) to ``until`` (exclusive) as a pandas
    DataFrame, one row per post, with ``export``'s columns (and the post fields, when
    stored): times as UTC timestamps, counts as Int64 (null where unknown).

    ``since``/``until``: datetimes or ISO 8601 text (no offset means UTC). The store
    is the one the settings name (MONGODB_URI, else EMBEDDED_DB_PATH; the environment,
    then ``.env``), unless ``store`` is given. Needs pandas
    (``pip install -r requirements-analysis.txt``): without it, ImportError.
    """
    export.require_pandas()
    bounds = [batches.parse_time(t) if isinstance(t, str) else t for t in (since, until)]
    if store is not None:
        return export.posts_frame(store, *bounds)
    settings = config.load_settings("load_posts", config.STORE_OPTIONS, [])
    opened = storage.open_store(settings, create=False)
    try:
        return export.posts_frame(opened, *bounds)
    finally:
        opened.close()


if __name__ == "__main__":
    sys.exit(main())
