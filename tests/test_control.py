"""The control channel: only a holder of the secret can make stream.py forget,
resend or skip anything, and nothing a peer sends can crash it."""

from __future__ import annotations

import json
import logging
import select
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SELECT_LIMIT
from processes import LogWaiter, capture_logs

import control
from journal import Journal
from utility import SendCursor, TweetServer

SECRET = b"a-control-secret-for-the-tests-0123456789"
TIMEOUT = 10.0


# --- the secret -------------------------------------------------------------------------


def test_the_secret_file_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "control.secret"
    first = control.load_secret(None, path)
    assert len(first) == 64 and path.stat().st_mode & 0o777 == 0o600
    assert control.load_secret(None, path) == first  # the other program reads the same


def test_two_programs_making_the_secret_at_once_get_the_same(tmp_path: Path) -> None:
    path = tmp_path / "control.secret"
    results: list[bytes] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        results.append(control.load_secret(None, path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert len(results) == 8 and len(set(results)) == 1


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_secret_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "control.secret"
    path.write_text("x" * 64)
    path.chmod(mode)
    with pytest.raises(control.ControlError, match="can be read by others; run: chmod 600"):
        control.load_secret(None, path)


def test_control_secret_from_the_environment_wins_and_must_be_long(tmp_path: Path) -> None:
    path = tmp_path / "never-made"
    assert control.load_secret("s" * 16, path) == b"s" * 16
    assert not path.exists()
    with pytest.raises(control.ControlError, match="at least 16 characters"):
        control.load_secret("short", path)


# --- the producer's side against forged, replayed and broken lines ---------------------------


class Producer:
    """A TweetServer with a control port and a consumer that reads what it sends."""

    def __init__(self, path: Path) -> None:
        self.server = TweetServer("127.0.0.1", 0, Journal(path), ack_port=0, secret=SECRET)
        self.server.start()
        self.port = self.server.ack_address[1]  # type: ignore[index]
        self.consumer = socket.create_connection(self.server.address, timeout=TIMEOUT)
        self.reader = self.consumer.makefile("rb")

    def put(self, count: int) -> list[int]:
        for n in range(count):
            assert self.server.put({"id": f"t{n}", "text": f"tweet {n}"})
        return [json.loads(self.reader.readline())["seq"] for _ in range(count)]

    def close(self) -> None:
        self.reader.close()
        self.consumer.close()
        self.server.close()


@pytest.fixture
def producer(tmp_path: Path) -> Iterator[Producer]:
    running = Producer(tmp_path / "journal")
    yield running
    running.close()


@pytest.fixture
def control_log() -> Iterator[LogWaiter]:
    with capture_logs("control", "utility") as waiter:
        yield waiter


def raw_session(port: int) -> tuple[socket.socket, Any, str]:
    """A connection to the control port after its greeting: (socket, reader, nonce)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    reader = sock.makefile("rb")
    greeting = reader.readline().decode().split()
    assert greeting[0] == "hello" and len(greeting) == 2
    return sock, reader, greeting[1]


def hung_up(reader: Any) -> bool:
    """True when the producer has closed the connection (cleanly, or with a reset
    because our line was left unread)."""
    try:
        return reader.readline() == b""
    except ConnectionResetError:
        return True


def test_the_job_acknowledges_and_the_producer_forgets(producer: Producer) -> None:
    producer.put(5)
    job = control.ControlClient("127.0.0.1", producer.port, SECRET)
    job.send({producer.server.source: 3}, {})
    job.send({producer.server.source: 5}, {})  # same connection: handled in order
    assert producer.server.wait_until_drained(TIMEOUT)
    job.close()


@pytest.mark.parametrize("lines", [
    [b"ack {src} 1000000000\n"],  # the old, unauthenticated protocol
    [b"auth feedface 0123456789abcdef0123456789abcdef\n", b"ack {src} 5\n"],  # a guessed MAC
    [b"\xff\xfe\x00binary\n"],
    [b"x" * 5000 + b"\n"],
    [b"auth\n"],
    [b"resend {src} 0\n"] * 50,
])
def test_lines_without_the_secret_change_nothing(producer: Producer, control_log: LogWaiter,
                                                 lines: list[bytes]) -> None:
    producer.put(5)
    sock, reader, _ = raw_session(producer.port)
    with sock, reader:
        try:
            for line in lines:
                sock.sendall(line.replace(b"{src}", producer.server.source.encode()))
        except (BrokenPipeError, ConnectionResetError):
            pass  # it hung up after the first bad line
        assert hung_up(reader)
    control_log.wait_for("control port: dropped a connection")
    assert producer.server.pending == 5 and producer.server.acked == 0
    # and it goes on serving the real job
    job = control.ControlClient("127.0.0.1", producer.port, SECRET)
    job.send({producer.server.source: 5}, {})
    assert producer.server.wait_until_drained(TIMEOUT)
    job.close()


def test_a_job_with_another_secret_is_refused_and_told(producer: Producer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    producer.put(3)
    wrong = control.ControlClient("127.0.0.1", producer.port, b"another-secret-0123456789")
    with caplog.at_level(logging.WARNING, logger="control"):
        assert wrong.send({producer.server.source: 3}, {}) == {}
        assert wrong.send({producer.server.source: 3}, {}) == {}  # warned once only
    job_side = [r.getMessage() for r in caplog.records if "cannot use" in r.getMessage()]
    assert len(job_side) == 1 and "CONTROL_SECRET" in job_side[0]
    assert producer.server.pending == 3
    wrong.close()


def test_different_secrets_are_named_on_both_sides_once_per_change(tmp_path: Path) -> None:
    """The two programs started in different folders once made two secret files: each
    side says which secret it used, once per change of state, not once per batch."""
    producer_file = tmp_path / "project" / "data" / "control.secret"
    job_file = tmp_path / "samples" / "data" / "control.secret"
    producer_secret = control.load_secret(None, producer_file)
    job_secret = control.load_secret(None, job_file)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    same = "both programs must use the same CONTROL_SECRET_FILE / CONTROL_SECRET"
    with capture_logs("control") as logs:
        job = control.ControlClient("127.0.0.1", port, job_secret)
        job.send({"p": 1}, {})  # the producer is not up yet
        server = TweetServer("127.0.0.1", 0, Journal(tmp_path / "journal"), ack_port=port,
                             secret=producer_secret)
        server.start()
        try:
            for _ in range(3):  # three batches
                job.send({server.source: 1}, {})
            logs.wait_for("wrong control secret", times=3)
            # a job holding the producer's secret authenticates: the next wrong one is told
            right = control.ControlClient("127.0.0.1", port, producer_secret)
            right.send({server.source: 0}, {})
            right.close()
            job.send({server.source: 1}, {})
            logs.wait_for("wrong control secret", times=4)
        finally:
            job.close()
            server.close()
    warnings = [text for level, text in logs.messages if level >= logging.WARNING]
    job_side = [text for text in warnings if "cannot use" in text]
    assert len(job_side) == 2, warnings  # unreachable, then the wrong secret
    assert f"this job uses CONTROL_SECRET_FILE {job_file}" in job_side[1]
    assert same in job_side[1]
    producer_side = [text for text in warnings if "wrong control secret" in text]
    assert len(producer_side) == 2, warnings  # the first, and the first after the good job
    assert all(f"this producer uses CONTROL_SECRET_FILE {producer_file}" in text
               and same in text for text in producer_side)


def test_the_secret_from_control_secret_is_named_as_such() -> None:
    secret = control.load_secret("s" * 16, Path("unused"))
    assert secret == b"s" * 16
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        server = control.ControlServer(listener, b"another-secret-0123456789", "p",
                                       lambda seq: None, lambda seq: (seq, seq))
        server.start()
        with capture_logs("control") as logs:
            job = control.ControlClient("127.0.0.1", listener.getsockname()[1], secret)
            job.send({"p": 1}, {})
            job.close()
            server.close()
    assert any("this job uses CONTROL_SECRET;" in text for text in logs.lines), logs.lines


def test_a_line_replayed_on_another_connection_is_refused(producer: Producer,
                                                          control_log: LogWaiter) -> None:
    """A recorded authenticated line is worthless elsewhere: the MAC covers both nonces."""
    producer.put(5)
    sock, reader, nonce = raw_session(producer.port)
    session = control.Session(SECRET, nonce, "cafe")
    proof = control._mac(SECRET, "auth", nonce, "cafe")
    sock.sendall(f"auth cafe {proof}\n".encode())
    assert reader.readline().startswith(b"ok ")
    recorded = session.seal("job", f"ack {producer.server.source} 2")
    sock.sendall(recorded)
    sock.sendall(recorded)  # the same line again on the same connection: wrong number
    assert hung_up(reader)
    sock.close()
    control_log.wait_for("dropped a connection")
    assert producer.server.acked == 2  # the first one counted, the repeat did not

    again, again_reader, _ = raw_session(producer.port)
    with again, again_reader:
        again.sendall(f"auth cafe {proof}\n".encode())  # the old proof, a new nonce
        assert hung_up(again_reader)
    control_log.wait_for("dropped a connection", 2)
    assert producer.server.acked == 2


def test_an_ack_beyond_what_was_sent_is_refused(producer: Producer,
                                                control_log: LogWaiter) -> None:
    producer.put(4)
    producer.server.put({"id": "unsent", "text": "not read by anyone yet"})
    job = control.ControlClient("127.0.0.1", producer.port, SECRET)
    job.send({producer.server.source: 1_000_000_000}, {})
    control_log.wait_for("refused an ack up to seq 1000000000")
    assert producer.server.refused_acks >= 1 and producer.server.acked == 0
    job.close()


def test_resends_are_answered_and_rate_limited(producer: Producer,
                                               control_log: LogWaiter) -> None:
    seqs = producer.put(5)
    job = control.ControlClient("127.0.0.1", producer.port, SECRET)
    src = producer.server.source
    job.send({src: 0}, {src: 1})
    again = [json.loads(producer.reader.readline())["seq"] for _ in range(5)]
    assert again == seqs  # the first request rewinds the sender
    for _ in range(20):
        job.send({src: 0}, {src: 1})  # a flood within RESEND_MIN_SECONDS: no more rewinds
    answers: dict[str, tuple[int, int]] = {}
    while src not in answers:  # each resend is answered: wait for the answers to come
        assert select.select([job._sock], [], [], TIMEOUT)[0], "no held answer"
        answers = job.send({}, {})
    assert answers[src] == (1, 6)  # it holds 1..5, the next seq is 6
    assert control_log.count("asked for the tweets from seq") == 1
    job.close()


def test_both_sides_work_through_descriptors_past_select_s_limit(
    tmp_path: Path, high_fds: None
) -> None:
    """select() raises ValueError for a descriptor from 1024 on, as a busy program holds."""
    left, right = socket.socketpair()
    with left, right:
        assert left.fileno() >= SELECT_LIMIT
        assert not control.peer_closed(left)
        right.close()
        assert control.peer_closed(left)
    running = Producer(tmp_path / "journal")
    job = control.ControlClient("127.0.0.1", running.port, SECRET)
    src = running.server.source
    try:
        seqs = running.put(5)
        answers = job.send({src: 0}, {src: 1})
        assert [json.loads(running.reader.readline())["seq"] for _ in range(5)] == seqs
        while src not in answers:  # the held answer: wait for it, then read it
            assert job._sock is not None
            with selectors.DefaultSelector() as selector:
                selector.register(job._sock, selectors.EVENT_READ)
                assert selector.select(TIMEOUT), "no held answer"
            answers = job.send({}, {})
        assert answers == {src: (1, 6)}
        connection = job._sock
        job.send({src: 5}, {})
        assert job._sock is connection  # peer_closed did not take the producer for gone
        assert running.server.wait_until_drained(TIMEOUT)
    finally:
        job.close()
        running.close()


def test_the_client_notices_a_restarted_producer(tmp_path: Path) -> None:
    """After a restart the first ack must not vanish into the old, closed connection."""
    first = Producer(tmp_path / "journal")
    src = first.server.source
    first.put(3)
    job = control.ControlClient("127.0.0.1", first.port, SECRET)
    job.send({src: 1}, {src: 2})  # the answer to the resend comes after the ack is applied
    assert select.select([job._sock], [], [], TIMEOUT)[0]
    assert job.send({}, {}) == {src: (2, 4)}  # it holds 2 on; 4 is the next seq
    port = first.port
    first.close()  # stream.py stops; its journal keeps seqs 2 and 3
    second = TweetServer("127.0.0.1", 0, Journal(tmp_path / "journal"), ack_port=port,
                         secret=SECRET)
    second.start()
    try:
        consumer = socket.create_connection(second.address, timeout=TIMEOUT)
        with consumer, consumer.makefile("rb") as reader:
            assert [json.loads(reader.readline())["seq"] for _ in range(2)] == [2, 3]
            job.send({src: 3}, {})
            assert second.wait_until_drained(TIMEOUT)
    finally:
        job.close()
        second.close()


def test_connections_that_never_authenticate_cannot_keep_the_job_out(
    producer: Producer, control_log: LogWaiter
) -> None:
    """A slowloris: as many connections as the port serves, each sending a byte now
    and then and never a whole line. The job still gets in at once and is heard."""
    producer.put(2)
    idle = [socket.create_connection(("127.0.0.1", producer.port), timeout=TIMEOUT)
            for _ in range(control.ControlServer.MAX_CONNECTIONS)]
    try:
        for sock in idle:
            sock.recv(100)  # hello: each is being served
            sock.sendall(b"a")  # the start of a line that never ends
        job = control.ControlClient("127.0.0.1", producer.port, SECRET)
        job.send({producer.server.source: 2}, {})
        assert producer.server.wait_until_drained(TIMEOUT)
        job.close()
    finally:
        for sock in idle:
            sock.close()


def test_a_handshake_that_trickles_is_dropped_on_time(producer: Producer,
                                                      control_log: LogWaiter) -> None:
    sock, reader, _ = raw_session(producer.port)
    with sock, reader:
        started = time.monotonic()
        while not control_log.count("did not authenticate in time"):
            sock.sendall(b"a")  # a byte at a time, each well within the socket's timeout
            if select.select([sock], [], [], 0.5)[0]:
                break
        control_log.wait_for("did not authenticate in time")
    assert time.monotonic() - started < control.HANDSHAKE_TIMEOUT + 3


def test_the_stored_count_is_exact_while_tweets_are_journaled_during_an_ack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stream.py's "N stored" (and its metric) counts the tweets an ack covers, even
    when the source journals more at the same moment (as a live source always does)."""
    journal = Journal(tmp_path / "journal")
    for n in range(10):
        last = journal.put({"id": str(n), "text": f"tweet {n}"})
    assert journal.wait_committed(last, 10)
    cursor = SendCursor(journal, resend_min_seconds=0, refused_warning_seconds=60)
    real_ack = journal.ack

    def ack_while_putting(seq: int) -> None:
        for n in range(10, 13):  # the source's thread puts three more meanwhile
            journal.put({"id": str(n), "text": f"tweet {n}"})
        real_ack(seq)

    monkeypatch.setattr(journal, "ack", ack_while_putting)
    try:
        assert cursor.ack(5) is True
        assert cursor.acked == 5 and journal.held == 8
    finally:
        journal.close()


def test_the_stored_count_counts_each_tweet_once_when_two_acks_cross(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each control connection is served by its own thread (a job restarted while the
    old connection's last line is read): two acks handled at once count each
    acknowledged tweet once."""
    journal = Journal(tmp_path / "journal")
    for n in range(10):
        last = journal.put({"id": str(n), "text": f"tweet {n}"})
    assert journal.wait_committed(last, 10)
    cursor = SendCursor(journal, resend_min_seconds=0, refused_warning_seconds=60)
    real_ack = journal.ack
    first_inside, second_done = threading.Event(), threading.Event()

    def crossing_ack(seq: int) -> None:
        if seq == 4:  # the first ack is recorded only after the second one is counted
            first_inside.set()
            assert second_done.wait(TIMEOUT)
        real_ack(seq)

    monkeypatch.setattr(journal, "ack", crossing_ack)
    first = threading.Thread(target=cursor.ack, args=(4,))
    try:
        first.start()
        assert first_inside.wait(TIMEOUT)
        assert cursor.ack(8) is True
        second_done.set()
        first.join(TIMEOUT)
        assert cursor.acked == 8 and journal.held == 2
    finally:
        second_done.set()
        journal.close()
