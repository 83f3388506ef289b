"""The replay source: a newline-delimited JSON file of tweets at a chosen rate.

Each line is an X API v2 stream payload or a bare tweet object (see
:func:`sources.tweet_from_payload`), or a delete event of X's compliance stream
(:func:`sources.deleted_post`), replayed in its place as a sealed delete record; the
project's own sample file is ``samples/tweets.jsonl``. Offline, it stands in for a
live source.

What it says of itself (:mod:`sources.coverage`): its filter is no keyword at all
(``{"source": "replay", "keywords": []}``: every post of the file is sent; a v2
payload's post carries the tags of its ``matching_rules`` as ``matched``, what
chose it when it was recorded). A file has no gaps: what one run did not read, the
next reads. Its spans are its reading time, one per run (its clock: when it handed
the posts over), with the lines, posts and posts accepted of that run; the time
between runs is no gap, as nothing was missed.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from sources import Emit, Tweet, deleted_post, matched_rules, tweet_or_reason
from sources.coverage import CoverageLedger, Seal
from sources.replay_position import ReplayPosition
from wire_records import delete_record

#: What takes a list of tweets with their positions (:meth:`utility.TweetServer.put_many`);
#: how many it accepted (a prefix)
EmitMany = Callable[[list[Tweet], list[Any]], int]
#: What waits for room after a refusal (:meth:`utility.TweetServer.wait_for_room`): True
#: once there is room, False when ``stop`` was set first (or no room will come)
WaitForRoom = Callable[[threading.Event], bool]

log = logging.getLogger(__name__)


class ReplaySource:
    """Replays a newline-delimited JSON file of tweets at a chosen rate.

    Each line is a v2 stream payload or a bare tweet object. ``rate`` is in
    tweets per second (0 = as fast as possible). With ``loop`` the file is
    replayed until stopped; on pass N >= 2 every id gets the suffix ``~N`` so
    that downstream deduplication by id keeps the looped tweets.

    With ``position_path`` the source remembers which file it replays and how
    far it got (the pass and the byte offset, at most every SAVE_SECONDS, after
    ``before_save``, which stream.py uses to make the journal durable first);
    each tweet is also handed to ``emit`` with the position after it, which
    the journal keeps in the tweet's own record. A replay stopped or killed in
    the middle of the file goes on at the next start exactly after the last
    tweet the journal holds (``resume_at``, from its records) or, if that is
    older, where the position file says; never from the top again. A replay
    that had reached the end emits nothing more (a restart after it must not
    send the file twice); with ``loop`` it goes on with the next pass. With
    ``from_start`` the file is replayed again from its top, as a new pass
    (the one after the last begun, its ids suffixed as a looped pass's are, so
    they are new posts downstream), however far an earlier run got.

    After :meth:`run`, :attr:`emitted` and :attr:`skipped` (bad lines, every
    pass counted) say what happened.
    """

    #: If replay falls this far behind schedule, restart the schedule instead of bursting.
    MAX_LAG_SECONDS = 1.0
    #: Tweets due within this many seconds are emitted together, at one wake-up.
    SLICE_SECONDS = 0.1
    #: With ``emit_many``, tweets are handed over at most this many at once.
    BATCH = 256
    #: The position file is rewritten at most this often.
    SAVE_SECONDS = 1.0
    POSITION_FILE = "replay-position.json"

    def __init__(self, path: Path, rate: float, loop: bool, *,
                 from_start: bool = False,
                 position_path: Path | None = None,
                 before_save: Callable[[], None] | None = None,
                 resume_at: Any = None,
                 seal: Seal | None = None,
                 ledger: CoverageLedger | None = None) -> None:
        """``seal`` makes each delete of the file a record (without it deletes are
        skipped as bad lines); ``ledger`` keeps its spans and its filter."""
        if rate < 0 or not math.isfinite(rate):
            raise ValueError("rate must be a finite number >= 0")
        self._seal = seal
        self.ledger = ledger
        #: lines read and posts among them (every pass), deletes accepted
        self.lines = self.posts = self.deletes = 0
        self._declared = False  # whether the filter went ahead of the first line
        if ledger is not None:
            ledger.counts = lambda: (self.lines, self.posts, self.emitted, 0)
        self.path = Path(path)
        self.rate = rate
        self.loop = loop
        self.from_start = from_start
        self.position_path = position_path
        self._where = ReplayPosition(self.path, position_path, every=self.SAVE_SECONDS,
                                     before_save=before_save, resume_at=resume_at)
        self.emitted = 0
        self.skipped = 0
        self._handing = _HandOver(self, lambda tweets, positions: len(tweets), 1, None,
                                  threading.Event())  # run() makes the real one

    @property
    def pauses(self) -> int:
        """Waits for room in the journal so far."""
        return self._handing.pauses

    @property
    def paused_seconds(self) -> float:
        """Seconds those waits took."""
        return self._handing.paused_seconds

    def run(self, emit: Emit, stop: threading.Event, *,
            emit_many: EmitMany | None = None,
            wait_for_room: WaitForRoom | None = None) -> int:
        """Emit the file's tweets with ``emit`` until done or ``stop`` is set.

        With ``emit_many`` (:meth:`utility.TweetServer.put_many`) the tweets
        are handed over a list at a time instead (same tweets, same positions,
        cheaper a tweet): those of a slice just before the schedule waits for
        the next, at most BATCH at once, and always before the position file is
        written.

        A tweet is emitted once it is accepted: ``emit`` returned True, or it is
        in the prefix ``emit_many`` took. One refused (the journal is full) is
        offered again, with the ones after it, once ``wait_for_room(stop)``
        returns True (:meth:`utility.TweetServer.wait_for_room`: the job has
        stored enough to make room); when it returns False (``stop`` was set,
        the journal closed), or without ``wait_for_room``, the replay ends
        there. So neither :attr:`emitted` nor the position file ever counts a
        tweet that was not accepted, and a restart goes on with the first one
        that was not.

        Returns the number of tweets emitted. Raises OSError if the file cannot
        be read.
        """
        self.emitted = self.skipped = 0
        try:
            return self._run(emit, stop, emit_many, wait_for_room)
        finally:
            if self.ledger is not None:
                self.ledger.close()

    def _run(self, emit: Emit, stop: threading.Event, emit_many: EmitMany | None,
             wait_for_room: WaitForRoom | None) -> int:
        handing = self._handing = _HandOver(
            self, emit_many if emit_many is not None else _one_at_a_time(emit),
            self.BATCH if emit_many is not None else 1, wait_for_room, stop)
        schedule = _Schedule(self.rate, self.MAX_LAG_SECONDS, self.SLICE_SECONDS)
        pass_number, offset, line = self._where.start(loop=self.loop,
                                                      from_start=self.from_start)
        finished = pass_number == 0
        if not finished:
            self._where.position = (pass_number, offset, line)
            self._save_position(force=True)  # the file's identity, before the first tweet
        while not finished and not handing.ending():
            emitted_before = self.emitted
            whole = False
            with self.path.open("rb") as handle:
                handle.seek(offset)
                for tweet, position in self._tweets(handle, pass_number, offset, line):
                    if (not schedule.wait_turn(stop, before_waiting=handing.hand_over)
                            or handing.halted):
                        break
                    if not handing.gather(tweet, [pass_number, *position, self._where.tag]):
                        break
                    self._save_position()
                else:
                    whole = True
            if not handing.hand_over():  # the tweets due so far, before the next pass (or the end)
                break
            if whole:
                self._where.position = (pass_number + 1, 0, 0)
                finished = not self.loop
            if not self.loop or handing.ending():
                break
            if self.emitted == emitted_before and offset == 0:
                log.warning("%s holds no tweets; nothing to loop over", self.path)
                break
            pass_number, offset, line = pass_number + 1, 0, 0
        self._save_position(force=True, finished=finished)
        log.info(
            "replay of %s ended: %d tweets emitted, %d bad lines skipped, %d pass(es)",
            self.path, self.emitted, self.skipped, pass_number,
        )
        return self.emitted

    def _tweets(self, handle: BinaryIO, pass_number: int, offset: int, line: int
                ) -> Iterator[tuple[Tweet, tuple[int, int]]]:
        """``(tweet, (offset, line) after it)`` of one pass through the file from
        ``offset`` (line ``line``); ids suffixed from pass 2 on."""
        for raw in handle:
            offset += len(raw)
            line += 1
            if not raw.strip():
                continue
            self.lines += 1
            tweet, reason = read_line(raw)
            if tweet is not None and "kind" in tweet and self._seal is None:
                tweet, reason = None, "a delete, and no control secret to seal it with"
            if tweet is None:
                self.skipped += 1
                level = logging.WARNING if pass_number == 1 else logging.DEBUG
                log.log(level, "%s:%d: skipped: %s", self.path, line, reason)
                continue
            if pass_number >= 2:  # a delete names the post of its own pass
                tweet = {**tweet, "id": f"{tweet['id']}~{pass_number}"}
            if "kind" in tweet:
                assert self._seal is not None
                tweet = self._seal(tweet)
            else:
                self.posts += 1
            yield tweet, (offset, line)

    def _save_position(self, *, force: bool = False, finished: bool = False) -> None:
        """Write the position file (at most every SAVE_SECONDS unless ``force``): the
        position after the last tweet accepted, never past it."""
        if self._where.due(force=force, finished=finished):
            self._handing.hand_over()  # what was gathered first: the file as fresh as can be
            self._where.save(force=force, finished=finished)

    def accepted(self, position: list[Any], lines: list[Tweet]) -> None:
        """``lines`` (tweets and delete records) were accepted, the last at ``position``."""
        self._where.position = (position[0], position[1], position[2])
        deletes = sum("kind" in line for line in lines)
        self.deletes += deletes
        self.emitted += len(lines) - deletes
        ledger = self.ledger
        if ledger is not None:
            ledger.note(int(time.time() * 1e6))
            ledger.tick()

    def declare(self) -> None:
        """Before the first line handed over: the filter in force, no keyword at all
        (the file is sent whole), and the run's span, counting from the run's start."""
        if self.ledger is not None and not self._declared:
            self._declared = True
            self.ledger.declare(keywords=[])
            self.ledger.open(str(self.path), int(time.time() * 1e6), counted=(0, 0, 0, 0))

    def journal_position(self) -> list[Any]:
        """The position after the last line accepted, as the journal keeps it in a
        record (the ledger's records carry it too: the journal's last record says
        where a restart goes on)."""
        return self._where.journaled()


def read_line(raw: bytes) -> tuple[Tweet | None, str]:
    """A replayed line's tweet (with what matched it), or delete record (not sealed
    yet), or why it has neither."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except ValueError as err:
        return None, f"not JSON ({err.msg})" if hasattr(err, "msg") else "not JSON"
    except RecursionError:
        return None, "JSON nested too deeply"
    deleted = deleted_post(obj)
    if deleted is not None:
        post_id, when = deleted
        return delete_record(post_id, when or datetime.now(UTC)), ""
    tweet, reason = tweet_or_reason(obj)
    if tweet is not None:
        matched = matched_rules(obj, {})
        if matched:
            tweet = {**tweet, "matched": matched}
    return tweet, reason


class _HandOver:
    """The tweets a replay gathered for ``put``, handed over until every one is
    accepted: a list of up to ``batch`` at a time and, whenever some are refused
    (the journal is full), again once ``wait_for_room(stop)`` says there is room.
    Each accepted prefix is reported to the replay (:meth:`ReplaySource.accepted`),
    so that its count and its position follow what was accepted, never more."""

    def __init__(self, replay: ReplaySource, put: EmitMany, batch: int,
                 wait_for_room: WaitForRoom | None, stop: threading.Event) -> None:
        self.replay = replay
        self.put = put
        self.batch = batch
        self.wait_for_room = wait_for_room
        self.stop = stop
        #: set when a refusal ended the replay (stop, the journal closed, or no way to wait)
        self.halted = False
        #: waits for room, and the seconds they took
        self.pauses = 0
        self.paused_seconds = 0.0
        self._tweets: list[Tweet] = []
        self._positions: list[Any] = []

    def ending(self) -> bool:
        return self.halted or self.stop.is_set()

    def gather(self, tweet: Tweet, position: list[Any]) -> bool:
        """Add a tweet, handing the list over once it holds ``batch``; False when the
        replay must end (see :meth:`hand_over`)."""
        self._tweets.append(tweet)
        self._positions.append(position)
        return len(self._tweets) < self.batch or self.hand_over()

    def hand_over(self) -> bool:
        """Hand the gathered tweets over until every one is accepted, waiting for room
        whenever some are refused. False when the replay must end, with those not
        accepted: stop, the journal closed, or no ``wait_for_room`` to wait with."""
        tweets, positions = self._tweets, self._positions
        if self.halted:
            return False
        while tweets:
            self.replay.declare()
            ledger = self.replay.ledger
            # the ledger's records waiting for room go first
            taken = (self.put(tweets[:], positions[:])  # theirs to keep
                     if ledger is None or not ledger.pending or ledger.flush() else 0)
            if taken:
                self.replay.accepted(positions[taken - 1], tweets[:taken])
                del tweets[:taken], positions[:taken]
            if tweets and not self._wait(positions[0]):
                self.halted = True
                return False
        return not self.stop.is_set()

    def _wait(self, refused: list[Any]) -> bool:
        """Wait for room after the tweet at ``refused`` (its position: pass, offset,
        line) was refused; True to offer it again. Each wait is logged and counted."""
        path = self.replay.path
        if self.wait_for_room is None or self.stop.is_set():
            if self.wait_for_room is None:
                log.warning("the journal refused a tweet (line %d of %s): the replay ends "
                            "there, and goes on from it at the next start", refused[2], path)
            return False
        self.pauses += 1
        self.replay._where.save(force=True)  # a restart goes on from here, however late
        log.warning("the journal is full (or the disk is): the replay waits for room, then "
                    "goes on with line %d of %s (pass %d)", refused[2], path, refused[0])
        began = time.monotonic()
        room = self.wait_for_room(self.stop)
        waited = time.monotonic() - began
        self.paused_seconds += waited
        if room:
            log.info("room in the journal again after %.1f s: the replay goes on", waited)
        return room


def _one_at_a_time(emit: Emit) -> EmitMany:
    """``emit`` as an :data:`EmitMany`: the tweets one by one, up to the first refused."""
    def emit_many(tweets: list[Tweet], positions: list[Any]) -> int:
        for taken, (tweet, position) in enumerate(zip(tweets, positions, strict=True)):
            if not emit(tweet, position):
                return taken
        return len(tweets)

    return emit_many


class _Schedule:
    """Paces emits at ``rate`` per second on the monotonic clock (0 = no pacing), in
    slices: one wake-up emits every tweet due within the next ``slice_seconds``
    (early by less than a slice, never late), so a fast replay wakes once a slice,
    not once a tweet, and the journal commits a slice at a time."""

    def __init__(self, rate: float, max_lag: float, slice_seconds: float = 0.0) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._max_lag = max_lag
        self._slice = slice_seconds
        self._next_due = self._slice_end = time.monotonic()

    def wait_turn(self, stop: threading.Event,
                  before_waiting: Callable[[], None] | None = None) -> bool:
        """Wait until the next emit is due (or falls in the current slice); False if
        ``stop`` was set first. ``before_waiting`` is called when a slice is over."""
        if self._interval:
            if self._next_due > self._slice_end:  # past this slice: wait for the next
                if before_waiting is not None:
                    before_waiting()
                delay = self._next_due - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return False
                now = time.monotonic()
                if delay < -self._max_lag:  # fell far behind: do not burst to catch up
                    self._next_due = now
                self._slice_end = max(now, self._next_due) + self._slice
            self._next_due += self._interval
        return not stop.is_set()
