"""How fast the Bluesky source turns Jetstream frames into wire tweets: frames per CPU
second of one thread through ``BlueskySource.on_frame``, as a Markdown table."""

from __future__ import annotations

import time
from typing import Any

import transform
from bench.jetstream_frames import make_frames
from sources.bluesky import BlueskySource, KeywordMatcher

NETWORK_POSTS_PER_SECOND = 50
KEYWORDS = ("covid", "covid19", "covid-19", "coronavirus", "sars-cov-2")


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
