"""The two real processes, as a user runs them: stream.py, then spark_streaming.py."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

import config
import storage
import transform
import utility

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE = PROJECT / "samples" / "tweets.jsonl"
PROCESS_TIMEOUT = 120
BATCH_LINE = re.compile(r"batch \S+: (\d+) lines")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {opt.env for opt in config.OPTIONS.values()}}
    env.update(extra)
    return env


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=PROJECT, env=clean_env(**env),
                          capture_output=True, text=True, timeout=PROCESS_TIMEOUT)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def page_url() -> Iterator[str]:
    """The project's saved worldometers page, served from 127.0.0.1."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(PROJECT / "samples"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/worldometers.html"
    server.shutdown()


def expected_content(path: Path) -> tuple[int, list[str]]:
    """(tweets in the file, their cleaned texts in order, empties and repeats dropped)."""
    sent, content, seen = 0, [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        tweet = utility.tweet_from_payload(json.loads(line))
        assert tweet is not None, line
        sent += 1
        cleaned = transform.clean_text(tweet["text"])
        if cleaned and tweet["id"] not in seen:
            content.append(cleaned)
        seen.add(tweet["id"])
    return sent, content


@pytest.mark.e2e
def test_stream_and_spark_processes_store_the_sample_file(tmp_path, page_url) -> None:
    port, ack_port = str(free_port()), str(free_port())
    db_path = tmp_path / "db"
    sent, content = expected_content(SAMPLE)
    producer = subprocess.Popen(
        [sys.executable, "stream.py", "--source", "replay", "--replay-file", str(SAMPLE),
         "--rate", "0", "--port", port, "--ack-port", ack_port,
         "--journal-path", str(tmp_path / "journal")],
        cwd=PROJECT, env=clean_env(), stderr=subprocess.PIPE, text=True,
    )
    job = subprocess.Popen(
        [sys.executable, "spark_streaming.py", "--port", port, "--ack-port", ack_port,
         "--batch-seconds", "1", "--worldometer-url", page_url,
         "--embedded-db-path", str(db_path), "--spool-path", str(tmp_path / "spool.jsonl"),
         "--quarantine-path", str(tmp_path / "quarantine.jsonl")],
        cwd=PROJECT, env=clean_env(), stderr=subprocess.PIPE, text=True,
    )
    job_log: list[str] = []
    all_received = threading.Event()

    def follow_job_log() -> None:
        received = 0
        assert job.stderr is not None
        for line in job.stderr:
            job_log.append(line)
            match = BATCH_LINE.search(line)
            if match:
                received += int(match.group(1))
                if received >= sent:
                    all_received.set()

    follower = threading.Thread(target=follow_job_log, daemon=True)
    follower.start()
    try:
        assert all_received.wait(PROCESS_TIMEOUT), "".join(job_log)
        # the producer exits by itself once everything was delivered
        assert producer.wait(PROCESS_TIMEOUT) == 0
        job.send_signal(signal.SIGTERM)  # a graceful stop, as Ctrl-C would be
        assert job.wait(PROCESS_TIMEOUT) == 0, "".join(job_log)
    finally:
        for process in (producer, job):
            if process.poll() is None:
                process.kill()
    follower.join(10)
    log_text = "".join(job_log)
    assert "Traceback" not in log_text
    # Spark's own INFO chatter stays hidden (its lines are tagged "spark" by conf/log4j2)
    assert not re.search(r"^\S+ INFO\s+spark ", log_text, flags=re.M)

    settings = config.Settings(embedded_db_path=db_path)
    store = storage.open_store(settings)
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
