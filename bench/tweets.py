"""Realistic synthetic tweets for the benchmark: X API v2 shape, seeded, written for it.

:class:`TweetFactory` makes bare v2 tweet objects (``id``, ``text``,
``created_at``, ``lang``, ``author_id``, ``edit_history_tweet_ids``, and
``referenced_tweets`` for retweets) whose texts mix what the cleaning rules
have to deal with: hashtags, t.co and www URLs, mentions (and e-mail
addresses that are not mentions), emoji sequences (ZWJ families, flags, skin
tones, keycaps, variation selectors), the X API's HTML entities, newlines and
tabs, eight scripts, ~10 % retweets (``RT @handle: ...``), a few tweets that
clean to nothing and ~0.5 % redeliveries of an earlier id.

Texts are built once into a pool (``pool_size``) and reused with fresh ids,
so making a tweet costs about a microsecond and the producer's own cost stays
small next to the pipeline's. ``stamp`` puts the moment of sending into the
text as a last token, ``[bench:<microseconds since the epoch>]``, which
cleaning keeps, so the store can tell how long each tweet took to be stored.
``numbered=True`` makes every tweet unique and countable in the store: no
redelivered ids, and each text carries ``[n:<k>]`` for the k-th tweet made
(0, 1, 2, ...; cleaning keeps it too).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

SEED = 20_26
STAMP_PREFIX = "[bench:"
NUMBER_PREFIX = "[n:"

_OPENINGS = {
    "en": [
        "Vaccination centres stay open late this week",
        "Day {n} of isolation, fever finally gone",
        "New daily case count in our region: {num} confirmed",
        "Hospitals report fewer admissions than last month",
        "Remember to test before visiting grandparents",
        "Booster appointments are available from Monday",
        "Schools move to hybrid classes after an outbreak",
        "The county dashboard was updated at {h}:{m:02d}",
    ],
    "es": [
        "Nuevos casos confirmados hoy en la ciudad: {num}",
        "Los centros de vacunación abren también el sábado",
        "Día {n} de cuarentena y sigo sin olfato",
        "¿Alguien sabe dónde hacen pruebas gratuitas?",
    ],
    "fr": [
        "Les hôpitaux signalent moins d'admissions cette semaine",
        "Port du masque recommandé dans les transports à partir de lundi",
        "Jour {n} d'isolement, ça va mieux",
    ],
    "de": [
        "Die Inzidenz ist wieder gestiegen, bitte vorsichtig sein",
        "Impfzentrum hat heute bis 22 Uhr geöffnet",
        "Tag {n} in Quarantäne und der Geschmackssinn fehlt noch",
    ],
    "pt": [
        "Campanha de vacinação começa amanhã nos postos de saúde",
        "Casos de covid voltam a subir no estado: {num} novos",
    ],
    "hi": [
        "आज शहर में {num} नए मामले दर्ज किए गए",
        "कृपया मास्क पहनें और हाथ धोते रहें",
    ],
    "ar": [
        "تم تسجيل {num} إصابة جديدة اليوم",
        "مراكز التطعيم مفتوحة حتى المساء",
    ],
    "ja": [
        "本日の新規感染者数は{num}人でした",
        "ワクチン接種の予約が始まりました",
    ],
    "zh": [
        "今天新增确诊病例{num}例",
        "请大家继续佩戴口罩\uff0c注意手部卫生",
    ],
    "ru": [
        "Сегодня выявлено {num} новых случаев",
        "Пункты вакцинации работают до вечера",
    ],
}
_LANGS = [("en", 48), ("es", 12), ("fr", 7), ("de", 6), ("pt", 7), ("hi", 5), ("ar", 4),
          ("ja", 5), ("zh", 3), ("ru", 3)]
_HASHTAGS = ["#COVID19", "#Coronavirus", "#covid", "#StayHome", "#MaskUp", "#VaccinesWork",
             "#Covid_19", "#Omicron", "#SaludPública", "#コロナ", "#коронавирус", "#Santé"]
_MENTIONS = ["@WHO", "@CDCgov", "@HealthDeskDaily", "@city_council", "@dr_lopez_md",
             "@NHS_England", "@ministerio_salud", "@a", "@this_is_fifteen"]
_EMOJI = ["😷", "💉", "💪🏽", "👍🏿", "🙏", "❤️", "🦠", "😭", "👨\u200d👩\u200d👧\u200d👦",
          "👩🏻\u200d⚕️", "🏳️\u200d🌈", "🇺🇸", "🇮🇳", "🇧🇷", "🇯🇵", "🏴\U000e0067\U000e0062"
          "\U000e0065\U000e006e\U000e0067\U000e007f", "1️⃣", "#️⃣", "☕", "⏳", "✅"]
_TAILS = [
    "Stay safe everyone!", "Please share.", "Details below:", "More at the link.",
    "Thread 👇", "Fingers crossed &amp; masks on.", "Cases &gt; last week, deaths &lt; last week.",
    "Questions? Write to info@health.example.org", "Source: regional health office.",
    "(updated)", "Thank you nurses &amp; doctors", "",
]


def _weighted_langs() -> list[str]:
    return [lang for lang, weight in _LANGS for _ in range(weight)]


class TweetFactory:
    """Seeded synthetic tweets; :meth:`next` gives one tweet object (a new dict)."""

    RETWEET_SHARE = 0.10
    DUPLICATE_SHARE = 0.005  # redeliveries of an id already sent
    EMPTY_SHARE = 0.01  # texts that clean to nothing (only emoji, links and mentions)

    def __init__(self, seed: int = SEED, pool_size: int = 20_000,
                 numbered: bool = False) -> None:
        self._rng = random.Random(seed)
        self._numbered = numbered
        langs = _weighted_langs()
        self._pool = [self._make_text(langs) for _ in range(pool_size)]
        self._next_id = 1_860_000_000_000_000_000
        self._recent: list[str] = []  # ids that may be redelivered
        self._index = 0

    def _make_text(self, langs: list[str]) -> tuple[str, str, bool]:
        """``(lang, text, stamped)``: texts that must clean to nothing get no stamp."""
        rng = self._rng
        lang = rng.choice(langs)
        if rng.random() < self.EMPTY_SHARE:
            parts = [rng.choice(_MENTIONS), rng.choice(_EMOJI), "https://t.co/"
                     + "".join(rng.choices("abcdefXYZ0123456789", k=10))]
            return lang, " ".join(parts), False
        opening = rng.choice(_OPENINGS[lang]).format(
            n=rng.randint(1, 30), num=f"{rng.randint(100, 99_999):,}",
            h=rng.randint(0, 23), m=rng.randint(0, 59))
        words = [opening]
        if rng.random() < 0.35:
            words.append(rng.choice(_MENTIONS))
        if rng.random() < 0.5:
            words.append("".join(rng.choices(_EMOJI, k=rng.randint(1, 3))))
        if rng.random() < 0.25:
            words.append("\n\n" if rng.random() < 0.7 else "\t")
        words.append(rng.choice(_TAILS))
        if rng.random() < 0.45:
            words.append("https://t.co/" + "".join(rng.choices("abcdefghXYZ0123456789", k=10)))
        elif rng.random() < 0.1:
            words.append("www.example-health.org/booster?ref=tw&amp;lang=" + lang)
        words.extend(rng.sample(_HASHTAGS, k=rng.randint(0, 3)))
        text = " ".join(w for w in words if w)
        if rng.random() < self.RETWEET_SHARE:
            text = f"RT {rng.choice(_MENTIONS)}: {text}"
        return lang, text[:280], True

    def next(self, stamp: float | None = None) -> dict[str, Any]:
        """The next tweet; with ``stamp`` (epoch seconds) its text ends with the send time."""
        rng = self._rng
        lang, text, stamped = self._pool[self._index % len(self._pool)]
        self._index += 1
        if self._numbered:
            text = f"{text} {NUMBER_PREFIX}{self._index - 1}]"
        if self._recent and not self._numbered and rng.random() < self.DUPLICATE_SHARE:
            tweet_id = rng.choice(self._recent)
        else:
            self._next_id += rng.randint(1, 4_000_000)
            tweet_id = str(self._next_id)
            if self._index % 97 == 0:
                self._recent.append(tweet_id)
                if len(self._recent) > 500:
                    del self._recent[:250]
        if stamp is not None and (stamped or self._numbered):
            text = f"{text} {STAMP_PREFIX}{int(stamp * 1_000_000)}]"
        tweet: dict[str, Any] = {
            "id": tweet_id,
            "text": text,
            "created_at": "2026-11-28T23:07:46.000Z",
            "lang": lang,
            "author_id": str(1_480_000_000_000_000_000 + self._index % 100_000),
            "edit_history_tweet_ids": [tweet_id],
        }
        if text.startswith("RT @"):
            tweet["referenced_tweets"] = [{"type": "retweeted", "id": str(self._next_id - 7)}]
        return tweet

    def many(self, count: int, stamp: float | None = None) -> list[dict[str, Any]]:
        """The next ``count`` tweets, the same as ``count`` calls of :meth:`next`, made
        at about half the cost (the producer's flat-out loop makes hundreds at once)."""
        rng, pool, numbered, recent = self._rng, self._pool, self._numbered, self._recent
        random, getrandbits = rng.random, rng.getrandbits
        stamp_tail = (None if stamp is None
                      else f" {STAMP_PREFIX}{int(stamp * 1_000_000)}]")
        made = []
        for index in range(self._index + 1, self._index + count + 1):  # next's _index after
            lang, text, stamped = pool[(index - 1) % len(pool)]
            if numbered:
                text = f"{text} {NUMBER_PREFIX}{index - 1}]"
            if recent and not numbered and random() < self.DUPLICATE_SHARE:
                tweet_id = rng.choice(recent)
            else:
                step = getrandbits(22)  # rng.randint(1, 4_000_000), drawn as it draws
                while step >= 4_000_000:
                    step = getrandbits(22)
                self._next_id += step + 1
                tweet_id = str(self._next_id)
                if index % 97 == 0:
                    recent.append(tweet_id)
                    if len(recent) > 500:
                        del recent[:250]
            if stamp_tail is not None and (stamped or numbered):
                text += stamp_tail
            tweet: dict[str, Any] = {
                "id": tweet_id,
                "text": text,
                "created_at": "2026-11-28T23:07:46.000Z",
                "lang": lang,
                "author_id": str(1_480_000_000_000_000_000 + index % 100_000),
                "edit_history_tweet_ids": [tweet_id],
            }
            if text.startswith("RT @"):
                tweet["referenced_tweets"] = [{"type": "retweeted",
                                               "id": str(self._next_id - 7)}]
            made.append(tweet)
        self._index += count
        return made

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.next()


def stamp_of(cleaned: str) -> float | None:
    """The send time (epoch seconds) a stamped tweet carries after cleaning, or None."""
    at = cleaned.rfind(STAMP_PREFIX)
    if at == -1 or not cleaned.endswith("]"):
        return None
    digits = cleaned[at + len(STAMP_PREFIX):-1]
    return int(digits) / 1_000_000 if digits.isdigit() else None


_NUMBER = re.compile(re.escape(NUMBER_PREFIX) + r"(\d+)\]")


def number_of(cleaned: str) -> int | None:
    """The k of a numbered tweet's ``[n:<k>]`` after cleaning, or None."""
    found = _NUMBER.search(cleaned)
    return int(found.group(1)) if found else None
