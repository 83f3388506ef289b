"""What the sources say besides their posts: which keywords or rules chose each post
(``matched``), the keyword set in force (a filter record), and the posts their
authors deleted (sealed delete records, in order with the posts)."""

from __future__ import annotations

import functools
import json
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
