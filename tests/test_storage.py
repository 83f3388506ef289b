"""storage.open_store: what a reader gets when there is no store, and the one line
an unreachable MongoDB gives (texts pymongo 4 really produced)."""

from __future__ import annotations

import random
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import config
import storage

REFUSED = (
    "127.0.0.1:45273: [Errno 111] Connection refused (configured timeouts: socketTimeoutMS: "
    "20000.0ms, connectTimeoutMS: 20000.0ms), Timeout: 3.0s, Topology Description: "
    "<TopologyDescription id: 6b11bf5bf9bd6a6d419900f7, topology_type: Unknown, servers: "
    "[<ServerDescription ('127.0.0.1', 45273) server_type: Unknown, rtt: None, "
    "error=AutoReconnect('127.0.0.1:45273: [Errno 111] Connection refused (configured "
    "timeouts: socketTimeoutMS: 20000.0ms, connectTimeoutMS: 20000.0ms)')>]>"
)
TWO_REFUSED = (
    "127.0.0.1:45273: [Errno 111] Connection refused (configured timeouts: socketTimeoutMS: "
    "20000.0ms, connectTimeoutMS: 20000.0ms),127.0.0.1:45274: [Errno 111] Connection "
    "refused (configured timeouts: socketTimeoutMS: 20000.0ms, connectTimeoutMS: "
    "20000.0ms), Timeout: 0.3s, Topology Description: <TopologyDescription id: "
    "6b11bf5cf9bd6a6d419900f8, topology_type: Unknown, servers: [<ServerDescription "
    "('127.0.0.1', 45273) server_type: Unknown, rtt: None, error=AutoReconnect("
    "'127.0.0.1:45273: [Errno 111] Connection refused (configured timeouts: "
    "socketTimeoutMS: 20000.0ms, connectTimeoutMS: 20000.0ms)')>, <ServerDescription "
    "('127.0.0.1', 45274) server_type: Unknown, rtt: None, error=AutoReconnect("
    "'127.0.0.1:45274: [Errno 111] Connection refused (configured timeouts: "
    "socketTimeoutMS: 20000.0ms, connectTimeoutMS: 20000.0ms)')>]>"
)
UNKNOWN_HOST = (
    "nonexistent.invalid:27017: [Errno -2] Name or service not known (configured timeouts: "
    "socketTimeoutMS: 20000.0ms, connectTimeoutMS: 20000.0ms), Timeout: 0.3s, Topology "
    "Description: <TopologyDescription id: 6b11bf5cf9bd6a6d419900f9, topology_type: "
    "Unknown, servers: [<ServerDescription ('nonexistent.invalid', 27017) server_type: "
    "Unknown, rtt: None, error=AutoReconnect('nonexistent.invalid:27017: [Errno -2] Name "
    "or service not known (configured timeouts: socketTimeoutMS: 20000.0ms, "
    "connectTimeoutMS: 20000.0ms)')>]>"
)
TIMED_OUT = (
    "db.example.net:27017: timed out (configured timeouts: socketTimeoutMS: 20000.0ms, "
    "connectTimeoutMS: 20000.0ms), Timeout: 30s, Topology Description: "
    "<TopologyDescription id: 65f0, topology_type: Unknown, servers: [<ServerDescription "
    "('db.example.net', 27017) server_type: Unknown, rtt: None, error=NetworkTimeout("
    "'db.example.net:27017: timed out (configured timeouts: socketTimeoutMS: 20000.0ms, "
    "connectTimeoutMS: 20000.0ms)')>]>"
)
NO_MEMBERS = ("No replica set members found yet, Timeout: 30.0s, Topology Description: "
              "<TopologyDescription id: 65f1, topology_type: ReplicaSetNoPrimary, servers: []>")


@pytest.mark.parametrize(("text", "reason"), [
    (REFUSED, "127.0.0.1:45273: connection refused"),
    (TWO_REFUSED, "127.0.0.1:45273: connection refused; 127.0.0.1:45274: connection refused"),
    (UNKNOWN_HOST, "nonexistent.invalid:27017: name or service not known"),
    (TIMED_OUT, "db.example.net:27017: timed out"),
    (NO_MEMBERS, "no replica set members found yet"),
])
def test_unreachable_reason_is_each_servers_error_alone(text: str, reason: str) -> None:
    assert storage.unreachable_reason(text) == reason


def test_unreachable_message_is_one_short_line_with_a_hint() -> None:
    where = "mongodb://user:***@127.0.0.1:27017/"
    message = storage.unreachable_message(where, REFUSED)
    assert message == (
        "cannot reach MongoDB at mongodb://user:***@127.0.0.1:27017/: 127.0.0.1:45273: "
        "connection refused (after 3 s); start MongoDB, check MONGODB_URI / --mongo-uri, "
        "or unset it to use the embedded store")
    assert storage.unreachable_message(where, TWO_REFUSED).count("(after 0.3 s)") == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_port_is_one_line_naming_host_port_and_reason() -> None:
    port = free_port()
    uri = f"mongodb://user:pw-secret@127.0.0.1:{port}/?serverSelectionTimeoutMS=300"
    with pytest.raises(storage.StoreError) as err:
        storage.open_store(config.Settings(mongo_uri=uri))
    message = str(err.value)
    assert "pw-secret" not in message and "\n" not in message
    assert message.startswith("cannot reach MongoDB at mongodb://user:***@127.0.0.1:")
    assert f": 127.0.0.1:{port}: connection refused (after 0.3 s); start MongoDB" in message
    assert "Topology" not in message and "configured timeouts" not in message
    assert len(message) < 250


def test_a_reader_gets_no_new_store_where_there_is_none(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "db"
    with pytest.raises(storage.StoreError) as err:
        storage.open_store(config.Settings(embedded_db_path=missing), create=False)
    assert str(err.value) == (f"no store at {missing}: nothing stored yet? check "
                              "--embedded-db-path / EMBEDDED_DB_PATH")
    assert not (tmp_path / "typo").exists()
    empty = tmp_path / "empty"  # a folder, but no store in it: left as it is
    empty.mkdir()
    with pytest.raises(storage.StoreError):
        storage.open_store(config.Settings(embedded_db_path=empty), create=False)
    assert list(empty.iterdir()) == []


def test_the_job_still_creates_its_store_and_a_reader_then_opens_it(tmp_path: Path) -> None:
    path = tmp_path / "db"
    settings = config.Settings(embedded_db_path=path)
    storage.open_store(settings).close()  # the Spark job's call: create=True by default
    assert (path / storage.EMBEDDED_MARKER).is_file()
    reader = storage.open_store(settings, create=False)
    try:
        assert reader.latest(5) == []
    finally:
        reader.close()


def test_the_embedded_window_is_in_time_order_whatever_the_order_written(tmp_path: Path
                                                                         ) -> None:
    """report.py reads the embedded store's file itself (MontyDB's cursor holds every
    document before the first): the same documents, in the same order, as a query."""
    t0 = datetime(2026, 11, 28, 23, 0)
    documents = [{"_id": f"b{i}", "timestamp": t0 + timedelta(seconds=20 * i),
                  "content": [f"post {i}"]} for i in range(40)]
    random.Random(7).shuffle(documents)  # a spool drained late, batches written again
    documents.append({"_id": "undated", "content": ["no timestamp"]})
    store = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    try:
        for document in documents:
            store.write(document)
        since, until = t0 + timedelta(seconds=100), t0 + timedelta(seconds=300)
        windowed = list(store.window(since.replace(tzinfo=UTC), until))
        assert [d["_id"] for d in windowed] == [f"b{i}" for i in range(5, 15)]
        assert windowed == list(store.collection.find(storage.window_filter(since, until))
                                .sort("timestamp", 1))
        everything = [d["_id"] for d in store.window()]
        assert everything == ["undated", *(f"b{i}" for i in range(40))]
    finally:
        store.close()
