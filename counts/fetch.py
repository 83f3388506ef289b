"""HTTP for the case sources: one GET, conditional on validators, size-capped and
bounded as a whole by one deadline, whose failures become one-line CaseCountErrors."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Generic, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3

from counts.reading import CaseCountError

# the case count's log lines keep the name operators and tests filter on
log = logging.getLogger("scrape")

MAX_PAGE_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
# worldometers answers scripted clients (python-requests/x.y) with errors; look like a browser.
BROWSER_HEADERS = {
    "User-Agent": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36"
    ),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.9",
}

_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")

_T = TypeVar("_T")


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
    whole download: connecting, the headers and the body together. A
    browser-like User-Agent is sent. ``session`` is used if given (and left
    open), else a new one is made and closed.

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
    body, answered = fetch_body(url, timeout=timeout, session=session, validators=validators,
                                max_bytes=MAX_PAGE_BYTES, read=b"".join)
    return FetchedPage(body, answered)


def fetch_body(
    url: str,
    *,
    timeout: float,
    session: requests.Session | None,
    validators: Validators | None,
    max_bytes: int,
    read: Callable[[Iterator[bytes]], _T],
    accept: str | None = None,
    deadline: float | None = None,
) -> tuple[_T | None, Validators]:
    """GET ``url`` (conditionally on ``validators``) and ``read`` its body as it streams in.

    ``read`` gets the body's chunks (decompressed, at most ``max_bytes`` in
    all, else CaseCountError) and returns what the caller wants of them; it
    may stop early or raise CaseCountError itself. Returns ``(what read
    returned, the server's validators)``, or ``(None, validators)`` for 304 Not
    Modified. ``accept`` replaces the browser-like ``Accept`` header. Every
    requests/urllib3 failure, also one while ``read`` is consuming the body,
    becomes a CaseCountError naming the URL and the reason.

    ``deadline`` (seconds, default ``timeout``) bounds the whole download:
    connecting, the headers, the body and ``read`` together. ``timeout`` also
    bounds connecting and each wait for data. The download runs in a thread of
    its own, so that this call returns at the deadline whatever the server
    does (a server sending a byte now and then never times a read out); past
    the deadline its connection is shut, or, if the headers have not come yet,
    it is dropped when they do.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise CaseCountError(f"cannot fetch {url!r}: not an http(s) URL")
    validators = validators or Validators()
    headers = {**BROWSER_HEADERS, **({"Accept": accept} if accept else {}),
               **validators.request_headers()}
    limit = timeout if deadline is None else deadline
    download = _Download(url, timeout, headers, validators, max_bytes, read)
    worker = threading.Thread(target=download.run, args=(session,), name="case-count-fetch",
                              daemon=True)
    worker.start()
    if not download.done.wait(limit):
        download.abandon()
        raise CaseCountError(f"cannot fetch {url}: no answer within {limit:g} s")
    return download.outcome()


class _Download(Generic[_T]):
    """One GET and the reading of its body, run by a thread of its own; the caller
    waits for it at most the deadline, then :meth:`abandon` shuts its connection."""

    def __init__(self, url: str, timeout: float, headers: Mapping[str, str],
                 validators: Validators, max_bytes: int,
                 read: Callable[[Iterator[bytes]], _T]) -> None:
        self.url = url
        self.timeout = timeout
        self.headers = headers
        self.validators = validators
        self.max_bytes = max_bytes
        self.read = read
        self.done = threading.Event()
        self._lock = threading.Lock()  # guards _abandoned and _socket
        self._abandoned = False
        self._socket: socket.socket | None = None  # a duplicate of the response's socket
        self._result: tuple[_T | None, Validators] | None = None
        self._error: Exception | None = None

    def run(self, session: requests.Session | None) -> None:
        """The download thread: fetch and read, keep the outcome for :meth:`outcome`."""
        try:
            if session is None:
                with requests.Session() as own:
                    self._result = self._get(own)
            else:
                self._result = self._get(session)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
            self._error = CaseCountError(f"cannot fetch {self.url}: {_reason(err, self.timeout)}")
        except Exception as err:  # noqa: BLE001 - raised again in the caller's thread
            self._error = err
        finally:
            self._unwatch()
            self.done.set()
        if self._abandoned:
            log.debug("an abandoned download of %s ended: %s", self.url,
                      self._error or "complete")

    def outcome(self) -> tuple[_T | None, Validators]:
        """What :meth:`run` got; its error raised (a CaseCountError but for a bug)."""
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def abandon(self) -> None:
        """Past the deadline: shut the connection so that a waiting read ends now."""
        with self._lock:
            self._abandoned = True
            if self._socket is not None:
                _shut(self._socket)

    def _get(self, session: requests.Session) -> tuple[_T | None, Validators]:
        with session.get(self.url, headers=self.headers, timeout=self.timeout,
                         stream=True) as response:
            self._watch(response)
            if response.status_code == HTTPStatus.NOT_MODIFIED:
                if not self.validators:
                    raise CaseCountError(f"cannot fetch {self.url}: HTTP 304 Not Modified to "
                                         "an unconditional request")
                return None, Validators.of(response.headers) or self.validators
            response.raise_for_status()
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise CaseCountError(
                    f"cannot fetch {self.url}: the page is {int(declared)} bytes, "
                    f"more than the {self.max_bytes} allowed"
                )
            return self.read(self._capped(response)), Validators.of(response.headers)

    def _capped(self, response: requests.Response) -> Iterator[bytes]:
        """The response's body in chunks; CaseCountError once more than ``max_bytes``
        came, or once the download is abandoned."""
        received = 0
        for chunk in response.iter_content(CHUNK_BYTES):
            received += len(chunk)
            if received > self.max_bytes:
                raise CaseCountError(f"cannot fetch {self.url}: the page is larger than the "
                                     f"{self.max_bytes} bytes allowed")
            if self._abandoned:
                raise CaseCountError(f"cannot fetch {self.url}: abandoned past its deadline")
            yield chunk

    def _watch(self, response: requests.Response) -> None:
        """Keep a duplicate of the response's socket, for :meth:`abandon` to shut."""
        duplicate = None  # without a socket to shut, the per-chunk check still stops it
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fileno = os.dup(response.raw.fileno())
            try:
                duplicate = socket.socket(fileno=fileno)
            except OSError:
                os.close(fileno)
                raise
        with self._lock:
            self._socket = duplicate
            if self._abandoned:  # the headers came after the deadline
                raise CaseCountError(f"cannot fetch {self.url}: abandoned past its deadline")

    def _unwatch(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()  # the duplicate only: the session's stays as it is
                self._socket = None


def _shut(sock: socket.socket) -> None:
    """Shut ``sock`` both ways: a read waiting on it (in another thread) ends at once."""
    with contextlib.suppress(OSError):  # already closed by the other end
        sock.shutdown(socket.SHUT_RDWR)


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
