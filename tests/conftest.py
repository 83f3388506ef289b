"""Shared fixtures: one SparkContext for the whole run, a fake tweet socket."""

from __future__ import annotations

import logging
import os
import resource
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import PageServer, Program

import config


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report carries the log of every program it started: the
    wait that failed names one program, the cause is often in the other."""
    report = yield
    if report.failed:
        for number, program in enumerate(Program.started_in_test, 1):
            report.sections.append(
                (f"program {number}: {' '.join(program.args[:1])} ({report.when})", program.log))
    if call.when == "teardown":
        Program.started_in_test.clear()
    return report


@pytest.fixture(scope="session")
def spark_context() -> Iterator[object]:
    """One local[2] SparkContext shared by every Spark test (starting one costs seconds)."""
    from job import spark_setup

    settings = config.Settings(master="local[2]", batch_seconds=1)  # the tests' batches
    sc = spark_setup.start_spark(settings, **{"spark.ui.enabled": "false"})
    yield sc
    sc.stop()


class FakeTweetSocket:
    """A TCP server standing in for stream.py: it waits for Spark's receiver to
    connect, then sends whatever lines the test gives it."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._connected = threading.Event()
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            conn, _ = self._server.accept()
        except OSError:
            return
        self._conn = conn
        self._connected.set()

    def send(self, data: bytes, timeout: float = 60) -> None:
        """Send raw bytes once the consumer is connected."""
        assert self._connected.wait(timeout), "Spark's receiver never connected"
        assert self._conn is not None
        self._conn.sendall(data)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._server.close()


@pytest.fixture
def tweet_socket() -> Iterator[FakeTweetSocket]:
    fake = FakeTweetSocket()
    yield fake
    fake.close()


@pytest.fixture
def page() -> Iterator[PageServer]:
    """The project's saved worldometers page, served from 127.0.0.1."""
    server = PageServer()
    yield server
    server.close()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """For a program's main() run in the test process: none of the project's
    variables, no .env (a temporary working folder), and root logging restored
    after main() configured it."""
    for opt in config.OPTIONS.values():
        monkeypatch.delenv(opt.env, raising=False)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


#: select() cannot watch a descriptor from this number on (FD_SETSIZE)
SELECT_LIMIT = 1024


@pytest.fixture
def high_fds() -> Iterator[None]:
    """Every descriptor opened in the test is numbered SELECT_LIMIT or more, as in a
    process holding a thousand connections: the soft RLIMIT_NOFILE is raised (within
    the hard one) and the low numbers are taken by /dev/null until the test ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SELECT_LIMIT + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit on open files ({hard}) is below {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    filler = []
    try:
        while not filler or filler[-1] < SELECT_LIMIT:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
