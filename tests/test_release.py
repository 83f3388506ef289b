"""report.py release: a window of stored batches (post fields on, WHO's case series
beside them, with revisions) written as a dataset to publish, read back as a
researcher reads it (pandas, sha256sum), the same bytes twice, and refused in one
line where it cannot be written."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mongomock
import pytest
from test_case_series import FIRST, LATER, SECOND, SEEN, file_of, rows_of
from wire_lines import SECRET, delete, records, sealed
from wire_lines import post as wire_post

import config
import report
import scrape
import storage
import transform
import wire_records
from analysis import card, release, release_facts
from job.writer import BatchWriter
from storage import case_series

pd = pytest.importorskip("pandas")
pq = pytest.importorskip("pyarrow.parquet")

#: the post fields of issue 24's run
FIELDS = ("id", "created_at", "lang", "reply_to", "quote_of", "hashtags", "links")
T0 = datetime(2025, 3, 10, 23, 59, 20, tzinfo=UTC)  # two batches before midnight
AS_OF = datetime(2025, 3, 3, tzinfo=UTC)
SINCE, UNTIL = "2025-03-10", "2025-03-12"
POST = "app.bsky.feed.post"
RELEASE_FILES = {"posts.parquet", "cases.parquet", "ids.txt", "coverage.json", "keywords.csv",
                 "DATASET.md", "SHA256SUMS"}


def stored_post(n: int) -> dict[str, Any]:
    """A post as POST_FIELDS=id,created_at,lang,reply_to,quote_of,hashtags,links stores
    it: replies, quotes, tags and links on some, null elsewhere."""
    return {"id": f"at://did:plc:a/{POST}/k{n}",
            "created_at": T0 - timedelta(seconds=n) if n % 4 else None,
            "lang": ("en", "pt", None)[n % 3],
            "reply_to": f"at://did:plc:p/{POST}/p{n}" if n % 5 == 1 else None,
            "quote_of": f"at://did:plc:q/{POST}/q{n}" if n % 5 == 2 else None,
            "hashtags": ["COVID19", "masks"] if n % 5 == 3 else None,
            "links": ["https://who.int/x"] if n % 5 == 0 else None}


def batch_documents(fields: tuple[str, ...] | None = FIELDS) -> list[dict[str, Any]]:
    """Five 20 s batches across midnight (2 days) with 1-4 posts each, WHO's count
    beside all but the first; the texts include a formula-like one and a newline-free
    CJK one. ``fields`` None: post fields off."""
    documents, n = [], 0
    for i, size in enumerate((2, 3, 1, 4, 2)):
        texts = [f"=masks {n + k} 新型コロナ" if (n + k) % 7 == 0 else f"post {n + k} vaccine"
                 for k in range(size)]
        posts = None
        if fields is not None:
            posts = [{name: value for name, value in stored_post(n + k).items()
                      if name in fields} for k in range(size)]
        count = None if i == 0 else 38_438_070
        documents.append(transform.build_document(
            T0 + timedelta(seconds=20 * i), texts, count, AS_OF if count else None,
            "who" if count else None, posts=posts))
        n += size
    return documents


def fill(store: storage.BatchStore, fields: tuple[str, ...] | None = FIELDS) -> None:
    for document in batch_documents(fields):
        store.write(document)
    series = case_series.of_store(store)
    series.store(file_of(SEEN, 6), rows_of(FIRST))
    series.store(file_of(LATER, 7), rows_of(SECOND))  # revises two rows, adds one


@pytest.fixture
def embedded(tmp_path: Path) -> Path:
    path = tmp_path / "db"
    store = storage.open_store(config.Settings(embedded_db_path=path))
    fill(store)
    store.close()
    return path


def run_release(db: Path, out: Path, *extra: str, since: str = SINCE,
                until: str = UNTIL) -> int:
    return main(["release", "--embedded-db-path", str(db), "--since", since,
                 "--until", until, "--out", str(out), *extra])


def main(argv: list[str]) -> int:
    """report.main's exit status, whether it returns it or exits with it."""
    try:
        return report.main(argv)
    except SystemExit as exited:
        return int(exited.code or 0)


def released(cli_env: None, embedded: Path, tmp_path: Path) -> Path:
    out = tmp_path / "release"
    assert run_release(embedded, out) == 0
    return out


@pytest.fixture
def out(cli_env: None, embedded: Path, tmp_path: Path) -> Path:
    return released(cli_env, embedded, tmp_path)


def stored_posts(db: Path) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(document, text, post) of every stored post, in batch order."""
    store = storage.open_store(config.Settings(embedded_db_path=db), create=False)
    try:
        documents = list(store.window())
    finally:
        store.close()
    return [(doc, text, post) for doc in documents
            for text, post in zip(doc["content"], doc["posts"], strict=True)]


# --- the files -------------------------------------------------------------------------


def test_a_release_writes_every_file_with_one_row_per_stored_post(
        out: Path, embedded: Path) -> None:
    assert {p.name for p in out.iterdir()} == RELEASE_FILES
    posts = pd.read_parquet(out / "posts.parquet", dtype_backend="numpy_nullable")
    stored = stored_posts(embedded)
    assert len(posts) == len(stored) == 12
    assert list(posts.columns) == ["batch_id", "timestamp", "total_case_count",
                                   "case_count_as_of", "case_count_source", "position",
                                   "text", *FIELDS]
    for (_, row), (doc, text, post) in zip(posts.iterrows(), stored, strict=True):
        assert row["text"] == text  # exactly as stored: no formula guard in Parquet
        assert row["batch_id"] == doc["_id"]
        assert row["timestamp"] == doc["timestamp"].replace(tzinfo=UTC)
        assert row["id"] == post["id"]
        for name in ("reply_to", "quote_of", "lang"):  # the conversation fields as stored
            assert (None if pd.isna(row[name]) else row[name]) == post[name], name
        for name in ("hashtags", "links"):
            value = row[name]
            assert (None if value is None else list(value)) == post[name], name
        created = post["created_at"]
        assert (pd.isna(row["created_at"]) if created is None
                else row["created_at"] == created.replace(tzinfo=UTC))
        if doc["total_case_count"] is None:
            assert pd.isna(row["total_case_count"]) and pd.isna(row["case_count_as_of"])
        else:  # the case figure beside the post, with its date and source
            assert row["total_case_count"] == 38_438_070
            assert row["case_count_as_of"] == AS_OF and row["case_count_source"] == "who"
    assert posts["total_case_count"].dtype == "Int64"  # whole numbers, null where unknown
    ids = (out / "ids.txt").read_text(encoding="utf-8")
    assert ids == "".join(post["id"] + "\n" for _, _, post in stored)


def test_cases_parquet_holds_every_stored_version_of_each_row(
        out: Path, embedded: Path) -> None:
    cases = pd.read_parquet(out / "cases.parquet", dtype_backend="numpy_nullable")
    store = storage.open_store(config.Settings(embedded_db_path=embedded), create=False)
    try:
        series = case_series.of_store(store)
        rows = list(series.rows())
        last_load = series.last_load("who")["seen"].replace(tzinfo=UTC)
    finally:
        store.close()
    assert len(rows) == 7 and sum(bool(r.get("revisions")) for r in rows) == 2
    expected = []
    for row in rows:  # the earlier values, oldest first, then the current ones
        for number, old in enumerate(row.get("revisions") or [], start=1):
            expected.append((row["date"], row["country"], number, False, old["code"],
                             old["new_cases"], old["cumulative_cases"], old["first_seen"],
                             old["last_seen"]))
        expected.append((row["date"], row["country"], len(row.get("revisions") or []) + 1,
                         True, row["code"], row["new_cases"], row["cumulative_cases"],
                         row["first_seen"], last_load))
    got = [(r.date.to_pydatetime(), r.country, r.version, r.current,
            None if pd.isna(r.code) else r.code,
            None if pd.isna(r.new_cases) else int(r.new_cases),
            None if pd.isna(r.cumulative_cases) else int(r.cumulative_cases),
            r.first_seen.to_pydatetime(), r.last_seen.to_pydatetime())
           for r in cases.itertuples()]
    assert got == expected
    namibia = cases[(cases.country == "Namibia") & (cases.date == "2025-03-01")]
    assert list(namibia.new_cases) == [3, 4]  # WHO revised 3 to 4: both kept
    assert list(namibia.code) == ["NA", "NA"]  # Namibia's code, never a missing value
    assert set(cases.source) == {"who"}


def test_sha256sum_checks_every_other_file(out: Path) -> None:
    sums = (out / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    assert sorted(line.split("  ", 1)[1] for line in sums) == sorted(
        RELEASE_FILES - {"SHA256SUMS"})
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK") == len(RELEASE_FILES) - 1
    (out / "ids.txt").write_text("at://tampered\n", encoding="utf-8")
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out,
                          capture_output=True, check=False).returncode == 1


def test_the_card_says_what_the_window_holds(out: Path) -> None:
    text = (out / "DATASET.md").read_text(encoding="utf-8")
    assert text.startswith("# Covid-19 posts and case counts, 2025-03-10 to 2025-03-12\n")
    assert "12 posts (Bluesky)" in text and "in 5 batches" in text
    assert "| 2025-03-10 | 2 | 5 | 0 |" in text  # posts per day: batches, posts, removed
    assert "| 2025-03-11 | 3 | 7 | 0 |" in text
    assert "| en | 4 | 33.3% |" in text and "| none | 4 | 33.3% |" in text
    assert "WHO: 4 batches, figures as of 2025-03-03" in text
    assert "1 batch has no count (none was known yet)" in text
    assert "7 rows (WHO 7) of 4 countries, dated 2025-03-01 to 2025-03-03; 2 of them " \
           "revised later, 9 versions in all" in text
    assert "emoji dropped" in text  # the cleaning rules, copied
    assert "public.api.bsky.app/xrpc/app.bsky.feed.getPosts" in text
    assert "1,500,000 Post IDs" in text  # X's terms on sharing ids, not texts
    version = release.software_version(report.PROJECT)
    assert f"version `{version}`" in text and version != "unknown"
    assert "@misc{covid19posts20250310," in text


def test_two_releases_of_the_same_store_differ_only_in_the_generated_at_line(
        cli_env: None, embedded: Path, tmp_path: Path) -> None:
    store = storage.open_store(config.Settings(embedded_db_path=embedded), create=False)
    since, until = datetime(2025, 3, 10, tzinfo=UTC), datetime(2025, 3, 12, tzinfo=UTC)
    try:
        for name, hour in (("one", 9), ("two", 17)):
            release.write_release(store, tmp_path / name, since, until, version="v1",
                                  generated_at=datetime(2026, 12, 7, hour, tzinfo=UTC))
    finally:
        store.close()
    one, two = tmp_path / "one", tmp_path / "two"
    for name in RELEASE_FILES - {"DATASET.md", "SHA256SUMS"}:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    card_one = (one / "DATASET.md").read_text(encoding="utf-8").splitlines()
    card_two = (two / "DATASET.md").read_text(encoding="utf-8").splitlines()
    differ = [(a, b) for a, b in zip(card_one, card_two, strict=True) if a != b]
    assert differ == [tuple(f"Generated at 2026-12-07T{h}:00:00Z (the only line that "
                            "differs between two releases of the same store)."
                            for h in ("09", "17"))]
    sums_one = (one / "SHA256SUMS").read_text().splitlines()
    sums_two = (two / "SHA256SUMS").read_text().splitlines()
    assert [a for a, b in zip(sums_one, sums_two, strict=True) if a != b] == [sums_one[0]]
    assert sums_one[0].endswith("  DATASET.md")
    metadata = pq.ParquetFile(one / "posts.parquet").metadata
    assert metadata.created_by.startswith("parquet-cpp-arrow version ")  # no time in it
    assert set(metadata.metadata) == {b"ARROW:schema"}  # no pandas metadata


def test_a_large_window_is_written_a_file_per_day_and_read_in_one_call(
        cli_env: None, embedded: Path, tmp_path: Path) -> None:
    store = storage.open_store(config.Settings(embedded_db_path=embedded), create=False)
    since, until = datetime(2025, 3, 10, tzinfo=UTC), datetime(2025, 3, 12, tzinfo=UTC)
    try:
        big = release.write_release(store, tmp_path / "big", since, until, version="v1",
                                    one_file_posts=5)
        small = release.write_release(store, tmp_path / "small", since, until,
                                      version="v1")
    finally:
        store.close()
    assert [n for n in big.files if n.startswith("posts")] == [
        "posts/2025-03-10.parquet", "posts/2025-03-11.parquet"]
    assert pq.ParquetFile(big.folder / "posts/2025-03-10.parquet").metadata.num_rows == 5
    by_day = pd.read_parquet(big.folder / "posts", dtype_backend="numpy_nullable")
    one_file = pd.read_parquet(small.folder / "posts.parquet", dtype_backend="numpy_nullable")
    pd.testing.assert_frame_equal(by_day, one_file)  # one call reads either layout
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=big.folder,
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "posts/2025-03-11.parquet: OK" in checked.stdout
    assert "one file per UTC day" in (big.folder / "DATASET.md").read_text()


def test_posts_stored_without_ids_give_no_ids_file_and_say_why(
        cli_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "db"
    store = storage.open_store(config.Settings(embedded_db_path=db))
    fill(store, fields=None)  # post fields off, the default
    store.close()
    assert run_release(db, tmp_path / "out") == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == RELEASE_FILES - {"ids.txt"}
    said = [line.split(" report: ", 1)[1] for line in capsys.readouterr().err.splitlines()
            if " WARNING " in line]
    assert said == ["no ids.txt: the posts were stored without ids (POST_FIELDS without "
                    "id), and posts stored without ids cannot be rehydrated"]
    text = (tmp_path / "out" / "DATASET.md").read_text(encoding="utf-8")
    assert "posts stored without ids cannot be rehydrated" in text
    assert "Not stored (the pipeline's `POST_FIELDS` did not name `lang`)" in text
    posts = pd.read_parquet(tmp_path / "out" / "posts.parquet")
    assert len(posts) == 12 and "id" not in posts.columns


def test_a_mongodb_store_gives_the_same_release(cli_env: None, embedded: Path,
                                                tmp_path: Path) -> None:
    client = mongomock.MongoClient()
    mongo = storage.BatchStore(client["covid19"]["tweet_batches"], "mongomock", client)
    fill(mongo)
    embedded_store = storage.open_store(config.Settings(embedded_db_path=embedded),
                                        create=False)
    since, until = datetime(2025, 3, 10, tzinfo=UTC), datetime(2025, 3, 12, tzinfo=UTC)
    moment = datetime(2026, 12, 7, tzinfo=UTC)
    try:
        for name, store in (("mongo", mongo), ("embedded", embedded_store)):
            release.write_release(store, tmp_path / name, since, until, version="v1",
                                  generated_at=moment)
    finally:
        embedded_store.close()
    for name in RELEASE_FILES - {"cases.parquet", "DATASET.md", "SHA256SUMS"}:
        assert ((tmp_path / "mongo" / name).read_bytes()
                == (tmp_path / "embedded" / name).read_bytes()), name
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "mongo" / "cases.parquet"),
                                  pd.read_parquet(tmp_path / "embedded" / "cases.parquet"))


# --- refused in one line ------------------------------------------------------------------


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_out_folder_that_holds_anything_is_never_written_over(
        out: Path, embedded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert run_release(embedded, out) == 1
    assert one_line_error(capsys) == (
        f"report.py: error: --out {out} exists and is not empty: a release is never "
        "written over another (name a new folder)")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir() if ".partial" in p.name] == []


def test_an_empty_out_folder_takes_a_release_even_named_as_the_current_one(
        cli_env: None, embedded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    assert run_release(embedded, Path(".")) == 0
    assert {p.name for p in (tmp_path / "empty").iterdir()} == RELEASE_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "empty"]


def test_an_empty_window_writes_nothing(cli_env: None, embedded: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run_release(embedded, tmp_path / "nothing", since="2026-01-01",
                       until="2026-01-02") == 1
    line = one_line_error(capsys)
    assert line.startswith("report.py: no batches from 2026-01-01T00:00:00.000Z to "
                           "2026-01-02T00:00:00.000Z in "), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]  # no folder, no leftover


@pytest.mark.parametrize(("args", "expected"), [
    (["--embedded-db-path", "{tmp}/nowhere"], "report.py: error: no store at "),
    (["--out", "{tmp}/missing/out"], "report.py: error: no folder {tmp}/missing to write"),
    (["--out", "{tmp}/db/file"], "report.py: error: --out {tmp}/db/file exists and is not "
                                 "a folder"),
    (["--out", "{tmp}/link"], "report.py: error: --out {tmp}/link is a symbolic link"),
])
def test_a_missing_store_or_folder_is_one_line(
        cli_env: None, embedded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        args: list[str], expected: str) -> None:
    (embedded / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    values = {"--embedded-db-path": str(embedded), "--out": str(tmp_path / "out")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        values[flag] = value.format(tmp=tmp_path)
    argv = ["release", "--since", SINCE, "--until", UNTIL]
    for flag, value in values.items():
        argv += [flag, value]
    assert main(argv) == 1
    assert one_line_error(capsys).startswith(expected.format(tmp=tmp_path))
    assert not (tmp_path / "out").exists()


def test_a_release_that_fails_midway_leaves_nothing(
        cli_env: None, embedded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(facts: release_facts.Facts) -> str:
        raise OSError(28, "No space left on device", str(tmp_path / "x" / "DATASET.md"))

    monkeypatch.setattr(card, "dataset_card", full_disk)
    assert run_release(embedded, tmp_path / "out") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


def test_the_software_version_is_unknown_outside_a_checkout(tmp_path: Path) -> None:
    shutil.copy(report.PROJECT / "report.py", tmp_path / "report.py")
    assert release.software_version(tmp_path) == "unknown"
    described = subprocess.run(["git", "describe", "--always", "--dirty"],
                               cwd=report.PROJECT, capture_output=True, text=True,
                               check=True).stdout.strip()
    assert release.software_version(report.PROJECT) == described


# --- what the ledger says: coverage, keywords, deletions ------------------------------------


LEDGER_FIELDS = ("id", "lang", "matched")
HOST = "wss://jetstream1.us-east.bsky.network/subscribe"
SOURCE_T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def bluesky(n: int) -> str:
    return f"at://did:plc:a/{POST}/k{n}"


def ledger_store(db: Path, tmp_path: Path) -> None:
    """What the job stores from a producer's wire lines: a keyword set, a span read, posts,
    a gap, a delete of a stored post, then another keyword set and a post."""
    store = storage.open_store(config.Settings(embedded_db_path=db))
    durable = storage.DurableStore(store, storage.Spool(tmp_path / "spool.jsonl"), ())
    reading = scrape.CaseCount(704_753_890, datetime(2024, 4, 13, tzinfo=UTC),
                               "worldometers", fresh=True)
    writer = BatchWriter(durable, lambda: reading, secret=SECRET, post_fields=LEDGER_FIELDS)
    batches = [
        [sealed(1, wire_records.filter_record("bluesky", keywords=["covid", "covid19"])),
         sealed(2, wire_records.coverage_record(
             "span-1", "bluesky", HOST, SOURCE_T0, SOURCE_T0 + timedelta(minutes=2),
             events=600, posts=60, matched=5)),
         *(wire_post(n, bluesky(n), lang="en", matched=["covid"]) for n in (3, 4, 5))],
        [wire_post(6, bluesky(6), matched=["covid19"]), wire_post(7, bluesky(7)),
         sealed(8, wire_records.gap_record(
             "bluesky", HOST, SOURCE_T0 + timedelta(minutes=2),
             SOURCE_T0 + timedelta(minutes=5), "cursor not honoured", 0))],
        [delete(9, bluesky(4))],  # its author deleted a stored post
        [sealed(10, wire_records.filter_record("bluesky", keywords=["covid", "long covid"])),
         wire_post(11, bluesky(11), lang="pt", matched=["long covid"])],
    ]
    try:
        for n, lines in enumerate(batches):
            writer.write_records(SOURCE_T0 + timedelta(seconds=20 * (n + 1)),
                                 wire_records_of(lines))
    finally:
        store.close()


def wire_records_of(lines: list[str]) -> list[Any]:
    return records(*lines, fields=LEDGER_FIELDS)


def test_a_release_carries_the_coverage_the_keywords_and_no_deleted_post(
        cli_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, out = tmp_path / "db", tmp_path / "release"
    ledger_store(db, tmp_path)
    window = ["--since", "2026-11-30", "--until", "2026-12-01"]
    assert main(["release", "--embedded-db-path", str(db), *window, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == RELEASE_FILES
    posts = pd.read_parquet(out / "posts.parquet")
    assert list(posts.id) == [bluesky(n) for n in (3, 5, 6, 7, 11)]  # k4 deleted
    assert "post_keys" not in posts.columns  # the keys are never exported
    assert [None if m is None else list(m) for m in posts.matched] == [
        ["covid"], ["covid"], ["covid19"], None, ["long covid"]]
    for path in out.iterdir():  # neither the deleted post nor any key, in any file
        assert b"k4" not in path.read_bytes() and b"post_keys" not in path.read_bytes()
    capsys.readouterr()
    # coverage.json is report.py coverage --json of the same window, exactly
    assert main(["coverage", "--json", "--embedded-db-path", str(db), *window]) == 0
    assert (out / "coverage.json").read_text() == capsys.readouterr().out
    assert json.loads((out / "coverage.json").read_text())["gaps"] == [
        {"from": "2026-11-30T08:02:00.000Z", "to": "2026-11-30T08:05:00.000Z",
         "reason": "cursor not honoured", "refused": 0}]
    first, second = "2026-11-30T08:00:20.000Z", "2026-11-30T08:01:20.000Z"
    assert (out / "keywords.csv").read_text().splitlines() == [
        "source,first_batch,last_batch,keyword,rule_tag",
        f"bluesky,{first},{second.replace('01:20', '01:00')},covid,",
        f"bluesky,{first},{second.replace('01:20', '01:00')},covid19,",
        f"bluesky,{second},{second},covid,",
        f"bluesky,{second},{second},long covid,"]
    text = (out / "DATASET.md").read_text(encoding="utf-8")
    assert "1 post of this window was removed from the store" in text
    assert "| 2026-11-30 | 3 | 5 | 1 |" in text  # batches stored, posts, removed
    assert "| 2026-11-30T08:02:00.000Z | 2026-11-30T08:05:00.000Z | cursor not honoured " \
           "| 0 |" in text
    assert f"| {second} | {second} | Bluesky | covid, long covid |" in text
    assert "5 posts (Bluesky)" in text  # the source the documents' filter names
