"""report.py: inspect, plot and export on both store kinds, and the queries of
docs/using-the-data.md.

Every store-level test runs twice: on the embedded store (MontyDB in SQLite
files, which hands back naive UTC datetimes; driven through ``report.main``
like a user would) and on mongomock standing in for MongoDB (aware datetimes;
driven through the library functions that take a BatchStore).
"""

from __future__ import annotations

import ast
import base64
import csv
import gc
import inspect
import io
import json
import logging
import random
import re
import socket
import struct
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from itertools import chain
from pathlib import Path
from typing import Any

import mongomock
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import analysis.words
import config
import report
import storage
import transform
from analysis.batches import (
    MAX_BINS,
    Batch,
    EmptyWindowError,
    SkippedDocuments,
    UnusableDocumentError,
    as_utc,
    choose_binning,
    format_as_of,
    format_count,
    format_json,
    format_table,
    iso_z,
    parse_time,
    to_batch,
    usual_gap,
)
from analysis.digest import VolumeBins, WindowDigest, summarize
from analysis.export import EXPORT_FIELDS, csv_cell, export_tweets
from analysis.figure import (
    DPI,
    FIGSIZE,
    CountPanel,
    build_figure,
    count_panel_texts,
    plot_report,
    render_html,
    render_png,
)
from analysis.words import (
    PUNCTUATION,
    STOP_WORDS,
    WordCounter,
    count_chunks,
    count_tokens,
    merge_worker_tokens,
    rank_words,
    top_words,
)

T0 = datetime(2026, 11, 28, 23, 0, 0, tzinfo=UTC)
TRICKY = [
    'She said "stay home", then left',
    "commas, everywhere, COVID19",
    "Привет, мир: маски снова COVID19",
    "今日の新規感染者は850人でした。 新型コロナ",
    "it's a 'quoted' word and a \"double\" one",
]


#: worldometers' "Last updated: November 28, 2026, 09:00 GMT"
AS_OF = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
AS_OF_Z = "2026-11-28T09:00:00.000Z"


def with_count_info(document: dict[str, Any], as_of: datetime | None,
                    source: str | None) -> dict[str, Any]:
    """``document`` with the two fields every new document has."""
    return {**document, "case_count_as_of": as_of, "case_count_source": source}


def batch_documents() -> list[dict[str, Any]]:
    """Six batches 20 s apart from T0. The first two are older documents, without
    case_count_as_of and case_count_source; the third has no count (both null); the
    last three have worldometers' count as of AS_OF; the fifth has tricky texts."""
    contents = [
        ["Vaccination centres open late COVID19", "covid19 masks on the tram"],
        ["Got my booster today COVID19"],
        ["Rapid test negative", "Covid19 cases rising", "vaccines work"],
        ["Stay home if sick COVID19"],
        TRICKY,
        ["Masks still recommended on trains"],
    ]
    counts = [704_700_000, 704_700_000, None, 704_701_500, 704_701_500, 704_703_000]
    documents = [transform.build_document(T0 + timedelta(seconds=20 * i), content, count)
                 for i, (content, count) in enumerate(zip(contents, counts, strict=True))]
    for document in documents[:2]:  # older documents, as stored before the two fields
        document.pop("case_count_as_of", None)
        document.pop("case_count_source", None)
    documents[2] = with_count_info(documents[2], None, None)
    for i in (3, 4, 5):
        documents[i] = with_count_info(documents[i], AS_OF, "worldometers")
    return documents


@dataclass
class Fixture:
    kind: str
    store: storage.BatchStore
    path: Path | None  # the embedded store's folder

    def cli(self, *args: str) -> int:
        assert self.path is not None
        return report.main([*args, "--embedded-db-path", str(self.path)])


@pytest.fixture(autouse=True)
def no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No MONGODB_URI or .env from the developer's shell leaks into main(), and the
    root logger main() reconfigures is put back for the next test."""
    for name in config.STORE_OPTIONS:
        monkeypatch.delenv(config.OPTIONS[name].env, raising=False)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(params=["embedded", "mongomock"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path
               ) -> Iterator[Callable[[list[dict[str, Any]]], Fixture]]:
    """A factory: the given documents written with ``store.write`` to a fresh store."""
    opened: list[storage.BatchStore] = []

    def make(documents: list[dict[str, Any]]) -> Fixture:
        if request.param == "embedded":
            path = tmp_path / "db"
            store = storage.open_store(config.Settings(embedded_db_path=path))
        else:
            path = None
            store = storage.BatchStore(
                mongomock.MongoClient(tz_aware=True).covid19.tweet_batches, "mongomock")
        opened.append(store)
        for document in documents:
            store.write(document)
        return Fixture(request.param, store, path)

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def fixture(make_store: Callable[[list[dict[str, Any]]], Fixture]) -> Fixture:
    return make_store(batch_documents())


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails if it is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


EXPECTED_SIZE = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))


# --------------------------------------------------------------------------
# inspect


def test_inspect_table(fixture: Fixture, capsys: pytest.CaptureFixture[str]) -> None:
    if fixture.kind == "embedded":
        assert fixture.cli("inspect", "--last", "3") == 0
        out = capsys.readouterr().out
    else:
        out = format_table(fixture.store.latest(3)) + "\n"
    lines = out.splitlines()
    assert lines[0].split() == ["batch", "time", "(UTC)", "posts", "total", "cases",
                                "as", "of", "first", "post"]
    assert len(lines) == 4
    assert lines[1].startswith("2026-11-28 23:01:00")
    assert "704,701,500  2026-11-28 09:00 UTC  Stay home if sick COVID19" in lines[1]
    assert "stay home" in lines[2]
    assert lines[3].startswith("2026-11-28 23:01:40") and "704,703,000" in lines[3]
    # an older document (no case_count_as_of) and a batch without a count: "-"
    everything = format_table(fixture.store.latest(6)).splitlines()
    assert everything[1].split()[3:5] == ["704,700,000", "-"]
    assert everything[3].split()[3:5] == ["-", "-"]


def test_inspect_json_and_null_count(fixture: Fixture, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    if fixture.kind == "embedded":
        assert fixture.cli("inspect", "--json") == 0
        out = capsys.readouterr().out
    else:
        out = format_json(fixture.store.latest(10))
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["_id"] for d in docs] == [d["_id"] for d in batch_documents()]
    assert docs[0]["timestamp"] == {"$date": "2026-11-28T23:00:00Z"}
    assert docs[2]["total_case_count"] is None
    assert docs[4]["content"] == TRICKY
    assert "-" in format_table(fixture.store.latest(6)).splitlines()[3].split()


def test_inspect_empty_store(make_store: Callable[..., Fixture],
                             capsys: pytest.CaptureFixture[str]) -> None:
    empty = make_store([])
    if empty.kind == "embedded":
        assert empty.cli("inspect") == 0
        assert capsys.readouterr().out.startswith("no batches stored yet in embedded MontyDB")
    else:
        assert empty.store.latest(10) == []


# --------------------------------------------------------------------------
# plot


def test_plot_writes_a_png_of_the_expected_size_and_a_page(
    fixture: Fixture, tmp_path: Path
) -> None:
    png, page = tmp_path / "out" / "report.png", tmp_path / "out" / "report.html"
    png.parent.mkdir()
    if fixture.kind == "embedded":
        assert fixture.cli("plot", "--out", str(png), "--html", str(page), "--top", "5") == 0
    else:
        summary = plot_report(fixture.store, png, html_out=page, top=5,
                              keywords=config.DEFAULT_KEYWORDS)  # as the CLI reads them
        assert (summary.batches, summary.tweets, summary.latest_count) == (6, 13, 704_703_000)
        assert (summary.latest_count_as_of, summary.latest_count_source) == (
            AS_OF, "worldometers")
    data = png.read_bytes()
    assert png_size(data) == EXPECTED_SIZE == (1000, 800)
    assert len(data) > 20_000  # three drawn panels, not a blank canvas
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert embedded is not None
    assert base64.b64decode(embedded.group(1)) == data
    assert "<title>Covid-19 posts and case count, 2026-11-28 23:00:00" in text  # not tweets
    for fact in ("<th>batches</th><td>6</td>", "<th>posts</th><td>13</td>",
                 "<td>2026-11-28T23:00:00.000Z</td>", "<td>2026-11-28T23:01:40.000Z</td>",
                 "<td>704,703,000</td>", "the tracked keywords): COVID19 7",
                 "<th>latest count is as of</th><td>2026-11-28 09:00 UTC</td>",
                 "<th>case count source</th><td>worldometers</td>"):
        assert fact in text, fact


def test_plot_with_a_window_and_no_count_at_all(make_store: Callable[..., Fixture],
                                                tmp_path: Path) -> None:
    docs = [transform.build_document(T0 + timedelta(minutes=i), ["a <b> & c"], None)
            for i in range(3)]
    fx = make_store(docs)
    png = tmp_path / "window.png"
    since, until = "2026-11-28T23:01:00Z", "2026-11-28T23:02:00Z"
    if fx.kind == "embedded":
        assert fx.cli("plot", "--since", since, "--until", until, "--out", str(png)) == 0
    else:
        summary = plot_report(fx.store, png, since=parse_time(since),
                              until=parse_time(until))
        assert (summary.batches, summary.latest_count) == (1, None)
    assert png_size(png.read_bytes()) == EXPECTED_SIZE


def test_plot_an_empty_window_says_so_in_one_line_and_exits_1(
    fixture: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "none.png"
    if fixture.kind == "embedded":
        with pytest.raises(SystemExit) as exit_info:
            fixture.cli("plot", "--since", "2026-11-29", "--out", str(png))
        assert exit_info.value.code == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.count("\n") == 1
        assert captured.err.startswith(
            "report.py: no batches from 2026-11-29T00:00:00.000Z to now in embedded MontyDB")
    else:
        with pytest.raises(EmptyWindowError, match=r"no batches from .* to "):
            plot_report(fixture.store, png, since=T0 - timedelta(days=1), until=T0)
    assert not png.exists()


# --------------------------------------------------------------------------
# export


def expected_rows(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The export's rows of batch_documents(): as-of AS_OF_Z where there is one."""
    return [
        {"batch_id": doc["_id"], "timestamp": doc["_id"],
         "total_case_count": doc["total_case_count"],
         "case_count_as_of": None if doc.get("case_count_as_of") is None else AS_OF_Z,
         "case_count_source": doc.get("case_count_source"), "position": i, "text": text}
        for doc in documents for i, text in enumerate(doc["content"])
    ]


def read_export(path: Path) -> str:
    """A written export as it is on disk (no newline translation, as csv needs)."""
    with path.open(encoding="utf-8", newline="") as handle:
        return handle.read()


def run_export(fx: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str,
               *window: str, to_file: bool = False) -> str:
    """The export's text, through the CLI (embedded) or export_tweets (mongomock)."""
    if fx.kind == "embedded":
        out = ["--out", str(tmp_path / f"export.{fmt}")] if to_file else []
        assert fx.cli("export", "--format", fmt, *window, *out) == 0
        stdout = capsys.readouterr().out
        if to_file:
            assert stdout == ""
            return read_export(tmp_path / f"export.{fmt}")
        return stdout
    flags = dict(zip(window[::2], window[1::2], strict=True))
    since, until = (parse_time(flags[k]) if k in flags else None
                    for k in ("--since", "--until"))
    if to_file:
        path = tmp_path / f"export.{fmt}"
        export_tweets(fx.store, path, fmt, since=since, until=until)
        return read_export(path)
    buffer = io.StringIO(newline="")
    export_tweets(fx.store, buffer, fmt, since=since, until=until)
    return buffer.getvalue()


@pytest.mark.parametrize("to_file", [False, True], ids=["stdout", "file"])
def test_export_csv_round_trips_through_the_csv_module(
    fixture: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str], to_file: bool
) -> None:
    text = run_export(fixture, tmp_path, capsys, "csv", to_file=to_file)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert text.splitlines()[0] == ("batch_id,timestamp,total_case_count,case_count_as_of,"
                                    "case_count_source,position,text")
    assert list(rows[0]) == list(EXPORT_FIELDS)
    expected = [{k: ("" if v is None else str(v)) for k, v in row.items()}
                for row in expected_rows(batch_documents())]
    assert rows == expected
    assert [r["text"] for r in rows if r["batch_id"] == "2026-11-28T23:01:20.000Z"] == TRICKY
    assert {(r["total_case_count"], r["case_count_as_of"], r["case_count_source"])
            for r in rows if r["batch_id"].endswith("23:00:40.000Z")} == {("", "", "")}
    # older documents have neither field: empty cells next to their count
    assert {(r["total_case_count"], r["case_count_as_of"], r["case_count_source"])
            for r in rows if r["batch_id"].endswith("23:00:00.000Z")} == {
        ("704700000", "", "")}
    assert {(r["case_count_as_of"], r["case_count_source"])
            for r in rows if r["batch_id"].endswith("23:01:40.000Z")} == {
        (AS_OF_Z, "worldometers")}


def test_export_jsonl_parses_line_by_line(fixture: Fixture, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    text = run_export(fixture, tmp_path, capsys, "jsonl")
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows == expected_rows(batch_documents())
    assert list(rows[0]) == list(EXPORT_FIELDS)
    assert rows[3]["total_case_count"] is None and rows[3]["position"] == 0
    assert rows[3]["case_count_as_of"] is None and rows[3]["case_count_source"] is None
    assert (rows[0]["case_count_as_of"], rows[0]["case_count_source"]) == (None, None)
    assert (rows[-1]["case_count_as_of"], rows[-1]["case_count_source"]) == (
        AS_OF_Z, "worldometers")
    assert "Привет" in text  # written as UTF-8, not \u escapes


#: Texts a spreadsheet would run as formulas, and what CSV cells hold instead.
FORMULA_TEXTS = {
    '=HYPERLINK("http://example.invalid/x","click")':
        '\'=HYPERLINK("http://example.invalid/x","click")',
    "+1 for masks on trains": "'+1 for masks on trains",
    "-5 cases since Monday": "'-5 cases since Monday",
    "@SUM(1+1)*cmd|' /C calc'!A0": "'@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+2": "'\t=1+2",
    "\r=1+2": "'\r=1+2",
    # not at the start, or already quoted: as stored
    "masks = fewer cases": "masks = fewer cases",
    "'=quoted already": "'=quoted already",
    "\N{EN DASH}5 cases": "\N{EN DASH}5 cases",
}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_neutralises_formulas_in_csv_only(
    make_store: Callable[..., Fixture], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    document = with_count_info(
        transform.build_document(T0, list(FORMULA_TEXTS), 704_753_890), AS_OF, "worldometers")
    fx = make_store([document])
    text = run_export(fx, tmp_path, capsys, fmt, to_file=True)
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert [r["text"] for r in rows] == list(FORMULA_TEXTS.values())
        # the other columns are never formulas: dates, numbers, a source name
        assert rows[0]["total_case_count"] == "704753890"
        assert rows[0]["case_count_source"] == "worldometers"
    else:  # JSON Lines keep every text exactly
        assert [json.loads(line)["text"] for line in text.splitlines()] == list(FORMULA_TEXTS)


def test_csv_cell() -> None:
    for raw, cell in FORMULA_TEXTS.items():
        assert csv_cell(raw) == cell
    assert csv_cell(None) == ""
    assert csv_cell(-5) == -5  # a number is not a text (counts are never negative)
    assert csv_cell("") == ""


def test_export_help_says_what_csv_does_to_formulas(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    with pytest.raises(SystemExit) as exit_info:
        report.main(["export", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "case_count_as_of, case_count_source, position, text" in text
    assert ("a text cell starting with =, +, -, @, a tab or a carriage return gets a "
            "leading '") in text


def test_export_since_until_is_a_half_open_window(fixture: Fixture, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # 23:00:20 is in (inclusive), 23:01:00 is out (exclusive); offsets are converted
    text = run_export(fixture, tmp_path, capsys, "jsonl",
                      "--since", "2026-11-29T00:00:20+01:00", "--until", "2026-11-28T23:01:00")
    rows = [json.loads(line) for line in text.splitlines()]
    assert sorted({r["batch_id"] for r in rows}) == [
        "2026-11-28T23:00:20.000Z", "2026-11-28T23:00:40.000Z"]
    assert len(rows) == 4


def test_export_an_empty_window_exits_1_and_writes_nothing(
    fixture: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "empty.csv"
    if fixture.kind == "embedded":
        with pytest.raises(SystemExit) as exit_info:
            fixture.cli("export", "--until", "2026-11-28T22:00Z", "--out", str(out))
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert err.startswith("report.py: no batches from the start to 2026-11-28T22:00:00.000Z")
    else:
        buffer = io.StringIO()
        with pytest.raises(EmptyWindowError):
            export_tweets(fixture.store, buffer, "csv", since=T0 + timedelta(hours=1))
        assert buffer.getvalue() == ""
        with pytest.raises(EmptyWindowError):
            export_tweets(fixture.store, out, "csv", since=T0 + timedelta(hours=1))
    assert not out.exists()


def test_bad_window_flags_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["export", "--since", "yesterday"],
                 ["plot", "--since", "2026-11-29", "--until", "2026-11-28"],
                 ["plot", "--top", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            report.main(args)
        assert exit_info.value.code == 2
        assert "report.py" in capsys.readouterr().err


def test_window_errors_show_the_commands_own_usage(capsys: pytest.CaptureFixture[str]
                                                   ) -> None:
    for command in ("plot", "export", "inspect"):
        with pytest.raises(SystemExit) as exit_info:
            report.main([command, "--since", "2026-11-29", "--until", "2026-11-28"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"usage: report.py {command} ")
        assert err.endswith(f"report.py {command}: error: --since must be before --until\n")


@pytest.mark.parametrize("last", ["0", "-5"])
def test_inspect_last_must_be_at_least_1(last: str, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    with pytest.raises(SystemExit) as exit_info:
        report.main(["inspect", "--last", last])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1] == (
        f"report.py inspect: error: argument --last: {last} is not at least 1")


def test_inspect_takes_a_window(fixture: Fixture, capsys: pytest.CaptureFixture[str]) -> None:
    since, until = "2026-11-28T23:00:20Z", "2026-11-28T23:01:20Z"  # 3 of the 6 batches
    if fixture.kind == "embedded":
        assert fixture.cli("inspect", "--since", since, "--until", until, "--last", "2") == 0
        out = capsys.readouterr().out
        assert fixture.cli("inspect", "--since", "2026-11-30") == 0
        assert capsys.readouterr().out.startswith(
            "no batches from 2026-11-30T00:00:00.000Z to now in embedded MontyDB")
    else:
        out = format_table(report.batches.find_latest(
            fixture.store, 2, parse_time(since), parse_time(until))) + "\n"
    times = [line[:19] for line in out.splitlines()[1:]]
    assert times == ["2026-11-28 23:00:40", "2026-11-28 23:01:00"]


def test_a_missing_store_is_one_line_and_nothing_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "dta" / "db"
    for args in (["inspect"], ["plot", "--out", str(tmp_path / "r.png")], ["export"]):
        assert report.main([*args, "--embedded-db-path", str(typo)]) == 1
        err = capsys.readouterr().err
        assert err == (f"report.py: error: no store at {typo}: nothing stored yet? check "
                       "--embedded-db-path / EMBEDDED_DB_PATH\n")
    assert not (tmp_path / "dta").exists()
    assert not (tmp_path / "r.png").exists()


def test_inspect_on_an_unreachable_mongodb_is_one_short_line(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"mongodb://user:pw@127.0.0.1:{port}/?serverSelectionTimeoutMS=300"
    assert report.main(["inspect", "--mongo-uri", uri]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Topology" not in err and ":pw@" not in err
    assert f"127.0.0.1:{port}: connection refused (after 0.3 s); start MongoDB" in err


@pytest.mark.parametrize("command", [["plot", "--out"], ["plot", "--html"],
                                     ["export", "--out"]])
def test_an_output_folder_that_does_not_exist_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    path = tmp_path / "db"
    store = storage.open_store(config.Settings(embedded_db_path=path))
    for document in batch_documents():
        store.write(document)
    store.close()
    missing = tmp_path / "no" / "such"
    assert report.main([*command, str(missing / "report.out"), "--embedded-db-path",
                        str(path)]) == 1
    err = capsys.readouterr().err
    assert err == f"report.py: error: no folder {missing} to write into (create it first)\n"
    assert not (tmp_path / "no").exists()
    assert not (tmp_path / "report.png").exists()


#: Documents the pipeline never writes, but another writer (or a hand) might.
BROKEN = [
    {"_id": "no-time", "content": ["masks again"], "total_case_count": 1},
    {"_id": "text", "timestamp": T0 + timedelta(seconds=5), "content": "one text, not a list",
     "total_case_count": 1},
    {"_id": "count", "timestamp": T0 + timedelta(seconds=6), "content": ["a"],
     "total_case_count": "704 million"},
    {"_id": "time", "timestamp": "2026-11-28T23:00:07Z", "content": ["b"]},
]


def test_unusable_documents_are_skipped_and_counted_in_one_line() -> None:
    skipped = SkippedDocuments()
    good = [to_batch(d) for d in batch_documents()[:2]]
    found = list(report.batches.usable_batches(
        [batch_documents()[0], *BROKEN, batch_documents()[1]], skipped))
    assert found == good
    assert skipped.message() == (
        "skipped 4 documents with missing or wrongly typed fields (content not a list of "
        "texts: 1, no timestamp: 1, timestamp not a date: 1, total_case_count not a whole "
        "number: 1)")
    with pytest.raises(UnusableDocumentError, match="no content"):
        to_batch({"_id": "x", "timestamp": T0})
    assert to_batch({"_id": "x", "timestamp": T0, "content": [],
                     "total_case_count": 7.0}).total_case_count == 7


def test_reports_skip_unusable_documents_instead_of_crashing(
    make_store: Callable[..., Fixture], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture
) -> None:
    fx = make_store([*batch_documents(), *BROKEN])
    warning = ("skipped 4 documents with missing or wrongly typed fields (content not a "
               "list of texts: 1, no timestamp: 1, timestamp not a date: 1, total_case_count "
               "not a whole number: 1)")
    out = tmp_path / "rows.jsonl"
    if fx.kind == "embedded":
        assert fx.cli("export", "--format", "jsonl", "--out", str(out)) == 0
        assert fx.cli("plot", "--out", str(tmp_path / "r.png")) == 0
        assert fx.cli("inspect", "--last", "20") == 0
        captured = capsys.readouterr()
        assert len(captured.out.splitlines()) == 1 + 6  # the header and the usable six
        warned = [line for line in captured.err.splitlines() if "skipped" in line]
        assert len(warned) == 3 and all(line.endswith(warning) for line in warned)
    else:
        with caplog.at_level("WARNING", logger="report"):
            export_tweets(fx.store, out, "jsonl")
            summary = plot_report(fx.store, tmp_path / "r.png")
        assert (summary.batches, summary.tweets) == (6, 13)
        assert [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()] == [
            warning, warning]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 13  # no row per character of "one text, not a list"
    assert {r["batch_id"] for r in rows} == {d["_id"] for d in batch_documents()}
    assert png_size((tmp_path / "r.png").read_bytes()) == EXPECTED_SIZE


def test_a_window_of_unusable_documents_only_is_empty(make_store: Callable[..., Fixture],
                                                      tmp_path: Path) -> None:
    fx = make_store(BROKEN[1:])
    with pytest.raises(EmptyWindowError, match=r"^no usable batches stored yet in .*; "
                                               r"skipped 3 documents"):
        plot_report(fx.store, tmp_path / "r.png")


class StreamedDocuments:
    """A collection that hands out generated documents one at a time and, once the
    last one is out, notes what the reader still holds of the earlier ones."""

    name = "streamed"

    def __init__(self, documents: int, texts: int) -> None:
        self.documents, self.texts = documents, texts
        self.batches_alive = self.texts_held = -1
        self.database = mongomock.MongoClient().covid19  # its siblings: no case series

    def find(self, *args: Any, **kwargs: Any) -> StreamedDocuments:
        return self

    def sort(self, *args: Any) -> StreamedDocuments:
        return self

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.documents):
            moment = T0 + timedelta(seconds=20 * i)
            yield {"_id": transform.batch_id(moment), "timestamp": moment,
                   "content": [f"kept{i}x{j} covid masks" for j in range(self.texts)],
                   "total_case_count": 1_000 + i // 100}
        gc.collect()
        alive = gc.get_objects()
        self.batches_alive = sum(isinstance(o, Batch) for o in alive)
        self.texts_held = sum(len(o) for o in alive if isinstance(o, list) and o
                              and isinstance(o[0], str) and o[0].startswith("kept"))


def test_plot_keeps_counts_not_the_batches_or_their_texts(tmp_path: Path) -> None:
    """#15: plot held every text of the window (peak memory grew with the texts).
    When the last document is read, what is still held of the earlier ones must be
    at most one batch and one chunk of texts waiting for a word-counting worker."""
    documents, texts = 1_100, 100  # 110,000 texts: two chunks go to the worker
    collection = StreamedDocuments(documents, texts)
    summary = plot_report(storage.BatchStore(collection, "streamed"), tmp_path / "r.png",
                          workers=1)
    assert (summary.batches, summary.tweets) == (documents, documents * texts)
    assert summary.latest_count == 1_010
    assert collection.batches_alive <= 2
    assert collection.texts_held <= analysis.words.WORD_CHUNK + 2 * texts


# --------------------------------------------------------------------------
# the pure pieces


def test_top_words_counts_case_insensitively_without_stop_words_or_numbers() -> None:
    texts = ["COVID19 masks on the tram", "covid19 Masks 2026 and COVID19", "a b I'm it's ok",
             "Covid19 маски маски"]
    assert top_words(texts, 3) == [("COVID19", 4), ("masks", 2), ("маски", 2)]
    assert ("ok", 1) in top_words(texts, 10)
    assert not {w.casefold() for w, _ in top_words(texts, 10)} & {
        "the", "and", "on", "i'm", "it's", "2026", "a", "b"}


def test_times_are_utc_whatever_the_store_returns() -> None:
    naive = {"_id": "x", "timestamp": datetime(2026, 11, 28, 23, 0), "content": ["a"],
             "total_case_count": None}
    aware = dict(naive, timestamp=T0.astimezone(timezone(timedelta(hours=1))))
    assert to_batch(naive).timestamp == to_batch(aware).timestamp == T0
    assert to_batch(naive).timestamp.tzinfo is UTC
    assert iso_z(datetime(2026, 11, 28, 23, 0, 5, 123456)) == "2026-11-28T23:00:05.123Z"
    assert parse_time("2026-11-28") == datetime(2026, 11, 28, tzinfo=UTC)
    assert parse_time("2026-11-29T00:00+01:00") == T0
    with pytest.raises(ValueError, match="not an ISO 8601"):
        parse_time("28/11/2026")


def test_summary_and_page_escape_text() -> None:
    batches = [to_batch(doc) for doc in batch_documents()]
    summary = summarize(batches)
    assert (summary.batches, summary.tweets) == (6, 13)
    assert (summary.first, summary.last) == (T0, T0 + timedelta(seconds=100))
    page = render_html(summary, [("<script>", 3)], b"\x89PNG", 'a "title" & <more>')
    assert "<script>" not in page
    assert "&lt;script&gt;" in page and "&quot;title&quot; &amp; &lt;more&gt;" in page


def test_times_of_the_count_are_utc_and_missing_fields_are_none() -> None:
    naive = {"_id": "x", "timestamp": datetime(2026, 11, 28, 23, 0), "content": ["a"],
             "total_case_count": 5, "case_count_as_of": datetime(2026, 11, 28, 9, 0),
             "case_count_source": "worldometers"}  # as MontyDB gives them back
    aware = dict(naive, case_count_as_of=AS_OF.astimezone(timezone(timedelta(hours=-5))))
    for document in (naive, aware):
        batch = to_batch(document)
        assert batch.case_count_as_of == AS_OF and batch.case_count_as_of.tzinfo is UTC
        assert batch.case_count_source == "worldometers"
    older = {k: v for k, v in naive.items() if not k.startswith("case_count_")}
    assert to_batch(older).case_count_as_of is None
    assert to_batch(older).case_count_source is None


def test_summary_knows_the_latest_counts_as_of_and_sources() -> None:
    batches = [to_batch(doc) for doc in batch_documents()]
    summary = summarize(batches)
    assert summary.latest_count == 704_703_000
    assert (summary.latest_count_as_of, summary.latest_count_source) == (AS_OF, "worldometers")
    assert summary.count_sources == ("worldometers",)
    older = summarize(batches[:3])  # the latest count has no as-of nor source
    assert (older.latest_count, older.latest_count_as_of, older.count_sources) == (
        704_700_000, None, ())
    page = render_html(older, [], b"", "t")
    assert "<th>latest count is as of</th><td>not recorded</td>" in page
    assert "<th>case count source</th><td>\N{EN DASH}</td>" in page


# --- the figure's texts: counts, bins, the case count panel


def test_format_count_uses_thousands_separators_never_exponents() -> None:
    assert format_count(1_891_850) == "1,891,850"
    assert format_count(1.89185e6) == "1,891,850"  # a float tick value
    assert format_count(704_753_890.0) == "704,753,890"
    assert format_count(0) == "0"
    assert format_count(999) == "999"
    assert format_count(2.5) == "2.5"
    assert format_count(12_345.678) == "12,345.68"
    assert format_count(-1_000) == "-1,000"


def test_format_as_of() -> None:
    assert format_as_of(datetime(2024, 4, 13, tzinfo=UTC)) == "2024-04-13"
    assert format_as_of(datetime(2024, 4, 13)) == "2024-04-13"  # naive is UTC
    assert format_as_of(AS_OF) == "2026-11-28 09:00 UTC"
    assert format_as_of(AS_OF.astimezone(timezone(timedelta(hours=1)))) == (
        "2026-11-28 09:00 UTC")
    assert format_as_of(None) == "-"


def batch(seconds: float, tweets: int = 1, count: int | None = None,
          as_of: datetime | None = None, source: str | None = None,
          start: datetime = T0) -> Batch:
    moment = start + timedelta(seconds=seconds)
    return Batch(transform.batch_id(moment), moment, ("covid",) * tweets, count,
                 as_of, source)


def test_count_panel_names_the_source_and_the_as_of_date() -> None:
    who = datetime(2026, 11, 22, tzinfo=UTC)
    panel = count_panel_texts(summarize([
        batch(0, count=778_041_233, as_of=who, source="who"),
        batch(20, count=778_052_871, as_of=who, source="who")]))
    assert panel == CountPanel("Total Covid-19 case count (WHO)",
                               "778,052,871 as of 2026-11-22")
    stopped = datetime(2024, 4, 13, tzinfo=UTC)
    panel = count_panel_texts(summarize(
        [batch(0, count=704_753_890, as_of=stopped, source="worldometers"), batch(20)]))
    assert panel == CountPanel("Total Covid-19 case count (worldometers)",
                               "704,753,890 as of 2024-04-13")


def test_count_panel_says_when_sources_are_mixed_or_unknown() -> None:
    mixed = count_panel_texts(summarize([
        batch(0, count=704_753_890, as_of=AS_OF, source="worldometers"),
        batch(20, count=778_052_871, as_of=datetime(2026, 11, 22, tzinfo=UTC), source="who"),
    ]))
    assert mixed.title == "Total Covid-19 case count (mixed sources: worldometers, WHO)"
    assert mixed.note == "778,052,871 as of 2026-11-22"
    older = count_panel_texts(summarize([batch(0, count=704_700_000)]))
    assert older == CountPanel("Total Covid-19 case count (source not recorded)",
                               "704,700,000, as-of date not recorded")
    partly = count_panel_texts(summarize([batch(0, count=1),
                                          batch(20, count=2, as_of=AS_OF, source="who")]))
    assert partly.title == "Total Covid-19 case count (WHO, some unrecorded)"
    assert count_panel_texts(summarize([batch(0), batch(20)])) == CountPanel(
        "Total Covid-19 case count", None)


def test_the_usual_gap_is_the_most_frequent_one() -> None:
    assert usual_gap({20: 9, 40: 2, 5: 1}) == timedelta(seconds=20)
    assert usual_gap({5: 3, 20: 3}) == timedelta(seconds=5)  # the shorter among equals
    assert usual_gap({}) is None


@pytest.mark.parametrize(("span", "at_least", "unit", "title", "bins"), [
    (timedelta(minutes=5) - timedelta(seconds=20), timedelta(seconds=20), "minute",
     "Posts per minute", 5),
    (timedelta(hours=6) - timedelta(seconds=20), timedelta(seconds=20), "minute",
     "Posts per minute", 360),
    (timedelta(hours=6), timedelta(seconds=20), "hour", "Posts per hour", 7),
    (timedelta(days=1), timedelta(seconds=20), "hour", "Posts per hour", 25),
    (timedelta(days=7) - timedelta(seconds=20), timedelta(seconds=20), "hour",
     "Posts per hour", 168),
    (timedelta(days=90), timedelta(seconds=20), "day", "Posts per day", 91),
    (timedelta(hours=1), timedelta(minutes=2), "hour", "Posts per hour", 2),
    (timedelta(0), None, "minute", "Posts per minute", 1),
])
def test_volume_bins_are_the_finest_that_fit(span: timedelta, at_least: timedelta | None,
                                             unit: str, title: str, bins: int) -> None:
    binning = choose_binning(T0, T0 + span, at_least)
    assert (binning.unit, binning.title) == (unit, title)
    edges = binning.edges(T0, T0 + span)
    assert len(edges) - 1 == bins <= MAX_BINS
    assert edges[0] <= T0 and T0 + span < edges[-1]


def bin_posts(batches: list[Batch]) -> tuple[str, list[datetime], list[int]]:
    binning, edges, posts = WindowDigest.of(batches).volume.result()
    return binning.unit, edges, posts


def test_bins_hold_zeros_where_nothing_was_stored_and_sum_parts() -> None:
    batches = [batch(0, 2), batch(20, 1), batch(400, 3), batch(400, 4),  # 400 s: two parts
               batch(420, 1), batch(440, 1)]
    unit, edges, posts = bin_posts(batches)
    assert (unit, posts) == ("minute", [3, 0, 0, 0, 0, 0, 7, 2])
    assert edges[0] == T0 and len(edges) == 9
    # clock hours: 23:59:40 and 00:00:00 fall in different bins, 01:00 is empty
    late = datetime(2026, 11, 28, 23, 59, 40, tzinfo=UTC)
    hours = [batch(0, 5, start=late), batch(20, 6, start=late),
             batch(3 * 3600, 7, start=late), batch(6 * 3600, 1, start=late)]  # 05:59:40
    unit, edges, posts = bin_posts(hours)
    assert (unit, posts) == ("hour", [5, 6, 0, 7, 0, 0, 1])
    assert edges[0] == datetime(2026, 11, 28, 23, 0, tzinfo=UTC)


def test_a_few_minutes_are_drawn_per_batch() -> None:
    """Three 5 s batches were one flat bin of a whole minute ("Posts per minute")."""
    three = [batch(0, 46), batch(5, 25), batch(10, 14)]
    binning, edges, posts = WindowDigest.of(three).volume.result()
    assert (binning.title, posts) == ("Posts per batch (5 s)", [46, 25, 14])
    assert edges == [T0 + timedelta(seconds=s) for s in (-5, 0, 5, 10)]
    # a batch split in two parts is one bin; batches further apart have a 0 between
    parted = [batch(0, 2), batch(20, 1), batch(200, 3), batch(200, 4), batch(220, 1),
              batch(240, 1)]
    unit, edges, posts = bin_posts(parted)
    assert (unit, posts) == ("batch", [2, 1, 0, 7, 1, 1])
    assert edges[2:4] == [T0 + timedelta(seconds=20), T0 + timedelta(seconds=180)]
    # past a few minutes, per minute again; a single batch has no batch length: per minute
    assert bin_posts([batch(20 * i, 1) for i in range(20)])[0] == "minute"
    assert bin_posts([batch(0, 3)])[0] == "minute"


def test_mixed_batch_lengths_are_drawn_per_minute_not_per_common_divisor() -> None:
    """A 5 s `make demo`, then a 20 s `make run`: the 20 s batches were drawn as
    20, 0, 0, 0, ... (per 5 s, the divisor of all gaps); per minute both are true."""
    demo = [batch(5 * i, 1) for i in range(24)]  # 2 minutes, 12 posts a minute
    run_start = T0 + timedelta(minutes=10)
    run = [batch(20 * i, 20, start=run_start) for i in range(30)]  # 10 minutes, 60 a minute
    unit, edges, posts = bin_posts(demo + run)
    assert unit == "minute" and len(edges) - 1 == len(posts) == 20
    assert posts[:2] == [12, 12] and posts[2:10] == [0] * 8
    assert posts[10:] == [60] * 10


def test_volume_is_never_binned_finer_than_the_usual_batch() -> None:
    """Two-minute batches per minute would show every other minute as 0."""
    slow = [batch(120 * i, 4) for i in range(20)]  # 40 minutes
    unit, _, posts = bin_posts(slow)
    assert unit == "hour" and posts == [80]


def test_volume_bins_stay_few_while_batches_stream_by() -> None:
    """A week is counted per hour as it is read: never more than MAX_BINS bins held."""
    volume = VolumeBins()
    held = 0
    for i in range(7 * 24 * 180):  # a week of 20 s batches
        volume.add(T0 + timedelta(seconds=20 * i), 2)
        held = max(held, volume.held)
    binning, _, posts = volume.result()
    assert binning.unit == "hour" and len(posts) == 168 and set(posts) == {360}
    assert held <= MAX_BINS + 1


def test_a_week_is_drawn_as_hourly_steps_with_readable_numbers() -> None:
    """What the week in the issue looked like: 30,240 batches, a word seen 1.9 M times."""
    who = datetime(2026, 11, 22, tzinfo=UTC)
    batches = [batch(20 * i, 1, 778_052_871, who, "who") for i in range(30_240)]
    figure = build_figure(WindowDigest.of(batches), [("COVID19", 1_891_850), ("masks", 23)],
                          "week")
    figure.canvas.draw()
    volume, count, words = figure.axes
    assert volume.get_title(loc="left") == "Posts per hour"
    assert volume.get_ylabel() == "posts"
    assert len(volume.patches) == 2  # the steps and their fill, not 30,240 bars
    steps = volume.patches[1].get_data().values
    assert len(steps) == 168 and set(steps) == {180}
    assert count.get_title(loc="left") == "Total Covid-19 case count (WHO)"
    assert [t.get_text() for t in count.texts] == ["778,052,871 as of 2026-11-22"]
    assert {"1,891,850", "23"} <= {t.get_text() for t in words.texts}
    word_ticks = [label.get_text() for label in words.get_xticklabels()]
    assert len(word_ticks) > 2 and "0" in word_ticks
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*", tick) for tick in word_ticks), word_ticks
    assert any(len(tick) == len("800,000") for tick in word_ticks), word_ticks
    count_ticks = [label.get_text() for label in count.get_yticklabels()]
    assert "778,050,000" in count_ticks
    assert volume.yaxis.get_major_formatter()(12_000, 0) == "12,000"
    ticks = [label.get_text() for ax in figure.axes
             for label in (*ax.get_xticklabels(), *ax.get_yticklabels())]
    assert not [t for t in ticks if "e+" in t or "1e" in t]


# --- top_words: the fast count gives exactly what the old one gave

OLD_WORD = re.compile(r"\w+(?:['\N{RIGHT SINGLE QUOTATION MARK}]\w+)*")


def old_top_words(texts: Iterable[str], top: int = 15) -> list[tuple[str, int]]:
    """top_words before the fast count (commit 2633540), verbatim but for names."""
    counts: Counter[str] = Counter()
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    for text in texts:
        for token in OLD_WORD.findall(text):
            key = token.casefold()
            if len(key) < 2 or key.isdigit() or key in STOP_WORDS:
                continue
            counts[key] += 1
            spellings[key][token] += 1
    return [(spellings[key].most_common(1)[0][0], n) for key, n in counts.most_common(top)]


def old_token_counts(texts: Iterable[str]) -> list[tuple[str, int]]:
    return list(Counter(chain.from_iterable(map(OLD_WORD.findall, texts))).items())


# pieces chosen to hit every path: case folding that changes length (ß, ﬁ, İ), digits
# that are not ASCII, apostrophes of both kinds and doubled, underscores, combining
# marks (not word characters), stop words in any case, punctuation around words, and
# every kind of whitespace (str.split splits on all of them)
FRAGMENTS = ("covid", "COVID19", "Covid19", "the", "The", "THE", "don't",
             "don\N{RIGHT SINGLE QUOTATION MARK}t", "it's", "I'm", "a", "B", "42", "٣", "²",
             "½", "ß", "SS", "ss", "Straße", "STRASSE",
             "İstanbul", "ǅ", "ﬁne", "Σ", "\N{GREEK SMALL LETTER SIGMA}", "ς", "_", "__init__",
             "'",
             "\N{RIGHT SINGLE QUOTATION MARK}", "''", "-", ",",
             ".", "!", "(", ")", "#", "@", "é", "e\u0301", "コロナ", "新型", "маски",
             "Маски", "1,000", "x'y", "'quoted'", "covid-19", "(masks)", "word,", "¿qué?")
SEPARATORS = (" ", "  ", "\n", "\t", "\u00a0", "\u3000", "\x1c", "\x85", "\u2028", "")
TEXTS = st.lists(
    st.lists(st.tuples(st.sampled_from(FRAGMENTS), st.sampled_from(SEPARATORS)), max_size=12)
    .map(lambda parts: "".join(f + sep for f, sep in parts)),
    max_size=25,
) | st.lists(st.text(max_size=40), max_size=10)


@settings(max_examples=400, deadline=None)
@given(texts=TEXTS, top=st.integers(min_value=-1, max_value=30),
       chunk=st.integers(min_value=1, max_value=6))
def test_top_words_is_exactly_the_old_top_words(texts: list[str], top: int,
                                                 chunk: int) -> None:
    assert top_words(texts, top) == old_top_words(texts, top)
    # the counts and the order tokens are first seen in (it breaks ties) are the same
    assert list(count_tokens(texts).items()) == old_token_counts(texts)
    counter = WordCounter(workers=0, chunk=chunk)  # chunked as plot_report does
    for text in texts:
        counter.add([text])
    assert list(counter.tokens().items()) == old_token_counts(texts)


def test_the_fast_paths_agree_with_the_regex_on_every_character() -> None:
    """count_tokens' shortcuts hold for all of Unicode: str.isalnum is \\w less "_",
    str.split's whitespace is never part of a token, nor is _PUNCTUATION."""
    word = re.compile(r"\w")
    apostrophes = "'\N{RIGHT SINGLE QUOTATION MARK}"
    disagree = [code for code in range(0x110000)
                if chr(code).isalnum() != (word.match(chr(code)) is not None
                                           and chr(code) != "_")]
    assert disagree == []
    spaces = [chr(code) for code in range(0x110000) if chr(code).isspace()]
    assert not [c for c in spaces if word.match(c) or c in apostrophes]
    assert not [c for c in PUNCTUATION if word.match(c) or c in apostrophes]


def corpus(count: int) -> list[str]:
    rng = random.Random(9)
    return [" ".join(rng.choices(FRAGMENTS, k=rng.randint(0, 15))) for _ in range(count)]


def test_word_counter_on_worker_processes_counts_the_same() -> None:
    texts = corpus(3_000)
    with WordCounter(workers=2, chunk=250) as counter:
        for start in range(0, len(texts), 40):
            counter.add(texts[start:start + 40])
        assert len(counter._processes) == 2  # the chunks really went to other processes
        tokens = counter.tokens()
    assert list(tokens.items()) == old_token_counts(texts)
    assert rank_words(tokens, 10) == old_top_words(texts, 10)


def test_word_counter_workers_start_when_report_runs_as_a_script(tmp_path: Path) -> None:
    """Run as ``python report.py`` or under ``python -m cProfile report.py``, this file
    is not the module ``report``: the workers must still find their function."""
    script = tmp_path / "as_script.py"
    script.write_text(textwrap.dedent(f"""
        import runpy, sys
        sys.path.insert(0, {str(Path(report.__file__).parent)!r})
        if __name__ == "__main__":
            space = runpy.run_path({report.__file__!r}, run_name="__profiled__")
            texts = ["masks on trains", "COVID19 masks"] * 100
            with space["words"].WordCounter(workers=2, chunk=30) as counter:
                counter.add(texts)
                counter.add(texts)
                assert len(counter._processes) == 2
                print(sorted(counter.tokens().items()))
    """), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "[('COVID19', 200), ('masks', 400), ('on', 200), ('trains', 200)]")
    assert "counting" not in done.stderr


def test_merging_the_workers_counts_keeps_first_seen_order() -> None:
    # chunks 0 and 2 went to worker 0, chunk 1 to worker 1
    worker_0 = count_chunks([(0, "b a a"), (2, "a, d")])
    assert worker_0 == [(0, [("b", 1), ("a", 3)]), (2, [("d", 1)])]
    worker_1 = count_chunks([(1, "c a d d d d d")])
    merged = merge_worker_tokens([worker_0, worker_1])
    assert list(merged.items()) == [("b", 1), ("a", 4), ("c", 1), ("d", 6)]


@settings(max_examples=200, deadline=None)
@given(texts=TEXTS, chunk=st.integers(min_value=1, max_value=5),
       workers=st.integers(min_value=1, max_value=3))
def test_workers_counts_merged_are_the_old_counts(texts: list[str], chunk: int,
                                                  workers: int) -> None:
    """WordCounter's workers, without the processes: chunks dealt out in turn."""
    chunks = [" ".join(texts[i:i + chunk]) for i in range(0, len(texts), chunk)]
    dealt = [[(n, c) for n, c in enumerate(chunks) if n % workers == w]
             for w in range(workers)]
    merged = merge_worker_tokens(count_chunks(mine) for mine in dealt)
    assert list(merged.items()) == old_token_counts(texts)


def test_word_counter_counts_here_when_a_worker_dies(caplog: pytest.LogCaptureFixture
                                                     ) -> None:
    texts = corpus(1_000)
    with caplog.at_level("WARNING", logger="report"), \
            WordCounter(workers=2, chunk=200, recount=lambda: iter(texts)) as counter:
        counter.add(texts[:600])
        counter._processes[1].kill()
        counter.add(texts[600:])
        tokens = counter.tokens()
    assert list(tokens.items()) == old_token_counts(texts)
    assert [r.message for r in caplog.records] == [
        "word-counting process report-words-1 ended without its counts; counting the "
        "words in this process instead"]


def test_word_counter_without_recount_says_a_worker_failed() -> None:
    """The texts sent to a worker are not kept: without a way to read them again, a
    dead worker is an error, never a silently short count."""
    texts = corpus(1_000)
    with WordCounter(workers=2, chunk=200) as counter:
        counter.add(texts[:600])
        counter._processes[1].kill()
        counter.add(texts[600:])
        with pytest.raises(analysis.words.WorkerError, match="report-words-1 ended"):
            counter.tokens()


class NoProcesses:
    """A multiprocessing context that cannot start anything (no semaphores, say)."""

    def Queue(self) -> None:  # noqa: N802  (multiprocessing's name)
        raise OSError("[Errno 38] Function not implemented")


def test_word_counter_counts_here_without_processes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(analysis.words.multiprocessing, "get_context", lambda method: NoProcesses())
    texts = corpus(500)
    with caplog.at_level("INFO", logger="report"), \
            WordCounter(workers=2, chunk=100) as counter:
        counter.add(texts)
        counter.add(texts)
        tokens = counter.tokens()
    assert list(tokens.items()) == old_token_counts(texts + texts)
    assert [r.message for r in caplog.records] == [
        "counting words in this process (no worker processes: [Errno 38] Function not "
        "implemented)"]


# --------------------------------------------------------------------------
# the queries of docs/using-the-data.md, verbatim (pymongo versions)


def readme_queries(batches: Any, *, aggregate: bool) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    if aggregate:
        per_hour = batches.aggregate([
            {"$group": {
                "_id": {"$dateToString": {"format": "%Y-%m-%dT%H:00Z", "date": "$timestamp"}},
                "tweets": {"$sum": {"$size": "$content"}},
                "batches": {"$sum": 1},
            }},
            {"$sort": {"_id": 1}},
        ])
        found["per_hour"] = [(h["_id"], h["tweets"], h["batches"]) for h in per_hour]

    counts = batches.find(
        {"total_case_count": {"$ne": None}},
        {"_id": 0, "timestamp": 1, "total_case_count": 1},
    ).sort("timestamp", 1)
    found["counts"] = [(as_utc(d["timestamp"]), d["total_case_count"]) for d in counts]

    batch_times = [doc["timestamp"] for doc in batches.find(
        {"content": {"$regex": r"\bvaccin", "$options": "i"}}, {"timestamp": 1},
    ).sort("timestamp", 1)]
    found["batch_times"] = [as_utc(t) for t in batch_times]

    if aggregate:
        mentions = batches.aggregate([
            {"$match": {"content": {"$regex": r"\bvaccin", "$options": "i"}}},
            {"$unwind": "$content"},
            {"$match": {"content": {"$regex": r"\bvaccin", "$options": "i"}}},
            {"$project": {"_id": 0, "timestamp": 1, "text": "$content"}},
            {"$sort": {"timestamp": 1}},
        ])
        found["mentions"] = [(as_utc(t["timestamp"]), t["text"]) for t in mentions]
    return found


def test_readme_queries(make_store: Callable[..., Fixture]) -> None:
    docs = batch_documents()
    # one more batch in the next hour, to see the grouping by hour
    docs.append(transform.build_document(T0 + timedelta(hours=1), ["Vaccines!", "ok"], 1))
    fx = make_store(docs)
    # MontyDB has no aggregate(); the page says so
    found = readme_queries(fx.store.collection, aggregate=fx.kind == "mongomock")
    assert found["counts"] == [(as_utc(d["timestamp"]), d["total_case_count"])
                               for d in docs if d["total_case_count"] is not None]
    assert found["batch_times"] == [T0, T0 + timedelta(seconds=40), T0 + timedelta(hours=1)]
    if fx.kind == "mongomock":
        assert found["per_hour"] == [("2026-11-28T23:00Z", 13, 6), ("2026-11-29T00:00Z", 2, 1)]
        assert found["mentions"] == [
            (T0, "Vaccination centres open late COVID19"),
            (T0 + timedelta(seconds=40), "vaccines work"),
            (T0 + timedelta(hours=1), "Vaccines!"),
        ]
    else:
        with pytest.raises(NotImplementedError):
            fx.store.collection.aggregate([])


def test_missing_glyphs_are_one_log_line_not_a_warning_per_character(
    caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    batches = [to_batch(doc) for doc in batch_documents()]
    with caplog.at_level("WARNING", logger="report"):
        png = render_png(WindowDigest.of(batches), [("新型コロナ", 3), ("COVID19", 2)],
                         "title")
    assert png_size(png) == EXPECTED_SIZE
    assert [r.message for r in caplog.records if "font lacks" in r.message] == [
        "the figure's font lacks some characters of the words shown; they are drawn as boxes "
        "(the HTML page and the export have the real text)"]
    assert not [w for w in recwarn if "missing from font" in str(w.message)]


def test_the_queries_run_here_are_the_ones_the_docs_show() -> None:
    page = (Path(__file__).parent.parent / "docs" / "using-the-data.md").read_text(
        encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page.split("\n## Queries\n", 1)[1], re.S)
    shown = {ast.dump(node) for block in blocks for node in ast.parse(block).body
             if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) != "batches"}
    run = {ast.dump(node) for node in ast.walk(ast.parse(textwrap.dedent(
        inspect.getsource(readme_queries)))) if isinstance(node, ast.Assign)}
    assert len(shown) == 4
    assert shown <= run
