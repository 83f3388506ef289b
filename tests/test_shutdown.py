"""Stopping, as a person does it: Ctrl-C at any moment of start-up, a terminal's
Ctrl-C to the whole process group, SIGTERM/SIGHUP to the launcher; and the job
started before stream.py. The real programs run; nothing may be left behind."""

from __future__ import annotations

import gc
import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from processes import (
    PROJECT,
    PageServer,
    Program,
    clean_env,
    free_port,
    producer,
    write_tweets,
)

from job import spark_setup
from job.listeners import ReceiverWatch
from stopping import STOP_SIGNALS, install_stop_handlers

pytestmark = pytest.mark.e2e
LEFTOVER_SECONDS = 30  # the bound: no process of a run remains 30 s after a stop


def processes_marked(marker: str) -> list[str]:
    """Command lines of the processes whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone meanwhile, or a kernel thread
            continue
    return found


def signal_pending(pid: int) -> bool:
    """Whether a signal sent to process ``pid`` is not delivered yet."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return any(line.startswith("ShdPnd:") and int(line.split()[1], 16) for line in status)


def wait_until_none_marked(marker: str) -> list[str]:
    """Wait up to LEFTOVER_SECONDS for every marked process to end; what is left."""
    gone = threading.Event()
    for _ in range(LEFTOVER_SECONDS * 10):
        left = processes_marked(marker)
        if not left:
            return []
        gone.wait(0.1)  # polling /proc: no process can tell us it has ended
    return processes_marked(marker)


@pytest.fixture
def marker(tmp_path: Path) -> dict[str, str]:
    """An environment that marks every process of the run (children inherit it) and
    gives it a temporary folder of its own."""
    (tmp_path / "tmp").mkdir()
    return {"COVID_TEST_RUN": uuid.uuid4().hex, "TMPDIR": str(tmp_path / "tmp"),
            "DATA_DIR": str(tmp_path / "data")}


# --- the stop request ------------------------------------------------------------------


def test_a_stop_signal_is_seen_even_when_the_caller_drops_restore() -> None:
    stop, seen, counts = threading.Event(), [], []
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    install_stop_handlers(stop, seen, lambda signum, count: counts.append(count))
    try:
        gc.collect()  # nothing but the watcher may keep the socket alive
        os.kill(os.getpid(), signal.SIGHUP)
        assert stop.wait(30), "SIGHUP was lost"
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(300):
            if counts == [1, 2]:
                break
            threading.Event().wait(0.1)
        assert seen == [signal.SIGHUP, signal.SIGTERM] and counts == [1, 2]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(-1)


def test_sighup_counts_once_however_often_it_comes() -> None:
    """A closed terminal, or a launcher that died (the kernel repeats its death signal
    for each of its threads), is not a second Ctrl-C; a SIGTERM after it is."""
    stop, calls, changed = threading.Event(), [], threading.Condition()

    def on_signal(signum: int, count: int) -> None:
        with changed:
            calls.append((count, signum))
            changed.notify_all()

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    restore = install_stop_handlers(stop, [], on_signal)
    try:
        for sig in (signal.SIGHUP, signal.SIGHUP, signal.SIGHUP, signal.SIGTERM):
            os.kill(os.getpid(), sig)
        with changed:
            assert changed.wait_for(lambda: any(signum == signal.SIGTERM
                                                for _, signum in calls), 30)
        assert sorted(calls) == [(1, signal.SIGHUP), (2, signal.SIGTERM)]
    finally:
        restore()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_hang_up_after_a_ctrl_c_is_not_a_second_stop_request() -> None:
    """Closing the terminal after a Ctrl-C sends SIGHUP: the program must go on storing
    the batch in flight, not take it for the second Ctrl-C that stops at once."""
    stop, calls, changed = threading.Event(), [], threading.Condition()

    def on_signal(signum: int, count: int) -> None:
        with changed:
            calls.append((count, signum))
            changed.notify_all()

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    restore = install_stop_handlers(stop, [], on_signal)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        with changed:
            assert changed.wait_for(lambda: calls, 30)
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)  # asking again, on purpose, still counts
        with changed:
            assert changed.wait_for(lambda: any(signum == signal.SIGTERM
                                                for _, signum in calls), 30)
        assert sorted(calls) == [(1, signal.SIGINT), (2, signal.SIGTERM)]
    finally:
        restore()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_callback_that_blocks_holds_up_neither_the_stop_nor_the_next_signal() -> None:
    """on_signal may log, and a log line blocks while the terminal's output is stopped
    (Ctrl-S) or stderr is a full pipe: the second signal is still seen."""
    stop, counts, unblock = threading.Event(), [], threading.Event()

    def on_signal(signum: int, count: int) -> None:
        counts.append(count)
        if count == 1:
            unblock.wait()  # stuck, like a log line to a stopped terminal

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    restore = install_stop_handlers(stop, [], on_signal)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(30)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(300):
            if 2 in counts:
                break
            threading.Event().wait(0.1)
        assert counts == [1, 2]
    finally:
        unblock.set()
        restore()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- the job's messages ----------------------------------------------------------------


def test_waiting_for_stream_py_is_said_once_then_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    watch = ReceiverWatch("127.0.0.1", 5555, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="spark_streaming"):
        for _ in range(30):  # a minute of Spark's retries, every 2 s
            watch.receiver_error("ConnectException: Connection refused")
            now[0] += 2
        watch.receiver_error("ConnectException: Connection refused")
        watch.records_received(0)
        watch.records_received(12)
        watch.records_received(12)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "waiting for stream.py on 127.0.0.1:5555 (ConnectException: Connection refused): "
        "start it first (python stream.py), or check --host/--port; retrying every 2 s",
        "still waiting for stream.py on 127.0.0.1:5555 after 60 s "
        "(ConnectException: Connection refused)",
        "stream.py on 127.0.0.1:5555 is sending again after 60 s",
    ]


def test_the_jvm_output_is_passed_on_without_the_incubator_warning() -> None:
    jvm = io.BytesIO(b"WARNING: Using incubator modules: jdk.incubator.vector\n"
                     b"12:00:00 ERROR   spark Executor: a real problem\n")
    out = io.BytesIO()
    spark_setup.forward_jvm_errors(jvm, out)
    assert out.getvalue() == b"12:00:00 ERROR   spark Executor: a real problem\n"


class FlakyOut(io.BytesIO):
    """A stderr whose first write fails, as a terminal that is gone or a full
    non-blocking pipe does."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if not self.failed:
            self.failed = True
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return super().write(data)


def test_the_jvm_output_goes_on_after_a_line_that_could_not_be_written() -> None:
    jvm = io.BytesIO(b"12:00:00 WARN    spark a line lost\n"
                     b"12:00:01 ERROR   spark Executor: the next problem\n")
    out = FlakyOut()
    spark_setup.forward_jvm_errors(jvm, out)  # returns (the JVM's stderr was read)
    assert out.getvalue() == b"12:00:01 ERROR   spark Executor: the next problem\n"
    assert jvm.closed


def test_the_jvm_output_is_read_to_its_end_without_a_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stderr", None)  # started with 2>&- (or by pythonw)
    jvm = io.BytesIO(b"12:00:00 ERROR   spark Executor: a real problem\n" * 3)
    spark_setup.forward_jvm_errors(jvm)
    assert jvm.closed


# --- the real programs -----------------------------------------------------------------


def test_ctrl_c_while_the_job_starts_stops_it_and_leaves_nothing(
    tmp_path: Path, marker: dict[str, str],
) -> None:
    consumer = Program(["spark_streaming.py", "--port", str(free_port()),
                        "--ack-port", str(free_port()), "--batch-seconds", "1",
                        "--worldometers-url", "http://127.0.0.1:9/", "--scrape-timeout", "1",
                        "--embedded-db-path", str(tmp_path / "db"),
                        "--spool-path", str(tmp_path / "spool.jsonl"),
                        "--quarantine-path", str(tmp_path / "quarantine.jsonl"),
                        "--control-secret-file", str(tmp_path / "control.secret")],
                       env=marker, own_group=True)
    try:
        consumer.wait_for_text("reading tweets from")  # Spark is not up yet
        os.killpg(consumer.process.pid, signal.SIGINT)  # a terminal's Ctrl-C: the group
        assert consumer.process.wait(120) == 0, consumer.log
    finally:
        consumer.kill()
    assert "SIGINT received while starting: stopping before the first batch" in consumer.log
    assert "stopped before the first batch" in consumer.log
    assert "Traceback" not in consumer.log and "Exception" not in consumer.log
    assert wait_until_none_marked(marker["COVID_TEST_RUN"]) == []
    assert list((tmp_path / "tmp").iterdir()) == []  # pyspark's connection file is gone


def test_ctrl_c_while_the_first_case_count_downloads_stops_the_job_without_waiting_for_it(
    tmp_path: Path, marker: dict[str, str],
) -> None:
    """A case source that takes its time (WHO's file can take a minute, plus the
    timeout) must not hold up a Ctrl-C at start: the job leaves the download behind."""
    with socket.socket() as silent:  # accepts connections (the backlog), answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        consumer = Program(["spark_streaming.py", "--port", str(free_port()),
                            "--ack-port", str(free_port()),
                            "--worldometers-url",
                            f"http://127.0.0.1:{silent.getsockname()[1]}/",
                            "--scrape-timeout", "3600",
                            "--embedded-db-path", str(tmp_path / "db"),
                            "--spool-path", str(tmp_path / "spool.jsonl"),
                            "--quarantine-path", str(tmp_path / "quarantine.jsonl"),
                            "--control-secret-file", str(tmp_path / "control.secret")],
                           env=marker, own_group=True)
        try:
            consumer.wait_for_text("reading tweets from")  # the download is under way
            os.killpg(consumer.process.pid, signal.SIGINT)
            # without the fix it waits out the hour-long timeout: the wait below fails
            assert consumer.process.wait(120) == 0, consumer.log
        finally:
            consumer.kill()
    assert "SIGINT received while starting: stopping before the first batch" in consumer.log
    assert "stopped before the first batch" in consumer.log
    assert "Traceback" not in consumer.log
    assert wait_until_none_marked(marker["COVID_TEST_RUN"]) == []


def test_a_second_ctrl_c_stops_the_job_at_once_while_its_stderr_is_stuck(
    tmp_path: Path, marker: dict[str, str],
) -> None:
    """A terminal whose output is stopped (Ctrl-S) or a pipe nobody reads blocks every
    log line; the second Ctrl-C is the way out and must not wait for one."""
    import fcntl

    reader, writer = os.pipe()
    fcntl.fcntl(writer, fcntl.F_SETPIPE_SZ, 4096)  # the smallest pipe: a few lines fill it
    url = "http://127.0.0.1:9/" + "x" * 3000  # its lines are long: the banner names it
    job = subprocess.Popen(
        [sys.executable, "spark_streaming.py", "--port", str(free_port()),
         "--ack-port", str(free_port()), "--worldometers-url", url,
         "--embedded-db-path", str(tmp_path / "db"),
         "--spool-path", str(tmp_path / "spool.jsonl"),
         "--quarantine-path", str(tmp_path / "quarantine.jsonl"),
         "--control-secret-file", str(tmp_path / "control.secret")],
        cwd=PROJECT, env=clean_env(**marker), stdout=subprocess.DEVNULL, stderr=writer)
    os.close(writer)
    try:
        def writing_to_the_pipe() -> bool:  # one of its threads is blocked on a log line
            return any(_read_or_empty(task / "wchan").endswith("pipe_write")
                       for task in Path(f"/proc/{job.pid}/task").iterdir())

        for _ in range(LEFTOVER_SECONDS * 10):  # until it waits on the pipe
            if writing_to_the_pipe():
                break
            threading.Event().wait(0.1)  # polling /proc: a blocked write says nothing
        assert writing_to_the_pipe()
        job.send_signal(signal.SIGINT)
        for _ in range(LEFTOVER_SECONDS * 10):  # until it is delivered: a second SIGINT
            if not signal_pending(job.pid):  # sent before would merge with it
                break
            threading.Event().wait(0.1)
        job.send_signal(signal.SIGINT)
        try:
            assert job.wait(60) == 130
        except subprocess.TimeoutExpired:
            pytest.fail("the second SIGINT did not stop the job")
    finally:
        job.kill()
        job.wait()
        os.close(reader)
    assert wait_until_none_marked(marker["COVID_TEST_RUN"]) == []


def test_the_job_waits_for_stream_py_in_one_line_and_ctrl_c_then_a_hang_up_stores_the_last_batch(
    tmp_path: Path, page: PageServer, marker: dict[str, str],
) -> None:
    port, ack_port = free_port(), free_port()
    texts = write_tweets(tmp_path / "tweets.jsonl", 20_000)  # runs past the stop
    consumer = Program(["spark_streaming.py", "--port", str(port), "--ack-port", str(ack_port),
                        "--batch-seconds", "1", "--worldometers-url", page.url,
                        "--embedded-db-path", str(tmp_path / "db"),
                        "--spool-path", str(tmp_path / "spool.jsonl"),
                        "--quarantine-path", str(tmp_path / "quarantine.jsonl"),
                        "--control-secret-file", str(tmp_path / "control.secret")],
                       env=marker, own_group=True)
    source = None
    try:
        consumer.wait_for_text("waiting for stream.py on 127.0.0.1:")
        consumer.wait_for(lambda lines: sum("Spark: 0 records" in line for line in lines) >= 3)
        source = producer(tmp_path, tmp_path / "tweets.jsonl", port, ack_port, 100)
        consumer.wait_for_text("is sending again")
        consumer.wait_for(lambda _: consumer.kept() >= 100)
        os.killpg(consumer.process.pid, signal.SIGINT)  # the JVM's and workers' group too
        consumer.wait_for_text("SIGINT received: stopping once")
        # then the terminal closes: a hang-up, not a second Ctrl-C (which exits 130)
        os.killpg(consumer.process.pid, signal.SIGHUP)
        assert consumer.process.wait(120) == 0, consumer.log
        source.wait_for_text("consumer disconnected")
        assert source.stop(signal.SIGTERM) == 0, source.log
    finally:
        consumer.kill()
        if source is not None:
            source.kill()
    log = consumer.log
    assert sum("waiting for stream.py" in line for line in consumer.lines) == 1, log
    assert "Restarting receiver" not in log and "Traceback" not in log
    assert "not stored" not in log and "interrupted" not in log, log
    assert "SIGINT received: stopping once the batch in flight is stored" in log
    stored = consumer.kept()
    records = sum(int(n) for n in re.findall(r", (\d+) records", log))  # keyword set, spans
    summary = next(line for line in source.lines if "summary:" in line)
    # each stored batch acknowledged: its posts and the producer's records in it
    assert f"{stored + records:,} stored" in summary, (summary, stored, records)
    assert 100 <= stored <= len(texts)
    assert wait_until_none_marked(marker["COVID_TEST_RUN"]) == []


@pytest.mark.parametrize("how", ["SIGINT to the group", "SIGTERM", "SIGHUP"])
def test_stopping_the_launcher_stops_the_job_first_and_leaves_nothing(
    tmp_path: Path, page: PageServer, marker: dict[str, str], how: str,
) -> None:
    with socket_closed() as dead:
        env = {**marker, "JETSTREAM_URLS": dead, "STREAM_PORT": str(free_port()),
               "ACK_PORT": str(free_port()), "BATCH_SECONDS": "1",
               "JOURNAL_PATH": str(tmp_path / "journal"),
               "SPOOL_PATH": str(tmp_path / "spool.jsonl"),
               "QUARANTINE_PATH": str(tmp_path / "quarantine.jsonl"),
               "CONTROL_SECRET_FILE": str(tmp_path / "control.secret"),
               "WORLDOMETERS_URL": page.url}
        launcher = Program([str(PROJECT / "scripts" / "launch.py"), "run"], cwd=tmp_path,
                           env=env, own_group=True)
    try:
        launcher.wait_for(lambda _: launcher.kept() > 0)
        if how == "SIGINT to the group":
            os.killpg(launcher.process.pid, signal.SIGINT)  # what Ctrl-C in `make run` does
        else:
            launcher.process.send_signal(getattr(signal, how))
        assert launcher.process.wait(120) == 0, launcher.log
    finally:
        launcher.kill()
    log = launcher.log
    assert wait_until_none_marked(marker["COVID_TEST_RUN"]) == [], log
    job_stopped = log.index("spark_streaming: stopped")
    assert job_stopped < log.index("stream: summary:"), log  # the job first, then stream.py
    assert "Connection refused" not in log and "cannot reach the control port" not in log, log
    assert "Traceback" not in log


def _read_or_empty(path: Path) -> str:
    """A /proc file's text, or "" when its thread has ended meanwhile."""
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""


class socket_closed:  # noqa: N801 (used as a context manager, like a function)
    """A ws:// URL on a port where nothing listens (a Jetstream host that is down)."""

    def __enter__(self) -> str:
        self._probe = socket.socket()
        self._probe.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{self._probe.getsockname()[1]}/subscribe"

    def __exit__(self, *exc: object) -> None:
        self._probe.close()


def test_processes_marked_finds_a_child_and_forgets_it_once_it_ends(
    marker: dict[str, str],
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **marker})
    try:
        # once it runs: Popen returns as soon as the exec began, and for a moment of
        # it /proc/PID/environ reads empty (seen once in a full run of this file)
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        assert len(processes_marked(marker["COVID_TEST_RUN"])) == 1
    finally:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.stdout.close()
        child.wait(30)
    assert processes_marked(marker["COVID_TEST_RUN"]) == []


# --- the launcher's own logic, with stand-ins for the two programs ---------------------

#: runs scripts/launch.py's main() with stream.py and spark_streaming.py taken from the
#: folder given as its second argument (stand-ins that say which signals they get)
LAUNCHER_WITH_STAND_INS = """
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("launch", sys.argv[1])
launch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(launch)
launch.PROJECT = Path(sys.argv[2])
sys.argv = ["launch.py", sys.argv[3]]
sys.exit(launch.main())
"""

STAND_IN = """
import os, signal, sys, threading
sys.path.insert(0, os.environ["PROJECT"])
from stopping import install_stop_handlers
name, stop, said, stopped = sys.argv[1], *(threading.Event() for _ in range(3))
def say(text):
    os.write(2, f"{name}: {text}\\n".encode())
def on_signal(signum, count):
    say(f"{signal.Signals(signum).name} {count}")
    said.set()
    if count > 1:
        os._exit(130)
install_stop_handlers(stop, [], on_signal)
say(f"running as pid {os.getpid()}")
if name == "producer":  # up: a writer of the FIFO no longer waits (kept open)
    up = os.open("producer-up", os.O_RDONLY | os.O_NONBLOCK)
if name == "job" and "--duration" in sys.argv:  # the demo's job ends by itself, but
    # not before stream.py runs: the launcher would stop it before it took its signals
    os.close(os.open("producer-up", os.O_WRONLY))
    sys.exit(0)
said.wait()
if name == "job":  # stores its batch in flight: STOP_SECONDS, or until asked again
    stopped.wait(float(os.environ["STOP_SECONDS"]) if "STOP_SECONDS" in os.environ else None)
    say("stopped")
"""


def launcher_with_stand_ins(tmp_path: Path, dead_jetstream: str, mode: str = "run",
                            **env: str) -> Program:
    """scripts/launch.py ``mode``, in its own process group as a terminal starts it,
    with stand-ins for stream.py and report.py (stop at the first stop signal) and
    spark_streaming.py (takes STOP_SECONDS to stop, forever by default, or stops at
    the second stop signal with status 130, as the job does; at once in the demo)."""
    for script, name in (("stream.py", "producer"), ("spark_streaming.py", "job"),
                         ("report.py", "report")):
        (tmp_path / script).write_text(
            f"import sys\nsys.argv[1:1] = [{name!r}]\n{STAND_IN}", encoding="utf-8")
    os.mkfifo(tmp_path / "producer-up")
    launcher = Program(["-c", LAUNCHER_WITH_STAND_INS, str(PROJECT / "scripts" / "launch.py"),
                        str(tmp_path), mode], cwd=tmp_path,
                       env={"JETSTREAM_URLS": dead_jetstream, "DATA_DIR": str(tmp_path),
                            "PROJECT": str(PROJECT), **env},
                       own_group=True)
    launcher.wait_for_text("producer: running")
    launcher.wait_for_text("job: running")
    return launcher


def stand_in_pid(launcher: Program, name: str) -> int:
    """The process id of the stand-in ``name`` ("producer", "job"), as it said."""
    said = re.search(rf"^{name}: running as pid (\d+)$", launcher.log, re.MULTILINE)
    assert said is not None, launcher.log
    return int(said.group(1))


@pytest.mark.parametrize(("sig", "status", "told"), [
    (signal.SIGTERM, 0, "stream.py stopped with status 0"),  # stream.py stops cleanly
    (signal.SIGKILL, 128 + signal.SIGKILL, "stream.py was killed by SIGKILL"),
])
def test_stream_py_leaving_stops_the_job_the_graceful_way_whatever_its_status(
    tmp_path: Path, sig: signal.Signals, status: int, told: str,
) -> None:
    """`kill <stream.py's pid>` leaves the job without a producer: the launcher says so
    and stops the job as a Ctrl-C does, then exits with stream.py's status."""
    with socket_closed() as dead:
        launcher = launcher_with_stand_ins(tmp_path, dead, STOP_SECONDS="0")
    try:
        os.kill(stand_in_pid(launcher, "producer"), sig)
        launcher.wait_for_text("job: stopped")  # it stored its batch in flight
        assert launcher.process.wait(30) == status, launcher.log
    finally:
        launcher.kill()
    log = launcher.log
    line = f"launch: {told}; stopping spark_streaming.py\n"
    assert log.count(line) == 1, log
    assert log.index(line) < log.index("job: SIGTERM 1"), log
    assert "job: SIGTERM 2" not in log and "Traceback" not in log, log


def test_a_second_ctrl_c_of_the_launcher_stops_the_job_at_once(tmp_path: Path) -> None:
    with socket_closed() as dead:
        launcher = launcher_with_stand_ins(tmp_path, dead)
    try:
        os.killpg(launcher.process.pid, signal.SIGINT)  # Ctrl-C: the launcher's group only
        launcher.wait_for_text("job: SIGTERM 1")  # the job stores its batch in flight...
        os.killpg(launcher.process.pid, signal.SIGINT)  # ...unless asked again
        # the launcher would otherwise wait for the job up to job_stop_seconds (2 min)
        launcher.wait_for_text("job: SIGTERM 2", timeout=30)
        assert launcher.process.wait(30) == 130, launcher.log
    finally:
        launcher.kill()
    assert "producer: SIGTERM 1" in launcher.log  # stream.py is still stopped, after the job


def test_stopping_the_demo_while_it_shows_what_was_stored_stops_report_py(
    tmp_path: Path,
) -> None:
    with socket_closed() as dead:
        launcher = launcher_with_stand_ins(tmp_path, dead, "demo")
    try:
        launcher.wait_for_text("report: running")  # the demo's first report.py command
        launcher.process.send_signal(signal.SIGTERM)  # the launcher only, as `kill` does
        launcher.wait_for_text("report: SIGTERM 1", timeout=30)
        assert launcher.process.wait(30) == 0, launcher.log
    finally:
        launcher.kill()
    assert launcher.log.count("report: running") == 1, launcher.log  # not the next one


def test_a_launcher_that_is_killed_has_its_programs_stop_the_graceful_way(
    tmp_path: Path,
) -> None:
    """The launcher asks the kernel to signal its programs when it dies; the kernel
    does so again for each of the launcher's threads that ends, and that must not
    read as a second Ctrl-C (the job would drop its batch in flight)."""
    with socket_closed() as dead:
        launcher = launcher_with_stand_ins(tmp_path, dead, STOP_SECONDS="3")
    try:
        launcher.process.kill()  # SIGKILL: no handler of the launcher runs
        launcher.wait_for_text("job: stopped", timeout=60)
    finally:
        launcher.kill()
    assert "producer: SIGHUP 1" in launcher.log, launcher.log
    assert "job: SIGHUP 1" in launcher.log and " 2\n" not in launcher.log, launcher.log
