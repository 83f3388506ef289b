"""The control channel: how the Spark job tells stream.py what is stored, authenticated.

stream.py keeps every tweet until the job says it is stored. The job says so
on the producer's control port (``ACK_PORT``): ``ack SRC N`` (everything of
producer SRC up to seq N is stored: forget it) and ``resend SRC N`` (the job
saw a gap: send again from N). Whoever can send those lines can make the
producer forget tweets, so every line is authenticated with a secret both
programs hold and no other process can read:

* the secret is ``CONTROL_SECRET`` (environment or ``.env``; what a cluster
  uses), or else the file ``CONTROL_SECRET_FILE``, made on first use with
  32 random bytes and mode 0600 (a file others may read is refused);
* each connection starts with a challenge: the producer sends ``hello NP``
  (a random nonce), the job answers ``auth NJ MAC`` (its own nonce and an
  HMAC-SHA256 of both), the producer proves it holds the secret too with
  ``ok MAC``; every later line carries an HMAC of the line, both nonces, its
  direction and its number on the connection, so a line cannot be forged,
  replayed on another connection, or reordered;
* the producer answers each ``resend`` with ``held SRC FIRST NEXT``: the
  first seq from the one asked for that it still holds, and the next one it
  will give. What lies before FIRST was acknowledged (or lost with its
  journal, or to a damaged record): only then may the job skip a gap
  (:class:`job.delivery.Delivery`).

The structured engine also reads the journal itself on this channel, by seq
(:mod:`control_reads`: ``status``, ``read``), with the same guarantees.

A line that fails any check is logged once and the connection closed; it
never changes anything. Then, on the producer's side, an ``ack`` above the
highest seq sent is refused and ``resend`` requests are rate-limited (see
:class:`utility.TweetServer`).

The posts socket itself has no authentication (Spark's receiver cannot do any), so
every wire record that is not a post (a delete, a coverage span or gap, a keyword
set) carries a ``mac`` made with the same secret (:func:`seal_record`); the job
applies only those that pass :func:`record_authentic`.

Both programs import this module: the producer runs a :class:`ControlServer`,
the job a :class:`ControlClient` (and keeps what it stored per producer in
:class:`job.delivery.Delivery`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import select
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import journal

log = logging.getLogger(__name__)

SECRET_BYTES = 32
MIN_SECRET_CHARS = 16
#: a control line is short; anything longer is not ours
MAX_LINE = 512
HANDSHAKE_TIMEOUT = 5.0
MAC_CHARS = 32  # hex characters of HMAC-SHA256 kept (128 bits)

ACK, RESEND, HELD = "ack", "resend", "held"


class ControlError(Exception):
    """The control channel cannot be used as configured; ``str(err)`` is one line."""


class ProtocolError(Exception):
    """A peer broke the protocol (bad line, bad MAC, timeout); the connection is dropped."""


class WrongSecretError(ProtocolError):
    """The peer proved it holds another secret than ours (or none)."""


# --- the secret ---------------------------------------------------------------------


class Secret(bytes):
    """The shared secret, which knows where it came from (``origin``, for log lines
    when the other program holds another one; never the secret itself)."""

    origin: str

    def __new__(cls, value: bytes, origin: str) -> Secret:
        secret = super().__new__(cls, value)
        secret.origin = origin
        return secret

    def __getnewargs__(self) -> tuple[bytes, str]:  # type: ignore[override]
        return bytes(self), self.origin


def _origin(secret: bytes) -> str:
    """Where ``secret`` came from, as a log line names it."""
    return secret.origin if isinstance(secret, Secret) else "the secret it was given"


#: what a log line says when the two programs' secrets differ
SAME_SECRET = "both programs must use the same CONTROL_SECRET_FILE / CONTROL_SECRET"


def load_secret(env_secret: str | None, path: Path) -> bytes:
    """The shared secret: ``env_secret`` (CONTROL_SECRET) when set, else the file at
    ``path``, created with a new random secret (mode 0600) if it does not exist.

    Raises ControlError (one line) when the secret is too short, or the file
    is readable by others, not a regular file, or cannot be read or made.
    """
    if env_secret is not None:
        if len(env_secret) < MIN_SECRET_CHARS:
            raise ControlError(f"CONTROL_SECRET must be at least {MIN_SECRET_CHARS} "
                               "characters (e.g. python -c 'import secrets; "
                               "print(secrets.token_hex(32))')")
        return Secret(env_secret.encode("utf-8"), "CONTROL_SECRET")
    try:
        return Secret(_secret_file(path), f"CONTROL_SECRET_FILE {path.absolute()}")
    except OSError as err:
        raise ControlError(f"cannot use the control secret file {path}: "
                           f"{err.strerror or err}") from None


def _secret_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # write it whole under another name, then link it in: if both programs make one
        # at once, one link wins and both read the winner's
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, journal.PRIVATE_FILE)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(SECRET_BYTES) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
                journal.sync_directory(path.parent)
                log.info("made a new control secret in %s (readable by you only)", path)
        finally:
            tmp.unlink(missing_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ControlError(f"the control secret {path} is not a regular file")
        if info.st_uid != os.getuid():
            raise ControlError(f"the control secret {path} belongs to another user")
        if info.st_mode & 0o077:
            raise ControlError(f"the control secret {path} can be read by others; "
                               f"run: chmod 600 {path}")
        secret = handle.read().strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise ControlError(f"the control secret {path} is too short; delete it to make a "
                           "new one")
    return secret.encode("utf-8")


# --- sealed records on the posts socket ---------------------------------------------------

#: a wire record's delivery members (the journal's) and its seal: outside what the mac covers
UNSEALED_MEMBERS = frozenset({"seq", "src", "pos", "crc", "mac"})


def record_mac(secret: bytes, record: Mapping[str, Any]) -> str:
    """The ``mac`` of a wire record (a delete, coverage, gap or filter record): HMAC-SHA256
    with the control secret over the record's canonical JSON (sorted keys, compact,
    ASCII) without its delivery members and its own mac, as MAC_CHARS hex characters.

    The control channel's MACs are over ``|``-joined words that never start with
    ``{``, so a record's mac can never pass for a control line's, nor the reverse."""
    body = {key: value for key, value in record.items() if key not in UNSEALED_MEMBERS}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                           allow_nan=False)
    return hmac.new(secret, canonical.encode("ascii"), hashlib.sha256).hexdigest()[:MAC_CHARS]


def seal_record(secret: bytes, record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with its ``mac`` (:func:`record_mac`) added: what the producer journals
    and sends for every record that is not a post. Raises ValueError or TypeError when
    the record cannot be JSON (NaN, a value JSON has no form for)."""
    return {**record, "mac": record_mac(secret, record)}


def record_authentic(secret: bytes, record: Mapping[str, Any]) -> bool:
    """True when ``record`` carries the ``mac`` that :func:`seal_record` gives it: it
    was made by a holder of the control secret, and nothing the mac covers has changed
    since. A missing or malformed mac, or a record that cannot be JSON, is False."""
    mac = record.get("mac")
    if not isinstance(mac, str) or len(mac) != MAC_CHARS:
        return False
    try:
        expected = record_mac(secret, record)
    except (TypeError, ValueError):
        return False
    return hmac.compare_digest(mac, expected)


# --- lines -------------------------------------------------------------------------------


def _mac(secret: bytes, *parts: str) -> str:
    return hmac.new(secret, "|".join(parts).encode("utf-8"),
                    hashlib.sha256).hexdigest()[:MAC_CHARS]


@dataclass
class Session:
    """One authenticated connection's state: the nonces and each direction's line count."""

    secret: bytes
    producer_nonce: str
    job_nonce: str
    sent: int = 0
    received: int = 0

    def seal(self, direction: str, body: str) -> bytes:
        mac = _mac(self.secret, direction, self.producer_nonce, self.job_nonce,
                   str(self.sent), body)
        self.sent += 1
        return f"{body} {mac}\n".encode("ascii")

    def open(self, direction: str, line: bytes) -> list[str]:
        """The words of an authenticated line; ProtocolError if it is not one."""
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("a line that is not ASCII") from None
        body, _, mac = text.rstrip("\n").rpartition(" ")
        expected = _mac(self.secret, direction, self.producer_nonce, self.job_nonce,
                        str(self.received), body)
        if not body or not hmac.compare_digest(mac, expected):
            raise ProtocolError("a line whose MAC does not match (not from a holder of "
                                "the control secret)")
        self.received += 1
        return body.split()


def _words(line: bytes) -> list[str]:
    try:
        return line.decode("ascii").split()
    except UnicodeDecodeError:
        raise ProtocolError("a line that is not ASCII") from None


def _seq_words(words: list[str], verb: str) -> tuple[str, int]:
    """``(source, seq)`` of ``verb SOURCE SEQ``."""
    if len(words) != 3 or words[0] != verb or not words[1].isalnum():
        raise ProtocolError(f"not a {verb} line")
    if not words[2].isdigit() or len(words[2]) > 18:
        raise ProtocolError(f"a {verb} line with a bad seq")
    return words[1], int(words[2])


class LineReader:
    """Reads ``\\n``-terminated lines of at most MAX_LINE bytes from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def readline(self, deadline: float | None = None) -> bytes | None:
        """The next line, None at end of stream; ProtocolError if it is too long.
        Raises TimeoutError (OSError) per the socket's timeout, or when the line is
        not whole by ``deadline`` (a ``time.monotonic()`` value), however slowly
        its bytes trickle in."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise ProtocolError("a line too long for the control channel")
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no whole line in time")
                self.sock.settimeout(left)
            chunk = self.sock.recv(4096)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        if len(line) > MAX_LINE:
            raise ProtocolError("a line too long for the control channel")
        return line + b"\n"

    def pending(self) -> bool:
        """True when a whole line is buffered."""
        return b"\n" in self._buffer

    def read_exactly(self, count: int) -> bytes:
        """The next ``count`` bytes (what follows a line that announced them); ProtocolError
        if the stream ends first. Raises TimeoutError per the socket's timeout."""
        parts, have = [self._buffer[:count]], min(count, len(self._buffer))
        self._buffer = self._buffer[count:]
        while have < count:
            chunk = self.sock.recv(min(count - have, 1 << 20))
            if not chunk:
                raise ProtocolError(f"the stream ended {count - have} bytes short")
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)


#: how a further verb is answered on the producer's side: ``(session, connection, words)``
Request = Callable[[Session, socket.socket, list[str]], None]


# --- the producer's side -------------------------------------------------------------


class ControlServer:
    """The producer's control port: authenticates each connection and hands
    its ``ack`` and ``resend`` lines to the callbacks.

    ``on_ack(seq)`` applies an acknowledgement; ``on_resend(seq)`` returns
    ``(first held, next seq)`` for the ``held`` answer. Lines for another
    producer's source id are ignored. ``requests`` answers further verbs:
    ``requests[verb](session, conn, words)`` for an authenticated line starting
    with ``verb`` (the journal's range reads, :mod:`control_reads`). Any failure
    closes that connection only.
    """

    #: most connections served at once; more are refused (a flood cannot exhaust threads)
    MAX_CONNECTIONS = 8
    #: how long a connection may stay silent before it is closed (the job writes every batch)
    IDLE_TIMEOUT = 600.0

    def __init__(self, listener: socket.socket, secret: bytes, source: str,
                 on_ack: Callable[[int], None],
                 on_resend: Callable[[int], tuple[int, int]],
                 requests: Mapping[str, Request] | None = None) -> None:
        self.listener = listener
        self.requests = dict(requests or {})
        self.secret = secret
        self.source = source
        self.on_ack = on_ack
        self.on_resend = on_resend
        #: lines and connections refused so far
        self.rejected = 0
        #: a wrong secret was logged and no job has authenticated since (so: not again)
        self._told_wrong_secret = False
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._unproven: dict[socket.socket, float] = {}  # not authenticated yet: since when
        self._threads: set[threading.Thread] = set()
        self._thread = threading.Thread(target=self._accept, name="control-listener",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, peer = self.listener.accept()
            except OSError:
                if self._closing.is_set():
                    return
                self._closing.wait(1.0)  # e.g. too many open files: try again soon
                continue
            with self._lock:
                self._threads = {t for t in self._threads if t.is_alive()}
                if len(self._threads) >= self.MAX_CONNECTIONS and self._unproven:
                    # full: the connection waiting longest to authenticate makes room, so
                    # that silent connections cannot keep the job out
                    oldest = min(self._unproven, key=self._unproven.__getitem__)
                    with contextlib.suppress(OSError):
                        oldest.shutdown(socket.SHUT_RDWR)
                    del self._unproven[oldest]
                if (len(self._threads) >= self.MAX_CONNECTIONS + 1
                        or self._closing.is_set()):
                    conn.close()
                    self.rejected += 1
                    continue
                thread = threading.Thread(target=self._serve, args=(conn, peer),
                                          name="control-conn", daemon=True)
                self._threads.add(thread)
                self._connections.add(conn)
                self._unproven[conn] = time.monotonic()
            thread.start()

    def _serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            with conn:
                self._handle(conn)
        except ProtocolError as err:
            self.rejected += 1
            wrong_secret = isinstance(err, WrongSecretError)
            with self._lock:
                told = wrong_secret and self._told_wrong_secret
                self._told_wrong_secret |= wrong_secret
            log.log(logging.DEBUG if told else logging.WARNING,
                    "control port: dropped a connection from %s:%d: %s", peer[0], peer[1], err)
        except OSError as err:
            if not self._closing.is_set() and not isinstance(err, TimeoutError):
                log.debug("control connection from %s:%d ended: %s", peer[0], peer[1], err)
            elif isinstance(err, TimeoutError) and not self._closing.is_set():
                self.rejected += 1
                log.warning("control port: dropped a connection from %s:%d that did not "
                            "authenticate in time or went silent", peer[0], peer[1])
        finally:
            with self._lock:
                self._connections.discard(conn)
                self._unproven.pop(conn, None)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(HANDSHAKE_TIMEOUT)
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT  # for the whole handshake
        reader = LineReader(conn)
        producer_nonce = secrets.token_hex(16)
        conn.sendall(f"hello {producer_nonce}\n".encode("ascii"))
        line = reader.readline(deadline)
        if line is None:
            return
        words = _words(line)
        if len(words) != 3 or words[0] != "auth" or not words[1].isalnum():
            raise ProtocolError("no authentication (not the Spark job, or an old version)")
        job_nonce = words[1]
        if not hmac.compare_digest(words[2], _mac(self.secret, "auth", producer_nonce,
                                                  job_nonce)):
            raise WrongSecretError(
                f"wrong control secret: this producer uses {_origin(self.secret)} and the job "
                f"another; {SAME_SECRET} (not logged again until a job authenticates)")
        session = Session(self.secret, producer_nonce, job_nonce)
        with self._lock:
            self._unproven.pop(conn, None)  # a holder of the secret: it keeps its place
            self._told_wrong_secret = False  # before "ok": a wrong one after it is told
        conn.sendall(f"ok {_mac(self.secret, 'ok', producer_nonce, job_nonce)}\n"
                     .encode("ascii"))
        conn.settimeout(self.IDLE_TIMEOUT)
        while not self._closing.is_set():
            line = reader.readline()
            if line is None:
                return
            words = session.open("job", line)
            verb = words[0] if words else ""
            if verb in self.requests:
                self.requests[verb](session, conn, words)
                continue
            source, seq = _seq_words(words, verb if verb in (ACK, RESEND) else ACK)
            if source != self.source:
                continue  # for another producer
            if verb == ACK:
                self.on_ack(seq)
            else:
                first, following = self.on_resend(seq)
                conn.sendall(session.seal("producer", f"{HELD} {source} {first} {following}"))

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


# --- the job's side ------------------------------------------------------------------------


class ControlClient:
    """Sends ``ack``/``resend`` lines to the producer's control port and reads its
    ``held`` answers. A lost line costs nothing but a resend (the acks are
    repeated every batch), so failures are logged once and retried with the
    next batch; a producer that fails the authentication is never trusted."""

    TIMEOUT = 2.0

    def __init__(self, host: str, port: int, secret: bytes) -> None:
        self.address = (host, port)
        self.secret = secret
        self._sock: socket.socket | None = None
        self._reader: LineReader | None = None
        self._session: Session | None = None
        #: what is wrong with the control port, as last logged (None: nothing)
        self._failing: str | None = None

    def send(self, acks: dict[str, int], resends: dict[str, int]) -> dict[str, tuple[int, int]]:
        """Send the acks and resend requests; the ``held`` answers that have come,
        ``{source: (first held, next seq)}`` (answers to this call's resends may
        come with a later call's)."""
        if not acks and not resends and self._sock is None:
            return {}
        try:
            if self._sock is not None and peer_closed(self._sock):
                self.close()  # the producer restarted: a write would vanish silently
            if self._sock is None:
                self._connect()
            assert self._session is not None and self._sock is not None
            lines = [self._session.seal("job", f"{ACK} {src} {seq}")
                     for src, seq in acks.items()]
            lines += [self._session.seal("job", f"{RESEND} {src} {seq}")
                      for src, seq in resends.items()]
            if lines:
                self._sock.sendall(b"".join(lines))
            answers = self._answers()
        except (OSError, ProtocolError) as err:
            self.close()
            failing = str(err) if isinstance(err, ProtocolError) else "unreachable"
            if failing != self._failing:  # once per change: not every batch
                log.warning("cannot use the producer's control port %s:%d (%s); it keeps the "
                            "tweets until they are acknowledged", *self.address, err)
            self._failing = failing
            return {}
        if self._failing:
            log.info("acknowledgements reach the producer again")
        self._failing = None
        return answers

    def _connect(self) -> None:
        self._sock, self._reader, self._session = open_session(self.address, self.secret,
                                                               self.TIMEOUT)

    def _answers(self) -> dict[str, tuple[int, int]]:
        """The ``held`` lines already received (never waits)."""
        assert self._sock is not None and self._reader is not None
        answers: dict[str, tuple[int, int]] = {}
        while self._reader.pending() or _readable(self._sock):
            line = self._reader.readline()
            if line is None:
                raise ConnectionResetError("the producer closed the control connection")
            assert self._session is not None
            words = self._session.open("producer", line)
            if len(words) != 4 or words[0] != HELD or not words[1].isalnum() \
                    or not words[2].isdigit() or not words[3].isdigit():
                raise ProtocolError("not a held line")
            answers[words[1]] = (int(words[2]), int(words[3]))
        return answers

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = self._reader = self._session = None


def open_session(address: tuple[str, int], secret: bytes, timeout: float
                 ) -> tuple[socket.socket, LineReader, Session]:
    """A connection to the producer's control port, authenticated both ways (the job's
    side of the handshake): ``(socket, its reader, the session that seals and opens
    lines)``. Raises OSError when the port cannot be reached, ProtocolError when it
    does not greet as stream.py does, WrongSecretError when it holds another secret."""
    sock = socket.create_connection(address, timeout=timeout)
    try:
        reader = LineReader(sock)
        line = reader.readline()
        words = _words(line) if line is not None else []
        if len(words) != 2 or words[0] != "hello" or not words[1].isalnum():
            raise ProtocolError("the control port did not greet as stream.py does")
        producer_nonce, job_nonce = words[1], secrets.token_hex(16)
        proof = _mac(secret, "auth", producer_nonce, job_nonce)
        sock.sendall(f"auth {job_nonce} {proof}\n".encode("ascii"))
        line = reader.readline()
        words = _words(line) if line is not None else []
        if (len(words) != 2 or words[0] != "ok" or not hmac.compare_digest(
                words[1], _mac(secret, "ok", producer_nonce, job_nonce))):
            raise WrongSecretError(
                "the control port refused the secret or does not hold it: this job uses "
                f"{_origin(secret)}; {SAME_SECRET}")
    except BaseException:
        sock.close()
        raise
    return sock, reader, Session(secret, producer_nonce, job_nonce)


def peer_closed(sock: socket.socket) -> bool:
    """True when the other end has closed ``sock`` and nothing is left to read; never
    waits, and leaves what there is to read in place.

    Checked before writing to a connection whose other end may have gone (a
    restarted producer, a consumer that left), where a write would be lost
    without an error."""
    if not _readable(sock):
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True



def _readable(sock: socket.socket) -> bool:
    """True when ``sock`` has something to read, or its other end closed or reset it;
    never waits. ``poll``, not ``select``: select() refuses a descriptor from 1024 on,
    as a busy process holds (ValueError: filedescriptor out of range)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
