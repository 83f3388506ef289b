"""Conversation fields (POST_FIELDS reply_to, reply_root, quote_of, hashtags, links,
mentions): read from Jetstream frames and X API v2 payloads, carried on the wire tweet,
stored by the job's BatchWriter aligned with content, and exported.

The frames and payloads are written here, in the shapes docs/design.md describes
("What the source says besides the text"); each carries what its stored post must be.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import mongomock
import pytest
from processes import T0_US, facet, post_event

import config
import report
import scrape
import storage
import transform
from analysis.export import export_tweets
from job.writer import BatchWriter
from sources import tweet_from_payload
from sources.bluesky import POST, read_event, wire_tweet

READING = scrape.CaseCount(704_753_890, datetime(2024, 4, 13, tzinfo=UTC), "worldometers",
                           fresh=True)
BATCH = datetime(2026, 11, 30, 8, 0, 20, tzinfo=UTC)
CONVERSATION = ("reply_to", "reply_root", "quote_of", "hashtags", "links", "mentions")
#: what the issue's run asks for: mentions identify people and are not in it
ASKED = ("id", "created_at", "lang", "reply_to", "quote_of", "hashtags", "links")
NONE = dict.fromkeys(CONVERSATION)


def at(did: str, rkey: str, collection: str = "app.bsky.feed.post") -> str:
    return f"at://{did}/{collection}/{rkey}"


def strong_ref(uri: str) -> dict[str, str]:
    return {"uri": uri, "cid": "bafyreiexamplecid"}


# --- the frames: (event, the conversation fields its stored post must have) -------------

MULTIBYTE = "Ça va? 😷 新型コロナ covid @bob.bsky.social lire nytimes.com/2026/11/cov... #Masks"


def bluesky_frames() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    frames = []
    # a reply deep in a thread: parent and root differ
    event = post_event("reply1", "Agreed, covid wards are full again", T0_US + 1,
                       reply={"root": strong_ref(at("did:plc:root", "r1")),
                              "parent": strong_ref(at("did:plc:parent", "p1"))})
    frames.append((event, {**NONE, "reply_to": at("did:plc:parent", "p1"),
                           "reply_root": at("did:plc:root", "r1")}))
    # a quote
    event = post_event("quote1", "This covid thread", T0_US + 2,
                       embed={"$type": "app.bsky.embed.record",
                              "record": strong_ref(at("did:plc:quoted", "q1"))})
    frames.append((event, {**NONE, "quote_of": at("did:plc:quoted", "q1")}))
    # a quote with pictures
    event = post_event("quote2", "covid chart, and the post it answers", T0_US + 3,
                       embed={"$type": "app.bsky.embed.recordWithMedia",
                              "record": {"$type": "app.bsky.embed.record",
                                         "record": strong_ref(at("did:plc:quoted", "q2"))},
                              "media": {"$type": "app.bsky.embed.images", "images": []}})
    frames.append((event, {**NONE, "quote_of": at("did:plc:quoted", "q2")}))
    # an embedded feed is no quoted post
    event = post_event("feed1", "A covid feed worth following", T0_US + 4,
                       embed={"$type": "app.bsky.embed.record", "record": strong_ref(
                           at("did:plc:feeds", "covidnews", "app.bsky.feed.generator"))})
    frames.append((event, dict(NONE)))
    # facets after multi-byte text, a tag both as a facet and in record.tags
    event = post_event("facets1", MULTIBYTE, T0_US + 5, tags=["LongCovid", "Masks"],
                       facets=[facet(MULTIBYTE, "@bob.bsky.social", "mention",
                                     did="did:plc:bob"),
                               facet(MULTIBYTE, "nytimes.com/2026/11/cov...", "link",
                                     uri="https://www.nytimes.com/2026/11/covid-wards.html"),
                               facet(MULTIBYTE, "#Masks", "tag", tag="Masks")])
    frames.append((event, {**NONE, "hashtags": ["Masks", "LongCovid"],
                           "links": ["https://www.nytimes.com/2026/11/covid-wards.html"],
                           "mentions": ["did:plc:bob"]}))
    # malformed shapes: the post is kept, the fields are null
    event = post_event("odd1", "covid and odd shapes", T0_US + 6, tags="covid",
                       reply={"root": {"uri": 42}}, embed={"$type": ["x"], "record": "y"},
                       facets=[{"features": [{"$type": "app.bsky.richtext.facet#link",
                                              "uri": "https://no.index.example"}]}])
    frames.append((event, dict(NONE)))
    return frames


def x_payloads() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    def payload(tweet_id: str, text: str, **fields: Any) -> dict[str, Any]:
        return {"data": {"id": tweet_id, "text": text, "author_id": "2244994945",
                         "created_at": "2026-11-30T08:00:05.000Z", "lang": "en",
                         "edit_history_tweet_ids": [tweet_id], **fields},
                "matching_rules": [{"id": "1", "tag": "covid19-live-stream"}]}

    return [
        (payload("1860000000000000001", "@who covid numbers? #COVID19 #covid19 https://t.co/a",
                 conversation_id="1859999999999999990",
                 referenced_tweets=[{"type": "replied_to", "id": "1859999999999999995"}],
                 entities={"hashtags": [{"start": 20, "end": 28, "tag": "COVID19"},
                                        {"start": 29, "end": 37, "tag": "covid19"},
                                        {"start": 38, "end": 46, "tag": "COVID19"}],
                           "mentions": [{"start": 0, "end": 4, "username": "who",
                                         "id": "14499829"}],
                           "urls": [{"start": 47, "end": 70, "url": "https://t.co/a",
                                     "expanded_url": "https://www.who.int/covid",
                                     "display_url": "who.int/covid"}]}),
         {**NONE, "reply_to": "1859999999999999995", "reply_root": "1859999999999999990",
          "hashtags": ["COVID19", "covid19"], "links": ["https://www.who.int/covid"],
          "mentions": ["14499829"]}),
        (payload("1860000000000000002", "Read this on covid https://t.co/q",
                 conversation_id="1860000000000000002",  # no reply: its own id
                 referenced_tweets=[{"type": "quoted", "id": "1859000000000000000"}]),
         {**NONE, "quote_of": "1859000000000000000"}),
        (payload("1860000000000000003", "RT @cdc: covid boosters",
                 conversation_id="1860000000000000003",
                 referenced_tweets=[{"type": "retweeted", "id": "1858000000000000000"}],
                 entities={"mentions": [{"username": "cdc"}], "urls": "none"}),
         dict(NONE)),
    ]


def wire_lines() -> list[str]:
    """The frames and payloads as stream.py puts them on the socket."""
    lines = []
    for event, _ in bluesky_frames():
        verdict, post, _ = read_event(json.dumps(event))
        assert verdict == POST and post is not None
        lines.append(transform.encode_tweet(wire_tweet(post)).decode())
    for payload, _ in x_payloads():
        lines.append(transform.encode_tweet(tweet_from_payload(payload)).decode())
    return lines


def expected_posts() -> list[dict[str, Any]]:
    return [fields for _, fields in bluesky_frames() + x_payloads()]


def memory_store() -> storage.BatchStore:
    return storage.BatchStore(mongomock.MongoClient(tz_aware=True).covid19.tweet_batches,
                              "mongomock")


def run_job(store: storage.BatchStore, lines: list[str], fields: tuple[str, ...], tmp_path: Path,
            max_content_bytes: int = transform.MAX_CONTENT_BYTES) -> list[dict[str, Any]]:
    """The executors' function over ``lines``, then the driver's BatchWriter, as Spark
    runs them; the stored documents in ``_id`` order."""
    durable = storage.DurableStore(store, storage.Spool(tmp_path / "spool.jsonl"))
    writer = BatchWriter(durable, lambda: READING, post_fields=fields,
                         max_content_bytes=max_content_bytes)
    writer.write_records(BATCH, list(transform.partition_processor(fields)(iter(lines))))
    return list(store.collection.find().sort("_id", 1))


# --- end to end: frame -> wire -> job -> store --------------------------------------------


def test_each_stored_post_has_its_frames_conversation_fields(tmp_path) -> None:
    lines = wire_lines()
    # the alignment rules hold through a malformed line, a duplicate and an empty post
    lines[2:2] = ["not json", lines[0], json.dumps({"id": "e1", "text": "😷 https://x.y"})]
    [document] = run_job(memory_store(), lines, ("id", *CONVERSATION), tmp_path)
    expected = expected_posts()
    assert len(document["posts"]) == len(document["content"]) == len(expected)
    assert [{k: v for k, v in post.items() if k != "id"}
            for post in document["posts"]] == expected
    assert document["posts"][0]["id"] == at("did:plc:alice", "reply1")
    assert document["content"][4].startswith("Ça va? 新型コロナ covid lire")


def test_mentions_are_stored_only_when_named(tmp_path) -> None:
    lines = wire_lines()
    assert '"mentions":["did:plc:bob"]' in lines[4]  # on the wire, as author_id is
    [document] = run_job(memory_store(), lines, ASKED, tmp_path)
    assert all(list(post) == list(ASKED) for post in document["posts"])
    assert config.Settings().post_fields == ()  # nothing stored by default
    example = Path(__file__).resolve().parents[1] / "config.example.env"
    examples = [line for line in example.read_text().splitlines() if "POST_FIELDS=" in line]
    assert examples and not any("mentions" in line or "author_id" in line
                                for line in examples)


def test_the_fields_are_named_like_the_stored_ones_in_any_order(tmp_path) -> None:
    fields = config.resolve(["post_fields"], {}, {"POST_FIELDS": "links, Hashtags,id"})
    assert fields.post_fields == ("id", "hashtags", "links")  # their documented order
    [document] = run_job(memory_store(), wire_lines(), fields.post_fields, tmp_path)
    assert document["posts"][4] == {"id": at("did:plc:alice", "facets1"),
                                    "hashtags": ["Masks", "LongCovid"],
                                    "links": ["https://www.nytimes.com/2026/11/covid-wards.html"]}


# --- the Bluesky source -----------------------------------------------------------------


@pytest.mark.parametrize("collection", ["app.bsky.feed.generator", "app.bsky.graph.list",
                                        "app.bsky.graph.starterpack"])
def test_an_embedded_feed_list_or_starter_pack_is_no_quote(collection: str) -> None:
    for embed in ({"$type": "app.bsky.embed.record",
                   "record": strong_ref(at("did:plc:x", "k", collection))},
                  {"$type": "app.bsky.embed.recordWithMedia",
                   "record": {"record": strong_ref(at("did:plc:x", "k", collection))}}):
        event = post_event("k1", "covid", T0_US, embed=embed)
        assert "quote_of" not in wire_tweet(read_event(json.dumps(event))[1])


@pytest.mark.parametrize("record", [
    {"reply": {"parent": {"uri": ["at://did:plc:p/app.bsky.feed.post/p1"]}, "root": "r1"}},
    {"reply": {"parent": strong_ref("at://did:plc:p/app.bsky.feed.post")}},  # no rkey
    {"reply": "at://did:plc:p/app.bsky.feed.post/p1"},
    {"embed": {"$type": "app.bsky.embed.external",
               "external": {"uri": "https://example.org", "title": "", "description": ""}}},
    {"embed": {"$type": "app.bsky.embed.images", "images": []}},
    {"embed": {"$type": "app.bsky.embed.record", "record": {"uri": 7}}},
    {"embed": {"$type": "app.bsky.embed.recordWithMedia", "record": "at://x"}},
    {"embed": {"$type": {"nested": True}, "record": strong_ref(at("did:plc:q", "q1"))}},
    {"embed": [strong_ref(at("did:plc:q", "q1"))]},
    {"facets": [{"features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://a.b"}]}]},
    {"facets": [{"index": {"byteStart": 0, "byteEnd": 999},  # past the end
                 "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://a.b"}]}]},
    {"facets": [{"index": {"byteStart": "0", "byteEnd": "5"},
                 "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "covid"}]}]},
    {"facets": [{"index": {"byteStart": 0, "byteEnd": 5}, "features": [
        {"$type": "app.bsky.richtext.facet#link", "uri": 5},
        {"$type": "app.bsky.richtext.facet#mention", "did": "bob.bsky.social"},
        {"$type": "app.bsky.richtext.facet#tag", "tag": ""},
        {"$type": ["app.bsky.richtext.facet#tag"], "tag": "covid"},
        "app.bsky.richtext.facet#tag"]}]},
    {"facets": {"index": {"byteStart": 0, "byteEnd": 5}}},
    {"tags": [None, 5, ""]},
])
def test_a_malformed_shape_never_fails_a_post_it_only_gives_no_value(record) -> None:
    event = post_event("k1", "covid today", T0_US, **record)
    verdict, post, _ = read_event(json.dumps(event))
    assert verdict == POST and post is not None
    tweet = wire_tweet(post)
    assert not set(CONVERSATION) & set(tweet)
    assert list(tweet) == ["id", "text", "created_at", "lang", "author_id", "url"]
    line = transform.encode_tweet(tweet).decode()
    assert transform.process_line(line, CONVERSATION).post == NONE


def test_a_reply_without_parent_keeps_its_root() -> None:
    event = post_event("k1", "covid", T0_US, reply={"root": strong_ref(at("did:plc:r", "r1"))})
    tweet = wire_tweet(read_event(json.dumps(event))[1])
    assert (tweet.get("reply_to"), tweet["reply_root"]) == (None, at("did:plc:r", "r1"))


def test_facets_count_in_utf8_bytes_and_repeats_are_dropped_case_kept() -> None:
    text = "😷 #Covid #covid #Covid https://t.co"
    event = post_event("k1", text, T0_US, tags=["covid", "Vaccines"], facets=[
        facet(text, "#Covid", "tag", tag="Covid"), facet(text, "#covid", "tag", tag="covid"),
        {**facet(text, "#Covid #covid #Covid", "tag", tag="Covid")},  # the third, same tag
        facet(text, "https://t.co", "link", uri="https://example.org/a"),
        facet(text, "#covid #Covid", "link", uri="https://example.org/a")])
    tweet = wire_tweet(read_event(json.dumps(event))[1])
    assert tweet["hashtags"] == ["Covid", "covid", "Vaccines"]
    assert tweet["links"] == ["https://example.org/a"]


# --- the job's reading of the wire --------------------------------------------------------


@pytest.mark.parametrize(("tweet", "expected"), [
    ({"reply_to": 5, "quote_of": "", "hashtags": "covid", "links": ["a b", "", None, "x"],
      "mentions": [{"id": "1"}]},
     {**NONE, "reply_to": "5", "links": ["x"]}),
    ({"referenced_tweets": {"type": "quoted", "id": "1"}, "entities": ["hashtags"]}, NONE),
    ({"referenced_tweets": [{"type": "quoted"}, {"type": "quoted", "id": True},
                            {"type": "quoted", "id": 1859000000000000000},
                            {"type": "replied_to", "id": 8}],
      "entities": {"hashtags": [{"tag": "x"}, "y", {"tag": ["z"]}], "urls": [{"url": "u"}],
                   "mentions": [{"id": 14499829}]}, "conversation_id": 7},
     {**NONE, "quote_of": "1859000000000000000", "reply_to": "8", "reply_root": "7",
      "hashtags": ["x"], "mentions": ["14499829"]}),
    # no reply: its conversation_id is no root, even on a replayed pass's id
    ({"id": "42~2", "conversation_id": "42"}, NONE),
    # a Bluesky wire field wins over X's
    ({"hashtags": ["bsky"], "entities": {"hashtags": [{"tag": "x"}]}},
     {**NONE, "hashtags": ["bsky"]}),
])
def test_the_job_reads_what_it_can_and_nulls_the_rest(tweet, expected) -> None:
    line = json.dumps({"id": "42", "text": "covid"} | tweet)
    assert transform.process_line(line, CONVERSATION).post == expected


# --- the 16 MB split ----------------------------------------------------------------------


@pytest.mark.parametrize(("index", "post"), [
    (3, {"hashtags": ["COVID19", "Über"], "links": None, "mentions": []}),
    (10, {"links": [f"https://example.org/{n}" for n in range(12)], "id": "x"}),
    (0, {"mentions": ["did:plc:a"], "created_at": BATCH, "reply_to": "at://é"}),
])
def test_a_posts_bson_size_counts_its_lists_exactly(index: int, post: dict) -> None:
    encoded = len(bson.encode({str(index): post})) - len(bson.encode({}))
    assert transform.bson_post_size(index, post) == encoded


def test_a_batch_whose_lists_pass_16_mb_is_split_into_parts_that_fit(tmp_path) -> None:
    # small texts, 18 MB of links: without counting the lists it would be one part,
    # which a real MongoDB refuses
    links = [f"https://example.org/{'l' * 280}/{n}" for n in range(30)]
    lines = [json.dumps({"id": str(n), "text": f"covid {n}", "links": links,
                         "hashtags": [f"tag{n}"]}) for n in range(2_000)]
    documents = run_job(memory_store(), lines, ("id", "hashtags", "links"), tmp_path)
    assert len(documents) == 2
    for document in documents:
        assert len(bson.encode(document)) <= 16 * 1024 * 1024
        for text, post in zip(document["content"], document["posts"], strict=True):
            assert post["hashtags"] == [f"tag{text.split()[1]}"] and post["links"] == links
    assert sum(len(d["posts"]) for d in documents) == 2_000


# --- exports ------------------------------------------------------------------------------


@pytest.fixture
def stored(tmp_path) -> storage.BatchStore:
    store = memory_store()
    run_job(store, wire_lines(), ("id", *CONVERSATION), tmp_path)
    return store


def test_jsonl_export_has_the_lists_as_lists(stored) -> None:
    out = io.StringIO()
    export_tweets(stored, out, "jsonl")
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [{name: row[name] for name in CONVERSATION} for row in rows] == expected_posts()


def test_csv_export_joins_the_lists_with_spaces(stored) -> None:
    out = io.StringIO()
    export_tweets(stored, out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    for row, expected in zip(rows, expected_posts(), strict=True):
        for name in CONVERSATION:
            value = expected[name]
            cell = row[name]
            if isinstance(value, list):
                assert cell.split(" ") == value
            else:
                assert cell == (value or "")


def test_parquet_export_has_list_columns_read_back_in_pandas(stored, tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "posts.parquet"
    assert export_tweets(stored, out, "parquet") == len(expected_posts())
    schema = pq.read_schema(out)
    for name in ("hashtags", "links", "mentions"):
        assert str(schema.field(name).type) == "list<element: string>"
    assert str(schema.field("reply_to").type) == "string"
    for frame in (pd.read_parquet(out), report.load_posts(store=stored)):
        got = [{name: _plain(row[name]) for name in CONVERSATION}
               for row in frame.to_dict("records")]
        assert got == expected_posts()


def _plain(value: Any) -> Any:
    """A pandas cell as plain Python: an array as a list, a missing value as None."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return None if value is None or value != value else value


def test_export_from_the_embedded_store_as_a_user_runs_it(tmp_path, monkeypatch) -> None:
    pd = pytest.importorskip("pandas")
    for name in config.STORE_OPTIONS:
        monkeypatch.delenv(config.OPTIONS[name].env, raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "db"
    store = storage.open_store(config.Settings(embedded_db_path=path))
    try:
        run_job(store, wire_lines(), ("id", *CONVERSATION), tmp_path)
    finally:
        store.close()
    out = tmp_path / "posts.parquet"
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:  # report.main sets up the log as the command does
        assert report.main(["export", "--format", "parquet", "--out", str(out),
                            "--embedded-db-path", str(path)]) == 0
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    got = [{name: _plain(row[name]) for name in CONVERSATION}
           for row in pd.read_parquet(out).to_dict("records")]
    assert got == expected_posts()
