"""The producer alone at saturation: the real TweetServer, journal, sender and control
port fed flat out, a consumer in a child process acknowledging; CPU µs per post."""

from __future__ import annotations

import multiprocessing
import secrets
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

import control
from bench.tweets import TweetFactory
from journal import Journal
from utility import TweetServer

WAYS = ("put", "put_many")


def consume(port: int, ack_port: int, secret: bytes, source: str, ack_seconds: float) -> None:
    """The stand-in job: read the posts socket, ack the last complete line's seq every
    ``ack_seconds`` through the control protocol, until the producer closes."""
    client = control.ControlClient("127.0.0.1", ack_port, secret)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(ack_seconds)  # idle: ack what was read (the producer may wait for it)
    tail = b""
    last_seq = acked = 0
    next_ack = time.monotonic() + ack_seconds
    while True:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            data = b""  # nothing new: ack what was read
        else:
            if not data:
                break
        data = tail + data
        end = data.rfind(b"\n")
        if end >= 0:
            tail = data[end + 1:]
            start = data.rfind(b"\n", 0, end) + 1  # the last complete line: {"seq":N,...
            last_seq = int(data[start + 7:data.index(b",", start)])
        else:
            tail = data
        now = time.monotonic()
        if now >= next_ack and last_seq > acked:
            client.send({source: last_seq}, {})
            acked, next_ack = last_seq, now + ack_seconds
    client.close()


def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each of this process's threads, by name."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    found: dict[str, float] = {}
    for thread in psutil.Process().threads():
        name = names.get(thread.id, "other")
        name = "control" if name.startswith("control") else name
        found[name] = found.get(name, 0.0) + thread.user_time + thread.system_time
    return found


def make_cost(posts: int, seed: int) -> float:
    """CPU µs to make one tweet (bench.tweets), alone."""
    factory = TweetFactory(seed=seed)
    start = time.process_time()
    now = time.time()
    for _ in range(posts):
        factory.next(stamp=now)
    return (time.process_time() - start) / posts * 1e6


def run(way: str, posts: int, batch: int, max_pending: int, ack_seconds: float,
        seed: int, folder: Path) -> dict[str, float]:
    """Put ``posts`` tweets flat out the ``way`` asked; the figures of the run."""
    secret = secrets.token_bytes(32)
    factory = TweetFactory(seed=seed)
    server = TweetServer("127.0.0.1", 0, Journal(folder / way), ack_port=0, secret=secret)
    server.start()
    ack_port = server.ack_address[1]  # type: ignore[index]
    child = multiprocessing.get_context("spawn").Process(
        target=consume, args=(server.address[1], ack_port, secret, server.source, ack_seconds),
        daemon=True)
    child.start()
    refused = 0
    threads_before = _thread_cpu()
    cpu, wall = time.process_time(), time.monotonic()
    done = 0
    while done < posts:
        if server.pending >= max_pending:
            time.sleep(0.001)  # as bench/producer.py's flat-out loop
            continue
        count = min(batch, posts - done)
        now = time.time()
        if way == "put":
            for _ in range(count):
                refused += server.put(factory.next(stamp=now)) is False
        else:
            refused += count - server.put_many(factory.many(count, stamp=now))
        done += count
    drained = server.wait_until_drained(timeout=120)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    threads = _thread_cpu()
    server.close()
    child.join(10)
    if not drained or refused:
        raise RuntimeError(f"{way}: {server.pending} posts not acknowledged, {refused} refused")
    split = {name: (seconds - threads_before.get(name, 0.0)) / posts * 1e6
             for name, seconds in threads.items()}
    return {"cpu_us": cpu / posts * 1e6, "rate": posts / wall, **split}


def measure_ways(ways: Sequence[str], rounds: int, posts: int, batch: int = 256,
                 max_pending: int = 50_000, ack_seconds: float = 0.1, seed: int = 2026,
                 each: Callable[[str, dict[str, float]], None] | None = None
                 ) -> dict[str, list[dict[str, float]]]:
    """:func:`run`'s figures for each of ``ways``, ``rounds`` runs each, alternated;
    ``each(way, figures)`` is told of every run as it ends."""
    found: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory(prefix="producer-cost-") as tmp:
        for round_number in range(rounds):
            for way in ways:
                folder = Path(tmp) / str(round_number)
                folder.mkdir(exist_ok=True)
                found[way].append(run(way, posts, batch, max_pending, ack_seconds, seed,
                                      folder))
                if each is not None:
                    each(way, found[way][-1])
    return found


def table(rounds: int = 3, posts: int = 200_000) -> tuple[list[str], float]:
    """``make bench``'s section (Markdown lines) and the median µs a post of
    ``put_many``, the way the feeder and the replay source hand tweets over."""
    found = {way: [figures["cpu_us"] for figures in runs]
             for way, runs in measure_ways(WAYS, rounds, posts).items()}
    lines = [f"The producer alone, flat out: {posts:,} of the benchmark's tweets through the "
             "real TweetServer, journal (group commit, fdatasync), sender and control port, "
             "a consumer in a child process acknowledging every 0.1 s (its CPU not counted); "
             f"CPU of the producer process a post, {rounds} rounds of each way alternated:", "",
             "| hand-over | CPU µs a post, each round | median |", "|---|---|---:|"]
    for way, label in (("put", "`put`, a tweet at a time"),
                       ("put_many", "`put_many`, 256 at a time (the feeder, replay)")):
        values = found[way]
        lines.append(f"| {label} | {', '.join(f'{v:.1f}' for v in values)} "
                     f"| {statistics.median(values):.1f} |")
    return lines, statistics.median(found["put_many"])
