"""What each program exposes to Prometheus.

With ``--metrics-port PORT`` (``METRICS_PORT``; 0 or unset: off) a program
serves ``http://127.0.0.1:PORT/metrics`` from a thread of prometheus_client.
Every name starts with :data:`PREFIX` and says its unit (``_total``,
``_seconds``, ``_bytes``).

* stream.py: :class:`ProducerCollector` reads the live counters of the
  ``TweetServer``, its journal and the source (:class:`SourceFigures`) when
  Prometheus scrapes, so a post costs nothing more.
* spark_streaming.py: :class:`JobMetrics` adds each batch's figures to its
  totals once a batch (each engine's listener calls
  :meth:`JobMetrics.batch_completed`; through Spark Connect, where the server
  stores the batch, :meth:`JobMetrics.batch_run`) and reads the spool and the
  case count's age when scraped.

Counters are totals since the process started (Prometheus's ``rate`` and
``increase`` handle the reset of a restart); gauges are levels. Each program
has a registry of its own, not prometheus_client's global one.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from counts.reading import CaseCount
from storage.ledger import RecentGaps

if TYPE_CHECKING:
    from job.batch import BatchStats
    from sources.coverage import CoverageLedger
    from sources.jetstream_progress import JetstreamProgress
    from sources.replay import ReplaySource
    from sources.twitter import TwitterSource

log = logging.getLogger("metrics")

PREFIX = "covid19"
#: Only this machine can scrape (docs/security.md): a Prometheus elsewhere goes through a proxy.
ADDRESS = "127.0.0.1"
#: Spark's processing time of a batch; batches are 20 s by default.
PROCESSING_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
#: One write of a batch's document(s) to the store.
WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class MetricsError(Exception):
    """The metrics endpoint cannot be served; ``str(err)`` is one line."""


# --------------------------------------------------------------------------
# serving


class _Slots:
    """The connections being answered, at most ``limit`` at once; of them, the ones
    whose request is not in yet, each with its deadline (``timeout`` after it came).

    A connection that has not sent its whole request by its deadline is dropped, so a
    silent or trickling one holds its thread and descriptor ``timeout`` s at most.
    When all slots are taken, the connection waiting longest for its request makes
    room at once (as the control port does), so that idle connections cannot keep a
    scrape waiting; Prometheus sends its request as soon as it connects.
    """

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self._changed = threading.Condition()
        self._taken = 0
        self._waiting: dict[socket.socket, float] = {}  # oldest first: same timeout for all
        self._dropped: set[socket.socket] = set()  # shut down, their handler not done yet
        self._ended: list[threading.Thread] = []  # handlers done, maybe not yet returned
        self._closing = False

    def admit(self, conn: socket.socket) -> bool:
        """Take a slot for ``conn``, waiting for one (and making room) if all are
        taken; False once :meth:`close` was called."""
        with self._changed:
            while self._taken >= self.limit and not self._closing:
                if not self._dropped and self._waiting:  # make room: none is coming
                    self._drop(next(iter(self._waiting)))
                self._changed.wait(self._expire())
            if self._closing:
                return False
            self._taken += 1
            self._waiting[conn] = time.monotonic() + self.timeout
            ended, self._ended = self._ended, []
        for thread in ended:  # at most ``limit`` handler threads alive, not one more
            thread.join()
        return True

    def request_read(self, conn: socket.socket) -> bool:
        """``conn``'s request is in: its deadline no longer applies. False if it
        came too late (the connection was dropped)."""
        with self._changed:
            return self._waiting.pop(conn, None) is not None

    def done(self, conn: socket.socket, thread: threading.Thread | None) -> None:
        """``conn``'s handler ``thread`` is done and has closed it: its slot is free."""
        with self._changed:
            self._taken -= 1
            self._waiting.pop(conn, None)
            self._dropped.discard(conn)
            if thread is not None:
                self._ended.append(thread)
            self._changed.notify_all()

    def expire(self) -> float | None:
        """Drop the connections past their deadline; seconds until the next one (None:
        no connection is waiting for its request)."""
        with self._changed:
            return self._expire()

    def _expire(self) -> float | None:
        now = time.monotonic()
        for conn, deadline in list(self._waiting.items()):
            if deadline > now:
                return deadline - now
            self._drop(conn)
        return None

    def _drop(self, conn: socket.socket) -> None:
        del self._waiting[conn]
        self._dropped.add(conn)
        with contextlib.suppress(OSError):  # its handler's read ends at once
            conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Admit no more connections (wakes an :meth:`admit` that waits)."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()


class _Server(WSGIServer):
    """wsgiref's server with a thread per connection, as many as ``slots`` allow."""

    request_queue_size = 64  # connections the kernel holds until accepted (socketserver: 5)

    def __init__(self, address: tuple[str, int], slots: _Slots) -> None:
        self.slots = slots
        super().__init__(address, _QuietHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.admit(request):
            self.shutdown_request(request)
            return
        request.settimeout(self.slots.timeout)  # each read, and the whole answer's write
        thread = threading.Thread(target=self._answer, args=(request, client_address),
                                  name="metrics-request", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: this connection is closed
            self.slots.done(request, None)
            raise

    def _answer(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except OSError as err:  # timed out, dropped or reset: not worth a traceback
            log.debug("metrics: a connection from %s ended: %s", client_address[0], err)
        finally:
            self.shutdown_request(request)
            self.slots.done(request, threading.current_thread())


class _QuietHandler(WSGIRequestHandler):
    server: _Server

    def parse_request(self) -> bool:
        """The request line and headers are in; False (no answer) if the connection
        was dropped meanwhile."""
        return super().parse_request() and self.server.slots.request_read(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: Prometheus asks every 15 s, for weeks."""


class MetricsServer:
    """The ``/metrics`` endpoint of one registry, served from a daemon thread that
    sleeps until a connection comes, a connection's deadline passes or :meth:`close`
    wakes it (prometheus_client's own ``start_http_server`` wakes twice a second to
    look for a shutdown). Each connection is answered on a thread of its own."""

    #: most connections answered at once (a thread and a descriptor each); when all
    #: are taken, the one waiting longest for its request makes room for a new one
    MAX_HANDLERS = 8
    #: seconds a connection has to send its whole request, however slowly it trickles
    #: (and to take the answer): Prometheus sends its request as soon as it connects
    REQUEST_TIMEOUT = 5.0

    def __init__(self, registry: CollectorRegistry, port: int, addr: str = ADDRESS) -> None:
        """Bind ``addr:port`` and serve; raises MetricsError (one line naming
        METRICS_PORT) when it cannot be bound."""
        self._slots = _Slots(self.MAX_HANDLERS, self.REQUEST_TIMEOUT)
        try:
            self._httpd = _Server((addr, port), self._slots)
        except OSError as err:
            raise MetricsError(
                f"cannot serve metrics on {addr}:{port} (--metrics-port / METRICS_PORT): "
                f"{err.strerror or err}") from None
        self._httpd.set_app(make_wsgi_app(registry))
        self._httpd.timeout = 0  # handle_request() never waits: select() below does
        self._wake, self._woken = socket.socketpair()
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://{addr}:{self.port}/metrics"
        self._thread = threading.Thread(target=self._serve, name="metrics", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._httpd, selectors.EVENT_READ)
            selector.register(self._woken, selectors.EVENT_READ)
            while True:
                ready = selector.select(self._slots.expire())
                if any(key.fileobj is self._woken for key, _ in ready):
                    return
                if ready:
                    self._httpd.handle_request()  # a connection: answered on a thread

    def close(self) -> None:
        """Stop serving and release the port."""
        self._slots.close()
        self._wake.send(b"x")
        self._thread.join(5)
        self._httpd.server_close()
        self._wake.close()
        self._woken.close()


def serve(registry: CollectorRegistry, port: int | None) -> MetricsServer | None:
    """Serve ``registry`` on 127.0.0.1:``port``, or nothing when ``port`` is 0 or None."""
    if not port:
        return None
    server = MetricsServer(registry, port)
    log.info("Prometheus metrics on %s", server.url)
    return server


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


# --------------------------------------------------------------------------
# stream.py


@dataclass(frozen=True)
class SourceFigures:
    """What a source has counted so far; None where the source has no such figure."""

    events: int | None = None  # Jetstream frames received
    posts: int | None = None  # posts read (with text)
    matched: int | None = None  # posts that matched and were handed on
    reconnects: int | None = None
    lag_seconds: float | None = None  # now minus the newest event's time
    read_today: int | None = None  # X posts read this UTC day (billed)
    daily_cap: int | None = None  # TWITTER_MAX_POSTS
    deletes: int | None = None  # deletes of posts forwarded (sealed records)
    gaps: int | None = None  # gaps recorded in the coverage ledger
    gap_seconds: float | None = None  # source seconds those gaps cover


def _gaps(ledger: CoverageLedger | None) -> dict[str, Any]:
    if ledger is None:
        return {}
    return {"gaps": ledger.gaps, "gap_seconds": ledger.gap_seconds}


def bluesky_figures(source: JetstreamProgress) -> SourceFigures:
    """The figures of a Bluesky (Jetstream) source."""
    return SourceFigures(events=source.events, posts=source.posts, matched=source.matched,
                         reconnects=source.reconnects, lag_seconds=source.lag_seconds(),
                         deletes=source.deletes, **_gaps(getattr(source, "ledger", None)))


def twitter_figures(source: TwitterSource) -> SourceFigures:
    """The figures of an X API source: every post read matched the stream's rules."""
    cap = source.daily_cap
    return SourceFigures(posts=source.read, matched=source.received,
                         reconnects=max(0, source.connections - 1),
                         read_today=None if cap is None else cap.used_today,
                         daily_cap=None if cap is None else cap.limit,
                         **_gaps(getattr(source, "ledger", None)))


def replay_figures(source: ReplaySource) -> SourceFigures:
    """The figures of a replayed file: each tweet emitted counts as read and matched."""
    return SourceFigures(posts=source.emitted, matched=source.emitted, deletes=source.deletes,
                         **_gaps(source.ledger))


class ProducerServer(Protocol):
    """What :class:`ProducerCollector` reads of a ``utility.TweetServer``."""

    journal: Any
    sent: int
    acked: int
    dropped: int
    pending: int
    connections: int


class ProducerCollector:
    """stream.py's metrics, read from the live objects at each scrape.

    ``server`` is the ``TweetServer``; :meth:`watch` adds the source's figures
    once the source exists.
    """

    def __init__(self, server: ProducerServer) -> None:
        self.server = server
        self._figures: Callable[[], SourceFigures] | None = None
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def watch(self, figures: Callable[[], SourceFigures]) -> None:
        """Read the source's counts with ``figures()`` from now on."""
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        """The current figures (called by prometheus_client at each scrape)."""
        server, journal = self.server, self.server.journal
        yield _counter("producer_sent_total", "Lines (posts and records) written to the "
                       "job's socket, resends included.", server.sent)
        yield _counter("producer_acknowledged_total", "Lines (posts and records) the job "
                       "acknowledged as stored.", server.acked)
        yield _counter("producer_refused_total", "Posts refused because the journal or the "
                       "disk was full.", server.dropped)
        yield _counter("producer_consumer_connections_total", "Connections of the job's "
                       "receiver accepted.", server.connections)
        yield _gauge("producer_held", "Lines (posts and records) journaled and not yet "
                     "acknowledged.", server.pending)
        yield _gauge("producer_journal_bytes", "Bytes of the lines held in the journal "
                     "(what JOURNAL_MAX_BYTES bounds).", journal.bytes_held)
        yield _gauge("producer_journal_max_bytes", "JOURNAL_MAX_BYTES.", journal.max_bytes)
        if self._figures is not None:
            yield from _source_metrics(self._figures())


def _source_metrics(figures: SourceFigures) -> Iterator[Metric]:
    counters = (("events", "Jetstream events received."),
                ("posts", "Posts read from the source."),
                ("matched", "Posts that matched the keywords or rules, handed on."),
                ("reconnects", "Connections to the source after the first."),
                ("deletes", "Deletes of posts forwarded to the job (sealed records)."),
                ("gaps", "Gaps recorded in the coverage ledger: source time not read."))
    for field, documentation in counters:
        value = getattr(figures, field)
        if value is not None:
            yield _counter(f"producer_{field}_total", documentation, value)
    if figures.gap_seconds is not None:
        yield _counter("producer_gap_seconds_total", "Seconds of source time the gaps "
                       "recorded cover.", figures.gap_seconds)
    if figures.lag_seconds is not None:
        yield _gauge("producer_source_lag_seconds", "Now minus the newest Jetstream "
                     "event's time.", figures.lag_seconds)
    if figures.read_today is not None:
        yield _gauge("producer_x_posts_read_today", "X posts read this UTC day (billed).",
                     figures.read_today)
    if figures.daily_cap is not None:
        yield _gauge("producer_x_posts_daily_cap", "TWITTER_MAX_POSTS: most X posts read "
                     "a UTC day.", figures.daily_cap)


# --------------------------------------------------------------------------
# spark_streaming.py


class Spooling(Protocol):
    """What :class:`JobMetrics` reads of a ``storage.DurableStore``."""

    spooled: int
    spool: Any  # has .path


#: BatchStats fields added up into a ``covid19_job_<name>_total`` counter each
_BATCH_TOTALS = {
    "lines": "Lines of posts the job read.",
    "kept": "Posts stored.",
    "empty": "Posts dropped: nothing left after cleaning.",
    "malformed": "Lines dropped: not a post (kept in the quarantine file).",
    "duplicates": "Posts dropped: their id was seen before.",
    "resent": "Posts dropped: sent again by stream.py, already handled.",
    "out_of_order": "Posts dropped after a gap in the numbering, until sent again.",
    "deletes": "Delete records applied (authentic, each once): posts their authors deleted.",
    "deleted": "Posts removed because their authors deleted them (from the batch, the "
               "store or the spool).",
    "forged": "Records that are not posts dropped for lacking the control secret's mac "
              "(among the malformed).",
    "sealed_records": "Records that are not posts applied: deletes, coverage spans and gaps, "
               "keyword sets.",
}


class JobMetrics:
    """spark_streaming.py's metrics: totals added once a batch, levels read when scraped.

    ``durable`` (the job's ``DurableStore``) gives the spool's size; ``clock``
    (epoch seconds) the case count's age.
    """

    def __init__(self, durable: Spooling | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.durable = durable
        self._clock = clock
        self._lock = threading.Lock()
        self._totals = dict.fromkeys(("batches", "batches_failed", "records", "spooled_batches",
                                      *_BATCH_TOTALS), 0)
        self._count: CaseCount | None = None
        #: the coverage gaps of the last 24 h (loaded at start, then each batch's)
        self.gaps = RecentGaps()
        self.registry = CollectorRegistry()
        self.processing = Histogram(
            f"{PREFIX}_job_batch_processing_seconds", "Spark's processing time of a batch.",
            buckets=PROCESSING_BUCKETS, registry=self.registry)
        self.write = Histogram(
            f"{PREFIX}_job_batch_write_seconds", "Time to write a batch's documents to the "
            "store (or the spool).", buckets=WRITE_BUCKETS, registry=self.registry)
        self.registry.register(self)

    def batch_completed(self, stats: BatchStats | None, records: int,
                        processing_ms: int | None) -> None:
        """One batch is done: ``stats`` (None: it was not stored), Spark's ``records``
        received and its processing time."""
        with self._lock:
            totals = self._totals
            totals["batches"] += 1
            totals["records"] += records
            if stats is None:
                totals["batches_failed"] += 1
            else:
                for name in _BATCH_TOTALS:
                    totals[name] += getattr(stats, name)
                totals["spooled_batches"] += stats.spooled
        if stats is not None and stats.gaps:
            self.gaps.add(stats.gaps)
        if processing_ms is not None:
            self.processing.observe(processing_ms / 1000)
        if stats is not None and stats.write_ms is not None:
            self.write.observe(stats.write_ms / 1000)
        if stats is not None and stats.total_case_count is not None:
            self.count_read(stats.reading)

    def batch_run(self, records: int, processing_ms: int | None) -> None:
        """A batch Spark ran and stored elsewhere (through Spark Connect, foreachBatch runs
        on the server, whose log has its figures): only Spark's ``records`` and time."""
        with self._lock:
            self._totals["batches"] += 1
            self._totals["records"] += records
        if processing_ms is not None:
            self.processing.observe(processing_ms / 1000)

    def count_read(self, reading: CaseCount) -> None:
        """The case count a batch stored (or the job's first reading)."""
        if reading.total is not None:
            with self._lock:
                self._count = reading

    def collect(self) -> Iterator[Metric]:
        """The totals and the current levels (called by prometheus_client at each scrape)."""
        with self._lock:
            totals, count = dict(self._totals), self._count
        yield _counter("job_batches_total", "Batches completed.", totals["batches"])
        yield _counter("job_batches_failed_total", "Batches not stored (an error; their "
                       "posts are sent again).", totals["batches_failed"])
        yield _counter("job_records_total", "Records Spark received.", totals["records"])
        for name, documentation in _BATCH_TOTALS.items():
            yield _counter(f"job_{name}_total", documentation, totals[name])
        yield _counter("job_spooled_batches_total", "Batches written to the spool because "
                       "the store was down.", totals["spooled_batches"])
        if self.durable is not None:
            yield _gauge("job_spooled_documents", "Operations waiting in the spool for the "
                         "store: documents, and deletes and ledger records.",
                         self.durable.spooled)
            yield _gauge("job_spool_bytes", "Size of the spool file.",
                         _file_size(self.durable.spool.path))
        yield _gauge("job_source_gap_24h_seconds", "Seconds of source time in the last 24 h "
                     "that the stream did not read: the coverage gaps the producer recorded.",
                     self.gaps.uncovered_seconds(datetime.fromtimestamp(self._clock(), UTC)))
        if count is not None and count.total is not None:
            yield _gauge("job_case_count", "The total case count last stored.", count.total)
            yield _gauge("job_case_count_fresh", "1 if the source answered for the last "
                         "count stored, 0 if the last good one was carried over.",
                         1 if count.fresh else 0)
            if count.as_of is not None:
                yield _gauge("job_case_count_age_seconds", "Now minus the moment the last "
                             "count stored is for.", self._clock() - count.as_of.timestamp())


def _file_size(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except FileNotFoundError:
        return 0
