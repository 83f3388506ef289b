"""What storing post fields (POST_FIELDS) costs per post: the executors' and the driver's
path with post fields off and on (not a test), and what a matching post's place in
the conversation costs the Bluesky source.

Usage: python -m bench.post_fields [--posts 200000] [--batch 10000] [--repeat 3]
                                   [--baseline DIR]

Bluesky-shaped wire lines (bench.tweets' synthetic texts with an ``at://`` id, a
``created_at``, a ``lang``, an ``author_id`` and a ``url``, as stream.py sends them,
and the conversation fields in the shares ``bench.post_fields_cost.SHARES`` gives:
half the posts replies, one in ten a quote, one in five a link...) go through what a
batch costs in Python, one core, CPU time:

1. executors: ``transform.partition_processor(fields)`` over the lines (parse, clean,
   pick the fields);
2. the records pickled and unpickled, as Spark ships them from a worker to the driver;
3. driver: ``BatchWriter.write_records`` (duplicates dropped, posts kept aligned,
   the document(s) built and split), into a store that BSON-encodes each document,
   as pymongo does before sending it.

The source's part: Jetstream frames with the same shares through ``read_event`` and
``wire_tweet`` (what a matching post costs the producer), and
``conversation_fields`` alone (the share of it that the conversation fields are).

``--batch`` posts a batch (10,000: 500 posts/s in 20 s batches). Each mode runs
``--repeat`` times, alternating, and the fastest run counts. ``--baseline DIR``
also times the off path of another checkout (e.g. the commit before post fields):
the same lines through its ``transform.process_partition`` and its
``BatchWriter``, each checkout in fresh processes, alternating. The machine is
shared and noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import sys

from bench.post_fields_cost import table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", metavar="DIR",
                        help="also time the off path of the checkout in DIR")
    args = parser.parse_args(argv)
    if min(args.posts, args.batch, args.repeat) < 1:
        parser.error("--posts, --batch and --repeat must be at least 1")
    sys.stdout.write("\n".join(table(args.posts, args.batch, args.repeat, args.baseline))
                     + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
