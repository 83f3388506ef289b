"""Post fields (POST_FIELDS): each stored text's own id, time, language and link, as
``posts`` aligned with ``content`` through everything the executors and the driver drop
or split."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import bson
import mongomock
import pytest

import config
import scrape
import storage
import transform
from job.writer import BatchWriter

READING = scrape.CaseCount(704_753_890, datetime(2024, 4, 13, tzinfo=UTC), "worldometers",
                           fresh=True)
BATCH = datetime(2026, 11, 30, 8, 0, 20, tzinfo=UTC)
FIELDS = ("id", "created_at", "lang", "url")


def bluesky(n: int, text: str | None = None, **extra: object) -> str:
    """A wire line as stream.py sends a Bluesky post."""
    post = {"id": f"at://did:plc:a{n}/app.bsky.feed.post/k{n}",
            "text": f"covid post number {n}" if text is None else text,
            "created_at": f"2026-11-30T08:00:{n % 60:02d}.250Z", "lang": "en",
            "author_id": f"did:plc:a{n}",
            "url": f"https://bsky.app/profile/did:plc:a{n}/post/k{n}"}
    post.update(extra)
    return json.dumps(post)


@pytest.fixture
def store() -> storage.BatchStore:
    collection = mongomock.MongoClient(tz_aware=True).covid19.tweet_batches
    return storage.BatchStore(collection, "mongomock")


def run_batch(store: storage.BatchStore, lines: list[str], fields=FIELDS, *,
              tmp_path, max_content_bytes: int = transform.MAX_CONTENT_BYTES,
              writer: BatchWriter | None = None) -> list[dict]:
    """The executors' function over ``lines`` then the driver's, as Spark runs them;
    the stored documents in ``_id`` order."""
    durable = storage.DurableStore(store, storage.Spool(tmp_path / "spool.jsonl"))
    writer = writer or BatchWriter(durable, lambda: READING, post_fields=fields,
                                   max_content_bytes=max_content_bytes)
    records = list(transform.partition_processor(fields)(iter(lines)))
    writer.write_records(BATCH, records)
    return list(store.collection.find().sort("_id", 1))


def test_posts_are_the_fields_asked_for_in_the_order_of_content(store, tmp_path) -> None:
    [document] = run_batch(store, [bluesky(1), bluesky(2, lang="pt")], tmp_path=tmp_path)
    assert document["content"] == ["covid post number 1", "covid post number 2"]
    assert document["posts"] == [
        {"id": "at://did:plc:a1/app.bsky.feed.post/k1",
         "created_at": datetime(2026, 11, 30, 8, 0, 1, 250_000, tzinfo=UTC),
         "lang": "en", "url": "https://bsky.app/profile/did:plc:a1/post/k1"},
        {"id": "at://did:plc:a2/app.bsky.feed.post/k2",
         "created_at": datetime(2026, 11, 30, 8, 0, 2, 250_000, tzinfo=UTC),
         "lang": "pt", "url": "https://bsky.app/profile/did:plc:a2/post/k2"},
    ]
    assert "author_id" not in document["posts"][0]  # not asked for: never stored


def test_author_id_is_stored_only_when_asked_for_by_name(store, tmp_path) -> None:
    [document] = run_batch(store, [bluesky(1)], ("lang", "author_id"), tmp_path=tmp_path)
    assert document["posts"] == [{"lang": "en", "author_id": "did:plc:a1"}]


def test_without_post_fields_the_document_is_the_cards(store, tmp_path) -> None:
    [document] = run_batch(store, [bluesky(1)], (), tmp_path=tmp_path)
    assert "posts" not in document
    assert transform.partition_processor(()) is transform.process_partition  # no extra work


def test_posts_stay_aligned_through_malformed_duplicate_and_empty_lines(
        store, tmp_path) -> None:
    lines = [bluesky(1), "not json", bluesky(2, text="https://t.co/x 😷"),  # cleans to nothing
             bluesky(3), bluesky(1, text="a redelivery of post 1"), '{"id": "9"}',
             bluesky(4), bluesky(3)]
    [document] = run_batch(store, lines, tmp_path=tmp_path)
    assert document["content"] == ["covid post number 1", "covid post number 3",
                                   "covid post number 4"]
    assert [post["id"].rsplit("/", 1)[1] for post in document["posts"]] == ["k1", "k3", "k4"]


def test_a_batch_split_past_the_size_limit_keeps_posts_aligned_in_every_part(
        store, tmp_path) -> None:
    lines = [bluesky(n, text=f"post {n} " + "x" * 300) for n in range(40)]
    documents = run_batch(store, lines, tmp_path=tmp_path, max_content_bytes=6_000)
    assert len(documents) > 2
    for document in documents:
        assert len(document["posts"]) == len(document["content"])
        for text, post in zip(document["content"], document["posts"], strict=True):
            assert post["id"].endswith(f"/k{text.split()[1]}")
    assert sum(len(d["content"]) for d in documents) == 40


def test_the_size_limit_counts_the_posts_too(store, tmp_path) -> None:
    # 12 MB of texts fit one document, but not with their posts: a real MongoDB refuses
    # a document over 16 MiB, so the batch must be split into parts that each fit
    lines = [bluesky(n, text=f"{n} " + "y" * 240) for n in range(50_000)]
    documents = run_batch(store, lines, tmp_path=tmp_path)
    assert len(documents) == 2
    for document in documents:
        assert len(bson.encode(document)) <= 16 * 1024 * 1024
    assert sum(len(d["posts"]) for d in documents) == 50_000


@pytest.mark.parametrize(("index", "post"), [
    (0, {"id": "at://did:plc:x/app.bsky.feed.post/é", "created_at": BATCH, "lang": None}),
    (12_345, {"url": "https://bsky.app/x", "author_id": "did:plc:x", "lang": "ja"}),
    (7, {}),
])
def test_a_posts_bson_size_is_exact(index: int, post: dict) -> None:
    encoded = len(bson.encode({str(index): post})) - len(bson.encode({}))
    assert transform.bson_post_size(index, post) == encoded


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-11-30T08:00:01.000Z", datetime(2026, 11, 30, 8, 0, 1, tzinfo=UTC)),
    ("2026-11-30T09:00:01.123456789+01:00", datetime(2026, 11, 30, 8, 0, 1, 123_000,
                                                     tzinfo=UTC)),
    ("2026-11-30T08:00:01", datetime(2026, 11, 30, 8, 0, 1, tzinfo=UTC)),  # no offset: UTC
    ("Mon Nov 30 08:00:01 +0000 2026", datetime(2026, 11, 30, 8, 0, 1, tzinfo=UTC)),  # X v1.1
    ("yesterday", None),
    ("", None),
    (1796000000, None),
    (None, None),
    ("0001-01-01T00:00:00+01:00", None),  # before year 1 in UTC
])
def test_created_at_is_the_posts_own_time_in_utc_or_null(value, expected) -> None:
    assert transform.post_time(value) == expected


def test_a_post_without_its_fields_gets_nulls_never_the_batch_time() -> None:
    line = json.dumps({"id": 42, "text": "covid", "lang": ["de", "en"], "created_at": "soon"})
    record = transform.process_line(line, transform.POST_FIELDS)
    assert record.post == {"id": "42", "created_at": None, "lang": "de", "url": None,
                           "author_id": None, "reply_to": None, "reply_root": None,
                           "quote_of": None, "hashtags": None, "links": None,
                           "mentions": None, "matched": None}
    assert transform.process_line('{"id": "1", "text": "covid", "lang": ""}',
                                  ("lang",)).post == {"lang": None}


def test_records_with_post_fields_are_those_without_plus_the_post() -> None:
    lines = [bluesky(1), "oops", bluesky(2, text="😷"), '{"id": "3", "text": "x", "seq": 4, '
             '"src": "s"}']
    with_posts = list(transform.partition_processor(FIELDS)(iter(lines)))
    without = list(transform.process_partition(iter(lines)))
    assert [record[:6] for record in with_posts] == [record[:6] for record in without]
    assert [record[6] is not None for record in with_posts] == [True, False, False, True]


@pytest.mark.parametrize(("raw", "expected"), [
    ("", ()),
    ("lang, ID,created_at", ("id", "created_at", "lang")),
    ("url,author_id,url", ("url", "author_id")),
])
def test_post_fields_setting(raw: str, expected: tuple) -> None:
    assert config.resolve(["post_fields"], {}, {"POST_FIELDS": raw}).post_fields == expected
    assert config.Settings().post_fields == ()  # off by default


def test_an_unknown_post_field_is_one_line_naming_the_variable() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.resolve(["post_fields"], {"post_fields": "id,text"}, {})
    assert str(caught.value) == (
        "--post-fields / POST_FIELDS: 'text' is not a post field (use a comma list of id, "
        "created_at, lang, url, author_id, reply_to, reply_root, quote_of, hashtags, links, "
        "mentions, matched) (from --post-fields)")
