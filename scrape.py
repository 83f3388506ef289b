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
which never raises and falls back to the last good count. It asks for the
page conditionally (ETag / Last-Modified of the last good page), so an
unchanged page costs a 304 answer instead of a ~1 MB download and a parse:

    counter = CaseCounter(settings.worldometer_url, settings.scrape_timeout)
    count, fresh = counter.current()   # (704753890, True), or (last good, False)
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from urllib.parse import urlsplit

import requests
import urllib3
from bs4 import BeautifulSoup, Tag, UnicodeDammit

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

# the fast path of parse_total_cases: plain-text searches that find the label's block
# the label as markup: its two words apart by whitespace, &nbsp; or inline tags
_LABEL_HINT = re.compile(r"Coronavirus(?:\s|&nbsp;|&#160;|&#xa0;|<[^<>]*>)+Cases:",
                         re.IGNORECASE)
# an opening tag whose id attribute is exactly the wrapper's
_WRAPPER_OPEN = re.compile(
    rf"<[a-z][a-z0-9]*\s(?:[^<>]*?\s)?id\s*=\s*(?:\"{WRAPPER_ID}\"|'{WRAPPER_ID}'"
    rf"|{WRAPPER_ID}(?=[\s/>]))", re.IGNORECASE)
# where the label's block certainly ends: the next heading or the next wrapper
_BLOCK_END = re.compile(rf"<h[1-6][\s/>]|{_WRAPPER_OPEN.pattern}", re.IGNORECASE)
_RAW_OPEN = re.compile(r"<(script|style)[\s/>]", re.IGNORECASE)
_BLOCK_LOOKBEHIND = 16 * 1024  # the wrapper's opening tag must be this close to the label
_BLOCK_LOOKAHEAD = 64 * 1024  # a block running to the end of the page must be this short


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

    The answer is always that of :func:`parse_total_cases_full`, only faster:
    a cheap text search finds the label and its enclosing ``#maincounter-wrap``
    block, and only that block is parsed with BeautifulSoup (a full page is
    about 1 MB; the block a few hundred bytes). Whenever that shortcut is not
    sure (no such block, no counter in it, a counter that does not read as a
    number, ...) the whole page is parsed.

    Raises CounterNotFoundError when there is no such counter or it does not
    read as a whole number (``N/A``, empty, ...).
    """
    count = _parse_counter_block(page)
    if count is not None:
        return count
    return parse_total_cases_full(page)


def parse_total_cases_full(page: str | bytes) -> int:
    """:func:`parse_total_cases` by parsing the whole page with BeautifulSoup.

    The reference answer, and the fallback of the fast path; same result, same errors.
    """
    return _counter_in(BeautifulSoup(page, "html.parser"), require_wrapper=False)


def _counter_in(soup: BeautifulSoup, *, require_wrapper: bool) -> int:
    """The count under the first labelled heading of ``soup`` that has a counter.

    With ``require_wrapper`` (a parsed fragment), the first labelled heading
    must sit in a ``#maincounter-wrap`` block holding a counter, else
    CounterNotFoundError: the caller then parses the whole page.
    """
    for heading in soup.find_all(_HEADINGS):
        if " ".join(heading.get_text().split()) != CASES_LABEL:
            continue
        if require_wrapper and heading.find_parent(id=WRAPPER_ID) is None:
            break
        counter = _counter_of(heading)
        if require_wrapper and (counter is None or not _ends_before_more(counter)):
            break  # the fragment may have cut the counter short
        if counter is not None:
            return _to_int(counter.get_text())
    raise CounterNotFoundError(f"the page has no {CASES_LABEL!r} counter")


def _parse_counter_block(page: str | bytes) -> int | None:
    """The fast path of :func:`parse_total_cases`: the count, or None when unsure.

    Finds the first "Coronavirus Cases:" label in the markup that is not inside
    a comment, script or style, takes the ``#maincounter-wrap`` opening tag just
    before it and parses from there to the next heading or counter block. The
    fragment begins with the block's own opening tag, so every element opened
    in it is built exactly as in the whole page; a label heading that the
    fragment does not show inside that block, or a block without a readable
    counter, sends the caller to the full parse.
    """
    text = _decoded(page)
    if text is None:
        return None
    for hint in _LABEL_HINT.finditer(text):
        if _in_opaque_text(text, hint.start()):
            continue  # e.g. the label quoted in an HTML comment
        start = None
        window_start = max(0, hint.start() - _BLOCK_LOOKBEHIND)
        for wrapper in _WRAPPER_OPEN.finditer(text, window_start, hint.start()):
            start = wrapper.start()
        if start is None or _in_opaque_text(text, start):
            return None
        end_match = _BLOCK_END.search(text, hint.end())
        if end_match is not None:
            end = end_match.start()
            if _in_opaque_text(text, end):
                return None
        elif len(text) - hint.end() <= _BLOCK_LOOKAHEAD:
            end = len(text)
        else:
            return None
        try:
            return _counter_in(BeautifulSoup(text[start:end], "html.parser"),
                               require_wrapper=True)
        except CounterNotFoundError:
            return None  # the full parse decides, and words the error
    return None


def _ends_before_more(element: Tag) -> bool:
    """True when something follows ``element`` outside it: it was closed, not cut off."""
    node: Tag | None = element
    while node is not None:
        if node.next_sibling is not None:
            return True
        node = node.parent
    return False


def _decoded(page: str | bytes) -> str | None:
    """``page`` as text, decoded as BeautifulSoup would decode it; None if it cannot be."""
    if isinstance(page, str):
        return page
    return UnicodeDammit(page, is_html=True).unicode_markup


def _in_opaque_text(text: str, position: int) -> bool:
    """True when ``position`` may be inside a comment, a script or a style element."""
    opened = text.rfind("<!--", 0, position)
    if opened != -1 and text.find("-->", opened + 4, position) == -1:
        return True
    raw_elements = list(_RAW_OPEN.finditer(text, 0, position))
    if not raw_elements:
        return False
    last_raw = raw_elements[-1]
    closing = re.compile(rf"</{last_raw.group(1)}\s*>", re.IGNORECASE)
    return closing.search(text, last_raw.end(), position) is None


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


@dataclass(frozen=True)
class Validators:
    """What identifies one version of a page: the server's ``ETag`` and ``Last-Modified``."""

    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Validators:
        """The validators in a response's headers (either may be missing)."""
        return cls(headers.get("ETag") or None, headers.get("Last-Modified") or None)

    def __bool__(self) -> bool:
        return bool(self.etag or self.last_modified)

    def request_headers(self) -> dict[str, str]:
        """``If-None-Match`` / ``If-Modified-Since``: "send the page only if it changed"."""
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


@dataclass(frozen=True)
class FetchedPage:
    """A conditional fetch's answer: the body, or None for 304 Not Modified."""

    body: bytes | None
    validators: Validators


def fetch_page(url: str, *, timeout: float, session: requests.Session | None = None) -> bytes:
    """The body of ``url`` (decoded if compressed), at most MAX_PAGE_BYTES long.

    Only http and https URLs are fetched. ``timeout`` (seconds) bounds the
    connection and each wait for data. A browser-like User-Agent is sent.
    ``session`` is used if given (and left open), else a new one is made and closed.

    Raises CaseCountError naming the URL and the reason on any failure: bad URL,
    connection error, timeout, HTTP error status, page too large.
    """
    body = fetch_page_if_changed(url, timeout=timeout, session=session).body
    assert body is not None  # only a conditional request can be answered "not modified"
    return body


def fetch_page_if_changed(
    url: str,
    *,
    timeout: float,
    session: requests.Session | None = None,
    validators: Validators | None = None,
) -> FetchedPage:
    """:func:`fetch_page`, made conditional on ``validators`` (those of a page already read).

    Sends ``If-None-Match`` / ``If-Modified-Since``; when the server answers
    304 Not Modified, nothing is downloaded and the result's ``body`` is None.
    Otherwise ``body`` is the page. ``validators`` of the result are the
    server's for the page it means (kept from the request when a 304 names none).
    Raises CaseCountError like :func:`fetch_page`, and for a 304 to a request
    that had no validators.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise CaseCountError(f"cannot fetch {url!r}: not an http(s) URL")
    validators = validators or Validators()
    try:
        if session is None:
            with requests.Session() as own:
                return _download(own, url, timeout, validators)
        return _download(session, url, timeout, validators)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
        raise CaseCountError(f"cannot fetch {url}: {_reason(err, timeout)}") from err


def _download(
    session: requests.Session, url: str, timeout: float, validators: Validators
) -> FetchedPage:
    headers = {**BROWSER_HEADERS, **validators.request_headers()}
    with session.get(url, headers=headers, timeout=timeout, stream=True) as response:
        if response.status_code == HTTPStatus.NOT_MODIFIED:
            if not validators:
                raise CaseCountError(
                    f"cannot fetch {url}: HTTP 304 Not Modified to an unconditional request"
                )
            return FetchedPage(None, Validators.of(response.headers) or validators)
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
        return FetchedPage(bytes(body), Validators.of(response.headers))


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
    return _count_in_page(url, fetch_page(url, timeout=timeout, session=session))


def _count_in_page(url: str, page: bytes) -> int:
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
    The page is fetched conditionally: the ``ETag`` / ``Last-Modified`` of the
    last page that gave a count are sent back, and a 304 Not Modified answer
    means that count is still current, without downloading the page again.
    Not thread-safe: use it from one thread.
    """

    def __init__(self, url: str, timeout: float, session: requests.Session | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._last_good: int | None = None
        self._failures = 0  # consecutive failed attempts since the last success
        self._validators = Validators()  # of the page the last good count came from
        #: answers "304 Not Modified" so far (each a page not downloaded again)
        self.not_modified = 0

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
            count = self._fetch()
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

    def _fetch(self) -> int:
        """The count now: the last good one if the page has not changed since."""
        known = self._validators if self._last_good is not None else None
        page = fetch_page_if_changed(self.url, timeout=self.timeout, session=self._session,
                                     validators=known)
        if page.body is None:
            assert self._last_good is not None  # only then were validators sent
            self.not_modified += 1
            log.debug("page not modified since the last good count")
            count = self._last_good
        else:
            count = _count_in_page(self.url, page.body)
        self._validators = page.validators
        return count

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
