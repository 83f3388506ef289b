"""The case series: WHO's rows read whole (who_case_rows), kept in ``case_counts`` on
both stores (mongomock, and the embedded MontyDB store through its SQLite file),
revised rather than rewritten, and handed over by the counters without ever failing
the count. Every file is written here, with WHO's header and quirks."""

from __future__ import annotations

import io
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import mongomock
import pytest
from processes import Clock, PageServer
from who_files import WhoSite, serve_who

import config
import storage
from counts.fetch import Validators
from counts.series import CaseFile, CaseRow, world_row
from counts.who import WhoCaseCounter
from counts.who_csv import who_case_rows
from counts.worldometers import CaseCounter
from scrape import CaseCount, CaseCountError
from storage import case_series

HEADER = ("Date_reported,Country_code,Country,WHO_region,New_cases,Cumulative_cases,"
          "New_deaths,Cumulative_deaths")
FIRST = [
    "2025-03-01,DE,Germany,EUR,,100,,5",
    "2025-03-01,NA,Namibia,AFR,3,10,,",
    "2025-03-01,,Other,OTHER,,764,,13",
    '2025-03-01,BQ,"Bonaire, Saint Eustatius and Saba",AMR,,8,,0',
    "2025-03-02,DE,Germany,EUR,,,,",  # not reported yet: every figure blank
    "2025-03-02,NA,Namibia,AFR,-1,9,,",  # a correction: one case fewer
]
#: WHO's next file: Germany's blank day filled in, Namibia's first day revised, a new day
SECOND = [
    "2025-03-01,DE,Germany,EUR,,100,,5",
    "2025-03-01,NA,Namibia,AFR,4,11,,",
    "2025-03-01,,Other,OTHER,,764,,13",
    '2025-03-01,BQ,"Bonaire, Saint Eustatius and Saba",AMR,,8,,0',
    "2025-03-02,DE,Germany,EUR,7,107,1,6",
    "2025-03-02,NA,Namibia,AFR,-1,9,,",
    "2025-03-03,DE,Germany,EUR,3,110,,6",
]
SEEN = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
LATER = SEEN + timedelta(days=7)


def who_file(rows: Iterable[str]) -> bytes:
    """A file as WHO serves it: byte order mark, CRLF line ends."""
    return ("\ufeff" + "\r\n".join([HEADER, *rows]) + "\r\n").encode("utf-8")


def rows_of(lines: Iterable[str]) -> list[CaseRow]:
    found = list(who_case_rows(io.StringIO(who_file(lines).decode("utf-8"), newline="")))
    assert all(isinstance(row, CaseRow) for row in found), found
    return found  # type: ignore[return-value]


def file_of(seen: datetime, rows: int) -> CaseFile:
    return CaseFile("who", seen, "http://127.0.0.1/who.csv", Validators('"v1"'), None, rows)


# --------------------------------------------------------------------------
# who_case_rows: pure


def test_every_value_of_a_row_blanks_as_none() -> None:
    germany, namibia, other, bonaire, blank, correction = rows_of(FIRST)
    assert germany == CaseRow(date(2025, 3, 1), "Germany", "DE", "EUR", None, 100, None, 5)
    assert namibia.code == "NA" and namibia.new_cases == 3  # a code, not a missing value
    assert namibia.cumulative_deaths is None  # blank: None, never 0
    assert (other.code, other.who_region) == (None, "OTHER")  # a blank code
    assert bonaire.country == "Bonaire, Saint Eustatius and Saba"
    assert blank == CaseRow(date(2025, 3, 2), "Germany", "DE", "EUR", None, None, None, None)
    assert correction.new_cases == -1


def test_a_row_with_a_figure_that_is_no_number_is_left_out_with_its_reason() -> None:
    lines = [HEADER, "2025-03-01,DE,Germany,EUR,many,100,,5", "2025-03-01,FR,France,EUR,,9,,-2",
             "2025-03-01,IT,Italy,EUR,, 12 ,,3.0"]
    found = list(who_case_rows(lines))
    assert found[0] == "line 2: New_cases 'many' is not a whole number"
    assert found[1] == "line 3: Cumulative_deaths '-2' is not a whole number"
    assert found[2] == CaseRow(date(2025, 3, 1), "Italy", "IT", "EUR", None, 12, None, 3)


def test_optional_columns_may_be_missing() -> None:
    found = list(who_case_rows(["Country,Date_reported,Cumulative_cases", "Namibia,2025-03-01,7"]))
    assert found == [CaseRow(date(2025, 3, 1), "Namibia", None, None, None, 7, None, None)]


def test_worldometers_gives_one_world_row() -> None:
    reading = CaseCount(704_753_890, datetime(2024, 4, 13, tzinfo=UTC), "worldometers")
    assert world_row(reading) == CaseRow(date(2024, 4, 13), "World", None, None, None,
                                         704_753_890, None, None)
    assert world_row(CaseCount(5, None, "worldometers")) is None  # no day, no row


# --------------------------------------------------------------------------
# the store: both kinds


@pytest.fixture(params=["mongomock", "embedded"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[storage.BatchStore]:
    if request.param == "mongomock":
        opened = storage.BatchStore(mongomock.MongoClient(tz_aware=True).covid19.tweet_batches,
                                    "mongomock")
    else:
        opened = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    yield opened
    opened.close()


class Writes:
    """Every write that reaches ``case_counts``, seen from outside the code under test:
    SQLite triggers on the embedded store's table, a recording proxy around mongomock's
    collection."""

    def __init__(self, store: storage.BatchStore, series: case_series.CaseSeries) -> None:
        self.ids: list[str] = []
        self._file = store.embedded_file(case_series.COLLECTION)
        if self._file is None:
            assert isinstance(series.backend, case_series.MongoRows)
            series.backend.collection = _Recording(series.backend.collection, self.ids)

    def start(self) -> None:
        """Forget the writes so far; from now on, log each insert and update (the
        embedded store: once its table exists)."""
        self.ids.clear()
        if self._file is None:
            return
        with sqlite3.connect(self._file) as connection:
            connection.executescript("""
                CREATE TABLE IF NOT EXISTS writes(k BLOB);
                CREATE TRIGGER IF NOT EXISTS added AFTER INSERT ON documents
                    BEGIN INSERT INTO writes VALUES (new.k); END;
                CREATE TRIGGER IF NOT EXISTS changed AFTER UPDATE ON documents
                    BEGIN INSERT INTO writes VALUES (new.k); END;
                DELETE FROM writes;""")

    def written(self) -> list[str]:
        if self._file is None:
            return sorted(self.ids)
        with sqlite3.connect(self._file) as connection:
            keys = [bytes(k) for (k,) in connection.execute("SELECT k FROM writes")]
        return sorted(k[5:-1].decode() for k in keys)


class _Recording:
    def __init__(self, collection: Any, ids: list[str]) -> None:
        self._collection = collection
        self._ids = ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def insert_many(self, documents: list[dict[str, Any]], **kwargs: Any) -> Any:
        self._ids += [d["_id"] for d in documents]
        return self._collection.insert_many(documents, **kwargs)

    def update_one(self, query: dict[str, Any], update: dict[str, Any], **kwargs: Any) -> Any:
        self._ids.append(query["_id"])
        return self._collection.update_one(query, update, **kwargs)


def documents(series: case_series.CaseSeries) -> dict[str, dict[str, Any]]:
    return {d["_id"]: d for d in series.rows()}


def test_one_document_per_country_per_date(store: storage.BatchStore) -> None:
    series = case_series.of_store(store)
    summary = series.store(file_of(SEEN, 6), rows_of(FIRST))
    assert (summary.rows, summary.added, summary.revised) == (6, 6, 0)
    stored = documents(series)
    assert stored["who|2025-03-01|Namibia"] == {
        "_id": "who|2025-03-01|Namibia", "source": "who",
        "date": datetime(2025, 3, 1, tzinfo=UTC), "country": "Namibia", "code": "NA",
        "who_region": "AFR", "new_cases": 3, "cumulative_cases": 10, "new_deaths": None,
        "cumulative_deaths": None, "first_seen": SEEN}
    assert stored["who|2025-03-01|Other"]["code"] is None
    assert stored["who|2025-03-02|Germany"]["cumulative_cases"] is None  # never 0
    assert stored["who|2025-03-02|Namibia"]["new_cases"] == -1
    # sorted by source, date, country
    assert list(stored) == sorted(stored)


def test_a_revised_row_keeps_its_earlier_values_and_unchanged_rows_are_not_written(
    store: storage.BatchStore,
) -> None:
    series = case_series.of_store(store)
    writes = Writes(store, series)
    series.store(file_of(SEEN, 6), rows_of(FIRST))
    writes.start()
    summary = series.store(file_of(LATER, 7), rows_of(SECOND))
    assert (summary.added, summary.revised, summary.unchanged) == (1, 2, 4)
    assert writes.written() == ["who|2025-03-01|Namibia", "who|2025-03-02|Germany",
                                "who|2025-03-03|Germany"]
    stored = documents(series)
    namibia = stored["who|2025-03-01|Namibia"]
    assert (namibia["new_cases"], namibia["cumulative_cases"], namibia["first_seen"]) == (
        4, 11, LATER)
    assert namibia["revisions"] == [{
        "code": "NA", "who_region": "AFR", "new_cases": 3, "cumulative_cases": 10,
        "new_deaths": None, "cumulative_deaths": None, "first_seen": SEEN,
        "last_seen": SEEN}]
    germany = stored["who|2025-03-02|Germany"]  # blanks became numbers
    assert [germany[name] for name in case_series.FIGURES] == [7, 107, 1, 6]
    assert [germany["revisions"][0][name] for name in case_series.FIGURES] == [None] * 4
    assert "revisions" not in stored["who|2025-03-01|Germany"]
    assert stored["who|2025-03-01|Germany"]["first_seen"] == SEEN

    writes.start()  # the same file again (a restarted job downloads it once more)
    again = series.store(file_of(LATER + timedelta(hours=1), 7), rows_of(SECOND))
    assert (again.added, again.revised, again.unchanged) == (0, 0, 7)
    assert writes.written() == []
    assert documents(series) == stored


def test_a_revision_records_the_last_file_that_had_the_earlier_values(
    store: storage.BatchStore,
) -> None:
    series = case_series.of_store(store)
    series.store(file_of(SEEN, 6), rows_of(FIRST))
    series.store(file_of(SEEN + timedelta(days=1), 6), rows_of(FIRST))  # unchanged
    series.store(file_of(LATER, 7), rows_of(SECOND))
    third = [line.replace("2025-03-01,NA,Namibia,AFR,4,11", "2025-03-01,NA,Namibia,AFR,5,12")
             for line in SECOND]
    series.store(file_of(LATER + timedelta(days=7), 7), rows_of(third))
    namibia = documents(series)["who|2025-03-01|Namibia"]
    assert namibia["new_cases"] == 5
    assert [(r["new_cases"], r["first_seen"], r["last_seen"]) for r in namibia["revisions"]] == [
        (3, SEEN, SEEN + timedelta(days=1)), (4, LATER, LATER)]
    loads = list(store.sibling(case_series.LOADS).find({}, {"_id": 0, "seen": 1, "revised": 1}))
    assert [(load["revised"]) for load in loads] == [0, 0, 2, 1]


def test_a_row_listed_twice_in_one_file_the_later_wins_without_a_revision(
    store: storage.BatchStore,
) -> None:
    series = case_series.of_store(store)
    lines = [*FIRST, "2025-03-01,DE,Germany,EUR,,101,,5"]
    case_series_chunk = case_series.CHUNK_ROWS
    try:
        case_series.CHUNK_ROWS = 2  # the two rows land in different chunks
        series.store(file_of(SEEN, 7), rows_of(lines))
    finally:
        case_series.CHUNK_ROWS = case_series_chunk
    germany = documents(series)["who|2025-03-01|Germany"]
    assert germany["cumulative_cases"] == 101 and "revisions" not in germany


def test_rows_by_country_and_dates(store: storage.BatchStore) -> None:
    series = case_series.of_store(store)
    series.store(file_of(SEEN, 7), rows_of(SECOND))
    germany = [d["date"].day for d in series.rows(country="Germany")]
    assert germany == [1, 2, 3]
    window = series.rows("who", since=datetime(2025, 3, 2, tzinfo=UTC),
                         until=datetime(2025, 3, 3, tzinfo=UTC))
    assert [d["_id"] for d in window] == ["who|2025-03-02|Germany", "who|2025-03-02|Namibia"]
    midday = series.rows("who", since=datetime(2025, 3, 2, 12, tzinfo=UTC),
                         until=datetime(2025, 3, 3, 12, tzinfo=UTC))
    assert [d["_id"] for d in midday] == ["who|2025-03-03|Germany"]
    assert dict(series.countries()) == {"Germany": "DE", "Namibia": "NA", "Other": None,
                                        "Bonaire, Saint Eustatius and Saba": "BQ"}
    assert series.latest_date("who") == datetime(2025, 3, 3, tzinfo=UTC)
    assert series.latest_date("worldometers") is None


def test_the_embedded_documents_are_montydbs_own(tmp_path: Path) -> None:
    store = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    series = case_series.of_store(store)
    series.store(file_of(SEEN, 6), rows_of(FIRST))
    series.store(file_of(LATER, 7), rows_of(SECOND))
    through_montydb = {d["_id"]: d for d in store.sibling(case_series.COLLECTION).find()}
    assert len(through_montydb) == 7
    for key, document in documents(series).items():
        read = through_montydb[key]  # MontyDB gives naive UTC datetimes
        assert read["date"] == document["date"].replace(tzinfo=None)
        assert read.get("revisions", [{}])[0].get("new_cases") == (
            document.get("revisions", [{}])[0].get("new_cases"))
    store.close()


def test_a_store_that_fails_midway_keeps_whole_chunks_and_the_same_file_completes_it(
    tmp_path: Path,
) -> None:
    store = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    series = case_series.of_store(store)

    def failing(rows: Iterable[CaseRow]) -> Iterator[CaseRow]:
        for number, row in enumerate(rows):
            if number == 4:
                raise OSError("no space left on device")
            yield row

    saved = case_series.CHUNK_ROWS
    case_series.CHUNK_ROWS = 2
    try:
        with pytest.raises(OSError, match="no space"):
            series.store(file_of(SEEN, 7), failing(rows_of(SECOND)))
        assert len(documents(series)) == 4  # two whole chunks
        assert series.last_load("who") is None  # not recorded: it did not end
        summary = series.store(file_of(LATER, 7), rows_of(SECOND))
    finally:
        case_series.CHUNK_ROWS = saved
    assert (summary.added, summary.unchanged) == (3, 4)
    store.close()


# --------------------------------------------------------------------------
# the counters hand their files over


@pytest.fixture
def who_site() -> Iterator[WhoSite]:
    with serve_who(WhoSite("", who_file(FIRST))) as state:
        yield state


def test_whos_counter_keeps_each_new_file_and_not_a_304(
    who_site: WhoSite, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    store = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    series = case_series.of_store(store)
    clock = Clock(SEEN)
    with WhoCaseCounter(who_site.url, 10, clock=clock, series=series) as counter:
        assert counter.start().total == 100 + 9 + 764 + 8  # the count comes first
        assert counter.wait_for_series(30)
        assert len(documents(series)) == 6
        clock.advance(hours=1)  # unchanged: a 304, nothing stored
        counter.current()
        assert counter.wait_for_series(30) and who_site.not_modified == 1
        who_site.body = who_file(SECOND)
        clock.advance(hours=1)
        counter.current()
        assert counter.wait_for_refresh(30) and counter.current().total == 110 + 9 + 764 + 8
        assert counter.wait_for_series(30)
    loads = list(store.sibling(case_series.LOADS).find())
    assert [(load["added"], load["revised"]) for load in loads] == [(6, 0), (1, 2)]
    assert loads[0]["etag"] and loads[0]["seen"].replace(tzinfo=UTC) == SEEN
    assert documents(series)["who|2025-03-01|Namibia"]["revisions"][0]["new_cases"] == 3
    assert any("case series (who" in r.getMessage() for r in caplog.records)
    store.close()


class BrokenSeries:
    """A case series whose store is down."""

    def __init__(self) -> None:
        self.calls = 0
        self.read = threading.Event()

    def store(self, file: CaseFile, rows: Iterable[CaseRow]) -> None:
        self.calls += 1
        next(iter(rows))
        self.read.set()
        raise storage.StoreUnavailableError("MongoDB at db.example.net:27017 is unreachable")


def test_a_failing_series_never_fails_the_count(
    who_site: WhoSite, caplog: pytest.LogCaptureFixture,
) -> None:
    broken = BrokenSeries()
    with WhoCaseCounter(who_site.url, 10, clock=Clock(SEEN), series=broken) as counter:
        reading = counter.start()
        assert counter.wait_for_series(30)
        assert reading.total == 881 and counter.current().fresh
    assert broken.read.is_set()
    warned = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and "series" in r.getMessage()]
    assert warned == ["the case series was not stored (the count goes on): MongoDB at "
                      "db.example.net:27017 is unreachable"]


def test_worldometers_keeps_its_one_row_once(page: PageServer, tmp_path: Path) -> None:
    store = storage.open_store(config.Settings(embedded_db_path=tmp_path / "db"))
    series = case_series.of_store(store)
    with CaseCounter(page.url, 10, clock=Clock(SEEN), series=series) as counter:
        counter.start()
        counter.current()
        counter.current()
    (row,) = documents(series).values()
    assert (row["_id"], row["cumulative_cases"], row["new_cases"]) == (
        "worldometers|2024-04-13|World", 704_753_890, None)
    assert len(list(store.sibling(case_series.LOADS).find())) == 1
    store.close()


class SlowSeries:
    """A case series that takes a row, then waits until the counter is closing before
    reading the rest: what it then gets, or why it stopped."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.closing: threading.Event | None = None
        self.stopped: str | None = None

    def store(self, file: CaseFile, rows: Iterable[CaseRow]) -> None:
        rows = iter(rows)
        next(rows)
        self.started.set()
        assert self.closing is not None and self.closing.wait(30)
        try:
            for _ in rows:
                pass
        except CaseCountError as err:
            self.stopped = str(err)
            raise


def test_closing_the_counter_stops_a_file_being_stored(who_site: WhoSite) -> None:
    many = [f"2025-{1 + i // 28 % 12:02d}-{1 + i % 28:02d},C{i // 336},Country {i // 336},EUR,"
            f",{i},," for i in range(10_000)]
    who_site.body = who_file(many)
    slow = SlowSeries()
    counter = WhoCaseCounter(who_site.url, 10, clock=Clock(SEEN), series=slow)
    slow.closing = counter._closed  # set first thing by close()
    counter.start()
    assert slow.started.wait(30)
    counter.close()  # returns once the store has stopped (it reads no further)
    assert slow.stopped == "stopped: the counter was closed"
    assert counter.wait_for_series(0)
