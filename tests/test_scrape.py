"""Tests of scrape.py against pages served from 127.0.0.1 (no outside network)."""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from processes import Clock

import config
import scrape
from counts.worldometers import UnreadableLines
from scrape import (
    MAX_PAGE_BYTES,
    NO_COUNT,
    CaseCount,
    CaseCounter,
    CaseCountError,
    CounterNotFoundError,
    fetch_page,
    fetch_total_cases,
    parse_last_updated,
    parse_total_cases,
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

TIMEOUT = 0.5  # client timeout for the tests that make the server hang

Route = Callable[[BaseHTTPRequestHandler], None]


def counter_block(label: str, number: str) -> str:
    return (
        '<div id="maincounter-wrap" style="margin-top:15px">\n'
        f"  <h1>{label}</h1>\n"
        f'  <div class="maincounter-number"><span style="color:#aaa">{number}</span></div>\n'
        "</div>\n"
    )


def page(*blocks: str) -> str:
    body = "\n".join(blocks)
    return f"<!DOCTYPE html><html><head><title>t</title></head><body>{body}</body></html>"


REORDERED = page(
    '<div class="wrapper"><div class="inner">',
    counter_block("Deaths:", "7,010,681"),
    "</div></div>",
    counter_block("Recovered:", "675,619,811"),
    '<div class="extra"><section>',
    counter_block("Coronavirus Cases:", "704,753,890 "),
    "</section></div>",
)
NO_COUNTER = page(
    counter_block("Deaths:", "7,010,681"),
    counter_block("Recovered:", "675,619,811"),
    "<p>Coronavirus Cases: 1,234 (mentioned in the text, not a counter)</p>",
)


# --------------------------------------------------------------------------
# a local HTTP server whose answer per path the tests choose


@dataclass
class LocalServer:
    base: str
    routes: dict[str, Route]
    release: threading.Event  # set at teardown: lets hanging handlers finish
    user_agents: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def serve(self, path: str, body: str | bytes, status: int = 200,
              headers: dict[str, str] | None = None) -> str:
        data = body.encode() if isinstance(body, str) else body

        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            handler.send_header("Content-Type", "text/html; charset=utf-8")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)

        self.routes[path] = route
        return self.url(path)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    routes: dict[str, Route] = {}
    release = threading.Event()
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("User-Agent", ""))
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            # the client may hang up early (size cap): expected
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                route(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # a short poll interval keeps shutdown() (and so each test's teardown) fast
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    local = LocalServer(f"http://{host}:{port}", routes, release, seen)
    local.serve("/page", SAMPLE.read_bytes())
    try:
        yield local
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def hang(release: threading.Event) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        release.wait(timeout=30)  # never answers before the test ends

    return route


# --------------------------------------------------------------------------
# the sample page


def test_sample_page_is_the_projects_own_and_reasonably_sized() -> None:
    html = SAMPLE.read_text(encoding="utf-8")
    assert 10_000 <= len(html.encode()) <= 30_000
    assert html.count('id="maincounter-wrap"') == 3
    for label in ("Coronavirus Cases:", "Deaths:", "Recovered:"):
        assert f"<h1>{label}</h1>" in html


def test_parse_sample_page() -> None:
    assert parse_total_cases(SAMPLE.read_bytes()) == CASES
    assert parse_total_cases(SAMPLE.read_text(encoding="utf-8")) == CASES


def test_sample_page_says_when_the_counters_stopped() -> None:
    html = SAMPLE.read_text(encoding="utf-8")
    assert "Last updated: April 13, 2024, 00:00 GMT</div>" in html
    assert "no longer updated" in html
    assert parse_last_updated(SAMPLE.read_bytes()) == AS_OF
    assert parse_last_updated(html) == AS_OF


# --------------------------------------------------------------------------
# parse_last_updated: pure


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('<div style="font-size:13px">Last updated: November 28, 2026, 09:00 GMT</div>',
         datetime(2026, 11, 28, 9, 0, tzinfo=UTC)),
        ("Last updated: April 13, 2024, 00:00 GMT", AS_OF),
        ("Last updated: April 13, 2024", AS_OF),  # no time: midnight
        ("Last updated:&nbsp;April&nbsp;13,&nbsp;2024,&nbsp;00:00&nbsp;GMT", AS_OF),
        ("Last\u00a0updated:\u00a0April 13, 2024, 00:00\u00a0GMT", AS_OF),
        ("Last updated:\n    April 13,\n 2024, 7:05 GMT", datetime(2024, 4, 13, 7, 5, tzinfo=UTC)),
        ("Last updated: <span>Apr 13, 2024</span>, <b>23:59</b> GMT",
         datetime(2024, 4, 13, 23, 59, tzinfo=UTC)),
        ("last UPDATED: sept 1, 2025, 10:00 UTC", datetime(2025, 9, 1, 10, 0, tzinfo=UTC)),
        ("Last updated: April 13 2024 00:00", AS_OF),
        ("<!-- Last updated: May 1, 2020 --><p>Last updated: April 13, 2024</p>", AS_OF),
        ("<script>x = 'Last updated: May 1, 2020'</script>Last updated: April 13, 2024", AS_OF),
        ("Last updated: February 30, 2024, 00:00 GMT", None),  # no such day
        ("Last updated: Smarch 13, 2024", None),
        ("Last updated: yesterday", None),
        ("Updated: April 13, 2024", None),
        ("The tracker is no longer updated since April 13, 2024", None),
        ("", None),
    ],
)
def test_parse_last_updated(text: str, expected: datetime | None) -> None:
    assert parse_last_updated(text) == expected
    assert parse_last_updated(text.encode()) == expected
    assert parse_last_updated(page(f"<div>{text}</div>")) == expected


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ("07:30 EST", datetime(2024, 4, 13, 12, 30, tzinfo=UTC)),
        ("07:30 EDT", datetime(2024, 4, 13, 11, 30, tzinfo=UTC)),
        ("07:30 CST", datetime(2024, 4, 13, 13, 30, tzinfo=UTC)),
        ("07:30 cdt", datetime(2024, 4, 13, 12, 30, tzinfo=UTC)),
        ("07:30 MST", datetime(2024, 4, 13, 14, 30, tzinfo=UTC)),
        ("07:30 MDT", datetime(2024, 4, 13, 13, 30, tzinfo=UTC)),
        ("07:30 PST", datetime(2024, 4, 13, 15, 30, tzinfo=UTC)),
        ("07:30 PDT", datetime(2024, 4, 13, 14, 30, tzinfo=UTC)),
        ("07:30 CET", datetime(2024, 4, 13, 6, 30, tzinfo=UTC)),
        ("07:30 (CEST)", datetime(2024, 4, 13, 5, 30, tzinfo=UTC)),
        ("07:30 GMT+2", datetime(2024, 4, 13, 5, 30, tzinfo=UTC)),
        ("07:30 GMT -3", datetime(2024, 4, 13, 10, 30, tzinfo=UTC)),
        ("07:30 UTC-5", datetime(2024, 4, 13, 12, 30, tzinfo=UTC)),
        ("07:30 UTC\u221205:00", datetime(2024, 4, 13, 12, 30, tzinfo=UTC)),  # a real minus
        ("07:30 UTC+5:30", datetime(2024, 4, 13, 2, 0, tzinfo=UTC)),
        ("01:00 UTC+09:00", datetime(2024, 4, 12, 16, 0, tzinfo=UTC)),  # the day before
        ("07:30 +0200", datetime(2024, 4, 13, 5, 30, tzinfo=UTC)),
        ("07:30 Z", datetime(2024, 4, 13, 7, 30, tzinfo=UTC)),
        ("7:30 PM GMT", datetime(2024, 4, 13, 19, 30, tzinfo=UTC)),
        ("7:30 am GMT", datetime(2024, 4, 13, 7, 30, tzinfo=UTC)),
        ("12:05 AM", datetime(2024, 4, 13, 0, 5, tzinfo=UTC)),  # no zone: GMT
        ("12:05 PM", datetime(2024, 4, 13, 12, 5, tzinfo=UTC)),
        ("9 p.m. EST", datetime(2024, 4, 14, 2, 0, tzinfo=UTC)),  # the day after
        ("<b>11:59</b> <i>pm</i> PDT", datetime(2024, 4, 14, 6, 59, tzinfo=UTC)),
        ("07:30</div><div>Source: WHO", datetime(2024, 4, 13, 7, 30, tzinfo=UTC)),  # no zone
    ],
)
def test_parse_last_updated_honours_the_zone_and_am_pm(time: str, expected: datetime) -> None:
    found = parse_last_updated(f"<div>Last updated: April 13, 2024, {time}</div>")
    assert found == expected
    assert found is not None and found.tzinfo is UTC


@pytest.mark.parametrize(
    ("time", "reason"),
    [
        ("10:00 AEST", "the time zone 'AEST' is not one this reads"),
        ("10:00 EST+2", "the time zone 'EST+2' is not one this reads"),
        ("10:00 GMT+15", "the offset in 'GMT+15' is not a time zone's"),
        ("10:00 UTC+5:75", "the offset in 'UTC+5:75' is not a time zone's"),
        ("13:00 PM GMT", "13 is not an hour of a 12-hour clock"),
        ("0:30 AM", "0 is not an hour of a 12-hour clock"),
        ("25:00 GMT", "hour must be in 0..23"),
    ],
)
def test_an_unreadable_last_updated_line_gives_none_and_warns_once(
    time: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    line = f"Last updated: March 3, 2031, {time}"
    other = f"Last updated: March 4, 2031, {time}"
    warned = UnreadableLines()  # what a counter keeps: each distinct line warns once
    with caplog.at_level(logging.DEBUG, logger="scrape"):
        assert parse_last_updated(f"<div>{line}</div>", warned) is None
        assert parse_last_updated(f"<p>{line}</p>".encode(), warned) is None
        assert parse_last_updated(other, warned) is None
    warnings = [r.getMessage() for r in scrape_records(caplog, logging.WARNING)]
    assert warnings == [
        f"cannot read the page's {line!r} ({reason}): it gives the case count no date",
        f"cannot read the page's {other!r} ({reason}): it gives the case count no date",
    ]
    assert len(scrape_records(caplog, logging.DEBUG)) == 1  # the line seen again


def test_an_unreadable_line_does_not_hide_a_readable_one() -> None:
    text = ("<!-- Last updated: May 1, 2020, 10:00 GMT -->"
            "<p>Last updated: March 5, 2031, 10:00 AEST</p><p>Last updated: April 13, 2024</p>")
    assert parse_last_updated(text) == AS_OF


def test_parse_last_updated_gives_aware_utc() -> None:
    found = parse_last_updated(SAMPLE.read_bytes())
    assert found is not None
    assert found.tzinfo is UTC


# --------------------------------------------------------------------------
# CaseCount


def test_case_count_describes_itself_in_one_short_line() -> None:
    assert FRESH.describe() == "704,753,890 (worldometers, as of 2024-04-13, fetched now)"
    assert CARRIED.describe() == "704,753,890 (worldometers, as of 2024-04-13, last good)"
    at_nine = CaseCount(5, datetime(2026, 11, 28, 9, tzinfo=UTC), "who", fresh=True)
    assert at_nine.describe() == "5 (who, as of 2026-11-28 09:00 UTC, fetched now)"
    undated = CaseCount(5, None, "worldometers")
    assert undated.describe() == "5 (worldometers, date unknown, last good)"
    assert NO_COUNT.describe() == "none (no count obtained yet)"
    assert CaseCount() == NO_COUNT and NO_COUNT.carried_over() is NO_COUNT


def test_case_count_keeps_its_fields_consistent() -> None:
    for bad in (dict(total=1), dict(source="who"), dict(as_of=AS_OF),
                dict(total=1, source="who", as_of=datetime(2024, 4, 13))):  # naive
        with pytest.raises(ValueError):
            CaseCount(**bad)  # type: ignore[arg-type]
    paris = datetime(2024, 4, 13, 2, tzinfo=timezone(timedelta(hours=2)))
    assert CaseCount(1, paris, "who").as_of == AS_OF
    assert CaseCount(1, paris, "who").as_of.tzinfo is UTC  # type: ignore[union-attr]
    with pytest.raises(AttributeError):
        FRESH.total = 1  # type: ignore[misc]


# --------------------------------------------------------------------------
# parse_total_cases: pure


def test_parse_finds_the_counter_by_label_not_position() -> None:
    assert parse_total_cases(REORDERED) == CASES


@pytest.mark.parametrize(
    "number",
    [
        "704,753,890",
        "704,753,890 ",
        "\n   704,753,890\n  ",
        "704,753,890\u00a0",
        "\u00a0704\u00a0753\u00a0890",
        "704\u202f753\u202f890",
        "704753890",
    ],
)
def test_parse_ignores_commas_whitespace_and_nbsp(number: str) -> None:
    assert parse_total_cases(page(counter_block("Coronavirus Cases:", number))) == CASES


@pytest.mark.parametrize("number", ["N/A", "", "  ", "-5", "1.5", "12abc", "\u0667\u0660"])
def test_parse_rejects_a_counter_that_is_not_a_number(number: str) -> None:
    with pytest.raises(CounterNotFoundError) as info:
        parse_total_cases(page(counter_block("Coronavirus Cases:", number)))
    assert "\n" not in str(info.value)


def test_parse_rejects_an_absurdly_long_number() -> None:
    assert parse_total_cases(page(counter_block("Coronavirus Cases:", "9" * 18))) == 10**18 - 1
    for number in ("1" + "0" * 18, "9" * 5000):
        with pytest.raises(CounterNotFoundError, match="too large") as info:
            parse_total_cases(page(counter_block("Coronavirus Cases:", number)))
        assert len(str(info.value)) < 200


def test_parse_error_message_quotes_the_bad_value() -> None:
    with pytest.raises(CounterNotFoundError, match="N/A"):
        parse_total_cases(page(counter_block("Coronavirus Cases:", "N/A")))


@pytest.mark.parametrize(
    "html",
    [
        NO_COUNTER,
        "",
        "not html at all",
        b"\x00\xff\xfe binary \x89PNG",
        page("<h1>Coronavirus Cases:</h1>"),
        page(counter_block("Coronavirus Deaths:", "1")),
        page(counter_block("Coronavirus Cases", "1")),  # no colon: not the label
    ],
)
def test_parse_page_without_the_counter(html: str | bytes) -> None:
    with pytest.raises(CounterNotFoundError):
        parse_total_cases(html)


def test_parse_label_with_inner_whitespace_and_markup() -> None:
    html = page(counter_block("\n  Coronavirus\n   <span>Cases:</span> ", "704,753,890"))
    assert parse_total_cases(html) == CASES


def test_parse_heading_outside_a_wrapper_takes_the_next_counter() -> None:
    html = page(
        "<h1>Coronavirus Cases:</h1>",
        '<p>as of today</p><div class="maincounter-number big"><span>704,753,890</span></div>',
        "<h1>Deaths:</h1>",
        '<div class="maincounter-number"><span>7,010,681</span></div>',
    )
    assert parse_total_cases(html) == CASES


def test_parse_never_borrows_the_next_blocks_number() -> None:
    html = page(
        "<h1>Coronavirus Cases:</h1>",
        "<h1>Deaths:</h1>",
        '<div class="maincounter-number"><span>7,010,681</span></div>',
    )
    with pytest.raises(CounterNotFoundError):
        parse_total_cases(html)
    wrapped = page(
        '<div id="maincounter-wrap"><h1>Coronavirus Cases:</h1></div>',
        counter_block("Deaths:", "7,010,681"),
    )
    with pytest.raises(CounterNotFoundError):
        parse_total_cases(wrapped)


def test_counter_not_found_is_a_case_count_error() -> None:
    assert issubclass(CounterNotFoundError, CaseCountError)


# --------------------------------------------------------------------------
# fetch_page / fetch_total_cases over HTTP


def test_fetch_total_cases_from_the_saved_page(server: LocalServer) -> None:
    assert fetch_total_cases(server.url("/page"), timeout=5) == CASES


def test_fetch_reordered_page(server: LocalServer) -> None:
    url = server.serve("/reordered", REORDERED)
    assert fetch_total_cases(url, timeout=5) == CASES


def test_fetch_page_without_counter(server: LocalServer) -> None:
    url = server.serve("/none", NO_COUNTER)
    with pytest.raises(CounterNotFoundError) as info:
        fetch_total_cases(url, timeout=5)
    assert one_line(info.value).startswith(url)


def test_fetch_na_counter(server: LocalServer) -> None:
    url = server.serve("/na", page(counter_block("Coronavirus Cases:", "N/A")))
    with pytest.raises(CounterNotFoundError, match="N/A"):
        fetch_total_cases(url, timeout=5)


def test_fetch_gzip_encoded_page(server: LocalServer) -> None:
    url = server.serve("/gz", gzip.compress(SAMPLE.read_bytes()),
                       headers={"Content-Encoding": "gzip"})
    assert fetch_total_cases(url, timeout=5) == CASES


def one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text
    return text


def test_http_error_status(server: LocalServer) -> None:
    url = server.serve("/boom", "server error", status=500)
    with pytest.raises(CaseCountError) as info:
        fetch_page(url, timeout=5)
    assert not isinstance(info.value, CounterNotFoundError)
    text = one_line(info.value)
    assert url in text
    assert "500" in text


def test_timeout(server: LocalServer) -> None:
    server.routes["/slow"] = hang(server.release)
    with pytest.raises(CaseCountError) as info:
        fetch_page(server.url("/slow"), timeout=TIMEOUT)
    text = one_line(info.value)
    assert server.url("/slow") in text
    assert "0.5 s" in text


def test_timeout_while_reading_the_body(server: LocalServer) -> None:
    def stall(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.write(b"<html><body>")
        handler.wfile.flush()
        server.release.wait(timeout=30)

    server.routes["/stall"] = stall
    with pytest.raises(CaseCountError, match="no answer within"):
        fetch_page(server.url("/stall"), timeout=TIMEOUT)


def trickle(release: threading.Event, hung_up: threading.Event, *, headers: bool) -> Route:
    """A route that sends a byte every 0.2 s (of its headers, or of its body after
    them) until the client hangs up or the test ends: no single read ever times out."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        body = b"<html><body>" + b" " * 100_000
        head = (b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        if headers:
            data = b"HTTP/1.0 200 OK\r\n" + b"X-Padding: " + b"x" * 60_000 + b"\r\n"
        else:
            handler.wfile.write(head)
            data = body
        try:
            for at in range(len(data)):
                handler.wfile.write(data[at:at + 1])
                handler.wfile.flush()
                if release.wait(0.2):
                    return
        except OSError:  # the client shut its connection
            hung_up.set()
            raise

    return route


@pytest.mark.parametrize("part", ["headers", "body"])
def test_one_deadline_bounds_the_whole_fetch(server: LocalServer, part: str) -> None:
    # a byte every 0.2 s never lets a 1 s read timeout fire: only an overall deadline
    # ends the fetch (it used to go on for as long as the server kept trickling)
    hung_up = threading.Event()
    server.routes["/trickle"] = trickle(server.release, hung_up, headers=part == "headers")
    deadline = 1.0
    returned = threading.Event()
    failures: list[CaseCountError] = []

    def fetch() -> None:
        try:
            fetch_page(server.url("/trickle"), timeout=deadline)
        except CaseCountError as err:
            failures.append(err)
        finally:
            returned.set()

    threading.Thread(target=fetch, daemon=True).start()
    assert returned.wait(3 * deadline), "the fetch outlived its deadline"
    (failure,) = failures
    assert str(failure) == f"cannot fetch {server.url('/trickle')}: no answer within 1 s"
    if part == "body":  # its connection was shut, not left trickling in the background
        assert hung_up.wait(10)


def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(CaseCountError) as info:
        fetch_page(url, timeout=5)
    text = one_line(info.value)
    assert url in text
    assert "connection failed" in text


def test_oversized_response_with_content_length(server: LocalServer) -> None:
    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(MAX_PAGE_BYTES + 1))
        handler.end_headers()
        handler.wfile.write(b"x" * 1024)

    server.routes["/huge"] = huge
    with pytest.raises(CaseCountError, match="bytes"):
        fetch_page(server.url("/huge"), timeout=5)


def test_oversized_response_without_content_length(server: LocalServer) -> None:
    block = b"<p>" + b"x" * (64 * 1024 - 3)

    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)  # HTTP/1.0: the body ends when the connection closes
        handler.end_headers()
        for _ in range(MAX_PAGE_BYTES // len(block) + 4):
            handler.wfile.write(block)

    server.routes["/endless"] = endless
    with pytest.raises(CaseCountError, match="larger than"):
        fetch_page(server.url("/endless"), timeout=5)


def test_oversized_after_decompression(server: LocalServer) -> None:
    bomb = gzip.compress(b"\0" * (MAX_PAGE_BYTES + 1024))
    url = server.serve("/bomb", bomb, headers={"Content-Encoding": "gzip"})
    assert len(bomb) < 100_000
    with pytest.raises(CaseCountError, match="larger than"):
        fetch_page(url, timeout=5)


def test_page_just_under_the_cap_is_accepted(server: LocalServer) -> None:
    body = SAMPLE.read_bytes()
    body += b" " * (MAX_PAGE_BYTES - len(body))
    url = server.serve("/big", body)
    assert len(fetch_page(url, timeout=5)) == MAX_PAGE_BYTES


@pytest.mark.parametrize(
    "url",
    ["ftp://example.org/", "file:///etc/passwd", "example.org", "", "http://", "javascript:x"],
)
def test_non_http_url(url: str) -> None:
    with pytest.raises(CaseCountError, match="not an http"):
        fetch_page(url, timeout=5)


def test_redirect_to_another_scheme(server: LocalServer) -> None:
    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", "ftp://127.0.0.1/page")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server.routes["/redirect"] = redirect
    with pytest.raises(CaseCountError) as info:
        fetch_page(server.url("/redirect"), timeout=5)
    one_line(info.value)


def test_sends_a_browser_like_user_agent(server: LocalServer) -> None:
    fetch_page(server.url("/page"), timeout=5)
    assert len(server.user_agents) == 1
    agent = server.user_agents[0]
    assert agent.startswith("Mozilla/5.0 (")
    assert "python-requests" not in agent.lower()


def test_uses_the_given_session_and_leaves_it_open(server: LocalServer) -> None:
    with requests.Session() as session:
        assert fetch_total_cases(server.url("/page"), timeout=5, session=session) == CASES
        assert fetch_total_cases(server.url("/page"), timeout=5, session=session) == CASES
    assert server.user_agents[0].startswith("Mozilla/5.0")


# --------------------------------------------------------------------------
# CaseCounter


def scrape_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "scrape" and r.levelno == level]


def test_counter_success_then_failure_keeps_the_last_good(server: LocalServer) -> None:
    url = server.serve("/flaky", SAMPLE.read_bytes())
    with CaseCounter(url, timeout=5, clock=soon_after) as counter:
        assert counter.current() == FRESH
        server.serve("/flaky", "oops", status=500)
        assert counter.current() == CARRIED
        assert counter.last_good == CASES


def test_counter_failure_before_any_success(server: LocalServer) -> None:
    url = server.serve("/down", "oops", status=503)
    with CaseCounter(url, timeout=5, clock=soon_after) as counter:
        assert counter.current() == NO_COUNT
        assert counter.last_good is None


def test_counter_warns_once_per_failure_window_and_logs_recovery(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="scrape")
    url = server.serve("/flaky", SAMPLE.read_bytes())
    with CaseCounter(url, timeout=5, clock=soon_after) as counter:
        assert counter.current() == FRESH
        server.serve("/flaky", "oops", status=500)
        for _ in range(3):
            assert counter.current() == CARRIED
        warnings = scrape_records(caplog, logging.WARNING)
        assert len(warnings) == 1
        message = warnings[0].getMessage()
        assert "500" in message
        assert str(CASES) in message
        assert len(scrape_records(caplog, logging.DEBUG)) >= 2

        server.serve("/flaky", SAMPLE.read_bytes())
        assert counter.current() == FRESH
        infos = scrape_records(caplog, logging.INFO)
        assert len(infos) == 1
        assert "available again after 3 failed attempts" in infos[0].getMessage()

        # a new failure window warns again
        server.serve("/flaky", "oops", status=500)
        counter.current()
        counter.current()
        assert len(scrape_records(caplog, logging.WARNING)) == 2


def test_counter_warning_before_any_success_says_there_is_no_count(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.routes["/slow"] = hang(server.release)
    with CaseCounter(server.url("/slow"), timeout=TIMEOUT, clock=soon_after) as counter:
        assert counter.current() == NO_COUNT
    (warning,) = scrape_records(caplog, logging.WARNING)
    assert "no count obtained yet" in warning.getMessage()


def test_counter_survives_a_page_without_the_counter(server: LocalServer) -> None:
    url = server.serve("/none", NO_COUNTER)
    with CaseCounter(url, timeout=5, clock=soon_after) as counter:
        assert counter.current() == NO_COUNT


def test_counter_keeps_one_given_session(server: LocalServer) -> None:
    class CountingSession(requests.Session):
        calls = 0

        def request(self, *args: object, **kwargs: object):  # type: ignore[override]
            CountingSession.calls += 1
            return super().request(*args, **kwargs)

    with CountingSession() as session:
        counter = CaseCounter(server.url("/page"), timeout=5, session=session)
        counter.current()
        counter.current()
        counter.close()  # not ours: stays usable
        assert session.get(server.url("/page"), timeout=5).ok
    assert CountingSession.calls == 3


def test_counter_reads_the_date_from_the_last_updated_line(server: LocalServer) -> None:
    later = SAMPLE.read_text().replace("April 13, 2024, 00:00 GMT", "November 28, 2026, 09:00 GMT")
    url = server.serve("/later", later)
    with CaseCounter(url, timeout=5, clock=soon_after) as counter:
        reading = counter.current()
    assert reading == CaseCount(CASES, datetime(2026, 11, 28, 9, tzinfo=UTC), "worldometers",
                                fresh=True)


def test_counter_page_without_a_date_gives_none_and_warns_once(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    undated = SAMPLE.read_text().replace("Last updated: April 13, 2024, 00:00 GMT", "")
    url = server.serve("/undated", undated)
    with CaseCounter(url, timeout=5, clock=soon_after) as counter:
        for _ in range(3):
            assert counter.current() == CaseCount(CASES, None, "worldometers", fresh=True)
    (warning,) = scrape_records(caplog, logging.WARNING)
    assert "Last updated" in warning.getMessage()
    assert url in warning.getMessage()


def test_counter_page_with_an_unreadable_date_gives_none_and_warns_once(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    line = "Last updated: April 13, 2024, 00:00 AWST"  # a zone the reader does not know
    url = server.serve("/awst", SAMPLE.read_text().replace(
        "Last updated: April 13, 2024, 00:00 GMT", line))
    with CaseCounter(url, timeout=5, clock=soon_after) as counter:
        for _ in range(3):
            assert counter.current() == CaseCount(CASES, None, "worldometers", fresh=True)
    messages = [r.getMessage() for r in scrape_records(caplog, logging.WARNING)]
    assert len(messages) == 2
    assert messages[0].startswith(f"cannot read the page's {line!r} (the time zone 'AWST'")
    assert url in messages[1] and "Last updated" in messages[1]


def test_counter_start_logs_the_first_reading(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scrape")
    with CaseCounter(server.url("/page"), timeout=5, clock=soon_after) as counter:
        assert counter.start() == FRESH
    (info,) = scrape_records(caplog, logging.INFO)
    assert info.getMessage() == (
        "case count at start: 704,753,890 (worldometers, as of 2024-04-13, fetched now)")
    assert not scrape_records(caplog, logging.WARNING)  # a day old: not stale


def test_stale_count_warns_at_start_then_once_a_day(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(datetime(2026, 11, 29, 12, tzinfo=UTC))
    age = (clock.now - AS_OF).days
    with CaseCounter(server.url("/page"), timeout=5, clock=clock) as counter:
        assert counter.start() == FRESH
        warnings = scrape_records(caplog, logging.WARNING)
        assert [w.getMessage() for w in warnings] == [
            f"the worldometers case count is as of 2024-04-13 ({age} days old): worldometers "
            "stopped updating its counters; use --case-source who for WHO's figures"
        ]
        for _ in range(3):  # batches within the day: no more warnings
            counter.current()
            clock.advance(hours=7)
        assert len(scrape_records(caplog, logging.WARNING)) == 1
        clock.advance(hours=2, minutes=59)  # 23:59 after the first warning
        counter.current()
        assert len(scrape_records(caplog, logging.WARNING)) == 1
        clock.advance(minutes=1)  # a day after it
        counter.current()
        counter.current()
        assert len(scrape_records(caplog, logging.WARNING)) == 2
        clock.advance(days=1)
        counter.current()
        assert len(scrape_records(caplog, logging.WARNING)) == 3
        assert f"({age + 2} days old)" in scrape_records(caplog, logging.WARNING)[-1].getMessage()


def test_staleness_threshold_is_30_days() -> None:
    alarm = scrape.staleness_warning("worldometers")
    assert not alarm.check(FRESH, AS_OF + timedelta(days=30))
    assert not alarm.check(NO_COUNT, AS_OF + timedelta(days=300))
    assert not alarm.check(CaseCount(CASES, None, "worldometers"), AS_OF + timedelta(days=300))
    assert alarm.check(CARRIED, AS_OF + timedelta(days=30, seconds=1))
    assert not alarm.check(CARRIED, AS_OF + timedelta(days=31))  # within the day


def test_open_counter_follows_the_case_source() -> None:
    settings = config.Settings(worldometers_url="http://127.0.0.1:9/w", scrape_timeout=3)
    with scrape.open_counter(settings) as counter:
        assert isinstance(counter, CaseCounter)
        assert (counter.url, counter.timeout, counter.source) == (
            "http://127.0.0.1:9/w", 3, "worldometers")
    with pytest.raises(ValueError, match="unknown case source"):
        scrape.open_counter(replace(settings, case_source="cdc"))


# --------------------------------------------------------------------------
# command line


@pytest.mark.usefixtures("cli_env")
def test_cli_prints_the_count(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert scrape.main(["--url", server.url("/page")]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{CASES}\n"
    info, stale = captured.err.splitlines()
    assert " INFO " in info
    assert info.endswith("case count 704,753,890 (worldometers, as of 2024-04-13, fetched now)")
    assert " WARNING " in stale and "--case-source who" in stale


@pytest.mark.usefixtures("cli_env")
def test_cli_timeout_alias(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.routes["/slow"] = hang(server.release)
    assert scrape.main(["--url", server.url("/slow"), "--timeout", str(TIMEOUT)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("scrape.py: error: cannot fetch ")


@pytest.mark.usefixtures("cli_env")
def test_cli_failure_exits_1_with_one_line(
    server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/none", NO_COUNTER)
    assert scrape.main(["--url", url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    expected = f"scrape.py: error: {url}: the page has no 'Coronavirus Cases:' counter\n"
    assert captured.err == expected


@pytest.mark.usefixtures("cli_env")
def test_cli_rejects_a_non_http_url(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        scrape.main(["--url", "ftp://x"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("scrape.py: error: --url / WORLDOMETERS_URL: ")
    assert lines[0].endswith("(from --url)")


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["--timeout", "abc"], {},
         "--timeout / SCRAPE_TIMEOUT: 'abc' is not a number (from --timeout)"),
        (["--scrape-timeout", "abc"], {},
         "--scrape-timeout / SCRAPE_TIMEOUT: 'abc' is not a number (from --scrape-timeout)"),
        (["--timeout=-1"], {}, "--timeout / SCRAPE_TIMEOUT: "),
        # not typed: scrape.py's own name for the option
        ([], {"SCRAPE_TIMEOUT": "abc"},
         "--timeout / SCRAPE_TIMEOUT: 'abc' is not a number (from SCRAPE_TIMEOUT)"),
        (["--worldometers-url", "ftp://x"], {}, "--worldometers-url / WORLDOMETERS_URL: "),
        (["--who-url", "ftp://x"], {}, "--who-url / WHO_DATA_URL: "),
    ],
)
def test_cli_option_error_names_the_flag_typed(
    argv: list[str], environ: dict[str, str], expected: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        scrape.main(argv)
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"scrape.py: error: {expected}")


@pytest.mark.usefixtures("cli_env")
def test_cli_reads_the_url_from_the_environment(
    server: LocalServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLDOMETERS_URL", server.url("/page"))
    assert scrape.main([]) == 0
    assert capsys.readouterr().out == f"{CASES}\n"


def test_cli_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scrape.py"), "--help"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    assert result.returncode == 0
    for text in ("--url", "--timeout", "--log-level", "WORLDOMETERS_URL", "SCRAPE_TIMEOUT",
                 "--case-source", "CASE_SOURCE", "--who-url", "WHO_DATA_URL"):
        assert text in result.stdout
