"""How fast the Bluesky source turns Jetstream frames into wire tweets, on one core.

Usage: python -m bench.bluesky [--frames N] [--seconds S]

Frames are made here, seeded, in the shape Jetstream sends for
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
import json
import random
import sys
import time
from typing import Any

import transform
from sources.bluesky import BlueskySource, KeywordMatcher

NETWORK_POSTS_PER_SECOND = 50
KEYWORDS = ("covid", "covid19", "covid-19", "coronavirus", "sars-cov-2")
_WORDS = ("the", "a", "today", "new", "people", "really", "think", "about", "world",
          "news", "vote", "music", "game", "photo", "love", "time", "city", "rain",
          "Impfung", "vacuna", "santé", "日本", "今日", "здоровье", "😷", "🙏", "🎉")
_COVID = ("covid", "COVID-19", "#Covid19", "coronavirus", "SARS-CoV-2")


def _post(rng: random.Random, n: int, match: bool) -> dict[str, Any]:
    words = rng.choices(_WORDS, k=rng.randint(8, 40))
    if match:
        words.insert(rng.randrange(len(words) + 1), rng.choice(_COVID))
    text = " ".join(words)
    facets = []
    if rng.random() < 0.3:  # a link shown shortened, found only by its facet
        link = f"example.com/{n}/article..."
        start = len(text.encode()) + 1
        text = f"{text} {link}"
        facets.append({"index": {"byteStart": start, "byteEnd": start + len(link)},
                       "features": [{"$type": "app.bsky.richtext.facet#link",
                                     "uri": f"https://example.com/{n}/article"}]})
    if rng.random() < 0.2:
        handle = f"@user{n % 997}.bsky.social"
        start = len(text.encode()) + 1
        text = f"{text} {handle}"
        facets.append({"index": {"byteStart": start, "byteEnd": start + len(handle.encode())},
                       "features": [{"$type": "app.bsky.richtext.facet#mention",
                                     "did": f"did:plc:user{n % 997}"}]})
    record: dict[str, Any] = {"$type": "app.bsky.feed.post",
                              "createdAt": "2026-11-30T08:00:01.000Z",
                              "langs": [rng.choice(("en", "de", "es", "ja", "pt"))],
                              "text": text}
    if facets:
        record["facets"] = facets
    if rng.random() < 0.4:
        parent = {"cid": "bafyreiparent", "uri": f"at://did:plc:p/app.bsky.feed.post/{n}"}
        record["reply"] = {"parent": parent, "root": parent}
    return {"did": f"did:plc:u{n % 5000:05d}", "time_us": 1_796_000_000_000_000 + n * 20_000,
            "kind": "commit",
            "commit": {"rev": f"3m{n:08d}", "operation": "create",
                       "collection": "app.bsky.feed.post", "rkey": f"3k{n:08d}",
                       "record": record, "cid": f"bafyrei{n:010d}"}}


def make_frames(count: int, match_share: float, seed: int = 2026) -> list[str]:
    """``count`` frames: ~95 % post creations (``match_share`` of them matching), the
    rest identity/account events, deletes and updates."""
    rng = random.Random(seed)
    frames = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.95:
            event = _post(rng, n, rng.random() < match_share)
        elif roll < 0.97:
            event = {"did": f"did:plc:u{n}", "time_us": 1_796_000_000_000_000 + n,
                     "kind": "identity", "identity": {"did": f"did:plc:u{n}", "seq": n}}
        elif roll < 0.99:
            event = {"did": f"did:plc:u{n}", "time_us": 1_796_000_000_000_000 + n,
                     "kind": "commit", "commit": {"rev": "r", "operation": "delete",
                                                  "collection": "app.bsky.feed.post",
                                                  "rkey": f"3k{n}"}}
        else:
            event = _post(rng, n, False)
            event["commit"]["operation"] = "update"
        frames.append(json.dumps(event, ensure_ascii=False))
    return frames


def measure(frames: list[str], seconds: float) -> tuple[float, int]:
    """Frames per CPU second through on_frame (repeating the frames for at least
    ``seconds`` of CPU), and the wire lines made per pass."""
    lines: list[bytes] = []

    def emit(tweet: dict[str, Any], position: Any = None) -> bool:
        lines.append(transform.encode_tweet(tweet))
        return True

    handled = 0
    started = time.process_time()
    while time.process_time() - started < seconds:
        source = BlueskySource(["ws://bench/subscribe"], KeywordMatcher(KEYWORDS), emit)
        lines.clear()
        for frame in frames:
            source.on_frame(frame)
        handled += len(frames)
    return handled / (time.process_time() - started), len(lines)


def table(frames: int = 20_000, seconds: float = 3.0) -> list[str]:
    """The benchmark's result as Markdown lines."""
    lines = [f"Jetstream frames -> wire tweets through `BlueskySource.on_frame`, one thread, "
             f"{frames:,} frames per pass, CPU time:", "",
             "| mix | frames/s (one core) | wire tweets per pass | mean frame bytes "
             f"| times the network's ~{NETWORK_POSTS_PER_SECOND} posts/s |",
             "|---|---:|---:|---:|---:|"]
    for name, share in (("realistic (~1 % match)", 0.01), ("all match", 1.0)):
        made = make_frames(frames, share)
        rate, emitted = measure(made, seconds)
        size = sum(len(frame.encode()) for frame in made) / len(made)
        lines.append(f"| {name} | {rate:,.0f} | {emitted:,} | {size:,.0f} "
                     f"| {rate / NETWORK_POSTS_PER_SECOND:,.0f} |")
    return lines


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
