"""The X API v2 filtered stream, through tweepy's ``StreamingClient``.

X has no free read access in 2026: the API is pay-per-use, billed per post
read (X's developer console has the current rates). :class:`DailyCap` bounds
the posts read per UTC day (``--max-posts``); the count is kept beside the
journal, so a restart does not reset it.
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

from journal import write_atomically
from sources import Emit, Tweet, describe_errors, tweet_or_reason

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

    def __init__(self, bearer_token: str, emit: Emit, *, daily_cap: DailyCap | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("max_retries", self.MAX_RETRIES)
        kwargs.setdefault("wait_on_rate_limit", self.WAIT_ON_RATE_LIMIT)
        kwargs.setdefault("chunk_size", self.CHUNK_SIZE)
        super().__init__(bearer_token, **kwargs)
        self._emit = emit
        self.daily_cap = daily_cap
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
        if missing:
            response = self.add_rules(
                [tweepy.StreamRule(value, tag=self.RULE_TAG) for value in missing]
            )
            errors = getattr(response, "errors", None)
            if errors:
                log.error("the X API rejected stream rule(s): %s", describe_errors(errors))
            log.info("added %d stream rule(s): %s", len(missing), "; ".join(missing))

        if not stale and not missing:
            log.info("stream rules already up to date: %s", "; ".join(wanted))

    # -- streaming

    def start(self) -> None:
        """Connect to the filtered stream and emit tweets until disconnected (blocks)."""
        self.filter(tweet_fields=list(self.TWEET_FIELDS), threaded=False)

    def run(self, stop: threading.Event) -> None:
        """:meth:`start` until ``stop`` is set or the X API refuses for good; at
        the daily cap, wait for the next UTC day and connect again."""
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
        log.info("connected to the X API filtered stream")

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
        self.read += 1
        if self.daily_cap is not None and self.daily_cap.count():
            self.disconnect()  # tweepy stops after this message
        self.received += 1
        # the filtered stream has no position to resume from: a refused post is gone
        if not self._emit(tweet, None):
            self.refused += 1
            self.on_refused(tweet)

    def on_refused(self, tweet: Tweet) -> None:
        """Called with a post the journal refused (full, or the disk is): the X stream
        cannot send it again, so it is lost, a gap in what was read. The journal
        counts and logs it (at most one warning every few seconds)."""

    def on_connection_error(self) -> None:
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
        log.info("disconnected from the X API filtered stream")
