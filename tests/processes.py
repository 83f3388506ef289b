"""Helpers for tests that run the real programs: stream.py, spark_streaming.py and
servers standing in for worldometers.info, Bluesky's Jetstream and MongoDB."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

import config
import transform
from sources import tweet_from_payload

PROJECT = Path(__file__).resolve().parents[1]
TIMEOUT = 120
BATCH_LINE = re.compile(r"batch \S+: (\d+) lines(?:, (\d+) kept)?")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any of the project's variables (a developer's
    .env or shell must not change a test)."""
    env = {k: v for k, v in os.environ.items()
           if k not in {opt.env for opt in config.OPTIONS.values()}}
    env.update(extra)
    return env


def write_tweets(path: Path, count: int, prefix: str = "tweet") -> list[str]:
    """A replay file of ``count`` bare tweets with unique ids; their texts."""
    texts = [f"{prefix} {i}" for i in range(count)]
    with path.open("w") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": f"{prefix}-{i}", "text": text}) + "\n")
    return texts


def write_tweets_and_deletes(path: Path, count: int, every: int, *, lag: int = 50,
                             prefix: str = "tweet") -> tuple[list[str], list[str]]:
    """A replay file of ``count`` bare tweets with unique ids in which, ``lag`` lines
    after each ``every``-th tweet, its author deletes it (a delete event of X's
    compliance stream, which the replay sends as a sealed delete record); the texts
    that are to stay stored, and those deleted."""
    kept, deleted = [], []
    with path.open("w") as handle:
        for i in range(count + lag):
            if i < count:
                handle.write(json.dumps({"id": f"{prefix}-{i}", "text": f"{prefix} {i}"}) + "\n")
                (deleted if i % every == 0 else kept).append(f"{prefix} {i}")
            if i >= lag and (i - lag) % every == 0 and i - lag < count:
                handle.write(json.dumps({"data": {"delete": {
                    "tweet": {"id": f"{prefix}-{i - lag}", "author_id": "1"},
                    "event_at": "2026-11-30T08:00:00.000Z"}}}) + "\n")
    return kept, deleted


def expected_content(path: Path) -> tuple[int, list[str]]:
    """(tweets in a replay file, their cleaned texts in order, empties and repeats dropped)."""
    sent, content, seen = 0, [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        tweet = tweet_from_payload(json.loads(line))
        assert tweet is not None, line
        sent += 1
        cleaned = transform.clean_text(tweet["text"])
        if cleaned and tweet["id"] not in seen:
            content.append(cleaned)
        seen.add(tweet["id"])
    return sent, content


class Clock:
    """An injected clock that tests move forward by hand (no sleeping)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class LogWaiter(logging.Handler):
    """Records log messages and lets a test wait for one containing some text."""

    def __init__(self, timeout: float = 10.0) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[int, str]] = []
        self.timeout = timeout
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.messages.append((record.levelno, record.getMessage()))
            self._cond.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return [message for _, message in self.messages]

    def count(self, text: str) -> int:
        with self._cond:
            return sum(text in message for _, message in self.messages)

    def wait_for(self, text: str, times: int = 1) -> None:
        with self._cond:
            found = self._cond.wait_for(lambda: self.count(text) >= times, self.timeout)
        assert found, f"no log line containing {text!r}: {self.messages}"


@contextlib.contextmanager
def capture_logs(*names: str) -> Iterator[LogWaiter]:
    """A LogWaiter on the named loggers, at DEBUG, for the time of the block."""
    waiter = LogWaiter()
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(waiter)
        logger.setLevel(logging.DEBUG)
    try:
        yield waiter
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(waiter)
            logger.setLevel(level)


class Program:
    """A running stream.py or spark_streaming.py whose log lines a test can await.

    Every one started is in :attr:`started_in_test` until the test ends, so that a
    failing test's report shows the logs of all its programs (conftest.py), not
    only the one whose wait failed."""

    #: the programs the running test started (conftest.py empties it after each test)
    started_in_test: ClassVar[list[Program]] = []

    def __init__(self, args: list[str], cwd: Path = PROJECT,
                 preexec_fn: Callable[[], None] | None = None,
                 env: dict[str, str] | None = None, own_group: bool = False) -> None:
        self.args = args
        self.lines: list[str] = []
        self.started = time.monotonic()
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=clean_env(**(env or {})),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=preexec_fn,  # a resource limit, set between fork and exec
            process_group=0 if own_group else None,  # as a terminal starts a program
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        Program.started_in_test.append(self)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, done: Callable[[list[str]], bool], timeout: float = TIMEOUT) -> None:
        """Wait until ``done(log lines)`` holds; fail with the log if it never does."""
        with self._changed:
            ok = self._changed.wait_for(
                lambda: done(self.lines) or not self._reader.is_alive(), timeout)
            if not (ok and done(self.lines)):
                raise AssertionError(f"{self.args[0]} never got there:\n{''.join(self.lines)}")

    def wait_for_text(self, text: str, timeout: float = TIMEOUT) -> None:
        self.wait_for(lambda lines: any(text in line for line in lines), timeout)

    def kept(self) -> int:
        """Tweets the job logged as kept so far."""
        return sum(int(m.group(2) or 0) for m in map(BATCH_LINE.search, self.lines) if m)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        self._reader.join(10)


def producer(tmp_path: Path, replay: Path, port: int, ack_port: int, rate: float,
             *extra: str) -> Program:
    program = Program(["stream.py", "--source", "replay", "--replay-file", str(replay),
                       "--rate", str(rate), "--port", str(port), "--ack-port", str(ack_port),
                       "--journal-path", str(tmp_path / "journal"),
                       "--control-secret-file", str(tmp_path / "control.secret"), *extra])
    program.wait_for_text("serving tweets on")
    return program


def job(tmp_path: Path, port: int, ack_port: int, page_url: str, *store: str,
        batch_seconds: float = 1, scrape_timeout: float = 10, engine: str = "dstream",
        remote: str | None = None) -> Program:
    """spark_streaming.py on ``engine`` (through the Spark Connect server at ``remote``,
    if given); ``store`` defaults to an embedded store in tmp_path."""
    engine_args = ["--engine", engine, "--checkpoint-path", str(tmp_path / "checkpoint")]
    if remote is not None:
        engine_args += ["--remote", remote]
    return Program(["spark_streaming.py", "--port", str(port), "--ack-port", str(ack_port),
                    "--batch-seconds", str(batch_seconds), "--worldometers-url", page_url,
                    "--scrape-timeout", str(scrape_timeout),
                    "--spool-path", str(tmp_path / "spool.jsonl"),
                    "--quarantine-path", str(tmp_path / "quarantine.jsonl"),
                    "--control-secret-file", str(tmp_path / "control.secret"), *engine_args,
                    *(store or ("--embedded-db-path", str(tmp_path / "db")))])


class PageServer:
    """worldometers.info stand-in: serves the project's saved page with a chosen
    count, or fails the way the real site can (HTTP 500, no counter, no answer)."""

    def __init__(self) -> None:
        self.template = (PROJECT / "samples" / "worldometers.html").read_text()
        self.count = 704_753_890
        self.mode = "ok"  # ok | error | no-counter | hang
        self.release = threading.Event()  # ends hung requests
        self.hung = threading.Event()  # set once a request hangs
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if page.mode == "hang":
                    page.hung.set()
                    page.release.wait(30)
                    return
                if page.mode == "error":
                    self.send_error(500)
                    return
                body = page.template.replace("704,753,890", f"{page.count:,}")
                if page.mode == "no-counter":
                    body = body.replace("Coronavirus Cases:", "Cases")
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/coronavirus/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class OnOffProxy:
    """A TCP proxy in front of a server that a test can switch off (connections
    refused, open ones cut) and on again: the store "stopped" and "started"
    while its data stays."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.on()

    def on(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def off(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._open = self._open, set()
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


# --- Jetstream --------------------------------------------------------------------------

T0_US = 1_796_000_000_000_000  # 2026-11-30T08:53:20Z, in microseconds


def post_event(rkey: str, text: str, time_us: int, *, did: str = "did:plc:alice",
               facets: list[dict[str, Any]] | None = None, tags: list[str] | None = None,
               langs: list[str] | None = None, **record: Any) -> dict[str, Any]:
    """A Jetstream event creating a post, in the shape docs/design.md documents."""
    body: dict[str, Any] = {"$type": "app.bsky.feed.post",
                            "createdAt": "2026-11-30T08:00:01.000Z",
                            "langs": ["en"] if langs is None else langs, "text": text}
    if facets is not None:
        body["facets"] = facets
    if tags is not None:
        body["tags"] = tags
    body.update(record)
    return {"did": did, "time_us": time_us, "kind": "commit",
            "commit": {"rev": f"rev{rkey}", "operation": "create",
                       "collection": "app.bsky.feed.post", "rkey": rkey,
                       "cid": f"bafyrei{rkey}", "record": body}}


def delete_event(rkey: str, time_us: int, *, did: str = "did:plc:alice") -> dict[str, Any]:
    """A Jetstream event saying its author deleted a post (no record comes with it)."""
    return {"did": did, "time_us": time_us, "kind": "commit",
            "commit": {"rev": f"rev{rkey}d", "operation": "delete",
                       "collection": "app.bsky.feed.post", "rkey": rkey}}


def facet(text: str, part: str, kind: str = "link", **feature: Any) -> dict[str, Any]:
    """A facet of ``kind`` (link, mention, tag) over the first ``part`` of ``text``,
    its range in UTF-8 bytes as Bluesky counts it."""
    start = len(text[:text.index(part)].encode("utf-8"))
    end = start + len(part.encode("utf-8"))
    return {"index": {"byteStart": start, "byteEnd": end},
            "features": [{"$type": f"app.bsky.richtext.facet#{kind}", **feature}]}


class JetstreamStandIn:
    """A local WebSocket server in place of Jetstream's ``/subscribe``.

    It keeps every event a test publishes, in order. A connection with
    ``?cursor=T`` first gets the kept events with ``time_us >= T`` (inclusive,
    as Jetstream does), then each new one as it is published; without a cursor
    it gets only new ones (the live tip). ``cut_first_after`` makes it cut the
    first connection after that many frames (a dropped connection); ``silent``
    makes it accept and then send nothing (a host gone quiet). ``paths`` lists
    every connection's request path.

    What Jetstream documents for the query, it does too: ``maxMessageSizeBytes=N``
    skips the events larger than N bytes (unless ``ignores_max_size``, a v1 host
    that does not know the option), and ``requireHello=true`` sends nothing
    until the client has sent a message. With ``segment_us`` set it acts as a
    v2 host whose archive is cut in segments that long: a cursor starts at the
    beginning of its segment, so older events come again. With ``retention_us``
    it keeps only the events of that long before its newest (Jetstream: about a
    day): a cursor older than the oldest kept event starts at that event, as
    Jetstream documents. :meth:`stall` makes the connections open now send
    nothing more (a host gone quiet), while new ones are served.

    Like Jetstream's own server it negotiates no compression (permessage-deflate)
    and pings every ``ping_interval`` seconds (Jetstream: 30); unlike it, a
    client that does not answer a ping within that long again is dropped.
    With ``tls`` (a server context) it serves ``wss://``. ``headers`` lists each
    connection's request headers.
    """

    def __init__(self, ping_interval: float = 30.0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.events: list[tuple[int | None, str]] = []  # (time_us, frame)
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []  # each connection's request headers
        self.cut_first_after: int | None = None
        self.silent = False
        self.ignores_max_size = False
        self.segment_us: int | None = None
        self.retention_us: int | None = None
        self._stalled = 0  # connections numbered below this send nothing more
        self._cond = threading.Condition()
        self._closed = False
        self._server = serve(self._handle, "127.0.0.1", 0, compression=None, ssl=tls,
                             ping_interval=ping_interval, ping_timeout=ping_interval)
        self.port = self._server.socket.getsockname()[1]
        self.url = f"{'wss' if tls else 'ws'}://127.0.0.1:{self.port}/subscribe"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def publish(self, *events: dict[str, Any] | str) -> None:
        """Keep ``events`` (event objects or raw frames) and send them to every connection."""
        with self._cond:
            for event in events:
                if isinstance(event, str):
                    self.events.append((None, event))
                else:
                    self.events.append((event.get("time_us"), json.dumps(event)))
            self._cond.notify_all()

    def cursors(self) -> list[int | None]:
        """The ``cursor`` each connection asked for (None: the live tip)."""
        with self._cond:
            paths = list(self.paths)
        found: list[int | None] = []
        for path in paths:
            values = parse_qs(urlsplit(path).query).get("cursor")
            found.append(int(values[0]) if values else None)
        return found

    def stall(self) -> None:
        """The connections open now send nothing more (and stay open); new ones are
        served as before."""
        with self._cond:
            self._stalled = len(self.paths)
            self._cond.notify_all()

    def oldest_kept(self) -> int | None:
        """The ``time_us`` of the oldest event kept (None: none is, or all are)."""
        with self._cond:
            return self._oldest_kept()

    def _oldest_kept(self) -> int | None:
        times = [at for at, _ in self.events if at is not None]
        if self.retention_us is None or not times:
            return None
        newest = max(times)
        return min(at for at in times if at >= newest - self.retention_us)

    def wait_for_connections(self, count: int, timeout: float = 30) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.paths) >= count, timeout), (
                f"{len(self.paths)} connection(s) instead of {count}")

    def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        path = connection.request.path
        with self._cond:
            self.headers.append(dict(connection.request.headers.raw_items()))
        query = parse_qs(urlsplit(path).query)
        values = query.get("cursor")
        limit = int(query.get("maxMessageSizeBytes", ["0"])[0])
        if self.ignores_max_size or limit <= 0:
            limit = None
        if query.get("requireHello") == ["true"]:
            with self._cond:
                self.paths.append(path)
                self._cond.notify_all()
            try:
                connection.recv()  # Jetstream waits for the subscriber's options message
            except ConnectionClosed:
                return
            path = ""  # already listed
        with self._cond:
            if values:
                cursor = int(values[0])
                if self.segment_us:
                    cursor -= cursor % self.segment_us  # the start of its archive segment
                oldest = self._oldest_kept()
                if oldest is not None:
                    cursor = max(cursor, oldest)  # what it no longer keeps is gone
                index = next((i for i, (at, _) in enumerate(self.events)
                              if at is not None and at >= cursor), len(self.events))
            else:
                index = len(self.events)
            number = len(self.paths) - (0 if path else 1)  # this connection's
            if path:
                self.paths.append(path)
            cut_after = self.cut_first_after if len(self.paths) == 1 else None
            self._cond.notify_all()
        sent = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda start=index: self._closed or (
                    not self._quiet(number) and start < len(self.events)), 0.5)
                if self._closed:
                    return
                batch = ([] if self._quiet(number)
                         else [frame for _, frame in self.events[index:]])
                index += len(batch)
            for frame in batch:
                if limit is not None and len(frame.encode("utf-8")) > limit:
                    continue  # Jetstream skips it for this subscriber
                if cut_after is not None and sent >= cut_after:
                    connection.close()
                    return
                try:
                    connection.send(frame)
                except ConnectionClosed:  # the client went away
                    return
                sent += 1
            if batch == [] and connection.state.name == "CLOSED":
                return

    def _quiet(self, number: int) -> bool:
        return self.silent or number < self._stalled

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
