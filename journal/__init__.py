"""Crash-consistent files: checksummed records, the producer's journal, atomic writes.

Every record is one JSON object on one line, sealed with the CRC32 of its
bytes as its last member (:mod:`journal.records`); a record cut short by a
crash or damaged later is found and skipped, a torn tail cut off when its
file is opened, never appended to.

* :class:`Journal` (:mod:`journal.producer`): what ``stream.py`` accepted and
  the job has not stored yet, on disk in segment files
  (:mod:`journal.segments`). :meth:`Journal.put` (or :meth:`Journal.put_many`,
  a list with one trip through the lock) never waits for the disk: a
  committer thread (:mod:`journal.committer`) writes what was put and fsyncs
  it, many tweets at a time (a group commit, within milliseconds); a tweet is
  *accepted* once it is on disk, and only then is it sent. In memory there is
  only an index (seq -> byte range, 16 bytes a tweet) and the tweets not
  committed yet.
* :class:`RecordFile`: a small append-only file of records (the job's spool),
  :class:`Checkpoint` and :func:`write_atomically`: a whole small file or
  nothing (cursors, counts) (:mod:`journal.files`).

Every name importers use is here: ``from journal import Journal, seal, ...``.
"""

from journal.files import (
    DISK_FULL,
    PRIVATE_DIR,
    PRIVATE_FILE,
    Checkpoint,
    RecordFile,
    private_folder,
    sync_directory,
    write_all,
    write_atomically,
)
from journal.producer import Journal
from journal.records import RESERVED, SEAL_BYTES, Scan, encode_json, scan, seal, unseal
from journal.segments import Span, records_of

__all__ = [
    "DISK_FULL",
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "RESERVED",
    "SEAL_BYTES",
    "Checkpoint",
    "Journal",
    "RecordFile",
    "Scan",
    "Span",
    "encode_json",
    "private_folder",
    "records_of",
    "scan",
    "seal",
    "sync_directory",
    "unseal",
    "write_all",
    "write_atomically",
]
