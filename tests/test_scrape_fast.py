"""The fast case-count parse (same answers as a full parse) and the conditional GET."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.worldometers_page import build_page
from counts.worldometers import parse_counter_block
from scrape import (
    NO_COUNT,
    CaseCount,
    CaseCounter,
    CaseCountError,
    CounterNotFoundError,
    Validators,
    fetch_page_if_changed,
    parse_total_cases,
    parse_total_cases_full,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "worldometers.html"
CASES = 704_753_890
AS_OF = datetime(2024, 4, 13, tzinfo=UTC)  # the saved page's "Last updated:" line
FRESH = CaseCount(CASES, AS_OF, "worldometers", fresh=True)
CARRIED = FRESH.carried_over()


def soon_after() -> datetime:
    """A clock a day after the saved page's date: its reading is not stale (no warning)."""
    return AS_OF + timedelta(days=1)


def block(label: str, number: str, tag: str = "div", id_attr: str = 'id="maincounter-wrap"',
          ) -> str:
    return (f'<{tag} {id_attr} style="margin-top:15px">\n  <h1>{label}</h1>\n'
            f'  <div class="maincounter-number"><span>{number}</span></div>\n</{tag}>\n')


def page(*parts: str) -> str:
    return f"<!DOCTYPE html><html><head><title>t</title></head><body>{''.join(parts)}</body></html>"


REORDERED = page(
    '<div class="wrapper"><div class="inner">', block("Deaths:", "7,010,681"), "</div></div>",
    block("Recovered:", "675,619,811"),
    '<div class="extra"><section>', block("Coronavirus Cases:", "704,753,890 "),
    "</section></div>",
)


@pytest.fixture(scope="module")
def big_pages() -> dict[str, bytes]:
    return {"counters first": build_page().encode(),
            "counters last": build_page(counters_last=True).encode()}


# --------------------------------------------------------------------------
# fast parse == full parse


def test_fast_parse_takes_the_shortcut_on_real_looking_pages(big_pages: dict[str, bytes]) -> None:
    pages = {"saved page": SAMPLE.read_bytes(), "saved page as text": SAMPLE.read_text("utf-8"),
             "reordered": REORDERED, **big_pages}
    for name, html in pages.items():
        # the shortcut itself finds the count (None would mean "fell back to the full parse")
        assert parse_counter_block(html) == CASES, name
        assert parse_total_cases(html) == parse_total_cases_full(html) == CASES, name


def test_full_size_page_is_about_1_mb_with_a_big_country_table(
    big_pages: dict[str, bytes],
) -> None:
    for html in big_pages.values():
        assert 1_000_000 <= len(html) <= 1_200_000
        assert html.count(b"<tr") >= 600
        assert html.count(b'id="maincounter-wrap"') == 3


def test_fast_parse_is_far_cheaper_than_a_full_parse(big_pages: dict[str, bytes]) -> None:
    html = big_pages["counters last"]  # the label ~1 MB in: the shortcut's worst case
    started = time.perf_counter()
    parse_total_cases_full(html)
    full = time.perf_counter() - started
    fast = min(_timed(parse_total_cases, html) for _ in range(3))
    assert fast < full / 5, (fast, full)


def _timed(fn: object, arg: object) -> float:
    started = time.perf_counter()
    fn(arg)  # type: ignore[operator]
    return time.perf_counter() - started


TRICKY = {
    # the label quoted in a comment and in a script before the real heading
    "label in comment and script": page(
        "<!-- <h1>Coronavirus Cases:</h1> -->",
        '<script>var s = "<div id=\\"maincounter-wrap\\"><h1>Coronavirus Cases:</h1>'
        '<div class=\\"maincounter-number\\">1</div></div>";</script>',
        block("Coronavirus Cases:", "704,753,890")),
    "only in a comment": page("<!-- " + block("Coronavirus Cases:", "5") + " -->"),
    "unquoted and single-quoted ids": page(
        block("Deaths:", "7", id_attr="id=maincounter-wrap"),
        block("Coronavirus Cases:", "704,753,890", tag="section", id_attr="id='maincounter-wrap'")),
    "counter before the heading in the block": page(
        '<div id="maincounter-wrap"><div class="maincounter-number">704,753,890</div>'
        "<h2>Coronavirus Cases:</h2></div>"),
    "heading outside any block": page(
        "<h1>Coronavirus Cases:</h1><p>today</p>"
        '<div class="maincounter-number big"><span>704,753,890</span></div>',
        block("Deaths:", "7,010,681")),
    "block closed before the heading": page(
        '<div id="maincounter-wrap"><div class="maincounter-number">1</div></div>'
        "<h1>Coronavirus Cases:</h1>"
        '<div class="maincounter-number"><span>704,753,890</span></div>'),
    "nested block around the heading": page(
        '<div id="maincounter-wrap"><div class="maincounter-number">9</div>'
        '<div id="maincounter-wrap"></div><h1>Coronavirus Cases:</h1>'
        '<div class="maincounter-number">704,753,890</div></div>'),
    "label split by markup": page(block("Coronavirus <span>Cases:</span>", "704,753,890")),
    "label with nbsp entity": page(block("Coronavirus&nbsp;Cases:", "704,753,890")),
    "label as character references": page(
        block("&#67;oronavirus Cases&#58;", "704,753,890")),
    "second labelled heading later": page(
        block("Coronavirus Cases:", "704,753,890"), block("Coronavirus Cases:", "1")),
    "N/A counter": page(block("Coronavirus Cases:", "N/A")),
    "empty block, counter in the next one": page(
        '<div id="maincounter-wrap"><h1>Coronavirus Cases:</h1></div>',
        block("Deaths:", "7,010,681")),
    "wrong case label": page(block("coronavirus cases:", "1")),
    "upper-case tags": page(
        '<DIV ID="maincounter-wrap"><H1>Coronavirus Cases:</H1>'
        '<DIV CLASS="maincounter-number">704,753,890</DIV></DIV>'),
    "unclosed block at the end of the page": (
        '<div id="maincounter-wrap"><h1>Coronavirus Cases:</h1>'
        '<div class="maincounter-number">704,753,890'),
    "heading inside the counter": page(
        '<div id="maincounter-wrap"><h1>Coronavirus Cases:</h1>'
        '<div class="maincounter-number">704<h3>,753,890</h3></div></div>'),
    "heading in a comment inside the counter": page(
        '<div id="maincounter-wrap"><h1>Coronavirus Cases:</h1>'
        '<div class="maincounter-number">704<!-- <h3> -->,753,890</div></div>'),
    "not html": "Coronavirus Cases: 704,753,890",
    "binary": b"\x00\xff\xfe binary \x89PNG Coronavirus Cases:",
}


def _outcome(parse: object, html: str | bytes) -> object:
    try:
        return parse(html)  # type: ignore[operator]
    except CounterNotFoundError as err:
        return type(err)


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_fast_parse_answers_like_the_full_parse(name: str) -> None:
    html = TRICKY[name]
    assert _outcome(parse_total_cases, html) == _outcome(parse_total_cases_full, html)
    for encoded in ([html.encode()] if isinstance(html, str) else []):
        assert _outcome(parse_total_cases, encoded) == _outcome(parse_total_cases_full, html)


def test_a_bad_counter_gives_the_full_parse_error_message() -> None:
    html = TRICKY["N/A counter"]
    with pytest.raises(CounterNotFoundError, match="N/A"):
        parse_total_cases(html)


# --------------------------------------------------------------------------
# conditional GET


@dataclass
class PageServer:
    """A page with an ETag and/or Last-Modified that answers conditional requests."""

    url: str
    body: bytes
    etag: str | None = '"v1"'
    last_modified: str | None = None
    status: int = 200
    always_304: bool = False
    full_downloads: int = 0
    not_modified: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def site() -> Iterator[PageServer]:
    state = PageServer("", SAMPLE.read_bytes())
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                state.requests.append(dict(self.headers.items()))
                if state.status != 200:
                    self.send_error(state.status)
                    return
                if state.always_304:
                    self.send_response(304)
                    self.end_headers()
                    return
                match_etag = (state.etag is not None
                              and self.headers.get("If-None-Match") == state.etag)
                match_date = (state.etag is None and state.last_modified is not None
                              and self.headers.get("If-Modified-Since") == state.last_modified)
                if match_etag or match_date:
                    state.not_modified += 1
                    self.send_response(304)
                    self._validators()
                    self.end_headers()
                    return
                state.full_downloads += 1
                body = state.body
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self._validators()
            self.end_headers()
            self.wfile.write(body)

        def _validators(self) -> None:
            if state.etag is not None:
                self.send_header("ETag", state.etag)
            if state.last_modified is not None:
                self.send_header("Last-Modified", state.last_modified)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/coronavirus/"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_an_unchanged_page_is_not_downloaded_again(site: PageServer) -> None:
    with CaseCounter(site.url, timeout=5, clock=soon_after) as counter:
        assert counter.current() == FRESH
        assert counter.current() == FRESH  # fresh: the server says it is unchanged
        assert counter.current() == FRESH
    assert site.full_downloads == 1
    assert site.not_modified == 2
    assert "If-None-Match" not in site.requests[0]
    assert site.requests[1]["If-None-Match"] == '"v1"'
    assert counter.not_modified == 2


def test_the_date_and_freshness_are_kept_after_a_304(site: PageServer) -> None:
    site.body = site.body.replace(b"April 13, 2024, 00:00 GMT", b"November 28, 2026, 09:00 GMT")
    dated = CaseCount(CASES, datetime(2026, 11, 28, 9, tzinfo=UTC), "worldometers", fresh=True)
    with CaseCounter(site.url, timeout=5, clock=soon_after) as counter:
        assert counter.current() == dated
        assert counter.current() == dated  # a 304: the page's date, not none, and fresh
        site.status = 503
        assert counter.current() == dated.carried_over()
        site.status = 200
        assert counter.current() == dated
    assert (site.full_downloads, site.not_modified) == (1, 2)


def test_last_modified_is_used_without_an_etag(site: PageServer) -> None:
    site.etag = None
    site.last_modified = "Sat, 28 Nov 2026 22:00:00 GMT"
    with CaseCounter(site.url, timeout=5, clock=soon_after) as counter:
        assert counter.current() == FRESH
        assert counter.current() == FRESH
    assert (site.full_downloads, site.not_modified) == (1, 1)
    assert site.requests[1]["If-Modified-Since"] == site.last_modified
    assert "If-None-Match" not in site.requests[1]


def test_a_changed_page_is_downloaded_and_read(site: PageServer) -> None:
    with CaseCounter(site.url, timeout=5, clock=soon_after) as counter:
        assert counter.current() == FRESH
        site.body = site.body.replace(b"704,753,890", b"704,800,001")
        site.etag = '"v2"'
        assert counter.current() == replace(FRESH, total=704_800_001)
        assert counter.current() == replace(FRESH, total=704_800_001)
    assert (site.full_downloads, site.not_modified) == (2, 1)
    assert site.requests[2]["If-None-Match"] == '"v2"'


def test_validators_are_those_of_the_last_good_page(site: PageServer) -> None:
    with CaseCounter(site.url, timeout=5, clock=soon_after) as counter:
        assert counter.current() == FRESH
        good = site.body
        site.body, site.etag = b"<html>maintenance</html>", '"broken"'
        assert counter.current() == CARRIED  # no counter: the last good one, stale
        assert site.requests[-1]["If-None-Match"] == '"v1"'
        assert counter.current() == CARRIED
        assert site.requests[-1]["If-None-Match"] == '"v1"'  # not the broken page's
        site.body, site.etag = good, '"v1"'
        assert counter.current() == FRESH  # back to the good page: a 304
    assert site.not_modified == 1


def test_not_modified_after_failures_ends_the_failure_window(
    site: PageServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="scrape")
    with CaseCounter(site.url, timeout=5, clock=soon_after) as counter:
        assert counter.current() == FRESH
        site.status = 503
        assert counter.current() == CARRIED
        site.status = 200
        assert counter.current() == FRESH
    assert site.not_modified == 1
    assert any("available again after 1 failed" in r.getMessage() for r in caplog.records)


def test_no_validators_are_sent_before_a_count_was_obtained(site: PageServer) -> None:
    site.body = b"<html>no counter yet</html>"
    with CaseCounter(site.url, timeout=5, clock=soon_after) as counter:
        assert counter.current() == NO_COUNT
        assert counter.current() == NO_COUNT
    assert all("If-None-Match" not in request for request in site.requests)
    assert site.full_downloads == 2


def test_fetch_page_if_changed(site: PageServer) -> None:
    first = fetch_page_if_changed(site.url, timeout=5)
    assert first.body == SAMPLE.read_bytes()
    assert first.validators == Validators(etag='"v1"')
    again = fetch_page_if_changed(site.url, timeout=5, validators=first.validators)
    assert again.body is None
    assert again.validators == first.validators


def test_a_304_to_an_unconditional_request_is_an_error(site: PageServer) -> None:
    # e.g. a broken cache in the way: "not modified" although nothing was asked conditionally
    site.always_304 = True
    with pytest.raises(CaseCountError, match="304"):
        fetch_page_if_changed(site.url, timeout=5)
    with CaseCounter(site.url, timeout=5, clock=soon_after) as counter:
        assert counter.current() == NO_COUNT
