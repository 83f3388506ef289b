"""Small crash-consistent files: whole-file atomic writes, a source's checkpoint, the spool.

* :func:`write_atomically`: a whole small file or nothing (cursors, counts).
* :class:`Checkpoint`: how far a source got, rewritten whole now and then.
* :class:`RecordFile`: a small append-only file of records (the job's spool).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from journal.records import scan, seal, unseal

log = logging.getLogger("journal")  # the journal's one logger: its lines read as before

#: errors that mean "no room on the disk" (ENOSPC), a quota, or a file size limit
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


def write_atomically(path: Path, text: str, mode: int = PRIVATE_FILE) -> None:
    """Write ``path`` whole or not at all: a crash or a full disk leaves the old
    content or the new, never a mix. Raises OSError (the old content stays)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def sync_directory(path: Path) -> None:
    """fsync a folder, so that a file created, renamed or removed in it stays so."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_folder(path: Path) -> Path:
    """``path`` created if needed, readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_DIR)
    return path


class Checkpoint:
    """A small file recording how far a source got (Jetstream's cursor, the replay's
    position), rewritten whole (:func:`write_atomically`) at most every ``every``
    seconds, each time after ``before``: stream.py makes its journal durable
    there, so the file never claims more than the journal holds.

    :meth:`save` never raises: a failure (a full disk) keeps the previous file,
    and is logged once until a save works again.
    """

    def __init__(self, path: Path, what: str, *, every: float = 1.0,
                 before: Callable[[], None] | None = None) -> None:
        self.path = Path(path)
        self.what = what
        self.every = every
        self.before = before
        self._next = 0.0
        self._failing = False

    def due(self) -> bool:
        """True when :meth:`save` would write now (``every`` seconds have passed)."""
        return time.monotonic() >= self._next

    def save(self, text: str, *, force: bool = False) -> bool:
        """Write ``text`` if due (or ``force``); True when it was written."""
        if not force and not self.due():
            return False
        self._next = time.monotonic() + self.every
        try:
            if self.before is not None:
                self.before()
            write_atomically(self.path, text)
        except OSError as err:
            if not self._failing:
                log.warning("cannot save the %s to %s: %s; trying again", self.what,
                            self.path, err.strerror or err)
            self._failing = True
            return False
        if self._failing:
            log.info("the %s is saved to %s again", self.what, self.path)
        self._failing = False
        return True


class RecordFile:
    """An append-only file of sealed records, durable on each append.

    At open a torn or damaged tail is cut off (and damaged records before it
    skipped), so a crash at any byte leaves the records appended before it.
    An append that fails (a full disk) is undone before the error is raised.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.damaged = 0  # damaged records skipped by the last read
        self._records: list[bytes] | None = None

    def read(self) -> list[bytes]:
        """The objects of the valid records, oldest first (the torn tail cut off)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        found = scan(data)
        if found.torn:
            log.warning("%s: cutting off a torn last record (%d bytes)", self.path, found.torn)
            with self.path.open("r+b") as handle:
                handle.truncate(found.end)
                os.fsync(handle.fileno())
        if found.damaged:
            log.error("%s: %d damaged record(s) skipped", self.path, found.damaged)
        self.damaged = found.damaged
        return [obj for _, record in found.records if (obj := unseal(record)) is not None]

    def append(self, objects: Iterable[bytes]) -> None:
        """Seal and append ``objects``, then fsync. Raises OSError with the file
        as it was before (a partial write is cut off again)."""
        data = b"".join(seal(obj) for obj in objects)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
        try:
            size = os.fstat(fd).st_size
            try:
                write_all(fd, data)
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    def replace(self, objects: Iterable[bytes]) -> None:
        """Make the file hold the records of ``objects`` only, at once
        (:func:`write_atomically`: a crash leaves the old records or the new). Raises
        OSError with the file as it was."""
        data = b"".join(seal(obj) for obj in objects)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, data.decode("utf-8"))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (os.write may take part of it). Raises OSError."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
