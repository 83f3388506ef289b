"""What the sources say besides their posts: which keywords or rules chose each post
(``matched``), the keyword set in force (a filter record), and the posts their
authors deleted (sealed delete records, in order with the posts)."""

from __future__ import annotations

import functools
import json
import threading
from typing import Any

import pytest
from processes import T0_US, post_event

import control
import wire_records
from sources.bluesky import BlueskySource, KeywordMatcher

SECRET = b"a test control secret, 32 chars"
SEAL = functools.partial(control.seal_record, SECRET)
POST = "app.bsky.feed.post"


def uri(rkey: str, did: str = "did:plc:alice") -> str:
    return f"at://{did}/{POST}/{rkey}"


def deletion(rkey: str, time_us: int, did: str = "did:plc:alice") -> dict[str, Any]:
    return {"did": did, "time_us": time_us, "kind": "commit",
            "commit": {"rev": "r", "operation": "delete", "collection": POST, "rkey": rkey}}


class Lines:
    """``emit``: the lines handed on, with their positions; refuses while ``full``."""

    def __init__(self) -> None:
        self.lines: list[tuple[dict[str, Any], Any]] = []
        self.full = False

    def __call__(self, line: dict[str, Any], position: Any = None) -> bool:
        if self.full:
            return False
        self.lines.append((line, position))
        return True


# --- which keywords chose a post ----------------------------------------------------------


@pytest.mark.parametrize(("text", "tags", "matched"), [
    ("#covid19 again", (), ("covid19",)),
    ("COVID-19 is here", (), ("covid", "covid-19")),  # covid is a whole word in it too
    ("(Covid) is back", (), ("covid",)),
    ("nothing here", ("Covid",), ("covid",)),
    ("LongCovid and coronaviruses", ("longcovid",), ()),
    ("long covid clinics", (), ("covid", "long covid")),
    ("SARS-CoV-2 variant", ("COVID19",), ("covid19", "sars-cov-2")),
])
def test_matching_names_every_keyword_that_would_have_chosen_the_post_alone(
    text: str, tags: tuple[str, ...], matched: tuple[str, ...]
) -> None:
    """So that the posts one keyword would have chosen are those whose ``matched``
    holds it, whatever else the set held."""
    matcher = KeywordMatcher(["covid19", "covid", "covid-19", "SARS-CoV-2", "long covid"])
    assert matcher.keywords == ("covid19", "covid", "covid-19", "sars-cov-2", "long covid")
    assert matcher.matching(text, tags) == matched
    assert matcher.matches(text, tags) == bool(matched)
    for word in matcher.keywords:
        assert KeywordMatcher([word]).matches(text, tags) == (word in matched)


def test_each_bluesky_post_carries_what_matched_it_on_the_wire() -> None:
    lines = Lines()
    source = BlueskySource(["ws://x/subscribe"], KeywordMatcher(["covid", "covid19"]), lines)
    source.on_frame(json.dumps(post_event("k1", "Masks and #COVID19", T0_US,
                                          tags=["Covid"])))
    source.on_frame(json.dumps(post_event("k2", "nothing", T0_US + 1)))
    ((tweet, position),) = lines.lines
    assert tweet["matched"] == ["covid", "covid19"] and position == T0_US


# --- deletes ------------------------------------------------------------------------------


def test_every_delete_of_a_post_is_forwarded_sealed_in_order_and_once() -> None:
    """A matching post and its delete, a delete of a post never seen (it did not match,
    or came before the start: the job looks it up), then a rewind bringing both
    again: the repeats are dropped, and so is the deleted post."""
    lines = Lines()
    source = BlueskySource(["ws://x/subscribe"], KeywordMatcher(["covid"]), lines, seal=SEAL)
    frames = [post_event("k1", "covid", T0_US), deletion("k1", T0_US + 250_000),
              deletion("k9", T0_US + 500_000, did="did:plc:bob"),
              post_event("k2", "covid again", T0_US + 750_000)]
    for frame in [*frames, *frames[:3]]:  # the rewind
        source.on_frame(json.dumps(frame))
    assert [(line.get("kind"), line["id"], position) for line, position in lines.lines] == [
        (None, uri("k1"), T0_US),
        ("delete", uri("k1"), T0_US + 250_000),
        ("delete", uri("k9", "did:plc:bob"), T0_US + 500_000),
        (None, uri("k2"), T0_US + 750_000)]
    record = lines.lines[1][0]
    assert control.record_authentic(SECRET, record)
    assert record["at"] == "2026-11-30T00:53:20.250000Z"
    assert wire_records.parse_record(record)[:2] == ("delete", uri("k1"))
    assert (source.deletes, source.repeats, source.matched) == (2, 3, 2)
    assert "2 deletes (3 repeats dropped" in source.status()


def test_a_post_whose_delete_came_first_is_never_handed_on() -> None:
    """A restart finds the delete in the journal (or a host sends events out of
    order): the post that comes after its delete is dropped."""
    lines = Lines()
    journaled = [control.seal_record(SECRET, {**wire_records.delete_record(
        uri("k1"), wire_records.record_time("2026-11-30T00:53:21Z")), "pos": T0_US + 1})]
    source = BlueskySource(["ws://x/subscribe"], KeywordMatcher(["covid"]), lines, seal=SEAL,
                           journaled=journaled)
    assert source.resumed_from == T0_US + 1
    source.on_frame(json.dumps(post_event("k1", "covid", T0_US)))
    source.on_frame(json.dumps(deletion("k1", T0_US + 1)))
    assert lines.lines == [] and source.repeats == 2


def test_a_delete_the_journal_refuses_stops_the_reading_at_it() -> None:
    lines = Lines()
    source = BlueskySource(["ws://x/subscribe"], KeywordMatcher(["covid"]), lines, seal=SEAL)
    lines.full = True
    source.on_frame(json.dumps(deletion("k1", T0_US)))
    assert source.paused_since is not None and source._refused_at == ("", T0_US)
    assert source.deletes == 0 and uri("k1") not in source.deleted  # offered again later


def test_without_the_secret_deletes_are_skipped() -> None:
    lines = Lines()
    source = BlueskySource(["ws://x/subscribe"], KeywordMatcher(["covid"]), lines)
    source.on_frame(json.dumps(deletion("k1", T0_US)))
    assert lines.lines == [] and source.deletes == 0


# --- X and the replay -----------------------------------------------------------------------


def test_x_posts_carry_their_rules_values_and_the_rules_in_force_go_first(monkeypatch) -> None:
    """sync_rules knows the rules' ids: a post's matching_rules become their values
    (another app's rule on the stream chooses posts too, by its value; an unknown id
    by its tag); run() declares every rule on the stream before the first post."""
    import tweepy
    from tweepy.client import Response

    from sources.coverage import CoverageLedger
    from sources.twitter import TwitterSource

    lines = Lines()
    source = TwitterSource("token", lines, ledger=CoverageLedger("twitter", lines, SEAL))
    tag = TwitterSource.RULE_TAG
    monkeypatch.setattr(source, "get_rules", lambda **_: Response(
        [tweepy.StreamRule("Covid lang:en", tag, "1"), tweepy.StreamRule("old", tag, "2"),
         tweepy.StreamRule("vaccine", "other-app", "3")], {}, [], {}))
    monkeypatch.setattr(source, "delete_rules", lambda ids, **_: Response(None, {}, [], {}))
    monkeypatch.setattr(source, "add_rules", lambda add, **_: Response(
        [tweepy.StreamRule("#COVID19", tag, "4")], {}, [], {}))
    source.sync_rules(["Covid lang:en", "#COVID19"])
    monkeypatch.setattr(source, "start", lambda: source.on_data(json.dumps({
        "data": {"id": "7", "text": "a post"},
        "matching_rules": [{"id": "1", "tag": tag}, {"id": "3", "tag": "other-app"},
                           {"id": "9", "tag": "Gone-Rule"}, {"id": "4", "tag": tag}]})))
    source.run(threading.Event())
    declared, opened, post, *_ = [line for line, _ in lines.lines]
    assert declared["kind"] == "filter" and control.record_authentic(SECRET, declared)
    assert sorted(declared["rules"], key=lambda rule: rule["value"]) == [
        {"tag": tag, "value": "#COVID19"}, {"tag": tag, "value": "Covid lang:en"},
        {"tag": "other-app", "value": "vaccine"}]
    assert opened["kind"] == "coverage"
    assert post["matched"] == ["covid lang:en", "vaccine", "gone-rule", "#covid19"]


def test_a_replay_sends_the_files_deletes_in_place_each_pass_its_own(tmp_path) -> None:
    """A delete event of X's compliance stream in the file is replayed in its place as
    a sealed delete record; on a looped pass it names that pass's copy (``~N``)."""
    from sources.coverage import CoverageLedger
    from sources.replay import ReplaySource

    path = tmp_path / "with-deletes.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in [
        {"data": {"id": "1", "text": "covid a"}, "matching_rules": [{"id": "1", "tag": "C"}]},
        {"id": "2", "text": "covid b"},
        {"data": {"delete": {"tweet": {"id": "1", "author_id": "9"},
                             "event_at": "2026-11-30T08:00:01.500Z"}}},
    ]) + "\n")
    lines = Lines()
    stop = threading.Event()
    ledger = CoverageLedger("replay", lines, SEAL)
    source = ReplaySource(path, 0, True, seal=SEAL, ledger=ledger)
    ledger.position = source.journal_position

    def emit_many(tweets: list[dict[str, Any]], positions: list[Any]) -> int:
        for tweet, position in zip(tweets, positions, strict=True):
            lines(tweet, position)
        if sum("kind" not in line for line, _ in lines.lines) >= 4:
            stop.set()  # two passes
        return len(tweets)

    assert source.run(lines, stop, emit_many=emit_many) == 4
    sent = [(line.get("kind"), line.get("id"), line.get("matched")) for line, _ in lines.lines]
    assert [item for item in sent if item[0] in (None, "delete")] == [
        (None, "1", ["c"]), (None, "2", None), ("delete", "1", None),
        (None, "1~2", ["c"]), (None, "2~2", None), ("delete", "1~2", None)]
    delete = next(line for line, _ in lines.lines if line.get("kind") == "delete")
    assert delete["at"] == "2026-11-30T08:00:01.500000Z"
    assert control.record_authentic(SECRET, delete)
    assert (source.emitted, source.deletes) == (4, 2)
    declared = lines.lines[0][0]
    assert (declared["kind"], declared["source"], declared["keywords"]) == (
        "filter", "replay", [])
    # each record beside it in the journal says where the replay stood: a restart
    # goes on from the journal's last record, whatever it is
    assert all(position[3] == source.journal_position()[3] for _, position in lines.lines)


def test_keywords_that_overlap_are_each_found() -> None:
    """Where two keywords can share words without one holding the other, each is
    looked for on its own: both chose the post."""
    matcher = KeywordMatcher(["long covid", "covid vaccine", "vaccine"])
    assert matcher.matching("Long COVID vaccine trial", ()) == (
        "long covid", "covid vaccine", "vaccine")
    assert matcher.matching("a vaccine", ()) == ("vaccine",)
    assert matcher.matching("long covid only", ()) == ("long covid",)


def test_the_quick_way_names_what_each_keyword_alone_would_have_chosen() -> None:
    """The default keywords hold one another but never overlap otherwise, so which
    chose a post is read off one scan of the text; on made-up texts it names exactly
    the keywords that alone would have chosen it."""
    import random

    keywords = ["covid", "covid19", "covid-19", "coronavirus", "sars-cov-2"]
    matcher = KeywordMatcher(keywords)
    assert not matcher._overlapping
    alone = {word: KeywordMatcher([word]) for word in keywords}
    rng = random.Random(25)
    parts = ["COVID", "Covid-19", "covid19", "#covid", "(covid)", "sars-cov-2", "longcovid",
             "coronavirus", "CORONAVIRUSES", "-", "19", "2", "the", "x", "é", "_covid"]
    for _ in range(2_000):
        text = rng.choice(("", " ", "-")).join(rng.choices(parts, k=rng.randint(1, 6)))
        assert matcher.matching(text) == tuple(
            word for word in keywords if alone[word].matches(text)), text


def test_a_post_never_carries_kind_whatever_its_source_gave() -> None:
    """A wire line with ``kind`` is a record (the job would take it for a forged one):
    a replayed or X post's own ``kind`` member is dropped."""
    from sources import tweet_from_payload

    assert tweet_from_payload({"id": "1", "text": "a", "kind": "delete"}) == {
        "id": "1", "text": "a"}
    assert tweet_from_payload({"data": {"id": "2", "text": "b", "kind": "x"}}) == {
        "id": "2", "text": "b"}


def test_a_replays_keyword_set_reads_as_none() -> None:
    from datetime import UTC, datetime

    from analysis.coverage import KeywordSet

    moment = datetime(2026, 11, 30, tzinfo=UTC)
    assert KeywordSet("replay", (), None, moment, moment).terms() == \
        "none: every post of the file"
    assert KeywordSet("bluesky", ("covid", "covid19"), None, moment, moment).terms() == \
        "covid, covid19"
