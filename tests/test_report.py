"""report.py: inspect, plot and export on both store kinds, and the README's queries.

Every store-level test runs twice: on the embedded store (MontyDB in SQLite
files, which hands back naive UTC datetimes; driven through ``report.main``
like a user would) and on mongomock standing in for MongoDB (aware datetimes;
driven through the library functions that take a BatchStore).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import mongomock
import pytest

import config
import report
import storage
import transform

T0 = datetime(2026, 11, 28, 23, 0, 0, tzinfo=UTC)
TRICKY = [
    'She said "stay home", then left',
    "commas, everywhere, COVID19",
    "Привет, мир: маски снова COVID19",
    "今日の新規感染者は850人でした。 新型コロナ",
    "it's a 'quoted' word and a \"double\" one",
]


def batch_documents() -> list[dict[str, Any]]:
    """Six batches 20 s apart from T0; the third has no count, the fifth has tricky texts."""
    contents = [
        ["Vaccination centres open late COVID19", "covid19 masks on the tram"],
        ["Got my booster today COVID19"],
        ["Rapid test negative", "Covid19 cases rising", "vaccines work"],
        ["Stay home if sick COVID19"],
        TRICKY,
        ["Masks still recommended on trains"],
    ]
    counts = [704_700_000, 704_700_000, None, 704_701_500, 704_701_500, 704_703_000]
    return [transform.build_document(T0 + timedelta(seconds=20 * i), content, count)
            for i, (content, count) in enumerate(zip(contents, counts, strict=True))]


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


EXPECTED_SIZE = (int(report.FIGSIZE[0] * report.DPI), int(report.FIGSIZE[1] * report.DPI))


# --------------------------------------------------------------------------
# inspect


def test_inspect_table(fixture: Fixture, capsys: pytest.CaptureFixture[str]) -> None:
    if fixture.kind == "embedded":
        assert fixture.cli("inspect", "--last", "3") == 0
        out = capsys.readouterr().out
    else:
        out = report.format_table(fixture.store.latest(3)) + "\n"
    lines = out.splitlines()
    assert lines[0].split() == ["batch", "time", "(UTC)", "tweets", "total", "cases",
                                "first", "tweet"]
    assert len(lines) == 4
    assert lines[1].startswith("2026-11-28 23:01:00")
    assert "704,701,500" in lines[1] and "stay home" in lines[2]
    assert lines[3].startswith("2026-11-28 23:01:40") and "704,703,000" in lines[3]


def test_inspect_json_and_null_count(fixture: Fixture, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    if fixture.kind == "embedded":
        assert fixture.cli("inspect", "--json") == 0
        out = capsys.readouterr().out
    else:
        out = report.format_json(fixture.store.latest(10))
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["_id"] for d in docs] == [d["_id"] for d in batch_documents()]
    assert docs[0]["timestamp"] == {"$date": "2026-11-28T23:00:00Z"}
    assert docs[2]["total_case_count"] is None
    assert docs[4]["content"] == TRICKY
    assert "-" in report.format_table(fixture.store.latest(6)).splitlines()[3].split()


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
        summary = report.plot_report(fixture.store, png, html_out=page, top=5)
        assert (summary.batches, summary.tweets, summary.latest_count) == (6, 13, 704_703_000)
    data = png.read_bytes()
    assert png_size(data) == EXPECTED_SIZE == (1000, 800)
    assert len(data) > 20_000  # three drawn panels, not a blank canvas
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert embedded is not None
    assert base64.b64decode(embedded.group(1)) == data
    for fact in ("<th>batches</th><td>6</td>", "<th>tweets</th><td>13</td>",
                 "<td>2026-11-28T23:00:00.000Z</td>", "<td>2026-11-28T23:01:40.000Z</td>",
                 "<td>704,703,000</td>", "<td>COVID19</td><td>7</td>"):
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
        summary = report.plot_report(fx.store, png, since=report.parse_time(since),
                                     until=report.parse_time(until))
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
        with pytest.raises(report.EmptyWindowError, match=r"no batches from .* to "):
            report.plot_report(fixture.store, png, since=T0 - timedelta(days=1), until=T0)
    assert not png.exists()


# --------------------------------------------------------------------------
# export


def expected_rows(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"batch_id": doc["_id"], "timestamp": doc["_id"],
         "total_case_count": doc["total_case_count"], "position": i, "text": text}
        for doc in documents for i, text in enumerate(doc["content"])
    ]


def run_export(fx: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str,
               *window: str, to_file: bool = False) -> str:
    """The export's text, through the CLI (embedded) or export_tweets (mongomock)."""
    if fx.kind == "embedded":
        out = ["--out", str(tmp_path / f"export.{fmt}")] if to_file else []
        assert fx.cli("export", "--format", fmt, *window, *out) == 0
        stdout = capsys.readouterr().out
        if to_file:
            assert stdout == ""
            return (tmp_path / f"export.{fmt}").read_text(encoding="utf-8")
        return stdout
    flags = dict(zip(window[::2], window[1::2], strict=True))
    since, until = (report.parse_time(flags[k]) if k in flags else None
                    for k in ("--since", "--until"))
    if to_file:
        path = tmp_path / f"export.{fmt}"
        report.export_tweets(fx.store, path, fmt, since=since, until=until)
        return path.read_text(encoding="utf-8")
    buffer = io.StringIO(newline="")
    report.export_tweets(fx.store, buffer, fmt, since=since, until=until)
    return buffer.getvalue()


@pytest.mark.parametrize("to_file", [False, True], ids=["stdout", "file"])
def test_export_csv_round_trips_through_the_csv_module(
    fixture: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str], to_file: bool
) -> None:
    text = run_export(fixture, tmp_path, capsys, "csv", to_file=to_file)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert list(rows[0]) == list(report.EXPORT_FIELDS)
    expected = [{k: ("" if v is None else str(v)) for k, v in row.items()}
                for row in expected_rows(batch_documents())]
    assert rows == expected
    assert [r["text"] for r in rows if r["batch_id"] == "2026-11-28T23:01:20.000Z"] == TRICKY
    assert {r["total_case_count"] for r in rows if r["batch_id"].endswith("23:00:40.000Z")} == {""}


def test_export_jsonl_parses_line_by_line(fixture: Fixture, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    text = run_export(fixture, tmp_path, capsys, "jsonl")
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows == expected_rows(batch_documents())
    assert rows[3]["total_case_count"] is None and rows[3]["position"] == 0
    assert "Привет" in text  # written as UTF-8, not \u escapes


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
        with pytest.raises(report.EmptyWindowError):
            report.export_tweets(fixture.store, buffer, "csv", since=T0 + timedelta(hours=1))
        assert buffer.getvalue() == ""
        with pytest.raises(report.EmptyWindowError):
            report.export_tweets(fixture.store, out, "csv", since=T0 + timedelta(hours=1))
    assert not out.exists()


def test_bad_window_flags_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["export", "--since", "yesterday"],
                 ["plot", "--since", "2026-11-29", "--until", "2026-11-28"],
                 ["plot", "--top", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            report.main(args)
        assert exit_info.value.code == 2
        assert "report.py" in capsys.readouterr().err


# --------------------------------------------------------------------------
# the pure pieces


def test_top_words_counts_case_insensitively_without_stop_words_or_numbers() -> None:
    texts = ["COVID19 masks on the tram", "covid19 Masks 2026 and COVID19", "a b I'm it's ok",
             "Covid19 маски маски"]
    assert report.top_words(texts, 3) == [("COVID19", 4), ("masks", 2), ("маски", 2)]
    assert ("ok", 1) in report.top_words(texts, 10)
    assert not {w.casefold() for w, _ in report.top_words(texts, 10)} & {
        "the", "and", "on", "i'm", "it's", "2026", "a", "b"}


def test_times_are_utc_whatever_the_store_returns() -> None:
    naive = {"_id": "x", "timestamp": datetime(2026, 11, 28, 23, 0), "content": ["a"],
             "total_case_count": None}
    aware = dict(naive, timestamp=T0.astimezone(timezone(timedelta(hours=1))))
    assert report.to_batch(naive).timestamp == report.to_batch(aware).timestamp == T0
    assert report.to_batch(naive).timestamp.tzinfo is UTC
    assert report.iso_z(datetime(2026, 11, 28, 23, 0, 5, 123456)) == "2026-11-28T23:00:05.123Z"
    assert report.parse_time("2026-11-28") == datetime(2026, 11, 28, tzinfo=UTC)
    assert report.parse_time("2026-11-29T00:00+01:00") == T0
    with pytest.raises(ValueError, match="not an ISO 8601"):
        report.parse_time("28/11/2026")


def test_summary_and_page_escape_text() -> None:
    batches = [report.to_batch(doc) for doc in batch_documents()]
    summary = report.summarize(batches)
    assert (summary.batches, summary.tweets) == (6, 13)
    assert (summary.first, summary.last) == (T0, T0 + timedelta(seconds=100))
    page = report.render_html(summary, [("<script>", 3)], b"\x89PNG", 'a "title" & <more>')
    assert "<script>" not in page
    assert "&lt;script&gt;" in page and "&quot;title&quot; &amp; &lt;more&gt;" in page


# --------------------------------------------------------------------------
# the README's "Using the data" queries, verbatim (pymongo versions)


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
    found["counts"] = [(report.as_utc(d["timestamp"]), d["total_case_count"]) for d in counts]

    batch_times = [doc["timestamp"] for doc in batches.find(
        {"content": {"$regex": r"\bvaccin", "$options": "i"}}, {"timestamp": 1},
    ).sort("timestamp", 1)]
    found["batch_times"] = [report.as_utc(t) for t in batch_times]

    if aggregate:
        mentions = batches.aggregate([
            {"$match": {"content": {"$regex": r"\bvaccin", "$options": "i"}}},
            {"$unwind": "$content"},
            {"$match": {"content": {"$regex": r"\bvaccin", "$options": "i"}}},
            {"$project": {"_id": 0, "timestamp": 1, "text": "$content"}},
            {"$sort": {"timestamp": 1}},
        ])
        found["mentions"] = [(report.as_utc(t["timestamp"]), t["text"]) for t in mentions]
    return found


def test_readme_queries(make_store: Callable[..., Fixture]) -> None:
    docs = batch_documents()
    # one more batch in the next hour, to see the grouping by hour
    docs.append(transform.build_document(T0 + timedelta(hours=1), ["Vaccines!", "ok"], 1))
    fx = make_store(docs)
    # MontyDB has no aggregate(); the README says so
    found = readme_queries(fx.store.collection, aggregate=fx.kind == "mongomock")
    assert found["counts"] == [(report.as_utc(d["timestamp"]), d["total_case_count"])
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
    batches = [report.to_batch(doc) for doc in batch_documents()]
    with caplog.at_level("WARNING", logger="report"):
        png = report.render_png(batches, [("新型コロナ", 3), ("COVID19", 2)], "title")
    assert png_size(png) == EXPECTED_SIZE
    assert [r.message for r in caplog.records if "font lacks" in r.message] == [
        "the figure's font lacks some characters of the words shown; they are drawn as boxes "
        "(the HTML page and the export have the real text)"]
    assert not [w for w in recwarn if "missing from font" in str(w.message)]
