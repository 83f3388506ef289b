"""Look at and use what the pipeline stored, without a Mongo shell.

    python report.py inspect                 # the last 10 batches as a table
    python report.py inspect --json          # the same documents as MongoDB Extended JSON
    python report.py plot --out report.png   # post volume, case count, top words
    python report.py plot --since 2026-11-28T23:00Z --html report.html
    python report.py export --format csv --out tweets.csv   # one row per post

``--since`` (inclusive) and ``--until`` (exclusive) take ISO 8601 times; a time
without an offset is UTC. Reads MONGODB_URI (or the embedded store when unset),
MONGODB_DATABASE and MONGODB_COLLECTION like the Spark job, from flags, the
environment or .env; a store that does not exist is an error, never created.

``plot`` counts the posts per minute, hour or day (the finest that fits the
figure, at most MAX_BINS bins, and not shorter than the usual batch), and shows
the source and as-of date of the case counts. Documents without a timestamp, or
with a field of another type, are left out and counted in one warning line at
the end. In a CSV export a text cell
that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets
a leading ``'`` so that a spreadsheet shows it instead of running it as a
formula; JSON Lines keep every text exactly as stored.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

import config
import storage
from analysis import batches, export, figure, words

log = logging.getLogger("report")


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


def build_parser() -> argparse.ArgumentParser:
    """The ``report.py`` parser: ``inspect``, ``plot`` and ``export``."""
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

    plot = commands.add_parser(
        "plot", parents=[window, store_flags],
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

    export_command = commands.add_parser(
        "export", parents=[window, store_flags],
        help="one row per post as CSV or JSON Lines",
        description=(
            "One row per post, columns " + ", ".join(export.EXPORT_FIELDS) + ". Times are "
            "ISO 8601 UTC with Z; an unknown count, as-of time or source is an empty cell "
            "(CSV) or null (JSON Lines). CSV only: a text cell starting with =, +, -, @, "
            "a tab or a carriage return gets a leading ' so that a spreadsheet shows it "
            "instead of running it as a formula; JSON Lines keep the texts exactly."
        ),
    )
    export_command.add_argument("--format", choices=("csv", "jsonl"), default="csv",
                                help="csv (default; formula-like texts get a leading ') "
                                     "or jsonl (texts exactly as stored)")
    export_command.add_argument("--out", type=Path, metavar="FILE",
                                help="file to write (default: standard output)")
    return parser, {"inspect": inspect, "plot": plot, "export": export_command}


def _missing_folder(args: argparse.Namespace) -> Path | None:
    """The first folder that an output file (``--out``, ``--html``) would go in and
    that does not exist."""
    for out in (getattr(args, "out", None), getattr(args, "html", None)):
        if out is not None and not out.parent.is_dir():
            return out.parent
    return None


def main(argv: list[str] | None = None) -> int:
    """Run ``report.py`` with ``argv`` (default: the command line); the exit status. A
    usage error, an unusable or missing store, a missing output folder or an empty
    window exits with one line on stderr."""
    parser, commands = _build_parsers()
    args = parser.parse_args(argv)
    settings = config.settings_from_args(parser, config.STORE_OPTIONS, args)
    config.configure_logging(settings)
    since, until = args.since, args.until
    if since and until and since >= until:
        commands[args.command].error("--since must be before --until")
    missing = _missing_folder(args)
    if missing is not None:
        parser.exit(1, f"report.py: error: no folder {missing} to write into (create it "
                       "first)\n")
    try:
        store = storage.open_store(settings, create=False)
    except storage.StoreError as err:
        parser.exit(1, f"report.py: error: {err}\n")
    try:
        if args.command == "inspect":
            return _inspect(store, args.last, since, until, as_json=args.json)
        if args.command == "plot":
            figure.plot_report(store, args.out, since=since, until=until,
                               html_out=args.html, top=args.top,
                               workers=words.word_workers())
        else:
            export.export_tweets(store, args.out or sys.stdout, args.format, since=since,
                                 until=until)
    except batches.EmptyWindowError as err:
        parser.exit(1, f"report.py: {err}\n")
    except BrokenPipeError:  # `report.py export | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # an output file that cannot be written
        if err.filename is None:
            raise
        parser.exit(1, f"report.py: error: cannot write {err.filename}: "
                       f"{err.strerror or err}\n")
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
    if skipped.count:
        log.warning("%s", skipped.message())
    return 0


if __name__ == "__main__":
    sys.exit(main())
