"""A Bluesky post's place in the conversation, as its wire tweet's fields: the post it
replies to and its thread's root, the post it quotes, its tags, links and mentions.

The record's shapes are those docs/design.md describes ("What the source says
besides the text"): ``reply.parent.uri`` and ``reply.root.uri``; an ``embed`` of
``$type`` ``app.bsky.embed.record`` (``record.uri``) or
``app.bsky.embed.recordWithMedia`` (``record.record.uri``); the ``uri`` of
``…facet#link``, the ``did`` of ``…facet#mention`` and the ``tag`` of ``…facet#tag``
features; ``record.tags``. Anything of another shape or type gives no value: a
record is never refused for it. The job reads these fields
(:data:`transform.CONVERSATION_FIELDS`) and stores those POST_FIELDS names.
"""

from __future__ import annotations

from typing import Any, Protocol

import transform


class Post(Protocol):
    """What this module reads of a post (:class:`sources.bluesky_events.Post` has it): the
    text and the record's parts as they came."""

    @property
    def text(self) -> str: ...
    @property
    def facets(self) -> Any: ...
    @property
    def reply(self) -> Any: ...
    @property
    def embed(self) -> Any: ...
    @property
    def record_tags(self) -> tuple[str, ...]: ...

POST_COLLECTION = "app.bsky.feed.post"
_EMBED_RECORD = "app.bsky.embed.record"
_EMBED_RECORD_WITH_MEDIA = "app.bsky.embed.recordWithMedia"
_FEATURES = {"app.bsky.richtext.facet#tag": ("hashtags", "tag"),
             "app.bsky.richtext.facet#link": ("links", "uri"),
             "app.bsky.richtext.facet#mention": ("mentions", "did")}


def conversation_fields(post: Post) -> dict[str, Any]:
    """The wire fields of ``post``'s place in the conversation, each only when it has
    a value: ``reply_to``, ``reply_root`` and ``quote_of`` (at:// URIs of posts),
    ``hashtags`` (the tags of its ``#tag`` facets, then ``record.tags``), ``links``
    (link facets' full URLs) and ``mentions`` (mention facets' DIDs). A list keeps
    the first of repeated values, as written (case kept); only facets whose range is
    valid count (the rule of :func:`transform.valid_facets`, as in the cleaning)."""
    fields: dict[str, Any] = {}
    reply = post.reply
    if isinstance(reply, dict):
        for name, key in (("reply_to", "parent"), ("reply_root", "root")):
            reference = reply.get(key)
            uri = post_uri(reference.get("uri")) if isinstance(reference, dict) else None
            if uri is not None:
                fields[name] = uri
    if post.embed is not None:
        quoted = quoted_post(post.embed)
        if quoted is not None:
            fields["quote_of"] = quoted
    if post.facets or post.record_tags:  # most posts have neither
        fields.update(_lists(post))
    return fields


def _lists(post: Post) -> dict[str, list[str]]:
    """``hashtags``, ``links`` and ``mentions`` of ``post``, those it has."""
    found: dict[str, dict[str, None]] = {"hashtags": {}, "links": {}, "mentions": {}}
    for _, _, features in transform.valid_facets(post.text, post.facets):
        for feature in features:
            name = feature.get("$type") if isinstance(feature, dict) else None
            kind = _FEATURES.get(name) if isinstance(name, str) else None
            if kind is None:
                continue
            value = feature.get(kind[1])
            if (isinstance(value, str) and value
                    and (kind[0] != "mentions" or value.startswith("did:"))):
                found[kind[0]][value] = None
    for tag in post.record_tags:
        if tag:
            found["hashtags"][tag] = None
    return {name: list(values) for name, values in found.items() if values}


def post_uri(value: Any) -> str | None:
    """``value`` when it is the at:// URI of a post (``at://<did>/app.bsky.feed.post/<rkey>``),
    else None: a feed, a list, a starter pack or anything else is no post."""
    if not isinstance(value, str) or not value.startswith("at://"):
        return None
    parts = value[5:].split("/")
    if len(parts) == 3 and parts[0] and parts[1] == POST_COLLECTION and parts[2]:
        return value
    return None


def quoted_post(embed: Any) -> str | None:
    """The URI of the post a record's ``embed`` quotes (with or without media), or None."""
    if not isinstance(embed, dict):
        return None
    kind, record = embed.get("$type"), embed.get("record")
    if kind == _EMBED_RECORD_WITH_MEDIA:
        record = record.get("record") if isinstance(record, dict) else None
    elif kind != _EMBED_RECORD:
        return None
    return post_uri(record.get("uri")) if isinstance(record, dict) else None
