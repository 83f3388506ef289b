"""Reads a ``.env`` file for :mod:`config`: its values, an error for a line that cannot
be parsed, and one warning for each name that no setting has.

python-dotenv alone skips a line it cannot parse, and takes any name, so a
``STREAM_PORT 6000`` or a ``STREAM_PROT=6000`` would leave the default in
force without a word:

    >>> read_dotenv(".env", known={"STREAM_PORT"})  # doctest: +SKIP
    WARNING .env line 3: STREAM_PROT is not a setting (did you mean STREAM_PORT?)
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Collection

from dotenv import dotenv_values
from dotenv.parser import parse_stream

log = logging.getLogger("config")


class DotenvError(ValueError):
    """A line of the file cannot be read; ``str(err)`` is one line naming it."""


def read_dotenv(path: str | os.PathLike[str], known: Collection[str],
                environment_only: Collection[str] = ()) -> dict[str, str]:
    """The variables set in the ``.env`` file at ``path``.

    Raises DotenvError for the first line that is not ``NAME=value`` (a
    comment or a blank line is fine). Logs one warning per name that is not
    in ``known`` (with the nearest known name, if one is near); a name in
    ``environment_only`` (a variable read from the process environment,
    which a ``.env`` file does not reach) gets a warning saying so.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            bindings = list(parse_stream(handle))
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise DotenvError(f"cannot read {os.fspath(path)}: {reason or err}") from None
    warned: set[str] = set()
    for binding in bindings:
        text = binding.original.string
        # the parser counts from the blank lines before a statement; name the statement's
        line = binding.original.line + text[:len(text) - len(text.lstrip())].count("\n")
        where = f"{os.fspath(path)} line {line}"
        if binding.error or (binding.key is not None and binding.value is None):
            # the line itself is not shown: it may hold a secret
            raise DotenvError(f"{where} is not NAME=value (a value with spaces or a '#' "
                              "needs quotes)")
        name = binding.key
        if name is None or name in warned or name in known:
            continue
        warned.add(name)
        if name in environment_only:
            log.warning("%s: %s is read from the environment only, not from .env: "
                        "export it in the shell instead", where, name)
            continue
        near = difflib.get_close_matches(name.upper(), known, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        log.warning("%s: %s is not a setting%s", where, name, hint)
    return {key: value for key, value in dotenv_values(path, encoding="utf-8").items()
            if value is not None}
