"""Start both processes with one command (what `make run` and `make demo` call).

Usage: python scripts/launch.py run     # live posts until Ctrl-C (sample replay when offline)
       python scripts/launch.py demo    # offline: 3 batches of 5 s, what was stored, report.png

The card's way, two terminals, works the same: run `python stream.py` in one,
`python spark_streaming.py` in the other. This only saves the second terminal.

``run`` takes live posts: from the X API when TWITTER_BEARER_TOKEN is set
(.env or the environment), else from Bluesky's Jetstream; when no Jetstream
host answers (no internet), it says so in one line and replays the sample
file instead. It stores into the embedded store in data/db (see the batches
with `python report.py inspect`) and takes everything else, the case source
included, from your settings.

``demo`` is fully offline: its own ports, the sample replay, the project's
saved page served from 127.0.0.1, the embedded store in data/db and a fresh
journal and spool under data/demo.

If stream.py stops with an error, the job is stopped too and the launcher
exits with stream.py's status.
"""

from __future__ import annotations

import argparse
import functools
import http.server
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

PYTHON = sys.executable
DEMO_DATA = PROJECT / "data" / "demo"  # the demo's journal and spool: new each run
DEMO_REPORT = PROJECT / "report.png"  # git-ignored
DEMO_BATCH_SECONDS = 5
DEMO_BATCHES = 3
# always the embedded store in data/db (where `report.py inspect` looks), even if .env
# names a MongoDB; the empty --mongo-uri beats the environment
EMBEDDED = ["--mongo-uri", "", "--embedded-db-path", "data/db"]


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


def run_pair(producer_args: list[str], job_args: list[str]) -> int:
    """stream.py, then spark_streaming.py, until the job ends; the exit status.

    Ctrl-C reaches both from the terminal (the job finishes its batch). If
    stream.py ends with an error first, the job is stopped and stream.py's
    status returned, its error being the last thing it printed.
    """
    producer = subprocess.Popen([PYTHON, "stream.py", *producer_args], cwd=PROJECT)
    job = subprocess.Popen([PYTHON, "spark_streaming.py", *job_args], cwd=PROJECT)
    # Ctrl-C reaches both children from the terminal; this process only waits for them
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ended = threading.Event()
    for process in (producer, job):
        threading.Thread(target=lambda p=process: (p.wait(), ended.set()), daemon=True).start()
    while job.poll() is None:
        ended.wait()
        ended.clear()
        status = producer.poll()
        if status not in (None, 0) and job.poll() is None:
            sys.stderr.write(f"launch: stream.py stopped with status {status}; stopping "
                             "spark_streaming.py\n")
            job.send_signal(signal.SIGTERM)
            job.wait()
            return status
    if producer.poll() is None:
        producer.send_signal(signal.SIGTERM)  # it keeps what is not stored in its journal
    producer.wait()
    return job.returncode


def live_source() -> list[str]:
    """stream.py's arguments for ``make run``: X, Bluesky or, offline, the replay.
    Prints which, in one line."""
    settings = config.load_settings("make run", config.STREAM_OPTIONS, [])
    if settings.bearer_token:
        print("make run: live posts from the X API filtered stream (TWITTER_BEARER_TOKEN is "
              "set; X bills each post read)", flush=True)
        return ["--source", "twitter"]
    url = first_answering(settings.jetstream_urls, BlueskySource.START_TIMEOUT)
    if url is not None:
        print(f"make run: live Bluesky posts from Jetstream ({url}), keywords "
              f"{','.join(settings.keywords)}", flush=True)
        return ["--source", "bluesky"]
    print(f"make run: no Jetstream host answered within {BlueskySource.START_TIMEOUT:g} s "
          "(offline?): replaying the sample file samples/tweets.jsonl instead", flush=True)
    return ["--source", "replay", "--rate", "5", "--loop"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["run", "demo"])
    mode = parser.parse_args().mode
    if mode == "run":
        return run_pair(live_source(), EMBEDDED)

    page = serve_samples()
    tweet_port, ack_port = free_ports(2)
    ports = ["--port", str(tweet_port), "--ack-port", str(ack_port)]
    url = f"http://127.0.0.1:{page.server_address[1]}/worldometers.html"
    shutil.rmtree(DEMO_DATA, ignore_errors=True)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    duration = DEMO_BATCH_SECONDS * DEMO_BATCHES
    code = run_pair(
        ["--source", "replay", "--rate", "4", "--loop", *ports,
         "--journal-path", str(DEMO_DATA / "journal")],
        [*ports, "--batch-seconds", str(DEMO_BATCH_SECONDS), "--duration", str(duration),
         "--case-source", "worldometers", "--worldometer-url", url, *EMBEDDED,
         "--spool-path", str(DEMO_DATA / "spool.jsonl"),
         "--quarantine-path", str(DEMO_DATA / "quarantine.jsonl")],
    )
    page.shutdown()
    if code != 0:
        return code
    print("\n== stored batches ==", flush=True)
    subprocess.run([PYTHON, "report.py", "inspect", "--last", str(DEMO_BATCHES + 2), *EMBEDDED],
                   cwd=PROJECT, check=True)
    print("\n== the last document, as MongoDB Extended JSON ==", flush=True)
    subprocess.run([PYTHON, "report.py", "inspect", "--last", "1", "--json", *EMBEDDED],
                   cwd=PROJECT, check=True)
    print("\n== the report figure ==", flush=True)
    plot = subprocess.run([PYTHON, "report.py", "plot", "--since", started,
                           "--out", str(DEMO_REPORT), *EMBEDDED], cwd=PROJECT)
    if plot.returncode != 0:  # report.py said why in one line (e.g. nothing was stored)
        return plot.returncode
    print(f"report figure: {DEMO_REPORT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
