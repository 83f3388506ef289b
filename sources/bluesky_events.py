"""Jetstream events -> posts and deletes -> wire tweets: the pure part of the Bluesky source.

* :func:`read_event`: one frame -> a :class:`Post` (a new post with text), a
  :class:`Deletion` (its author deleted a post), or why neither;
* :class:`KeywordMatcher`: whether a post is about the keywords, and which of them
  chose it (a keyword as a whole word of the text, or a tag);
* :func:`wire_tweet`: a post -> the tweet object of the wire format.

No I/O: :class:`sources.bluesky.BlueskySource` reads the frames and hands on
what these make of them (docs/design.md, "Bluesky posts" and "Keywords").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import transform
from sources import Tweet
from sources.bluesky_conversation import conversation_fields

POST_COLLECTION = "app.bsky.feed.post"
_FACET_TAG = "app.bsky.richtext.facet#tag"

# what read_event makes of a frame
POST = "post"  # a new post with text: match it against the keywords
DELETE = "delete"  # its author deleted a post: forwarded, whether it matched or not
OTHER = "other"  # a well-formed event that is neither (identity, account, like, update...)
MALFORMED = "malformed"  # not JSON, not an event, or a post record without text


@dataclass(frozen=True)
class Post:
    """The parts of a post-creating Jetstream event that the pipeline uses."""

    did: str
    rkey: str
    text: str
    created_at: str | None
    lang: str | None
    facets: Any  # the record's facets as they came (checked when used)
    tags: tuple[str, ...]  # record.tags and the tags of #tag facets
    reply: Any = None  # record.reply as it came (checked when used)
    embed: Any = None  # record.embed as it came (checked when used)
    record_tags: tuple[str, ...] = ()  # record.tags alone

    @property
    def uri(self) -> str:
        """The post's at:// URI, its id on the wire."""
        return f"at://{self.did}/{POST_COLLECTION}/{self.rkey}"


@dataclass(frozen=True)
class Deletion:
    """A post its author deleted: a Jetstream ``delete`` of an ``app.bsky.feed.post``
    (no record comes with it)."""

    did: str
    rkey: str

    @property
    def uri(self) -> str:
        """The deleted post's at:// URI: the id its wire tweet had."""
        return f"at://{self.did}/{POST_COLLECTION}/{self.rkey}"


def read_event(frame: str | bytes) -> tuple[str, Post | Deletion | None, int | None]:
    """``(verdict, what, time_us)`` of one Jetstream frame.

    ``verdict`` is POST (``what`` is the :class:`Post`), DELETE (``what`` is the
    :class:`Deletion`), OTHER or MALFORMED (``what`` is None). ``time_us`` is the
    event's time (microseconds since the epoch) when it has one, whatever the
    verdict: it is where a reconnect resumes.

    A post is an event with ``kind == "commit"``, ``commit.operation ==
    "create"``, ``commit.collection == "app.bsky.feed.post"`` and a record that
    is an object with a string ``text``; a deletion the same with ``operation ==
    "delete"`` (and no record). Both need a ``did:`` and an ``rkey`` without ``/``.
    """
    if isinstance(frame, bytes):
        return MALFORMED, None, None  # text frames only: compressed frames were not asked for
    try:
        event = json.loads(frame)
    except (ValueError, RecursionError):
        return MALFORMED, None, None
    if not isinstance(event, dict):
        return MALFORMED, None, None
    time_us = event.get("time_us")
    if type(time_us) is not int or time_us <= 0:
        time_us = None
    did, kind, commit = event.get("did"), event.get("kind"), event.get("commit")
    if not isinstance(did, str) or not isinstance(kind, str):
        return MALFORMED, None, time_us
    if kind != "commit":
        return OTHER, None, time_us  # identity, account (sent whatever the collection)
    if not isinstance(commit, dict):
        return MALFORMED, None, time_us
    if commit.get("collection") != POST_COLLECTION:
        return OTHER, None, time_us  # another collection
    operation, rkey = commit.get("operation"), commit.get("rkey")
    if operation == "delete":
        if not did.startswith("did:") or not isinstance(rkey, str) or not rkey or "/" in rkey:
            return MALFORMED, None, time_us
        return DELETE, Deletion(did, rkey), time_us
    if operation != "create":
        return OTHER, None, time_us  # an update
    record = commit.get("record")
    if (not did.startswith("did:") or not isinstance(rkey, str) or not rkey
            or "/" in rkey or not isinstance(record, dict)
            or not isinstance(record.get("text"), str)):
        return MALFORMED, None, time_us
    langs, created = record.get("langs"), record.get("createdAt")
    lang = langs[0] if isinstance(langs, list) and langs and isinstance(langs[0], str) else None
    tags, facets = record.get("tags"), record.get("facets")
    listed = tuple(tag for tag in tags if isinstance(tag, str)) if isinstance(tags, list) else ()
    post = Post(did=did, rkey=rkey, text=record["text"],
                created_at=created if isinstance(created, str) else None, lang=lang,
                facets=facets, tags=listed + _facet_tags(facets), reply=record.get("reply"),
                embed=record.get("embed"), record_tags=listed)
    return POST, post, time_us


def _facet_tags(facets: Any) -> tuple[str, ...]:
    """The ``tag`` of every ``#tag`` facet (whatever its range: the keywords match it)."""
    found = []
    for facet in facets if isinstance(facets, list) else ():
        features = facet.get("features") if isinstance(facet, dict) else None
        for feature in features if isinstance(features, list) else ():
            if (isinstance(feature, dict) and feature.get("$type") == _FACET_TAG
                    and isinstance(feature.get("tag"), str)):
                found.append(feature["tag"])
    return tuple(found)


class KeywordMatcher:
    """Whether a post is about the keywords (docs/design.md, "Keywords"), and which
    of them chose it.

    A post matches when, case-insensitively, a keyword occurs in its text as
    posted as a whole word (not preceded or followed by a word character,
    ``\\w``, Unicode), or equals one of its tags. With the default keywords,
    ``#COVID19``, ``COVID-19`` and ``(covid)`` match; ``LongCovid``,
    ``coronaviruses`` and ``covid2`` do not. :attr:`keywords` are the keywords
    in lower case (``str.casefold``), in the order given, each once.
    """

    def __init__(self, keywords: Iterable[str]) -> None:
        words = tuple(dict.fromkeys(word.casefold() for word in keywords if word))
        if not words:
            raise ValueError("at least one keyword is needed")
        self.keywords = words
        self._words = _whole_words(words)
        self._each = tuple((word, _whole_words((word,))) for word in words)
        self._tags = frozenset(words)
        #: the other keywords each holds as whole words ("covid" in "covid-19")
        self._inside = {word: frozenset(other for other, alone in self._each
                                        if other != word and alone.search(word))
                        for word in words}
        #: whether two keywords can overlap without one holding the other ("long
        #: covid", "covid vaccine"): then each is looked for on its own
        self._overlapping = any(_overlap(a, b) for a in words for b in words if a != b)

    def matches(self, text: str, tags: Iterable[str] = ()) -> bool:
        """True when ``text`` holds a keyword as a whole word or a tag equals one."""
        return (any(tag.casefold() in self._tags for tag in tags)
                or self._words.search(text) is not None)

    def matching(self, text: str, tags: Iterable[str] = ()) -> tuple[str, ...]:
        """Every keyword that would have chosen the post on its own, in :attr:`keywords`'
        order: found in ``text`` as a whole word (``long covid clinics`` is chosen by
        ``long covid`` and by ``covid``, ``COVID-19`` by ``covid-19`` and ``covid``),
        or equal to one of ``tags``. Empty when none is: no more work than
        :meth:`matches` then (the keywords one by one only for a post that matched,
        about 1 in 50 of the network's)."""
        first = self._words.search(text)
        if first is None and not tags:
            return ()  # most posts: no more work than matches()
        hits = set(self._tags.intersection(tag.casefold() for tag in tags))
        if first is None and not hits:
            return ()
        if not self._overlapping:  # each occurrence is one the pattern finds, or inside it
            for found in self._words.findall(text, first.start()) if first else ():
                word = found.casefold()
                if word not in self._inside:
                    break  # a case folding that is no keyword: look for each
                hits.add(word)
                hits.update(self._inside[word])
            else:
                return tuple(word for word in self.keywords if word in hits)
        return tuple(word for word, alone in self._each
                     if word in hits or alone.search(text) is not None)


def _overlap(a: str, b: str) -> bool:
    """Whether ``a`` can end as a whole word inside ``b`` begun as a whole word (an end
    of ``a`` is a start of ``b``, at characters that are not word characters)."""
    return any(a[-k:] == b[:k] and _WORD.match(a, len(a) - k - 1) is None
               and _WORD.match(b, k) is None for k in range(1, min(len(a), len(b))))


_WORD = re.compile(r"\w")


def _whole_words(words: Iterable[str]) -> re.Pattern[str]:
    """A pattern finding any of ``words`` as a whole word, in any case."""
    longest_first = sorted(words, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, longest_first)) + r")(?!\w)",
                      re.IGNORECASE)


def wire_tweet(post: Post, matched: Iterable[str] = ()) -> Tweet:
    """The wire format's tweet object for ``post``.

    ``text`` has the post's links and mentions taken out already
    (:func:`transform.strip_post_markup`, which needs the record's facets);
    the job's executors then clean it like any tweet. ``lang`` is absent when
    the post names none. Then its place in the conversation, each field only when
    it has a value (:func:`~sources.bluesky_conversation.conversation_fields`),
    and ``matched``, the keywords that chose it (:meth:`KeywordMatcher.matching`),
    when any are given.
    """
    tweet: Tweet = {"id": post.uri, "text": transform.strip_post_markup(post.text, post.facets)}
    if post.created_at is not None:
        tweet["created_at"] = post.created_at
    if post.lang is not None:
        tweet["lang"] = post.lang
    tweet["author_id"] = post.did
    tweet["url"] = f"https://bsky.app/profile/{post.did}/post/{post.rkey}"
    tweet.update(conversation_fields(post))
    if matched:
        tweet["matched"] = list(matched)
    return tweet
