"""Pure functions of the pipeline: parse a wire line, clean a tweet, build a document.

No I/O and no state here, so Spark can run :func:`process_line` on executors
and each rule can be tested alone. The contracts are in DESIGN.md:

* wire format: one JSON tweet object per line, with at least ``id`` and ``text``;
* cleaning: :func:`clean_text`, rules applied in the documented order;
* stored document: :func:`build_document`.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from typing import Any

# process_line's result: (status, tweet id or "", cleaned text or the reason)
OK = "ok"
EMPTY = "empty"  # valid tweet whose text is empty after cleaning: dropped
MALFORMED = "malformed"  # not a tweet at all: counted and skipped

Record = tuple[str, str, str]


class MalformedLineError(ValueError):
    """A wire line that is not a tweet object; ``str(err)`` says why in a few words."""


# --- cleaning rules, in contract order ------------------------------------

_RETWEET_MARKER = re.compile(r"^\s*RT @[A-Za-z0-9_]{1,15}:")
_URL = re.compile(r"(?i)\b(?:https?://|www\.)\S*")
# '@' at the start or after a non-word character, then a handle of 1-15 characters
# that is not followed by another handle character (a 16+ character run is no handle).
_MENTION = re.compile(r"(?<!\w)@[A-Za-z0-9_]{1,15}(?![A-Za-z0-9_])")
_HASH = re.compile(r"(?<!\w)#(?=\w)")
_EMOJI = re.compile(
    "["
    "\U0001f000-\U0001faff"  # mahjong .. symbols & pictographs ext-A: pictographs,
    #                          emoticons, transport, regional indicators, skin tones
    "\U000e0020-\U000e007f"  # tag characters (subdivision flags such as England's)
    "\u2600-\u27bf"  # miscellaneous symbols and dingbats
    "\u231a\u231b\u2328\u23cf\u23e9-\u23f3\u23f8-\u23fa"  # clocks, hourglass, media keys
    "\u2b05-\u2b07\u2b1b\u2b1c\u2b50\u2b55"  # arrows, squares, star, circle
    "\u3030\u303d\u3297\u3299"
    "\u200d"  # zero width joiner
    "\ufe0e\ufe0f"  # variation selectors
    "\u20e3"  # combining enclosing keycap
    "]+"
)
# control characters other than the whitespace ones (\t \n \v \f \r), and lone surrogates
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ud800-\udfff]+")
_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """The processed form of one tweet's text ("" when nothing is left).

    Entities unescaped, leading ``RT @handle:`` dropped, URLs, mentions and
    emoji dropped, ``#`` removed from hashtags, control characters and lone
    surrogates dropped, whitespace collapsed. Case, punctuation, accents and
    non-Latin scripts are kept.
    """
    text = html.unescape(text)
    text = _RETWEET_MARKER.sub("", text, count=1)
    text = _URL.sub(" ", text)
    text = _MENTION.sub(" ", text)
    text = _HASH.sub("", text)
    text = _EMOJI.sub("", text)
    text = _CONTROL.sub("", text)
    return _SPACES.sub(" ", text).strip()


# --- wire format -------------------------------------------------------------


def parse_line(line: str) -> tuple[str, str]:
    """``(id, text)`` of one wire line, or MalformedLineError saying why not."""
    try:
        tweet = json.loads(line)
    except ValueError:
        raise MalformedLineError("not JSON") from None
    except RecursionError:
        raise MalformedLineError("JSON nested too deeply") from None
    if not isinstance(tweet, dict):
        raise MalformedLineError(f"JSON {type(tweet).__name__}, not an object")
    tweet_id, text = tweet.get("id"), tweet.get("text")
    if isinstance(tweet_id, bool) or not isinstance(tweet_id, str | int) or tweet_id == "":
        raise MalformedLineError("no id")
    if not isinstance(text, str):
        raise MalformedLineError("no text")
    return str(tweet_id), text


def process_line(line: str) -> Record:
    """What Spark's executors do with one line: parse and clean, never raise.

    Returns ``(OK, id, cleaned)``, ``(EMPTY, id, "")`` or ``(MALFORMED, "", reason)``.
    """
    try:
        tweet_id, text = parse_line(line)
    except MalformedLineError as err:
        return MALFORMED, "", str(err)
    cleaned = clean_text(text)
    return (OK if cleaned else EMPTY), tweet_id, cleaned


def encode_tweet(tweet: dict[str, Any]) -> bytes:
    """One tweet object as one wire line: compact ASCII JSON ending in ``\\n``.

    ASCII escaping keeps lone surrogates and every newline inside the JSON
    string, so a record can never be split or fail to encode.
    """
    return json.dumps(tweet, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


# --- stored document -----------------------------------------------------------


def to_utc(moment: datetime) -> datetime:
    """An aware UTC datetime at millisecond precision (what BSON stores).

    A naive datetime is taken as local time, which is what Spark hands to
    ``foreachRDD``.
    """
    utc = moment.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def batch_id(batch_time: datetime) -> str:
    """The deterministic ``_id`` of a batch: its UTC time, e.g. ``2026-11-28T22:46:20.000Z``."""
    utc = to_utc(batch_time)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def build_document(
    batch_time: datetime, content: list[str], total_case_count: int | None
) -> dict[str, Any]:
    """The document stored for one batch, in the contract's shape plus ``_id``."""
    return {
        "_id": batch_id(batch_time),
        "content": list(content),
        "timestamp": to_utc(batch_time),
        "total_case_count": total_case_count,
    }
