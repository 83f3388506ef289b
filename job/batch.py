"""What one batch came to, and the two small memories the batch path keeps: the ids
seen lately (a source can deliver a post twice) and the quarantine of malformed lines.

Shared by both engines: whatever feeds :class:`job.writer.BatchWriter` a batch of
wire lines gets back a :class:`BatchStats`.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import transform
from counts.reading import CaseCount
from storage.ledger import Gap

SEEN_IDS_LIMIT = 200_000  # post ids remembered across batches to drop redeliveries


@dataclass(frozen=True)
class BatchStats:
    """What happened to one batch; passed to the ``on_batch`` hook."""

    batch_time: datetime
    lines: int
    kept: int
    empty: int
    malformed: int
    duplicates: int  # tweet ids seen before (a source delivered a tweet twice)
    total_case_count: int | None = None
    count_fresh: bool = False
    write_ms: float | None = None
    document_id: str | None = None
    parts: int = 0  # documents written (more than one only past 16 MB)
    spooled: bool = False  # the store was down: the documents wait in the spool
    out_of_order: int = 0  # sequenced tweets after a gap, dropped until resent
    resent: int = 0  # tweets the producer sent again that were handled already
    case_count_as_of: datetime | None = None  # the moment the count is for
    case_count_source: str | None = None  # "worldometers" or "who"
    deletes: int = 0  # delete records applied (authentic, each once)
    deleted: int = 0  # posts removed because their authors deleted them (batch, store, spool)
    forged: int = 0  # records without the control secret's mac (among malformed): never applied
    sealed_records: int = 0  # records that are not posts applied: deletes, coverage, gaps, filters
    gaps: tuple[Gap, ...] = ()  # the coverage gaps this batch's records told of

    def summary(self) -> str:
        """The one log line of this batch."""
        when = transform.batch_id(self.batch_time)
        dropped = (f"{self.empty} empty, {self.malformed} malformed, "
                   f"{self.duplicates} duplicate")
        if self.forged:
            dropped += f" ({self.forged} forged)"
        if self.resent:
            dropped += f", {self.resent} resent"
        if self.out_of_order:
            dropped += f", {self.out_of_order} after a gap"
        records = ""
        if self.sealed_records:
            records = f", {self.sealed_records} records"
            if self.deletes or self.deleted:
                records += f" ({self.deletes} deletes: {self.deleted} posts removed)"
        elif self.deleted:  # posts sent again after their delete
            records = f", {self.deleted} posts removed (deleted before)"
        if not self.kept:
            return (f"batch {when}: {self.lines} lines{records}, nothing to store ({dropped})"
                    + (", spooled (store down)" if self.spooled else ""))
        where = "spooled (store down)" if self.spooled else "write"
        parts = f" in {self.parts} parts" if self.parts > 1 else ""
        return (f"batch {when}: {self.lines} lines, {self.kept} kept ({dropped}){records}, "
                f"count {self.count_text()}, {where}{parts} {self.write_ms:.0f} ms")

    @property
    def reading(self) -> CaseCount:
        """The case count this batch was stored with."""
        return CaseCount(self.total_case_count, self.case_count_as_of,
                                self.case_count_source, self.count_fresh)

    def count_text(self) -> str:
        """``704,753,890 (worldometers, as of 2024-04-13, fetched now)``."""
        return self.reading.describe()


class RecentIds:
    """The last ``limit`` tweet ids seen (or post keys), oldest forgotten first."""

    def __init__(self, limit: int = SEEN_IDS_LIMIT) -> None:
        self._ids: OrderedDict[Hashable, None] = OrderedDict()
        self._limit = limit

    def __contains__(self, tweet_id: Hashable) -> bool:
        return tweet_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, tweet_id: Hashable) -> bool:
        """Remember ``tweet_id``; False if it was already there."""
        if tweet_id in self._ids:
            return False
        self._ids[tweet_id] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)
        return True

    def forget(self, tweet_ids: Iterable[Hashable]) -> None:
        """Undo :meth:`add` for ``tweet_ids`` (their batch was not stored)."""
        for tweet_id in tweet_ids:
            self._ids.pop(tweet_id, None)


class Quarantine:
    """Malformed lines kept with their reason in a JSON-lines file, up to ``max_bytes``."""

    MAX_BYTES = 10 * 1024 * 1024

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.not_kept = 0  # malformed lines past the size bound

    def add(self, batch_time: datetime, records: Iterable[transform.Record]) -> None:
        size = self.path.stat().st_size if self.path.exists() else 0
        entries = []
        for record in records:
            entry = json.dumps({"batch": transform.batch_id(batch_time), "reason": record.text,
                                "line": record.raw}) + "\n"
            if size + len(entry) > self.max_bytes:
                self.not_kept += 1
                continue
            size += len(entry)
            entries.append(entry)
        if entries:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.writelines(entries)
