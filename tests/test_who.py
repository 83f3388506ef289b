"""WHO's daily file as the case count source: the pure parse, the hourly background
refresh (conditional GET, never holding up a batch) and the command line.

Every file is written by the tests (``who_csv``) with the real file's header and
quirks; it is served from 127.0.0.1. Time is an injected clock moved by hand.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from processes import Clock
from who_files import FIRST_DAY, HEADER, Country, WhoSite, serve_who, who_csv

import config
import scrape
from counts.who import text_lines
from scrape import (
    NO_COUNT,
    CaseCount,
    CaseCountError,
    WhoCaseCounter,
    WhoFileError,
    fetch_who_total,
    who_world_total,
)

LAST_DAY = FIRST_DAY + timedelta(days=4)
AS_OF = datetime(LAST_DAY.year, LAST_DAY.month, LAST_DAY.day, tzinfo=UTC)
COUNTRIES = [
    Country("DE", "Germany", "EUR", [100, 150, 150, 170, 200], newest_first=True),
    Country("NA", "Namibia", "AFR", [10, 20, 30, 40, 50]),
    Country("BQ", "Bonaire, Saint Eustatius and Saba", "AMR", [5, 5, 6, 7, 8]),
    Country("", "Other", "OTHER", [764] * 5),
    Country("CI", "C\u00f4te d\u2019Ivoire", "AFR", [1, 2, 3, 4, 9]),  # as WHO spells it
    Country("VA", "Holy See", "EUR", [26, 26, 29]),  # its rows stop two days early
    Country("PN", "Pitcairn", "WPR", [4, 4, 4, 4, None]),  # blank at its latest date
    Country("XX", "Nowhere", "OTHER", [None] * 5),  # never a number: adds nothing
]
TOTAL = 200 + 50 + 8 + 764 + 9 + 29 + 4
SAMPLE = who_csv(COUNTRIES)
LATER = who_csv([*COUNTRIES[:-1], Country("XX", "Nowhere", "OTHER", [None] * 5 + [1000])])
LATER_AS_OF = AS_OF + timedelta(days=1)
NOT_WHO = b"<!DOCTYPE html><html><body>WHO COVID-19 dashboard</body></html>\n"
TIMEOUT = 10


def lines_of(data: bytes) -> list[str]:
    """The file as ``open(path, newline="", encoding="utf-8")`` reads it (BOM kept)."""
    return list(io.StringIO(data.decode("utf-8"), newline=""))


# --------------------------------------------------------------------------
# the test file itself


def test_the_test_file_has_the_real_files_quirks() -> None:
    text = SAMPLE.decode("utf-8")
    assert SAMPLE.startswith(b"\xef\xbb\xbf" + ",".join(HEADER).encode() + b"\r\n")
    assert text.count("\r\n") == text.count("\n")
    assert f"{FIRST_DAY.isoformat()},NA,Namibia,AFR," in text
    assert '"Bonaire, Saint Eustatius and Saba"' in text
    assert f"{LAST_DAY.isoformat()},,Other,OTHER,,764,,0" in text  # blank code, blank New_cases
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))[1:]
    dates = [row[0] for row in rows]
    assert dates != sorted(dates)  # grouped by country, not by date
    assert dates[0] == LAST_DAY.isoformat()  # Germany: latest first


# --------------------------------------------------------------------------
# who_world_total: pure


def test_world_total_and_as_of() -> None:
    result = who_world_total(lines_of(SAMPLE))
    assert (result.total, result.as_of) == (TOTAL, AS_OF)
    assert result.as_of.tzinfo is UTC
    assert (result.countries, result.rows, result.skipped) == (8, 38, 0)


@pytest.mark.parametrize("chunk", [1, 2, 7, 64 * 1024])
def test_world_total_from_a_byte_stream_cut_anywhere(chunk: int) -> None:
    # cuts land inside the BOM, between \r and \n, inside multi-byte characters
    chunks = (SAMPLE[i:i + chunk] for i in range(0, len(SAMPLE), chunk))
    assert who_world_total(text_lines(chunks)).total == TOTAL


def test_world_total_from_lines_without_ends_bom_or_crlf() -> None:
    data = who_csv(COUNTRIES, bom=False, crlf=False)
    assert who_world_total(data.decode().splitlines()).total == TOTAL
    assert who_world_total(lines_of(SAMPLE)[0:1] + lines_of(SAMPLE)[1:]).total == TOTAL


def test_namibia_is_a_country_not_a_missing_value() -> None:
    only = who_csv([Country("NA", "Namibia", "AFR", [10, 20, 30, 40, 50])])
    assert who_world_total(lines_of(only)).total == 50


def test_countries_are_told_apart_by_name_not_code() -> None:
    data = who_csv([Country("", "Other", "OTHER", [764]),
                    Country("", "International conveyance (Diamond Princess)", "OTHER", [712]),
                    Country("NA", "Namibia", "AFR", [3])])
    result = who_world_total(lines_of(data))
    assert (result.total, result.countries) == (764 + 712 + 3, 3)


def test_each_country_counts_its_latest_date_wherever_its_rows_are() -> None:
    shuffled = lines_of(SAMPLE)
    header, rows = shuffled[0], shuffled[1:]
    rows = rows[1::2] + rows[::2]  # interleaved: no order left at all
    assert who_world_total([header, *rows]).total == TOTAL
    assert who_world_total([header, *reversed(rows)]).total == TOTAL


def test_a_country_whose_rows_stop_early_still_counts() -> None:
    data = who_csv([Country("DE", "Germany", "EUR", [1, 2, 3, 4, 5]),
                    Country("VA", "Holy See", "EUR", [26])])
    result = who_world_total(lines_of(data))
    assert (result.total, result.as_of) == (5 + 26, AS_OF)


def test_a_blank_count_at_the_latest_date_uses_the_latest_number() -> None:
    data = who_csv([Country("PN", "Pitcairn", "WPR", [4, None, 6, None, None])])
    assert who_world_total(lines_of(data)).total == 6
    # the total is for the day of that number: blank rows after it do not move as_of
    assert who_world_total(lines_of(data)).as_of == AS_OF - timedelta(days=2)


def test_as_of_moves_only_with_a_count() -> None:
    # WHO adds a new date with every country's figures blank: the total, and the day it
    # is for, stay those of the last day that has numbers (issue 22, defect 6)
    data = who_csv([Country("DE", "Germany", "EUR", [100, 150, None]),
                    Country("NA", "Namibia", "AFR", [10, 20, None])])
    result = who_world_total(lines_of(data))
    assert (result.total, result.as_of) == (170, datetime(2025, 2, 25, tzinfo=UTC))
    assert result.rows == 6  # the blank rows are read (and counted), not skipped


def test_the_same_country_and_day_twice_the_later_row_wins() -> None:
    rows = [",".join(HEADER), "2025-03-02,DE,Germany,EUR,,100,,0",
            "2025-03-02,DE,Germany,EUR,,90,,0"]
    assert who_world_total(rows).total == 90


def test_columns_are_found_by_name() -> None:
    header = ("WHO_region", "Cumulative_cases", "Extra", "Country", "Date_reported",
              "Country_code", "New_cases")
    data = who_csv(COUNTRIES, header=header)
    assert who_world_total(lines_of(data)).total == TOTAL
    quoted = [",".join(f'" {name} "' for name in HEADER) + "\r\n", *lines_of(SAMPLE)[1:]]
    assert who_world_total(quoted).total == TOTAL


def test_bad_rows_are_skipped_and_counted() -> None:
    good = lines_of(SAMPLE)
    bad = [
        "2025-13-01,DE,Germany,EUR,,999999,,0\r\n",  # no such month
        "yesterday,DE,Germany,EUR,,999999,,0\r\n",
        f"{LAST_DAY},DE,Germany,EUR,,lots,,0\r\n",
        f"{LAST_DAY},DE,Germany,EUR,,-5,,0\r\n",
        f"{LAST_DAY},BQ,Bonaire, Saint Eustatius and Saba,AMR,,999999,,0\r\n",  # unquoted comma
        f"{LAST_DAY},ZZ,,EUR,,999999,,0\r\n",  # no country
        f"{LAST_DAY},DE,Germany\r\n",  # too short
        "\r\n",  # blank: ignored, not counted
    ]
    result = who_world_total([good[0], *bad[:4], *good[1:], *bad[4:]])
    assert (result.total, result.as_of) == (TOTAL, AS_OF)
    assert (result.rows, result.skipped) == (38 + 7, 7)
    assert result.problem == "line 2: Date_reported '2025-13-01' is not a YYYY-MM-DD date"


def test_a_row_the_csv_module_rejects_is_skipped_too() -> None:
    huge = f'{LAST_DAY},FR,"{"x" * 200_000}",EUR,,5,,0\r\n'  # past csv's field size limit
    result = who_world_total([*lines_of(SAMPLE), huge])
    assert (result.total, result.rows, result.skipped) == (TOTAL, 39, 1)
    assert result.problem is not None and "field larger than field limit" in result.problem


def test_a_stray_quote_costs_its_line_only() -> None:
    # one unclosed quote used to make csv swallow every line after it as one field
    good = lines_of(SAMPLE)
    stray = [f'{LAST_DAY},FR,"France,EUR,,999999,,0\r\n',  # never closed
             f'{LAST_DAY},IT,Italy,EUR,,999999,,"0\r\n']  # opened in the last field
    literal = f'{LAST_DAY},XQ,Cote d"Ivoire,AFR,,3,,0\r\n'  # mid-value: csv keeps it
    result = who_world_total([good[0], stray[0], *good[1:20], stray[1], *good[20:], literal])
    assert (result.total, result.as_of) == (TOTAL + 3, AS_OF)
    assert (result.rows, result.skipped, result.countries) == (38 + 3, 2, 9)
    assert result.problem == "line 2: a quote (\") that the line does not close"


def test_a_stray_quote_in_a_streamed_file_without_other_quotes() -> None:
    data = who_csv([Country("DE", "Germany", "EUR", [1, 2, 3, 4, 5]),
                    Country("FR", "France", "EUR", [10, 20, 30, 40, 50])])
    broken = data.replace(b"Germany", b'"Germany', 1)  # its first row: line 2
    result = who_world_total(text_lines([broken]))
    assert (result.total, result.rows, result.skipped) == (5 + 50, 10, 1)
    assert result.problem is not None and result.problem.startswith("line 2: a quote")


def test_a_trailing_comma_in_the_header_is_tolerated() -> None:
    header = ",".join(HEADER) + ",\r\n"
    rows = [f"{LAST_DAY},DE,Germany,EUR,,100,,0\r\n",
            f"{LAST_DAY},FR,France,EUR,,50,,0,\r\n",  # its rows may end with one too
            f"{LAST_DAY},BQ,Bonaire, Saint Eustatius and Saba,AMR,,999999,,0\r\n"]
    result = who_world_total([header, *rows])
    assert (result.total, result.rows, result.skipped) == (150, 3, 1)
    assert result.problem == "line 4: 9 fields, the header has 8"


def test_tolerated_values() -> None:
    rows = [",".join(HEADER), " 2025-03-02 ,DE, Germany ,EUR,,  100 ,,0",
            "2025-03-01T00:00:00Z,FR,France,EUR,,50.0,,0"]
    result = who_world_total(rows)
    assert (result.total, result.countries, result.skipped) == (150, 2, 0)
    assert result.as_of == datetime(2025, 3, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "the file is empty"),
        (["\r\n", "  \r\n"], "the file is empty"),
        ([NOT_WHO.decode()], "no Date_reported, Country, Cumulative_cases column"),
        (["Date_reported,Country_code,Country,New_cases\r\n", "2025-03-02,DE,Germany,5\r\n"],
         "no Cumulative_cases column"),
        ([",".join(HEADER) + "\r\n"], "no row has a Cumulative_cases number"),
        ([",".join(HEADER) + "\r\n", "2025-03-02,DE,Germany,EUR,,,,\r\n"],
         "no row has a Cumulative_cases number"),
        ([",".join(HEADER) + "\r\n", "2025-03-02,DE,Germany,EUR,,1,,0\r\n",
          "2025-03-02;DE;France;EUR;;1;;0\r\n", "02/03/2025,FR,France,EUR,,1,,0\r\n"],
         "2 of 3 rows cannot be read"),
        ([",".join(HEADER) + "\r\n", f"2025-03-02,DE,Germany,EUR,,{'9' * 18},,0\r\n",
          f"2025-03-02,FR,France,EUR,,{'9' * 18},,0\r\n"], "too large"),
    ],
)
def test_a_file_that_gives_no_total(lines: list[str], message: str) -> None:
    with pytest.raises(WhoFileError, match=message) as info:
        who_world_total(lines)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, CaseCountError)


@pytest.fixture
def site() -> Iterator[WhoSite]:
    with serve_who(WhoSite("", SAMPLE)) as state:
        yield state


@pytest.fixture
def clock() -> Clock:
    return Clock(AS_OF + timedelta(days=3, hours=8))  # a few days after the file: not stale


def scrape_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "scrape" and r.levelno == level]


FRESH = CaseCount(TOTAL, AS_OF, "who", fresh=True)
CARRIED = FRESH.carried_over()
LATER_FRESH = CaseCount(TOTAL + 1000, LATER_AS_OF, "who", fresh=True)


# --------------------------------------------------------------------------
# fetch_who_total


def test_fetch_who_total(site: WhoSite) -> None:
    result = fetch_who_total(site.url, timeout=TIMEOUT)
    assert (result.total, result.as_of) == (TOTAL, AS_OF)
    assert "text/csv" in site.requests[0]["Accept"]


def test_fetch_who_total_has_its_own_size_cap(site: WhoSite) -> None:
    padding = (b" " * 98 + b"\r\n") * (scrape.MAX_PAGE_BYTES // 100 + 1)  # blank lines
    site.body = SAMPLE + padding  # too big for a page, fine for WHO's file
    assert fetch_who_total(site.url, timeout=TIMEOUT).total == TOTAL
    with pytest.raises(CaseCountError, match="bytes"):
        fetch_who_total(site.url, timeout=TIMEOUT, max_bytes=len(SAMPLE))
    assert scrape.WHO_MAX_BYTES >= 256 * 1024 * 1024


def test_the_file_is_parsed_as_it_streams_in(site: WhoSite) -> None:
    # the header tells it is not WHO's file: no need to wait for the rest of the body
    # (the server holds back all but the first two chunks the client reads)
    site.body = NOT_WHO + SAMPLE * (4 * scrape.CHUNK_BYTES // len(SAMPLE))
    site.stall_after = 2 * scrape.CHUNK_BYTES
    with pytest.raises(WhoFileError, match="not WHO's daily CSV") as info:
        fetch_who_total(site.url, timeout=TIMEOUT)
    assert str(info.value).startswith(site.url)
    assert not site.release.is_set()  # answered while the server still held the body back


def test_a_body_without_line_ends_is_refused_early() -> None:
    chunks = iter([b"x" * 1000] * 100)
    with pytest.raises(WhoFileError, match="longer than 5000"):
        who_world_total(text_lines(chunks, max_line=5000))
    assert len(list(chunks)) >= 90  # stopped reading soon after the limit


def test_fetch_who_failure_is_one_line(site: WhoSite) -> None:
    site.status = 404
    with pytest.raises(CaseCountError) as info:
        fetch_who_total(site.url, timeout=TIMEOUT)
    assert str(info.value) == f"cannot fetch {site.url}: HTTP 404 Not Found"


# --------------------------------------------------------------------------
# WhoCaseCounter


def test_counter_reads_the_world_total(site: WhoSite, clock: Clock) -> None:
    with WhoCaseCounter(site.url, TIMEOUT, clock=clock) as counter:
        assert counter.current() == FRESH
        assert counter.last_good == TOTAL
    assert counter.source == "who"


def test_counter_start_gives_the_first_reading(
    site: WhoSite, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scrape")
    with WhoCaseCounter(site.url, TIMEOUT, clock=clock) as counter:
        assert counter.start() == FRESH
        assert counter.current() == FRESH  # within the hour: no new request
    assert len(site.requests) == 1
    messages = [r.getMessage() for r in scrape_records(caplog, logging.INFO)]
    assert messages[-1] == f"case count at start: {FRESH.describe()}"
    assert any("read WHO's file" in m and "8 countries, 38 rows" in m for m in messages)
    assert not scrape_records(caplog, logging.WARNING)


def test_at_most_one_request_an_hour(site: WhoSite, clock: Clock) -> None:
    with WhoCaseCounter(site.url, TIMEOUT, clock=clock) as counter:
        for _ in range(5):
            assert counter.current() == FRESH
        clock.advance(minutes=59, seconds=59)
        assert counter.current() == FRESH  # still within its hour
        assert len(site.requests) == 1
        clock.advance(seconds=1)
        assert counter.current() == FRESH  # a 304: checked, unchanged
        assert counter.current() == FRESH
        assert len(site.requests) == 2
        site.body = LATER
        clock.advance(minutes=30)
        assert counter.current() == FRESH  # the new file is not asked for yet
        clock.advance(minutes=30)
        assert counter.current() == LATER_FRESH
        assert len(site.requests) == 3
    assert (site.downloads, site.not_modified) == (2, 1)
    assert (counter.downloads, counter.not_modified) == (2, 1)


def test_the_304_path_keeps_the_reading(site: WhoSite, clock: Clock) -> None:
    with WhoCaseCounter(site.url, TIMEOUT, clock=clock, refresh_seconds=60) as counter:
        assert counter.current() == FRESH
        for _ in range(3):
            clock.advance(minutes=1)
            assert counter.current() == FRESH  # same total and as_of, and fresh
    assert "If-None-Match" not in site.requests[0]
    assert all(r["If-None-Match"] == site.etag for r in site.requests[1:])
    assert (site.downloads, site.not_modified) == (1, 3)


def test_a_failure_then_recovery(
    site: WhoSite, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="scrape")
    with WhoCaseCounter(site.url, TIMEOUT, clock=clock) as counter:
        assert counter.current() == FRESH
        site.status = 500
        clock.advance(hours=1)
        assert counter.current() == CARRIED
        clock.advance(minutes=4, seconds=59)
        assert counter.current() == CARRIED  # not fresh after a failure, and not asked yet
        assert len(site.requests) == 2
        for _ in range(2):  # a failed attempt is retried after 5 minutes, not an hour
            clock.advance(minutes=5)
            assert counter.current() == CARRIED
        (warning,) = scrape_records(caplog, logging.WARNING)
        assert warning.getMessage() == (
            f"case count unavailable: cannot fetch {site.url}: HTTP 500 Internal Server Error; "
            f"using the last good count {TOTAL} (who, as of {LAST_DAY.isoformat()})")
        assert len(site.requests) == 4
        site.status = 200
        clock.advance(minutes=5)
        assert counter.current() == FRESH
        recovered = [r.getMessage() for r in scrape_records(caplog, logging.INFO)
                     if "available again" in r.getMessage()]
        assert recovered == [f"case count available again after 3 failed attempts: "
                             f"{FRESH.describe()}"]
        site.status = 503  # a new failure window warns again
        clock.advance(hours=1)
        assert counter.current() == CARRIED
        assert len(scrape_records(caplog, logging.WARNING)) == 2


def test_a_failure_before_any_count(site: WhoSite, clock: Clock,
                                    caplog: pytest.LogCaptureFixture) -> None:
    site.status = 503
    with WhoCaseCounter(site.url, TIMEOUT, clock=clock) as counter:
        assert counter.start() == NO_COUNT
        assert counter.current() == NO_COUNT
        assert counter.last_good is None
    (warning,) = scrape_records(caplog, logging.WARNING)
    assert "no count obtained yet" in warning.getMessage()


def test_a_file_without_the_columns_warns_once(
    site: WhoSite, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    site.body = NOT_WHO
    with WhoCaseCounter(site.url, TIMEOUT, clock=clock) as counter:
        assert counter.start() == NO_COUNT
        for _ in range(4):
            clock.advance(hours=1)
            assert counter.current() == NO_COUNT
        assert len(site.requests) == 5  # asked again each hour
        assert all("If-None-Match" not in r for r in site.requests)  # no good file to match
        site.body = SAMPLE
        clock.advance(hours=1)
        assert counter.current() == FRESH
        site.body = NOT_WHO
        for _ in range(3):
            clock.advance(hours=1)
            assert counter.current() == CARRIED  # the last good one carried over
    warnings = [r.getMessage() for r in scrape_records(caplog, logging.WARNING)]
    assert len(warnings) == 2  # one per failure window, not one per check
    for message in warnings:
        assert "no Date_reported, Country, Cumulative_cases column" in message
    assert "no count obtained yet" in warnings[0]
    assert f"using the last good count {TOTAL}" in warnings[1]


def test_a_batch_never_waits_for_a_slow_download(site: WhoSite, clock: Clock) -> None:
    # max_wait: the most current() waits; TIMEOUT (each read) is far longer, so the
    # download is still going on, not failed, when current() gives up waiting
    with WhoCaseCounter(site.url, TIMEOUT, clock=clock, max_wait=0.05) as counter:
        assert counter.start() == FRESH
        site.body, site.stall_after = LATER, len(LATER) // 2
        clock.advance(hours=1)
        assert counter.current() == CARRIED  # returned while the body is held back
        assert site.stalled.wait(TIMEOUT)
        assert not site.release.is_set()
        clock.advance(hours=2)  # another refresh would be due: only one at a time
        assert counter.current() == CARRIED
        assert len(site.requests) == 2
        site.release.set()
        assert counter.wait_for_refresh(TIMEOUT)
        reading = counter.current()  # the background refresh's result (and a 304 check,
        assert (reading.total, reading.as_of) == (TOTAL + 1000, LATER_AS_OF)  # due by now)
        assert counter.wait_for_refresh(TIMEOUT)
        assert counter.current() == LATER_FRESH
    assert (site.downloads, site.not_modified) == (2, 1)


def test_the_first_reading_may_come_after_the_first_batch(site: WhoSite, clock: Clock) -> None:
    site.stall_after = len(SAMPLE) // 3
    with WhoCaseCounter(site.url, TIMEOUT, clock=clock, max_wait=0.05) as counter:
        assert counter.start(wait=0.05) == NO_COUNT
        assert site.stalled.wait(TIMEOUT)
        assert counter.current() == NO_COUNT
        site.release.set()
        assert counter.wait_for_refresh(TIMEOUT)
        assert counter.current() == FRESH
    assert len(site.requests) == 1


def test_close_stops_a_running_refresh(
    site: WhoSite, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    counter = WhoCaseCounter(site.url, 1, clock=clock, max_wait=0.05)
    assert counter.start() == FRESH
    site.body, site.stall_after = LATER, len(LATER) // 2
    clock.advance(hours=1)
    assert counter.current() == CARRIED
    assert site.stalled.wait(TIMEOUT)
    counter.close()  # the stalled read gives up after the 1 s timeout; its end is dropped
    assert counter.wait_for_refresh(0)  # no thread left running
    clock.advance(hours=5)
    assert counter.current() == CARRIED  # closed: nothing new is asked for
    assert len(site.requests) == 2
    assert not scrape_records(caplog, logging.WARNING)  # the abandoned refresh is no failure


def test_a_refresh_past_its_deadline_is_abandoned_and_the_next_one_runs(
    site: WhoSite, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # a byte every 0.2 s: no read ever waits TIMEOUT, only the refresh's deadline ends it
    site.trickle_every = 0.2
    deadline = 1.0
    with WhoCaseCounter(site.url, TIMEOUT, clock=clock, max_wait=0.05,
                        deadline=deadline) as counter:
        assert counter.current() == NO_COUNT
        assert counter.wait_for_refresh(3 * deadline), "the refresh outlived its deadline"
        (warning,) = scrape_records(caplog, logging.WARNING)
        assert warning.getMessage() == (
            f"case count unavailable: cannot fetch {site.url}: no answer within 1 s; "
            "no count obtained yet, so batches get none")
        site.trickle_every = None
        clock.advance(minutes=5)  # a failed refresh is retried 5 minutes after it began
        assert counter.current() in (NO_COUNT, FRESH)  # the refresh begins
        assert counter.wait_for_refresh(TIMEOUT)
        assert counter.current() == FRESH
    assert len(site.requests) == 2


def test_stale_file_warns_at_start_then_once_a_day(
    site: WhoSite, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(AS_OF + timedelta(days=45, hours=6))
    with WhoCaseCounter(site.url, TIMEOUT, clock=clock) as counter:
        counter.start()
        (warning,) = scrape_records(caplog, logging.WARNING)
        assert warning.getMessage() == (
            f"the WHO case count is as of {LAST_DAY.isoformat()} (45 days old): that is the "
            "latest Date_reported in WHO's file, and WHO publishes in bursts weeks apart")
        for _ in range(23):
            clock.advance(hours=1)
            counter.current()
        assert len(scrape_records(caplog, logging.WARNING)) == 1
        clock.advance(hours=1)
        counter.current()
        assert len(scrape_records(caplog, logging.WARNING)) == 2
        site.body = LATER  # a new file, 46 days old too: still at most one warning a day
        clock.advance(hours=1)
        assert counter.current() == LATER_FRESH
        assert len(scrape_records(caplog, logging.WARNING)) == 2


def test_open_counter_for_who() -> None:
    settings = config.Settings(case_source="who", who_url="http://127.0.0.1:9/w.csv",
                               scrape_timeout=4)
    with scrape.open_counter(settings) as counter:
        assert isinstance(counter, WhoCaseCounter)
        assert (counter.url, counter.timeout, counter.max_wait) == (
            "http://127.0.0.1:9/w.csv", 4, 4)
        assert counter.refresh_every == timedelta(hours=1)


# --------------------------------------------------------------------------
# command line


@pytest.mark.usefixtures("cli_env")
def test_cli_prints_whos_total(site: WhoSite, capsys: pytest.CaptureFixture[str]) -> None:
    assert scrape.main(["--case-source", "who", "--who-url", site.url]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{TOTAL}\n"
    info, stale = captured.err.splitlines()  # the test file is from 2025: stale today
    assert info.endswith(f"case count {TOTAL:,} (who, as of {LAST_DAY.isoformat()}, fetched now)")
    assert " WARNING " in stale and "WHO publishes in bursts" in stale


@pytest.mark.usefixtures("cli_env")
def test_cli_who_from_the_environment_and_failure(
    site: WhoSite, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASE_SOURCE", "who")
    monkeypatch.setenv("WHO_DATA_URL", site.url)
    site.body = NOT_WHO
    assert scrape.main([]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith(f"scrape.py: error: {site.url}: not WHO's daily CSV")
