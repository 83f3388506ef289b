"""Serve posts about Covid-19 on a TCP socket, one JSON object per line.

Usage: stream.py [--source {bluesky,twitter,replay}] [--jetstream-url URL ...]
                 [--keywords WORDS] [--stale-seconds SECONDS] [--max-event-bytes SIZE]
                 [--max-posts N] [--replay-file PATH] [--rate N] [--loop]
                 [--from-start] [--rules RULES]
                 [--host HOST] [--port PORT] [--ack-port PORT]
                 [--journal-max-bytes SIZE] [--journal-path PATH]
                 [--control-secret-file PATH] [--metrics-port PORT]

Run this first, then spark_streaming.py in a second terminal: Spark's socket
receiver connects to HOST:PORT (default 127.0.0.1:5555) and reads the posts in
20-second batches. Every post is numbered, journaled (--journal-path) and kept
until the job acknowledges it as stored (on --ack-port); a job that restarts, or
this program after a restart, sends the unacknowledged ones again. When the
journal is full (--journal-max-bytes), the replay and Bluesky wait for the job
to store some and go on where they stopped; only X posts are refused.

Sources:
  bluesky  Bluesky's public Jetstream (free, no account): the posts that
           contain a keyword (--keywords) as a whole word or a tag. Reconnects
           rotate through --jetstream-url hosts and resume a few seconds before
           the last event, also after a restart (the cursor is kept in the
           journal's folder); exits 1 if no host answers within 15 s at start.
           The default source, unless TWITTER_BEARER_TOKEN is set.
  twitter  the X API v2 filtered stream; needs TWITTER_BEARER_TOKEN in the
           environment or .env. X bills each post read: --max-posts caps the
           posts read per UTC day. Runs until Ctrl-C.
  replay   replay a newline-delimited JSON file (default: samples/tweets.jsonl);
           with no --loop the program exits once the job has stored every tweet;
           a file replayed to its end is not sent again unless --from-start

Once a minute a live source logs one status line (events, posts, matches,
reconnects, lag; or posts read for X). With --metrics-port the same figures are
served to Prometheus on http://127.0.0.1:PORT/metrics (see metrics.py).

Examples:
  python stream.py                          # live Bluesky posts about Covid-19
  python stream.py --source replay          # the sample file at 5 tweets/s, offline
  python stream.py --source replay --rate 0 --loop   # as fast as possible, forever
  TWITTER_BEARER_TOKEN=... python stream.py --source twitter --max-posts 5000
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import sys
import threading
from collections.abc import Callable

import requests
import tweepy

import config
import control
import metrics
from journal import Journal
from sources.bluesky import BlueskySource, KeywordMatcher, NoHostError
from sources.coverage import STATE_FILE, CoverageLedger
from sources.replay import ReplaySource
from sources.twitter import DailyCap, TwitterSource
from startup import StartupError, program
from stopping import install_stop_handlers
from utility import ListenError, TweetServer

log = logging.getLogger("stream")

PROG = "stream.py"
#: How long to wait for a live source's thread after asking it to stop.
DISCONNECT_TIMEOUT = BlueskySource.OPEN_TIMEOUT + 5.0
#: Most seconds a source waits for the journal before it records how far it got.
SYNC_TIMEOUT = 5.0
#: How often a live source logs its status line.
STATUS_SECONDS = 60.0


@program(PROG)
def main(argv: list[str] | None = None) -> int:
    """Run the producer; returns the exit status (0 done or stopped, 1 failure; a
    start-up failure is one line and status 1, a bad setting status 2)."""
    settings = config.load_settings(PROG, config.STREAM_OPTIONS, argv, description=__doc__)
    config.configure_logging(settings)

    stop = threading.Event()
    signals: list[int] = []
    restore = install_stop_handlers(stop, signals)
    try:
        return _serve(settings, stop, signals)
    finally:
        restore()


def _serve(settings: config.Settings, stop: threading.Event, signals: list[int]) -> int:
    """Open the journal and the ports, then run the source until it ends or ``stop``."""
    try:
        secret = control.load_secret(settings.control_secret, settings.control_secret_path)
    except control.ControlError as err:
        raise StartupError(str(err)) from None
    try:
        journal = Journal(settings.journal_path, settings.journal_max_bytes,
                          settings.journal_commit_window_ms / 1000)
    except OSError as err:
        raise StartupError(f"cannot use the journal {settings.journal_path}: "
                           f"{err.strerror or err}") from None
    server = TweetServer(settings.host, settings.port, journal, ack_port=settings.ack_port,
                         secret=secret)
    exporter = metrics.ProducerCollector(server)
    endpoint: metrics.MetricsServer | None = None
    try:
        try:
            server.start()
        except ListenError as err:
            hint = (f"another program holds it (another stream.py?): choose another port "
                    f"with {err.flag}, and give spark_streaming.py the same"
                    if err.errno == errno.EADDRINUSE else f"set by {err.flag} / {err.env}")
            raise StartupError(f"{err}; {hint}") from None
        try:
            endpoint = metrics.serve(exporter.registry, settings.metrics_port)
        except metrics.MetricsError as err:
            raise StartupError(str(err)) from None
        host, port = server.address
        if not _is_loopback(host):
            log.warning(
                "the tweet socket %s:%d is reachable from the network; use --host 127.0.0.1 "
                "to keep it on this machine", host, port,
            )
        if settings.source == "replay":
            what = (f"file={settings.replay_file} rate={settings.rate:g}/s "
                    f"loop={'yes' if settings.loop else 'no'}")
        elif settings.source == "bluesky":
            what = (f"keywords={','.join(settings.keywords)} "
                    f"jetstream={','.join(settings.jetstream_urls)}")
        else:
            cap = "none" if settings.max_posts is None else f"{settings.max_posts:,}/day"
            what = f"rules={'; '.join(settings.twitter_rules)} cap={cap}"
        log.info("source=%s %s; serving tweets on %s:%d, control port %d, journal %s "
                 "(up to %s)", settings.source, what, host, port, settings.ack_port,
                 settings.journal_path, f"{settings.journal_max_bytes / 1024**2:,.0f} MiB")

        seal = functools.partial(control.seal_record, secret)
        ledger = CoverageLedger(settings.source, functools.partial(server.put, will_retry=True),
                                seal, state_path=settings.journal_path / STATE_FILE)
        if settings.source == "replay":
            return _run_replay(settings, server, stop, exporter, ledger)
        if settings.source == "bluesky":
            return _run_bluesky(settings, server, stop, signals, exporter, ledger)
        return _run_twitter(settings, server, stop, signals, exporter, ledger)
    finally:
        if endpoint is not None:
            endpoint.close()
        server.close()


def _run_replay(settings: config.Settings, server: TweetServer, stop: threading.Event,
                exporter: metrics.ProducerCollector, ledger: CoverageLedger) -> int:
    last = server.journal.tail(1)
    source = ReplaySource(settings.replay_file, settings.rate, settings.loop,
                          from_start=settings.from_start,
                          position_path=settings.journal_path / ReplaySource.POSITION_FILE,
                          before_save=lambda: server.sync(SYNC_TIMEOUT),
                          resume_at=last[0].get("pos") if last else None,
                          seal=ledger.seal, ledger=ledger)
    ledger.position = source.journal_position  # the journal's last record says where to resume
    exporter.watch(lambda: metrics.replay_figures(source))
    _wake_on_stop(server, stop)  # a wait for room in the journal ends on Ctrl-C
    try:
        # a file can be read again: what the journal refuses is offered again once
        # there is room, never dropped
        emitted = source.run(functools.partial(server.put, will_retry=True), stop,
                             emit_many=functools.partial(server.put_many, will_retry=True),
                             wait_for_room=server.wait_for_room)
    except OSError as err:
        log.error("cannot read %s: %s", settings.replay_file, err.strerror or err)
        return 1
    if not stop.is_set() and server.pending:
        log.info("replay done; waiting until the job has stored the %d tweets left "
                 "(Ctrl-C to quit)", server.pending)
        _stop_once_drained(server, stop)
        stop.wait()  # the first of: every tweet stored, a Ctrl-C
    waited = (f", waited {source.paused_seconds:,.0f} s for room in the journal "
              f"({source.pauses:,} times)" if source.pauses else "")
    deletes = f", {source.deletes:,} deletes" if source.deletes else ""
    log.info("summary: %d tweets emitted%s, %d bad lines skipped%s; %s", emitted, deletes,
             source.skipped, waited, _server_status(server))
    return 0


def _wake_on_stop(server: TweetServer, stop: threading.Event) -> None:
    """From a thread of its own, wake whatever waits for room in the journal
    (:meth:`TweetServer.wait_for_room`) once ``stop`` is set: it then ends at once."""
    def wait() -> None:
        stop.wait()
        server.wake()

    threading.Thread(target=wait, name="stop-wakes-room-waits", daemon=True).start()


def _stop_once_drained(server: TweetServer, stop: threading.Event) -> None:
    """Set ``stop`` once every tweet is done (or the server is closed), from a
    thread of its own: the caller then waits on ``stop`` alone, woken by
    whichever comes first, the job's last acknowledgement or a stop signal."""
    def wait() -> None:
        server.wait_until_drained()
        stop.set()

    threading.Thread(target=wait, name="replay-drain", daemon=True).start()


def _run_bluesky(
    settings: config.Settings,
    server: TweetServer,
    stop: threading.Event,
    signals: list[int],
    exporter: metrics.ProducerCollector,
    ledger: CoverageLedger,
) -> int:
    # Jetstream sends again from a cursor: a post the journal refuses is not dropped;
    # the source stops reading, waits for room and goes on from that post
    source = BlueskySource(
        settings.jetstream_urls, KeywordMatcher(settings.keywords),
        functools.partial(server.put, will_retry=True),
        cursor_path=settings.journal_path / BlueskySource.CURSOR_FILE,
        stale_seconds=settings.stale_seconds,
        max_event_bytes=settings.max_event_bytes,
        before_cursor_save=lambda: server.sync(SYNC_TIMEOUT),
        journaled=server.journal.tail(BlueskySource.RECENT_POSTS),
        wait_for_room=server.wait_for_room,
        seal=ledger.seal,  # each delete of a post goes on as a sealed record
        ledger=ledger,
    )
    exporter.watch(lambda: metrics.bluesky_figures(source))
    _wake_on_stop(server, stop)  # a wait for room in the journal ends on Ctrl-C
    error = _run_live(source.run, lambda: f"{source.status()}; {_server_status(server)}",
                      stop, "bluesky")
    log.info("summary: %s; %s", source.status(), _server_status(server))
    if isinstance(error, NoHostError):
        raise StartupError(str(error))
    return 0 if signals and error is None else 1


def _run_twitter(
    settings: config.Settings,
    server: TweetServer,
    stop: threading.Event,
    signals: list[int],
    exporter: metrics.ProducerCollector,
    ledger: CoverageLedger,
) -> int:
    assert settings.bearer_token is not None  # load_settings guarantees it
    cap = None
    if settings.max_posts is not None:
        cap = DailyCap(settings.max_posts, settings.journal_path / DailyCap.FILE)
    # the filtered stream cannot send a post again: what the journal refuses is lost,
    # counted, and a gap in the coverage
    source = TwitterSource(settings.bearer_token, server.put, daily_cap=cap, ledger=ledger,
                           journaled=server.journal.tail(100))
    exporter.watch(lambda: metrics.twitter_figures(source))
    try:
        source.sync_rules(settings.twitter_rules)
    except (tweepy.TweepyException, requests.RequestException) as err:
        log.error("cannot set the filtered-stream rules: %s", _api_error_line(err))
        return 1
    error = _run_live(source.run, lambda: f"{source.status()}; {_server_status(server)}",
                      stop, "twitter", disconnect=source.disconnect)
    log.info("summary: %s; %s", source.status(), _server_status(server))
    if signals and error is None:
        return 0
    log.error("the X API stream ended%s", f" (HTTP {source.fatal_status})"
              if source.fatal_status else "")
    return 1


def _run_live(
    run: Callable[[threading.Event], None],
    status: Callable[[], str],
    stop: threading.Event,
    name: str,
    *,
    disconnect: Callable[[], None] | None = None,
) -> BaseException | None:
    """Run a live source's ``run(stop)`` in a thread until it ends or ``stop`` is
    set, logging ``status()`` once a minute; what it raised, if anything."""
    failure: list[BaseException] = []

    def stream() -> None:
        try:
            run(stop)
        except Exception as err:  # noqa: BLE001 (logged by the caller once stopped)
            failure.append(err)
        finally:
            stop.set()

    thread = threading.Thread(target=stream, name=f"{name}-stream", daemon=True)
    thread.start()
    while not stop.wait(STATUS_SECONDS):
        log.info(status())
    if disconnect is not None:
        disconnect()
    thread.join(DISCONNECT_TIMEOUT)
    if failure and not isinstance(failure[0], NoHostError):
        log.error("the %s source failed", name, exc_info=failure[0])
    return failure[0] if failure else None


def _server_status(server: TweetServer) -> str:
    return (f"{server.sent:,} sent, {server.acked:,} stored, {server.dropped:,} refused, "
            f"{server.pending:,} held")


def _api_error_line(err: Exception) -> str:
    """One log line for a failed X API request (never the token)."""
    if isinstance(err, tweepy.HTTPException):
        status = err.response.status_code
        line = f"HTTP {status} {err.response.reason}"
        if status in TwitterSource.FATAL_STATUSES:
            line += (": the bearer token is invalid or your X API tier does not include "
                     "the filtered stream")
        elif err.api_messages:
            line += ": " + "; ".join(err.api_messages)
        return line.replace("\n", " ")
    return f"{type(err).__name__}: {err}".replace("\n", " ")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
