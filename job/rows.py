"""The rows the structured engine's source gives Spark, and the records they become again.

One row per wire line: a column for each field of :class:`transform.Record`, typed
from its annotations, then ``batch_ms``, the batch's time. A field added to Record
(or a new kind of record) is a new column with no change here: ``str``, ``int``,
``float``, ``bool``, ``bytes`` and ``datetime`` fields become columns of Spark's own
types; any other (the ``post`` dict) is a text column of JSON in which a date is
``{"$date_us": microseconds since the epoch}``, so that what can be stored in BSON
(text, numbers, lists, objects, dates, null) comes back as it went, types included.
(Pickling each post instead cost 7-15 µs a post, against ~1 µs here and ~1.5 µs back.)
Spark moves the rows as Arrow batches, built a column at a time (:func:`to_batch`)
and read back the same way (:func:`to_records`).
"""

from __future__ import annotations

import functools
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from pyspark.sql.types import (
    BinaryType,
    BooleanType,
    DataType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

import transform

try:
    import orjson
except ImportError:  # a worker without it encodes with json alone: slower, same result
    orjson = None

#: The last column: the batch's time, milliseconds since the epoch (the same in every row).
BATCH_MS = "batch_ms"
_PLAIN: dict[type, DataType] = {str: StringType(), int: LongType(), float: DoubleType(),
                                bool: BooleanType(), bytes: BinaryType(),
                                datetime: TimestampType()}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE, _NAIVE = "$date_us", "$naive_us"


@dataclass(frozen=True)
class Layout:
    """How Records are laid out as rows: Spark's schema, Arrow's, and which columns
    hold JSON."""

    schema: StructType
    arrow: pa.Schema
    as_json: tuple[bool, ...]  # per Record field


def column_type(hint: Any) -> tuple[DataType, bool, bool]:
    """``(Spark type, nullable, as JSON)`` of a field annotated ``hint``."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    nullable = type(None) in options
    kinds = [option for option in options if option is not type(None)]
    if len(kinds) == 1 and kinds[0] in _PLAIN:
        return _PLAIN[kinds[0]], nullable, False
    return StringType(), nullable, True


@functools.cache
def layout() -> Layout:
    """The layout of :class:`transform.Record` (worked out once per process)."""
    from pyspark.sql.pandas.types import to_arrow_schema  # needs pyarrow only

    hints = typing.get_type_hints(transform.Record)
    fields, as_json = [], []
    for name in transform.Record._fields:
        spark_type, nullable, is_json = column_type(hints[name])
        fields.append(StructField(name, spark_type, nullable))
        as_json.append(is_json)
    schema = StructType([*fields, StructField(BATCH_MS, LongType(), False)])
    return Layout(schema, to_arrow_schema(schema, timezone="UTC"), tuple(as_json))


def to_batch(records: Sequence[tuple[Any, ...]], batch_ms: int) -> pa.RecordBatch:
    """The Arrow batch of ``records`` (Records, or tuples of their fields), each row
    stamped with ``batch_ms``."""
    shape = layout()
    count = len(records)
    columns: list[Any] = (list(zip(*records, strict=True)) if records
                          else [() for _ in shape.as_json])
    arrays = []
    for values, is_json, field in zip(columns, shape.as_json, shape.arrow, strict=False):
        if is_json:
            if all(value is None for value in values):
                arrays.append(pa.nulls(count, field.type))
                continue
            values = [None if value is None else encode(value) for value in values]
        arrays.append(pa.array(values, field.type))
    arrays.append(pa.array([batch_ms] * count, pa.int64()))
    return pa.RecordBatch.from_arrays(arrays, schema=shape.arrow)


def to_records(table: pa.Table) -> tuple[list[tuple[Any, ...]], int | None]:
    """The records of a batch's rows, in their order, as plain tuples of Record's fields,
    and the batch's time in milliseconds (None when there are no rows)."""
    if not table.num_rows:
        return [], None
    shape = layout()
    columns = []
    for name, is_json in zip(transform.Record._fields, shape.as_json, strict=True):
        values = table.column(name).to_pylist()
        if is_json:
            values = [None if value is None else decode(value) for value in values]
        columns.append(values)
    batch_ms = table.column(BATCH_MS)[0].as_py()
    return list(zip(*columns, strict=True)), batch_ms


# --- JSON with dates ------------------------------------------------------------------


def _date(value: Any) -> dict[str, int]:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return {_NAIVE: (value - _EPOCH.replace(tzinfo=None)) // timedelta(microseconds=1)}
        return {_DATE: (value - _EPOCH) // timedelta(microseconds=1)}
    raise TypeError(f"a {type(value).__name__}")


def encode(value: Any) -> str:
    """``value`` (what BSON can hold: text, numbers, lists, objects with text keys,
    dates, null) as JSON text, each date as ``{"$date_us": N}`` (``"$naive_us"`` for a
    naive one). Raises TypeError for anything else."""
    try:
        if orjson is not None:
            return orjson.dumps(value, default=_date,
                                option=orjson.OPT_PASSTHROUGH_DATETIME).decode("utf-8")
        return json.dumps(value, default=_date, separators=(",", ":"))
    except TypeError as err:
        raise TypeError(f"cannot carry {value!r:.80} in a row ({err}); give its Record field "
                        "a type of its own (str, int, float, bool, bytes, datetime)") from None


def decode(text: str) -> Any:
    """What :func:`encode` was given, dates as datetimes again (aware UTC, or naive)."""
    value = orjson.loads(text) if orjson is not None else json.loads(text)
    return _dates(value)


def _dates(value: Any) -> Any:
    if type(value) is dict:
        if len(value) == 1:
            if _DATE in value:
                return _EPOCH + timedelta(microseconds=value[_DATE])
            if _NAIVE in value:
                return _EPOCH.replace(tzinfo=None) + timedelta(microseconds=value[_NAIVE])
        for key, item in value.items():
            if type(item) in (dict, list):
                value[key] = _dates(item)
    elif type(value) is list:
        for index, item in enumerate(value):
            if type(item) in (dict, list):
                value[index] = _dates(item)
    return value
