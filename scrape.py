"""Print the world's total Covid-19 case count, read from worldometers.info.

Usage: python scrape.py [--url URL] [--timeout SECONDS] [--log-level LEVEL]

Fetches the page and reads the number under the heading "Coronavirus Cases:",
found by that label and never by its place on the page. The count is printed
alone on stdout, for example:

    $ python scrape.py
    704753890
    $ python scrape.py --url http://127.0.0.1:8000/worldometers.html --timeout 5

The timeout applies to connecting and to each wait for data; a page larger
than 8 MiB is refused. Exit status: 0 with the count on stdout, 1 when the
count cannot be obtained (one line on stderr says why), 2 for a bad option.

The Spark driver uses the same code once per batch, through CaseCounter,
which never raises and falls back to the last good count:

    counter = CaseCounter(settings.worldometer_url, settings.scrape_timeout)
    count, fresh = counter.current()   # (704753890, True), or (last good, False)
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from types import TracebackType
from urllib.parse import urlsplit

import requests
import urllib3
from bs4 import BeautifulSoup, Tag

import config

log = logging.getLogger("scrape")

CASES_LABEL = "Coronavirus Cases:"
COUNTER_CLASS = "maincounter-number"
WRAPPER_ID = "maincounter-wrap"
MAX_PAGE_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
MAX_COUNT_DIGITS = 18  # a larger "count" is garbage (and would overflow BSON's int64)
# worldometers answers scripted clients (python-requests/x.y) with errors; look like a browser.
BROWSER_HEADERS = {
    "User-Agent": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36"
    ),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.9",
}

_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_NOT_DIGITS = re.compile(r"[\s,]")  # \s covers NBSP and the other Unicode spaces
_DIGITS = re.compile(r"[0-9]+")
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


class CaseCountError(Exception):
    """The case count could not be obtained; ``str(err)`` is one line saying why."""


class CounterNotFoundError(CaseCountError):
    """The page has no readable "Coronavirus Cases:" counter."""


# --------------------------------------------------------------------------
# parsing: pure


def parse_total_cases(page: str | bytes) -> int:
    """The number under the "Coronavirus Cases:" heading of a worldometers page.

    The heading is any ``h1``-``h6`` whose whitespace-normalised text is
    exactly ``Coronavirus Cases:``. Its counter is the ``div.maincounter-number``
    inside the same ``#maincounter-wrap`` block or, when the heading is in no
    such block, the first one after it before the next heading. Commas and
    (non-breaking) spaces in the number are ignored.

    Raises CounterNotFoundError when there is no such counter or it does not
    read as a whole number (``N/A``, empty, ...).
    """
    soup = BeautifulSoup(page, "html.parser")
    for heading in soup.find_all(_HEADINGS):
        if " ".join(heading.get_text().split()) != CASES_LABEL:
            continue
        counter = _counter_of(heading)
        if counter is not None:
            return _to_int(counter.get_text())
    raise CounterNotFoundError(f"the page has no {CASES_LABEL!r} counter")


def _counter_of(heading: Tag) -> Tag | None:
    """The counter belonging to ``heading``, or None."""
    wrapper = heading.find_parent(id=WRAPPER_ID)
    if wrapper is not None:
        return wrapper.find("div", class_=COUNTER_CLASS)
    for element in heading.next_elements:
        if not isinstance(element, Tag):
            continue
        if element.name in _HEADINGS or element.get("id") == WRAPPER_ID:
            return None  # the next block starts: its number is not ours
        if element.name == "div" and COUNTER_CLASS in (element.get("class") or ()):
            return element
    return None


def _to_int(text: str) -> int:
    digits = _NOT_DIGITS.sub("", text)
    problem = None
    if not _DIGITS.fullmatch(digits):
        problem = "not a number"
    elif len(digits.lstrip("0")) > MAX_COUNT_DIGITS:
        problem = "too large to be a count"  # and it would not fit a BSON int64
    if problem:
        shown = " ".join(text.split())
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise CounterNotFoundError(f"the {CASES_LABEL!r} counter reads {shown!r}, {problem}")
    return int(digits)


# --------------------------------------------------------------------------
# fetching: HTTP


def fetch_page(url: str, *, timeout: float, session: requests.Session | None = None) -> bytes:
    """The body of ``url`` (decoded if compressed), at most MAX_PAGE_BYTES long.

    Only http and https URLs are fetched. ``timeout`` (seconds) bounds the
    connection and each wait for data. A browser-like User-Agent is sent.
    ``session`` is used if given (and left open), else a new one is made and closed.

    Raises CaseCountError naming the URL and the reason on any failure: bad URL,
    connection error, timeout, HTTP error status, page too large.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise CaseCountError(f"cannot fetch {url!r}: not an http(s) URL")
    try:
        if session is None:
            with requests.Session() as own:
                return _download(own, url, timeout)
        return _download(session, url, timeout)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
        raise CaseCountError(f"cannot fetch {url}: {_reason(err, timeout)}") from err


def _download(session: requests.Session, url: str, timeout: float) -> bytes:
    with session.get(url, headers=BROWSER_HEADERS, timeout=timeout, stream=True) as response:
        response.raise_for_status()
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_PAGE_BYTES:
            raise CaseCountError(
                f"cannot fetch {url}: the page is {int(declared)} bytes, "
                f"more than the {MAX_PAGE_BYTES} allowed"
            )
        body = bytearray()
        for chunk in response.iter_content(CHUNK_BYTES):
            body += chunk
            if len(body) > MAX_PAGE_BYTES:
                raise CaseCountError(
                    f"cannot fetch {url}: the page is larger than the {MAX_PAGE_BYTES} "
                    "bytes allowed"
                )
        return bytes(body)


def _reason(err: Exception, timeout: float) -> str:
    """A short, one-line reason for a requests/urllib3 failure."""
    if isinstance(err, requests.HTTPError) and err.response is not None:
        response = err.response
        return f"HTTP {response.status_code} {response.reason or ''}".rstrip()
    timed_out = isinstance(err, requests.Timeout | urllib3.exceptions.TimeoutError) or (
        # requests reports a read timeout while streaming the body as a ConnectionError
        bool(err.args) and isinstance(err.args[0], urllib3.exceptions.TimeoutError)
    )
    if timed_out:
        return f"no answer within {timeout:g} s"
    text = " ".join(str(err).split())
    if isinstance(err, requests.ConnectionError):
        errno = _ERRNO.search(text)
        return f"connection failed: {errno.group(0).strip() if errno else text[:200]}"
    return f"{type(err).__name__}: {text[:200]}"


def fetch_total_cases(
    url: str, *, timeout: float, session: requests.Session | None = None
) -> int:
    """The world's total case count read from ``url``.

    Raises CaseCountError (CounterNotFoundError when the page was fetched but
    holds no readable counter); the message names the URL.
    """
    page = fetch_page(url, timeout=timeout, session=session)
    try:
        return parse_total_cases(page)
    except CounterNotFoundError as err:
        raise CounterNotFoundError(f"{url}: {err}") from None


# --------------------------------------------------------------------------
# the driver's view: last good count, one warning per failure window


class CaseCounter:
    """The current total case count, falling back to the last good one.

    Made once by the Spark driver and asked once per batch; it keeps one
    requests.Session (the one given, left open by :meth:`close`, or its own).
    Not thread-safe: use it from one thread.
    """

    def __init__(self, url: str, timeout: float, session: requests.Session | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._last_good: int | None = None
        self._failures = 0  # consecutive failed attempts since the last success

    @property
    def last_good(self) -> int | None:
        """The last count obtained, or None if none ever was."""
        return self._last_good

    def current(self) -> tuple[int | None, bool]:
        """``(count, fresh)``: fetch the count now; never raises CaseCountError.

        On success returns ``(count, True)``. On failure returns
        ``(last good count or None, False)``; the first failure after a success
        (or after start) logs one WARNING, the following ones log at DEBUG, and
        the first success after failures logs at INFO.
        """
        try:
            count = fetch_total_cases(self.url, timeout=self.timeout, session=self._session)
        except CaseCountError as err:
            self._failures += 1
            if self._failures == 1:
                fallback = (
                    f"using the last good count {self._last_good}"
                    if self._last_good is not None
                    else "no count obtained yet, so batches get none"
                )
                log.warning("case count unavailable: %s; %s", err, fallback)
            else:
                log.debug("case count still unavailable (%d failed attempts in a row): %s",
                          self._failures, err)
            return self._last_good, False
        if self._failures:
            log.info("case count available again after %d failed attempts: %d",
                     self._failures, count)
        else:
            log.debug("case count: %d", count)
        self._failures = 0
        self._last_good = count
        return count, True

    def close(self) -> None:
        """Close the session if this counter made it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> CaseCounter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (option errors exit with 2 directly)."""
    settings = config.load_settings(
        "scrape.py", config.SCRAPE_OPTIONS, argv, description=__doc__,
        aliases={"worldometer_url": "--url", "scrape_timeout": "--timeout"},
    )
    config.configure_logging(settings)
    log.debug("fetching %s (timeout %g s)", settings.worldometer_url, settings.scrape_timeout)
    try:
        count = fetch_total_cases(settings.worldometer_url, timeout=settings.scrape_timeout)
    except CaseCountError as err:
        sys.stderr.write(f"scrape.py: error: {err}\n")
        return 1
    sys.stdout.write(f"{count}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
