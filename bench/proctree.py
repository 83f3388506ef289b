"""A program's process tree, found by parent pid, and what it uses: memory and CPU time.

Spark's JVM runs in a session of its own (so that a terminal's Ctrl-C reaches
only the driver), so it is found as a descendant of the driver by parent pid,
not by process group or session. The Python workers are the JVM's
descendants. Shared by the soak (memory) and the cost benchmark (CPU).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil


def tree(pid: int) -> list:
    """``pid``'s process and every descendant of it (psutil.Process objects), root
    first; empty when it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def part_of(process: object, root_pid: int) -> str:
    """Which part of a job's tree ``process`` is: "driver" (the root), "jvm" (java) or
    "workers" (every other descendant: the Python workers, their daemon)."""
    if process.pid == root_pid:  # type: ignore[attr-defined]
        return "driver"
    with contextlib.suppress(psutil.Error):
        if process.name() == "java":  # type: ignore[attr-defined]
            return "jvm"
    return "workers"


def tree_rss(pid: int) -> dict[str, int]:
    """Resident bytes of a process ("driver") and its descendants, found by parent pid
    (the JVM may run in a session of its own): "jvm" (java) and "workers" (the rest)."""
    rss = {"driver": 0, "jvm": 0, "workers": 0}
    for process in tree(pid):
        with contextlib.suppress(psutil.Error):
            rss[part_of(process, pid)] += process.memory_info().rss
    return rss


class CpuMeter:
    """CPU seconds (user + system) used by process trees over a window.

    A thread samples each tree every ``every`` seconds, keeping each process's
    last figure (by pid and start time), so a process that ends within the
    window still counts up to its last sample; a process that starts within
    it counts from zero. :meth:`start` opens the window, :meth:`stop` closes
    it and returns the CPU seconds of each part of each tree.
    """

    def __init__(self, roots: dict[str, int], every: float = 1.0) -> None:
        #: name -> root pid; the parts of a tree are driver / jvm / workers
        self.roots = roots
        self.every = every
        self._first: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], tuple[str, str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)

    def _samples(self) -> Iterator[tuple[tuple[int, float], str, str, float]]:
        for name, root in self.roots.items():
            for process in tree(root):
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    key = (process.pid, process.create_time())
                    yield key, name, part_of(process, root), times.user + times.system

    def _take(self, first: bool) -> None:
        for key, name, part, seconds in self._samples():
            if first:
                self._first[key] = seconds
            self._last[key] = (name, part, seconds)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._take(first=False)

    def start(self) -> None:
        self._take(first=True)
        self._thread.start()

    def stop(self) -> dict[str, dict[str, float]]:
        """CPU seconds used in the window: ``{tree name: {part: seconds}}``."""
        self._stop.set()
        self._thread.join()
        self._take(first=False)
        used: dict[str, dict[str, float]] = {name: {} for name in self.roots}
        for key, (name, part, seconds) in self._last.items():
            spent = max(0.0, seconds - self._first.get(key, 0.0))
            used[name][part] = used[name].get(part, 0.0) + spent
        return used


#: a JVM thread's name without its number: "C2 CompilerThre" (comm keeps 15 bytes),
#: "Executor task launch worker for task 12" -> "Executor task l", "G1 Conc#0" -> "G1 Conc#"
_THREAD_NUMBER = re.compile(r"[-#]?\d+$")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) each kind of thread of process ``pid`` has used so
    far, by thread name with its number taken off (from /proc/PID/task); empty when
    the process is gone. Two readings subtracted give where a window's CPU went."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                name = (task / "comm").read_text(encoding="utf-8", errors="replace").strip()
                # the fields after the command's closing parenthesis: utime, stime are 14, 15
                fields = (task / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
                seconds = (int(fields[11]) + int(fields[12])) / ticks
                key = _THREAD_NUMBER.sub("", name).strip() or name
                used[key] = used.get(key, 0.0) + seconds
    return used


def task_times(pid: int) -> dict[int, tuple[float, float]]:
    """``{thread id: (user, system)}`` CPU seconds each thread of process ``pid`` has
    used so far (from /proc/PID/task); empty when the process is gone. Two readings
    subtracted give a window's split by thread and by kind of time."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[float, float]] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (task / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
                found[int(task.name)] = (int(fields[11]) / ticks, int(fields[12]) / ticks)
    return found


def jvm_pid(pid: int) -> int | None:
    """The pid of the JVM (java) among ``pid``'s descendants, or None."""
    for process in tree(pid):
        if part_of(process, pid) == "jvm":
            return process.pid
    return None
