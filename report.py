"""Look at what the pipeline stored, without a Mongo shell.

Usage: report.py inspect [--last N] [--json] [--mongo-uri URI] [--embedded-db-path PATH] ...

    python report.py inspect             # the last 10 batches as a table
    python report.py inspect --json      # the same documents as MongoDB Extended JSON

Reads MONGODB_URI (or the embedded store when unset), MONGODB_DATABASE and
MONGODB_COLLECTION like the Spark job, from flags, the environment or .env.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bson import json_util

import config
import storage

EXTENDED_JSON = json_util.JSONOptions(
    json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=UTC
)


def format_table(documents: Sequence[dict[str, Any]], width: int = 60) -> str:
    """The documents as a fixed-width table: time, tweets, count, first tweet."""
    rows = [("batch time (UTC)", "tweets", "total cases", "first tweet")]
    for doc in documents:
        when = _as_utc(doc["timestamp"]).strftime("%Y-%m-%d %H:%M:%S")
        count = doc.get("total_case_count")
        first = doc["content"][0] if doc["content"] else ""
        if len(first) > width:
            first = first[: width - 1] + "…"
        rows.append((when, str(len(doc["content"])), "-" if count is None else f"{count:,}",
                     first))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}"
        for row in rows
    ]
    return "\n".join(lines)


def format_json(documents: Sequence[dict[str, Any]]) -> str:
    """The documents as MongoDB Extended JSON (dates as ``{"$date": ...}``), one per line."""
    return "\n".join(json_util.dumps(doc, json_options=EXTENDED_JSON, ensure_ascii=False)
                     for doc in documents)


def _as_utc(moment: datetime) -> datetime:
    # pymongo with tz_aware gives aware datetimes; MontyDB gives naive UTC ones
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="report.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser(
        "inspect", help="print the last stored batches",
        parents=[config.build_parser("report.py", "", config.STORE_OPTIONS, add_help=False)],
    )
    inspect.add_argument("--last", type=int, default=10, metavar="N",
                         help="how many of the most recent batches (default: 10)")
    inspect.add_argument("--json", action="store_true",
                         help="print MongoDB Extended JSON instead of a table")
    args = parser.parse_args(argv)
    settings = config.settings_from_args(parser, config.STORE_OPTIONS, args)
    config.configure_logging(settings)
    try:
        store = storage.open_store(settings)
    except storage.StoreError as err:
        parser.exit(1, f"report.py: error: {err}\n")
    try:
        documents = store.latest(max(args.last, 0))
    finally:
        store.close()
    if not documents:
        sys.stdout.write(f"no batches stored yet in {settings.store_description}\n")
        return 0
    sys.stdout.write((format_json(documents) if args.json else format_table(documents)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
