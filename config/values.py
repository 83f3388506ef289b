"""How one raw text (a flag, a variable, a ``.env`` line) becomes a typed setting.

Each parser takes the text and returns the value, or raises ValueError with a
short reason that :mod:`config` puts after the option's name, in one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from transform import POST_FIELDS


def int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    return parse


def number(minimum: float, *, inclusive: bool) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        too_small = value < minimum if inclusive else value <= minimum
        if not math.isfinite(value) or too_small:
            bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
            raise ValueError(f"{raw.strip()} must be a finite number {bound}")
        return value

    return parse


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{raw!r} is not a boolean (use true or false)")


def choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return value

    return parse


def non_empty(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def host_name(raw: str) -> str:
    value = non_empty(raw)
    if any(ch.isspace() for ch in value) or "/" in value:
        raise ValueError(f"{raw!r} is not a host name or address")
    return value


def master(raw: str) -> str:
    return non_empty(raw)


def one_core(master_url: str) -> bool:
    """True for a local master with one core (``local``, ``local[1]``)."""
    match = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\s*\d+)?\])?", master_url)
    return bool(match) and match.group(1) in (None, "1")


def spark_remote(raw: str) -> str | None:
    """A Spark Connect URL, ``sc://HOST[:PORT][/;param=value...]``; "" = unset."""
    value = raw.strip()
    if not value:
        return None
    if not value.startswith("sc://"):
        raise ValueError(f"{value!r} is not a sc://HOST:PORT URL")
    problem = _host_and_port(value[len("sc://"):].partition("/")[0].partition(";")[0])
    if problem:
        raise ValueError(f"{value!r} has {problem}")
    return value


def _host_and_port(netloc: str, *, port_allowed: bool = True) -> str | None:
    """What ``host[:port]`` (a URL's host part) has wrong ("no host", ...), or None."""
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        port = 0
    if not parts.hostname:
        return "no host"
    if any(ch.isspace() for ch in netloc):
        return "a space in its host"
    if port is not None and not port_allowed:
        return "a port, which this kind of URL may not name"
    if port == 0:
        return f"port {netloc.rpartition(':')[2]!r}, not one in 1..65535"
    return None


def checked_url(raw: str, schemes: tuple[str, ...]) -> str:
    """``raw`` if it is a whole URL of one of ``schemes``: a host without spaces,
    a port (if any) in 1..65535; else ValueError saying what is wrong."""
    value = non_empty(raw)
    parts = urlsplit(value)
    kinds = " or ".join(f"{scheme}://" for scheme in schemes)
    if parts.scheme not in schemes:
        raise ValueError(f"{value!r} is not a {kinds} URL")
    problem = _host_and_port(parts.netloc.rpartition("@")[2])
    if problem is None and any(ch.isspace() for ch in value):
        problem = "a space in it"
    if problem:
        raise ValueError(f"{value!r} has {problem}")
    return value


def mongo_uri(raw: str) -> str | None:
    """A MongoDB connection string, checked without connecting; an error never
    echoes the value (it may hold a password)."""
    value = raw.strip()
    if not value:
        return None
    scheme, found, rest = value.partition("://")
    if not found or scheme not in ("mongodb", "mongodb+srv"):
        raise ValueError("must start with mongodb:// or mongodb+srv://")
    hosts = rest.partition("/")[0].partition("?")[0].rpartition("@")[2].split(",")
    if scheme == "mongodb+srv" and len(hosts) > 1:
        raise ValueError("a mongodb+srv:// URI names one host")
    for host in hosts:
        problem = _host_and_port(host, port_allowed=scheme == "mongodb")
        if problem == "no host":
            raise ValueError("names no host")
        if problem:  # the host part holds no password: it may be shown
            raise ValueError(f"host {host!r} has {problem}")
    return value


def mongo_name(kind: str, forbidden: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = non_empty(raw)
        bad = sorted({ch for ch in value if ch in forbidden})
        if bad or (kind == "database" and len(value.encode()) > 63):
            raise ValueError(f"{value!r} is not a valid MongoDB {kind} name")
        return value

    return parse


def http_url(raw: str) -> str:
    return checked_url(raw, ("http", "https"))


def ws_urls(raw: str) -> tuple[str, ...]:
    urls = tuple(dict.fromkeys(url.strip() for url in raw.split(",") if url.strip()))
    if not urls:
        raise ValueError("needs at least one ws:// or wss:// URL")
    return tuple(checked_url(url, ("ws", "wss")) for url in urls)


def keywords(raw: str) -> tuple[str, ...]:
    words = tuple(dict.fromkeys(word.strip().casefold() for word in raw.split(",")
                                if word.strip()))
    if not words:
        raise ValueError("needs at least one keyword")
    return words


def rules(raw: str) -> tuple[str, ...]:
    rules = tuple(rule.strip() for rule in raw.split(";") if rule.strip())
    if not rules:
        raise ValueError("needs at least one rule")
    return rules


def optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, except that an empty value means "unset" (None)."""
    def parse_optional(raw: str) -> Any:
        return None if not raw.strip() else parse(raw)

    return parse_optional


SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4,
               "tb": 1000**4, "tib": 1024**4}


def commit_window(raw: str) -> float:
    """Milliseconds from 0 to 1000: the journal's group-commit window."""
    value = number(0, inclusive=True)(raw)
    if value > 1000:
        raise ValueError(f"{raw.strip()} ms is more than 1000 ms")
    return value


def byte_size(raw: str) -> int:
    """``2GiB``, ``500 MB``, ``1048576``: a number of bytes, at least 1 MiB."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", raw)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in SIZE_UNITS:
        raise ValueError(f"{raw!r} is not a size (e.g. 2GiB, 500MB or a number of bytes)")
    value = int(float(match.group(1)) * SIZE_UNITS[unit])
    if value < 1024**2:
        raise ValueError(f"{raw.strip()} is less than 1 MiB")
    return value


def post_fields(raw: str) -> tuple[str, ...]:
    """``id,lang``: names of transform.POST_FIELDS, in their documented order; "" = none."""
    names = {name.strip().lower() for name in raw.split(",") if name.strip()}
    unknown = sorted(names.difference(POST_FIELDS))
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a post field (use a comma list of "
                         f"{', '.join(POST_FIELDS)})")
    return tuple(name for name in POST_FIELDS if name in names)


def log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError(f"{raw!r} is not one of DEBUG, INFO, WARNING, ERROR")
    return value


