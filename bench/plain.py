"""The benchmark's plain sender: pre-made wire lines, written to a socket at a rate.

Run by bench/run.py for the ``ceiling`` job:

    python -m bench.plain --port P [--lines N] [--seed S]

It listens on 127.0.0.1:P like stream.py, and feeds one consumer at a time.
It has no journal, no acknowledgements and makes no tweet while it runs:
``--lines`` wire lines (the benchmark's tweets, in the journal's record
format) are made before it listens and then written again and again, so what
Spark's bare receiver takes from it is the receiver's own ceiling.

It reads the same commands on stdin as bench.producer (``rate N``,
``rate max``, ``quit``) and prints the same status lines every 0.25 s, plus
``blocked``: the seconds it spent waiting for the socket to take more (TCP's
back-pressure: the receiver is slower than the rate asked).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

from bench.pacing import REPORT_SECONDS, Control
from bench.tweets import TweetFactory
from journal import seal

CHUNK_LINES = 4_096  # lines per write when sending as fast as possible


def premade(count: int, seed: int) -> tuple[bytes, list[int]]:
    """``count`` wire lines in one buffer, and where each line starts (and the end)."""
    factory = TweetFactory(seed=seed)
    lines = []
    for seq in range(1, count + 1):
        tweet = {"seq": seq, "src": "plain", **factory.next(stamp=time.time())}
        lines.append(seal(json.dumps(tweet, ensure_ascii=True,
                                     separators=(",", ":")).encode("ascii")))
    starts, offset = [], 0
    for line in lines:
        starts.append(offset)
        offset += len(line)
    starts.append(offset)
    return b"".join(lines), starts


class Sender:
    """Writes ``n`` lines at a time from the pre-made buffer, wrapping around."""

    def __init__(self, buffer: bytes, starts: list[int]) -> None:
        self.view = memoryview(buffer)
        self.starts = starts
        self.count = len(starts) - 1
        self.next = 0
        self.sent = 0
        self.blocked = 0.0

    def send(self, conn: socket.socket, lines: int) -> None:
        while lines:
            take = min(lines, self.count - self.next)
            chunk = self.view[self.starts[self.next]:self.starts[self.next + take]]
            started = time.perf_counter()
            conn.sendall(chunk)  # blocks while the receiver does not keep up
            self.blocked += time.perf_counter() - started
            self.next = (self.next + take) % self.count
            self.sent += take
            lines -= take


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)

    sender = Sender(*premade(args.lines, args.seed))
    listener = socket.create_server((args.host, args.port))
    control = Control()
    threading.Thread(target=control.read, args=(sys.stdin,), daemon=True).start()
    connected = threading.Event()

    def report() -> None:
        while not control.quit.wait(REPORT_SECONDS):
            line = {"t": time.time(), "source": "plain", "offered": sender.sent, "refused": 0,
                    "sent": sender.sent, "pending": 0, "acked": sender.sent, "dropped": 0,
                    "connections": int(connected.is_set()), "blocked": sender.blocked}
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()

    threading.Thread(target=report, daemon=True).start()
    try:
        listener.settimeout(0.5)
        while not control.quit.is_set():  # one receiver at a time; a new one after it
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            connected.set()
            try:
                with conn:
                    run(conn, sender, control)
            except OSError as err:  # the receiver went away (its job was killed)
                sys.stderr.write(f"plain sender: {err}\n")
            connected.clear()
    finally:
        control.quit.set()
        listener.close()
    return 0


def run(conn: socket.socket, sender: Sender, control: Control) -> None:
    """Send at the rate ``control`` asks until it says quit."""
    control.pace(lambda lines: sender.send(conn, lines),
                 lambda: sender.send(conn, CHUNK_LINES))


if __name__ == "__main__":
    sys.exit(main())
