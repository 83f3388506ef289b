"""The two real processes, as a user runs them: stream.py, then spark_streaming.py."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime

import pytest
from processes import PROJECT, clean_env, expected_content, free_port, job, producer

import config
import storage

SAMPLE = PROJECT / "samples" / "tweets.jsonl"


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=PROJECT, env=clean_env(**env),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.e2e
def test_stream_and_spark_processes_store_the_sample_file(tmp_path, page) -> None:
    port, ack_port = free_port(), free_port()
    sent, content = expected_content(SAMPLE)
    source = producer(tmp_path, SAMPLE, port, ack_port, 0)
    consumer = job(tmp_path, port, ack_port, page.url)
    try:
        # the producer exits by itself once the job has acknowledged every tweet
        assert source.process.wait(120) == 0, source.log
        assert consumer.stop() == 0, consumer.log  # SIGTERM: a graceful stop, as Ctrl-C
    finally:
        source.kill()
        consumer.kill()
    assert "Traceback" not in consumer.log + source.log
    # Spark's own INFO chatter stays hidden (its lines are tagged "spark" by conf/log4j2)
    assert not re.search(r"^\S+ INFO\s+spark ", consumer.log, flags=re.M)

    store = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    try:
        documents = list(store.collection.find().sort("timestamp", 1))
    finally:
        store.close()
    assert documents
    assert [text for doc in documents for text in doc["content"]] == content
    for doc in documents:
        assert set(doc) == {"_id", "content", "timestamp", "total_case_count", "delivery"}
        assert isinstance(doc["timestamp"], datetime)
        assert doc["total_case_count"] == 704_753_890
    # the producer numbered the tweets 1..sent; the last document accounts for all of them
    (mark,) = documents[-1]["delivery"]
    assert mark["last_seq"] == sent


# --- command lines --------------------------------------------------------------------


def test_spark_streaming_help_explains_every_option() -> None:
    result = run_cli("spark_streaming.py", "--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--batch-seconds", "--master", "--duration",
                 "--mongo-uri", "--database", "--collection", "--embedded-db-path",
                 "--worldometer-url", "--scrape-timeout", "--log-level"):
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
