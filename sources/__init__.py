"""Where posts come from: one module per source, each handing tweets to ``emit``.

* :mod:`sources.bluesky`: Bluesky's public Jetstream (free, no account), the
  live source anyone can run;
* :mod:`sources.twitter`: the X API v2 filtered stream through tweepy (paid
  per post read);
* :mod:`sources.replay`: a newline-delimited JSON file at a chosen rate.

Each turns what its service sends into the tweet objects of the wire format
(docs/design.md): a dict with at least a string ``id`` and a string ``text``, plus
what the source gave (``created_at``, ``lang``, ``author_id``, ...), and hands
them to ``emit``, :meth:`utility.TweetServer.put` in ``stream.py``. X API v2
payloads, which the replay files also hold, are read here: the post, what chose it
(:func:`matched_rules`), and the compliance stream's deletes (:func:`deleted_post`).
Beside the posts, each source hands ``emit`` the sealed records of
:mod:`wire_records`: deletes, and the coverage ledger's (:mod:`sources.coverage`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import wire_records

Tweet = dict[str, Any]
#: What a source hands each tweet to, with where the source stands after it (a
#: position it can resume from, or None); True if it was accepted, False if refused.
Emit = Callable[[Tweet, Any], bool]


def tweet_or_reason(obj: Any) -> tuple[Tweet | None, str]:
    """``(tweet, "")`` for an X API v2 payload or a bare tweet, else ``(None, short reason)``."""
    if not isinstance(obj, dict):
        return None, f"JSON {type(obj).__name__}, not an object"
    if "data" in obj:
        tweet = obj["data"]
        if not isinstance(tweet, dict):
            return None, "payload 'data' is not an object"
    elif "errors" in obj and "text" not in obj:
        return None, f"payload with errors and no tweet: {describe_errors(obj['errors'])}"
    else:
        tweet = obj
    tweet_id, text = tweet.get("id"), tweet.get("text")
    if isinstance(tweet_id, bool) or not isinstance(tweet_id, str | int) or tweet_id == "":
        return None, "no string or integer id"
    if not isinstance(text, str):
        return None, "no string text"
    if "kind" in tweet:  # a wire line with "kind" is a record, never a post
        tweet = {key: value for key, value in tweet.items() if key != "kind"}
    return tweet, ""


def matched_rules(payload: Any, rules: Mapping[str, tuple[str, str]]) -> list[str]:
    """What chose a v2 stream payload's post, in lower case, each once: for each of
    its ``matching_rules``, the rule's value when ``rules`` (rule id -> (tag, value))
    knows it, else the rule's tag. Empty without any."""
    found = payload.get("matching_rules") if isinstance(payload, dict) else None
    names = []
    for rule in found if isinstance(found, list) else ():
        if not isinstance(rule, dict):
            continue
        known = rules.get(str(rule.get("id")))
        name = known[1] if known is not None else rule.get("tag")
        if isinstance(name, str) and name:
            names.append(name.lower())
    return list(dict.fromkeys(names))


def deleted_post(obj: Any) -> tuple[str, datetime | None] | None:
    """``(post id, when)`` of an X compliance stream's delete event,
    ``{"data": {"delete": {"tweet": {"id": ..., "author_id": ...}, "event_at": ...}}}``
    (``when`` None if ``event_at`` is unreadable), or None for anything else."""
    data = obj.get("data") if isinstance(obj, dict) else None
    delete = data.get("delete") if isinstance(data, dict) else None
    tweet = delete.get("tweet") if isinstance(delete, dict) else None
    post_id = tweet.get("id") if isinstance(tweet, dict) else None
    if isinstance(post_id, int) and not isinstance(post_id, bool):
        post_id = str(post_id)
    if not isinstance(post_id, str) or not post_id:
        return None
    return post_id, wire_records.record_time(delete.get("event_at"))  # type: ignore[union-attr]


def describe_errors(errors: Any) -> str:
    """A short, single-line summary of a v2 ``errors`` list."""
    if not isinstance(errors, list) or not errors:
        return "unreadable errors field"
    parts = []
    for error in errors[:3]:
        if isinstance(error, dict):
            title = error.get("title") or error.get("type") or "error"
            detail = error.get("detail") or error.get("message") or ""
            parts.append(f"{title}: {detail}" if detail else str(title))
        else:
            parts.append(str(error))
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return ("; ".join(parts) + more).replace("\n", " ")[:300]


def tweet_from_payload(obj: Any) -> Tweet | None:
    """The tweet object carried by ``obj``, or None if it carries none.

    ``obj`` is either a v2 stream payload ``{"data": {...}, "matching_rules":
    [...], "includes": ...}``, whose ``data`` dict is returned as it is (every
    field the source gave), or a bare tweet object, returned itself. Anything
    without a string or integer ``id`` and a string ``text`` gives None.
    """
    tweet, _ = tweet_or_reason(obj)
    return tweet
