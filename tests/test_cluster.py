"""The job on a real Spark standalone cluster: a master and a worker on 127.0.0.1.

Started with pyspark's own ``bin/spark-class`` (CONTRIBUTING.md), then stream.py and
``spark_streaming.py --master spark://127.0.0.1:PORT`` run as real processes,
the job's working directory a fresh temporary folder, so that nothing relies
on the driver's folder: the executors get transform.py from the driver
(``addPyFile``), the receiver runs on an executor and connects to the producer.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyspark
import pytest
from processes import PROJECT, PageServer, Program, clean_env, expected_content, free_port

import config
import storage

SAMPLE = PROJECT / "samples" / "tweets.jsonl"
SPARK_HOME = Path(pyspark.__file__).resolve().parent
CLUSTER_START_TIMEOUT = 45
PROCESS_TIMEOUT = 90
MASTER_ALIVE = re.compile(r"I have been elected leader! New state: ALIVE")
WORKER_REGISTERED = re.compile(r"Successfully registered with master spark://")


def spark_env(**extra: str) -> dict[str, str]:
    """The test environment without a stray Spark setup of the developer's."""
    env = {k: v for k, v in clean_env().items() if not k.startswith(("SPARK_", "PYSPARK_"))}
    env.update(extra)
    return env


@dataclass
class Daemon:
    """A Spark master or worker in its own process group, whose log a thread collects."""

    name: str
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @classmethod
    def start(cls, name: str, args: list[str], env: dict[str, str], cwd: Path) -> Daemon:
        popen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, start_new_session=True, env=env, cwd=cwd)
        process = cls(name, popen)
        threading.Thread(target=process._follow, daemon=True).start()
        return process

    def _follow(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float) -> bool:
        """Until a line matches, the process ends or ``timeout`` seconds pass."""
        with self.changed:
            return self.changed.wait_for(
                lambda: any(pattern.search(line) for line in self.lines)
                or self.popen.poll() is not None, timeout
            ) and any(pattern.search(line) for line in self.lines)

    def output(self) -> str:
        with self.changed:
            return f"--- {self.name} ---\n" + "".join(self.lines[-200:])

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the process group (the worker's executors too), then SIGKILL."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # whatever is left of the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


@dataclass
class Cluster:
    master_url: str
    master: Daemon
    worker: Daemon
    work_dir: Path

    def executor_logs(self) -> str:
        parts = []
        for path in sorted(self.work_dir.rglob("std*")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.relative_to(self.work_dir)} ---\n{text[-4000:]}")
        return "\n".join(parts)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A standalone master and one worker (2 cores, 1 GiB) on 127.0.0.1, stopped afterwards."""
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    env = spark_env(SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1",
                    SPARK_LOG_DIR=str(tmp_path / "spark-logs"))
    port = free_port()
    master_url = f"spark://127.0.0.1:{port}"
    work_dir = tmp_path / "worker"
    started: list[Daemon] = []
    try:
        master = Daemon.start("master", [
            spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
            "--port", str(port), "--webui-port", str(free_port())], env=env, cwd=tmp_path)
        started.append(master)
        assert master.wait_for_line(MASTER_ALIVE, CLUSTER_START_TIMEOUT), master.output()
        worker = Daemon.start("worker", [
            spark_class, "org.apache.spark.deploy.worker.Worker", master_url,
            "--host", "127.0.0.1", "--cores", "2", "--memory", "1g",
            "--webui-port", str(free_port()), "--work-dir", str(work_dir)],
            env=env, cwd=tmp_path)
        started.append(worker)
        assert worker.wait_for_line(WORKER_REGISTERED, CLUSTER_START_TIMEOUT), (
            worker.output() + master.output())
        yield Cluster(master_url, master, worker, work_dir)
    finally:
        for process in reversed(started):  # the worker first: it stops its executors
            process.stop()


@pytest.mark.e2e
def test_the_job_runs_on_a_standalone_cluster(
    cluster: Cluster, page: PageServer, tmp_path: Path
) -> None:
    sent, content = expected_content(SAMPLE)
    port, ack_port = str(free_port()), str(free_port())
    job_dir = tmp_path / "job-cwd"  # the driver's working directory: nothing of the project
    job_dir.mkdir()
    db_path = tmp_path / "db"
    producer = Program([
        str(PROJECT / "stream.py"), "--source", "replay", "--replay-file", str(SAMPLE),
        "--rate", "0", "--host", "127.0.0.1", "--port", port, "--ack-port", ack_port,
        "--journal-path", str(tmp_path / "journal")], cwd=job_dir)
    job = Program([
        str(PROJECT / "spark_streaming.py"), "--master", cluster.master_url,
        "--host", "127.0.0.1", "--port", port, "--ack-port", ack_port,
        "--batch-seconds", "2", "--worldometers-url", page.url,
        "--embedded-db-path", str(db_path), "--spool-path", str(tmp_path / "spool.jsonl"),
        "--quarantine-path", str(tmp_path / "quarantine.jsonl")], cwd=job_dir)
    try:
        try:
            # stream.py exits by itself once the job has acknowledged every tweet as stored
            assert producer.process.wait(PROCESS_TIMEOUT) == 0, producer.log
        except subprocess.TimeoutExpired:
            pytest.fail(f"the tweets were not all stored:\n{job.log}\n{producer.log}\n"
                        f"{cluster.executor_logs()}")
        assert job.kept() == len(content), job.log
        assert job.stop(timeout=PROCESS_TIMEOUT) == 0, job.log  # SIGTERM, as Ctrl-C would
    finally:
        producer.kill()
        job.kill()
    assert "Traceback" not in job.log + producer.log
    assert f"master {cluster.master_url}" in job.log

    store = storage.open_store(config.Settings(embedded_db_path=db_path))
    try:
        documents = list(store.collection.find().sort("timestamp", 1))
    finally:
        store.close()
    assert [text for doc in documents for text in doc["content"]] == content
    for doc in documents:
        assert {"_id", "content", "timestamp", "total_case_count"} <= set(doc)
        assert isinstance(doc["timestamp"], datetime)
        assert doc["total_case_count"] == 704_753_890
    # the replay's keyword set and span went first (seqs 1, 2); its span as it ended
    # (sent + 3) may come in the last batch
    assert documents[-1]["delivery"][0]["last_seq"] in (sent + 2, sent + 3)
    # the work happened on the cluster: the worker ran an executor, which got transform.py
    # from the driver (not from the project folder)
    shipped = list(cluster.work_dir.glob("app-*/*/transform.py"))
    assert shipped, cluster.executor_logs()
