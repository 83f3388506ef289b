"""How a job's rates are stepped, and when a step counts as sustained (no I/O here).

A job's run (:class:`Plan`) offers rates in a coarse pass, each step
``factor`` times the last, until one is not sustained (or, when the first
fails, down until one is); then a fine pass tries the geometric middle of the
last sustained and the first failed step until they are at most
:data:`FINE_RATIO` apart. :func:`evaluate` decides each :class:`Step`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

START_RATE = 1_000  # offered while a job starts; no step goes below it
FINE_RATIO = 1.10  # the fine pass ends when sustained and failed steps are this close
MAX_FINE_STEPS = 3


@dataclass
class Step:
    rate: int
    fine: bool = False  # a step of the fine pass
    offered: float = 0.0  # tweets/s the feeder actually offered while measured
    sent: float | None = None  # tweets/s the feeder wrote to the socket (None: not known)
    received: float = 0.0  # tweets/s Spark's receiver took (listener numRecords)
    processing_s: list[float] = field(default_factory=list)
    scheduling_s: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    producer_rss: int = 0
    spark_rss: int = 0
    refused: int = 0
    held_max: int = 0  # most tweets the producer held (waiting for an ack) while measured
    unstored: int = 0  # full job: measured batches with tweets whose document was not stored
    blocked_share: float = 0.0  # plain sender: share of the time its writes waited
    cpu_us_per_tweet: dict[str, float] = field(default_factory=dict)
    machine_cpu_share: float = 0.0  # of all cores, used by anything, while measured
    sustained: bool = False
    producer_limited: bool = False
    job_failed: bool = False  # the job stopped completing batches: restarted before the next
    why: str = ""


@dataclass
class Plan:
    """One job's run: what feeds it, its batch interval and how its rates are stepped."""

    name: str
    kind: str  # "bare" or "full"
    feeder: str  # "producer" or "plain"
    interval: float
    start: int  # the first rate offered
    factor: float  # each coarse step is this times the last
    ceiling: int  # no step above this
    warmup: int = 1  # batches after a rate change that are not measured
    measured: int = 3
    profile: bool = False
    receiver_max_rate: int | None = None  # None: the product's default
    engine: str = "dstream"  # the full job's --engine


def evaluate(step: Step, interval: float, max_rate: int = 0) -> None:
    """Decide whether ``step`` was sustained, and why not.

    ``max_rate``: the job's receiver takes at most this many lines a second
    (RECEIVER_MAX_RATE; 0: no cap), so past it a producer that sent less than
    it took was held back by the job, not slow itself.
    """
    problems = []
    receiver_pushed_back = step.blocked_share > 0.5
    if step.offered < 0.95 * step.rate:
        if receiver_pushed_back:
            problems.append(f"the receiver took only {step.offered:,.0f}/s (the sender "
                            f"waited on the socket {step.blocked_share:.0%} of the time)")
        else:
            problems.append(f"producer offered only {step.offered:,.0f}/s")
    if step.received < 0.95 * step.offered:
        if max_rate and step.offered > max_rate:
            problems.append(f"received {step.received:,.0f}/s of {step.offered:,.0f}/s "
                            f"(RECEIVER_MAX_RATE is {max_rate:,})")
        elif (step.sent is not None and step.sent < 0.95 * step.offered
                and step.received >= 0.95 * step.sent):
            # the receiver took what came; the producer's sender fell behind its journal
            problems.append(f"producer sent only {step.sent:,.0f}/s of the "
                            f"{step.offered:,.0f}/s it took")
        else:
            problems.append(f"received {step.received:,.0f}/s of {step.offered:,.0f}/s")
    if step.processing_s and statistics.median(step.processing_s) > interval:
        problems.append(f"batches take {statistics.median(step.processing_s):.2f} s "
                        f"> {interval:g} s")
    sched = step.scheduling_s
    if sched and (sched[-1] > interval or sched[-1] - sched[0] > interval / 2):
        problems.append(f"scheduling delay grows {sched[0]:.2f} -> {sched[-1]:.2f} s")
    if step.refused:
        problems.append(f"producer's journal full, {step.refused} refused")
    if step.unstored:
        problems.append(f"{step.unstored} of the batches measured failed and were not "
                        "stored (job.log says why)")
    step.sustained = not problems
    step.why = "; ".join(problems)
    # Spark kept up (batches in time, no backlog) and only the producer could not
    # offer more: it was too slow, or its journal was full
    spark_kept_up = not receiver_pushed_back and not any(
        p.startswith(("batches take", "scheduling delay", "received")) for p in problems)
    step.producer_limited = bool(problems) and spark_kept_up


def round_rate(rate: float) -> int:
    """``rate`` to three significant digits (22,361 -> 22,400)."""
    digits = max(0, int(math.log10(max(rate, 1))) - 2)
    return int(round(rate, -digits))


def find_limit(try_rate: Callable[[int, bool], Step], plan: Plan) -> None:
    """The coarse pass, then the fine one (see the module's docstring)."""
    low = high = None
    rate = plan.start
    while True:
        if try_rate(rate, False).sustained:
            low = rate
            if high is not None or rate * plan.factor > plan.ceiling:
                break  # came down to a sustained rate, or as high as this job goes
            rate = round_rate(rate * plan.factor)
        else:
            high = rate
            if low is not None or rate / plan.factor < START_RATE:
                break
            rate = round_rate(rate / plan.factor)  # the first step failed: go down
    if low is None or high is None:
        return
    for _ in range(MAX_FINE_STEPS):
        if high / low <= FINE_RATIO:
            break
        middle = round_rate(math.sqrt(low * high))
        if not low < middle < high:
            break
        if try_rate(middle, True).sustained:
            low = middle
        else:
            high = middle


