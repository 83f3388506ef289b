"""How the structured engine's code reaches Spark's own Python processes, which have
never seen the project.

Spark runs the engine's source in Python processes of its own (planning in one the
JVM starts, ``read()`` in its Python workers) and, through Spark Connect, the
``foreachBatch`` function too (in the server's Python). cloudpickle sends a class by
reference, its module and name, which such a process cannot import: neither
``pyFiles`` nor ``spark.addArtifacts`` reach the processes that run a streaming
source's planning or a Connect ``foreachBatch`` (measured on pyspark 4.3). So this
module is pickled by value (:func:`register`), its classes carry a zip of the job's
modules (:func:`archive`), and each process puts that zip on its import path
(:class:`ArchiveFinder`, in memory, no file) before it imports anything of the
project. Nothing here imports the project at the top: this module must unpickle
where only pyspark is installed.

* :func:`source_class`: the data source Spark registers (``covid_producer``);
  it makes a :class:`ShippedReader` around :class:`job.producer_source.ProducerReader`;
* :class:`ShippedSink`: ``foreachBatch`` over Spark Connect, which builds the
  driver's part (:func:`job.structured_sink.remote_sink`) in the server's Python.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import logging
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

#: The data source's name in ``spark.readStream.format(...)``.
SOURCE_NAME = "covid_producer"
#: The job's packages and modules put in the archive (the producer's sources are not).
PACKAGES = ("config", "counts", "job", "journal", "storage")
MODULES = ("control", "control_reads", "metrics", "scrape", "startup", "stopping",
           "transform", "wire_records")
#: The log line format of the job's processes, for Spark's own processes too.
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # every entry's: the same code makes the same archive


def register() -> None:
    """Have cloudpickle send this module's classes by value (call before a query starts)."""
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def archive(project: Path) -> bytes:
    """A zip of the job's modules under ``project`` (:data:`PACKAGES`, :data:`MODULES`),
    the same bytes for the same code."""
    paths = [project / f"{name}.py" for name in MODULES]
    for package in PACKAGES:
        paths += sorted((project / package).glob("*.py"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in paths:
            entry = zipfile.ZipInfo(path.relative_to(project).as_posix(), _ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(entry, path.read_bytes())
    return buffer.getvalue()


class ArchiveFinder(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Imports the modules of an archive from memory (tracebacks show their source)."""

    def __init__(self, data: bytes) -> None:
        self.digest = hashlib.sha256(data).hexdigest()
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            self.files = {name: bundle.read(name) for name in bundle.namelist()}

    def _path(self, fullname: str) -> tuple[str, bool] | None:
        base = fullname.replace(".", "/")
        if f"{base}/__init__.py" in self.files:
            return f"{base}/__init__.py", True
        if f"{base}.py" in self.files:
            return f"{base}.py", False
        return None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        found = self._path(fullname)
        if found is None:
            return None
        name, is_package = found
        spec = importlib.util.spec_from_loader(fullname, self, origin=self.origin(name),
                                               is_package=is_package)
        if spec is not None:
            spec.has_location = True  # modules get a __file__ (their place in the archive)
            if is_package:
                spec.submodule_search_locations = []
        return spec

    def origin(self, name: str) -> str:
        return f"<job archive {self.digest[:12]}>/{name}"

    def get_source(self, fullname: str) -> str | None:
        found = self._path(fullname)
        return None if found is None else self.files[found[0]].decode("utf-8")

    def get_code(self, fullname: str) -> Any:
        found = self._path(fullname)
        if found is None:
            raise ImportError(f"no module {fullname} in the job's archive", name=fullname)
        return compile(self.files[found[0]], self.origin(found[0]), "exec", dont_inherit=True)

    def is_package(self, fullname: str) -> bool:
        found = self._path(fullname)
        return bool(found and found[1])


def ensure_importable(data: bytes) -> None:
    """Make the archive's modules importable in this process (once), ahead of any
    other of the same name, and have its log lines look like the job's."""
    digest = hashlib.sha256(data).hexdigest()
    if any(getattr(finder, "digest", None) == digest for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, ArchiveFinder(data))
    root = logging.getLogger()
    if not root.handlers:  # a process of Spark's: the job's format, on its stderr
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.getLogger("py4j").setLevel(logging.WARNING)


# --- what Spark pickles ---------------------------------------------------------------------


class ShippedSource(DataSource):
    """The producer's journal as a streaming data source; :func:`source_class` gives the
    subclass that carries the archive and the control secret."""

    archive: bytes = b""
    secret: bytes = b""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> Any:
        ensure_importable(self.archive)
        from job import rows

        return rows.layout().schema

    def streamReader(self, schema: Any) -> DataSourceStreamReader:  # noqa: N802 (Spark's name)
        return ShippedReader(dict(self.options), self.archive, self.secret)


def source_class(data: bytes, secret: bytes) -> type[DataSource]:
    """The data source class to register: :class:`ShippedSource` carrying ``data`` (the
    archive) and the control ``secret``, which thus travel inside the pickled class and
    never in the query's options (which Spark shows in its plans)."""
    return type("ProducerSource", (ShippedSource,), {"archive": data, "secret": bytes(secret)})


class ShippedReader(DataSourceStreamReader):
    """Spark's stream reader: the archive made importable, then each call handed to a
    :class:`job.producer_source.ProducerReader` (made in each process, never pickled)."""

    def __init__(self, options: dict[str, str], data: bytes, secret: bytes) -> None:
        self.options = options
        self.archive = data
        self.secret = secret
        self._real: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_real": None}

    def _reader(self) -> Any:
        if self._real is None:
            ensure_importable(self.archive)
            from job.producer_source import ProducerReader

            self._real = ProducerReader(self.options, self.secret)
        return self._real

    def initialOffset(self) -> dict:  # noqa: N802 (Spark's names)
        return self._reader().initial_offset()

    def latestOffset(self, start: dict, limit: Any) -> dict:  # noqa: N802
        return self._reader().latest_offset(start, limit)

    def getDefaultReadLimit(self) -> Any:  # noqa: N802
        return self._reader().default_read_limit()

    def partitions(self, start: dict, end: dict) -> list[InputPartition]:
        return self._reader().partitions(start, end)

    def read(self, partition: InputPartition) -> Any:
        return self._reader().read(partition)

    def commit(self, end: dict) -> None:
        self._reader().commit(end)

    def stop(self) -> None:
        if self._real is not None:
            self._real.stop()


class ShippedSink:
    """``foreachBatch`` run by a Spark Connect server: on the first batch, the archive
    made importable and the driver's part built there from ``state`` (the pickled
    arguments of :func:`job.structured_sink.remote_sink`); then each batch handed to it."""

    def __init__(self, data: bytes, state: bytes) -> None:
        self.archive = data
        self.state = state
        self._sink: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_sink": None}

    def __call__(self, frame: Any, batch_id: int) -> None:
        if self._sink is None:
            ensure_importable(self.archive)
            from job.structured_sink import remote_sink

            self._sink = remote_sink(*pickle.loads(self.state))  # the job pickled it
        self._sink(frame, batch_id)
