"""The feeders' pace: the rate set by the commands on their stdin (``rate N``, ``rate max``,
``quit``), kept by emitting what is due; shared by bench.producer and bench.plain."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

TICK_SECONDS = 0.005  # how often the pace looks at what is due
REPORT_SECONDS = 0.25  # a feeder prints its status line this often
MAX_BURST_SECONDS = 0.5  # a producer that fell behind this much does not catch up in one go


class Control:
    """The offered rate, set from stdin; ``None`` = as fast as possible."""

    def __init__(self) -> None:
        self.rate: float | None = 0.0
        self.changed = threading.Event()
        self.quit = threading.Event()

    def read(self, stream: object) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            words = raw.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            if words[0] == "rate" and len(words) == 2:
                self.rate = None if words[1] == "max" else float(words[1])
                self.changed.set()
        self.quit.set()
        self.changed.set()

    def pace(self, emit: Callable[[int], None], flat_out: Callable[[], None]) -> None:
        """Until quit: ``emit(n)`` so that ``rate`` a second go out in all, or
        ``flat_out()`` again and again while the rate is "max"."""
        while not self.quit.is_set():
            self.changed.clear()
            rate = self.rate
            if rate == 0:
                self.changed.wait()
                continue
            start, done = time.monotonic(), 0
            while not self.changed.is_set():
                if rate is None:
                    flat_out()
                    continue
                due = int((time.monotonic() - start) * rate) - done
                if due > rate * MAX_BURST_SECONDS:  # fell behind: note it, don't burst
                    start += (due - rate * MAX_BURST_SECONDS) / rate
                    due = int(rate * MAX_BURST_SECONDS)
                if due > 0:
                    emit(due)
                    done += due
                else:
                    time.sleep(TICK_SECONDS)
