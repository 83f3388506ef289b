"""A file like WHO's daily CSV (its header and quirks, written by the tests) and a local
stand-in for the host that serves it, shared by the WHO tests."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEADER = ("Date_reported", "Country_code", "Country", "WHO_region", "New_cases",
          "Cumulative_cases", "New_deaths", "Cumulative_deaths")
FIRST_DAY = date(2025, 2, 24)


@dataclass
class Country:
    """One country's rows: its Cumulative_cases per day from FIRST_DAY (None: blank)."""

    code: str
    name: str
    region: str
    cumulative: Sequence[int | None]
    newest_first: bool = False  # write its rows latest date first


def who_csv(countries: Sequence[Country], *, first_day: date = FIRST_DAY,
            header: Sequence[str] = HEADER, bom: bool = True, crlf: bool = True) -> bytes:
    """A file like WHO's: rows grouped by country (not by date), New_cases blank when
    nothing new, Cumulative_cases carried forward, names quoted when they hold a comma."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(header)
    for country in countries:
        rows = []
        previous = 0
        for offset, cumulative in enumerate(country.cumulative):
            day = first_day + timedelta(days=offset)
            new = "" if cumulative is None or cumulative == previous else cumulative - previous
            values = {"Date_reported": day.isoformat(), "Country_code": country.code,
                      "Country": country.name, "WHO_region": country.region,
                      "New_cases": new,
                      "Cumulative_cases": "" if cumulative is None else cumulative,
                      "New_deaths": "", "Cumulative_deaths": 0}
            rows.append([values.get(name, "") for name in header])
            previous = cumulative if cumulative is not None else previous
        writer.writerows(reversed(rows) if country.newest_first else rows)
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8")


# --------------------------------------------------------------------------
# a local stand-in for WHO's file host


@dataclass
class WhoSite:
    """Serves ``body`` with an ETag (and honours If-None-Match); can fail or stall."""

    url: str
    body: bytes = b""
    status: int = 200
    #: send this many bytes of the body, then wait for ``release``
    stall_after: int | None = None
    #: send the body a byte at a time, this many seconds apart (until ``release``)
    trickle_every: float | None = None
    release: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)
    requests: list[dict[str, str]] = field(default_factory=list)
    downloads: int = 0
    not_modified: int = 0

    @property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.body).hexdigest()[:16]}"'


@contextlib.contextmanager
def serve_who(state: WhoSite) -> Iterator[WhoSite]:
    """Serve ``state`` from 127.0.0.1 (its ``url`` set here) until the block ends."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                state.requests.append(dict(self.headers.items()))
                status, body, etag, stall, trickle = (state.status, state.body, state.etag,
                                                      state.stall_after, state.trickle_every)
                unchanged = self.headers.get("If-None-Match") == etag
                if status == 200 and unchanged:
                    state.not_modified += 1
                elif status == 200:
                    state.downloads += 1
            if status != 200:
                self.send_error(status)
                return
            self.send_response(304 if unchanged else 200)
            self.send_header("ETag", etag)
            if unchanged:
                self.end_headers()
                return
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if trickle is not None:
                    for at in range(len(body)):
                        self.wfile.write(body[at:at + 1])
                        self.wfile.flush()
                        if state.release.wait(trickle):
                            return
                if stall is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:stall])
                self.wfile.flush()
                state.stalled.set()
                state.release.wait(30)
                self.wfile.write(body[stall:])

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/whdh/COVID/daily.csv"
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
