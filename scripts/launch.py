"""Start both processes with one command (what `make run` and `make demo` call).

Usage: python scripts/launch.py run     # replay source at 5 tweets/s, looping, until Ctrl-C
       python scripts/launch.py demo    # offline: 3 batches of 5 s, what was stored, report.png

The card's way, two terminals, works the same: run `python stream.py` in one,
`python spark_streaming.py` in the other. This only saves the second terminal.
``run`` uses your settings (.env, environment) except the tweet source; ``demo``
uses its own ports, the project's saved page served from 127.0.0.1, the
embedded store in data/db (see its batches again with `python report.py
inspect`) and a fresh journal and spool under data/demo.
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
PYTHON = sys.executable
DEMO_DATA = PROJECT / "data" / "demo"  # the demo's journal and spool: new each run
DEMO_REPORT = PROJECT / "report.png"  # git-ignored
DEMO_BATCH_SECONDS = 5
DEMO_BATCHES = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    """stream.py, then spark_streaming.py; Ctrl-C stops both (the job finishes its batch)."""
    producer = subprocess.Popen([PYTHON, "stream.py", *producer_args], cwd=PROJECT)
    job = subprocess.Popen([PYTHON, "spark_streaming.py", *job_args], cwd=PROJECT)
    # Ctrl-C reaches both children from the terminal; this process only waits for them
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = job.wait()
    producer.send_signal(signal.SIGTERM)
    producer.wait()
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["run", "demo"])
    mode = parser.parse_args().mode
    if mode == "run":
        return run_pair(["--source", "replay", "--rate", "5", "--loop"], [])

    page = serve_samples()
    ports = ["--port", str(free_port()), "--ack-port", str(free_port())]
    url = f"http://127.0.0.1:{page.server_address[1]}/worldometers.html"
    shutil.rmtree(DEMO_DATA, ignore_errors=True)
    # always the embedded store in data/db (where `report.py inspect` looks), even if
    # .env names a MongoDB; the empty --mongo-uri beats the environment
    store = ["--mongo-uri", "", "--embedded-db-path", "data/db"]
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    duration = DEMO_BATCH_SECONDS * DEMO_BATCHES
    code = run_pair(
        ["--source", "replay", "--rate", "4", "--loop", *ports,
         "--journal-path", str(DEMO_DATA / "journal")],
        [*ports, "--batch-seconds", str(DEMO_BATCH_SECONDS), "--duration", str(duration),
         "--worldometer-url", url, *store, "--spool-path", str(DEMO_DATA / "spool.jsonl"),
         "--quarantine-path", str(DEMO_DATA / "quarantine.jsonl")],
    )
    page.shutdown()
    if code != 0:
        return code
    print("\n== stored batches ==", flush=True)
    subprocess.run([PYTHON, "report.py", "inspect", "--last", str(DEMO_BATCHES + 2), *store],
                   cwd=PROJECT, check=True)
    print("\n== the last document, as MongoDB Extended JSON ==", flush=True)
    subprocess.run([PYTHON, "report.py", "inspect", "--last", "1", "--json", *store],
                   cwd=PROJECT, check=True)
    print("\n== the report figure ==", flush=True)
    plot = subprocess.run([PYTHON, "report.py", "plot", "--since", started,
                           "--out", str(DEMO_REPORT), *store], cwd=PROJECT)
    if plot.returncode != 0:  # report.py said why in one line (e.g. nothing was stored)
        return plot.returncode
    print(f"report figure: {DEMO_REPORT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
