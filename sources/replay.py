"""The replay source: a newline-delimited JSON file of tweets at a chosen rate.

Each line is an X API v2 stream payload or a bare tweet object (see
:func:`sources.tweet_from_payload`); the project's own sample file is
``samples/tweets.jsonl``. Offline, it stands in for a live source.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from sources import Emit, Tweet, tweet_or_reason

log = logging.getLogger(__name__)


class ReplaySource:
    """Replays a newline-delimited JSON file of tweets at a chosen rate.

    Each line is a v2 stream payload or a bare tweet object. ``rate`` is in
    tweets per second (0 = as fast as possible). With ``loop`` the file is
    replayed until stopped; on pass N >= 2 every id gets the suffix ``~N`` so
    that downstream deduplication by id keeps the looped tweets.

    After :meth:`run`, :attr:`emitted` and :attr:`skipped` (bad lines, every
    pass counted) say what happened.
    """

    #: If replay falls this far behind schedule, restart the schedule instead of bursting.
    MAX_LAG_SECONDS = 1.0

    def __init__(self, path: Path, rate: float, loop: bool) -> None:
        if rate < 0 or not math.isfinite(rate):
            raise ValueError("rate must be a finite number >= 0")
        self.path = Path(path)
        self.rate = rate
        self.loop = loop
        self.emitted = 0
        self.skipped = 0

    def run(self, emit: Emit, stop: threading.Event) -> int:
        """Emit the file's tweets with ``emit`` until done or ``stop`` is set.

        Returns the number of tweets emitted. Raises OSError if the file cannot
        be read.
        """
        self.emitted = self.skipped = 0
        schedule = _Schedule(self.rate, self.MAX_LAG_SECONDS)
        pass_number = 0
        while not stop.is_set():
            pass_number += 1
            emitted_before = self.emitted
            with self.path.open("rb") as handle:
                for tweet in self._tweets(handle, pass_number):
                    if not schedule.wait_turn(stop):
                        break
                    emit(tweet)
                    self.emitted += 1
            if not self.loop:
                break
            if self.emitted == emitted_before and not stop.is_set():
                log.warning("%s holds no tweets; nothing to loop over", self.path)
                break
        log.info(
            "replay of %s ended: %d tweets emitted, %d bad lines skipped, %d pass(es)",
            self.path, self.emitted, self.skipped, pass_number,
        )
        return self.emitted

    def _tweets(self, handle: BinaryIO, pass_number: int) -> Iterator[Tweet]:
        """The tweets of one pass through the file, ids suffixed from pass 2 on."""
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            tweet, reason = self._parse(raw)
            if tweet is None:
                self.skipped += 1
                level = logging.WARNING if pass_number == 1 else logging.DEBUG
                log.log(level, "%s:%d: skipped: %s", self.path, number, reason)
                continue
            if pass_number >= 2:
                tweet = {**tweet, "id": f"{tweet['id']}~{pass_number}"}
            yield tweet

    @staticmethod
    def _parse(raw: bytes) -> tuple[Tweet | None, str]:
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return None, "not UTF-8"
        except ValueError as err:
            return None, f"not JSON ({err.msg})" if hasattr(err, "msg") else "not JSON"
        except RecursionError:
            return None, "JSON nested too deeply"
        return tweet_or_reason(obj)


class _Schedule:
    """Paces emits at ``rate`` per second on the monotonic clock (0 = no pacing)."""

    def __init__(self, rate: float, max_lag: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._max_lag = max_lag
        self._next_due = time.monotonic()

    def wait_turn(self, stop: threading.Event) -> bool:
        """Wait until the next emit is due; False if ``stop`` was set first."""
        if self._interval:
            delay = self._next_due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return False
            if delay < -self._max_lag:  # fell far behind: do not burst to catch up
                self._next_due = time.monotonic()
            self._next_due += self._interval
        return not stop.is_set()
