"""The two real processes, as a user runs them: stream.py, then spark_streaming.py."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from bson import json_util
from processes import (
    PROJECT,
    T0_US,
    TIMEOUT,
    JetstreamStandIn,
    Program,
    clean_env,
    expected_content,
    facet,
    free_port,
    job,
    post_event,
    producer,
    write_tweets,
)

import config
import storage
import transform
from sources import tweet_from_payload
from storage import case_series

SAMPLE = PROJECT / "samples" / "tweets.jsonl"
POST = "app.bsky.feed.post"


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=PROJECT, env=clean_env(**env),
                          capture_output=True, text=True, timeout=120)


def serve_folder(folder: Path) -> ThreadingHTTPServer:
    """``folder`` over HTTP on 127.0.0.1 (WHO's file stand-in)."""
    handler = functools.partial(QuietFiles, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


WHO_CSV = (
    "\ufeffDate_reported,Country_code,Country,WHO_region,New_cases,Cumulative_cases,"
    "New_deaths,Cumulative_deaths\r\n"
    "2026-11-08,NA,Namibia,AFR,,172000,,4100\r\n"
    "2026-11-15,NA,Namibia,AFR,12,172012,,4100\r\n"
    "2026-11-08,DE,Germany,EUR,,38437860,,174979\r\n"
    "2026-11-22,DE,Germany,EUR,100,38437960,,174980\r\n"
)


#: the post fields of issue 24's run: the conversation, without the personal ones
RELEASE_FIELDS = "id,created_at,lang,reply_to,quote_of,hashtags,links"


def conversation_of(tweet: dict[str, Any]) -> dict[str, Any]:
    """What an X v2 post says of its place in the conversation, read from the payload as
    X documents it (referenced_tweets, entities): what the job should store."""
    references = {ref["type"]: ref["id"] for ref in tweet.get("referenced_tweets") or ()}
    entities = tweet.get("entities") or {}
    return {"lang": tweet.get("lang"), "reply_to": references.get("replied_to"),
            "quote_of": references.get("quoted"),
            "hashtags": [tag["tag"] for tag in entities.get("hashtags", ())] or None,
            "links": [url["expanded_url"] for url in entities.get("urls", ())] or None}


@pytest.mark.e2e
def test_stream_and_spark_processes_store_the_sample_file_with_whos_count(tmp_path,
                                                                          engine) -> None:
    """The card's two programs, as a user runs them, with --case-source who and the
    conversation fields; then report.py release writes the dataset of what they stored
    (issue 24's "done when")."""
    (tmp_path / "who").mkdir()
    (tmp_path / "who" / "daily.csv").write_text(WHO_CSV, encoding="utf-8")
    who = serve_folder(tmp_path / "who")
    who_url = f"http://127.0.0.1:{who.server_address[1]}/daily.csv"
    port, ack_port = free_port(), free_port()
    sent, content = expected_content(SAMPLE)
    source = producer(tmp_path, SAMPLE, port, ack_port, 0)
    consumer = job(tmp_path, port, ack_port, "http://127.0.0.1:9/unused",
                   "--embedded-db-path", str(tmp_path / "db"),
                   "--case-source", "who", "--who-url", who_url,
                   "--post-fields", RELEASE_FIELDS, engine=engine)
    try:
        # the producer exits by itself once the job has acknowledged every tweet
        assert source.process.wait(120) == 0, source.log
        consumer.wait_for_text("case series (who")  # WHO's rows kept, after the count
        assert consumer.stop() == 0, consumer.log  # SIGTERM: a graceful stop, as Ctrl-C
    finally:
        source.kill()
        consumer.kill()
        who.shutdown()
    assert "Traceback" not in consumer.log + source.log
    # Spark's own INFO chatter stays hidden (its lines are tagged "spark" by conf/log4j2)
    assert not re.search(r"^\S+ INFO\s+spark ", consumer.log, flags=re.M)

    store = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    try:
        documents = list(store.collection.find().sort("timestamp", 1))
        series = list(case_series.of_store(store).rows())
    finally:
        store.close()
    assert documents
    # the case series beside the batches: WHO's four rows, as the file gave them
    assert [(row["country"], row["code"], row["date"].day, row["new_cases"])
            for row in series] == [("Germany", "DE", 8, None), ("Namibia", "NA", 8, None),
                                   ("Namibia", "NA", 15, 12), ("Germany", "DE", 22, 100)]
    assert [text for doc in documents for text in doc["content"]] == content
    for doc in documents:
        assert set(doc) == {"_id", "content", "timestamp", "total_case_count",
                            "case_count_as_of", "case_count_source", "post_keys", "delivery",
                            "posts", "filter"}
        assert doc["filter"] == {"source": "replay", "keywords": []}  # the file, sent whole
        assert isinstance(doc["timestamp"], datetime)
        # each country's latest Cumulative_cases, summed, as of the file's latest date
        assert doc["total_case_count"] == 172_012 + 38_437_960
        assert doc["case_count_source"] == "who"
        assert doc["case_count_as_of"] == datetime(2026, 11, 22)  # naive UTC from MontyDB
    # the producer numbered its lines: the replay's keyword set and its span as it opened
    # (1, 2), the tweets (3..sent + 2), its span as it ended (sent + 3); the last document
    # accounts for all the tweets (and for that last record, when it came in its batch)
    (mark,) = documents[-1]["delivery"]
    assert mark["last_seq"] in (sent + 2, sent + 3)
    check_release(tmp_path, documents, series)


def check_release(tmp_path: Path, documents: list[dict[str, Any]],
                  series: list[dict[str, Any]]) -> None:
    """report.py release of what the two programs stored: every file, a row per stored
    post with the conversation fields its payload gave, WHO's rows, sha256sum -c."""
    pd = pytest.importorskip("pandas")
    out = tmp_path / "release"
    until = (documents[-1]["timestamp"] + timedelta(seconds=1)).isoformat()
    released = run_cli("report.py", "release", "--embedded-db-path", str(tmp_path / "db"),
                       "--since", "2026-11-01", "--until", until, "--out", str(out))
    assert released.returncode == 0, released.stderr
    assert {p.name for p in out.iterdir()} == {"posts.parquet", "cases.parquet", "ids.txt",
                                               "coverage.json", "keywords.csv", "DATASET.md",
                                               "SHA256SUMS"}
    posts = pd.read_parquet(out / "posts.parquet")
    stored = [(text, post) for doc in documents
              for text, post in zip(doc["content"], doc["posts"], strict=True)]
    assert list(posts.text) == [text for text, _ in stored]  # one row per stored post
    payloads = {tweet["id"]: tweet for tweet in map(
        tweet_from_payload, map(json.loads, SAMPLE.read_text(encoding="utf-8").splitlines()))}
    assert len(posts) < len(payloads)  # the sample's repeats and empties were dropped
    for row in posts.itertuples():
        expected = conversation_of(payloads[row.id])
        got = {name: getattr(row, name) for name in expected}
        got = {name: (list(value) if name in ("hashtags", "links") and value is not None
                      else None if not isinstance(value, str | list) and pd.isna(value)
                      else value) for name, value in got.items()}
        assert got == expected, row.id
        assert row.case_count_source == "who" and row.total_case_count == 172_012 + 38_437_960
    assert (out / "ids.txt").read_text() == "".join(f"{i}\n" for i in posts.id)
    cases = pd.read_parquet(out / "cases.parquet")  # WHO's rows, as the file gave them
    assert [(r.country, r.code, r.date.day, None if pd.isna(r.new_cases) else r.new_cases,
             r.cumulative_cases, r.version, r.current) for r in cases.itertuples()] == [
        (row["country"], row["code"], row["date"].day, row["new_cases"],
         row["cumulative_cases"], 1, True) for row in series]
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.e2e
def test_through_a_spark_connect_server_every_post_is_stored_once(tmp_path, page,
                                                                  connect_server) -> None:
    """--remote: the source and foreachBatch run on a Connect server that has never seen
    the project; this process acknowledges each batch once Spark has committed it."""
    port, ack_port = free_port(), free_port()
    sent, content = expected_content(SAMPLE)
    source = producer(tmp_path, SAMPLE, port, ack_port, 20)
    consumer = job(tmp_path, port, ack_port, page.url, engine="structured",
                   remote=connect_server)
    try:
        # the producer exits by itself once the job has acknowledged every post
        assert source.process.wait(240) == 0, source.log + consumer.log
        assert consumer.stop() == 0, consumer.log
    finally:
        source.kill()
        consumer.kill()
    assert "Traceback" not in consumer.log + source.log
    assert "stored by the Spark Connect server" in consumer.log
    store = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    try:
        documents = list(store.collection.find().sort("timestamp", 1))
    finally:
        store.close()
    assert [text for doc in documents for text in doc["content"]] == content
    # the producer numbers the replay's records too: its keyword set and span as it opened
    # (1, 2), the posts (3..sent + 2), its span as it ended (sent + 3), which may come alone
    (mark,) = documents[-1]["delivery"]
    assert mark["source"] == documents[0]["delivery"][0]["source"]
    assert mark["last_seq"] in (sent + 2, sent + 3)
    assert all(doc["total_case_count"] == 704_753_890 for doc in documents)


def test_dstream_through_spark_connect_is_refused_in_one_line_saying_why() -> None:
    result = run_cli("spark_streaming.py", "--remote", "sc://127.0.0.1:15002")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "DataFrames and not the RDDs that DStreams run on" in result.stderr
    assert "--engine structured" in result.stderr


def test_an_unreachable_spark_connect_server_fails_in_one_line() -> None:
    url = f"sc://127.0.0.1:{free_port()}"
    result = run_cli("spark_streaming.py", "--engine", "structured", "--remote", url,
                     "--embedded-db-path", "/nonexistent/never", "--metrics-port", "0")
    assert result.returncode == 1, result.stderr
    assert f"cannot reach the Spark Connect server at {url}" in result.stderr
    assert "Traceback" not in result.stderr


def replay_and_inspect(here: Path, engine: str, page_url: str) -> list[dict[str, Any]]:
    """The sample file replayed through both programs on ``engine`` (a demo's settings,
    post fields on), then the documents as ``report.py inspect --json`` shows them."""
    here.mkdir()
    port, ack_port = free_port(), free_port()
    source = producer(here, SAMPLE, port, ack_port, 0)
    consumer = job(here, port, ack_port, page_url, "--embedded-db-path", str(here / "db"),
                   "--post-fields", "id,created_at,lang,url", batch_seconds=5, engine=engine)
    try:
        assert source.process.wait(240) == 0, source.log + consumer.log
        assert consumer.stop() == 0, consumer.log
    finally:
        source.kill()
        consumer.kill()
    shown = run_cli("report.py", "inspect", "--last", "100", "--json",
                    "--embedded-db-path", str(here / "db"))
    assert shown.returncode == 0, shown.stderr
    return [json_util.loads(line) for line in shown.stdout.splitlines() if line.strip()]


@pytest.mark.e2e
def test_both_engines_store_the_same_documents_for_the_same_replay(tmp_path, page) -> None:
    """The sample file through a demo's pair of programs on each engine: the same posts,
    cleaned the same, with the same fields and count, in the same order; only the batch
    times (and so how the posts fall into documents) and the producer's id differ."""
    found = {engine: replay_and_inspect(tmp_path / engine, engine, page.url)
             for engine in ("dstream", "structured")}

    def posts(documents: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        return [pair for doc in documents for pair in zip(doc["content"], doc["posts"],
                                                          strict=True)]

    def shape(documents: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        return {(tuple(sorted(doc)), doc["total_case_count"], doc["case_count_as_of"],
                 doc["case_count_source"]) for doc in documents}

    dstream, structured = found["dstream"], found["structured"]
    assert posts(structured) == posts(dstream) and posts(dstream)
    assert shape(structured) == shape(dstream)
    assert ([doc["delivery"][-1]["last_seq"] for doc in structured][-1]
            == [doc["delivery"][-1]["last_seq"] for doc in dstream][-1])


def bluesky_posts(start: int, count: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Jetstream events, one second apart: matching posts of every kind the
    cleaning rules know, with others between them; and the stored texts expected."""
    events, expected = [], []
    for n in range(start, start + count):
        at = T0_US + n * 1_000_000
        kind = n % 5
        if kind == 0:
            text = f"Masks on @bob.bsky.social see cdc.gov/covid-{n}..."
            event = post_event(f"k{n}", text, at, facets=[
                facet(text, f"cdc.gov/covid-{n}...", uri="https://cdc.gov/x"),
                facet(text, "@bob.bsky.social", "mention", did="did:plc:bob")])
        elif kind == 1:
            event = post_event(f"k{n}", f"😷 日本 #COVID19 post {n} @carol.example.com", at,
                               reply={"root": {"uri": f"at://did:plc:r/{POST}/r{n}", "cid": "c"},
                                      "parent": {"uri": f"at://did:plc:p/{POST}/p{n}",
                                                 "cid": "c"}})
        elif kind == 2:
            event = post_event(f"k{n}", f"LongCovid only {n}", at)  # no match
        elif kind == 3:
            event = post_event(f"k{n}", f"tagged {n} &amp; more", at, tags=["Covid"])
        else:
            event = {"did": "did:plc:x", "time_us": at, "kind": "identity", "identity": {}}
        events.append(event)
        record = event.get("commit", {}).get("record")
        if record and kind != 2:
            expected.append(transform.clean_text(
                transform.strip_post_markup(record["text"], record.get("facets"))))
    return events, expected


def bluesky_producer(tmp_path: Path, url: str, port: int, ack_port: int) -> Program:
    program = Program(["stream.py", "--source", "bluesky", "--jetstream-url", url,
                       "--port", str(port), "--ack-port", str(ack_port),
                       "--journal-path", str(tmp_path / "journal"),
                       "--control-secret-file", str(tmp_path / "control.secret")])
    program.wait_for_text("connected to ")
    return program


@pytest.mark.e2e
def test_bluesky_posts_are_stored_once_each_across_a_drop_and_a_restart(tmp_path, page,
                                                                        engine) -> None:
    jetstream = JetstreamStandIn()
    jetstream.cut_first_after = 7  # the first connection drops mid-stream
    port, ack_port = free_port(), free_port()
    first, expected1 = bluesky_posts(0, 15)
    second, expected2 = bluesky_posts(15, 10)
    third, expected3 = bluesky_posts(25, 10)
    source = bluesky_producer(tmp_path, jetstream.url, port, ack_port)
    consumer = job(tmp_path, port, ack_port, page.url, "--embedded-db-path",
                   str(tmp_path / "db"), "--post-fields", "id,reply_to,hashtags,links",
                   engine=engine)
    try:
        jetstream.publish(*first)
        try:
            consumer.wait_for(lambda _: consumer.kept() >= len(expected1))
        except AssertionError:
            print("PRODUCER LOG\n" + source.log)
            raise
        source.kill()  # SIGKILL: no goodbye, the cursor file is what it last wrote
        jetstream.publish(*second)  # while stream.py is down
        source = bluesky_producer(tmp_path, jetstream.url, port, ack_port)
        jetstream.publish(*third)
        total = len(expected1) + len(expected2) + len(expected3)
        consumer.wait_for(lambda _: consumer.kept() >= total)
        assert source.stop(signal.SIGTERM) == 0, source.log
        assert consumer.stop() == 0, consumer.log
    finally:
        source.kill()
        consumer.kill()
        jetstream.close()
    assert "Traceback" not in consumer.log + source.log
    cursors = jetstream.cursors()
    assert cursors[0] is None and all(c is not None for c in cursors[1:]), cursors
    assert len(cursors) >= 3  # the drop and the restart each reconnected with a cursor

    store = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    try:
        documents = list(store.collection.find().sort("timestamp", 1))
    finally:
        store.close()
    stored = [text for doc in documents for text in doc["content"]]
    assert stored == expected1 + expected2 + expected3  # once each, cleaned, in order
    assert consumer.kept() == len(stored)
    # each post's place in the conversation, carried through the journal and resends
    for post in [post for doc in documents for post in doc["posts"]]:
        n = int(post["id"].rsplit("/k", 1)[1])
        assert post == {"id": f"at://did:plc:alice/{POST}/k{n}",
                        "reply_to": f"at://did:plc:p/{POST}/p{n}" if n % 5 == 1 else None,
                        "hashtags": ["Covid"] if n % 5 == 3 else None,
                        "links": ["https://cdc.gov/x"] if n % 5 == 0 else None}


@pytest.mark.e2e
def test_a_replay_into_a_1mib_journal_waits_for_a_late_job_and_stores_each_line_once(
    tmp_path, page
) -> None:
    """Issue 25's case: 20,000 posts (about 2 MiB in the journal) replayed into a 1 MiB
    journal, the job started late. The replay waits for room instead of refusing:
    every line is stored exactly once, 0 refused. The job starts as soon as stream.py
    says it waits (how late is then up to the test: nothing is lost meanwhile)."""
    replay = tmp_path / "posts.jsonl"
    write_tweets(replay, 20_000, prefix="late job")
    _, content = expected_content(replay)
    port, ack_port = free_port(), free_port()
    source = producer(tmp_path, replay, port, ack_port, 0, "--journal-max-bytes", "1MiB")
    consumer = None
    try:
        source.wait_for_text("the replay waits for room")
        consumer = job(tmp_path, port, ack_port, page.url)
        # the producer exits by itself once the job has acknowledged every post
        assert source.process.wait(TIMEOUT) == 0, source.log
        assert consumer.stop() == 0, consumer.log
    finally:
        source.kill()
        if consumer is not None:
            consumer.kill()
    assert "Traceback" not in source.log + consumer.log
    summary = next(line for line in source.lines if "summary:" in line)
    # the lines stored: the posts, and the replay's keyword set and span (3 records)
    assert "20000 tweets emitted" in summary and "20,003 stored, 0 refused" in summary, summary

    store = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    try:
        documents = list(store.collection.find().sort("timestamp", 1))
    finally:
        store.close()
    assert [text for doc in documents for text in doc["content"]] == content  # once each


# --- command lines --------------------------------------------------------------------


def test_spark_streaming_help_explains_every_option() -> None:
    result = run_cli("spark_streaming.py", "--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--batch-seconds", "--master", "--duration",
                 "--mongo-uri", "--database", "--collection", "--embedded-db-path",
                 "--worldometers-url", "--scrape-timeout", "--log-level"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "abc"], "--port / STREAM_PORT"),
        (["--batch-seconds", "0"], "--batch-seconds / BATCH_SECONDS"),
        (["--master", "local[1]"], "--master / SPARK_MASTER"),
    ],
)
def test_spark_streaming_refuses_bad_values_in_one_line(args: list[str], named: str) -> None:
    result = run_cli("spark_streaming.py", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert named in result.stderr


def test_an_unreachable_mongodb_fails_in_one_line_without_its_password() -> None:
    uri = f"mongodb://analyst:pa55-w0rd@127.0.0.1:{free_port()}/"
    result = run_cli("spark_streaming.py", "--mongo-uri", uri, "--log-level", "DEBUG")
    assert result.returncode == 1
    assert "pa55-w0rd" not in result.stderr + result.stdout
    assert "cannot reach MongoDB at mongodb://analyst:***@127.0.0.1" in result.stderr


# --- the launcher (make run / make demo) ---------------------------------------------------


def load_launcher() -> Any:
    spec = importlib.util.spec_from_file_location("launch", PROJECT / "scripts" / "launch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts sleeps in /proc")
def test_make_run_looking_for_jetstream_sleeps_until_an_answer_or_a_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = load_launcher()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        monkeypatch.chdir(tmp_path)  # no developer .env
        for name in {opt.env for opt in config.OPTIONS.values()}:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("JETSTREAM_URLS", f"ws://127.0.0.1:{silent.getsockname()[1]}")
        stop, answers = threading.Event(), []
        looking = threading.Thread(target=lambda: answers.append(launch.live_source(stop)))
        looking.start()

        def sleeps() -> int:
            status = Path(f"/proc/self/task/{looking.native_id}/status").read_text()
            return int(status.split("voluntary_ctxt_switches:")[1].split()[0])

        threading.Event().wait(0.3)  # let it start looking
        slept = sleeps()
        threading.Event().wait(1.0)  # an observation window: it used to wake 5 times
        assert sleeps() - slept <= 1
        stop.set()  # what the launcher's Ctrl-C does
        looking.join(10)
        assert not looking.is_alive() and answers == [None]


def test_make_run_says_it_takes_live_bluesky_posts_when_jetstream_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    launch = load_launcher()
    jetstream = JetstreamStandIn()
    try:
        monkeypatch.chdir(tmp_path)  # no developer .env
        for name in {opt.env for opt in config.OPTIONS.values()}:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("JETSTREAM_URLS", jetstream.url)
        assert launch.live_source() == ["--source", "bluesky"]
        monkeypatch.setenv("TWITTER_BEARER_TOKEN", "t0ken")
        assert launch.live_source() == ["--source", "twitter"]
    finally:
        jetstream.close()
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith("make run: live Bluesky posts from Jetstream (ws://127.0.0.1:")
    assert second.startswith("make run: live posts from the X API")
    assert "t0ken" not in first + second


def test_make_run_falls_back_to_the_replay_and_stops_when_stream_py_fails(
    tmp_path: Path
) -> None:
    """Offline, `make run` says so in its first line and replays the sample file;
    when stream.py cannot start, the pair stops with its error and status."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{closed.getsockname()[1]}/subscribe"
    with socket.create_server(("127.0.0.1", 0)) as taken:  # stream.py cannot listen here
        result = subprocess.run(
            [sys.executable, str(PROJECT / "scripts" / "launch.py"), "run"], cwd=tmp_path,
            env=clean_env(JETSTREAM_URLS=dead, STREAM_PORT=str(taken.getsockname()[1]),
                          ACK_PORT=str(free_port()), DATA_DIR=str(tmp_path / "data")),
            capture_output=True, text=True, timeout=120, check=False,
        )
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[0] == (
        "make run: no Jetstream host answered within 15 s (offline?): replaying the sample "
        "file samples/tweets.jsonl instead")
    assert "stream.py: error: cannot listen on 127.0.0.1:" in result.stderr
    assert "launch: stream.py stopped with status 1; stopping spark_streaming.py" in result.stderr
    assert "Traceback" not in result.stderr
