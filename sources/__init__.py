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
payloads, which the replay files also hold, are read here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    return tweet, ""


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
