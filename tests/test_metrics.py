"""The Prometheus metrics of both programs (metrics.py): what a scrape of /metrics shows."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from processes import (
    BATCH_LINE,
    PROJECT,
    PageServer,
    clean_env,
    free_port,
    job,
    producer,
    write_tweets,
)
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import config
import metrics
from counts.reading import CaseCount
from job.batch import BatchStats
from job.listeners import BatchMetrics
from sources.jetstream_progress import JetstreamProgress
from sources.replay import ReplaySource
from sources.twitter import DailyCap

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
AS_OF = datetime(2024, 4, 13, tzinfo=UTC)


def samples(text: str) -> dict[str, float]:
    """``{sample name: value}`` of an exposition text's samples without labels."""
    return {sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples if not sample.labels}


def exposed(registry: Any) -> dict[str, float]:
    return samples(generate_latest(registry).decode())


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return samples(answer.read().decode())


def fake_server(**counts: int) -> SimpleNamespace:
    journal = SimpleNamespace(bytes_held=counts.pop("bytes_held", 0), max_bytes=2 * 1024**3)
    figures = {"sent": 0, "acked": 0, "dropped": 0, "pending": 0, "connections": 0, **counts}
    return SimpleNamespace(journal=journal, **figures)


# --- stream.py's collector --------------------------------------------------------------


def test_the_producer_exposes_the_servers_live_counters_at_each_scrape() -> None:
    server = fake_server(sent=10, acked=7, dropped=2, pending=3, connections=1,
                         bytes_held=4096)
    collector = metrics.ProducerCollector(server)
    first = exposed(collector.registry)
    assert first["covid19_producer_sent_total"] == 10
    assert first["covid19_producer_acknowledged_total"] == 7
    assert first["covid19_producer_refused_total"] == 2
    assert first["covid19_producer_held"] == 3
    assert first["covid19_producer_journal_bytes"] == 4096
    assert first["covid19_producer_journal_max_bytes"] == 2 * 1024**3
    # nothing is copied: the next scrape reads the objects as they are then
    server.sent, server.acked, server.pending = 25, 25, 0
    second = exposed(collector.registry)
    assert (second["covid19_producer_sent_total"], second["covid19_producer_acknowledged_total"],
            second["covid19_producer_held"]) == (25, 25, 0)
    assert not any(name.startswith("covid19_producer_events") for name in second)


def test_a_bluesky_source_adds_events_posts_matches_reconnects_and_its_lag() -> None:
    progress = JetstreamProgress(clock=lambda: NOW.timestamp())
    collector = metrics.ProducerCollector(fake_server())
    collector.watch(lambda: metrics.bluesky_figures(progress))
    before = exposed(collector.registry)
    assert before["covid19_producer_events_total"] == 0
    assert "covid19_producer_source_lag_seconds" not in before  # no event yet: no lag
    progress.events, progress.posts, progress.matched, progress.reconnects = 900, 300, 4, 2
    progress.deletes = 17
    progress.note_time(int((NOW.timestamp() - 42.5) * 1e6))
    after = exposed(collector.registry)
    assert after["covid19_producer_events_total"] == 900
    assert after["covid19_producer_deletes_total"] == 17
    assert after["covid19_producer_posts_total"] == 300
    assert after["covid19_producer_matched_total"] == 4
    assert after["covid19_producer_reconnects_total"] == 2
    assert after["covid19_producer_source_lag_seconds"] == pytest.approx(42.5)


def test_an_x_source_shows_todays_posts_against_the_cap_and_zero_after_midnight() -> None:
    clock = [NOW.timestamp()]
    cap = DailyCap(5000, clock=lambda: clock[0])
    for _ in range(120):
        cap.count()
    source = SimpleNamespace(read=130, received=120, connections=3, daily_cap=cap)
    figures = metrics.twitter_figures(source)  # type: ignore[arg-type]
    assert (figures.posts, figures.matched, figures.reconnects) == (130, 120, 2)
    assert (figures.read_today, figures.daily_cap) == (120, 5000)
    clock[0] += 24 * 3600  # the next UTC day, before any post was read in it
    assert metrics.twitter_figures(source).read_today == 0  # type: ignore[arg-type]
    assert cap.used == 120  # reading the figure changed nothing
    uncapped = SimpleNamespace(read=1, received=1, connections=1, daily_cap=None)
    collector = metrics.ProducerCollector(fake_server())
    collector.watch(lambda: metrics.twitter_figures(uncapped))  # type: ignore[arg-type]
    assert "covid19_producer_x_posts_daily_cap" not in exposed(collector.registry)


def test_a_replayed_file_counts_each_tweet_emitted_as_read_and_matched(tmp_path: Path) -> None:
    replay = tmp_path / "tweets.jsonl"
    write_tweets(replay, 7)
    source = ReplaySource(replay, 0, False)
    source.run(lambda tweet, position: True, threading.Event())
    figures = metrics.replay_figures(source)
    assert (figures.posts, figures.matched, figures.events) == (7, 7, None)


def test_a_source_with_a_ledger_counts_its_gaps_and_the_source_time_they_cover() -> None:
    from sources.coverage import CoverageLedger

    ledger = CoverageLedger("twitter", lambda record, position: True, lambda record: record)
    source = SimpleNamespace(read=3, received=3, connections=2, daily_cap=None, ledger=ledger)
    collector = metrics.ProducerCollector(fake_server())
    collector.watch(lambda: metrics.twitter_figures(source))  # type: ignore[arg-type]
    assert exposed(collector.registry)["covid19_producer_gaps_total"] == 0
    ledger.gap("x", 1_000_000, 91_500_000, "x disconnect")
    after = exposed(collector.registry)
    assert (after["covid19_producer_gaps_total"],
            after["covid19_producer_gap_seconds_total"]) == (1, 90.5)


# --- the job's metrics ----------------------------------------------------------------------


def stats(**fields: Any) -> BatchStats:
    values: dict[str, Any] = {"batch_time": NOW, "lines": 10, "kept": 6, "empty": 1,
                              "malformed": 1, "duplicates": 2}
    values.update(fields)
    return BatchStats(**values)


def test_the_job_adds_each_batch_to_its_totals_and_times(tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    durable = SimpleNamespace(spooled=0, spool=SimpleNamespace(path=spool))
    job_metrics = metrics.JobMetrics(durable)  # type: ignore[arg-type]
    empty = exposed(job_metrics.registry)
    assert empty["covid19_job_batches_total"] == 0
    assert empty["covid19_job_spool_bytes"] == 0  # no spool file yet
    assert "covid19_job_case_count_age_seconds" not in empty  # no count yet

    job_metrics.batch_completed(stats(write_ms=40.0), 10, 1500)
    job_metrics.batch_completed(stats(resent=3, out_of_order=1, spooled=True, write_ms=2.0),
                                14, 300)
    job_metrics.batch_completed(None, 5, 100)  # failed: not stored
    job_metrics.batch_completed(stats(lines=0, kept=0, empty=0, malformed=0, duplicates=0),
                                0, None)
    durable.spooled = 3
    spool.write_bytes(b"x" * 1234)
    seen = exposed(job_metrics.registry)
    assert seen["covid19_job_batches_total"] == 4
    assert seen["covid19_job_batches_failed_total"] == 1
    assert seen["covid19_job_records_total"] == 29
    assert seen["covid19_job_lines_total"] == 20
    assert seen["covid19_job_kept_total"] == 12
    assert seen["covid19_job_empty_total"] == 2
    assert seen["covid19_job_malformed_total"] == 2
    assert seen["covid19_job_duplicates_total"] == 4
    assert seen["covid19_job_resent_total"] == 3
    assert seen["covid19_job_out_of_order_total"] == 1
    assert seen["covid19_job_spooled_batches_total"] == 1
    assert seen["covid19_job_spooled_documents"] == 3
    assert seen["covid19_job_spool_bytes"] == 1234
    assert seen["covid19_job_batch_processing_seconds_count"] == 3  # one had no time
    assert seen["covid19_job_batch_processing_seconds_sum"] == pytest.approx(1.9)
    assert seen['covid19_job_batch_write_seconds_count'] == 2
    assert seen["covid19_job_batch_write_seconds_sum"] == pytest.approx(0.042)


def test_the_counts_age_and_freshness_come_from_the_last_count_stored() -> None:
    now = [NOW.timestamp()]
    job_metrics = metrics.JobMetrics(clock=lambda: now[0])
    job_metrics.count_read(CaseCount(704_753_890, AS_OF, "worldometers", True))  # at start
    first = exposed(job_metrics.registry)
    assert first["covid19_job_case_count"] == 704_753_890
    assert first["covid19_job_case_count_fresh"] == 1
    assert first["covid19_job_case_count_age_seconds"] == NOW.timestamp() - AS_OF.timestamp()
    # a batch stored the count carried over (the source did not answer), a day later
    now[0] += 86_400
    job_metrics.batch_completed(stats(total_case_count=704_753_890, count_fresh=False,
                                      case_count_as_of=AS_OF, case_count_source="worldometers",
                                      write_ms=1.0), 10, 50)
    later = exposed(job_metrics.registry)
    assert later["covid19_job_case_count_fresh"] == 0
    assert later["covid19_job_case_count_age_seconds"] == now[0] - AS_OF.timestamp()
    # a batch without a count (none ever obtained) leaves the last one shown
    job_metrics.batch_completed(stats(write_ms=1.0), 10, 50)
    assert exposed(job_metrics.registry)["covid19_job_case_count"] == 704_753_890
    job_metrics.count_read(CaseCount())  # no count at all: nothing to show
    assert exposed(job_metrics.registry)["covid19_job_case_count"] == 704_753_890


def test_the_batch_listener_tells_the_observer_before_it_logs_the_batch(caplog) -> None:
    told: list[tuple[Any, ...]] = []
    lines_then: list[int] = []

    def observer(batch: BatchStats | None, records: int, processing_ms: int | None) -> None:
        told.append((batch, records, processing_ms))
        lines_then.append(len(caplog.records))

    listener = BatchMetrics(SimpleNamespace(), None, observer)  # type: ignore[arg-type]
    batch = stats(write_ms=3.0)
    with caplog.at_level("INFO", logger="spark_streaming"):
        listener.record(batch, "b1", NOW, 10, 5, 700)
        listener.record(None, "b2", NOW, 4, 5, 90)
    assert told == [(batch, 10, 700), (None, 4, 90)]
    # a test (or a person) that sees the batch's line can rely on the metrics having it
    assert lines_then == [0, 1]


# --- serving ------------------------------------------------------------------------------


def test_each_program_has_its_own_registry_served_on_127_0_0_1() -> None:
    one = metrics.ProducerCollector(fake_server(sent=1))
    two = metrics.ProducerCollector(fake_server(sent=2))
    servers = [metrics.serve(one.registry, free_port()), metrics.serve(two.registry,
                                                                         free_port())]
    try:
        ports = [server.port for server in servers if server is not None]
        assert [scrape(port)["covid19_producer_sent_total"] for port in ports] == [1, 2]
        assert all(server is not None and server.url.startswith("http://127.0.0.1:")
                   for server in servers)
    finally:
        for server in servers:
            if server is not None:
                server.close()


def _sleeps(thread: threading.Thread) -> int:
    """How many times ``thread`` has gone to sleep (voluntary context switches)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts sleeps in /proc")
def test_the_endpoint_sleeps_between_scrapes_and_its_close_is_prompt() -> None:
    registry = metrics.ProducerCollector(fake_server(sent=3)).registry
    before = set(threading.enumerate())
    server = metrics.serve(registry, free_port())
    assert server is not None
    [serving] = set(threading.enumerate()) - before  # no scrape yet: its thread only
    try:
        assert scrape(server.port)["covid19_producer_sent_total"] == 3
        slept = _sleeps(serving)
        threading.Event().wait(1.2)  # an observation window: nothing should wake it
        assert _sleeps(serving) - slept <= 1  # prometheus_client's loop: twice a second
        assert scrape(server.port)["covid19_producer_sent_total"] == 3
    finally:
        server.close()
    serving.join(5)
    assert not serving.is_alive()
    with socket.create_server(("127.0.0.1", server.port)):
        pass  # the port is free again


class PatientServer(metrics.MetricsServer):
    """Keeps a silent connection for ten minutes: within a test only the cap makes room."""

    MAX_HANDLERS = 4
    REQUEST_TIMEOUT = 600.0


def test_idle_connections_hold_at_most_the_cap_of_threads_and_a_scrape_still_comes_in() -> None:
    registry = metrics.ProducerCollector(fake_server(sent=5)).registry
    server = PatientServer(registry, free_port())
    idle: list[socket.socket] = []
    try:
        threads = threading.active_count()  # the endpoint's own thread included
        for _ in range(50):  # connect, and never send a request
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=30))
        assert scrape(server.port)["covid19_producer_sent_total"] == 5
        assert threading.active_count() <= threads + PatientServer.MAX_HANDLERS
        # each newcomer made room by closing the connection waiting longest: all but
        # the three newest idle ones (the scrape took the fourth place)
        assert [conn.recv(1) for conn in idle[:47]] == [b""] * 47
    finally:
        for conn in idle:
            conn.close()
        server.close()


class QuickServer(metrics.MetricsServer):
    REQUEST_TIMEOUT = 0.5


def test_a_connection_that_sends_no_whole_request_in_time_is_closed_unanswered() -> None:
    registry = metrics.ProducerCollector(fake_server(sent=6)).registry
    server = QuickServer(registry, free_port())
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as silent:
            assert silent.recv(1) == b""  # closed by the server, with no answer
        with socket.create_connection(("127.0.0.1", server.port)) as trickling:
            trickling.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
            trickling.settimeout(0.1)  # a byte every 0.1 s: each read of the server gets
            answer = None  # one well within REQUEST_TIMEOUT, the whole request never does
            for _ in range(600):
                trickling.sendall(b"x")
                try:
                    answer = trickling.recv(1)
                    break
                except TimeoutError:
                    continue
            assert answer == b""  # closed by the server, with no answer
        assert scrape(server.port)["covid19_producer_sent_total"] == 6
    finally:
        server.close()


def test_metrics_are_off_unless_a_port_is_given() -> None:
    registry = metrics.ProducerCollector(fake_server()).registry
    assert metrics.serve(registry, None) is None
    assert metrics.serve(registry, 0) is None
    assert config.Settings().metrics_port is None
    for raw, expected in (("", None), ("0", 0), ("9101", 9101)):
        settings = config.resolve(config.STREAM_OPTIONS, {}, {"METRICS_PORT": raw})
        assert settings.metrics_port == expected
    assert config.resolve(config.SPARK_OPTIONS, {"metrics_port": "9102"}, {}).metrics_port == 9102
    with pytest.raises(config.ConfigError, match="--metrics-port / METRICS_PORT"):
        config.resolve(config.SPARK_OPTIONS, {"metrics_port": "70000"}, {})


def test_a_port_in_use_is_one_line_naming_metrics_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        registry = metrics.ProducerCollector(fake_server()).registry
        with pytest.raises(metrics.MetricsError) as caught:
            metrics.serve(registry, port)
    message = str(caught.value)
    assert "\n" not in message
    assert "METRICS_PORT" in message and f"127.0.0.1:{port}" in message


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=PROJECT, env=clean_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("program", ["stream.py", "spark_streaming.py"])
def test_both_programs_refuse_a_metrics_port_clash_at_start_in_one_line(
        program: str, tmp_path: Path) -> None:
    port, ack_port = free_port(), free_port()
    common = ["--port", str(port), "--ack-port", str(ack_port),
              "--control-secret-file", str(tmp_path / "secret")]
    if program == "stream.py":
        common += ["--source", "replay", "--journal-path", str(tmp_path / "journal")]
    else:
        common += ["--embedded-db-path", str(tmp_path / "db"),
                   "--spool-path", str(tmp_path / "spool.jsonl")]
    same = run(program, *common, "--metrics-port", str(port))
    assert same.returncode == 2, same.stderr
    assert same.stderr.strip().splitlines() == [
        f"{program}: error: --metrics-port / METRICS_PORT: {port} is already the port of "
        "--port / STREAM_PORT; give the metrics a port of their own"]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        in_use = run(program, *common, "--metrics-port", str(busy))
    assert in_use.returncode == 1, in_use.stderr
    errors = [line for line in in_use.stderr.splitlines() if "error" in line]
    assert errors == [f"{program}: error: cannot serve metrics on 127.0.0.1:{busy} "
                      "(--metrics-port / METRICS_PORT): Address already in use"]
    assert "Traceback" not in in_use.stderr


# --- the real programs ----------------------------------------------------------------


def batch_lines(lines: list[str]) -> list[Any]:
    return [m for m in map(BATCH_LINE.search, lines) if m]


def poll(port: int, done: Callable[[dict[str, float]], bool], timeout: float = 60) -> \
        dict[str, float]:
    """Scrape until ``done(figures)`` holds. stream.py logs nothing when an
    acknowledgement arrives, so its /metrics is the only thing to wait on."""
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        while True:
            figures = scrape(port)
            if done(figures) or stop.is_set():
                return figures
            stop.wait(0.2)
    finally:
        timer.cancel()


@pytest.mark.e2e
def test_both_programs_serve_metrics_that_move_while_they_run(tmp_path: Path) -> None:
    """One run of stream.py and spark_streaming.py, each with --metrics-port."""
    replay = tmp_path / "tweets.jsonl"
    write_tweets(replay, 500)
    port, ack_port, producer_port, job_port = (free_port() for _ in range(4))
    page = PageServer()
    source = producer(tmp_path, replay, port, ack_port, 100, "--loop",
                      "--metrics-port", str(producer_port))
    consumer = None
    try:
        # no job yet, so nothing can have been sent or acknowledged
        before = scrape(producer_port)
        assert before["covid19_producer_sent_total"] == 0
        assert before["covid19_producer_acknowledged_total"] == 0

        consumer = job(tmp_path, port, ack_port, page.url,
                       "--embedded-db-path", str(tmp_path / "db"),
                       "--metrics-port", str(job_port))
        consumer.wait_for(lambda lines: batch_lines(lines) != [])
        logged = len(batch_lines(consumer.lines))
        first = scrape(job_port)
        # the batch after the one that may have been under way during the scrape, with
        # posts in it: the listener counts a batch before it logs its line
        consumer.wait_for(lambda lines: any(
            m.group(2) and int(m.group(2)) > 0 for m in batch_lines(lines)[logged + 1:]))
        second = scrape(job_port)
        for name in ("batches_total", "records_total", "kept_total", "lines_total",
                     "batch_processing_seconds_count", "batch_write_seconds_count"):
            assert second[f"covid19_job_{name}"] > first[f"covid19_job_{name}"], name
        assert second["covid19_job_batches_failed_total"] == 0
        assert second["covid19_job_spooled_documents"] == 0
        assert second["covid19_job_case_count"] == page.count
        assert second["covid19_job_case_count_fresh"] == 1
        # the saved page says "Last updated: April 13, 2024": a count years old
        assert second["covid19_job_case_count_age_seconds"] > 30 * 86_400

        after = poll(producer_port, lambda m: m["covid19_producer_acknowledged_total"] > 0)
        assert after["covid19_producer_acknowledged_total"] > 0
        assert after["covid19_producer_sent_total"] >= after[
            "covid19_producer_acknowledged_total"]
        assert after["covid19_producer_matched_total"] > 0
        assert after["covid19_producer_consumer_connections_total"] >= 1

        assert consumer.stop() == 0, consumer.log
        assert source.stop() == 0, source.log
    finally:
        source.kill()
        if consumer is not None:
            consumer.kill()
        page.close()
    assert "Traceback" not in source.log + consumer.log
    assert f"Prometheus metrics on http://127.0.0.1:{producer_port}/metrics" in source.log
    assert f"Prometheus metrics on http://127.0.0.1:{job_port}/metrics" in consumer.log


def every_metric(tmp_path: Path) -> list[Any]:
    """The registries of both programs, with every figure they can show present."""
    producer_metrics = metrics.ProducerCollector(fake_server())
    every_figure = metrics.SourceFigures(events=1, posts=1, matched=1, reconnects=1,
                                         lag_seconds=1.0, read_today=1, daily_cap=1,
                                         deletes=1, gaps=1, gap_seconds=1.0)
    producer_metrics.watch(lambda: every_figure)
    durable = SimpleNamespace(spooled=0, spool=SimpleNamespace(path=tmp_path / "spool"))
    job_metrics = metrics.JobMetrics(durable)  # type: ignore[arg-type]
    job_metrics.count_read(CaseCount(1, AS_OF, "who", True))
    return [producer_metrics.registry, job_metrics.registry]


def test_the_metrics_page_lists_every_metric_the_programs_expose(tmp_path: Path) -> None:
    names = {family.name + ("_total" if family.type == "counter" else "")
             for registry in every_metric(tmp_path) for family in registry.collect()}
    page = (PROJECT / "docs" / "metrics.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `(covid19_\w+)` \|", page, flags=re.M))
    assert listed == names


DASHBOARD = PROJECT / "contrib" / "grafana-dashboard.json"
#: PromQL's own words that can stand where a metric name does
PROMQL_WORDS = {"rate", "irate", "increase", "sum", "max", "min", "avg", "count",
                "histogram_quantile", "by", "without", "on", "ignoring", "and", "or",
                "unless", "bool", "offset"}


def dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (grouping labels, label matchers,
    strings, durations and ``$variables`` left out)."""
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', " ", expr)
    words = re.findall(r"(?<![\w$.])[A-Za-z_:][\w:]*", expr)
    return {word for word in words if word not in PROMQL_WORDS}


def test_metric_names_reads_what_a_query_names() -> None:
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate("
                        "covid19_job_batch_write_seconds_bucket{job=\"x\"}[$__rate_interval])))"
                        ) == {"covid19_job_batch_write_seconds_bucket"}
    assert metric_names("60 * rate(covid19_job_batchs_total[5m])") == {
        "covid19_job_batchs_total"}


def test_the_grafana_dashboard_queries_only_what_the_programs_expose(tmp_path: Path) -> None:
    exposed_names = {sample.name for registry in every_metric(tmp_path)
                     for family in registry.collect() for sample in family.samples}
    assert "covid19_job_batch_processing_seconds_bucket" in exposed_names
    queried: set[str] = set()
    for panel in dashboard_panels():
        for query in panel["targets"]:
            names = metric_names(query["expr"])
            assert names, (panel["title"], query["expr"])
            queried |= names
    assert queried <= exposed_names, sorted(queried - exposed_names)
    # the figures an operator watches first are all on it
    assert {"covid19_producer_matched_total", "covid19_producer_refused_total",
            "covid19_producer_journal_bytes", "covid19_producer_source_lag_seconds",
            "covid19_job_batches_failed_total", "covid19_job_kept_total",
            "covid19_job_spooled_documents", "covid19_job_case_count_age_seconds",
            "covid19_producer_deletes_total", "covid19_producer_gaps_total"} <= queried


def test_the_grafana_dashboard_names_no_data_source_of_its_own() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert [(put["name"], put["type"], put["pluginId"]) for put in dashboard["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")]
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"
    chosen = {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard_panels():
        assert panel["datasource"] == chosen, panel["title"]
        assert all(query["datasource"] == chosen for query in panel["targets"]), panel["title"]
