"""How fast the Bluesky source turns Jetstream frames into wire tweets, on one core.

Usage: python -m bench.bluesky [--frames N] [--seconds S]

Frames are made by bench.jetstream_frames, seeded, in the shape Jetstream sends for
``wantedCollections=app.bsky.feed.post``: post creations of realistic length
(some with link, mention and tag facets, multi-byte text, replies and embeds),
with a few identity/account events, deletes and updates between them. Each
frame goes through :meth:`sources.bluesky.BlueskySource.on_frame` exactly as
stream.py runs it (parse, filter, keyword match, facet and handle stripping,
the wire tweet) into an ``emit`` that encodes the wire line
(:func:`transform.encode_tweet`), so the figure is frames -> wire lines.

Two mixes: ``realistic`` (about 1 % of the posts match the Covid keywords)
and ``all match`` (every post matches: the most work per frame). The figure
is frames per second of CPU time of this one thread, next to the whole
Bluesky network's post rate (about 50 posts/s in 2026).
"""

from __future__ import annotations

import argparse
import sys

from bench.bluesky_speed import table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    sys.stdout.write("\n".join(table(args.frames, args.seconds)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
