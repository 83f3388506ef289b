"""The one place that reads configuration, for both processes.

Precedence, highest first: command-line flags, the process environment, a
``.env`` file in the current directory (python-dotenv, checked by
:mod:`config.dotenv_file`), the defaults below. Every option has one environment
variable and, unless it is a secret, one flag; ``config.example.env`` lists
them all. The files the programs keep default to one folder, ``DATA_DIR``
(``data`` in the project folder), whatever the current folder, so that both
programs find the same ones.

    >>> settings = load_settings("stream.py", STREAM_OPTIONS, ["--port", "6000"])
    >>> settings.port
    6000

A bad value raises :class:`ConfigError` whose message is one line naming the
flag and the variable; the programs print it and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from config import dotenv_file
from config.values import (
    SIZE_UNITS,
    boolean,
    byte_size,
    choice,
    commit_window,
    host_name,
    http_url,
    int_in,
    keywords,
    log_level,
    master,
    mongo_name,
    mongo_uri,
    non_empty,
    number,
    one_core,
    optional,
    post_fields,
    rules,
    spark_remote,
    ws_urls,
)

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = PROJECT_DIR / "data"
#: the files kept under DATA_DIR unless given a path of their own: option -> name in it
DATA_FILES = {"journal_path": "journal", "control_secret_path": "control.secret",
              "spool_path": "spool.jsonl", "quarantine_path": "quarantine.jsonl",
              "embedded_db_path": "db", "checkpoint_path": "checkpoint"}
#: variables the programs (or Spark and Java under them) read from the process
#: environment, outside this module: never from .env, which does not reach them
ENVIRONMENT_ONLY = ("JAVA_HOME", "SPARK_HOME", "SPARK_DRIVER_MEMORY", "SPARK_LOCAL_IP",
                    "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYSPARK_SUBMIT_ARGS")
DEFAULT_REPLAY_FILE = PROJECT_DIR / "samples" / "tweets.jsonl"
DEFAULT_WORLDOMETERS_URL = "https://www.worldometers.info/coronavirus/"
DEFAULT_RULES = "covid OR covid19 OR coronavirus OR #COVID19"
#: Bluesky's public Jetstream hosts (docs/design.md, "Bluesky posts"): the original
#: service, then its 2026 rewrite, which serves /subscribe as well.
DEFAULT_JETSTREAM_URLS = tuple(
    f"wss://{host}/subscribe" for host in (
        "jetstream1.us-east.bsky.network", "jetstream2.us-east.bsky.network",
        "jetstream1.us-west.bsky.network", "jetstream2.us-west.bsky.network",
        "jetstream.us-east.bsky.network", "jetstream.us-west.bsky.network",
    )
)
DEFAULT_KEYWORDS = ("covid", "covid19", "covid-19", "coronavirus", "sars-cov-2")
DEFAULT_WHO_URL = ("https://srhdpeuwpubsa.blob.core.windows.net/whdh/COVID/"
                   "WHO-COVID-19-global-daily-data.csv")
MASK = "***"

log = logging.getLogger("config")


class ConfigError(ValueError):
    """A configuration value is missing or invalid. ``str(err)`` is one line."""


@dataclass(frozen=True)
class Settings:
    """Every setting of both processes, resolved and validated.

    Secrets are kept out of ``repr`` so that logging a Settings never leaks them.
    """

    # producer <-> Spark socket
    host: str = "127.0.0.1"
    port: int = 5555
    ack_port: int = 5556
    # producer
    source: str = "bluesky"
    bearer_token: str | None = field(default=None, repr=False)
    twitter_rules: tuple[str, ...] = (DEFAULT_RULES,)
    max_posts: int | None = None
    jetstream_urls: tuple[str, ...] = DEFAULT_JETSTREAM_URLS
    keywords: tuple[str, ...] = DEFAULT_KEYWORDS
    stale_seconds: float = 60.0
    max_event_bytes: int = 4 * 1024**2
    replay_file: Path = DEFAULT_REPLAY_FILE
    rate: float = 5.0
    loop: bool = False
    from_start: bool = False
    journal_max_bytes: int = 2 * 1024**3
    journal_path: Path = DEFAULT_DATA_DIR / DATA_FILES["journal_path"]
    journal_commit_window_ms: float = 5.0
    # both: the control channel's shared secret
    control_secret: str | None = field(default=None, repr=False)
    control_secret_path: Path = DEFAULT_DATA_DIR / DATA_FILES["control_secret_path"]
    # Spark job
    engine: str = "dstream"
    remote: str | None = None
    checkpoint_path: Path = DEFAULT_DATA_DIR / DATA_FILES["checkpoint_path"]
    batch_seconds: float = 20.0
    receiver_max_rate: int = 50_000
    master: str = "local[2]"
    duration: float | None = None
    case_source: str = "worldometers"
    worldometers_url: str = DEFAULT_WORLDOMETERS_URL
    who_url: str = DEFAULT_WHO_URL
    scrape_timeout: float = 10.0
    spool_path: Path = DEFAULT_DATA_DIR / DATA_FILES["spool_path"]
    quarantine_path: Path = DEFAULT_DATA_DIR / DATA_FILES["quarantine_path"]
    # storage
    mongo_uri: str | None = field(default=None, repr=False)
    database: str = "covid19"
    collection: str = "tweet_batches"
    embedded_db_path: Path = DEFAULT_DATA_DIR / DATA_FILES["embedded_db_path"]
    batch_metrics: str = "auto"
    case_series: str = "on"
    post_fields: tuple[str, ...] = ()
    keep_deleted: bool = False
    # both
    data_dir: Path = DEFAULT_DATA_DIR
    log_level: str = "INFO"
    metrics_port: int | None = None  # None or 0: no /metrics endpoint

    @property
    def secrets(self) -> list[str]:
        """Strings that must never be written to a log line."""
        found = [s for s in (self.bearer_token, self.control_secret) if s]
        if self.mongo_uri:
            password = urlsplit(self.mongo_uri).password
            if password:
                found.append(password)
        return found

    @property
    def store_description(self) -> str:
        """Where batches go, safe to log (no password)."""
        if self.mongo_uri:
            return f"MongoDB {redact_uri(self.mongo_uri)} db={self.database} coll={self.collection}"
        return (
            f"embedded MontyDB (SQLite) at {self.embedded_db_path} "
            f"db={self.database} coll={self.collection}"
        )


@dataclass(frozen=True)
class Option:
    """How one Settings field is read: its variable, its flag, its parser."""

    name: str
    env: str
    flag: str | None
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None
    is_switch: bool = False
    #: the flag may be given several times; its values are joined with "," (the
    #: environment form's separator) before parsing
    repeats: bool = False
    #: a former spelling of the flag and of the variable: still read (after the
    #: current one), with one deprecation line when used
    old_flag: str | None = None
    old_env: str | None = None


OPTIONS: dict[str, Option] = {
    opt.name: opt
    for opt in [
        Option("host", "STREAM_HOST", "--host", host_name,
               "address of the tweet socket (producer binds it, Spark connects to it)", "HOST"),
        Option("port", "STREAM_PORT", "--port", int_in(1, 65535),
               "TCP port of the tweet socket", "PORT"),
        Option("ack_port", "ACK_PORT", "--ack-port", int_in(1, 65535),
               "TCP port of the control channel: where the producer hears the job's "
               "authenticated acknowledgements (same host)", "PORT"),
        Option("source", "TWEET_SOURCE", "--source", choice("bluesky", "twitter", "replay"),
               "where posts come from: bluesky (Bluesky's public Jetstream, free), twitter "
               "(X API filtered stream, paid per post read) or replay (a file); default: "
               "twitter when TWITTER_BEARER_TOKEN is set, else bluesky",
               "{bluesky,twitter,replay}"),
        Option("jetstream_urls", "JETSTREAM_URLS", "--jetstream-url", ws_urls,
               "Jetstream subscribe URL for --source bluesky; give the flag several times "
               "(JETSTREAM_URLS: comma-separated) and reconnects rotate through them",
               "URL", repeats=True),
        Option("keywords", "KEYWORDS", "--keywords", keywords,
               "comma-separated keywords a Bluesky post must contain as a whole word or "
               "tag (case-insensitive)", "WORDS"),
        Option("stale_seconds", "JETSTREAM_STALE_SECONDS", "--stale-seconds",
               number(0, inclusive=False),
               "reconnect to Jetstream when no event has arrived for this many seconds",
               "SECONDS"),
        Option("max_event_bytes", "JETSTREAM_MAX_EVENT_BYTES", "--max-event-bytes", byte_size,
               "largest Jetstream event the client reads (e.g. 4MiB, at least 1 MiB); hosts "
               "are asked to skip bigger ones, and one sent anyway is skipped", "SIZE"),
        Option("bearer_token", "TWITTER_BEARER_TOKEN", None, non_empty,
               "X API bearer token (environment or .env only, never a flag)"),
        Option("twitter_rules", "TWITTER_RULES", "--rules", rules,
               "filtered-stream rules, separated by ';'", "RULES"),
        Option("max_posts", "TWITTER_MAX_POSTS", "--max-posts", optional(int_in(1, 10**12)),
               "at most this many X posts read per UTC day (X bills each post read); at the "
               "cap the stream disconnects until the next UTC day; unset = no cap", "N"),
        Option("replay_file", "REPLAY_FILE", "--replay-file", lambda raw: Path(non_empty(raw)),
               "newline-delimited JSON file for --source replay", "PATH"),
        Option("rate", "REPLAY_RATE", "--rate", number(0, inclusive=True),
               "replay rate in tweets per second; 0 = as fast as possible", "N"),
        Option("loop", "REPLAY_LOOP", "--loop", boolean,
               "replay the file again and again (ids get a '~N' suffix per pass)", is_switch=True),
        Option("from_start", "REPLAY_FROM_START", "--from-start", boolean,
               "replay the file again from its top although an earlier run replayed it, "
               "as a new pass whose ids get the next '~N' suffix", is_switch=True),
        Option("journal_max_bytes", "JOURNAL_MAX_BYTES", "--journal-max-bytes", byte_size,
               "most disk the journal of posts not yet stored may take (e.g. 2GiB); past "
               "it the replay and Bluesky wait for room, X posts are refused; accepted ones "
               "are kept", "SIZE"),
        Option("journal_path", "JOURNAL_PATH", "--journal-path",
               lambda raw: Path(non_empty(raw)),
               "folder where the producer keeps tweets until they are stored", "PATH"),
        Option("journal_commit_window_ms", "JOURNAL_COMMIT_WINDOW_MS", "--commit-window-ms",
               commit_window,
               "milliseconds the journal lets posts gather before one fsync writes them all "
               "(0 to 1000); a post is accepted once its window is on disk", "MS"),
        Option("control_secret", "CONTROL_SECRET", None, non_empty,
               "shared secret of the control channel (environment or .env only, never a "
               "flag); unset = the file CONTROL_SECRET_FILE"),
        Option("control_secret_path", "CONTROL_SECRET_FILE", "--control-secret-file",
               lambda raw: Path(non_empty(raw)),
               "file holding the control channel's secret, made on first use, readable by "
               "its owner only; both programs must use the same", "PATH"),
        Option("engine", "STREAMING_ENGINE", "--engine", choice("dstream", "structured"),
               "Spark's engine: dstream (Spark Streaming's DStreams, the card's) or "
               "structured (Structured Streaming, which also runs through Spark Connect)",
               "{dstream,structured}"),
        Option("remote", "SPARK_REMOTE", "--remote", spark_remote,
               "run the structured engine through this Spark Connect server "
               "(sc://HOST:PORT); unset = Spark in this process", "URL"),
        Option("checkpoint_path", "CHECKPOINT_PATH", "--checkpoint-path",
               lambda raw: Path(non_empty(raw)),
               "folder of the structured engine's Spark checkpoint (which batch holds which "
               "posts); on the Spark Connect server's machine with --remote", "PATH"),
        Option("batch_seconds", "BATCH_SECONDS", "--batch-seconds", number(0, inclusive=False),
               "length of one Spark Streaming batch in seconds", "SECONDS"),
        Option("receiver_max_rate", "RECEIVER_MAX_RATE", "--receiver-max-rate",
               int_in(0, 10**9),
               "most tweets per second Spark takes, also when stream.py sends a backlog "
               "(the rest waits in its journal); 0 = no cap", "N"),
        Option("master", "SPARK_MASTER", "--master", master,
               "Spark master URL (local[2], spark://host:7077, ...)", "URL"),
        Option("duration", "RUN_DURATION", "--duration", number(0, inclusive=False),
               "stop gracefully after this many seconds (default: run until Ctrl-C)", "SECONDS"),
        Option("case_source", "CASE_SOURCE", "--case-source", choice("worldometers", "who"),
               "where the total case count comes from: worldometers (frozen since "
               "2024-04-13) or who (WHO's daily file, still updated)", "{worldometers,who}"),
        Option("worldometers_url", "WORLDOMETERS_URL", "--worldometers-url", http_url,
               "page holding the 'Coronavirus Cases:' counter", "URL",
               old_flag="--worldometer-url", old_env="WORLDOMETER_URL"),
        Option("who_url", "WHO_DATA_URL", "--who-url", http_url,
               "WHO's daily Covid-19 CSV for --case-source who", "URL"),
        Option("scrape_timeout", "SCRAPE_TIMEOUT", "--scrape-timeout", number(0, inclusive=False),
               "seconds before one case-count request gives up (and the most a batch waits "
               "for the count)", "SECONDS"),
        Option("spool_path", "SPOOL_PATH", "--spool-path", lambda raw: Path(non_empty(raw)),
               "file holding batches while the store is unreachable", "PATH"),
        Option("quarantine_path", "QUARANTINE_PATH", "--quarantine-path",
               lambda raw: Path(non_empty(raw)),
               "file keeping malformed lines with the reason (bounded)", "PATH"),
        Option("mongo_uri", "MONGODB_URI", "--mongo-uri", mongo_uri,
               "MongoDB connection string; unset = the embedded store", "URI"),
        Option("database", "MONGODB_DATABASE", "--database", mongo_name("database", '/\\. "$'),
               "database name", "NAME"),
        Option("collection", "MONGODB_COLLECTION", "--collection",
               mongo_name("collection", "$\0"), "collection name", "NAME"),
        Option("embedded_db_path", "EMBEDDED_DB_PATH", "--embedded-db-path",
               lambda raw: Path(non_empty(raw)), "folder of the embedded store", "PATH"),
        Option("case_series", "CASE_SERIES", "--case-series", choice("on", "off"),
               "keep the case source's figures (WHO: one document per country per day) "
               "in the case_counts collection: on or off", "{on,off}"),
        Option("batch_metrics", "BATCH_METRICS", "--batch-metrics", choice("auto", "on", "off"),
               "store per-batch metrics in the batch_metrics collection: on, off, or auto "
               "(on for the embedded store, off for MongoDB)", "{auto,on,off}"),
        Option("post_fields", "POST_FIELDS", "--post-fields", post_fields,
               "also store each post's fields, a comma list of id, created_at, lang, url, "
               "author_id, reply_to, reply_root, quote_of, hashtags, links, mentions, "
               "matched (author_id and mentions identify people: only when named), as the "
               "document's posts, aligned with content; empty = content only", "FIELDS"),
        Option("keep_deleted", "KEEP_DELETED", "--keep-deleted", boolean,
               "keep the posts whose authors deleted them (default: off, so a deleted post "
               "is removed from every stored document; docs/configuration.md says why to "
               "leave it off)", is_switch=True),
        Option("data_dir", "DATA_DIR", "--data-dir", lambda raw: Path(non_empty(raw)),
               "folder of the journal, control secret, spool, quarantine and embedded "
               "store when their own paths are not given; both programs must use the same",
               "PATH"),
        Option("log_level", "LOG_LEVEL", "--log-level", log_level,
               "DEBUG, INFO, WARNING or ERROR", "LEVEL"),
        Option("metrics_port", "METRICS_PORT", "--metrics-port", optional(int_in(0, 65535)),
               "serve Prometheus metrics on http://127.0.0.1:PORT/metrics; 0 or unset = "
               "off (give each program its own port)", "PORT"),
    ]
}

STREAM_OPTIONS = ("source", "jetstream_urls", "keywords", "stale_seconds", "max_event_bytes",
                  "from_start", "bearer_token",
                  "twitter_rules", "max_posts", "replay_file", "rate", "loop", "host", "port",
                  "ack_port", "journal_max_bytes", "journal_path", "journal_commit_window_ms",
                  "control_secret", "control_secret_path", "data_dir", "log_level",
                  "metrics_port")
SPARK_OPTIONS = ("host", "port", "ack_port", "control_secret", "control_secret_path",
                 "engine", "remote", "checkpoint_path", "batch_seconds", "receiver_max_rate",
                 "master", "duration", "mongo_uri",
                 "database", "collection", "embedded_db_path", "spool_path",
                 "quarantine_path", "batch_metrics", "case_source", "worldometers_url", "who_url",
                 "scrape_timeout", "case_series", "post_fields", "keep_deleted", "data_dir",
                 "log_level",
                 "metrics_port")
SCRAPE_OPTIONS = ("case_source", "worldometers_url", "who_url", "scrape_timeout", "log_level")
STORE_OPTIONS = ("mongo_uri", "database", "collection", "embedded_db_path", "data_dir",
                 "log_level")

_DEFAULTS = Settings()


class SwitchAction(argparse.BooleanOptionalAction):
    """``--loop`` / ``--no-loop``: stores the raw text ``"true"`` or ``"false"``,
    as the environment would hold it, so that :func:`resolve` parses both alike.

    A flag not given stays ``None`` (the parser's default), so the environment,
    ``.env`` or the default decides; either form given beats them all.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if option_string in self.option_strings:
            negative = option_string is not None and option_string.startswith("--no-")
            setattr(namespace, self.dest, "false" if negative else "true")


class _TypedFlag(argparse.Action):
    """Stores an option's value (appends it when the option ``repeats``) and the flag
    it was typed as, so that an error about it names that flag (an alias too)."""

    def __init__(self, *args: Any, repeats: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repeats = repeats

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if self.repeats:
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)
        setattr(namespace, _typed_dest(self.dest), option_string)


def build_parser(
    prog: str,
    description: str,
    names: Iterable[str],
    aliases: Mapping[str, str] | None = None,
    *,
    add_help: bool = True,
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per option in ``names`` that has a flag.

    ``aliases`` maps an option name to a second, shorter flag (``--url``),
    which errors about a value not given as a flag then name;
    ``add_help=False`` makes a parent parser for subcommands.

    Flags default to ``None`` so that :func:`resolve` can tell "not given"
    from "given"; the help text shows the variable and the default. A
    boolean option (``is_switch``) gets both forms, ``--loop`` and
    ``--no-loop`` (:class:`SwitchAction`).
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter, add_help=add_help,
    )
    for name in names:
        opt = OPTIONS[name]
        if opt.flag is None:
            continue
        shown = "" if name == "source" else f"; default: {default_text(name)}"
        help_text = f"{opt.help} [env {opt.env}{shown}{_old_names(opt)}]"
        flags = [opt.flag, *([aliases[name]] if aliases and name in aliases else [])]
        if opt.is_switch:
            parser.add_argument(*flags, dest=name, action=SwitchAction, default=None,
                                help=help_text)
        else:
            parser.add_argument(*flags, dest=name, metavar=opt.metavar, default=None,
                                action=_TypedFlag, repeats=opt.repeats, help=help_text)
            # errors name the flag typed; else this program's own name for the option
            parser.set_defaults(**{_typed_dest(name): flags[-1]})
        if opt.old_flag is not None:
            parser.add_argument(opt.old_flag, dest=_old_dest(name), metavar=opt.metavar,
                                default=None, help=argparse.SUPPRESS)
    return parser


def _typed_dest(name: str) -> str:
    """Where argparse keeps the flag an option's value was given under."""
    return f"{name}__typed"


def _old_dest(name: str) -> str:
    """Where argparse keeps the value of an option's deprecated flag."""
    return f"{name}__old_flag"


def _old_names(opt: Option) -> str:
    """The help's note on an option's former spellings ("" when it has none)."""
    old = " / ".join(n for n in (opt.old_flag, opt.old_env) if n)
    return f"; formerly {old}, deprecated" if old else ""


def default_text(name: str) -> str:
    """Option ``name``'s default as ``--help`` and docs/configuration.md print it: ``60``
    (not ``60.0``), ``false``, ``4MiB``, ``DATA_DIR/journal``, ``unset``."""
    value = getattr(_DEFAULTS, name)
    if name in DATA_FILES:
        return f"DATA_DIR/{DATA_FILES[name]}"
    if OPTIONS[name].parse is byte_size:
        unit = next(u for u in ("TiB", "GiB", "MiB", "KiB", "") if
                    value % SIZE_UNITS[u.lower()] == 0)
        return f"{value // SIZE_UNITS[unit.lower()]}{unit}"
    if isinstance(value, tuple):
        return ("; " if name == "twitter_rules" else ",").join(value) or "empty"
    if isinstance(value, Path):
        project = PROJECT_DIR.as_posix()
        return value.as_posix().replace(project, "<project folder>", 1)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "unset" if value is None else str(value)


def resolve(
    names: Iterable[str],
    flags: Mapping[str, str | list[str] | None],
    environ: Mapping[str, str],
) -> Settings:
    """Settings from raw flag values and an environment mapping.

    Raises ConfigError naming the flag and the variable of the first bad value:
    the flag as typed (an alias such as scrape.py's ``--timeout``), if it was.
    """
    values: dict[str, Any] = {}
    for name in names:
        opt = OPTIONS[name]
        typed = flags.get(_typed_dest(name))
        flag = typed if isinstance(typed, str) else opt.flag
        given, where = flags.get(name), flag
        if given is None and opt.old_flag is not None:
            given, where = flags.get(_old_dest(name)), opt.old_flag
        raw = ",".join(given) if isinstance(given, list) else given
        if raw is None:
            raw, where = environ.get(opt.env), opt.env
        if raw is None and opt.old_env is not None:
            raw, where = environ.get(opt.old_env), opt.old_env
        _warn_old_names(opt, flags, environ)
        if raw is None:
            continue
        try:
            values[name] = opt.parse(raw)
        except ValueError as err:
            label = f"{flag} / {opt.env}" if flag else opt.env
            raise ConfigError(f"{label}: {err} (from {where})") from None
    names = set(names)
    if "data_dir" in values:  # the files not given a path of their own follow it
        for path_name, file_name in DATA_FILES.items():
            values.setdefault(path_name, values["data_dir"] / file_name)
    if "source" in names and "source" not in values:
        values["source"] = "twitter" if values.get("bearer_token") else "bluesky"
    settings = replace(_DEFAULTS, **values)
    _check(settings, names)
    return settings


def _warn_old_names(opt: Option, flags: Mapping[str, str | list[str] | None],
                    environ: Mapping[str, str]) -> None:
    """One deprecation line when ``opt`` is given under a former name (flag or variable)."""
    used = [old for old, given in ((opt.old_flag, flags.get(_old_dest(opt.name))),
                                   (opt.old_env, environ.get(opt.old_env or "")))
            if old is not None and given is not None]
    if used:
        log.warning("%s %s deprecated: use %s", " and ".join(used),
                    "is" if len(used) == 1 else "are", f"{opt.flag} / {opt.env}")


def _check(settings: Settings, names: set[str]) -> None:
    """Checks that involve more than one option or the file system."""
    if {"port", "ack_port"} <= names and settings.port == settings.ack_port:
        raise ConfigError(
            f"--port / STREAM_PORT and --ack-port / ACK_PORT are both {settings.port}: the "
            "tweet socket and the control channel need two different ports"
        )
    if "metrics_port" in names and settings.metrics_port:
        for label, port in (("--port / STREAM_PORT", settings.port),
                            ("--ack-port / ACK_PORT", settings.ack_port)):
            if port == settings.metrics_port:
                raise ConfigError(
                    f"--metrics-port / METRICS_PORT: {port} is already the port of {label}; "
                    "give the metrics a port of their own")
    if "engine" in names and settings.remote and settings.engine == "dstream":
        raise ConfigError(
            "--remote / SPARK_REMOTE runs the job through Spark Connect, which carries "
            "DataFrames and not the RDDs that DStreams run on: add --engine structured "
            "(STREAMING_ENGINE=structured)")
    if "master" in names and settings.engine == "dstream" and one_core(settings.master):
        raise ConfigError(
            f"--master / SPARK_MASTER: {settings.master!r} gives Spark one core, which the "
            "socket receiver keeps busy, so no batch would ever run; use local[2] or more, "
            "or --engine structured (no receiver)")
    if "source" not in names:
        return
    if settings.source == "twitter" and not settings.bearer_token:
        raise ConfigError(
            "--source twitter needs TWITTER_BEARER_TOKEN in the environment or .env "
            "(X API, paid per post read); without one, use --source bluesky (free) or "
            "--source replay"
        )
    if settings.source == "replay":
        path = settings.replay_file
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as err:
            raise ConfigError(
                f"--replay-file / REPLAY_FILE: cannot read {str(path)!r}: {err.strerror}"
            ) from None


def load_settings(
    prog: str,
    names: Sequence[str],
    argv: Sequence[str] | None = None,
    *,
    description: str = "",
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | os.PathLike[str] | None = ".env",
    aliases: Mapping[str, str] | None = None,
) -> Settings:
    """Parse ``argv`` and the environment into Settings, or exit with one line.

    ``--help`` and argparse's own errors exit as argparse does; a ConfigError
    prints ``prog: error: <message>`` to stderr and exits with status 2.
    """
    parser = build_parser(prog, description, names, aliases)
    return settings_from_args(
        parser, names, parser.parse_args(argv), environ=environ, dotenv_path=dotenv_path
    )


def settings_from_args(
    parser: argparse.ArgumentParser,
    names: Sequence[str],
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | os.PathLike[str] | None = ".env",
) -> Settings:
    """Settings from parsed flags plus the environment and ``.env``; on a bad
    value or a ``.env`` line that cannot be read, ``parser`` exits with status 2
    and one line naming it. A ``.env`` name no option has is warned about."""
    merged: dict[str, str] = {}
    known = {name for opt in OPTIONS.values() for name in (opt.env, opt.old_env) if name}
    try:
        if dotenv_path is not None and Path(dotenv_path).is_file():
            merged.update(dotenv_file.read_dotenv(dotenv_path, known, ENVIRONMENT_ONLY))
        merged.update(os.environ if environ is None else environ)
        return resolve(names, vars(args), merged)
    except (ConfigError, dotenv_file.DotenvError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------
# secrets and logging


def redact_uri(uri: str) -> str:
    """The URI with its password (if any) replaced by ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    userinfo = f"{parts.username}:{MASK}" if parts.username is not None else MASK
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


class RedactingFormatter(logging.Formatter):
    """A Formatter that masks every secret in the final text, tracebacks included."""

    def __init__(self, fmt: str, secrets: Iterable[str], datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Send this program's log lines to stderr, secrets masked."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s", settings.secrets, "%H:%M:%S",
    ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for noisy in ("py4j", "urllib3", "requests_oauthlib", "oauthlib", "charset_normalizer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
