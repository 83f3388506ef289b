"""Shared fixtures: one SparkContext and one Spark Connect server for the whole run,
a fake tweet socket."""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import PageServer, Program, clean_env, free_port

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


#: How long a Spark Connect server may take to listen (10-12 s on an idle machine).
CONNECT_START_SECONDS = 180


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Spark Connect server for the whole run, started as docs/engines.md says,
    from the installed pyspark alone and from a folder that is not the project's (so
    that the job must ship its code to it): its ``sc://`` URL."""
    pytest.importorskip("grpc", reason="the Spark Connect client (requirements-connect.txt)")
    import pyspark

    home = Path(pyspark.__file__).parent
    folder = tmp_path_factory.mktemp("connect-server")
    port = free_port()
    server = subprocess.Popen(
        [str(home / "sbin" / "start-connect-server.sh"), "--wait", "--master", "local[2]",
         "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
         "--conf", f"spark.connect.grpc.binding.port={port}"],
        cwd=folder, env=clean_env(SPARK_HOME=str(home), PYSPARK_PYTHON=sys.executable,
                                  SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR=str(folder)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0)
    assert server.stdout is not None
    started = threading.Event()
    log_file = (folder / "server.log").open("w")

    def keep_log() -> None:  # the server's output, kept for a failing test to read
        assert server.stdout is not None
        for line in server.stdout:
            log_file.write(line)
            log_file.flush()
            if "Spark Connect server started at" in line:
                started.set()
        started.set()

    keeping = threading.Thread(target=keep_log, daemon=True)
    keeping.start()
    try:
        assert started.wait(CONNECT_START_SECONDS) and server.poll() is None, (
            (folder / "server.log").read_text())
        yield f"sc://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the script, spark-submit and the JVM
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        keeping.join(10)  # the output's end
        log_file.close()


#: The job's two engines: DStreams (the card's, the default) and Structured Streaming.
ENGINES = ("dstream", "structured")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once per engine (``--engine``)."""
    return request.param


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
