"""How the programs stop: SIGINT, SIGTERM and SIGHUP become a stop request.

Both programs and the launcher use :func:`install_stop_handlers` from the first
moment of ``main()``, so a Ctrl-C is honoured at any point of start-up too, and
a terminal that closes (SIGHUP) stops them the same graceful way as Ctrl-C.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

#: The signals that ask a program to stop: Ctrl-C, ``kill``, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: How long the stop waits for ``on_signal`` (a log line to a stuck terminal blocks).
CALLBACK_SECONDS = 1.0


def install_stop_handlers(
    stop: threading.Event,
    signals: list[int],
    on_signal: Callable[[int, int], None] | None = None,
) -> Callable[[], None]:
    """Make :data:`STOP_SIGNALS` set ``stop``; returns a function that restores the
    old handlers. Each signal's number is appended to ``signals``, and
    ``on_signal(signum, count)`` (count 1 for the first stop signal, 2 for the
    second, ...) is called, e.g. to log or to stop at once, before ``stop`` is set
    (what it logs comes before what the stop does), in a thread of its own for
    each signal: a call that blocks (a log line to a terminal whose output is
    stopped, or to a full pipe) is waited for :data:`CALLBACK_SECONDS` at most,
    then ``stop`` is set and the next signal read all the same.

    SIGHUP asks to stop only when nothing asked before, and never counts again: it
    says that the terminal or the launcher is gone, not that someone asks again. A
    terminal closed after a Ctrl-C (which sends SIGHUP) is therefore not a second
    Ctrl-C, and the batch in flight is still stored. (The launcher has the kernel
    send its programs SIGHUP when it dies, and the kernel sends it again for each
    of the launcher's threads that ends.)

    The Python-level handler only records the signal: calling ``stop.set()``
    from it could deadlock, because a handler runs in the main thread, which may
    be holding that very Event's lock (inside ``stop.wait``). Instead the C-level
    handler writes the signal number to a socket (``signal.set_wakeup_fd``) and
    a small thread reading it sets ``stop``. Outside the main thread (tests
    calling ``main()`` from a thread) nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    watcher = _Watcher(stop, on_signal)

    def handle(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)  # no locks here (see above)

    old_fd = signal.set_wakeup_fd(watcher.writer.fileno(), warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    # the thread holds the watcher, and so both ends of the socket, for as long as
    # the handlers are installed, whether or not the caller keeps ``restore``
    threading.Thread(target=watcher.run, name="stop-signals", daemon=True).start()

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(old_fd)
        watcher.writer.close()  # ends the watcher

    return restore


class _Watcher:
    """Reads the signal numbers that the C-level handler writes, in a thread."""

    def __init__(self, stop: threading.Event,
                 on_signal: Callable[[int, int], None] | None) -> None:
        self.reader, self.writer = socket.socketpair()
        self.writer.setblocking(False)
        self.stop = stop
        self.on_signal = on_signal
        self.count = 0

    def run(self) -> None:
        wanted = {int(sig) for sig in STOP_SIGNALS}
        with self.reader:
            while data := self.reader.recv(64):
                for signum in data:
                    if signum not in wanted or (signum == signal.SIGHUP and self.count):
                        continue  # a hang-up after any stop request asks nothing more
                    self.count += 1
                    if self.on_signal is not None:
                        call = threading.Thread(target=self.on_signal,
                                                args=(signum, self.count),
                                                name=f"stop-signal-{self.count}", daemon=True)
                        call.start()
                        call.join(CALLBACK_SECONDS)
                    self.stop.set()
