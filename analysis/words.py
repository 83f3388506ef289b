"""The words of the stored tweets: tokenizing, counting and ranking them, also on
worker processes (WordCounter) while a window is being read."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue
import re
import signal
import string
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from itertools import chain, islice
from operator import itemgetter
from typing import Any

log = logging.getLogger("report")  # the report tool's log, as its lines always said

#: How many of the most frequent words a report shows unless asked (``plot --top``).
DEFAULT_TOP = 15
_TEXTS_PER_CHUNK = 20_000  # texts joined at a time when counting words
#: Texts a word-counting worker process gets at a time (WordCounter).
WORD_CHUNK = 50_000
#: Chunks that may wait for each worker: when the workers are behind, the reader
#: waits, instead of holding the texts of the whole window in a queue.
CHUNKS_IN_FLIGHT = 2

# Small on purpose: the commonest function words of the stream's main languages
# (English, Spanish, French, Portuguese, German); an analyst can filter more in the export.
STOP_WORDS = frozenset(" ".join((
    "a about after again all also am an and any are as at be because been before being but",
    "by can could did do does doing don't for from get got had has have having he her here",
    "him his how i i'm if in into is it it's its just let's me more most my no not now of on",
    "one only or other our out over re she so some still such than that the their them then",
    "there these they this those through to too up us very was we were what when where which",
    "who why will with would you you're your yours",
    "de del el en es la las lo los por se un una y con para al su",
    "le les des du et au aux pour est une dans sur pas ne vous",
    "da do dos das em com um uma os",
    "der die und im am ist zu den mit nicht",
)).split())
_WORD = re.compile(r"\w+(?:['\N{RIGHT SINGLE QUOTATION MARK}]\w+)*")
#: ASCII punctuation that is neither a word character nor an apostrophe: a piece that
#: is letters and digits with only these around them is one token, found without _WORD.
PUNCTUATION = "".join(sorted(set(string.punctuation) - {"_", "'"}))


def tokenize(text: str) -> list[str]:
    """The words of a cleaned tweet: runs of letters/digits (apostrophes inside kept)."""
    return _WORD.findall(text)


def top_words(texts: Iterable[str], top: int = DEFAULT_TOP,
              apart: Collection[str] = ()) -> list[tuple[str, int]]:
    """The ``top`` most frequent words, counted case-insensitively (``Stay`` and
    ``stay`` are one word).

    Hashtags arrive without ``#`` (the pipeline removes it), so ``COVID19`` is a
    word like any other. Stop words, one-character tokens, numbers and the words
    ``apart`` (case-folded: :func:`keyword_words`) are left out. Each word is shown
    in its most frequent spelling; ties by first seen.
    """
    return rank_words(count_tokens(texts), top, apart)


def keyword_words(keywords: Iterable[str]) -> frozenset[str]:
    """The case-folded words the tracked keywords are made of, as :func:`tokenize`
    splits texts: ``covid-19`` is ``covid`` (and ``19``, a number, left out anyway),
    ``sars-cov-2`` is ``sars`` and ``cov``. Every post carries one of them by
    construction, so a word count sets them apart."""
    return frozenset(token.casefold() for keyword in keywords for token in tokenize(keyword)
                     if not token.isdigit())


def rank_words(tokens: Mapping[str, int], top: int = DEFAULT_TOP,
               apart: Collection[str] = ()) -> list[tuple[str, int]]:
    """:func:`top_words` from token counts in the order the tokens were first seen
    (:func:`count_tokens`, :class:`WordCounter`)."""
    return _ranked(tokens, top, lambda key: not (len(key) < 2 or key.isdigit()
                                                 or key in STOP_WORDS or key in apart))


def rank_apart(tokens: Mapping[str, int], apart: Collection[str]) -> list[tuple[str, int]]:
    """The words ``apart`` (case-folded) among ``tokens``, counted and shown as
    :func:`rank_words` shows words, most frequent first."""
    return _ranked(tokens, len(apart), lambda key: key in apart) if apart else []


def _ranked(tokens: Mapping[str, int], top: int, kept: Callable[[str], bool]
            ) -> list[tuple[str, int]]:
    """The ``top`` most frequent case-folded words that are ``kept``, each in its
    most frequent spelling."""
    counts: dict[str, int] = {}  # case-folded word -> occurrences, first seen first
    spellings: dict[str, dict[str, int]] = {}  # its spellings, first seen first
    left_out: set[str] = set()
    for token, n in tokens.items():
        key = token.casefold()
        if key in counts:
            counts[key] += n
            spellings[key][token] = n
        elif key not in left_out:
            if not kept(key):
                left_out.add(key)
                continue
            counts[key] = n
            spellings[key] = {token: n}
    # most_common keeps first-seen order among equal counts, and so does max()
    return [(max(spellings[key].items(), key=itemgetter(1))[0], n)
            for key, n in Counter(counts).most_common(top)]


def count_tokens(texts: Iterable[str]) -> Counter[str]:
    r"""How often each token (:func:`tokenize`) occurs in ``texts``, in the order
    tokens are first seen: ``Counter(chain.from_iterable(map(tokenize, texts)))``,
    only faster.

    A token never spans whitespace (whitespace is neither a word character nor an
    apostrophe), so the texts' whitespace-separated pieces are counted first (in C:
    ``str.split``, ``Counter``), and only each distinct piece is tokenized, once:
    a piece of letters and digits alone (``str.isalnum``, the same characters as
    ``\w`` less ``_``) is one token as it is, and so is one with only ASCII
    punctuation around it (``word,``); any other goes through the regex.
    """
    pieces: Counter[str] = Counter()
    remaining = iter(texts)
    while chunk := list(islice(remaining, _TEXTS_PER_CHUNK)):
        pieces.update(" ".join(chunk).split())
    return _tokens_of_pieces(pieces)


def _tokens_of_pieces(pieces: Mapping[str, int]) -> Counter[str]:
    """The tokens of whitespace-free pieces, counted as the pieces are, in the order
    of the pieces."""
    tokens: dict[str, int] = {}
    get = tokens.get
    for piece, n in pieces.items():
        if piece.isalnum():  # a word alone: the usual case
            tokens[piece] = get(piece, 0) + n
        else:
            for token in _piece_tokens(piece):
                tokens[token] = get(token, 0) + n
    return Counter(tokens)


def _piece_tokens(piece: str) -> list[str]:
    """The tokens of one whitespace-free piece: :func:`tokenize`, with shortcuts."""
    if piece.isalnum():
        return [piece]
    if (core := piece.strip(PUNCTUATION)).isalnum():  # "word," "(word)"
        return [core]
    return _WORD.findall(piece)


def _count_joined(joined: str) -> Counter[str]:
    """:func:`count_tokens` of texts joined by spaces (what a worker process gets)."""
    return _tokens_of_pieces(Counter(joined.split()))


# Why worker processes: counting is pure Python CPU work, which threads would not
# spread (the GIL). Measured by bench/report_week.py (docs/performance.md,
# "Reports"): on a week of 20 s batches (30,240 documents, 1.5 million posts),
# counting the 28 million words exactly takes ~9 CPU seconds, next to ~3-5 s to read
# the documents from the embedded store and ~2 s to draw; with the counting on worker
# processes, while this process goes on reading, the week's plot takes 13.3 s (89.6 s
# with the former one-process count, a regex over every text). The workers are
# spawned, so their function (_word_worker) is found by its module's name,
# analysis.words, whatever script started them.
class WordCounter:
    """Counts the tokens of texts added in order, as :func:`count_tokens` would, with
    ``workers`` worker processes when there are many texts.

    Every ``chunk`` texts go, joined into one string, to the next worker in turn
    while the caller goes on reading, and are then dropped: at most
    CHUNKS_IN_FLIGHT chunks wait for each worker (:meth:`add` waits when the
    workers are behind), so memory does not grow with the texts. The workers
    start with the first full chunk, so a small window never starts one. Each
    worker counts the pieces of its chunks and, at the end, tokenizes each
    distinct piece once; the tokens are then put in the order they were first
    seen in all the texts. The counts and that order are the same as
    ``count_tokens`` of all the texts. Without workers, or if they cannot be
    started, this process counts. If a worker fails, the texts it had are gone:
    ``recount`` (every text again, e.g. read again from the store) is counted in
    this process instead, and without ``recount`` :meth:`tokens` raises
    WorkerError. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, workers: int = 0, chunk: int = WORD_CHUNK,
                 recount: Callable[[], Iterable[str]] | None = None) -> None:
        self.workers = workers
        self.chunk = chunk
        self.recount = recount
        self._buffer: list[str] = []
        self._pieces: Counter[str] = Counter()  # counted here
        self._sent = 0  # chunks sent to the workers
        self._failure: str | None = None  # why a worker's counts are lost
        self._inboxes: list[Any] = []
        self._outbox: Any = None
        self._processes: list[Any] = []
        self._started = False
        self._collected = False

    def __enter__(self) -> WordCounter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, texts: Iterable[str]) -> None:
        """Count ``texts`` after every text added before."""
        self._buffer.extend(texts)
        if len(self._buffer) >= self.chunk:
            chunk, self._buffer = self._buffer, []
            self._send(chunk)

    def tokens(self) -> Counter[str]:
        """The counts of every token of the texts added, in first-seen order. Raises
        WorkerError if a worker failed and there is no ``recount``."""
        tail, self._buffer = self._buffer, []
        if not self._sent:  # nothing went to a worker
            self._pieces.update(" ".join(tail).split())
            return _tokens_of_pieces(self._pieces)
        try:
            if self._failure is not None:
                raise WorkerError(self._failure)
            for inbox in self._inboxes:
                self._put(inbox, None)  # "that was all": each worker sends its counts
            tail_tokens = _count_joined(" ".join(tail))
            results = self._results()
        except WorkerError as err:
            self.close()
            if self.recount is None:
                raise
            log.warning("%s; counting the words in this process instead", err)
            return count_tokens(self.recount())
        tokens = merge_worker_tokens(results)
        tokens.update(tail_tokens)
        return tokens

    def close(self) -> None:
        """Stop the worker processes: let them end once they sent their counts, else
        end them."""
        for process in self._processes:
            if self._collected:
                process.join(timeout=5.0)
            if process.is_alive():
                process.terminate()
                process.join()
        for box in (*self._inboxes, *([self._outbox] if self._outbox else [])):
            box.close()
            box.cancel_join_thread()  # what is still unsent, nobody will read
        self._processes, self._inboxes, self._outbox = [], [], None

    def _send(self, chunk: list[str]) -> None:
        if not self._started:
            self._started = True
            if self.workers > 0:
                self._start()
        if self._failure is not None:
            return  # counted again from ``recount`` at the end
        if not self._processes:
            self._pieces.update(" ".join(chunk).split())
            return
        number = self._sent
        self._sent += 1
        try:
            self._put(self._inboxes[number % len(self._inboxes)], (number, " ".join(chunk)))
        except WorkerError as err:
            self._failure = str(err)
            self.close()

    def _put(self, inbox: Any, item: Any) -> None:
        """Put ``item`` in a worker's inbox, waiting while it is full; raises WorkerError
        when a worker ended meanwhile."""
        while True:
            try:
                inbox.put(item, timeout=0.5)
                return
            except queue.Full:
                self._check_alive(set())

    def _check_alive(self, done: set[int]) -> None:
        dead = [p.name for i, p in enumerate(self._processes)
                if i not in done and not p.is_alive()]
        if dead:
            raise WorkerError(f"word-counting process {dead[0]} ended without its counts")

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        try:
            self._outbox = context.Queue()
            for index in range(self.workers):
                inbox = context.Queue(maxsize=CHUNKS_IN_FLIGHT)
                process = context.Process(target=_word_worker, args=(index, inbox, self._outbox),
                                          name=f"report-words-{index}", daemon=True)
                process.start()
                self._inboxes.append(inbox)
                self._processes.append(process)
        except (OSError, ValueError, RuntimeError, AttributeError,
                pickle.PicklingError) as err:
            log.info("counting words in this process (no worker processes: %s)", err)
            self.close()
            self.workers = 0

    def _results(self) -> list[WorkerTokens]:
        """What each worker counted, in worker order."""
        results: dict[int, WorkerTokens] = {}
        while len(results) < len(self._processes):
            try:
                index, result = self._outbox.get(timeout=0.5)
            except queue.Empty:
                self._check_alive(set(results))
                continue
            results[index] = result
        self._collected = True
        return [results[index] for index in range(len(self._processes))]


class WorkerError(RuntimeError):
    """A word-counting process failed."""


#: What a word-counting worker sends back: for each chunk it got in which tokens
#: were first seen (by it), the chunk's number and those tokens with their counts.
WorkerTokens = list[tuple[int, list[tuple[str, int]]]]


def _word_worker(index: int, inbox: Any, outbox: Any) -> None:
    """A word-counting process: count the ``(number, joined)`` chunks from ``inbox``
    until ``None``, then put ``(index, WorkerTokens)`` in ``outbox``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which ends us
    outbox.put((index, count_chunks(iter(inbox.get, None))))


def count_chunks(chunks: Iterable[tuple[int, str]]) -> WorkerTokens:
    """What a worker sends back for its ``(number, joined texts)`` chunks, numbers
    rising: their pieces counted, then tokenized (:func:`tokens_by_chunk`)."""
    pieces: Counter[str] = Counter()
    starts: list[tuple[int, int]] = []  # (chunk number, distinct pieces before it)
    for number, joined in chunks:
        starts.append((number, len(pieces)))
        pieces.update(joined.split())
    return tokens_by_chunk(pieces, starts)


def tokens_by_chunk(pieces: Mapping[str, int], starts: Sequence[tuple[int, int]]
                    ) -> WorkerTokens:
    """The tokens of ``pieces`` (in first-seen order, as ``Counter.update`` leaves them)
    grouped by the chunk they were first seen in: ``starts`` gives each chunk's number
    and how many distinct pieces came before it. A token is first seen in the chunk
    of the first piece that gives it."""
    tokens: dict[str, int] = {}
    groups: list[tuple[int, list[str]]] = []
    upcoming = iter([*starts, (-1, len(pieces) + 1)])
    next_number, next_start = next(upcoming)
    for position, (piece, n) in enumerate(pieces.items()):
        while position >= next_start:
            groups.append((next_number, []))
            next_number, next_start = next(upcoming)
        for token in _piece_tokens(piece):
            if token in tokens:
                tokens[token] += n
            else:
                tokens[token] = n
                groups[-1][1].append(token)
    return [(number, [(token, tokens[token]) for token in new]) for number, new in groups
            if new]


def merge_worker_tokens(results: Iterable[WorkerTokens]) -> Counter[str]:
    """The token counts of several workers added up, in the order the tokens were first
    seen in all the chunks: chunk by chunk (each chunk went to one worker), in the
    order its worker first saw them."""
    merged: dict[str, int] = {}
    get = merged.get
    for _, items in sorted(chain.from_iterable(results), key=itemgetter(0)):
        for token, n in items:
            merged[token] = get(token, 0) + n
    return Counter(merged)


def word_workers() -> int:
    """How many processes ``report.py plot`` counts words with: one per CPU (at most
    4), none on a machine with a single CPU."""
    cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(cpus, 4)

