"""The producer's CPU per post at saturation, without Spark.

    python -m bench.producer_cost [--posts N] [--batch K] [--way put|put_many|both]

Runs the real producer path, as ``bench/producer.py`` does flat out: the
benchmark's tweets (bench.tweets) through :class:`utility.TweetServer` and its
:class:`journal.Journal` (group commit, fdatasync), its sender (``sendfile``)
and its control port, as fast as the consumer takes them, with at most
``--max-pending`` tweets held. The consumer is a child process (its CPU is not
counted): it reads the posts socket and acknowledges what it read through
the job's own :class:`control.ControlClient` every ``--ack-seconds``.

Prints one line a way: the producer process's CPU µs per post (all its
threads, from the first put until every post is acknowledged), its split by
thread, the wall rate, and the cost of making the tweets alone (part of the
first figure, as it is of the benchmark's feeder column). ``put`` makes and
hands over the tweets one at a time (:meth:`TweetServer.put`,
``TweetFactory.next``), ``put_many`` in lists of ``--batch``
(:meth:`TweetServer.put_many`, ``TweetFactory.many``), as bench/producer.py
now does. ``make bench`` runs 3 rounds of 200,000 posts
(:func:`bench.producer_alone.table`) and judges the producer's 8 µs target on the
median of ``put_many``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bench.producer_alone import WAYS, make_cost, measure_ways


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=256,
                        help="tweets made and handed over at a time (as bench/producer.py)")
    parser.add_argument("--max-pending", type=int, default=50_000)
    parser.add_argument("--ack-seconds", type=float, default=0.1)
    parser.add_argument("--way", choices=(*WAYS, "both"), default="both")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each way, alternated")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    if args.posts < 1 or args.batch < 1 or args.max_pending < 1 or args.rounds < 1:
        parser.error("--posts, --batch, --max-pending and --rounds must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ways = WAYS if args.way == "both" else (args.way,)
    _say(f"making a tweet alone: {make_cost(min(args.posts, 100_000), args.seed):.2f} µs")

    def say(way: str, figures: dict[str, float]) -> None:
        split = ", ".join(f"{name} {value:.2f}" for name, value in figures.items()
                          if name not in ("cpu_us", "rate"))
        _say(f"{way:>8}: {figures['cpu_us']:.2f} CPU µs/post ({split}); "
             f"{figures['rate']:,.0f} posts/s")

    measure_ways(ways, args.rounds, args.posts, args.batch, args.max_pending,
                 args.ack_seconds, args.seed, each=say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
