"""How every program fails to start: one line naming the program, its exit status,
and no traceback.

Anything a program needs before it can run (a free port, a readable secret, a
reachable store, Java, a journal no other program holds) that is missing is a
:class:`StartupError`, raised where it is found. The program's ``main`` is
wrapped in :func:`program`, the one place that turns it into the line::

    stream.py: error: cannot listen on 127.0.0.1:5555, the posts port: Address already in use; ...

and the status (1 unless the error says otherwise). A bad setting is config's
business and ends the same way, with status 2 (``config.load_settings``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec

P = ParamSpec("P")


class StartupError(Exception):
    """A program cannot start: ``str(err)`` is the one line (without the program's
    name), ``status`` the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def program(name: str) -> Callable[[Callable[P, int]], Callable[P, int]]:
    """Decorate a program's ``main``: a :class:`StartupError` it raises becomes
    ``<name>: error: <message>`` on stderr and ``main`` returns its status."""

    def wrap(main: Callable[P, int]) -> Callable[P, int]:
        @functools.wraps(main)
        def run(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except StartupError as err:
                sys.stderr.write(f"{name}: error: {err}\n")
                sys.stderr.flush()
                return err.status
        return run
    return wrap
