"""The cleaning contract (docs/design.md), the wire framing and the stored document."""

import html
import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transform
from transform import EMPTY, MALFORMED, OK, clean_text, process_line


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # 1. HTML entities are unescaped
        ("Masks &amp; gloves &lt;3 &gt; nothing", "Masks & gloves <3 > nothing"),
        ("&quot;Stay home&quot; &#39;now&#39;", "\"Stay home\" 'now'"),
        # 2. a leading retweet marker goes; RT elsewhere stays, ART keeps its RT
        ("RT @who_news: Wash your hands", "Wash your hands"),
        ("  RT @a: text", "text"),
        ("I said RT @bob: no", "I said RT : no"),
        ("ART is open", "ART is open"),
        ("RT this please", "RT this please"),
        # 3. URLs to the next whitespace
        ("Read https://t.co/AbC123 now", "Read now"),
        ("see http://example.org/a?b=c&d=e.", "see"),
        ("more at www.who.int/covid19 today", "more at today"),
        ("HTTPS://T.CO/X shouting", "shouting"),
        ("link:https://t.co/x", "link:"),
        # 4. mentions: @ at the start or after a non-word character
        ("@WHO thanks", "thanks"),
        ("thanks @WHO, @cdc_gov!", "thanks , !"),
        ("mail info@who.int for help", "mail info@who.int for help"),
        ("(@nhs) is here", "( ) is here"),
        ("@a_handle_longer_than_15 stays", "@a_handle_longer_than_15 stays"),
        # 5. hashtags lose their '#', keep the word
        ("#COVID19 cases rise #StaySafe", "COVID19 cases rise StaySafe"),
        ("#Vacunación en España", "Vacunación en España"),
        ("C# and # alone", "C# and # alone"),
        # 6. emoji: pictographs, ZWJ sequences, flags, skin tones, keycaps, selectors
        ("stay safe 😷🙏", "stay safe"),
        ("family 👨\u200d👩\u200d👧\u200d👦 home", "family home"),
        ("UK 🇬🇧 and 🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f", "UK and"),
        ("wave 👋🏽 hello", "wave hello"),
        ("step 1\ufe0f\u20e3 first", "step 1 first"),
        ("love ❤\ufe0f it ☀ ✅", "love it"),
        # 7. control characters and lone surrogates go
        ("bell\x07 null\x00 del\x7f", "bell null del"),
        ("broken \ud83d surrogate \udc00 pair", "broken surrogate pair"),
        # 8. whitespace runs (CRLF, tabs, newlines, NBSP) collapse to one space
        ("line one\r\nline two\n\n\tthree", "line one line two three"),
        ("wide\u3000space\u00a0nbsp\u2028sep", "wide space nbsp sep"),
        # kept: case, punctuation, accents, non-Latin scripts
        ("Vacuna ¡YA! — café, naïve?", "Vacuna ¡YA! — café, naïve?"),
        ("فيروس كورونا коронавирус 新型コロナ कोरोना",
         "فيروس كورونا коронавирус 新型コロナ कोरोना"),
        # rules together, in order
        ("RT @x: &amp;#COVID19 😷 https://t.co/a @y done", "&COVID19 done"),
    ],
)
def test_clean_text(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "😷🙏 https://t.co/x @who", "RT @a: ", "\x00\ud800"])
def test_text_with_nothing_left_cleans_to_empty(raw: str) -> None:
    assert clean_text(raw) == ""


def test_a_lone_hash_is_no_hashtag_and_stays() -> None:
    assert clean_text("RT @a: #") == "#"


def test_cleaned_text_can_always_be_encoded_as_utf8() -> None:
    cleaned = clean_text("a\ud800b\udfffc")
    assert cleaned.encode("utf-8") == b"abc"


# --- clean_text is the contract's plain passes, only faster ---------------------------

# docs/design.md's rules 1-8 as plain regular expressions, each pass over the whole
# text: what transform.clean_text must give, exactly.
_REF_RETWEET = re.compile(r"^\s*RT @[A-Za-z0-9_]{1,15}:")
_REF_URL = re.compile(r"(?i)\b(?:https?://|www\.)\S*")
_REF_MENTION = re.compile(r"(?<!\w)@[A-Za-z0-9_]{1,15}(?![A-Za-z0-9_])")
_REF_HASH = re.compile(r"(?<!\w)#(?=\w)")
_REF_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ud800-\udfff]+")
_REF_SPACES = re.compile(r"\s+")


def reference_clean_text(text: str) -> str:
    text = html.unescape(text)
    text = _REF_RETWEET.sub("", text, count=1)
    text = _REF_URL.sub(" ", text)
    text = _REF_MENTION.sub(" ", text)
    text = _REF_HASH.sub("", text)
    text = transform._EMOJI.sub("", text)
    text = _REF_CONTROL.sub("", text)
    return _REF_SPACES.sub(" ", text).strip()


# what each shortcut of clean_text and each rewritten pattern depends on
_TRICKY = [*"hHtTpPsSwWkK:/.@#_-&;aé1 ", "\u017f", "\u212a", "\u0130", "\n", "\t", "\r",
           "\x0b", "\x1c", "\x1f", "\x85", "\xa0", "\u2028", "\u3000", "\x00", "\x07",
           "\x7f", "\x9f", "\ud83d", "\udc00", "😷", "🇬🇧", "\u200d", "\ufe0f", "\u20e3",
           "☀", "日", "٣", "ß", "http://", "HTTPS://", "https\u017f://", "www.", "WwW.",
           "RT @a:", " RT @bob_1:", "@who", "@this_is_sixteen_", "#tag", "#_", "#1",
           "&amp;", "&lt;", "&#x1F637;", "&#0;", "&#xD800;", "&#10;", "&nbsp;"]


def generated_texts(count: int, seed: int = 2026) -> list[str]:
    """Half tweet-like texts (the benchmark's generator), half random runs of _TRICKY."""
    from bench.tweets import TweetFactory

    factory, rng = TweetFactory(seed=seed, pool_size=2_000), random.Random(seed)
    texts = [factory.next(stamp=1_764_000_000.0 + i)["text"] for i in range(count // 2)]
    texts += ["".join(rng.choices(_TRICKY, k=rng.randint(0, 40)))
              for _ in range(count - len(texts))]
    return texts


def test_clean_text_equals_the_plain_passes_on_100000_generated_texts() -> None:
    differ = [text for text in generated_texts(100_000)
              if clean_text(text) != reference_clean_text(text)]
    assert differ == []


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_TRICKY) | st.characters(), max_size=40).map("".join))
def test_clean_text_equals_the_plain_passes_on_any_text(text: str) -> None:
    assert clean_text(text) == reference_clean_text(text)


@pytest.mark.parametrize(
    "line",
    ['{"id": 18446744073709551616, "text": "id past 64 bits"}',
     '{"id": -9223372036854775809, "text": "x"}',
     '{"id": "1", "text": "big seq", "seq": 99999999999999999999999, "src": "a"}',
     '{"id": "1", "text": "lone \\ud83d surrogate"}',
     '{"id": NaN, "text": "x"}',
     '{"id": 1.0, "text": "float id"}',
     '{"id": "1", "text": "x", "id": "2"}',
     '\ufeff{"id": "1", "text": "bom"}',
     ' {"id": 5, "text": "spaces"} \r',
     '18446744073709551616'],
)
@pytest.mark.parametrize("with_orjson", [True, False], ids=["orjson", "json only"])
def test_lines_parse_as_the_standard_json_parser_reads_them(
        line: str, with_orjson: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not with_orjson:  # an executor where orjson is not installed
        monkeypatch.setattr(transform, "orjson", None)
    try:
        tweet = json.loads(line)
    except ValueError:
        assert process_line(line)[:3] == (MALFORMED, "", "not JSON")
        return
    record = process_line(line)
    if not isinstance(tweet, dict):
        assert record[:3] == (MALFORMED, "", f"JSON {type(tweet).__name__}, not an object")
        return
    if isinstance(tweet.get("id"), int) and not isinstance(tweet["id"], bool):
        assert record.tweet_id == str(tweet["id"])  # exact, however large
    assert record.status == MALFORMED or record.text == clean_text(tweet["text"])
    if "seq" in tweet:
        assert record.seq == tweet["seq"]


def test_process_partition_gives_the_records_of_process_line_as_tuples() -> None:
    lines = ['{"id": "1", "text": "#one"}', "oops", '{"id": 2, "text": "😷"}',
             '{"id": "3", "text": "x", "seq": 4, "src": "s"}']
    out = list(transform.process_partition(iter(lines)))
    assert all(type(item) is tuple for item in out)
    assert [transform.Record._make(item) for item in out] == [process_line(x) for x in lines]


def test_process_line_keeps_id_and_cleaned_text() -> None:
    line = json.dumps({"id": "1460323737035677698", "text": "RT @a: Hi #COVID19", "lang": "en"})
    assert process_line(line)[:3] == (OK, "1460323737035677698", "Hi COVID19")


def test_integer_ids_become_strings() -> None:
    assert process_line('{"id": 42, "text": "hello"}')[:3] == (OK, "42", "hello")


def test_tweet_that_cleans_to_nothing_is_empty_not_malformed() -> None:
    assert process_line('{"id": "7", "text": "https://t.co/x 😷"}')[:3] == (EMPTY, "7", "")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "not JSON"),
        ("", "not JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ('"text"', "JSON str, not an object"),
        ('{"text": "no id"}', "no id"),
        ('{"id": true, "text": "bool id"}', "no id"),
        ('{"id": "", "text": "empty id"}', "no id"),
        ('{"id": "1"}', "no text"),
        ('{"id": "1", "text": null}', "no text"),
        ('{"id": "1", "text": 5}', "no text"),
        ("[" * 100_000, "JSON nested too deeply"),
        ("\ufffd\ufffd{", "not JSON"),
    ],
)
def test_malformed_lines_are_reported_not_raised(line: str, reason: str) -> None:
    record = process_line(line)
    assert record[:3] == (MALFORMED, "", reason)
    assert record.raw == line[: transform.RAW_KEEP_CHARS]  # kept for the quarantine


@pytest.mark.parametrize(
    ("fields", "delivery"),
    [
        ({"seq": 7, "src": "a1b2"}, (7, "a1b2")),
        ({}, (None, None)),
    ],
)
def test_delivery_fields_are_read(fields: dict, delivery: tuple) -> None:
    record = process_line(json.dumps({"id": "1", "text": "hi", **fields}))
    assert (record.seq, record.source) == delivery


@pytest.mark.parametrize(
    "fields", [{"seq": "7", "src": "a"}, {"seq": -1, "src": "a"}, {"seq": 1}, {"src": "a"},
               {"seq": True, "src": "a"}, {"seq": 1, "src": 5}],
)
def test_bad_delivery_fields_are_malformed(fields: dict) -> None:
    record = process_line(json.dumps({"id": "1", "text": "hi", **fields}))
    assert record[:3] == (MALFORMED, "", "bad seq/src delivery fields")


def test_dollar_and_dotted_keys_in_a_tweet_do_not_matter() -> None:
    line = json.dumps({"id": "1", "text": "ok", "$where": "x", "a.b": {"$gt": 1}})
    assert process_line(line)[:3] == (OK, "1", "ok")


@pytest.mark.parametrize(
    "text",
    ["one\ntwo", "crlf\r\nhere", "sep\u2028para\u2029", "lone \ud83d", "naïve 日本 😷", '"quoted"'],
)
def test_encode_tweet_is_one_ascii_line_that_round_trips(text: str) -> None:
    tweet = {"id": "9", "text": text, "lang": "en"}
    wire = transform.encode_tweet(tweet)
    assert wire.endswith(b"\n")
    assert wire.count(b"\n") == 1
    assert b"\r" not in wire
    assert json.loads(wire.decode("utf-8")) == tweet


def test_build_document_has_the_contract_shape() -> None:
    moment = datetime(2026, 11, 28, 22, 46, 20, 123456, tzinfo=UTC)
    as_of = datetime(2026, 11, 23, tzinfo=UTC)
    doc = transform.build_document(moment, ["a", "b"], 778_000_000, as_of, "who")
    assert doc == {
        "_id": "2026-11-28T22:46:20.123Z",
        "content": ["a", "b"],
        "timestamp": datetime(2026, 11, 28, 22, 46, 20, 123000, tzinfo=UTC),
        "total_case_count": 778_000_000,
        "case_count_as_of": as_of,
        "case_count_source": "who",
    }


def test_build_document_accepts_no_count_and_then_has_no_date_or_source() -> None:
    doc = transform.build_document(datetime(2026, 1, 1, tzinfo=UTC), ["a"], None,
                                   datetime(2026, 1, 1, tzinfo=UTC), "who")
    assert (doc["total_case_count"], doc["case_count_as_of"], doc["case_count_source"]) == (
        None, None, None)
    unknown_date = transform.build_document(datetime(2026, 1, 1, tzinfo=UTC), ["a"], 5,
                                            None, "worldometers")
    assert unknown_date["case_count_as_of"] is None
    assert unknown_date["case_count_source"] == "worldometers"


def test_batch_time_in_another_zone_is_stored_as_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    doc = transform.build_document(datetime(2026, 1, 1, 2, 0, tzinfo=plus_two), ["a"], 1)
    assert doc["timestamp"] == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert doc["timestamp"].utcoffset() == timedelta(0)
    assert doc["_id"] == "2026-01-01T00:00:00.000Z"


def test_naive_batch_time_is_local_time() -> None:
    naive = datetime(2026, 6, 1, 12, 0)
    assert transform.to_utc(naive) == naive.astimezone(UTC)


@pytest.mark.parametrize("count", [0, 1, 9, 10, 11, 99, 100, 101, 1_000, 12_345])
def test_a_batchs_bson_size_is_the_sum_of_its_items(count: int) -> None:
    content = [f"t{i} caf\u00e9 \U0001f637" + ("\ud83d" if i % 7 == 0 else "")
               for i in range(count)]
    expected = sum(transform.bson_array_item_size(i, text) for i, text in enumerate(content))
    assert transform._array_size(content) == expected


@pytest.mark.parametrize("with_orjson", [True, False], ids=["orjson", "json only"])
@pytest.mark.parametrize(("depth", "ok"), [(100, True), (900, True), (1_030, False),
                                           (100_000, False)])
def test_deep_nesting_is_judged_the_same_by_both_parsers_away_from_their_limits(
        depth: int, ok: bool, with_orjson: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # (between ~990 and 1,023 levels json.loads and orjson disagree: see _load_json)
    if not with_orjson:
        monkeypatch.setattr(transform, "orjson", None)
    line = '{"id": "1", "text": "hi", "x": ' + "[" * depth + "]" * depth + "}"
    expected = (OK, "1", "hi") if ok else (MALFORMED, "", "JSON nested too deeply")
    assert process_line(line)[:3] == expected
