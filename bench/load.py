"""The benchmark's load: the feeders as child processes, and the saved page over HTTP.

A feeder listens on a port for Spark's receiver and offers tweets at the rate
it is told (``rate N`` on its stdin), printing a JSON status line every 0.25 s:

* ``producer``: bench.producer, the product's TweetServer with its journal and
  acknowledgements, fed with synthetic tweets (what stream.py does);
* ``plain``: bench.plain, pre-made lines written to the socket and nothing else
  (the receiver's ceiling).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import config

PROJECT = Path(__file__).resolve().parents[1]
BENCH = PROJECT / "bench"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env() -> dict[str, str]:
    """This environment without the project's own variables (as a fresh shell would be)."""
    ours = {option.env for option in config.OPTIONS.values()}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update(PYTHONPATH=str(PROJECT), PYTHONUNBUFFERED="1")
    return env


class PageServer:
    """samples/ served from 127.0.0.1 (Last-Modified and 304s included)."""

    def __init__(self) -> None:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        handler = functools.partial(Quiet, directory=str(PROJECT / "samples"))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/worldometers.html"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class JsonLines:
    """A child process's JSON-lines stdout, collected by a thread."""

    def __init__(self, stream: TextIO) -> None:
        self.items: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            with self.changed:
                self.items.append(item)
                self.changed.notify_all()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.changed:
            return list(self.items)

    def latest(self) -> dict[str, Any]:
        with self.changed:
            return dict(self.items[-1]) if self.items else {}

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.items), timeout)


class Feeder:
    """bench.producer (``kind="producer"``) or bench.plain, as a child process in ``here``."""

    START_TIMEOUT = 60.0

    def __init__(self, kind: str, here: Path, *, numbered: bool = False) -> None:
        self.kind = kind
        self.port = free_port()
        self.ack_port = free_port() if kind == "producer" else None
        if kind == "producer":
            cmd = [sys.executable, "-m", "bench.producer", "--port", str(self.port),
                   "--ack-port", str(self.ack_port), "--journal", str(here / "journal")]
            if numbered:
                cmd.append("--numbered")
        else:
            cmd = [sys.executable, "-m", "bench.plain", "--port", str(self.port)]
        self.process = subprocess.Popen(
            cmd, cwd=here, env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=(here / f"{kind}.log").open("w"), text=True)
        assert self.process.stdout is not None
        self.status = JsonLines(self.process.stdout)
        if not self.status.wait_for(bool, self.START_TIMEOUT):
            self.close()
            raise RuntimeError(f"the {kind} did not start (see {here}/{kind}.log)")
        self.source: str = self.status.snapshot()[0]["source"]

    @property
    def pid(self) -> int:
        return self.process.pid

    def set_rate(self, rate: float | str) -> None:
        """Tweets per second from now on (0: pause; "max": as fast as taken)."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"rate {rate}\n")
        self.process.stdin.flush()

    def close(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
        except (OSError, ValueError):
            pass
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
