"""The benchmarks' programs: the project's own run as watched child processes, and
the machine they run on, as a report names it."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

import bs4
import psutil
import pyspark

from bench.load import PROJECT, clean_env

log = logging.getLogger("bench.programs")


class Program:
    """stream.py or spark_streaming.py (of ``project``) in ``here``, its stderr copied to
    ``<name>.log`` and each line handed to ``on_line``."""

    def __init__(self, name: str, script: str, args: list[str], here: Path,
                 on_line: Callable[[str], None], project: Path = PROJECT) -> None:
        self.name = name
        self.log_path = here / f"{name}.log"
        self.tail: deque[str] = deque(maxlen=30)
        self.errors = 0  # ERROR lines logged
        self._on_line = on_line
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, str(project / script), *args], cwd=here,
            env={**clean_env(), "PYTHONPATH": str(project)},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, errors="replace")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.log_path.open("a", encoding="utf-8") as copy:
            for line in self.process.stderr:
                copy.write(line)
                copy.flush()
                with self._changed:
                    self.tail.append(line.rstrip("\n"))
                    self.errors += " ERROR " in line
                    self._on_line(line)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``done()`` holds (False after ``timeout`` or once the program ended)."""
        with self._changed:
            self._changed.wait_for(lambda: done() or not self._reader.is_alive(), timeout)
            return done()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def last_lines(self, count: int = 5) -> str:
        with self._changed:
            return " | ".join(list(self.tail)[-count:])

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, then wait; SIGKILL (the whole process tree) after ``timeout``.
        The exit status, or None when it had to be killed."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %g s: killing it", self.name, timeout)
            self.kill()
            code = None
        self._reader.join(10)
        return code

    def kill(self) -> None:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.process.pid)
            tree = [root, *root.children(recursive=True)]
            for process in tree:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            psutil.wait_procs(tree, timeout=30)
        self.process.wait()


def machine() -> dict[str, str]:
    """The machine and the versions a report is for: cores, RAM, OS, Python, Java, Spark
    and BeautifulSoup."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    return {
        "cores": f"{os.cpu_count()} ({cpu})",
        "RAM": f"{psutil.virtual_memory().total / 1024**3:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Java": (java.stderr.splitlines() or ["?"])[0],
        "Spark (pyspark)": pyspark.__version__,
        "BeautifulSoup": bs4.__version__,
    }
