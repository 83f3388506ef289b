"""Jetstream frames, made here and seeded, in the shape Jetstream sends for
``wantedCollections=app.bsky.feed.post``: post creations of realistic length (some with
link and mention facets, multi-byte text, replies), with a few identity events, deletes
and updates between them."""

from __future__ import annotations

import json
import random
from typing import Any

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


def make_frames(count: int, match_share: float, seed: int = 2026,
                delete_share: float = 0.02) -> list[str]:
    """``count`` frames: post creations (``match_share`` of them matching), 2 %
    identity/account events, ``delete_share`` deletes of posts and 1 % updates (the
    default mix is ~95 % creations; the network's is about one delete for ten
    creations: ``delete_share=0.09``)."""
    rng = random.Random(seed)
    frames = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.97 - delete_share:
            event = _post(rng, n, rng.random() < match_share)
        elif roll < 0.99 - delete_share:
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
