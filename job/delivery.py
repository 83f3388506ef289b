"""What the job has stored, per producer: :class:`Delivery`.

Each producer (``src``) numbers its posts (``seq``) and keeps them until the job
acknowledges them on the control channel (:mod:`control`). The job admits each
line by its seq: new (store it), resent (already stored) or past a gap (an
earlier one is missing: ask for it again). Both engines' writers use it
(:mod:`job.writer`; the structured engine's ranges, :mod:`job.structured_sink`).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

NEW, RESENT, GAP = "new", "resent", "gap"


class Delivery:
    """Which of each producer's sequence numbers are handled, so that a tweet
    the producer sends again (it keeps everything until acknowledged) is
    stored once, and a gap is noticed and asked for again (go-back-N).

    ``committed[source]`` is the highest seq such that every seq up to it has
    been handled. Work on a batch happens in a copy; :meth:`commit` keeps it.

    A gap stays open for as long as the producer still holds its tweets,
    however many batches that takes (a backlog of batches queued in Spark
    does not matter): only the producer's ``held`` answer saying its oldest
    held seq is past the gap lets the job skip it. Those tweets were
    acknowledged before (by a job whose record of it was lost) or lost with
    the producer's journal; either way they cannot come again.
    """

    def __init__(self, committed: dict[str, int] | None = None) -> None:
        self.committed: dict[str, int] = dict(committed or {})
        self._batch: dict[str, int] = {}
        self._gaps: dict[str, int] = {}  # source -> smallest seq seen past a gap
        self._first_seen: dict[str, int] = {}  # new sources: their first seq this batch
        self._held: dict[str, tuple[int, int]] = {}  # source -> latest (first held, next)
        self._open: dict[str, int] = {}  # gaps not filled yet: source -> first seq past it
        #: seqs skipped because the producer no longer held them
        self.skipped = 0

    def begin(self) -> None:
        self._batch = dict(self.committed)
        self._gaps = {}
        self._first_seen = {}

    def admit(self, source: str, seq: int) -> str:
        """NEW (store it), RESENT (already handled) or GAP (an earlier seq is missing)."""
        if source not in self.committed:
            self._first_seen.setdefault(source, seq)
        done = self._batch.get(source, seq - 1)
        if seq <= done:
            return RESENT
        if seq > done + 1:
            self._gaps[source] = min(seq, self._gaps.get(source, seq))
            return GAP
        self._batch[source] = seq
        return NEW

    def batch_committed(self) -> dict[str, int]:
        """The committed seqs this batch has reached so far (for its documents)."""
        return {source: seq for source, seq in self._batch.items()
                if self.committed.get(source) != seq}

    def abort(self) -> None:
        """The batch was not stored: keep nothing of it, but remember where a new
        producer started, so that its resent tweets are not taken for a gap."""
        for source, seq in self._first_seen.items():
            self.committed.setdefault(source, seq - 1)

    def held(self, answers: dict[str, tuple[int, int]]) -> None:
        """The producers' latest ``held`` answers: ``{source: (first held, next seq)}``."""
        self._held.update(answers)

    def commit(self) -> tuple[dict[str, int], dict[str, int]]:
        """Keep the batch's progress; ``(acks, resends)`` to send to producers.

        ``acks`` maps every source to its committed seq (repeated each batch,
        so that an ack lost on the way is made good by the next one). A gap
        stays open until it is filled, and its resend is asked for every batch
        (the producer rate-limits them), so a lost request costs nothing.
        """
        self.committed = self._batch
        for source, past_gap in self._gaps.items():
            self._open[source] = min(past_gap, self._open.get(source, past_gap))
        resends = {}
        for source, past_gap in list(self._open.items()):
            wanted = self.committed[source] + 1
            if wanted >= past_gap:
                del self._open[source]  # filled: the resent tweets came
                continue
            first_held = self._held.get(source, (0, 0))[0]
            if first_held > wanted:
                gone = min(first_held, past_gap) - 1
                log.warning("tweets %s seq %d..%d are no longer held by the producer (stored "
                            "before, or lost with its journal); going on without them",
                            source, wanted, gone)
                self.skipped += gone - wanted + 1
                self.committed[source] = gone
            # what came past the gap was dropped: it comes again from here
            resends[source] = self.committed[source] + 1
        return dict(self.committed), resends
