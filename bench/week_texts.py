"""The texts of a made-up week of stored posts, shared by the benchmarks that need one
(bench.report_week, bench.deletes): synthetic tweets cleaned as the job cleans them,
with words of a Zipf-distributed vocabulary around them, in 20 s batches that follow
a daily cycle."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np

import transform
from bench.tweets import TweetFactory

BATCH_SECONDS = 20
START = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # a Monday
SEED = 2026
POOL_SIZE = 20_000
VOCABULARY = 200_000


def text_pool(size: int = POOL_SIZE) -> list[str]:
    """Cleaned synthetic tweet texts (none empty): the openings and tails of real posts."""
    factory = TweetFactory(seed=SEED, pool_size=size)
    texts = (transform.clean_text(factory.next()["text"]) for _ in range(size))
    return [text for text in texts if text]


#: The head of the made-up vocabulary: real words, commonest first.
COMMON_WORDS = " ".join((
    "the to and of a in is for you on it that this with be are my not have at so but",
    "just get all was they we if your me what do from can now more people one about",
    "covid vaccine cases still today long masks sick health booster test positive new",
    "week symptoms hospital flu virus pandemic after back again home wave winter variant",
    "testing fever school doctor friends family shot year better days really time",
)).split()


def vocabulary(rng: np.random.Generator, size: int = VOCABULARY) -> list[str]:
    """``size`` distinct words, most common first: COMMON_WORDS, then made-up words
    of 1-4 syllables (some accented)."""
    syllables = [c + v for c in "bdklmnprstvz" for v in "aeiou"]
    syllables += ["ch", "sh", "th", "st", "tr", "an", "en", "in", "on", "ar", "er", "é", "ñ", "ö"]
    words: dict[str, None] = dict.fromkeys(COMMON_WORDS)
    while len(words) < size:
        parts = rng.choice(len(syllables), size=rng.integers(2, 5))
        words["".join(syllables[i] for i in parts)] = None
    return list(words)


def tweet_texts(count: int, rng: np.random.Generator) -> Iterator[str]:
    """``count`` texts: a pooled opening and tail with 2-12 words of a Zipf-distributed
    vocabulary around it (some capitalised, some with punctuation), so that almost
    every text is unique and the distinct words grow as in real posts (~110 chars)."""
    pool = text_pool()
    words = vocabulary(rng)
    ranks = np.arange(1, len(words) + 1)
    weights = 1.0 / ranks**1.05
    weights /= weights.sum()
    extra = rng.integers(2, 13, size=count)
    picks = rng.choice(len(words), size=int(extra.sum()), p=weights).tolist()
    styles = rng.integers(0, 20, size=len(picks)).tolist()
    templates = rng.integers(0, len(pool), size=count).tolist()
    at = 0
    for n, template in zip(extra.tolist(), templates, strict=True):
        chosen = []
        for pick, style in zip(picks[at:at + n], styles[at:at + n], strict=True):
            word = words[pick]
            if style == 0:
                word = word.capitalize()
            elif style in (1, 2):
                word += ","
            elif style == 3:
                word += "."
            elif style == 4:
                word += "!"
            chosen.append(word)
        at += n
        half = n // 2
        yield " ".join((*chosen[:half], pool[template], *chosen[half:]))


def tweets_per_batch(batches: int, total: int, rng: np.random.Generator) -> np.ndarray:
    """Tweets in each batch: a daily cycle (quiet at 04:00 UTC, busy at 16:00) with
    Poisson noise, scaled to about ``total``, at least one (empty batches are not stored)."""
    hours = np.arange(batches) * BATCH_SECONDS / 3600.0
    shape = 1.0 + 0.6 * np.sin(2 * np.pi * (hours - 10.0) / 24.0)
    mean = shape / shape.sum() * total
    return np.maximum(rng.poisson(mean), 1)


def pooled_texts(count: int, rng: np.random.Generator) -> Iterator[str]:
    """``count`` texts drawn from POOL_SIZE cleaned synthetic tweets, as a replayed
    sample file gives them: few distinct texts and words."""
    pool = text_pool()
    for pick in rng.integers(0, len(pool), size=count).tolist():
        yield pool[pick]
