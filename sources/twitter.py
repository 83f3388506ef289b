"""The X API v2 filtered stream, through tweepy's ``StreamingClient``.

X has no free read access in 2026: the API is pay-per-use, billed per post
read (X's developer console has the current rates). :class:`DailyCap` bounds
the posts read per UTC day (``--max-posts``); the count is kept beside the
journal, so a restart does not reset it.

Each post carries ``matched``: the rules that chose it (the payload's
``matching_rules``), by their values where this source knows them (it set them:
:meth:`TwitterSource.sync_rules`), else by their tags. The coverage ledger
(:mod:`sources.coverage`) is kept in X's own time, the posts' ``created_at`` (X's
clock, as Jetstream's spans are in the host's; a post without one is placed at its
arrival): the filtered stream sends nothing again after a disconnect, so each
reconnection (and a restart) is a gap from the last post read before it to the
first after it (``x disconnect``), and each run of posts the journal refused is
one too (``refused``).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tweepy

import wire_records
from journal import write_atomically
from sources import Emit, Tweet, describe_errors, matched_rules, tweet_or_reason
from sources.coverage import X_DISCONNECT, CoverageLedger, time_us_of

log = logging.getLogger(__name__)


class DailyCap:
    """Posts read this UTC day against a limit (``--max-posts``): X bills each one.

    The count is kept in ``path`` (beside the journal), rewritten every
    SAVE_EVERY posts and at the cap, so that a restart does not reset it; a
    crash can lose at most SAVE_EVERY posts of the count.
    """

    FILE = "x-posts-read.json"
    SAVE_EVERY = 100

    def __init__(self, limit: int, path: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if limit < 1:
            raise ValueError("the daily cap must be at least 1")
        self.limit = limit
        self.path = path
        self._clock = clock
        self.day, self.used = self._today(), 0
        if path is not None and path.exists():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
                if saved["day"] == self.day and type(saved["posts"]) is int:
                    self.used = max(0, saved["posts"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("ignoring %s (%s): counting today's posts from 0", path, err)

    def _today(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).date().isoformat()

    def _roll(self) -> None:
        today = self._today()
        if today != self.day:
            self.day, self.used = today, 0

    @property
    def reached(self) -> bool:
        """True when today's posts have reached the limit."""
        self._roll()
        return self.used >= self.limit

    @property
    def used_today(self) -> int:
        """Posts read this UTC day; read-only (0 once the day has rolled over)."""
        return self.used if self._today() == self.day else 0

    def count(self) -> bool:
        """Count one post read; True when that one reached the limit."""
        self._roll()
        self.used += 1
        if self.used % self.SAVE_EVERY == 0 or self.used == self.limit:
            self.save()
        return self.used == self.limit

    def seconds_to_reset(self) -> float:
        """Seconds until the next UTC midnight, when the count starts again."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        return max(0.0, (midnight - now).total_seconds())

    def save(self) -> None:
        """Write the count; a failure is logged (the count in memory still holds)."""
        if self.path is None:
            return
        try:
            write_atomically(self.path, json.dumps({"day": self.day,
                                                            "posts": self.used}))
        except OSError as err:
            log.warning("cannot save today's X post count to %s: %s", self.path,
                        err.strerror or err)


class TwitterSource(tweepy.StreamingClient):
    """The X API v2 filtered stream, each tweet handed to ``emit``.

    tweepy reconnects with its own backoff (network errors: 0.25 s steps up to
    16 s; HTTP errors: 5 s doubling up to 320 s, at least 60 s after a 429);
    the constants below only configure it. The bearer token is never logged.
    """

    RULE_TAG = "covid19-live-stream"
    #: What each post carries besides id and text: its post fields' sources, and its
    #: place in the conversation (docs/design.md). X bills per post, not per field.
    TWEET_FIELDS = ("created_at", "lang", "author_id", "conversation_id", "referenced_tweets",
                    "entities")
    #: Consecutive failed connection attempts before tweepy gives up; it resets
    #: the count after each good connection. inf = keep trying until stopped.
    MAX_RETRIES = math.inf
    #: Rules requests (get/add/delete) wait out a rate limit instead of failing.
    WAIT_ON_RATE_LIMIT = True
    #: Bytes per socket read: tweepy's default, about half a tweet (low latency).
    CHUNK_SIZE = 512
    #: HTTP statuses after which retrying cannot help.
    FATAL_STATUSES = (401, 403)
    #: What tweepy connects to: the "host" of the coverage ledger's spans and gaps.
    HOST = "https://api.twitter.com/2/tweets/search/stream"

    def __init__(self, bearer_token: str, emit: Emit, *, daily_cap: DailyCap | None = None,
                 ledger: CoverageLedger | None = None, journaled: Sequence[Tweet] = (),
                 clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        """``ledger`` keeps the coverage; ``journaled``, the journal's last records,
        say when the last run read its last post (a restart's gap starts there)."""
        kwargs.setdefault("max_retries", self.MAX_RETRIES)
        kwargs.setdefault("wait_on_rate_limit", self.WAIT_ON_RATE_LIMIT)
        kwargs.setdefault("chunk_size", self.CHUNK_SIZE)
        super().__init__(bearer_token, **kwargs)
        self._emit = emit
        self._clock = clock
        self.daily_cap = daily_cap
        #: rule id -> (tag, value) of the stream's rules, once :meth:`sync_rules` ran
        self.rules: dict[str, tuple[str, str]] = {}
        self.ledger = ledger
        self._reconnected = True  # the next post is the first of a connection
        if ledger is not None:
            ledger.counts = lambda: (self.read, self.read, self.received - self.refused,
                                     self.refused)
            newest = max((self.source_time(tweet) for tweet in journaled
                          if isinstance(tweet.get("created_at"), str)), default=None)
            if newest is not None:
                ledger.restart(newest)
                ledger.note(newest)
        #: posts read from the stream (X bills each one), good or not
        self.read = 0
        #: tweets handed to emit
        self.received = 0
        #: tweets emit refused (the journal was full): the filtered stream cannot send
        #: them again, so each is lost, and counted here and by the journal
        self.refused = 0
        #: connections made (tweepy reconnects by itself)
        self.connections = 0
        #: the HTTP status that made the stream stop for good, if any
        self.fatal_status: int | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} running={self.running}>"

    # -- rules

    def sync_rules(self, wanted: Sequence[str]) -> None:
        """Make the stream's rules tagged :attr:`RULE_TAG` exactly ``wanted``.

        Adds the wanted rules that are missing, deletes rules carrying our tag
        that are no longer wanted, and never touches rules with other tags.
        Raises tweepy.TweepyException (or a requests error) when the X API
        refuses or cannot be reached.
        """
        wanted = list(dict.fromkeys(wanted))
        current = list(self.get_rules().data or [])
        ours = [rule for rule in current if rule.tag == self.RULE_TAG]
        values = {rule.value: rule for rule in current}

        stale = [rule for rule in ours if rule.value not in wanted]
        if stale:
            self.delete_rules([rule.id for rule in stale])
            log.info("deleted %d stale stream rule(s): %s",
                     len(stale), "; ".join(rule.value for rule in stale))

        for value in wanted:
            rule = values.get(value)
            if rule is not None and rule.tag != self.RULE_TAG:
                log.info("stream rule %r already exists with tag %r; leaving it as it is",
                         value, rule.tag)
        missing = [value for value in wanted if value not in values]
        added: list[Any] = []
        if missing:
            response = self.add_rules(
                [tweepy.StreamRule(value, tag=self.RULE_TAG) for value in missing]
            )
            errors = getattr(response, "errors", None)
            if errors:
                log.error("the X API rejected stream rule(s): %s", describe_errors(errors))
            log.info("added %d stream rule(s): %s", len(missing), "; ".join(missing))
            added = list(getattr(response, "data", None) or [])
        # every rule on the stream chooses posts, ours or not
        self.rules = {str(rule.id): (rule.tag or "", rule.value)
                      for rule in [*current, *added]
                      if rule.id is not None and rule not in stale}

        if not stale and not missing:
            log.info("stream rules already up to date: %s", "; ".join(wanted))

    # -- streaming

    def start(self) -> None:
        """Connect to the filtered stream and emit tweets until disconnected (blocks)."""
        self.filter(tweet_fields=list(self.TWEET_FIELDS), threaded=False)

    def run(self, stop: threading.Event) -> None:
        """:meth:`start` until ``stop`` is set or the X API refuses for good; at
        the daily cap, wait for the next UTC day and connect again. The rules in
        force go to the ledger first, its last records at the end."""
        if self.ledger is not None:
            self.ledger.declare(rules=[{"tag": tag, "value": value}
                                       for tag, value in self.rules.values()])
        try:
            self._run(stop)
        finally:
            if self.ledger is not None:
                self.ledger.close()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set() and self.fatal_status is None:
            cap = self.daily_cap
            if cap is not None and cap.reached:
                wait = cap.seconds_to_reset()
                log.warning("daily cap of %d X posts reached (%s); disconnected until "
                            "00:00 UTC, in %.1f h", cap.limit, cap.day, wait / 3600)
                if stop.wait(wait + 1):
                    return
                continue
            self.start()
            if cap is None or not cap.reached:
                return  # stopped, refused, or tweepy gave up

    def status(self) -> str:
        """One status line: posts read (today against the cap, if any), reconnects."""
        cap = self.daily_cap
        today = f", {cap.used:,} of {cap.limit:,} today" if cap is not None else ""
        refused = f", {self.refused:,} refused (journal full)" if self.refused else ""
        return (f"twitter: {self.read:,} posts read{today}, {self.received:,} sent on"
                f"{refused}, {max(0, self.connections - 1):,} reconnects")

    def on_connect(self) -> None:
        self.connections += 1
        self._reconnected = True
        log.info("connected to the X API filtered stream")

    def source_time(self, tweet: Tweet) -> int:
        """A post's place in X's time (µs): its ``created_at``, else now."""
        created = wire_records.record_time(tweet.get("created_at"))
        return time_us_of(created) if created is not None else int(self._clock() * 1e6)

    def on_data(self, raw_data: bytes | str) -> None:
        """Parse one stream message and emit its tweet; bad messages are logged and skipped.

        Each tweet is a post read, counted against the daily cap; reaching it
        disconnects the stream.
        """
        try:
            payload = json.loads(raw_data)
        except (ValueError, RecursionError):
            log.warning("ignoring a stream message that is not JSON (%d bytes)", len(raw_data))
            return
        tweet, reason = tweet_or_reason(payload)
        if tweet is None:
            log.warning("ignoring a stream message without a tweet: %s", reason)
            return
        at = self.source_time(tweet)
        if self._reconnected:  # before it is counted: the span it opens counts it
            self._reconnected = False
            self.on_first_post(at)
        self.read += 1
        if self.daily_cap is not None and self.daily_cap.count():
            self.disconnect()  # tweepy stops after this message
        self.received += 1
        matched = matched_rules(payload, self.rules)
        if matched:
            tweet["matched"] = matched
        # the filtered stream has no position to resume from: a refused post is gone
        ledger = self.ledger
        if not ((ledger is None or not ledger.pending or ledger.flush())
                and self._emit(tweet, None)):
            self.refused += 1
            self.on_refused(tweet)
            if ledger is not None:
                ledger.refused(self.HOST, at)
        elif ledger is not None:
            ledger.accepted(at)
        if ledger is not None:
            ledger.tick()

    def on_first_post(self, time_us: int) -> None:
        """Called with the X time of a connection's first post: the filtered stream
        sent nothing of what came since the last post read before (this run's or the
        last one's), a gap; a new span begins."""
        ledger = self.ledger
        if ledger is None:
            return
        if ledger.last_us is not None:
            ledger.close_span()
            ledger.gap(self.HOST, ledger.last_us, time_us, X_DISCONNECT)
        ledger.open(self.HOST, time_us)

    def on_refused(self, tweet: Tweet) -> None:
        """Called with a post the journal refused (full, or the disk is): the X stream
        cannot send it again, so it is lost, a gap in what was read. The journal
        counts and logs it (at most one warning every few seconds)."""

    def on_connection_error(self) -> None:
        if self.ledger is not None:
            self.ledger.update()
        log.warning(
            "the connection to the X API stream failed or timed out; "
            "tweepy reconnects with backoff"
        )

    def on_request_error(self, status_code: int) -> None:
        if status_code in self.FATAL_STATUSES:
            self.fatal_status = status_code
            log.error(
                "the X API refused the stream (HTTP %d): the bearer token is invalid "
                "or your X API tier does not include the filtered stream; stopping",
                status_code,
            )
            self.disconnect()
        elif status_code in (420, 429):
            log.warning(
                "the X API stream is rate limited (HTTP %d): too many connections; "
                "tweepy waits at least 60 s before reconnecting", status_code,
            )
        else:
            log.warning(
                "the X API stream answered HTTP %d; tweepy retries with backoff", status_code
            )

    def on_disconnect(self) -> None:
        if self.ledger is not None:
            self.ledger.update()
        log.info("disconnected from the X API filtered stream")
