"""The job's spool: what the store must receive, in order, while it cannot be reached.

Each record of the spool is one :class:`Operation`: a batch document to write (the
bare document, as every spool held before operations existed, so an older spool is
read as it was), or a delete of posts, a coverage record or a keyword set to apply
(``{"spool_op": <kind>, "body": {...}}``). ``storage.DurableStore`` appends to it
while the store is down and applies it in order once the store is back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson import json_util

from journal import RecordFile

log = logging.getLogger("storage")

SPOOL_JSON = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=True)

DOCUMENT = "document"  # body: a batch document, written (replacing one with its _id)
DELETE = "delete"  # body: {"keys": [post keys]}, the posts removed wherever stored
COVERAGE = "coverage"  # body: a coverage span or gap, upserted into the ledger
FILTER = "filter"  # body: a keyword set in force in a batch, recorded in the filters
OPERATION_KINDS = (DOCUMENT, DELETE, COVERAGE, FILTER)
#: the member that tells an operation's record from a bare document's
_KIND_MEMBER = "spool_op"


@dataclass(frozen=True)
class Operation:
    """One write the store must receive: ``kind`` (OPERATION_KINDS) and its ``body``."""

    kind: str
    body: dict[str, Any]

    @classmethod
    def document(cls, document: dict[str, Any]) -> Operation:
        return cls(DOCUMENT, document)

    @classmethod
    def delete(cls, keys: Iterable[bytes]) -> Operation:
        return cls(DELETE, {"keys": list(keys)})


def as_operation(item: dict[str, Any] | Operation) -> Operation:
    """``item`` as an Operation: a plain dict is a batch document."""
    return item if isinstance(item, Operation) else Operation.document(item)


class Spool:
    """An append-only file of the operations that could not reach the store yet.

    One operation per record, as canonical Extended JSON (dates, 64-bit integers
    and binary keep their BSON types) sealed with a checksum
    (:class:`journal.RecordFile`); each append is fsynced before it returns, so a
    spooled operation survives a crash of the job, and a record torn by a crash or
    a full disk is cut off when the spool is read, never joined. :meth:`rewrite`
    replaces the whole file at once (a crash leaves the old one or the new).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = RecordFile(self.path)

    def __len__(self) -> int:
        return len(self._file.read())  # the records, without decoding them

    def append(self, items: Sequence[dict[str, Any] | Operation]) -> None:
        """Add ``items`` (documents or operations) durably at the end; OSError leaves
        the spool as it was."""
        self._file.append(_encode(as_operation(item)) for item in items)

    def operations(self) -> list[Operation]:
        """Everything spooled, oldest first (a torn last record cut off)."""
        found = []
        for raw in self._file.read():
            try:
                value = json_util.loads(raw, json_options=SPOOL_JSON)
            except (ValueError, TypeError) as err:  # sealed, so never expected
                log.error("%s: skipping a record that cannot be read: %s", self.path, err)
                continue
            kind = value.get(_KIND_MEMBER) if isinstance(value, dict) else None
            if kind is None and isinstance(value, dict):
                found.append(Operation.document(value))
            elif kind in OPERATION_KINDS and isinstance(value.get("body"), dict):
                found.append(Operation(kind, value["body"]))
            else:
                log.error("%s: skipping a record that is no operation", self.path)
        return found

    def documents(self) -> list[dict[str, Any]]:
        """The batch documents spooled, oldest first."""
        return [op.body for op in self.operations() if op.kind == DOCUMENT]

    def rewrite(self, operations: Sequence[Operation]) -> None:
        """Replace the spool's content with ``operations`` at once. Raises OSError with
        the spool as it was."""
        self._file.replace(_encode(op) for op in operations)

    def clear(self) -> None:
        """Empty the spool (after every operation in it reached the store)."""
        self._file.clear()


def _encode(operation: Operation) -> bytes:
    value = (operation.body if operation.kind == DOCUMENT
             else {_KIND_MEMBER: operation.kind, "body": operation.body})
    return json_util.dumps(value, json_options=SPOOL_JSON).encode("utf-8")
