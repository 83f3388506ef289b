"""Deletions are honoured: a post its author deleted leaves every stored document, the
batch it came in and the spool, on both store kinds, with post fields on or off; only
a delete sealed with the control secret does it, and each is applied once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import mongomock
import pymongo.errors
import pytest
from wire_lines import SECRET, delete, post, records, sealed

import config
import control
import scrape
import storage
import transform
import wire_records
from job.batch import Quarantine
from job.writer import BatchWriter
from storage import embedded, post_keys, spool

READING = scrape.CaseCount(704_753_890, datetime(2024, 4, 13, tzinfo=UTC), "worldometers",
                           fresh=True)
BATCH = datetime(2026, 11, 30, 8, 0, 20, tzinfo=UTC)
FIELDS = ("id", "lang")


def at(n: int) -> datetime:
    """The time of the ``n``-th batch."""
    return BATCH + timedelta(seconds=20 * n)


@pytest.fixture(params=["embedded", "mongomock"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[storage.BatchStore]:
    if request.param == "embedded":
        opened = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    else:
        opened = storage.BatchStore(
            mongomock.MongoClient(tz_aware=True).covid19.tweet_batches, "mongomock")
    yield opened
    opened.close()


def writer_for(store: storage.BatchStore, tmp_path, fields: tuple[str, ...] = (),
               **options) -> BatchWriter:
    durable = storage.DurableStore(store, storage.Spool(tmp_path / "spool.jsonl"), ())
    return BatchWriter(durable, lambda: READING, secret=SECRET, post_fields=fields,
                       **options)


def write(writer: BatchWriter, n: int, *lines: str):
    return writer.write_records(at(n), records(*lines, fields=writer.post_fields))


def documents(store: storage.BatchStore) -> list[dict]:
    """The stored documents in _id order, read as the reports read them."""
    return sorted(store.window(), key=lambda document: document["_id"])


def stored_texts(store: storage.BatchStore) -> list[str]:
    return [text for document in documents(store) for text in document["content"]]


def everything_stored(store: storage.BatchStore) -> str:
    """Every stored document of every collection of the store's database, as text."""
    database = store.collection.database
    return "\n".join(repr(list(database[name].find()))
                     for name in database.list_collection_names())


@pytest.mark.parametrize("fields", [(), FIELDS], ids=["no post fields", "post fields"])
def test_a_delete_removes_a_stored_post_and_keeps_the_lists_aligned(store, tmp_path,
                                                                    fields) -> None:
    writer = writer_for(store, tmp_path, fields)
    write(writer, 0, *(post(n, f"at://did:plc:a/app.bsky.feed.post/{n}") for n in (1, 2, 3)))
    stats = write(writer, 1, delete(4, "at://did:plc:a/app.bsky.feed.post/2"))
    assert (stats.deletes, stats.deleted, stats.kept) == (1, 1, 0)
    [document] = documents(store)
    assert document["content"] == ["text of at://did:plc:a/app.bsky.feed.post/1",
                                   "text of at://did:plc:a/app.bsky.feed.post/3"]
    assert document["deleted"] == 1
    assert document["post_keys"] == [
        wire_records.post_key(f"at://did:plc:a/app.bsky.feed.post/{n}") for n in (1, 3)]
    if fields:
        assert [p["id"] for p in document["posts"]] == [
            "at://did:plc:a/app.bsky.feed.post/1", "at://did:plc:a/app.bsky.feed.post/3"]
    assert "post/2" not in everything_stored(store)  # its text and id are nowhere
    assert document["delivery"] == [{"source": "p1", "last_seq": 3}]  # delivery untouched


def test_the_stored_document_holds_keys_never_ids(store, tmp_path) -> None:
    write(writer_for(store, tmp_path), 0,
          post(1, "at://did:plc:alice/app.bsky.feed.post/k", "masks again"))
    assert "did:plc:alice" not in everything_stored(store)  # post fields off: no id anywhere
    [entry] = store.post_keys.collection.find()
    assert entry == {"_id": wire_records.post_key("at://did:plc:alice/app.bsky.feed.post/k"),
                     "batch": documents(store)[0]["_id"]}
    assert len(entry["_id"]) == 16  # 128 bits


def test_a_delete_reaches_a_post_in_any_part_of_a_split_batch(store, tmp_path) -> None:
    texts = [f"{i:03d} " + "x" * 3_000 for i in range(30)]
    writer = writer_for(store, tmp_path, FIELDS, max_content_bytes=40_000)
    write(writer, 0, *(post(i + 1, f"id-{i}", text) for i, text in enumerate(texts)))
    parts = documents(store)
    assert len(parts) > 2
    last_part = parts[-1]["content"]
    victims = [texts[1], last_part[0]]  # one in the first part, one in the last
    write(writer, 1, delete(31, "id-1"), delete(32, f"id-{texts.index(last_part[0])}"))
    assert stored_texts(store) == [t for t in texts if t not in victims]
    for part in documents(store):
        assert len(part["content"]) == len(part["posts"]) == len(part["post_keys"])
    assert sum(part.get("deleted", 0) for part in documents(store)) == 2


def test_a_post_deleted_in_its_own_batch_is_never_stored(store, tmp_path) -> None:
    writer = writer_for(store, tmp_path, FIELDS)
    stats = write(writer, 0, post(1, "a"), post(2, "b"), delete(3, "a"), post(4, "c"))
    assert (stats.kept, stats.deletes, stats.deleted) == (2, 1, 1)
    [document] = documents(store)
    assert document["content"] == ["text of b", "text of c"]
    assert [p["id"] for p in document["posts"]] == ["b", "c"]
    assert document["delivery"] == [{"source": "p1", "last_seq": 4}]
    assert "text of a" not in everything_stored(store)


def test_a_delete_of_every_post_leaves_the_document_and_its_delivery_record(store,
                                                                           tmp_path) -> None:
    writer = writer_for(store, tmp_path)
    write(writer, 0, post(1, "a"), post(2, "b"))
    write(writer, 1, delete(3, "a"), delete(4, "b"))
    [document] = documents(store)
    assert (document["content"], document["post_keys"], document["deleted"]) == ([], [], 2)
    # a restarted job still knows how far the producer got
    assert storage.DurableStore(store, storage.Spool(tmp_path / "s2"), ()).delivered() == {
        "p1": 4}


def test_a_delete_that_comes_twice_is_harmless(store, tmp_path) -> None:
    writer = writer_for(store, tmp_path)
    write(writer, 0, post(1, "a"), post(2, "b"))
    write(writer, 1, delete(3, "a"))
    # a rewind: the producer reads the delete again, with a new seq
    stats = write(writer, 2, delete(4, "a"))
    assert (stats.deletes, stats.deleted) == (1, 0)
    # and a job restarted without its memory of deletes
    again = writer_for(store, tmp_path)
    assert again.write_records(at(3), records(delete(5, "a"))).deleted == 0
    [document] = documents(store)
    assert (document["content"], document["deleted"]) == (["text of b"], 1)


def test_a_delete_of_a_post_never_stored_costs_one_lookup(store, tmp_path, monkeypatch) -> None:
    writer = writer_for(store, tmp_path)
    write(writer, 0, post(1, "a"))
    lookups: list[list[bytes]] = []
    documents_read: list[object] = []
    real_find = post_keys.PostKeys.find
    monkeypatch.setattr(post_keys.PostKeys, "find",
                        lambda self, keys: lookups.append(list(keys)) or real_find(self, keys))
    monkeypatch.setattr(embedded, "find", _spy(embedded.find, documents_read))
    monkeypatch.setattr(type(store.collection), "find",
                        _spy(type(store.collection).find, documents_read))
    stats = write(writer, 1, *(delete(n, f"never-{n}") for n in range(2, 102)))
    assert (stats.deletes, stats.deleted) == (100, 0)
    assert len(lookups) == 1 and len(lookups[0]) == 100  # the batch's deletes: one query
    # that query only (the side collection), no batch document read
    assert len(documents_read) == 1
    assert stored_texts(store) == ["text of a"]


def _spy(function, calls: list):
    def spied(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)
    return spied


def test_a_post_sent_again_after_its_delete_is_not_stored_again(store, tmp_path) -> None:
    writer = writer_for(store, tmp_path)
    write(writer, 0, post(1, "a"), post(2, "b"))
    write(writer, 1, delete(3, "a"))
    # a rewind past the job's memory of ids: the post comes again, with a new seq
    writer.seen_ids.forget(["a"])
    stats = write(writer, 2, post(4, "a"), post(5, "c"))
    assert (stats.kept, stats.deleted) == (1, 1)
    assert stored_texts(store) == ["text of b", "text of c"]


def test_keep_deleted_keeps_the_posts_but_counts_the_deletes(store, tmp_path) -> None:
    writer = writer_for(store, tmp_path, keep_deleted=True)
    write(writer, 0, post(1, "a"))
    stats = write(writer, 1, delete(2, "a"), post(3, "b"), delete(4, "b"))
    assert (stats.deletes, stats.deleted) == (2, 0)
    assert stored_texts(store) == ["text of a", "text of b"]


# --- forged records ----------------------------------------------------------------------


def forged_deletes() -> dict[str, str]:
    """Delete records a process squatting on the posts port could send."""
    genuine = control.seal_record(SECRET, wire_records.delete_record("b", BATCH))
    return {
        "no mac": json.dumps({"seq": 3, "src": "p1",
                              **wire_records.delete_record("a", BATCH)}),
        "another secret": sealed(4, wire_records.delete_record("a", BATCH),
                                 secret=b"another secret, also 32 chars!!!"),
        "mac replayed onto another id": json.dumps({"seq": 5, "src": "p1", **genuine,
                                                    "id": "a"}),
        "a member changed": json.dumps({"seq": 6, "src": "p1", **genuine,
                                        "at": "2026-11-30T09:00:00.000000Z"}),
    }


def test_forged_records_are_never_applied_and_are_quarantined(store, tmp_path) -> None:
    writer = writer_for(store, tmp_path, quarantine=Quarantine(tmp_path / "q.jsonl"))
    write(writer, 0, post(1, "a"), post(2, "b"))
    lines = list(forged_deletes().values())
    stats = write(writer, 1, *lines)
    assert stats.deletes == stats.deleted == 0
    assert stats.malformed == stats.forged == len(lines)
    assert stored_texts(store) == ["text of a", "text of b"]
    quarantined = [json.loads(entry) for entry in
                   (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [entry["reason"] for entry in quarantined] == ["forged"] * len(lines)
    # a forged line takes no seq: the producer's own line 3 is still new
    assert write(writer, 2, delete(3, "a")).deleted == 1


def test_a_forged_record_is_malformed_on_the_executors_when_it_has_no_mac() -> None:
    [record] = records(forged_deletes()["no mac"])
    assert (record.status, record.text) == (transform.MALFORMED, "forged")
    [record] = records(forged_deletes()["another secret"])
    assert record.status == wire_records.DELETE  # well-formed: the driver checks the mac
    assert not control.record_authentic(SECRET, record.post)


@pytest.mark.parametrize(("fields", "reason"), [
    ({"kind": "erase", "id": "a"}, "unknown record kind 'erase'"),
    ({"kind": "delete", "at": "2026-11-30T08:00:00Z"}, "delete record without an id"),
    ({"kind": "delete", "id": "a", "at": "yesterday"},
     "delete record without an ISO 8601 'at'"),
    ({"kind": "gap", "source": "bluesky", "host": "", "from": "2026-11-30T08:00:00Z",
      "to": "2026-11-30T07:00:00Z", "reason": "refused", "refused": 0},
     "gap record that ends before it starts"),
    ({"kind": "gap", "source": "bluesky", "host": "", "from": "2026-11-30T08:00:00Z",
      "to": "2026-11-30T08:00:00Z", "reason": "bored", "refused": 0},
     "gap record with an unknown reason"),
    ({"kind": "coverage", "span": "s", "source": "bluesky", "host": "",
      "from": "2026-11-30T08:00:00Z", "to": "2026-11-30T08:00:00Z", "events": 1.5,
      "posts": 1, "matched": 1, "refused": 0}, "coverage record without its counts"),
    ({"kind": "filter", "source": "bluesky", "keywords": "covid"},
     "filter record with bad keywords"),
])
def test_a_record_of_the_wrong_shape_is_malformed_with_its_reason(fields, reason) -> None:
    [record] = records(sealed(1, fields))
    assert (record.status, record.text) == (transform.MALFORMED, reason)


# --- the spool -------------------------------------------------------------------------


class Outage(storage.BatchStore):
    """A store that fails every operation while ``down``."""

    def __init__(self, inner: storage.BatchStore) -> None:
        super().__init__(inner.collection, "outage", embedded_file=inner._embedded_file)
        self.down = False

    def apply(self, operation):
        if self.down:
            raise pymongo.errors.ServerSelectionTimeoutError("no servers")
        return super().apply(operation)


def test_a_delete_reaches_a_post_waiting_in_the_spool(store, tmp_path) -> None:
    outage = Outage(store)
    durable = storage.DurableStore(outage, storage.Spool(tmp_path / "spool.jsonl"), ())
    writer = BatchWriter(durable, lambda: READING, secret=SECRET, post_fields=FIELDS)
    write(writer, 0, post(1, "a"))  # stored
    outage.down = True
    write(writer, 1, post(2, "b"), post(3, "c"))  # spooled
    stats = write(writer, 2, delete(4, "b"), delete(5, "a"), post(6, "d"))
    assert stats.spooled and (stats.deletes, stats.deleted) == (2, 1)  # b, in the spool
    spooled = (tmp_path / "spool.jsonl").read_text()
    assert "text of b" not in spooled and '"b"' not in spooled  # rewritten without it
    assert "text of c" in spooled
    # a restarted job finds the delete as an operation in the spool, in order
    kinds = [op.kind for op in storage.Spool(tmp_path / "spool.jsonl").operations()]
    assert kinds == [spool.DOCUMENT, spool.DOCUMENT, spool.DELETE]
    outage.down = False
    assert durable.drain()
    assert stored_texts(store) == ["text of c", "text of d"]  # a: the spooled delete
    assert "text of b" not in everything_stored(store)
    assert sum(document.get("deleted", 0) for document in documents(store)) == 2


def test_a_spool_written_before_operations_existed_is_read_as_documents(tmp_path) -> None:
    old = storage.Spool(tmp_path / "spool.jsonl")
    document = transform.build_document(BATCH, ["an old spooled post"], 1)
    old.append([document])  # a bare document: what every spool held before
    [operation] = storage.Spool(tmp_path / "spool.jsonl").operations()
    assert operation == spool.Operation(spool.DOCUMENT, operation.body)
    assert operation.body["content"] == ["an old spooled post"]


# --- exports -------------------------------------------------------------------------------


def test_no_export_holds_a_deleted_post_nor_the_keys(store, tmp_path) -> None:
    pytest.importorskip("pyarrow")
    from analysis import export, figure

    fields = ("id", "matched")
    writer = writer_for(store, tmp_path, fields)
    write(writer, 0, post(1, "gone-1", matched=["covid"]))
    write(writer, 1, post(2, "kept", matched=["covid", "long covid"]), post(3, "gone-2"))
    write(writer, 2, delete(4, "gone-1"), delete(5, "gone-2"))
    # the first document lost every post: the columns come from the next one
    rows = [json.loads(row) for row in _export(store, "jsonl").splitlines()]
    assert rows == [{"batch_id": documents(store)[1]["_id"], "timestamp": rows[0]["timestamp"],
                     "total_case_count": 704_753_890,
                     "case_count_as_of": "2024-04-13T00:00:00.000Z",
                     "case_count_source": "worldometers", "position": 0, "text": "text of kept",
                     "id": "kept", "matched": ["covid", "long covid"]}]
    csv_text = _export(store, "csv")
    assert csv_text.splitlines()[1].endswith(',kept,"[""covid"", ""long covid""]"')
    assert "gone" not in csv_text and "post_keys" not in csv_text
    parquet = tmp_path / "posts.parquet"
    export.export_tweets(store, parquet, "parquet")
    import pyarrow.parquet as pq
    table = pq.read_table(parquet)
    assert table.column("id").to_pylist() == ["kept"]
    assert table.column("matched").to_pylist() == [["covid", "long covid"]]
    frame = export.posts_frame(store)
    assert list(frame["text"]) == ["text of kept"]
    figure.plot_report(store, tmp_path / "week.png")  # a document with no post draws
    assert (tmp_path / "week.png").stat().st_size > 0


def _export(store: storage.BatchStore, fmt: str) -> str:
    import io

    from analysis import export

    out = io.StringIO()
    export.export_tweets(store, out, fmt)
    return out.getvalue()
