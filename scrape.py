"""Print the world's total Covid-19 case count, from worldometers.info or from WHO.

Usage: python scrape.py [--case-source {worldometers,who}] [--url URL] [--who-url URL]
                        [--timeout SECONDS] [--log-level LEVEL]

Two sources (--case-source, env CASE_SOURCE):

* ``worldometers`` (the default): fetches worldometers.info/coronavirus and
  reads the number under the heading "Coronavirus Cases:", found by that label
  and never by its place on the page. The page's "Last updated: April 13, 2024,
  00:00 GMT" line says when the figure is from (its zone and AM/PM honoured; a
  line that cannot be read gives no date and a warning). These counters stopped on
  2024-04-13 at 704,753,890 and the site says they are no longer updated.
* ``who``: reads WHO's daily file (--who-url, a CSV of about 25 MB, one row per
  country per day) and sums each country's latest ``Cumulative_cases``; the
  figure is as of the latest ``Date_reported`` that has a count. WHO publishes it in
  bursts, weeks apart.

The count is printed alone on stdout; one INFO line on stderr names the source
and the date the count is for, and a WARNING follows when that date is more
than 30 days ago:

    $ python scrape.py
    704753890
    $ python scrape.py --case-source who
    $ python scrape.py --url http://127.0.0.1:8000/worldometers.html --timeout 5

The timeout bounds the whole fetch of worldometers' page (connecting, the
headers and the body together) and, for WHO's ~25 MB file, connecting and
each wait for data, the whole download then getting at most 5 minutes; a
page larger than 8 MiB (WHO's file: 256 MiB) is refused. Exit status: 0 with the count on
stdout, 1 when the count cannot be obtained (one line on stderr says why), 2
for a bad option.

The Spark driver uses the same code through a counter, which never raises and
falls back to the last good reading:

    counter = open_counter(settings)    # CaseCounter or WhoCaseCounter
    counter.start()                     # once, at job start: first reading, staleness check
    reading = counter.current()         # once per batch: a CaseCount
    reading.total, reading.as_of, reading.source, reading.fresh
    counter.close()

CaseCounter asks worldometers on every ``current()``, conditionally (ETag /
Last-Modified of the last good page), so an unchanged page costs a 304 answer
instead of a ~1 MB download and a parse. WhoCaseCounter asks for WHO's file at
most once an hour, conditionally too, and downloads and parses it in a
background thread: a batch waits at most the scrape timeout for it, and
otherwise gets the last good reading while the refresh finishes.

The code lives in the ``counts`` package (one module per source, the HTTP
layer, the counters' common base, the reading type); this module is its
command line and the driver's entry point, and re-exports what callers use.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime

import requests

import config
from counts.counter import CaseCountSource
from counts.fetch import (
    CHUNK_BYTES,
    MAX_PAGE_BYTES,
    FetchedPage,
    Validators,
    fetch_page,
    fetch_page_if_changed,
)
from counts.reading import (
    MAX_COUNT,
    MAX_COUNT_DIGITS,
    NO_COUNT,
    CaseCount,
    CaseCountError,
    CounterNotFoundError,
    StalenessWarning,
    WhoFileError,
    check_source,
    staleness_warning,
    utc_now,
)
from counts.series import CaseSeriesSink
from counts.who import (
    WHO_MAX_BYTES,
    WhoCaseCounter,
    WhoTotal,
    fetch_who_total,
    who_world_total,
)
from counts.worldometers import (
    CaseCounter,
    fetch_total_cases,
    parse_last_updated,
    parse_total_cases,
    parse_total_cases_full,
    reading_of_page,
)
from startup import StartupError, program

__all__ = [
    "CHUNK_BYTES", "MAX_COUNT", "MAX_COUNT_DIGITS", "MAX_PAGE_BYTES", "NO_COUNT",
    "WHO_MAX_BYTES", "CaseCount", "CaseCountError", "CaseCountSource", "CaseCounter",
    "CounterNotFoundError", "FetchedPage", "StalenessWarning", "Validators",
    "WhoCaseCounter", "WhoFileError", "WhoTotal", "fetch_case_count", "fetch_page",
    "fetch_page_if_changed", "fetch_total_cases", "fetch_who_total", "main", "open_counter",
    "parse_last_updated", "parse_total_cases", "parse_total_cases_full", "staleness_warning",
    "utc_now", "who_world_total",
]

log = logging.getLogger("scrape")


def fetch_case_count(settings: config.Settings,
                     session: requests.Session | None = None) -> CaseCount:
    """One reading from ``settings.case_source``, now, without fallback.

    What ``python scrape.py`` prints. Raises CaseCountError saying why there is
    no count (the counters of :func:`open_counter` never raise).
    """
    timeout = settings.scrape_timeout
    if settings.case_source == "who":
        total = fetch_who_total(settings.who_url, timeout=timeout, session=session)
        return CaseCount(total.total, total.as_of, "who", fresh=True)
    check_source(settings.case_source)
    url = settings.worldometers_url
    count, as_of = reading_of_page(url, fetch_page(url, timeout=timeout, session=session))
    return CaseCount(count, as_of, "worldometers", fresh=True)


def open_counter(
    settings: config.Settings,
    session: requests.Session | None = None,
    *,
    clock: Callable[[], datetime] = utc_now,
    series: CaseSeriesSink | None = None,
) -> CaseCountSource:
    """The counter for ``settings.case_source``: CaseCounter (``worldometers``, asked
    at ``settings.worldometers_url``) or WhoCaseCounter (``who``, ``settings.who_url``),
    both with ``settings.scrape_timeout``. Call ``start()`` once, ``current()`` per
    batch, ``close()`` at the end (or use it as a context manager). ``series``: where
    the rows of each newly read file go (the job passes its store's case series)."""
    check_source(settings.case_source)
    if settings.case_source == "who":
        return WhoCaseCounter(settings.who_url, settings.scrape_timeout, session=session,
                              clock=clock, series=series)
    return CaseCounter(settings.worldometers_url, settings.scrape_timeout, session, clock=clock,
                       series=series)


# --------------------------------------------------------------------------
# command line


@program("scrape.py")
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (option errors exit with 2 directly)."""
    settings = config.load_settings(
        "scrape.py", config.SCRAPE_OPTIONS, argv, description=__doc__,
        aliases={"worldometers_url": "--url", "scrape_timeout": "--timeout"},
    )
    config.configure_logging(settings)
    url = settings.who_url if settings.case_source == "who" else settings.worldometers_url
    log.debug("fetching %s (timeout %g s)", url, settings.scrape_timeout)
    try:
        reading = fetch_case_count(settings)
    except CaseCountError as err:
        raise StartupError(str(err)) from None
    log.info("case count %s", reading.describe())
    staleness_warning(settings.case_source).check(reading, utc_now())
    sys.stdout.write(f"{reading.total}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
