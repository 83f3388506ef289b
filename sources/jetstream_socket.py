"""One WebSocket connection to a Jetstream host, read in the caller's own thread.

websockets' sync client reads frames in a thread of its own and hands each one
to the reader through a condition: two threads, and a wake-up of each, for
every frame. :class:`JetstreamConnection` is the same client driven from one
thread: websockets opens the socket (TCP, a proxy from the environment as its
sync client would use, TLS for ``wss://``), its sans-I/O
:class:`~websockets.client.ClientProtocol` makes the handshake and parses the
frames, and the reader waits for the next bytes with ``poll`` on the socket
(``select.select`` fails for descriptors from 1024 on), feeds them to the
protocol and takes the messages out.

The protocol answers the host's pings itself (Jetstream pings every 30 s) and
closes with 1009 a frame over ``max_size``; no permessage-deflate is offered
(Jetstream's own server negotiates none, and inflating would cost CPU per frame).

No timer wakes the reader to look at a stop request: :class:`WakeOnStop`
makes a socket readable when ``stop`` is set, and the reader's ``poll``
waits on it too. Typical use (what :class:`sources.bluesky.BlueskySource` does)::

    with WakeOnStop(stop) as wakeup, JetstreamConnection.open(
            url, open_timeout=10, max_size=2**22, user_agent=USER_AGENT,
            wakeup=wakeup) as connection:
        while not stop.is_set():
            for message in connection.read(timeout=60):   # [] on timeout or wake-up
                handle(message)
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import ssl
import threading
import time
from types import TracebackType

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import CLOSED, CONNECTING, OPEN, SEND_EOF
from websockets.sync.client import reconnect
from websockets.sync.utils import Deadline

Message = str | bytes


class JetstreamConnection:
    """A client WebSocket connection whose messages the caller reads in its own thread.

    :meth:`open` connects; :meth:`read` waits for the next messages (or a time,
    or ``wakeup``); :meth:`close` (or leaving a ``with`` block) ends it with a
    closing handshake that waits at most ``close_timeout`` seconds for the host.
    Not thread-safe: one thread does everything, which is the point.
    """

    #: Bytes asked of the socket at a time (into one buffer, allocated once). A read
    #: that fills it means a backlog (a replay from a cursor): the next is not delayed.
    READ_BYTES = 256 * 1024
    #: Most seconds a write (a pong, the close frame), or the rest of a TLS record
    #: whose first bytes came, may take: reads otherwise wait in ``poll``.
    IO_TIMEOUT = 10.0

    def __init__(self, sock: socket.socket, protocol: ClientProtocol, *,
                 close_timeout: float, wakeup: socket.socket | None = None,
                 gather_seconds: float = 0.0) -> None:
        self.sock = sock
        self.protocol = protocol
        self.close_timeout = close_timeout
        #: a socket that becomes readable when the reader must look up (stop)
        self.wakeup = wakeup
        #: after messages were read, the next read lets more gather this long first
        self.gather_seconds = gather_seconds
        self._gathered_from = -math.inf  # time.monotonic() of the last read with messages
        self._either = _poller(sock, wakeup)  # the socket, or a wake-up
        self._wakeup_only = _poller(wakeup)
        self._socket_only = _poller(sock)
        self._ready: list[Message] = []  # messages that came with the handshake's answer
        self._buffer = memoryview(bytearray(self.READ_BYTES))
        self._full = False  # whether the last read filled the buffer
        self._fragments: list[bytes] = []  # the parts of a fragmented message so far
        self._fragmented_text = False

    @classmethod
    def open(cls, url: str, *, open_timeout: float, max_size: int, user_agent: str,
             close_timeout: float = 2.0, wakeup: socket.socket | None = None,
             gather_seconds: float = 0.0) -> JetstreamConnection:
        """Connect to ``url`` (``ws://`` or ``wss://``) and make the opening handshake,
        all within ``open_timeout`` seconds. Raises OSError (TimeoutError included)
        or a websockets exception (InvalidURI, InvalidHandshake, ...) on failure.
        ``gather_seconds``: see :meth:`read`."""
        deadline = Deadline(open_timeout)
        # websockets' own connection set-up (proxy, TLS) without its connection object,
        # which would read in a thread of its own
        opener = reconnect(url, open_timeout=open_timeout, compression=None,
                           user_agent_header=user_agent)
        sock = opener.open_socket(deadline)
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            if opener.ws_uri.secure:
                sock = opener.enable_tls(sock, deadline)
            connection = cls(sock, ClientProtocol(opener.ws_uri, max_size=max_size),
                             close_timeout=close_timeout, wakeup=wakeup,
                             gather_seconds=gather_seconds)
            connection._handshake(user_agent, deadline)
        except BaseException:
            sock.close()
            raise
        return connection

    def __enter__(self) -> JetstreamConnection:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _handshake(self, user_agent: str, deadline: Deadline) -> None:
        protocol = self.protocol
        request = protocol.connect()
        request.headers["User-Agent"] = user_agent
        protocol.send_request(request)
        self.sock.settimeout(deadline.timeout())
        self._send()
        # until the answer: what came with it (frames, even the host's close) is kept
        # for read(), which gives those messages first, then the close
        while protocol.handshake_exc is None and protocol.state is CONNECTING:
            self.sock.settimeout(deadline.timeout())  # TimeoutError once it is spent
            # the answer (a Response event), and any frame that came right after it
            self._ready.extend(self._messages(self._receive()))
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        self.sock.settimeout(self.IO_TIMEOUT)

    # -- reading

    def read(self, timeout: float | None) -> list[Message]:
        """The messages (text as str, binary as bytes) that came next: at least one;
        or [] once ``timeout`` seconds (None: no limit) have passed, or at once
        when ``wakeup`` is readable. Pings are answered on the way. Raises
        :class:`~websockets.exceptions.ConnectionClosed` once the connection is
        closed (the host closed it, it broke, or a frame was over ``max_size``:
        1009, in ``err.sent``), after returning the messages read before that.
        Raises OSError when writing to the socket fails.

        With ``gather_seconds``, a read that follows one that returned messages
        first lets the next ones gather in the socket for the rest of that time
        (a wake-up still ends the wait at once): a host sends each event as it
        comes, and one wake-up for a handful of them costs far less CPU than one
        each. An idle connection is not woken by it: the wait for the first
        message has no limit but ``timeout``; and a read that found more than
        READ_BYTES waiting (a host sending a backlog) is followed at once."""
        if self._ready:
            ready, self._ready = self._ready, []
            return ready
        protocol = self.protocol
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        gathered = self._gathered_from + self.gather_seconds
        if gathered > now:
            left = gathered - now if deadline is None else min(gathered, deadline) - now
            if self._wait_for_wakeup(left) or (deadline is not None and gathered >= deadline):
                return []  # woken, or the time is up while the messages gather
        while True:
            if protocol.state is not OPEN:
                self._finish_closing()
                raise protocol.close_exc
            if not self._buffered():
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if self.sock.fileno() not in _ready(self._either, left):
                    return []  # the time is up, or woken
            messages = self._messages(self._receive())
            if messages:
                # a full buffer: more is waiting, a backlog to read at once
                self._gathered_from = -math.inf if self._full else time.monotonic()
                return messages

    def _wait_for_wakeup(self, seconds: float) -> bool:
        """Wait ``seconds`` for ``wakeup`` alone; whether it became readable."""
        if self.wakeup is None:
            time.sleep(seconds)
            return False
        return bool(_ready(self._wakeup_only, seconds))

    def _receive(self) -> list[object]:
        """Read what the (readable) socket has, feed it to the protocol and send what
        the protocol answers (pongs, the close frame of a failure); the events it
        made of it."""
        count = self.sock.recv_into(self._buffer)
        self._full = count == len(self._buffer) or self._buffered()
        if count:
            self.protocol.receive_data(self._buffer[:count])  # copied by the protocol
        else:
            self.protocol.receive_eof()
        self._send()
        return self.protocol.events_received()

    def _buffered(self) -> bool:
        """Whether TLS holds decrypted bytes that ``poll`` on the socket cannot see."""
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def _messages(self, events: list[object]) -> list[Message]:
        """The whole messages among ``events`` (frames), fragments joined; a text
        message that is not UTF-8 is given as bytes (the caller skips it)."""
        found: list[Message] = []
        for frame in events:
            if not isinstance(frame, Frame):
                continue
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if not frame.fin:
                    self._fragments = [bytes(frame.data)]
                    self._fragmented_text = opcode is Opcode.TEXT
                    continue
                text, data = opcode is Opcode.TEXT, bytes(frame.data)
            elif opcode is Opcode.CONT:
                self._fragments.append(bytes(frame.data))
                if not frame.fin:
                    continue
                text, data = self._fragmented_text, b"".join(self._fragments)
                self._fragments = []
            else:
                continue  # ping (answered by the protocol), pong, close
            if text:
                try:
                    found.append(data.decode("utf-8"))
                    continue
                except UnicodeDecodeError:
                    pass
            found.append(data)
        return found

    # -- writing and closing

    def _send(self) -> None:
        for data in self.protocol.data_to_send():
            if data is SEND_EOF or not data:
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_WR)
            else:
                self.sock.sendall(data)

    def close(self) -> None:
        """Close the connection: a close frame, then the host's answer and its end of
        the TCP connection, waited for at most ``close_timeout`` seconds. Never
        raises; safe to call twice."""
        protocol = self.protocol
        with contextlib.suppress(OSError):
            if protocol.state is OPEN:
                protocol.send_close(1000)
                self._send()
            self._finish_closing()
        self.sock.close()

    def _finish_closing(self) -> None:
        """Read (and drop) what comes until the host ends the TCP connection, for at
        most ``close_timeout`` seconds; then the connection is CLOSED either way."""
        protocol = self.protocol
        deadline = time.monotonic() + self.close_timeout
        try:
            while protocol.state is not CLOSED:
                left = deadline - time.monotonic()
                if left <= 0 or not (self._buffered() or _ready(self._socket_only, left)):
                    break
                self._receive()  # dropped: the connection is closing
        except (OSError, ssl.SSLError):
            pass
        if protocol.state is not CLOSED:
            protocol.receive_eof()  # the host did not end it in time: it is over for us
            protocol.data_to_send()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


def _poller(*socks: socket.socket | None) -> select.poll:
    """A ``poll`` object waiting for any of ``socks`` (None left out) to be readable:
    no descriptor of its own, and no limit on the descriptors' numbers."""
    poller = select.poll()
    for sock in socks:
        if sock is not None:
            poller.register(sock, select.POLLIN)
    return poller


def _ready(poller: select.poll, seconds: float | None) -> set[int]:
    """The descriptors of ``poller`` that are readable (or hung up, or in error: a read
    tells which) within ``seconds`` (None: no limit)."""
    timeout = None if seconds is None else max(0, math.ceil(seconds * 1000))
    return {fd for fd, _ in poller.poll(timeout)}


class WakeOnStop:
    """For the length of a ``with`` block, a thread that waits for ``stop`` and then
    makes a socket readable (the ``as`` value): a reader waiting in ``poll`` for
    its next frame returns at once, with no timer, and closes its connection
    itself. Leaving the block sets ``stop``, which ends the thread also when no
    host ever answered."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._wakeup, self._waker = socket.socketpair()
        self._thread = threading.Thread(target=self._wake_on_stop, name="jetstream-stop",
                                        daemon=True)

    def __enter__(self) -> socket.socket:
        self._thread.start()
        return self._wakeup

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self._thread.join()
        self._wakeup.close()
        self._waker.close()

    def _wake_on_stop(self) -> None:
        self.stop.wait()
        with contextlib.suppress(OSError):
            self._waker.send(b"s")  # stays readable: every later wait ends at once too
