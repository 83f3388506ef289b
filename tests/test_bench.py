"""The benchmark's own logic: how rates are stepped and judged, and its numbered tweets."""

from __future__ import annotations

import pytest

import transform
from bench.steps import FINE_RATIO, Plan, Step, evaluate, find_limit, round_rate
from bench.tweets import TweetFactory, number_of, stamp_of


def search(limit: float, start: int = 10_000, factor: float = 2) -> list[Step]:
    """find_limit against a job that sustains every rate up to ``limit``."""
    steps: list[Step] = []

    def try_rate(rate: int, fine: bool) -> Step:
        step = Step(rate, fine=fine, sustained=rate <= limit)
        steps.append(step)
        return step

    find_limit(try_rate, Plan("job", "full", "producer", 2.0, start=start, factor=factor,
                              ceiling=1_000_000))
    return steps


@pytest.mark.parametrize("limit", [12_345, 26_000, 39_999, 40_000, 77_000, 150_000])
def test_the_search_ends_with_sustained_and_failed_steps_at_most_10_percent_apart(
        limit: float) -> None:
    steps = search(limit)
    best = max(s.rate for s in steps if s.sustained)
    first_failed = min(s.rate for s in steps if not s.sustained)
    assert best <= limit < first_failed
    assert first_failed / best <= FINE_RATIO
    coarse = [s.rate for s in steps if not s.fine]
    assert coarse == [10_000 * 2**k for k in range(len(coarse))]  # doubling until one fails
    assert all(s.fine for s in steps[len(coarse):])


def test_when_the_first_step_fails_the_search_goes_down() -> None:
    steps = search(7_000, start=20_000, factor=1.2)
    assert [s.rate for s in steps if not s.fine][:2] == [20_000, round_rate(20_000 / 1.2)]
    best = max(s.rate for s in steps if s.sustained)
    assert best <= 7_000 and min(s.rate for s in steps if not s.sustained) / best <= FINE_RATIO


def test_a_job_that_sustains_everything_stops_at_its_ceiling() -> None:
    steps = search(10**9)
    assert all(s.sustained for s in steps)
    assert steps[-1].rate <= 1_000_000 < steps[-1].rate * 2


def test_rates_keep_three_significant_digits() -> None:
    assert [round_rate(r) for r in (22_360.7, 141_421.4, 999.6, 1_234_567)] == [
        22_400, 141_000, 1_000, 1_230_000]


def measured(**fields: object) -> Step:
    step = Step(20_000, offered=20_000, received=20_000, processing_s=[1.0, 1.1],
                scheduling_s=[0.0, 0.0])
    for key, value in fields.items():
        setattr(step, key, value)
    evaluate(step, interval=2.0)
    return step


def test_a_step_kept_up_with_is_sustained() -> None:
    step = measured()
    assert step.sustained and not step.why


def test_a_feeder_that_could_not_offer_more_is_its_limit_not_the_jobs() -> None:
    step = measured(offered=15_000, received=15_000)
    assert not step.sustained and step.producer_limited
    assert "producer offered only 15,000/s" in step.why


def test_a_producer_whose_sender_fell_behind_is_its_own_limit() -> None:
    step = measured(sent=15_000, received=14_900)
    assert not step.sustained and step.producer_limited
    assert "producer sent only 15,000/s of the 20,000/s it took" in step.why


def test_a_producer_held_back_by_the_receivers_cap_is_the_jobs_limit() -> None:
    step = Step(60_000, offered=60_000, sent=50_000, received=50_000, processing_s=[1.9],
                scheduling_s=[0.0, 0.1])
    evaluate(step, interval=2.0, max_rate=50_000)
    assert not step.sustained and not step.producer_limited
    assert "RECEIVER_MAX_RATE is 50,000" in step.why


def test_a_receiver_that_took_less_than_was_sent_is_the_jobs_limit() -> None:
    step = measured(sent=20_000, received=15_000)
    assert not step.sustained and not step.producer_limited


def test_a_receiver_that_pushed_back_is_the_jobs_limit() -> None:
    step = measured(offered=15_000, received=15_000, blocked_share=0.9)
    assert not step.sustained and not step.producer_limited
    assert "the receiver took only 15,000/s" in step.why


@pytest.mark.parametrize(("fields", "why"), [
    ({"processing_s": [2.3, 2.4]}, "batches take 2.35 s > 2 s"),
    ({"scheduling_s": [0.0, 1.5]}, "scheduling delay grows"),
    ({"received": 12_000}, "received 12,000/s of 20,000/s"),
    ({"refused": 10}, "10 refused"),
])
def test_a_job_that_falls_behind_is_not_sustained(fields: dict, why: str) -> None:
    step = measured(**fields)
    assert not step.sustained and why in step.why


def test_numbered_tweets_are_unique_and_keep_their_number_through_cleaning() -> None:
    factory = TweetFactory(seed=7, pool_size=500, numbered=True)
    tweets = [factory.next(stamp=1_764_000_000.25) for _ in range(3_000)]
    assert len({tweet["id"] for tweet in tweets}) == 3_000  # no redelivered ids
    cleaned = [transform.clean_text(tweet["text"]) for tweet in tweets]
    assert [number_of(text) for text in cleaned] == list(range(3_000))
    assert {stamp_of(text) for text in cleaned} == {1_764_000_000.25}  # every one stamped
