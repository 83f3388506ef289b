"""report.py with post fields stored (POST_FIELDS): typed Parquet export, load_posts
for notebooks, the language mix in inspect and plot --lang; on the embedded store
(through report.main, as a user runs it) and on mongomock (through the library)."""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mongomock
import pytest

import analysis.posts
import config
import report
import storage
import transform
from analysis.export import export_tweets
from analysis.figure import plot_report
from analysis.posts import NoPostFieldsError

pd = pytest.importorskip("pandas")
pq = pytest.importorskip("pyarrow.parquet")

T0 = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)
AS_OF = datetime(2024, 4, 13, tzinfo=UTC)


def post(n: int, lang: str | None, created: datetime | None = None) -> dict[str, Any]:
    return {"id": f"at://did:plc:a/app.bsky.feed.post/k{n}",
            "created_at": created or T0 - timedelta(seconds=n), "lang": lang,
            "url": f"https://bsky.app/profile/did:plc:a/post/k{n}"}


def documents() -> list[dict[str, Any]]:
    """Three batches 20 s apart with posts (en, pt, ja, none), the first without a
    count; then one batch stored before post fields were turned on."""
    batches = [
        (["masks on the tram", "vacina hoje"], [post(1, "en"), post(2, "pt")], None),
        (["booster done", "新型コロナ", "no tag here"],
         [post(3, "en"), post(4, "ja"), post(5, None, created=None)], 704_753_890),
        (["vacinação aberta"], [post(6, "pt")], 704_753_890),
    ]
    docs = []
    for i, (content, posts, count) in enumerate(batches):
        docs.append(transform.build_document(
            T0 + timedelta(seconds=20 * i), content, count,
            AS_OF if count else None, "worldometers" if count else None, posts=posts))
    docs[1]["posts"][2]["created_at"] = None  # unparseable on the wire: null
    docs.append(transform.build_document(T0 + timedelta(minutes=5), ["older, no posts"],
                                         704_753_890, AS_OF, "worldometers"))
    return docs


@pytest.fixture(autouse=True)
def no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in config.STORE_OPTIONS:
        monkeypatch.delenv(config.OPTIONS[name].env, raising=False)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "db"
    store = storage.open_store(config.Settings(embedded_db_path=path))
    for document in documents():
        store.write(document)
    store.close()
    yield path


@pytest.fixture
def mongo() -> storage.BatchStore:
    store = storage.BatchStore(mongomock.MongoClient(tz_aware=True).covid19.tweet_batches,
                               "mongomock")
    for document in documents():
        store.write(document)
    return store


def check_typed_frame(df: Any) -> None:
    """The frame of documents(): the export's columns, then the post fields, typed."""
    assert list(df.columns) == ["batch_id", "timestamp", "total_case_count",
                                "case_count_as_of", "case_count_source", "position", "text",
                                "id", "created_at", "lang", "url"]
    assert str(df["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert str(df["created_at"].dtype) == "datetime64[ms, UTC]"
    assert str(df["case_count_as_of"].dtype) == "datetime64[ms, UTC]"
    assert str(df["total_case_count"].dtype) == "Int64"
    assert str(df["position"].dtype) == "Int64"
    assert len(df) == 7
    assert df["text"].tolist()[:3] == ["masks on the tram", "vacina hoje", "booster done"]
    assert [None if pd.isna(v) else v for v in df["lang"]][:6] == ["en", "pt", "en", "ja",
                                                                    None, "pt"]
    assert df["created_at"].iloc[0] == pd.Timestamp(T0 - timedelta(seconds=1))
    assert pd.isna(df["created_at"].iloc[4])  # null, never the batch time
    assert pd.isna(df["total_case_count"].iloc[0])
    assert df["total_case_count"].iloc[2] == 704_753_890
    assert df["timestamp"].iloc[6] == pd.Timestamp(T0 + timedelta(minutes=5))
    assert pd.isna(df["id"].iloc[6])  # a batch stored before post fields: nulls


def test_parquet_export_reads_back_in_pandas_with_typed_columns(embedded, tmp_path) -> None:
    out = tmp_path / "posts.parquet"
    assert report.main(["export", "--format", "parquet", "--out", str(out),
                        "--embedded-db-path", str(embedded)]) == 0
    schema = pq.read_schema(out)
    assert str(schema.field("timestamp").type) == "timestamp[ms, tz=UTC]"
    assert str(schema.field("created_at").type) == "timestamp[ms, tz=UTC]"
    assert str(schema.field("total_case_count").type) == "int64"
    check_typed_frame(pd.read_parquet(out, dtype_backend="numpy_nullable"))


def test_parquet_is_written_in_row_groups(mongo, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(analysis.posts, "ROW_GROUP_ROWS", 2)
    out = tmp_path / "posts.parquet"
    assert export_tweets(mongo, out, "parquet") == 7
    # batches of 2, 3, 1 and 1 posts, a group flushed once it holds 2 or more
    assert pq.ParquetFile(out).metadata.num_row_groups == 3


def test_parquet_needs_a_file(embedded, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        report.main(["export", "--format", "parquet", "--embedded-db-path", str(embedded)])
    assert stop.value.code == 2
    assert "--format parquet needs --out FILE" in capsys.readouterr().err


def test_csv_export_has_the_post_fields_as_columns(mongo) -> None:
    out = io.StringIO()
    export_tweets(mongo, out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0]["created_at"] == "2026-11-30T07:59:59.000Z"
    assert (rows[0]["id"], rows[0]["lang"]) == ("at://did:plc:a/app.bsky.feed.post/k1", "en")
    assert rows[4]["created_at"] == rows[4]["lang"] == ""
    assert "author_id" not in rows[0]


def test_load_posts_reads_the_store_the_settings_name(embedded, monkeypatch) -> None:
    monkeypatch.setenv("EMBEDDED_DB_PATH", str(embedded))
    check_typed_frame(report.load_posts())
    window = report.load_posts(since="2026-11-30T08:00:20Z", until=T0 + timedelta(minutes=1))
    assert window["text"].tolist() == ["booster done", "新型コロナ", "no tag here",
                                       "vacinação aberta"]


def test_load_posts_on_mongodb(mongo) -> None:
    check_typed_frame(report.load_posts(store=mongo))
    empty = report.load_posts(since=T0 + timedelta(days=1), store=mongo)
    assert len(empty) == 0 and "text" in empty.columns


def test_load_posts_without_pandas_says_how_to_get_it(mongo, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError) as caught:
        report.load_posts(store=mongo)
    assert str(caught.value) == ("load_posts needs pandas, an optional extra: pip install -r "
                                 "requirements-analysis.txt")


def test_inspect_shows_the_language_mix(embedded, capsys) -> None:
    assert report.main(["inspect", "--embedded-db-path", str(embedded)]) == 0
    out = capsys.readouterr().out
    assert ("languages of the posts of these 4 batches: en 33% (2), pt 33% (2), "
            "ja 17% (1), none 17% (1)") in out


def test_inspect_without_post_fields_shows_no_language_line(tmp_path, capsys) -> None:
    path = tmp_path / "plain"
    store = storage.open_store(config.Settings(embedded_db_path=path))
    store.write(transform.build_document(T0, ["a post"], 1))
    store.close()
    assert report.main(["inspect", "--embedded-db-path", str(path)]) == 0
    assert "languages" not in capsys.readouterr().out


def test_plot_lang_counts_those_languages_only(mongo, tmp_path) -> None:
    summary = plot_report(mongo, tmp_path / "pt.png", langs=["PT"])
    assert (summary.batches, summary.tweets) == (3, 2)  # the older batch has no languages
    both = plot_report(mongo, tmp_path / "en-ja.png", langs=["en", "ja"])
    assert both.tweets == 3


def test_plot_lang_on_the_command_line(embedded, tmp_path) -> None:
    out = tmp_path / "en.png"
    assert report.main(["plot", "--lang", "en", "--out", str(out),
                        "--embedded-db-path", str(embedded)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_plot_lang_without_post_fields_is_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "plain"
    store = storage.open_store(config.Settings(embedded_db_path=path))
    store.write(transform.build_document(T0, ["a post"], 1))
    store.close()
    out = tmp_path / "en.png"
    with pytest.raises(SystemExit) as stop:
        report.main(["plot", "--lang", "en", "--out", str(out), "--embedded-db-path",
                     str(path)])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("report.py: ") and "has no post languages stored" in err[-1]
    assert not out.exists()


def test_plot_lang_on_a_store_without_languages_raises(tmp_path) -> None:
    store = storage.BatchStore(mongomock.MongoClient(tz_aware=True).db.c, "mongomock")
    store.write(transform.build_document(T0, ["a"], 1, posts=[{"id": "1"}]))
    with pytest.raises(NoPostFieldsError):
        plot_report(store, tmp_path / "x.png", langs=["en"])
