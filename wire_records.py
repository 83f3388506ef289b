"""The wire records that are not posts: their kinds, how one is checked, and the key a
stored post is found by when its author deletes it.

A wire line with ``kind`` is one of these (docs/design.md, "Wire format"): a
``delete`` (an author deleted a post), a ``coverage`` span or a ``gap`` (source time
the producer read, or did not, and why) or a ``filter`` (the keyword set in force).
Each carries a ``mac`` made with the control secret (``control.seal_record``); this
module checks a record's shape on the executors, and the job's driver checks its mac.
Pure functions, shipped to the executors with :mod:`transform`.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any


class MalformedLineError(ValueError):
    """A wire line that is not a tweet object; ``str(err)`` says why in a few words."""


# the records that are not posts (a line with "kind"; docs/design.md, "Wire format"):
DELETE = "delete"  # the author deleted the post whose id is the Record's tweet_id
COVERAGE = "coverage"  # source time the producer read without a break, as far as read
COVERAGE_GAP = "gap"  # source time the producer did not read, and why
FILTER = "filter"  # the keyword set (X: rules) in force from here on, for this producer
RECORD_KINDS = (DELETE, COVERAGE, COVERAGE_GAP, FILTER)
#: the sources a coverage, gap or filter record can name
RECORD_SOURCES = ("bluesky", "twitter", "replay")
#: why source time was not read (a gap record's reason)
GAP_REASONS = ("cursor not honoured", "restart past retention", "watchdog stall",
               "x disconnect", "refused")
#: the reason a record without a valid mac is malformed for (the job checks the mac)
FORGED = "forged"
#: bytes of a post key (128 bits)
POST_KEY_BYTES = 16


#: a mac as control.seal_record makes it: 32 lower-case hex characters
_MAC = re.compile(r"[0-9a-f]{32}")
#: a record's delivery members, outside what its mac covers (journal.RESERVED)
_DELIVERY_MEMBERS = frozenset({"seq", "src", "pos", "crc"})


def parse_record(value: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """``(kind, post id or "", members)`` of a wire record that is not a post (a
    parsed line with ``kind``), or MalformedLineError saying why it is no well-formed
    record: an unknown kind, a member missing or of the wrong type, or no mac
    (reason FORGED). ``members`` are the record's as sent, mac included, without
    the delivery members ``seq``, ``src``, ``pos`` and ``crc``: what the mac covers.

    The fields of each kind are the contract (docs/design.md, "Wire format"); extra
    members are kept (and covered by the mac). Whether the mac is right is for the
    holder of the secret to check (``control.record_authentic``).
    """
    kind = value.get("kind")
    if kind not in RECORD_KINDS:
        raise MalformedLineError(f"unknown record kind {str(kind)[:40]!r}")
    mac = value.get("mac")
    if not isinstance(mac, str) or not _MAC.fullmatch(mac):
        raise MalformedLineError(FORGED)
    post_id = ""
    if kind == DELETE:
        post_id = value.get("id")
        if not isinstance(post_id, str) or not post_id:
            raise MalformedLineError("delete record without an id")
        _record_time(value, "at", kind)
    elif kind == FILTER:
        _check_filter(value)
    else:
        _check_span(value, kind)
    return kind, post_id, {k: v for k, v in value.items() if k not in _DELIVERY_MEMBERS}


def record_time(text: Any) -> datetime | None:
    """A record's ISO 8601 time (``2026-11-30T08:00:01.250000Z``; no offset means UTC)
    as an aware UTC datetime at millisecond precision (BSON's); None if it is none."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        return None
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def _record_time(value: dict[str, Any], name: str, kind: str) -> datetime:
    moment = record_time(value.get(name))
    if moment is None:
        raise MalformedLineError(f"{kind} record without an ISO 8601 {name!r}")
    return moment


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _check_span(value: dict[str, Any], kind: str) -> None:
    """A coverage or gap record's members: source, host, from <= to, its counts, a
    gap's reason."""
    if value.get("source") not in RECORD_SOURCES:
        raise MalformedLineError(f"{kind} record with an unknown source")
    if not isinstance(value.get("host"), str):
        raise MalformedLineError(f"{kind} record without a host")
    if _record_time(value, "from", kind) > _record_time(value, "to", kind):
        raise MalformedLineError(f"{kind} record that ends before it starts")
    counts = ("events", "posts", "matched", "refused") if kind == COVERAGE else ("refused",)
    if not all(_count(value.get(name)) for name in counts):
        raise MalformedLineError(f"{kind} record without its counts")
    if kind == COVERAGE:
        if not isinstance(value.get("span"), str) or not value["span"]:
            raise MalformedLineError("coverage record without a span id")
    elif value.get("reason") not in GAP_REASONS:
        raise MalformedLineError("gap record with an unknown reason")


def _check_filter(value: dict[str, Any]) -> None:
    """A filter record: a source, and a list of keywords (text) or of X rules
    (``{"tag", "value"}``)."""
    if value.get("source") not in RECORD_SOURCES:
        raise MalformedLineError("filter record with an unknown source")
    keywords, rules = value.get("keywords"), value.get("rules")
    if keywords is not None and (rules is not None or not isinstance(keywords, list)
                                 or not all(isinstance(k, str) for k in keywords)):
        raise MalformedLineError("filter record with bad keywords")
    if rules is not None and (not isinstance(rules, list) or not all(
            isinstance(rule, dict) and isinstance(rule.get("value"), str)
            and isinstance(rule.get("tag", ""), str) for rule in rules)):
        raise MalformedLineError("filter record with bad rules")
    if keywords is None and rules is None:
        raise MalformedLineError("filter record without keywords or rules")


def post_key(post_id: str) -> bytes:
    """The key a stored post is found by when its author deletes it: the first 128 bits
    of the SHA-256 of its id (the wire id as text), never the id itself (an ``at://``
    id holds the author's DID). Stored as BSON binary in each document's
    ``post_keys`` and the ``<collection>_post_keys`` collection."""
    return hashlib.sha256(post_id.encode("utf-8", "surrogatepass")).digest()[:POST_KEY_BYTES]


# --- making records (the producer seals each with control.seal_record) -----------------


def iso_time(moment: datetime) -> str:
    """A record's time: ISO 8601 in UTC with microseconds and ``Z``
    (``2026-11-30T08:00:01.250000Z``); a naive ``moment`` is taken as UTC."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def delete_record(post_id: str, at: datetime) -> dict[str, Any]:
    """The record of a post its author deleted (``at``: the delete event's time)."""
    if not post_id:
        raise ValueError("a delete names a post id")
    return {"kind": DELETE, "id": post_id, "at": iso_time(at)}


def coverage_record(span: str, source: str, host: str, start: datetime, end: datetime, *,
                    events: int, posts: int, matched: int, refused: int = 0
                    ) -> dict[str, Any]:
    """The record of source time read without a break, ``start`` to ``end`` so far (the
    same ``span`` sent again later, further and with higher counts, replaces it)."""
    record = {"kind": COVERAGE, "span": span, "source": source, "host": host,
              "from": iso_time(start), "to": iso_time(end), "events": events,
              "posts": posts, "matched": matched, "refused": refused}
    _check_span(record, COVERAGE)
    return record


def gap_record(source: str, host: str, start: datetime, end: datetime, reason: str,
               refused: int = 0) -> dict[str, Any]:
    """The record of source time not read, ``start`` to ``end``, and why (GAP_REASONS;
    ``refused``: posts refused in it)."""
    record = {"kind": COVERAGE_GAP, "source": source, "host": host, "from": iso_time(start),
              "to": iso_time(end), "reason": reason, "refused": refused}
    _check_span(record, COVERAGE_GAP)
    return record


def filter_record(source: str, *, keywords: list[str] | None = None,
                  rules: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The record of the keyword set (Bluesky) or rule set (X: ``{"tag", "value"}``
    each) in force from now on."""
    record: dict[str, Any] = {"kind": FILTER, "source": source}
    if keywords is not None:
        record["keywords"] = list(keywords)
    if rules is not None:
        record["rules"] = [dict(rule) for rule in rules]
    _check_filter(record)
    return record
