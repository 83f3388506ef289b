"""The dataset's account of itself: the coverage ledger and the keyword sets in force.

Two collections next to the batches, written from the producer's sealed records
(docs/design.md, "Wire format") as they come through the same exactly-once
delivery as the posts:

* ``coverage``: one document a span of source time read without a break
  (``_id`` ``"span <span id>"``, replaced as the span grows) and one a gap, source
  time not read and why (``_id`` ``"gap <source> <from>"``);
* ``filters``: one document a keyword set (X: rule set) and producer, with the
  first and last batch time it was in force.

The job writes them (``storage.BatchStore.apply``); ``report.py coverage`` and
``report.py keywords`` read them, and the job's gap metric starts from the gaps of
the last 24 hours.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import wire_records

COVERAGE_COLLECTION = "coverage"
FILTERS_COLLECTION = "filters"
SPAN, GAP = "span", "gap"  # a coverage document's kind
#: how far back the job's gap metric looks
GAP_WINDOW = timedelta(hours=24)
#: a filter record's members that name the set (besides its source)
FILTER_MEMBERS = ("keywords", "rules")


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (MontyDB gives naive UTC ones)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def naive_utc(moment: datetime) -> datetime:
    """``moment`` as a naive UTC datetime: what every store kind compares correctly
    (pymongo encodes naive as UTC; MontyDB stores naive UTC)."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


# --- documents from records (pure) ---------------------------------------------------------


def coverage_document(kind: str, record: Mapping[str, Any], producer: str | None,
                      batch_time: datetime) -> dict[str, Any]:
    """The ``coverage`` document of an authentic coverage or gap record (its members as
    ``wire_records.parse_record`` gives them): times as BSON dates (ms), the producer
    that sent it and the batch that brought it."""
    start = wire_records.record_time(record["from"])
    document: dict[str, Any] = {
        "_id": (f"{SPAN} {record['span']}" if kind == wire_records.COVERAGE
                else f"{GAP} {record['source']} {record['from']}"),
        "kind": SPAN if kind == wire_records.COVERAGE else GAP,
        "source": record["source"], "host": record["host"],
        "from": start, "to": wire_records.record_time(record["to"]),
    }
    if kind == wire_records.COVERAGE:
        document["span"] = record["span"]
        document.update({name: record[name] for name in ("events", "posts", "matched")})
    else:
        document["reason"] = record["reason"]
    document["refused"] = record["refused"]
    document["producer"] = producer
    document["batch"] = as_utc(batch_time)
    return document


def filter_in_force(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a batch document names as its ``filter``: the filter record's source and its
    ``keywords`` (or X's ``rules``), as sent."""
    found = {"source": record["source"]}
    found.update({name: record[name] for name in FILTER_MEMBERS if name in record})
    return found


def filter_document(found: Mapping[str, Any], producer: str | None, batch_time: datetime
                    ) -> dict[str, Any]:
    """The ``filters`` document saying that ``found`` (:func:`filter_in_force`) was in
    force for ``producer`` in the batch at ``batch_time``. Its ``_id`` is the producer
    and a digest of the set (keywords in any order are the same set)."""
    identity = {name: sorted(json.dumps(v, sort_keys=True) for v in found[name])
                for name in FILTER_MEMBERS if name in found}
    digest = hashlib.sha256(json.dumps([found["source"], identity], sort_keys=True)
                            .encode("utf-8")).hexdigest()[:16]
    moment = as_utc(batch_time)
    return {"_id": f"{producer or '-'} {digest}", "producer": producer, **found,
            "first": moment, "last": moment}


# --- writing -------------------------------------------------------------------------------


class Keyed(Protocol):
    """A collection read and written one document at a time by ``_id``
    (:class:`KeyedCollection`, or ``embedded.KeyedFile`` on the embedded store)."""

    def get(self, value: str) -> dict[str, Any] | None: ...

    def put(self, document: dict[str, Any]) -> None: ...


class KeyedCollection:
    """:class:`Keyed` over a pymongo-style collection."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection

    def get(self, value: str) -> dict[str, Any] | None:
        return self.collection.find_one({"_id": value})

    def put(self, document: dict[str, Any]) -> None:
        self.collection.replace_one({"_id": document["_id"]}, document, upsert=True)


def upsert_coverage(collection: Keyed, document: dict[str, Any]) -> None:
    """Store a coverage span or gap, replacing the one with its ``_id`` unless that one
    reaches further (a record replayed or late never takes a span back)."""
    stored = collection.get(document["_id"])
    if stored is not None and isinstance(stored.get("to"), datetime) \
            and as_utc(stored["to"]) > as_utc(document["to"]):
        return
    collection.put(document)


def record_filter(collection: Keyed, document: dict[str, Any]) -> None:
    """Record that a keyword set was in force from ``document["first"]`` to
    ``document["last"]``: a new set is added, a known one has its first and last
    batch times widened to include these."""
    stored = collection.get(document["_id"])
    if stored is None:
        collection.put(document)
        return
    first, last = (as_utc(stored[name]) if isinstance(stored.get(name), datetime) else None
                   for name in ("first", "last"))
    merged = {**stored, "first": min(first or document["first"], document["first"]),
              "last": max(last or document["last"], document["last"])}
    if (merged["first"], merged["last"]) != (first, last):
        collection.put(merged)


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """Source time not read: ``start`` to ``end`` (aware UTC), why, posts refused."""

    source: str
    start: datetime
    end: datetime
    reason: str = ""
    refused: int = 0


def gaps(collection: Any, since: datetime | None = None, until: datetime | None = None
         ) -> list[Gap]:
    """The stored gaps that overlap ``since`` .. ``until`` (all without bounds), oldest
    first; a document of another shape is left out."""
    query: dict[str, Any] = {"kind": GAP}
    if since is not None:
        query["to"] = {"$gte": naive_utc(since)}
    if until is not None:
        query["from"] = {"$lt": naive_utc(until)}
    found = []
    for document in collection.find(query):
        start, end = document.get("from"), document.get("to")
        if isinstance(start, datetime) and isinstance(end, datetime):
            refused = document.get("refused")
            found.append(Gap(str(document.get("source", "")), as_utc(start), as_utc(end),
                             str(document.get("reason", "")),
                             refused if type(refused) is int else 0))
    return sorted(found, key=lambda gap: (gap.start, gap.end))


def filters_in_force(collection: Any) -> dict[str, dict[str, Any]]:
    """For each producer, the keyword set it last had in force (the ``filters``
    document with its latest ``last``), as :func:`filter_in_force` gives it: what a
    restarted job names in its batches until the producer sends another."""
    latest: dict[str, tuple[datetime, dict[str, Any]]] = {}
    for document in collection.find({}):
        producer, last = document.get("producer"), document.get("last")
        if not isinstance(producer, str) or not isinstance(last, datetime) \
                or not isinstance(document.get("source"), str):
            continue
        if producer not in latest or as_utc(last) > latest[producer][0]:
            latest[producer] = (as_utc(last), filter_in_force(document))
    return {producer: found for producer, (_, found) in latest.items()}


def union_seconds(intervals: Iterable[tuple[datetime, datetime]], start: datetime,
                  end: datetime) -> float:
    """Seconds of ``start`` .. ``end`` that at least one of ``intervals`` covers
    (overlapping intervals counted once)."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in intervals if a < end and b > start)
    total, reach = 0.0, start
    for a, b in clipped:
        if b <= reach:
            continue
        total += (b - max(a, reach)).total_seconds()
        reach = b
    return total


class RecentGaps:
    """The gaps of the last GAP_WINDOW the job knows of (loaded from the store at start,
    then each one a batch brings), for the metric of source time not covered."""

    def __init__(self, known: Iterable[Gap] = ()) -> None:
        self._lock = threading.Lock()
        self._gaps: dict[tuple[str, datetime], Gap] = {}
        self.add(known)

    def add(self, found: Iterable[Gap]) -> None:
        """Take ``found`` in (a gap of the same source and start replaces the earlier)."""
        with self._lock:
            for gap in found:
                self._gaps[(gap.source, gap.start)] = gap

    def uncovered_seconds(self, now: datetime) -> float:
        """The seconds of the GAP_WINDOW before ``now`` that a gap covers (gaps of
        several sources at once counted once); gaps that ended before it are forgotten."""
        start = now - GAP_WINDOW
        with self._lock:
            for key in [key for key, gap in self._gaps.items() if gap.end <= start]:
                del self._gaps[key]
            known = [(gap.start, gap.end) for gap in self._gaps.values()]
        return union_seconds(known, start, now)


def load_state(store: Any, spooled: Iterable[Any] = (), now: datetime | None = None
               ) -> tuple[dict[str, dict[str, Any]], list[Gap]]:
    """What a starting job must know of the ledger: the keyword set in force for each
    producer (:func:`filters_in_force`) and the gaps of the last GAP_WINDOW, from the
    store (``storage.BatchStore``) and from the ``spooled`` operations still waiting
    for it (``spool.Operation``, oldest first). Raises what the store raises."""
    found = filters_in_force(store.sibling(FILTERS_COLLECTION))
    recent = gaps(store.sibling(COVERAGE_COLLECTION), (now or datetime.now(UTC)) - GAP_WINDOW)
    latest = {producer: datetime.min.replace(tzinfo=UTC) for producer in found}
    for operation in spooled:
        body = operation.body
        if operation.kind == "filter" and isinstance(body.get("producer"), str):
            if as_utc(body["last"]) >= latest.get(body["producer"], as_utc(body["last"])):
                found[body["producer"]] = filter_in_force(body)
                latest[body["producer"]] = as_utc(body["last"])
        elif operation.kind == "coverage" and body.get("kind") == GAP:
            recent.append(Gap(body["source"], as_utc(body["from"]), as_utc(body["to"]),
                              body.get("reason", ""), body.get("refused", 0)))
    return found, recent
