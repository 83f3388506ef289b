"""Which file a replay replays and how far it got: the replay's position file.

:class:`ReplayPosition` holds the position after the last line the journal accepted
(the pass, the byte offset and the line of the next line), writes it in a small
file beside the journal (at most every so often, after the journal is made durable,
so that it never claims more than the journal holds), and at start decides where a
replay goes on from it and from the journal's last record
(:class:`sources.replay.ReplaySource` says what each case means).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from journal import Checkpoint

log = logging.getLogger("sources.replay")  # the replay's one logger

Position = tuple[int, int, int]  # (pass, byte offset of the next line, lines before it)


class ReplayPosition:
    """The position file of a replay of ``path`` (none kept without ``position_path``).

    ``resume_at`` is the journal's last record's ``pos``, whatever wrote it:
    ``[pass, offset, line, tag]`` when it was this file's (:attr:`tag`)."""

    def __init__(self, path: Path, position_path: Path | None, *, every: float,
                 before_save: Callable[[], None] | None = None, resume_at: Any = None) -> None:
        self.path = path
        self.position_path = position_path
        self._checkpoint = (None if position_path is None else
                            Checkpoint(position_path, "replay position", every=every,
                                       before=before_save))
        self._resume_at = resume_at
        self._identity_tag: str | None = None
        #: after the last line accepted: what the file may say
        self.position: Position = (1, 0, 0)
        self._saved: Position | None = None

    def identity(self) -> dict[str, Any]:
        """The replayed file's name, size and modification time."""
        info = self.path.stat()
        return {"file": str(self.path.resolve()), "size": info.st_size,
                "mtime_ns": info.st_mtime_ns}

    @property
    def tag(self) -> str:
        """A short mark of this file's identity, in each position handed to the journal:
        a position another file left in the journal is never taken for this one's."""
        if self._identity_tag is None:
            digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode())
            self._identity_tag = digest.hexdigest()[:8]
        return self._identity_tag

    def journaled(self) -> list[Any]:
        """:attr:`position` as the journal keeps it in a record (with :attr:`tag`)."""
        return [*self.position, self.tag]

    def start(self, *, loop: bool, from_start: bool) -> Position:
        """``(pass, offset, line)`` to start from: where the last run stopped, when
        it replayed this same file and did not finish it, pass 0 when it finished
        it; else the top. With ``from_start``, the top of the pass after the last
        one begun."""
        top = (1, 0, 0)
        if self.position_path is None or not self.position_path.exists():
            return top
        try:
            saved = json.loads(self.position_path.read_text(encoding="utf-8"))
            same = {key: saved[key] for key in ("file", "size", "mtime_ns")} == self.identity()
            position = (int(saved["pass"]), int(saved["offset"]), int(saved["line"]))
            finished = bool(saved.get("finished"))
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("ignoring %s (%s): replaying from the top", self.position_path, err)
            return top
        if not same or position[0] < 1 or min(position) < 0:
            return top
        if finished and from_start:  # the position is the next pass's top already
            log.info("%s was replayed to its end by an earlier run: --from-start replays it "
                     "again as pass %d", self.path, position[0])
            self._saved = position
            return position
        if finished and not loop:
            log.warning("%s was replayed to its end by an earlier run: nothing more to send "
                        "(--from-start replays it again as new posts)", self.path)
            self.position = self._saved = position  # kept as it is, finished
            return 0, 0, 0
        if finished:  # --loop: the next pass (its ids get their own suffix)
            log.info("%s was replayed to its end by an earlier run: looping from pass %d",
                     self.path, position[0])
            self._saved = position
            return position
        journaled = self._resume_at  # [pass, offset, line, this file's tag], if ours
        if (isinstance(journaled, list) and len(journaled) == 4
                and journaled[3] == self.tag
                and all(type(n) is int and n >= 0 for n in journaled[:3])):
            position = max(position, (journaled[0], journaled[1], journaled[2]))
        if from_start:
            log.info("--from-start: replaying %s from its top as pass %d (an earlier run got "
                     "to line %d of pass %d)", self.path, position[0] + 1, position[2] + 1,
                     position[0])
            return position[0] + 1, 0, 0
        log.info("resuming the replay of %s where it stopped: pass %d, line %d", self.path,
                 position[0], position[2] + 1)
        self._saved = position
        return position

    def due(self, *, force: bool = False, finished: bool = False) -> bool:
        """Whether :meth:`save` would write now: there is a file, something new to say
        (or ``finished``), and its time has come (or ``force``)."""
        if self._checkpoint is None or (self.position == self._saved and not finished):
            return False
        return force or self._checkpoint.due()

    def save(self, *, force: bool = False, finished: bool = False) -> None:
        """Write :attr:`position`, the position after the last line accepted (at most
        every ``every`` seconds unless ``force``)."""
        if self._checkpoint is None or (self.position == self._saved and not finished):
            return
        text = json.dumps({**self.identity(), "pass": self.position[0],
                           "offset": self.position[1], "line": self.position[2],
                           "finished": finished})
        if self._checkpoint.save(text, force=force):
            self._saved = self.position
