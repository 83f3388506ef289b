"""Configuration: precedence, one-line errors, secrets kept out of logs."""

import io
import logging
import re
from pathlib import Path

import pytest

import config
from config import ConfigError, resolve
from sources.bluesky import DEFAULT_MAX_EVENT_BYTES

PROJECT = Path(__file__).resolve().parents[1]


def test_defaults() -> None:
    settings = resolve(config.SPARK_OPTIONS, {}, {})
    assert (settings.host, settings.port, settings.batch_seconds) == ("127.0.0.1", 5555, 20.0)
    assert (settings.database, settings.collection) == ("covid19", "tweet_batches")
    assert settings.master == "local[2]"
    assert settings.mongo_uri is None
    assert settings.embedded_db_path == PROJECT / "data" / "db"


def test_default_files_are_in_one_data_folder_whatever_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stream.py started in the project folder and spark_streaming.py started in
    samples/ must use the same control secret (and journal, spool, store...)."""
    def paths(names: tuple[str, ...], flags: dict[str, str]) -> dict[str, Path]:
        settings = resolve(names, flags, {})
        return {name: getattr(settings, name) for name in config.DATA_FILES}

    monkeypatch.chdir(PROJECT)
    in_project = paths(config.STREAM_OPTIONS, {})
    monkeypatch.chdir(PROJECT / "samples")
    in_samples = paths(config.SPARK_OPTIONS, {})
    assert in_project == in_samples
    assert in_project["control_secret_path"] == PROJECT / "data" / "control.secret"
    assert in_project["journal_path"] == PROJECT / "data" / "journal"
    assert {path.parent for path in in_project.values()} == {PROJECT / "data"}
    # --data-dir / DATA_DIR moves every file not given a path of its own
    moved = paths(config.SPARK_OPTIONS, {"data_dir": str(tmp_path), "spool_path": "my.jsonl"})
    assert moved["embedded_db_path"] == tmp_path / "db"
    assert moved["control_secret_path"] == tmp_path / "control.secret"
    assert moved["spool_path"] == Path("my.jsonl")  # a path given keeps its meaning
    from_env = resolve(config.STORE_OPTIONS, {}, {"DATA_DIR": str(tmp_path)})
    assert from_env.embedded_db_path == tmp_path / "db"


def test_flag_beats_environment_beats_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("STREAM_PORT=7000\nBATCH_SECONDS=3\nMONGODB_DATABASE=fromdotenv\n")
    settings = config.load_settings(
        "x", config.SPARK_OPTIONS, ["--port", "9000"],
        environ={"STREAM_PORT": "8000", "BATCH_SECONDS": "4"}, dotenv_path=dotenv,
    )
    assert settings.port == 9000
    assert settings.batch_seconds == 4.0
    assert settings.database == "fromdotenv"


def test_source_defaults_to_twitter_only_with_a_token_else_bluesky() -> None:
    assert resolve(config.STREAM_OPTIONS, {}, {}).source == "bluesky"
    with_token = resolve(config.STREAM_OPTIONS, {}, {"TWITTER_BEARER_TOKEN": "t"})
    assert with_token.source == "twitter"


def test_jetstream_urls_repeat_as_flags_or_are_comma_separated() -> None:
    defaults = resolve(config.STREAM_OPTIONS, {}, {})
    assert len(defaults.jetstream_urls) == 6
    assert all(url.startswith("wss://") and url.endswith(".bsky.network/subscribe")
               for url in defaults.jetstream_urls)
    flags = config.build_parser("x", "", config.STREAM_OPTIONS).parse_args(
        ["--jetstream-url", "ws://127.0.0.1:1/subscribe", "--jetstream-url", "ws://h:2/s"])
    from_flags = resolve(config.STREAM_OPTIONS, vars(flags), {"JETSTREAM_URLS": "ws://e/s"})
    assert from_flags.jetstream_urls == ("ws://127.0.0.1:1/subscribe", "ws://h:2/s")
    from_env = resolve(config.STREAM_OPTIONS, {}, {"JETSTREAM_URLS": " ws://a/s , wss://b/s,"})
    assert from_env.jetstream_urls == ("ws://a/s", "wss://b/s")


def test_max_event_bytes_is_the_clients_frame_limit_by_default_and_takes_a_size() -> None:
    assert resolve(config.STREAM_OPTIONS, {}, {}).max_event_bytes == DEFAULT_MAX_EVENT_BYTES
    settings = config.load_settings("stream.py", config.STREAM_OPTIONS,
                                    ["--max-event-bytes", "8MiB"], environ={})
    assert settings.max_event_bytes == 8 * 1024**2
    from_env = resolve(config.STREAM_OPTIONS, {}, {"JETSTREAM_MAX_EVENT_BYTES": "2000000"})
    assert from_env.max_event_bytes == 2_000_000


def test_from_start_is_a_switch_off_by_default() -> None:
    def from_start(argv: list[str], environ: dict[str, str]) -> bool:
        return config.load_settings("stream.py", config.STREAM_OPTIONS, argv,
                                    environ=environ).from_start

    assert from_start([], {}) is False
    assert from_start(["--from-start"], {}) is True
    assert from_start([], {"REPLAY_FROM_START": "true"}) is True
    assert from_start(["--no-from-start"], {"REPLAY_FROM_START": "true"}) is False


def loop_from(argv: list[str], environ: dict[str, str], dotenv: Path | None = None) -> bool:
    """``settings.loop`` of stream.py given these flags, environment and .env."""
    return config.load_settings("stream.py", config.STREAM_OPTIONS, argv, environ=environ,
                                dotenv_path=dotenv).loop


def test_no_loop_beats_replay_loop_true() -> None:
    assert loop_from(["--no-loop"], {"REPLAY_LOOP": "true"}) is False


def test_loop_beats_replay_loop_false() -> None:
    assert loop_from(["--loop"], {"REPLAY_LOOP": "false"}) is True


def test_no_loop_flag_leaves_the_environment_in_force(tmp_path: Path) -> None:
    assert loop_from([], {"REPLAY_LOOP": "true"}) is True
    assert loop_from([], {"REPLAY_LOOP": "false"}) is False
    assert loop_from([], {}) is False
    dotenv = tmp_path / ".env"
    dotenv.write_text("REPLAY_LOOP=true\n")
    assert loop_from([], {}, dotenv) is True
    assert loop_from(["--no-loop"], {}, dotenv) is False
    assert loop_from([], {"REPLAY_LOOP": "false"}, dotenv) is False
    # the last of both forms wins, as with any flag given twice
    assert loop_from(["--no-loop", "--loop"], {}) is True
    assert loop_from(["--loop", "--no-loop"], {}) is False


def test_help_lists_both_forms_of_a_boolean_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        config.load_settings("stream.py", config.STREAM_OPTIONS, ["--help"], environ={},
                             dotenv_path=None)
    assert exit_info.value.code == 0
    assert "--loop, --no-loop" in capsys.readouterr().out


def test_every_boolean_option_has_a_negative_flag() -> None:
    switches = [opt for opt in config.OPTIONS.values() if opt.is_switch]
    assert switches, "REPLAY_LOOP at least"
    parser = config.build_parser("x", "", [opt.name for opt in switches])
    for opt in switches:
        assert opt.flag is not None and opt.flag.startswith("--")
        negative = "--no-" + opt.flag[2:]
        assert vars(parser.parse_args([negative]))[opt.name] == "false"
        assert vars(parser.parse_args([opt.flag]))[opt.name] == "true"
        assert vars(parser.parse_args([]))[opt.name] is None  # not given: env decides


def test_keywords_are_lowercased_and_deduplicated() -> None:
    assert resolve(config.STREAM_OPTIONS, {}, {}).keywords == (
        "covid", "covid19", "covid-19", "coronavirus", "sars-cov-2")
    settings = resolve(config.STREAM_OPTIONS, {"keywords": "Flu, RSV,flu"}, {})
    assert settings.keywords == ("flu", "rsv")


def test_case_source_and_daily_cap() -> None:
    settings = resolve(config.SPARK_OPTIONS, {}, {})
    assert settings.case_source == "worldometers"
    assert settings.who_url.endswith("/WHO-COVID-19-global-daily-data.csv")
    assert resolve(config.SPARK_OPTIONS, {"case_source": "WHO"}, {}).case_source == "who"
    assert resolve(config.STREAM_OPTIONS, {}, {}).max_posts is None
    assert resolve(config.STREAM_OPTIONS, {}, {"TWITTER_MAX_POSTS": ""}).max_posts is None
    assert resolve(config.STREAM_OPTIONS, {"max_posts": "500"}, {}).max_posts == 500


@pytest.mark.parametrize(
    ("names", "flags", "environ", "named"),
    [
        (config.SPARK_OPTIONS, {"port": "abc"}, {}, "--port / STREAM_PORT"),
        (config.SPARK_OPTIONS, {}, {"STREAM_PORT": "70000"}, "--port / STREAM_PORT"),
        (config.SPARK_OPTIONS, {"batch_seconds": "0"}, {}, "--batch-seconds / BATCH_SECONDS"),
        (config.SPARK_OPTIONS, {"batch_seconds": "nan"}, {}, "--batch-seconds / BATCH_SECONDS"),
        (config.SPARK_OPTIONS, {"master": "local[1]"}, {}, "--master / SPARK_MASTER"),
        (config.SPARK_OPTIONS, {"master": "local"}, {}, "--master / SPARK_MASTER"),
        (config.SPARK_OPTIONS, {"mongo_uri": "http://x"}, {}, "--mongo-uri / MONGODB_URI"),
        (config.SPARK_OPTIONS, {"database": "a.b"}, {}, "--database / MONGODB_DATABASE"),
        (config.SPARK_OPTIONS, {"worldometers_url": "ftp://x"}, {},
         "--worldometers-url / WORLDOMETERS_URL"),
        (config.SPARK_OPTIONS, {"duration": "-1"}, {}, "--duration / RUN_DURATION"),
        (config.STREAM_OPTIONS, {"rate": "fast"}, {}, "--rate / REPLAY_RATE"),
        (config.STREAM_OPTIONS, {}, {"REPLAY_LOOP": "maybe"}, "--loop / REPLAY_LOOP"),
        (config.STREAM_OPTIONS, {"source": "replay", "replay_file": "/nonexistent/file.jsonl"},
         {}, "--replay-file / REPLAY_FILE"),
        (config.STREAM_OPTIONS, {"source": "mastodon"}, {}, "--source / TWEET_SOURCE"),
        (config.STREAM_OPTIONS, {}, {"JETSTREAM_URLS": "https://x/subscribe"},
         "--jetstream-url / JETSTREAM_URLS"),
        (config.STREAM_OPTIONS, {}, {"JETSTREAM_URLS": " , "}, "--jetstream-url / JETSTREAM_URLS"),
        (config.STREAM_OPTIONS, {"keywords": ", ,"}, {}, "--keywords / KEYWORDS"),
        (config.STREAM_OPTIONS, {"stale_seconds": "0"}, {},
         "--stale-seconds / JETSTREAM_STALE_SECONDS"),
        (config.STREAM_OPTIONS, {"max_posts": "0"}, {}, "--max-posts / TWITTER_MAX_POSTS"),
        (config.STREAM_OPTIONS, {}, {"JETSTREAM_MAX_EVENT_BYTES": "512KiB"},
         "--max-event-bytes / JETSTREAM_MAX_EVENT_BYTES"),
        (config.STREAM_OPTIONS, {}, {"REPLAY_FROM_START": "again"},
         "--from-start / REPLAY_FROM_START"),
        (config.SPARK_OPTIONS, {"case_source": "cdc"}, {}, "--case-source / CASE_SOURCE"),
        (config.SPARK_OPTIONS, {}, {"WHO_DATA_URL": "file:///x.csv"}, "--who-url / WHO_DATA_URL"),
        # URLs checked whole at start: port, host present, no space in it
        (config.SPARK_OPTIONS, {"worldometers_url": "http://127.0.0.1:99999/"}, {},
         "--worldometers-url / WORLDOMETERS_URL"),
        (config.SPARK_OPTIONS, {"worldometers_url": "http://www.worldometers .info/"}, {},
         "--worldometers-url / WORLDOMETERS_URL"),
        (config.SPARK_OPTIONS, {}, {"WHO_DATA_URL": "https:///x.csv"}, "--who-url / WHO_DATA_URL"),
        (config.SPARK_OPTIONS, {}, {"WHO_DATA_URL": "https://h:0/x.csv"},
         "--who-url / WHO_DATA_URL"),
        (config.STREAM_OPTIONS, {}, {"JETSTREAM_URLS": "wss://h:70000/subscribe"},
         "--jetstream-url / JETSTREAM_URLS"),
        (config.STREAM_OPTIONS, {}, {"JETSTREAM_URLS": "wss://:443/subscribe"},
         "--jetstream-url / JETSTREAM_URLS"),
        (config.SPARK_OPTIONS, {"mongo_uri": "mongodb://u:pw@db:99999/"}, {},
         "--mongo-uri / MONGODB_URI"),
        (config.SPARK_OPTIONS, {"mongo_uri": "mongodb://u:pw@/covid19"}, {},
         "--mongo-uri / MONGODB_URI"),
        (config.SPARK_OPTIONS, {"mongo_uri": "mongodb+srv://c.example:27017/"}, {},
         "--mongo-uri / MONGODB_URI"),
        # the tweet socket and the control channel on one port
        (config.SPARK_OPTIONS, {"port": "6000", "ack_port": "6000"}, {},
         "--port / STREAM_PORT and --ack-port / ACK_PORT are both 6000"),
        (config.STREAM_OPTIONS, {}, {"STREAM_PORT": "5556"},
         "--port / STREAM_PORT and --ack-port / ACK_PORT are both 5556"),
        (config.STORE_OPTIONS, {}, {"DATA_DIR": " "}, "--data-dir / DATA_DIR"),
        # the metrics on a port the program already uses for posts or control
        (config.STREAM_OPTIONS, {"metrics_port": "5556"}, {},
         "--metrics-port / METRICS_PORT: 5556 is already the port of --ack-port / ACK_PORT"),
        (config.SPARK_OPTIONS, {}, {"METRICS_PORT": "5555"},
         "--metrics-port / METRICS_PORT: 5555 is already the port of --port / STREAM_PORT"),
    ],
)
def test_bad_values_name_the_option(names, flags, environ, named) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(names, flags, environ)
    message = str(err.value)
    assert named in message
    assert "\n" not in message


def test_local_with_more_cores_and_clusters_are_accepted() -> None:
    for master in ("local[2]", "local[*]", "local[4,2]", "spark://127.0.0.1:7077", "yarn"):
        assert resolve(config.SPARK_OPTIONS, {"master": master}, {}).master == master


def test_twitter_without_token_says_what_to_do() -> None:
    with pytest.raises(ConfigError) as err:
        resolve(config.STREAM_OPTIONS, {"source": "twitter"}, {})
    assert "TWITTER_BEARER_TOKEN" in str(err.value)
    assert "--source replay" in str(err.value)


def test_bad_mongo_uri_is_not_echoed() -> None:
    for uri in ("mongo://u:hunter2@h", "mongodb://u:hunter2@h:99999/", "mongodb://u:hunter2@/"):
        with pytest.raises(ConfigError) as err:
            resolve(config.SPARK_OPTIONS, {"mongo_uri": uri}, {})
        assert "hunter2" not in str(err.value)


def test_whole_urls_pass_the_start_up_checks() -> None:
    settings = resolve(config.SPARK_OPTIONS, {
        "worldometers_url": "http://127.0.0.1:8080/worldometers.html",
        "who_url": "https://[::1]:443/who.csv",
        "mongo_uri": "mongodb://u:p%40ss@h1:27017,h2,[::1]:27018/covid19?replicaSet=rs0",
    }, {})
    assert settings.who_url == "https://[::1]:443/who.csv"
    assert resolve(config.SPARK_OPTIONS, {"mongo_uri": "mongodb+srv://c0.example.net/"},
                   {}).mongo_uri == "mongodb+srv://c0.example.net/"
    assert resolve(config.STREAM_OPTIONS, {}, {"JETSTREAM_URLS": "ws://127.0.0.1:1/s"}
                   ).jetstream_urls == ("ws://127.0.0.1:1/s",)


def test_the_old_worldometers_url_names_still_work(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="config")

    def load(argv: list[str], environ: dict[str, str]) -> tuple[str, list[str]]:
        caplog.clear()
        settings = config.load_settings("scrape.py", config.SCRAPE_OPTIONS, argv,
                                        environ=environ, dotenv_path=None)
        return settings.worldometers_url, [r.getMessage() for r in caplog.records
                                           if r.name == "config"]

    new = "--worldometers-url / WORLDOMETERS_URL"
    assert load([], {"WORLDOMETER_URL": "http://a/"}) == (
        "http://a/", [f"WORLDOMETER_URL is deprecated: use {new}"])
    assert load(["--worldometer-url", "http://b/"], {}) == (
        "http://b/", [f"--worldometer-url is deprecated: use {new}"])
    # both old spellings at once: still one line; the new names win over the old ones
    assert load(["--worldometer-url", "http://b/"], {"WORLDOMETER_URL": "http://a/",
                                                     "WORLDOMETERS_URL": "http://c/"}) == (
        "http://b/", [f"--worldometer-url and WORLDOMETER_URL are deprecated: use {new}"])
    assert load(["--worldometers-url", "http://d/", "--worldometer-url", "http://b/"],
                {"WORLDOMETERS_URL": "http://c/"})[0] == "http://d/"
    assert load([], {"WORLDOMETERS_URL": "http://c/", "WORLDOMETER_URL": "http://a/"})[0] == (
        "http://c/")
    assert load([], {}) == (config.DEFAULT_WORLDOMETERS_URL, [])


def test_load_settings_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        config.load_settings("spark_streaming.py", config.SPARK_OPTIONS, ["--port", "abc"],
                             environ={}, dotenv_path=None)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("spark_streaming.py: error: --port / STREAM_PORT")


def test_secrets_never_reach_a_log_line() -> None:
    settings = resolve(
        config.SPARK_OPTIONS,
        {"mongo_uri": "mongodb://analyst:s3cr3t-pass@db.example:27017/covid19"},
        {"TWITTER_BEARER_TOKEN": "AAAA-bearer-token"},
    )
    settings = config.Settings(**{**settings.__dict__, "bearer_token": "AAAA-bearer-token"})
    out = io.StringIO()
    config.configure_logging(settings, stream=out)
    logger = logging.getLogger("secrets-test")
    logger.info("settings: %s", settings)
    logger.info("store: %s", settings.store_description)
    logger.warning("raw uri %s token %s", settings.mongo_uri, settings.bearer_token)
    try:
        raise RuntimeError(f"failed with {settings.mongo_uri}")
    except RuntimeError:
        logger.exception("traceback too")
    text = out.getvalue()
    assert "s3cr3t-pass" not in text
    assert "AAAA-bearer-token" not in text
    assert "analyst:***@db.example" in text


def test_redact_uri() -> None:
    assert config.redact_uri("mongodb+srv://u:p%40ss@c.example/x?tls=true") == (
        "mongodb+srv://u:***@c.example/x?tls=true"
    )
    assert config.redact_uri("mongodb://h:27017") == "mongodb://h:27017"


def test_example_env_lists_every_variable() -> None:
    example = (PROJECT / "config.example.env").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    assert listed == {opt.env for opt in config.OPTIONS.values()}


# --- .env: mistakes are said, not skipped --------------------------------------------------


def dotenv_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    text: str, names: tuple[str, ...] = config.STREAM_OPTIONS,
) -> tuple[config.Settings, list[str]]:
    """The settings ``names`` with ``text`` as .env in the current folder, and what
    the config logger said."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(text)
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="config")
    settings = config.load_settings("x", names, [], environ={})
    return settings, [r.getMessage() for r in caplog.records if r.name == "config"]


def test_dotenv_names_no_setting_has_are_warned_once_with_the_nearest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings, said = dotenv_messages(tmp_path, monkeypatch, caplog, (
        "# my settings\n"
        "\n"
        "STREAM_PROT=6000\n"
        "BATCH_SECONDS=3\n"           # a setting of the other program: fine
        "export REPLAY_RATE=2\n"
        "STREAM_PROT=7000\n"          # the same name again: no second line
        "WORLDOMETER_URL=http://a/\n"  # a deprecated name: still a setting
        "xyzzy=1\n"
        "JAVA_HOME=/opt/jdk\n"        # read by Java from the environment, never from .env
    ))
    assert settings.port == 5555 and settings.rate == 2.0
    assert said == [
        ".env line 3: STREAM_PROT is not a setting (did you mean STREAM_PORT?)",
        ".env line 8: xyzzy is not a setting",
        ".env line 9: JAVA_HOME is read from the environment only, not from .env: export "
        "it in the shell instead",
    ]


@pytest.mark.parametrize(("text", "line"), [
    ("# ports\nSTREAM_PORT 6000\n", 2),
    ("STREAM_HOST=127.0.0.1\n\n\nSTREAM_PORT\n", 4),
    ('STREAM_HOST=127.0.0.1\n\nKEYWORDS="covid,flu\nSTREAM_PORT=6000\n', 3),
    ("TWITTER_BEARER_TOKEN AAAA-bearer-token\n", 1),
])
def test_dotenv_lines_that_cannot_be_read_exit_2_naming_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    text: str, line: int,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        config.load_settings("stream.py", config.STREAM_OPTIONS, [], environ={})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"stream.py: error: .env line {line} is not NAME=value")
    assert err.count("\n") == 1
    assert "AAAA-bearer-token" not in err


# --- what --help and docs/configuration.md say ------------------------------------------


def test_help_prints_defaults_as_the_docs_do(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        config.load_settings("stream.py", config.STREAM_OPTIONS, ["--help"], environ={},
                             dotenv_path=None)
    text = " ".join(capsys.readouterr().out.split())
    assert "[env JETSTREAM_STALE_SECONDS; default: 60]" in text
    assert "[env REPLAY_RATE; default: 5]" in text
    assert "[env REPLAY_LOOP; default: false]" in text
    assert "[env JETSTREAM_MAX_EVENT_BYTES; default: 4MiB]" in text
    assert "[env JOURNAL_PATH; default: DATA_DIR/journal]" in text
    assert not re.search(r"default: [0-9]+\.0\]", text), text


def variables_table() -> dict[str, tuple[str, str]]:
    """docs/configuration.md's table of variables: variable -> (flag cell, default cell)."""
    page = (PROJECT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = page.split("\n## Every variable\n", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([A-Z][A-Z0-9_]+)`", cells[0]) if len(cells) == 4 else None
        if match:
            rows[match.group(1)] = (cells[1], cells[2])
    return rows


#: defaults the table describes in words instead of printing them
DESCRIBED = {"TWEET_SOURCE": "`twitter` if a token is set, else `bluesky`",
             "JETSTREAM_URLS": "the six public hosts"}


def test_the_variables_table_has_every_variable_with_its_flag_and_default() -> None:
    rows = variables_table()
    assert set(rows) == {opt.env for opt in config.OPTIONS.values()}
    for name, opt in config.OPTIONS.items():
        flag_cell, default_cell = rows[opt.env]
        flags = re.findall(r"`(--[a-z-]+)`", flag_cell)
        assert flags[:1] == ([opt.flag] if opt.flag else []), (opt.env, flag_cell)
        if opt.env in DESCRIBED:
            assert default_cell == DESCRIBED[opt.env]
            continue
        # the default as --help prints it, in backticks, maybe followed by "(a note)"
        shown = re.sub(r"\s*\(.*\)$", "", default_cell).replace("`", "")
        assert shown == config.default_text(name), (opt.env, default_cell)


def test_the_example_env_copied_to_dotenv_is_read_without_a_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    example = (PROJECT / "config.example.env").read_text()
    for names in (config.STREAM_OPTIONS, config.SPARK_OPTIONS):
        settings, said = dotenv_messages(tmp_path, monkeypatch, caplog, example, names)
        assert said == []
        assert settings.control_secret_path == PROJECT / "data" / "control.secret"
