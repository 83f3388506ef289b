"""The benchmark's producer: synthetic tweets through the real utility.TweetServer.

Run by bench/run.py as its own process (so its memory and CPU are its own):

    python -m bench.producer --port P --ack-port A --journal DIR [--journal-max-bytes N]
                             [--numbered]

It is stream.py with a synthetic source: the same ``TweetServer`` with the
same journal and acknowledgements (a tweet is held in the journal until the
job says it is stored) and the same default JOURNAL_MAX_BYTES.
It serves the socket at once and reads commands on stdin, one per line:

    rate N     offer N tweets/s from now on (N = 0: pause)
    rate max   as fast as the consumer takes them (keeps at most --max-pending held)
    quit       close the server and exit (so does the end of stdin)

Every 0.25 s it prints one JSON line on stdout: ``{"t": epoch seconds,
"source": the server's source id, "offered": tweets made, "refused": tweets
the server would not take (journal full), "sent": server.sent, "pending":
server.pending (held), "acked": server.acked, ...}``.
Each tweet carries its send time in its text (bench.tweets), taken when it is
handed to the server (:meth:`TweetServer.put_many`, a list at a time); with
``--numbered``, also its number (0, 1, 2, ... in the order made) and no tweet
repeats an id, so that a check of the store can tell what was lost or stored
twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path

import config
import control as control_channel
from bench.pacing import REPORT_SECONDS, TICK_SECONDS, Control
from bench.tweets import TweetFactory
from journal import Journal
from utility import TweetServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ack-port", type=int, required=True)
    parser.add_argument("--journal", type=Path, required=True)
    parser.add_argument("--journal-max-bytes", type=int,
                        default=config.Settings().journal_max_bytes)
    parser.add_argument("--max-pending", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--numbered", action="store_true",
                        help="unique ids, and each text carries its number [n:<k>]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s producer %(levelname)s %(name)s: %(message)s")

    factory = TweetFactory(seed=args.seed, numbered=args.numbered)
    defaults = config.Settings()  # the secret: the file both programs find in their folder
    secret = control_channel.load_secret(None, defaults.control_secret_path)
    server = TweetServer(args.host, args.port, Journal(args.journal, args.journal_max_bytes),
                         ack_port=args.ack_port, secret=secret)
    server.start()
    control = Control()
    threading.Thread(target=control.read, args=(sys.stdin,), daemon=True).start()
    offered = refused = 0
    lock = threading.Lock()

    def report() -> None:
        while not control.quit.wait(REPORT_SECONDS):
            with lock:
                line = {"t": time.time(), "source": server.source, "offered": offered,
                        "refused": refused, "sent": server.sent, "pending": server.pending,
                        "acked": server.acked, "dropped": server.dropped,
                        "connections": server.connections}
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()

    threading.Thread(target=report, daemon=True).start()

    def offer(count: int) -> None:
        nonlocal offered, refused
        # handed over as one list (one trip through the journal's lock); past
        # JOURNAL_MAX_BYTES the server takes only those before the first that does not fit
        taken = server.put_many(factory.many(count, stamp=time.time()))
        with lock:
            offered += count
            refused += count - taken

    def flat_out() -> None:  # as fast as possible, bounded by what is held
        if server.pending >= args.max_pending:
            time.sleep(TICK_SECONDS / 5)
        else:
            offer(256)

    try:
        control.pace(offer, flat_out)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
