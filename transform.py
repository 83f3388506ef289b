"""Pure functions of the pipeline: parse a wire line, clean a tweet, build a document.

No I/O and no state here, so Spark can run :func:`process_line` on executors
and each rule can be tested alone. The contracts are in docs/design.md:

* wire format: one JSON object per line: a tweet, with at least ``id`` and
  ``text``, or a record with ``kind`` (a delete, coverage, gap or keyword set,
  checked by :mod:`wire_records`);
* cleaning: :func:`clean_text`, rules applied in the documented order, after
  :func:`strip_post_markup` for a Bluesky post (its links and mentions);
* stored document: :func:`build_document`, with the opt-in ``posts``
  (:func:`post_fields`, :func:`partition_processor`).
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from wire_records import POST_KEY_BYTES, parse_record
from wire_records import MalformedLineError as MalformedLineError  # transform's name too

try:
    import orjson
except ImportError:  # an executor without it parses with json alone: slower, same result
    orjson = None

OK = "ok"
EMPTY = "empty"  # valid tweet whose text is empty after cleaning: dropped
MALFORMED = "malformed"  # not a tweet at all: counted, quarantined and skipped

#: How much of a malformed line is kept for the quarantine.
RAW_KEEP_CHARS = 2_000


class Record(NamedTuple):
    """What :func:`process_line` makes of one wire line."""

    status: str  # OK, EMPTY, MALFORMED, or one of RECORD_KINDS
    tweet_id: str  # "" when malformed; a DELETE's: the deleted post's id
    text: str  # the cleaned text; for MALFORMED, the reason; "" for a record
    seq: int | None = None  # the producer's delivery sequence number, if it sent one
    source: str | None = None  # the producer's journal id, with seq
    raw: str | None = None  # MALFORMED only: the start of the line, for the quarantine
    #: OK with post fields on: the post's stored fields; a record (RECORD_KINDS): its
    #: members as sent, mac included, without the delivery members (what the mac covers)
    post: dict[str, Any] | None = None


# --- cleaning rules, in contract order ------------------------------------
#
# tests/test_transform.py keeps docs/design.md's rules as plain regular expressions,
# one pass each (``reference_clean_text``), and checks on 100,000 generated
# texts that :func:`clean_text` gives the same result. The patterns below match
# exactly the same text, written so that Python's regex engine can jump to the
# next candidate character (``@``, ``#``, ``h``/``w``) instead of trying a
# look-behind at every position: ``(?<!\w)@`` is written ``@(?<!\w@)``, and
# ``(?i)\b(?:https?://|www\.)`` spells out each letter's case-insensitive forms
# (the long s, U+017F, is one of those of ``s``) so that it starts with a
# character set.

_RETWEET_MARKER = re.compile(r"^\s*RT @[A-Za-z0-9_]{1,15}:")
# a URL: "http://", "https://" or "www." (any case) at the start of a word, then non-spaces
_URL = re.compile(r"[hHwW](?<!\w.)(?:(?<=[hH])[tT][tT][pP][sS\u017f]?://|(?<=[wW])[wW][wW]\.)\S*",
                  re.DOTALL)
# '@' at the start or after a non-word character, then a handle of 1-15 characters
# that is not followed by another handle character (a 16+ character run is no handle).
_MENTION = re.compile(r"@(?<!\w@)[A-Za-z0-9_]{1,15}(?![A-Za-z0-9_])")
_HASH = re.compile(r"#(?<!\w#)(?=\w)")
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
# the characters of _CONTROL that str.split() also takes for whitespace
_CONTROL_SPACE = re.compile("[\x1c-\x1f\x85]")


def clean_text(text: str) -> str:
    """The processed form of one tweet's text ("" when nothing is left).

    Entities unescaped, leading ``RT @handle:`` dropped, URLs, mentions and
    emoji dropped, ``#`` removed from hashtags, control characters and lone
    surrogates dropped, whitespace collapsed. Case, punctuation, accents and
    non-Latin scripts are kept.
    """
    # each pass only where it can change something (the same result, faster)
    if "&" in text:
        text = html.unescape(text)
    if "RT" in text:
        text = _RETWEET_MARKER.sub("", text, count=1)
    if "://" in text or "w." in text or "W." in text:  # what "://" or "www." need
        text = _URL.sub(" ", text)
    if "@" in text:
        text = _MENTION.sub(" ", text)
    if "#" in text:
        text = _HASH.sub("", text)
    if not text.isascii():  # every emoji of the pattern is outside ASCII
        text = _EMOJI.sub("", text)
    # whitespace collapsed (str.split() uses the same whitespace as \s); the control
    # characters go first, but a text whose words are printable has none, apart
    # from the few that are whitespace too
    collapsed = " ".join(text.split())
    if collapsed.isprintable() and not _CONTROL_SPACE.search(text):
        return collapsed
    return " ".join(_CONTROL.sub("", text).split())


# --- Bluesky posts: the two steps before the ordinary cleaning -----------------

_FACET_LINK = "app.bsky.richtext.facet#link"
_FACET_MENTION = "app.bsky.richtext.facet#mention"
# '@' at the start or after a non-word character, then two or more labels of
# [A-Za-z0-9-] joined by dots: a domain handle such as @alice.bsky.social
_DOMAIN_MENTION = re.compile(r"@(?<!\w@)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def strip_post_markup(text: str, facets: Any = None) -> str:
    """A Bluesky post's text with its links and mentions replaced by one space each.

    a. Each facet whose features include a link or a mention marks a range
       ``[byteStart, byteEnd)`` of the text **in UTF-8 bytes**; that range is
       replaced. A facet whose range is empty, reversed, past the end of the
       text or not on character boundaries is ignored; overlapping ranges are
       replaced as one. (Links are shown shortened and often without a scheme,
       e.g. ``nytimes.com/2026/11/cov...``: only the facet finds them.)
    b. ``@`` + a domain handle (``@alice.bsky.social``) without a facet, where
       ``@`` starts the text or follows a non-word character (``info@who.int``
       stays).

    :func:`clean_text` then applies the ordinary rules. ``#tag`` facets keep
    their text. ``facets`` is the record's ``facets`` as it came; anything in
    it that is not a well-formed facet is ignored.
    """
    ranges = sorted(_facet_ranges(text, facets)) if facets else []
    if ranges:
        data = text.encode("utf-8", "surrogatepass")
        pieces, position = [], 0
        for start, end in ranges:
            if end <= position:
                continue  # inside a range already replaced
            pieces.append(data[position:max(start, position)])
            if start >= position:
                pieces.append(b" ")
            position = end
        pieces.append(data[position:])
        text = b"".join(pieces).decode("utf-8", "surrogatepass")
    if "@" in text:
        text = _DOMAIN_MENTION.sub(" ", text)
    return text


def valid_facets(text: str, facets: Any) -> Iterator[tuple[int, int, list[Any]]]:
    """``(byteStart, byteEnd, features)`` of each facet of a Bluesky record's ``facets``
    whose range is valid in ``text``: an object with a list of ``features`` and an
    ``index`` whose range, in UTF-8 bytes, is neither empty nor reversed, ends within
    the text and starts and ends on character boundaries. Anything else is skipped."""
    if not isinstance(facets, list):
        return
    data = None
    for facet in facets:
        if not isinstance(facet, dict):
            continue
        index, features = facet.get("index"), facet.get("features")
        if not isinstance(index, dict) or not isinstance(features, list):
            continue
        start, end = index.get("byteStart"), index.get("byteEnd")
        if type(start) is not int or type(end) is not int or not 0 <= start < end:
            continue
        if data is None:
            data = text.encode("utf-8", "surrogatepass")
        if end <= len(data) and _on_boundary(data, start) and _on_boundary(data, end):
            yield start, end, features


def _facet_ranges(text: str, facets: Any) -> Iterator[tuple[int, int]]:
    """The valid byte ranges of ``facets`` that hold a link or a mention."""
    for start, end, features in valid_facets(text, facets):
        if any(isinstance(feature, dict)
               and feature.get("$type") in (_FACET_LINK, _FACET_MENTION)
               for feature in features):
            yield start, end


def _on_boundary(data: bytes, offset: int) -> bool:
    """True when ``offset`` starts a character of the UTF-8 ``data`` (or is its end)."""
    return offset == len(data) or data[offset] & 0xC0 != 0x80  # not a continuation byte


# --- wire format -------------------------------------------------------------


def _load_json(line: str) -> Any:
    """``json.loads(line)``, mostly done by orjson (~3x faster on a tweet).

    orjson rejects what the standard parser accepts beyond RFC 8259 (NaN, lone
    surrogates) and turns integers past 64 bits into floats: in those cases
    (and for a float where an id or seq is read, or as the whole line) the
    line is parsed again with ``json``, so the result is what ``json.loads``
    gives. One exception, left as it is because checking costs ~1 µs a line:
    orjson reads up to 1,023 levels of nesting, while ``json.loads`` gives up
    somewhere near 1,000 (where exactly depends on the stack), so a line nested
    ~1,000 deep can be accepted by one and quarantined by the other.
    """
    if orjson is not None:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(value, dict):
                if type(value.get("id")) is not float and type(value.get("seq")) is not float:
                    return value
            elif type(value) is not float:
                return value
    try:
        return json.loads(line)
    except ValueError:
        raise MalformedLineError("not JSON") from None
    except RecursionError:
        raise MalformedLineError("JSON nested too deeply") from None


def parse_line(line: str) -> tuple[str, str, int | None, str | None]:
    """``(id, text, seq, source)`` of one wire line, or MalformedLineError saying why not.

    ``seq`` and ``source`` are the producer's delivery fields (``"seq"``,
    ``"src"``); a line without them gives None for both.
    """
    return _tweet_fields(_load_json(line))


def _tweet_fields(tweet: Any) -> tuple[str, str, int | None, str | None]:
    """:func:`parse_line` of a parsed line."""
    if not isinstance(tweet, dict):
        raise MalformedLineError(f"JSON {type(tweet).__name__}, not an object")
    tweet_id, text = tweet.get("id"), tweet.get("text")
    if isinstance(tweet_id, bool) or not isinstance(tweet_id, str | int) or tweet_id == "":
        raise MalformedLineError("no id")
    if not isinstance(text, str):
        raise MalformedLineError("no text")
    seq, source = _delivery_fields(tweet)
    return str(tweet_id), text, seq, source


def _delivery_fields(value: dict[str, Any]) -> tuple[int | None, str | None]:
    """A line's ``(seq, src)``, both None when it has neither."""
    seq, source = value.get("seq"), value.get("src")
    if seq is None and source is None:
        return None, None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not isinstance(source, str):
        raise MalformedLineError("bad seq/src delivery fields")
    return seq, source


def process_line(line: str, fields: Sequence[str] = ()) -> Record:
    """What Spark's executors do with one line: parse and clean, never raise.

    A tweet gives ``Record(OK or EMPTY, id, cleaned, seq, source)``; a well-formed
    record that is not a post (a line with ``kind``, :func:`parse_record`)
    ``Record(<its kind>, <a delete's post id, else "">, "", seq, source, post=<its
    members>)``, its mac still to be checked (on the driver, which alone holds the
    secret); anything else ``Record(MALFORMED, "", reason, raw=<start of the
    line>)``. With ``fields`` (names of POST_FIELDS), an OK record also carries
    ``post=``:func:`post_fields` of the tweet.
    """
    if fields:
        return Record._make(_process_with_post(line, tuple(fields)))
    return Record._make(_process(line))


def process_partition(lines: Iterable[str]) -> Iterator[tuple[Any, ...]]:
    """:func:`process_line` over a partition, as plain tuples (``Record._make``
    turns one back): Spark pickles a tuple several times faster than a NamedTuple."""
    return map(_process, lines)


def partition_processor(fields: Sequence[str] = ()
                        ) -> Callable[[Iterable[str]], Iterator[tuple[Any, ...]]]:
    """What the executors run over each partition: :func:`process_partition`
    when no post field is stored (no cost per post), else the same records with
    each OK one's :func:`post_fields` for ``fields``."""
    if not fields:
        return process_partition
    return functools.partial(_process_partition_with_posts, tuple(fields))


def _process_partition_with_posts(fields: tuple[str, ...], lines: Iterable[str]
                                  ) -> Iterator[tuple[Any, ...]]:
    return (_process_with_post(line, fields) for line in lines)


def _process(line: str) -> tuple[Any, ...]:
    try:
        tweet = _load_json(line)
        if type(tweet) is dict and "kind" in tweet:
            return _record_tuple(tweet)
        tweet_id, text, seq, source = _tweet_fields(tweet)
    except MalformedLineError as err:
        return MALFORMED, "", str(err), None, None, line[:RAW_KEEP_CHARS], None
    cleaned = clean_text(text)
    return OK if cleaned else EMPTY, tweet_id, cleaned, seq, source, None, None


def _process_with_post(line: str, fields: tuple[str, ...]) -> tuple[Any, ...]:
    """:func:`_process`, the parsed tweet kept for its post fields."""
    try:
        tweet = _load_json(line)
        if type(tweet) is dict and "kind" in tweet:
            return _record_tuple(tweet)
        tweet_id, text, seq, source = _tweet_fields(tweet)
    except MalformedLineError as err:
        return MALFORMED, "", str(err), None, None, line[:RAW_KEEP_CHARS], None
    cleaned = clean_text(text)
    if not cleaned:  # dropped: its fields are not needed
        return EMPTY, tweet_id, cleaned, seq, source, None, None
    return OK, tweet_id, cleaned, seq, source, None, post_fields(tweet, tweet_id, fields)


def _record_tuple(value: dict[str, Any]) -> tuple[Any, ...]:
    """The Record fields of a parsed line with ``kind``; MalformedLineError if it is no
    well-formed record."""
    status, post_id, members = parse_record(value)
    seq, source = _delivery_fields(value)
    return status, post_id, "", seq, source, None, members


# --- post fields (opt-in: POST_FIELDS) ---------------------------------------------

#: The fields a stored post can have, in the order they are documented. ``author_id``
#: and ``mentions`` identify people: they are stored only when asked for by name.
POST_FIELDS = ("id", "created_at", "lang", "url", "author_id",
               "reply_to", "reply_root", "quote_of", "hashtags", "links", "mentions",
               "matched")
#: The post fields whose value is a list of text (null when the post has none).
LIST_FIELDS = ("hashtags", "links", "mentions", "matched")
#: X API v1.1's time format (``Wed Oct 10 20:19:24 +0000 2018``), for old replay files.
_V1_TIME = "%a %b %d %H:%M:%S %z %Y"


def post_fields(tweet: dict[str, Any], tweet_id: str, fields: Sequence[str]
                ) -> dict[str, Any]:
    """The stored fields of one wire tweet, ``{field: value}`` for ``fields`` only:

    * ``id``: ``tweet_id``, the wire id as text;
    * ``created_at``: :func:`post_time` of the tweet's own ``created_at`` (None when
      absent or unparseable, never the batch time);
    * ``lang``: its first language tag, or None;
    * ``url``: its link, or None (X's wire posts have none);
    * ``author_id``: the author's id (a DID, an X user id) as text, or None;
    * the conversation fields, :data:`CONVERSATION_FIELDS`: each from the wire
      tweet's field of that name (what the Bluesky source sends), or else from an
      X API v2 post's ``referenced_tweets``, ``conversation_id`` and ``entities``;
      None when the post has none (a list is never empty).
    * ``matched``: what chose it, the producer's ``matched`` (the keywords or tags;
      X: the rule tags) as a list of lower-case texts, or None.
    """
    post: dict[str, Any] = {}
    for name in fields:
        if name == "id":
            post["id"] = tweet_id
        elif name == "created_at":
            post["created_at"] = post_time(tweet.get("created_at"))
        elif name == "lang":
            post["lang"] = _first_lang(tweet.get("lang"))
        elif name == "url":
            url = tweet.get("url")
            post["url"] = url if isinstance(url, str) and url else None
        elif name == "author_id":
            post["author_id"] = _text_id(tweet.get("author_id"))
        elif name == "matched":
            post["matched"] = _matched(tweet.get("matched"))
        else:
            post[name] = CONVERSATION_FIELDS[name](tweet, tweet_id)
    return post


def _matched(value: Any) -> list[str] | None:
    """The wire post's ``matched`` (what chose it) as lower-case texts, repeats and
    other values dropped; None when it has none. A keyword can hold a space."""
    if not isinstance(value, list):
        return None
    found = dict.fromkeys(item.lower() for item in value if isinstance(item, str) and item)
    return list(found) or None


def _text_id(value: Any) -> str | None:
    """An id as text: a non-empty string, or an integer (not a bool); else None."""
    if isinstance(value, str):
        return value or None
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _texts(values: Any, key: str | None = None) -> list[str] | None:
    """The texts of the list ``values`` (each item's ``key`` when given): non-empty
    strings without whitespace (no tag, URL, DID or id has any; the CSV export joins
    them with spaces), or integers; repeats dropped, in their order; None if none."""
    if not isinstance(values, list):
        return None
    found: dict[str, None] = {}
    for value in values:
        if key is not None:
            value = value.get(key) if isinstance(value, dict) else None
        value = _text_id(value)
        if value is not None and value.split() == [value]:
            found[value] = None
    return list(found) or None


def _referenced(tweet: dict[str, Any], kind: str) -> str | None:
    """The id of the first of an X post's ``referenced_tweets`` of type ``kind``."""
    references = tweet.get("referenced_tweets")
    for reference in references if isinstance(references, list) else ():
        if isinstance(reference, dict) and reference.get("type") == kind:
            found = _text_id(reference.get("id"))
            if found is not None:
                return found
    return None


def _entities(tweet: dict[str, Any], kind: str, key: str) -> list[str] | None:
    """``entities[kind][].key`` of an X post."""
    entities = tweet.get("entities")
    return _texts(entities.get(kind), key) if isinstance(entities, dict) else None


def _reply_to(tweet: dict[str, Any], tweet_id: str) -> str | None:
    if "reply_to" in tweet:
        return _text_id(tweet["reply_to"])
    return _referenced(tweet, "replied_to")


def _reply_root(tweet: dict[str, Any], tweet_id: str) -> str | None:
    if "reply_root" in tweet:
        return _text_id(tweet["reply_root"])
    # X: conversation_id, which is the post's own id when it is no reply (and stays
    # so when a replayed pass adds ~N to that id)
    if _referenced(tweet, "replied_to") is None:
        return None
    return _text_id(tweet.get("conversation_id"))


def _quote_of(tweet: dict[str, Any], tweet_id: str) -> str | None:
    if "quote_of" in tweet:
        return _text_id(tweet["quote_of"])
    return _referenced(tweet, "quoted")


def _hashtags(tweet: dict[str, Any], tweet_id: str) -> list[str] | None:
    if "hashtags" in tweet:
        return _texts(tweet["hashtags"])
    return _entities(tweet, "hashtags", "tag")


def _links(tweet: dict[str, Any], tweet_id: str) -> list[str] | None:
    if "links" in tweet:
        return _texts(tweet["links"])
    return _entities(tweet, "urls", "expanded_url")


def _mentions(tweet: dict[str, Any], tweet_id: str) -> list[str] | None:
    if "mentions" in tweet:
        return _texts(tweet["mentions"])
    return _entities(tweet, "mentions", "id")


#: How each conversation field is read from a wire tweet (and its id as text): the
#: wire field of the same name when the tweet has it (a Bluesky post's, sent only
#: when it has a value), else X API v2's fields.
CONVERSATION_FIELDS: dict[str, Callable[[dict[str, Any], str], Any]] = {
    "reply_to": _reply_to, "reply_root": _reply_root, "quote_of": _quote_of,
    "hashtags": _hashtags, "links": _links, "mentions": _mentions}


def post_time(value: Any) -> datetime | None:
    """A post's own time as an aware UTC datetime at millisecond precision (BSON's),
    from ISO 8601 text (``2026-11-30T08:00:01.000Z``; no offset means UTC) or X API
    v1.1's format; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            try:
                moment = datetime.strptime(value.strip(), _V1_TIME)
            except ValueError:
                return None
    # each step only when needed: datetime.replace costs ~1 µs, a third of the whole
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.tzinfo is not UTC:
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00+01:00: before year 1 in UTC
            return None
    if moment.microsecond % 1000:
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    return moment


def _first_lang(value: Any) -> str | None:
    """The first language tag: ``lang`` as the producer sends it, or a list of tags."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


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
    batch_time: datetime,
    content: list[str],
    total_case_count: int | None,
    case_count_as_of: datetime | None = None,
    case_count_source: str | None = None,
    posts: list[dict[str, Any]] | None = None,
    post_keys: list[bytes] | None = None,
) -> dict[str, Any]:
    """The document stored for one batch, in the contract's shape plus ``_id``.

    ``case_count_as_of`` is the moment the count is for and
    ``case_count_source`` where it came from ("worldometers" or "who"); both
    are null when there is no count. ``posts`` (post fields on): the stored
    fields of each text of ``content``, in the same order, as ``posts``.
    ``post_keys``: the :func:`post_key` of each text's post, in the same order
    (how a deleted post is found), as ``post_keys``.
    """
    if total_case_count is None:
        case_count_as_of = case_count_source = None
    if posts is not None and len(posts) != len(content):
        raise ValueError(f"{len(posts)} posts for {len(content)} texts")
    if post_keys is not None and len(post_keys) != len(content):
        raise ValueError(f"{len(post_keys)} post keys for {len(content)} texts")
    document = {
        "_id": batch_id(batch_time),
        "content": list(content),
        "timestamp": to_utc(batch_time),
        "total_case_count": total_case_count,
        "case_count_as_of": None if case_count_as_of is None else to_utc(case_count_as_of),
        "case_count_source": case_count_source,
    }
    if posts is not None:
        document["posts"] = list(posts)
    if post_keys is not None:
        document["post_keys"] = list(post_keys)
    return document


#: Room for a part's content array (and its posts array, post fields on):
#: MongoDB's 16 MiB document limit less space for the other fields.
MAX_CONTENT_BYTES = 16 * 1024 * 1024 - 64 * 1024


def bson_array_item_size(index: int, text: str) -> int:
    """Bytes one string takes as item ``index`` of a BSON array."""
    # type byte + key ("0", "1", ...) + NUL + int32 length + UTF-8 bytes + NUL
    return 1 + len(str(index)) + 1 + 4 + len(text.encode("utf-8", "surrogatepass")) + 1


def bson_post_size(index: int, post: dict[str, Any]) -> int:
    """Bytes one post (:func:`post_fields`: text, date, list of text or null values)
    takes as item ``index`` of a BSON array; an other value is counted as 8 bytes."""
    # type byte + key + NUL + the subdocument: int32 length, its fields, NUL
    return 1 + len(str(index)) + 1 + _post_body_size(post)


def _post_body_size(post: dict[str, Any]) -> int:
    size = 4 + 1
    for name, value in post.items():
        size += 1 + len(name) + 1  # type byte + ASCII field name + NUL
        if isinstance(value, str):
            size += 4 + len(value.encode("utf-8", "surrogatepass")) + 1
        elif isinstance(value, list):
            size += _text_array_size(value)
        elif value is not None:
            size += 8  # a date (int64 ms)
    return size


def _text_array_size(values: list[Any]) -> int:
    """Bytes a list of text takes as a BSON array (an other item counted as 8 bytes)."""
    size = 4 + 1  # int32 length ... NUL
    for index, value in enumerate(values):
        size += 1 + len(str(index)) + 1  # type byte + key + NUL
        size += (4 + len(value.encode("utf-8", "surrogatepass")) + 1
                 if isinstance(value, str) else 8)
    return size


def bson_key_size(index: int) -> int:
    """Bytes one post key (:func:`post_key`, BSON binary) takes as item ``index`` of
    the ``post_keys`` array."""
    # type byte + key + NUL + int32 length + subtype + the bytes
    return 1 + len(str(index)) + 1 + 4 + 1 + POST_KEY_BYTES


def split_content(content: list[str], max_bytes: int = MAX_CONTENT_BYTES,
                  posts: list[dict[str, Any]] | None = None, *, keys: bool = False
                  ) -> list[list[str]]:
    """``content`` cut, in order, into parts whose BSON array fits ``max_bytes``;
    with ``posts`` (one a text, post fields on), whose content and posts arrays
    together fit: part N's posts are then the same slice of ``posts``; with
    ``keys``, the ``post_keys`` array (a :func:`post_key` a text) too.

    Almost every batch is one part. A single text larger than ``max_bytes``
    gets a part of its own (and cannot be stored: tweets are never that big).
    """
    size = _array_size(content)
    if posts is not None:
        size += _array_size(posts, [_post_body_size(post) for post in posts])
    if keys:
        size += _array_size(content, [4 + 1 + POST_KEY_BYTES] * len(content))
    if size <= max_bytes:  # the usual case, without a loop per text
        return [list(content)]
    parts: list[list[str]] = [[]]
    size = 0
    for number, text in enumerate(content):
        item = _item_size(len(parts[-1]), text, posts, number, keys)
        if parts[-1] and size + item > max_bytes:
            parts.append([])
            size = 0
            item = _item_size(0, text, posts, number, keys)
        parts[-1].append(text)
        size += item
    return parts


def _item_size(index: int, text: str, posts: list[dict[str, Any]] | None, number: int,
               keys: bool) -> int:
    """Bytes text ``number`` (its post, its key) take as item ``index`` of a part's arrays."""
    size = bson_array_item_size(index, text)
    if posts is not None:
        size += bson_post_size(index, posts[number])
    if keys:
        size += bson_key_size(index)
    return size


def _array_size(content: list[Any], bodies: list[int] | None = None) -> int:
    """The sum of :func:`bson_array_item_size` over ``content``, with one encode; with
    ``bodies`` (the sizes of each item's value after its key), of the items of those
    sizes (:func:`bson_post_size`, :func:`bson_key_size`)."""
    count = len(content)
    digits, power = count, 10  # len(str(i)) = 1 + (i >= 10) + (i >= 100) + ...
    while power < count:
        digits += count - power
        power *= 10
    if bodies is not None:
        return count * 2 + digits + sum(bodies)
    text_bytes = len("".join(content).encode("utf-8", "surrogatepass"))
    return count * 7 + digits + text_bytes


def part_id(batch_time: datetime, part: int) -> str:
    """``_id`` of part ``part`` (1-based) of a batch: the batch id, then ``#2``, ``#3``..."""
    return batch_id(batch_time) if part == 1 else f"{batch_id(batch_time)}#{part}"
