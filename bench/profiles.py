"""py-spy profiles of the benchmark's Python processes: which functions use the CPU.

:func:`profile_processes` records each process at once for a few seconds;
:func:`summarize` turns a speedscope file into the share of busy samples each
function (and its callees) took, leaving out the frames that only dispatch.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

PROFILE_SECONDS = 10
PROFILE_TOP = 12


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    name: str
    busy_s: float  # CPU-busy samples, in seconds of the profile
    top: list[tuple[str, float]]  # (function, share of busy samples it or its callees used)
    error: str = ""


def summarize(path: Path, name: str, seconds: float) -> Profile:
    """Inclusive time per function from a py-spy speedscope file (idle samples excluded)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return Profile(name, 0.0, [], f"no profile ({err})")
    frames = data["shared"]["frames"]
    total = 0.0
    inclusive: dict[str, float] = {}
    for prof in data["profiles"]:
        for sample, weight in zip(prof["samples"], prof["weights"], strict=False):
            total += weight
            seen = set()
            for index in sample:
                frame = frames[index]
                key = f"{frame['name']} ({Path(frame.get('file') or '?').name})"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] = inclusive.get(key, 0.0) + weight
    if not total:
        return Profile(name, 0.0, [], "no busy samples")
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])
    top = [(key, value / total) for key, value in ranked
           if not _plumbing(key) and value / total >= 0.01][:PROFILE_TOP]
    return Profile(name, total / seconds, top)


#: Frames that only carry the work (thread and process entry points, Spark's and
#: py4j's dispatch loops), left out of the profile summaries.
PLUMBING_FILES = ("(threading.py)", "(<frozen runpy>)", "(daemon.py)", "(worker.py)",
                  "(clientserver.py)", "(java_gateway.py)", "(util.py)")


def _plumbing(key: str) -> bool:
    return key.endswith(PLUMBING_FILES) or key.startswith(("<module> ", "process "))


def profile_processes(targets: dict[str, tuple[int, bool]], seconds: float,
                      outdir: Path) -> list[Profile]:
    """py-spy on each ``name: (pid, with subprocesses)`` at once, for ``seconds``."""
    spy = py_spy()
    if spy is None:
        return [Profile(name, 0.0, [], "py-spy is not installed") for name in targets]
    running = {}
    for name, (pid, children) in targets.items():
        out = outdir / f"profile-{name}.json"
        cmd = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100",
               "-f", "speedscope", "-o", str(out), "--nonblocking"]
        if children:
            cmd.append("--subprocesses")
        running[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True), out)
    profiles = []
    for name, (process, out) in running.items():
        try:
            _, err = process.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            err = "py-spy did not finish"
        profile = summarize(out, name, seconds)
        if profile.error and err:
            profile.error += f": {err.strip().splitlines()[-1] if err.strip() else ''}"
        profiles.append(profile)
    return profiles


def spark_python_daemon(job_pid: int) -> int | None:
    """The pyspark.daemon under the job's JVM (it forks the Python workers)."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(job_pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "pyspark.daemon" in " ".join(child.cmdline()):
                    return child.pid
    return None
