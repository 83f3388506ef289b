"""report.py cases and load_cases(): the case series as a user reads it, the world
(WHO's countries summed per date) or one country, printed and as a typed DataFrame,
and as it was known at an earlier time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mongomock
import pandas as pd
import pytest
from test_case_series import FIRST, LATER, SECOND, SEEN, file_of, rows_of
from test_report import png_size

import config
import report
import storage
import transform
from analysis.batches import read_window
from analysis.cases import UnknownCountryError, WeeklyCases, weekly_new_cases
from analysis.digest import WindowDigest
from analysis.figure import build_figure, plot_report
from analysis.words import count_tokens, keyword_words, rank_apart, top_words
from counts.fetch import Validators
from counts.series import CaseFile, CaseRow
from storage import case_series


def fill(store: storage.BatchStore) -> None:
    """WHO's two files (the second revises two rows), then worldometers' one row."""
    series = case_series.of_store(store)
    series.store(file_of(SEEN, 6), rows_of(FIRST))
    series.store(file_of(LATER, 7), rows_of(SECOND))
    world = CaseRow(datetime(2024, 4, 13).date(), "World", None, None, None, 704_753_890,
                    None, None)
    series.store(CaseFile("worldometers", SEEN, "http://127.0.0.1/", Validators(), None, 1),
                 [world])


@pytest.fixture
def embedded(tmp_path: Path) -> Path:
    path = tmp_path / "db"
    store = storage.open_store(config.Settings(embedded_db_path=path))
    fill(store)
    store.close()
    return path


def cases_output(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert report.main(["cases", "--embedded-db-path", str(path), *args]) == 0
    return capsys.readouterr().out


def test_the_world_is_whos_countries_summed_per_date(
    cli_env: None, embedded: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = cases_output(embedded, capsys)
    assert out.splitlines() == [
        "Covid-19 cases of the world: WHO's rows summed per date (WHO, worldometers), "
        "2024-04-13 to 2025-03-03, 4 dates",
        "date        source        new cases  cumulative cases  new deaths  cumulative deaths"
        "  countries",
        "2025-03-01  WHO                   4               883           -                 18"
        "          4",
        "2025-03-02  WHO                   6               116           1                  6"
        "          2",
        "2025-03-03  WHO                   3               110           -                  6"
        "          1",
        "2024-04-13  worldometers          -       704,753,890           -                  -",
    ]


def test_a_country_by_its_code_with_its_revisions(
    cli_env: None, embedded: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = cases_output(embedded, capsys, "--country", "na")  # Namibia, any case
    assert out.splitlines() == [
        "Covid-19 cases of Namibia (NA) (WHO), 2025-03-01 to 2025-03-02, 2 dates",
        "date        source  new cases  cumulative cases  new deaths  cumulative deaths  revised",
        "2025-03-01  WHO             4                11           -                  -        1",
        "2025-03-02  WHO            -1                 9           -                  -",
    ]
    by_name = cases_output(embedded, capsys, "--country", "other", "--since", "2025-03-01",
                           "--until", "2025-03-02")
    assert by_name.splitlines()[0] == (
        "Covid-19 cases of Other (WHO), 2025-03-01 to 2025-03-01, 1 date")


def test_as_known_at_an_earlier_time(
    cli_env: None, embedded: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = cases_output(embedded, capsys, "--country", "DE",
                       "--known-at", (SEEN + timedelta(days=1)).isoformat())
    assert out.splitlines()[2:] == [
        "2025-03-01  WHO             -               100           -                  5",
        "2025-03-02  WHO             -                 -           -                  -",
    ]  # before the second file: the 2nd still blank, the 3rd not there


def test_an_unknown_country_and_no_series(
    cli_env: None, embedded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        report.main(["cases", "--embedded-db-path", str(embedded), "--country", "XX"])
    assert info.value.code == 1
    assert "no stored rows of a country named or coded 'XX'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    storage.open_store(config.Settings(embedded_db_path=empty)).close()
    assert cases_output(empty, capsys).startswith("no case rows of the world stored in")


@pytest.fixture(params=["mongomock", "embedded"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[storage.BatchStore]:
    if request.param == "mongomock":
        opened = storage.BatchStore(mongomock.MongoClient(tz_aware=True).covid19.tweet_batches,
                                    "mongomock")
    else:
        opened = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    fill(opened)
    yield opened
    opened.close()


def test_load_cases_is_typed(store: storage.BatchStore) -> None:
    frame = report.load_cases(store=store)
    assert len(frame) == 8
    assert str(frame["date"].dtype) == "datetime64[ms, UTC]"
    assert str(frame["first_seen"].dtype) == "datetime64[ms, UTC]"
    for name in ("new_cases", "cumulative_cases", "new_deaths", "cumulative_deaths",
                 "revisions"):
        assert str(frame[name].dtype) == "Int64"
    namibia = frame[frame["country"] == "Namibia"]
    assert list(namibia["code"]) == ["NA", "NA"]  # a code, never a missing value
    assert list(namibia["revisions"]) == [1, 0]
    other = frame[frame["country"] == "Other"].iloc[0]
    assert other["code"] is pd.NA and other["cumulative_cases"] == 764
    germany = frame[frame["country"] == "Germany"]
    assert germany["new_deaths"].isna().tolist() == [True, False, True]  # blank, never 0


def test_load_cases_of_a_country_the_world_and_a_window(store: storage.BatchStore) -> None:
    germany = report.load_cases("de", since="2025-03-02", store=store)
    assert germany["date"].dt.day.tolist() == [2, 3]
    world = report.load_cases("World", store=store)
    assert world["source"].tolist() == ["who"] * 3 + ["worldometers"]
    assert world["cumulative_cases"].tolist() == [883, 116, 110, 704_753_890]
    assert world["rows"].tolist() == [4, 2, 1, 1]
    earlier = report.load_cases("NA", known_at=SEEN, store=store)
    assert earlier["new_cases"].tolist() == [3, -1]
    with pytest.raises(UnknownCountryError):
        report.load_cases("Atlantis", store=store)


def test_weekly_new_cases_for_the_figure(store: storage.BatchStore) -> None:
    series = case_series.of_store(store)
    weekly = weekly_new_cases(series, datetime(2026, 12, 1, tzinfo=UTC), weeks=2)
    # WHO's rows stop on 2025-03-03 (a Monday): its week and the one before
    assert weekly == WeeklyCases([datetime(2025, 2, 24, tzinfo=UTC),
                                  datetime(2025, 3, 3, tzinfo=UTC)], [4 + 6, 3],
                                 datetime(2025, 3, 3, tzinfo=UTC))


# --------------------------------------------------------------------------
# the figure people look at first


def test_words_are_case_folded_and_the_tracked_keywords_set_apart() -> None:
    texts = ["Stay home COVID19", "Stay safe covid-19", "stay calm Covid19 COVID19",
             "Coronavirus update: stay home", "SARS-CoV-2 variant home"]
    apart = keyword_words(config.DEFAULT_KEYWORDS)
    assert apart == {"covid", "covid19", "coronavirus", "sars", "cov"}
    # one word whatever its case, shown in its most frequent spelling ("stay" 2 < "Stay" 2:
    # a tie goes to the spelling seen first)
    assert top_words(texts, 3, apart) == [("Stay", 4), ("home", 3), ("safe", 1)]
    assert rank_apart(count_tokens(texts), apart) == [
        ("COVID19", 3), ("covid", 1), ("Coronavirus", 1), ("SARS", 1), ("CoV", 1)]
    assert top_words(texts, 3) == [("Stay", 4), ("home", 3), ("COVID19", 3)]  # no keywords


def test_the_plot_draws_the_worlds_weekly_cases_beside_the_posts(tmp_path: Path) -> None:
    store = storage.BatchStore(mongomock.MongoClient(tz_aware=True).covid19.tweet_batches,
                               "mongomock")
    fill(store)
    start = datetime(2025, 3, 4, 12, tzinfo=UTC)
    for i in range(3):  # three 5 s batches, the day after WHO's last date
        store.write(transform.build_document(start + timedelta(seconds=5 * i),
                                             ["masks on the tram COVID19"] * (3 - i), 881))
    summary = plot_report(store, tmp_path / "r.png", keywords=config.DEFAULT_KEYWORDS)
    assert summary.batches == 3
    assert png_size((tmp_path / "r.png").read_bytes()) == (1000, 1050)

    digest = WindowDigest.of(read_window(store))
    weekly = weekly_new_cases(case_series.of_store(store), summary.last, weeks=4)
    figure = build_figure(digest, [("masks", 6)], "t", apart=[("COVID19", 6)], weekly=weekly)
    volume, _, words, cases = figure.axes
    assert volume.get_title(loc="left") == "Posts per batch (5 s)"
    assert cases.get_title(loc="left") == "World new cases per week (WHO, its countries summed)"
    assert [bar.get_height() for bar in cases.patches[:4]] == [0, 0, 10, 3]
    assert "COVID19 6" in words.get_xlabel().replace("\n", " ")
