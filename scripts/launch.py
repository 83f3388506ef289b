"""Start both processes with one command (what `make run` and `make demo` call).

Usage: python scripts/launch.py run     # live posts until Ctrl-C (sample replay when offline)
       python scripts/launch.py demo    # offline: 3 batches of 5 s, what was stored, report.png

The card's way, two terminals, works the same: run `python stream.py` in one,
`python spark_streaming.py` in the other. This only saves the second terminal.

``run`` takes live posts: from the X API when TWITTER_BEARER_TOKEN is set
(.env or the environment), else from Bluesky's Jetstream; when no Jetstream
host answers (no internet), it says so in one line and replays the sample
file instead. It stores into the embedded store (EMBEDDED_DB_PATH, by default
data/db in the project folder: see the batches with `python report.py
inspect`) and takes everything else, the case source included, from your
settings.

``demo`` is fully offline: its own ports, the sample replay, the project's
saved page served from 127.0.0.1, the embedded store of your settings and a
fresh journal and spool in DATA_DIR/demo.

If stream.py leaves first, whatever its status (an error, or a `kill` of it), the
launcher says so in one line, stops the job as a Ctrl-C does (its batch in flight
is stored) and exits with stream.py's status: 128 + N if signal N killed it, and
the job's status if stream.py's was 0.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import http.server
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))  # the project's modules: config, sources

import config  # noqa: E402
from sources.bluesky import BlueskySource, first_answering  # noqa: E402
from stopping import install_stop_handlers  # noqa: E402

PYTHON = sys.executable
DEMO_REPORT = PROJECT / "report.png"  # git-ignored
DEMO_BATCH_SECONDS = 5
DEMO_BATCHES = 3
# always the embedded store (EMBEDDED_DB_PATH, where `report.py inspect` looks), even if
# .env names a MongoDB; the empty --mongo-uri beats the environment
EMBEDDED = ["--mongo-uri", ""]
PR_SET_PDEATHSIG = 1  # linux/prctl.h
#: libc's prctl, looked up here once: between fork and exec (where the launcher's
#: other threads may hold the loader's locks) a child only calls it
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
#: How long stream.py may take to stop once the job has (it closes its journal).
PRODUCER_STOP_SECONDS = 30.0


def free_ports(count: int) -> list[int]:
    """``count`` different free TCP ports on 127.0.0.1 (all held open while chosen,
    so that the same port cannot come back twice)."""
    probes = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            probes.append(probe)
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def serve_samples() -> http.server.ThreadingHTTPServer:
    """samples/ over HTTP on 127.0.0.1, standing in for worldometers.info."""
    handler = functools.partial(QuietHandler, directory=str(PROJECT / "samples"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log lines in the demo's output."""


def _die_with_parent() -> None:
    """In a child, between fork and exec: get SIGHUP if the launcher dies (even by
    SIGKILL), so that no program of the run is left behind (Linux; elsewhere a no-op).

    SIGHUP, as when a terminal closes, because the kernel sends it again each time
    one of the launcher's threads ends: the programs count a repeated SIGHUP once
    (stopping.py), where a second SIGTERM would stop the job at once, its batch in
    flight dropped."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGHUP)


def start(script: str, args: list[str]) -> subprocess.Popen[bytes]:
    """``script`` with ``args``, in a process group of its own: a terminal's Ctrl-C
    reaches only the launcher, which stops the programs in the right order."""
    return subprocess.Popen([PYTHON, script, *args], cwd=PROJECT, process_group=0,
                            preexec_fn=_die_with_parent)


def end(process: subprocess.Popen[bytes], timeout: float,
        again: threading.Event | None = None) -> int:
    """Ask ``process`` to stop (SIGTERM), wait up to ``timeout`` s, then kill it and
    whatever is left of its process group; its exit status. Once ``again`` is set
    (a second Ctrl-C), a second SIGTERM asks it to stop at once."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        if again is not None:
            threading.Thread(target=_ask_again, args=(process, again), daemon=True).start()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        sys.stderr.write(f"launch: {process.args[1]} did not stop within {timeout:g} s; "
                         "killing it\n")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the group: anything it started
    return process.wait()


def _ask_again(process: subprocess.Popen[bytes], again: threading.Event) -> None:
    again.wait()
    if process.poll() is None:  # not yet reaped: its pid is still its own
        process.send_signal(signal.SIGTERM)


def run_pair(producer_args: list[str], job_args: list[str], stop: threading.Event,
             job_stop_seconds: float, again: threading.Event | None = None) -> int:
    """stream.py, then spark_streaming.py, until the job ends or ``stop`` is set;
    the exit status.

    A stop (Ctrl-C, SIGTERM, SIGHUP) stops the job first, so that the batch in
    flight is stored and acknowledged (within ``job_stop_seconds``), then
    stream.py, which keeps whatever is not stored in its journal; once ``again``
    is set (a second Ctrl-C), the job is asked to stop at once.

    If stream.py ends first, whatever its status, the job has no producer left:
    the launcher says so in one line, sets ``stop`` and stops the job the same
    way. It returns stream.py's status (:func:`exit_status`), or the job's when
    stream.py's is 0: a `kill` of stream.py is a stop someone asked for, and
    nothing is lost (stream.py's journal keeps what is not stored), so it reads as
    a Ctrl-C does, unless the job then fails to stop cleanly. An error of
    stream.py stays the last thing it printed before the launcher's line.
    """
    producer = start("stream.py", producer_args)
    job = start("spark_streaming.py", job_args)
    changed = threading.Event()
    for process in (producer, job):
        threading.Thread(target=lambda p=process: (p.wait(), changed.set()),
                         daemon=True).start()
    threading.Thread(target=lambda: (stop.wait(), changed.set()), daemon=True).start()
    while job.poll() is None and not stop.is_set():
        changed.wait()
        changed.clear()
        status = producer.poll()
        if status is not None and job.poll() is None:
            sys.stderr.write(f"launch: stream.py {ended(status)}; stopping "
                             "spark_streaming.py\n")
            stop.set()  # the run is over: the demo shows nothing more
            job_status = end(job, job_stop_seconds, again)
            return exit_status(status) or exit_status(job_status)
    job_status = end(job, job_stop_seconds, again)
    producer_status = end(producer, PRODUCER_STOP_SECONDS)
    return exit_status(job_status) or exit_status(producer_status)


def ended(returncode: int) -> str:
    """How a program ended, as Popen's ``returncode`` tells it, for a log line."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
        return f"was killed by signal {-returncode}"
    return f"stopped with status {returncode}"


def exit_status(returncode: int) -> int:
    """Popen's ``returncode`` as a shell gives it: 128 + N for a death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def show(args: list[str], stop: threading.Event) -> int | None:
    """report.py with ``args``, like the programs in a process group of its own and
    ending with the launcher; its exit status, or None if ``stop`` was set first
    (report.py is then stopped)."""
    report = start("report.py", args)
    ended = threading.Event()
    for event in (lambda: report.wait(), stop.wait):
        threading.Thread(target=lambda e=event: (e(), ended.set()), daemon=True).start()
    ended.wait()
    if stop.is_set():
        end(report, PRODUCER_STOP_SECONDS)
        return None
    return report.wait()


def live_source(stop: threading.Event | None = None) -> list[str] | None:
    """stream.py's arguments for ``make run``: X, Bluesky or, offline, the replay.
    Prints which, in one line; None if ``stop`` was set while looking."""
    settings = config.load_settings("make run", config.STREAM_OPTIONS, [])
    if settings.bearer_token:
        print("make run: live posts from the X API filtered stream (TWITTER_BEARER_TOKEN is "
              "set; X bills each post read)", flush=True)
        return ["--source", "twitter"]
    answer: list[str | None] = []
    looked = threading.Event()
    threading.Thread(target=lambda: (answer.append(first_answering(
        settings.jetstream_urls, BlueskySource.START_TIMEOUT)), looked.set()),
        daemon=True).start()
    if stop is not None:  # a Ctrl-C while looking ends the launcher at once
        threading.Thread(target=lambda: (stop.wait(), looked.set()), daemon=True).start()
    looked.wait()
    if not answer or (stop is not None and stop.is_set()):  # stopped while looking
        return None
    if answer[0] is not None:
        print(f"make run: live Bluesky posts from Jetstream ({answer[0]}), keywords "
              f"{','.join(settings.keywords)}", flush=True)
        return ["--source", "bluesky"]
    print(f"make run: no Jetstream host answered within {BlueskySource.START_TIMEOUT:g} s "
          "(offline?): replaying the sample file samples/tweets.jsonl instead", flush=True)
    return ["--source", "replay", "--rate", "5", "--loop"]


def job_stop_seconds(batch_seconds: float) -> float:
    """How long the job may take to stop: it waits for the batch in flight (at most
    three batches and 30 s), then stops Spark."""
    return batch_seconds * 3 + 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["run", "demo"])
    mode = parser.parse_args().mode
    stop, again = threading.Event(), threading.Event()

    def on_signal(signum: int, count: int) -> None:
        if count > 1:  # docs/running.md: "a second Ctrl-C stops the job at once"
            again.set()

    # Ctrl-C, SIGTERM and SIGHUP: stop both, in order; a second one: the job at once
    install_stop_handlers(stop, [], on_signal)
    # each program says what is wrong in .env (an unknown name, an old spelling) itself:
    # the launcher's own reads of the settings stay quiet instead of saying it twice more
    logging.getLogger("config").setLevel(logging.ERROR)
    if mode == "run":
        source = live_source(stop)
        if source is None:
            return 0
        batch_seconds = config.load_settings("make run", config.SPARK_OPTIONS, []).batch_seconds
        return run_pair(source, EMBEDDED, stop, job_stop_seconds(batch_seconds), again)

    # the demo's journal and spool: new each run, in DATA_DIR (the programs run in the
    # project folder, where a relative DATA_DIR is taken from)
    demo_data = PROJECT / config.load_settings("make demo", ["data_dir"], []).data_dir / "demo"
    page = serve_samples()
    tweet_port, ack_port = free_ports(2)
    ports = ["--port", str(tweet_port), "--ack-port", str(ack_port)]
    url = f"http://127.0.0.1:{page.server_address[1]}/worldometers.html"
    shutil.rmtree(demo_data, ignore_errors=True)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    duration = DEMO_BATCH_SECONDS * DEMO_BATCHES
    code = run_pair(
        ["--source", "replay", "--rate", "4", "--loop", *ports,
         "--journal-path", str(demo_data / "journal")],
        [*ports, "--batch-seconds", str(DEMO_BATCH_SECONDS), "--duration", str(duration),
         "--case-source", "worldometers", "--worldometers-url", url, *EMBEDDED,
         "--spool-path", str(demo_data / "spool.jsonl"),
         "--quarantine-path", str(demo_data / "quarantine.jsonl"),
         # the structured engine's (STREAMING_ENGINE=structured make demo): a new journal
         # each run is a new producer, so a new checkpoint too
         "--checkpoint-path", str(demo_data / "checkpoint")],
        stop, job_stop_seconds(DEMO_BATCH_SECONDS), again,
    )
    page.shutdown()
    if code != 0 or stop.is_set():
        return code
    for title, args in (
        ("stored batches", ["inspect", "--last", str(DEMO_BATCHES + 2)]),
        ("the last document, as MongoDB Extended JSON", ["inspect", "--last", "1", "--json"]),
        ("the report figure", ["plot", "--since", started, "--out", str(DEMO_REPORT)]),
    ):
        print(f"\n== {title} ==", flush=True)
        shown = show([*args, *EMBEDDED], stop)
        if shown is None:  # stopped: what was stored stays for `python report.py`
            return 0
        if shown != 0:  # report.py said why in one line (e.g. nothing was stored)
            return shown
    print(f"report figure: {DEMO_REPORT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
