"""What the dataset accounts for: per hour, the share of source time the stream read,
every gap with its reason (``report.py coverage``), and the keyword sets in force with
the batches they chose (``report.py keywords``), from the ledger's collections
(:mod:`ledger`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import storage
from analysis.batches import as_utc, iso_z
from storage import ledger

HOUR = timedelta(hours=1)
Interval = tuple[datetime, datetime]


@dataclass(frozen=True)
class Span:
    """Source time read without a break (a ``coverage`` document of kind span)."""

    source: str
    host: str
    start: datetime
    end: datetime
    events: int = 0
    posts: int = 0
    matched: int = 0
    refused: int = 0


@dataclass(frozen=True)
class Coverage:
    """The ledger over a window: its spans and gaps, and the share of each hour read."""

    spans: tuple[Span, ...]
    gaps: tuple[ledger.Gap, ...]
    hours: tuple[tuple[datetime, float], ...]  # (start of the hour, share covered)
    hosts: dict[tuple[str, datetime], str]  # (gap's source, start) -> its host


def read_spans(collection: Any, since: datetime | None, until: datetime | None
               ) -> list[Span]:
    """The stored spans that overlap ``since`` .. ``until``, oldest first."""
    query: dict[str, Any] = {"kind": ledger.SPAN}
    if since is not None:
        query["to"] = {"$gte": ledger.naive_utc(since)}
    if until is not None:
        query["from"] = {"$lt": ledger.naive_utc(until)}
    found = []
    for document in collection.find(query):
        start, end = document.get("from"), document.get("to")
        if not isinstance(start, datetime) or not isinstance(end, datetime):
            continue
        counts = {name: document.get(name) for name in ("events", "posts", "matched",
                                                         "refused")}
        found.append(Span(str(document.get("source", "")), str(document.get("host", "")),
                          as_utc(start), as_utc(end),
                          **{k: v if type(v) is int else 0 for k, v in counts.items()}))
    return sorted(found, key=lambda span: (span.start, span.end))


def _merged(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _overlap(first: list[Interval], second: list[Interval]) -> list[Interval]:
    """Where two merged interval lists overlap."""
    found, i, j = [], 0, 0
    while i < len(first) and j < len(second):
        start, end = max(first[i][0], second[j][0]), min(first[i][1], second[j][1])
        if start < end:
            found.append((start, end))
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return found


def hourly_share(spans: Iterable[Interval], gaps: Iterable[Interval], start: datetime,
                 end: datetime) -> list[tuple[datetime, float]]:
    """For each UTC hour that ``start`` .. ``end`` touches, the share of its part inside
    that window that a span covers and no gap does (a gap inside a span, such as
    posts refused while reading went on, is source time not covered)."""
    read = _merged(spans)
    lost = _overlap(read, _merged(gaps))
    hours = []
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        low, high = max(hour, start), min(hour + HOUR, end)
        length = (high - low).total_seconds()
        covered = (ledger.union_seconds(read, low, high)
                   - ledger.union_seconds(lost, low, high))
        hours.append((hour, round(covered / length, 4) if length > 0 else 0.0))
        hour += HOUR
    return hours


def read_coverage(store: storage.BatchStore, since: datetime | None = None,
                  until: datetime | None = None) -> Coverage:
    """The ledger over ``since`` .. ``until``: without bounds, from the first span or
    gap's start to the last one's end."""
    collection = store.sibling(ledger.COVERAGE_COLLECTION)
    spans = read_spans(collection, since, until)
    gaps = ledger.gaps(collection, since, until)
    hosts = {(str(d.get("source", "")), as_utc(d["from"])): str(d.get("host", ""))
             for d in collection.find({"kind": ledger.GAP}, {"source": 1, "from": 1,
                                                            "host": 1})
             if isinstance(d.get("from"), datetime)}
    bounds = [(s.start, s.end) for s in spans] + [(g.start, g.end) for g in gaps]
    if not bounds:
        return Coverage((), (), (), hosts)
    start = since or min(a for a, _ in bounds)
    end = until or max(b for _, b in bounds)
    hours = hourly_share([(s.start, s.end) for s in spans], [(g.start, g.end) for g in gaps],
                         start, end)
    return Coverage(tuple(spans), tuple(gaps), tuple(hours), hosts)


def coverage_json(coverage: Coverage) -> str:
    """``{"gaps": [{"from", "to", "reason", "refused"}, ...], "hours": [{"hour",
    "covered"}, ...]}``: times ISO 8601 UTC, ``covered`` from 0.0 to 1.0."""
    return json.dumps({
        "gaps": [{"from": iso_z(gap.start), "to": iso_z(gap.end), "reason": gap.reason,
                  "refused": gap.refused} for gap in coverage.gaps],
        "hours": [{"hour": iso_z(hour), "covered": share} for hour, share in coverage.hours],
    }, indent=1)


def coverage_text(coverage: Coverage, description: str) -> str:
    """The ledger as text: a line per hour with its share covered, then every gap."""
    if not coverage.hours:
        return (f"no coverage recorded in {description} (stream.py records it as it "
                "reads; an older stream.py records none)")
    lines = ["hour (UTC)        covered"]
    lines += [f"{hour:%Y-%m-%d %H:%M}  {share:7.1%}" for hour, share in coverage.hours]
    total = sum((s.end - s.start).total_seconds() for s in coverage.spans)
    lines.append(f"{len(coverage.spans)} span(s) read, {total / 3600:,.1f} h of source time; "
                 f"{len(coverage.gaps)} gap(s)" + (":" if coverage.gaps else ""))
    if coverage.gaps:
        rows = [("from", "to", "reason", "refused", "source", "host")]
        rows += [(iso_z(g.start), iso_z(g.end), g.reason, f"{g.refused:,}", g.source,
                  coverage.hosts.get((g.source, g.start), "")) for g in coverage.gaps]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines += [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
                  f"{r[3]:>{widths[3]}}  {r[4]:<{widths[4]}}  {r[5]}".rstrip() for r in rows]
    return "\n".join(lines)


# --- keyword sets ------------------------------------------------------------------------


@dataclass(frozen=True)
class KeywordSet:
    """One keyword set (X: rule set) and the first and last batch it was in force in."""

    source: str
    keywords: tuple[str, ...] | None
    rules: tuple[dict[str, str], ...] | None
    first: datetime
    last: datetime

    def terms(self) -> str:
        """``covid, covid19`` or the rules as ``tag: value`` (a replay's empty set:
        every post of its file)."""
        if self.keywords is not None:
            return ", ".join(self.keywords) or "none: every post of the file"
        return "; ".join(f"{rule.get('tag') or '-'}: {rule.get('value', '')}"
                         for rule in self.rules or ())


def keyword_sets(store: storage.BatchStore) -> list[KeywordSet]:
    """Each keyword set stored in ``filters``, whatever producer had it, with the first
    and last batch time it was in force, in order of first use."""
    grouped: dict[str, KeywordSet] = {}
    for document in store.sibling(ledger.FILTERS_COLLECTION).find({}):
        first, last = document.get("first"), document.get("last")
        if not isinstance(first, datetime) or not isinstance(last, datetime):
            continue
        identity = str(document.get("_id", "")).rpartition(" ")[2]
        keywords, rules = document.get("keywords"), document.get("rules")
        found = KeywordSet(str(document.get("source", "")),
                           None if keywords is None else tuple(map(str, keywords)),
                           None if rules is None else tuple(rules), as_utc(first),
                           as_utc(last))
        known = grouped.get(identity)
        if known is not None:
            found = KeywordSet(found.source, found.keywords, found.rules,
                               min(known.first, found.first), max(known.last, found.last))
        grouped[identity] = found
    return sorted(grouped.values(), key=lambda found: (found.first, found.last))


def keywords_json(sets: list[KeywordSet]) -> str:
    """``[{"source", "keywords" or "rules", "first", "last"}, ...]``, times ISO 8601 UTC."""
    return json.dumps([{"source": found.source,
                        **({"keywords": list(found.keywords)} if found.keywords is not None
                           else {"rules": list(found.rules or ())}),
                        "first": iso_z(found.first), "last": iso_z(found.last)}
                       for found in sets], indent=1)


def keywords_text(sets: list[KeywordSet], description: str) -> str:
    """A line per keyword set: its source, first and last batch time, its terms."""
    if not sets:
        return (f"no keyword set recorded in {description} (stream.py sends the one it "
                "uses when it starts; an older stream.py sends none)")
    rows = [("first batch (UTC)", "last batch (UTC)", "source", "keywords or rules")]
    rows += [(f"{s.first:%Y-%m-%d %H:%M:%S}", f"{s.last:%Y-%m-%d %H:%M:%S}", s.source,
              s.terms()) for s in sets]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}"
                     for r in rows)
