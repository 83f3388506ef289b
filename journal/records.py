"""The record format: a JSON object on one line, sealed with its CRC32 (:func:`seal`).

Every record is one JSON object on one line, sealed with the CRC32 of its
bytes as its last member (:func:`seal`)::

    {"seq":7,"src":"9009d11d4f17","id":"1","text":"hi","crc":"5c7b1f2a"}\\n

A record cut short by a crash (a SIGKILL, a power cut, a full disk) or
damaged later fails :func:`unseal`, so a file is read back as its valid
records; a torn tail is cut off when the file is opened, never appended to
(:func:`scan`). The producer's journal lines are the wire lines themselves:
Spark's executors ignore the ``crc`` member, so a tweet goes from the disk to
the socket without being decoded again.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_CRC_OPEN = b',"crc":"'
_CRC_CLOSE = b'"}\n'
#: bytes a seal adds after the object's body: ,"crc":"xxxxxxxx"}\n
SEAL_BYTES = len(_CRC_OPEN) + 8 + len(_CRC_CLOSE)
#: a record's own members: a tweet's fields of the same names (a replayed capture of
#: another producer's output has them) are dropped, never taken for the journal's
RESERVED = frozenset({"seq", "src", "pos", "crc"})


def _encoder() -> Callable[[Any], str]:
    """Compact ASCII JSON (lone surrogates and newlines escaped), as transform.encode_tweet.

    CPython's C encoder made once, without the circular-reference check that
    costs ``JSONEncoder.encode`` ~2 µs per tweet (a tweet parsed from JSON has no
    cycle; one that has raises ValueError all the same).
    """
    standard = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
    make = json.encoder.c_make_encoder
    if make is None:  # not CPython
        return standard.encode
    fast = make(None, standard.default, json.encoder.encode_basestring_ascii, None,
                standard.key_separator, standard.item_separator, False, False, True)

    def encode(value: Any) -> str:
        try:
            return "".join(fast(value, 0))
        except RecursionError:
            raise ValueError("cannot encode as JSON: nested too deeply or circular") from None

    return encode


#: a value as compact ASCII JSON (str); raises TypeError or ValueError
encode_json = _encoder()


def seal(obj: bytes) -> bytes:
    """A JSON object's bytes (``{...}``, at least one member) as a record:
    the same object with ``"crc"`` added last, then ``\\n``."""
    if not obj.startswith(b"{") or not obj.endswith(b"}") or obj == b"{}":
        raise ValueError("a record is a JSON object with at least one member")
    body = obj[:-1]
    return b"%s%s%08x%s" % (body, _CRC_OPEN, zlib.crc32(body), _CRC_CLOSE)


def seal_numbered(head: bytes, first: int, members: list[bytes]) -> list[bytes]:
    """The records ``head % (seq, member)`` for ``members`` numbered from ``first``,
    each sealed as :func:`seal` seals an object (one loop: a list of tweets at saturation
    pays no call per record)."""
    crc32, records = zlib.crc32, []
    for seq, fields in enumerate(members, start=first):
        body = head % (seq, fields)
        records.append(b"%s%s%08x%s" % (body, _CRC_OPEN, crc32(body), _CRC_CLOSE))
    return records


def unseal(record: bytes) -> bytes | None:
    """The JSON object a record holds, without its ``crc``; None when the record
    is torn or damaged (no newline, no seal, or a checksum that does not match)."""
    if (len(record) <= SEAL_BYTES or not record.endswith(_CRC_CLOSE)
            or record[-SEAL_BYTES:-SEAL_BYTES + len(_CRC_OPEN)] != _CRC_OPEN):
        return None
    body = record[:-SEAL_BYTES]
    if b"%08x" % zlib.crc32(body) != record[-11:-3]:
        return None
    return body + b"}"


@dataclass
class Scan:
    """What :func:`scan` found in a file of records."""

    records: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, record)
    end: int = 0  # where the valid records end: a torn tail starts here
    damaged: int = 0  # damaged records before ``end`` (skipped)
    torn: int = 0  # bytes after ``end``


def scan(data: bytes) -> Scan:
    """The valid records of ``data`` with their offsets.

    A record that fails :func:`unseal` but is followed by valid ones is
    damaged (counted, skipped); whatever follows the last valid record is a
    torn tail (its length in ``torn``), to be cut off before appending.
    """
    found = Scan()
    start = damaged_since_valid = 0
    while start < len(data):
        cut = data.find(b"\n", start)
        end = len(data) if cut < 0 else cut + 1
        record = data[start:end]
        if unseal(record) is not None:
            found.records.append((start, record))
            found.damaged += damaged_since_valid
            damaged_since_valid = 0
            found.end = end
        elif record.strip():
            damaged_since_valid += 1
        start = end
    found.torn = len(data) - found.end
    return found


def record_seq(record: bytes) -> int | None:
    """The ``seq`` of a journal record (``{"seq":N,...``), None if it has none there."""
    if not record.startswith(b'{"seq":'):
        return None
    end = record.find(b",", 7)
    digits = record[7:end]
    return int(digits) if end > 0 and digits.isdigit() else None
