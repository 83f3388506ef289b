"""Range reads of the producer's journal on the control channel (the structured engine's
source): exactly the range asked for, and nothing from a chunk that was forged,
replayed, moved, changed or cut short."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import capture_logs

import control
import control_reads
from control_reads import Chunk, ReadClient
from journal import Journal
from utility import TweetServer

SECRET = b"a-control-secret-for-the-tests-0123456789"
TIMEOUT = 10.0


class Producer:
    """A TweetServer with a control port; nobody reads its tweet socket."""

    def __init__(self, path: Path) -> None:
        self.server = TweetServer("127.0.0.1", 0, Journal(path), ack_port=0, secret=SECRET)
        self.server.start()
        self.port = self.server.ack_address[1]  # type: ignore[index]
        self.source = self.server.source

    def put(self, count: int, start: int = 0) -> None:
        for n in range(start, start + count):
            assert self.server.put({"id": f"t{n}", "text": f"tweet {n}"})
        self.server.sync(TIMEOUT)

    def client(self) -> ReadClient:
        return ReadClient("127.0.0.1", self.port, SECRET)


@pytest.fixture
def producer(tmp_path: Path) -> Iterator[Producer]:
    running = Producer(tmp_path / "journal")
    yield running
    running.server.close()


def seqs(chunks: list[Chunk]) -> list[int]:
    return [json.loads(line)["seq"] for chunk in chunks for line in chunk.lines]


def test_status_says_whose_journal_and_how_far(producer: Producer) -> None:
    client = producer.client()
    try:
        assert client.status() == control_reads.JournalStatus(producer.source, 1, 0)
        producer.put(7)
        assert client.status() == control_reads.JournalStatus(producer.source, 1, 7)
    finally:
        client.close()


def test_a_range_read_gives_exactly_that_range_in_order(producer: Producer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control_reads, "CHUNK_BYTES", 300)  # a few records a chunk
    producer.put(50)
    client = producer.client()
    try:
        chunks = list(client.read(producer.source, 11, 40))
        again = list(client.read(producer.source, 11, 40))  # after a failure: the same
    finally:
        client.close()
    assert len(chunks) > 3
    assert seqs(chunks) == list(range(11, 41))
    assert [json.loads(line)["text"] for line in chunks[0].lines][:2] == ["tweet 10", "tweet 11"]
    # the chunks account for the range back to back
    assert chunks[0].first == 11 and chunks[-1].last == 40
    assert all(a.last + 1 == b.first for a, b in itertools.pairwise(chunks))
    assert again == chunks


def test_what_was_acknowledged_is_stored_and_not_served_again(producer: Producer) -> None:
    producer.put(10)
    client = producer.client()
    try:
        list(client.read(producer.source, 1, 10))  # read: now it may be acknowledged
        assert producer.server.ack(4)
        chunks = list(client.read(producer.source, 1, 10))
        other = list(client.read("0ther0journal", 1, 10))
    finally:
        client.close()
    assert seqs(chunks) == list(range(5, 11))
    assert (chunks[0].first, chunks[-1].last) == (1, 10)  # 1..4 accounted for, as stored
    assert other == [Chunk(1, 10, [])]  # another journal's seqs: none of them are here


def test_an_ack_of_what_was_read_is_taken(producer: Producer) -> None:
    """Read on the control port counts as sent: the job's ack of it is not refused."""
    producer.put(5)
    client = producer.client()
    acks = control.ControlClient("127.0.0.1", producer.port, SECRET)
    try:
        list(client.read(producer.source, 1, 5))
        acks.send({producer.source: 5}, {})
        assert producer.server.wait_until_drained(TIMEOUT)
    finally:
        acks.close()
        client.close()
    assert producer.server.refused_acks == 0 and producer.server.sent == 5


def test_a_range_not_journaled_yet_is_refused_not_cut(producer: Producer) -> None:
    producer.put(5)
    client = producer.client()
    try:
        with pytest.raises(control_reads.RangeNotHeldError, match="up to 5, not yet up to 9"):
            list(client.read(producer.source, 3, 9))
        producer.put(4, start=5)
        assert seqs(list(client.read(producer.source, 3, 9))) == list(range(3, 10))
    finally:
        client.close()


def test_a_read_without_the_secret_is_dropped(producer: Producer) -> None:
    producer.put(3)
    with capture_logs("control") as logs, socket.create_connection(
            ("127.0.0.1", producer.port), timeout=TIMEOUT) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"hello ")
        sock.sendall(f"read {producer.source} 1 3\n".encode())
        assert reader.readline() == b""  # hung up, nothing served
        logs.wait_for("control port: dropped a connection")
    assert producer.server.sent == 0


# --- a producer that holds the secret and answers with damaged chunks --------------------


class FakeProducer:
    """A control port that authenticates as stream.py does and answers each ``read``
    with ``answer(session, first, last)``'s bytes."""

    def __init__(self, answer: Callable[[control.Session, str, int, int], bytes]) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sessions: list[control.Session] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        reader = control.LineReader(conn)
        nonce = secrets.token_hex(16)
        conn.sendall(f"hello {nonce}\n".encode())
        line = reader.readline()
        if line is None:
            return
        _, job_nonce, _ = line.decode().split()
        conn.sendall(f"ok {control._mac(SECRET, 'ok', nonce, job_nonce)}\n".encode())
        session = control.Session(SECRET, nonce, job_nonce)
        self.sessions.append(session)
        while (line := reader.readline()) is not None:
            _, source, first, last = session.open("job", line)
            try:
                conn.sendall(self.answer(session, source, int(first), int(last)))
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()


def records(source: str, first: int, last: int) -> bytes:
    return b"".join(b'{"seq":%d,"src":"%s","id":"t%d","text":"tweet %d"}\n'
                    % (n, source.encode(), n, n) for n in range(first, last + 1))


def header(session: control.Session, source: str, first: int, last: int, data: bytes,
           digest: str | None = None) -> bytes:
    digest = digest or hashlib.sha256(data).hexdigest()
    return session.seal("producer", f"chunk {source} {first} {last} {len(data)} {digest}")


def chunk(session: control.Session, source: str, first: int, last: int) -> bytes:
    data = records(source, first, last)
    return header(session, source, first, last, data) + data


def changed_byte(session: control.Session, source: str, first: int, last: int) -> bytes:
    data = records(source, first, last)
    sealed = header(session, source, first, last, data)
    return sealed + data.replace(b"tweet 2", b"tweet 9")


def cut_short(session: control.Session, source: str, first: int, last: int) -> bytes:
    data = records(source, first, last)
    return header(session, source, first, last, data) + data[:-10]  # then the socket closes


def lengthened(session: control.Session, source: str, first: int, last: int) -> bytes:
    data = records(source, first, first)
    more = records(source, first + 1, last)
    return header(session, source, first, first, data) + data + more  # unannounced bytes


def moved(session: control.Session, source: str, first: int, last: int) -> bytes:
    """Two chunks, the second sent before the first: each sealed with its own number."""
    one, two = records(source, first, first + 1), records(source, first + 2, last)
    sealed_one = header(session, source, first, first + 1, one) + one
    sealed_two = header(session, source, first + 2, last, two) + two
    return sealed_two + sealed_one


def replayed(session: control.Session, source: str, first: int, last: int) -> bytes:
    """A chunk recorded from another connection (another pair of nonces)."""
    other = control.Session(SECRET, "f" * 32, "e" * 32)
    return chunk(other, source, first, last)


def not_its_records(session: control.Session, source: str, first: int, last: int) -> bytes:
    data = records("0ther0journal", first, last)
    return header(session, source, first, last, data) + data


def outside_the_range(session: control.Session, source: str, first: int, last: int) -> bytes:
    data = records(source, first, last + 3)
    return header(session, source, first, last, data) + data


def unsealed(session: control.Session, source: str, first: int, last: int) -> bytes:
    data = records(source, first, last)
    digest = hashlib.sha256(data).hexdigest()
    forged = hmac.new(b"a guess", b"x", hashlib.sha256).hexdigest()[:32]
    return f"chunk {source} {first} {last} {len(data)} {digest} {forged}\n".encode() + data


@pytest.mark.parametrize("answer", [changed_byte, cut_short, lengthened, moved, replayed,
                                    not_its_records, outside_the_range, unsealed])
def test_a_damaged_or_forged_chunk_yields_nothing(answer: Callable[..., bytes]) -> None:
    fake = FakeProducer(answer)
    client = ReadClient("127.0.0.1", fake.port, SECRET, timeout=2.0)
    got: list[Chunk] = []
    try:
        with pytest.raises((control.ProtocolError, OSError)):
            got.extend(client.read("abc123", 1, 6))
    finally:
        client.close()
        fake.close()
    # a chunk yields its lines only once all of them passed every check
    for good in got:
        assert good.lines == records("abc123", good.first, good.last).decode().splitlines()
    assert sum(len(good.lines) for good in got) < 6


def test_the_fake_producer_answering_properly_is_read() -> None:
    """The checks above fail on the damage, not on the fake producer itself."""
    fake = FakeProducer(chunk)
    client = ReadClient("127.0.0.1", fake.port, SECRET)
    try:
        (whole,) = list(client.read("abc123", 1, 6))
    finally:
        client.close()
        fake.close()
    assert whole.lines == records("abc123", 1, 6).decode().splitlines()
