"""The stored forms of a contract column that ingest accepts, and their typed value.

In: a raw input table as read (:func:`jobs.core.tables.read_table` already turned Parquet
nanosecond timestamps into timestamps) and its :class:`jobs.core.contracts.TableContract`. Out:
the table with every contract column present (absent optional columns filled with null), and
for each column an expression giving its value in the contract type, or null when the stored
value cannot be used as one (ingest quarantines such rows with ``bad_type:<col>``). The rules
are those of :data:`jobs.core.contracts.ACCEPTED_ENCODINGS`. Called by
:mod:`jobs.ingest.validate`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.core.contracts import TableContract


def missing_optional_columns(raw: DataFrame, contract: TableContract) -> list[str]:
    """The contract's optional columns that ``raw`` lacks, in contract order."""
    return [name for name in contract.optional_columns if name not in raw.columns]


def conform(raw: DataFrame, contract: TableContract) -> DataFrame:
    """The contract's columns of ``raw``, in contract order; absent optional ones all null.

    Raises:
        ValueError: a required column is missing (the message names the table and column).
    """
    missing = [name for name in contract.required_columns if name not in raw.columns]
    if missing:
        raise ValueError(f"table {contract.name!r} is missing required column(s) {missing}")
    return raw.select(
        *[
            F.col(c.name) if c.name in raw.columns else F.lit(None).cast(c.dtype).alias(c.name)
            for c in contract.columns
        ]
    )


def _usable_as(stored: T.DataType, target: T.DataType) -> bool:
    """Whether values stored as ``stored`` can be values of ``target`` at all."""
    if isinstance(stored, T.NullType):
        return True
    if isinstance(target, T.TimestampType | T.DateType):
        return isinstance(stored, T.StringType | T.TimestampType | T.TimestampNTZType | T.DateType)
    if isinstance(target, T.NumericType):
        return isinstance(stored, T.StringType | T.NumericType)
    return not isinstance(stored, T.ArrayType | T.MapType | T.StructType)


def typed_value(name: str, stored: T.DataType, target: T.DataType) -> Column:
    """Column ``name`` (stored as ``stored``) as ``target``; null where the value is unusable.

    Numbers are not times: a count since 1970 in seconds, milliseconds or nanoseconds cannot
    be told apart, so none is guessed. Integers take whole numbers only: a cast would drop the
    fraction of ``7.5`` without a word. Booleans, dates and times are no numbers.
    """
    source = F.col(name)
    if stored == target:
        return source
    if not _usable_as(stored, target):
        return F.lit(None).cast(target)
    typed = source.try_cast(target)
    if isinstance(target, T.IntegralType) and isinstance(stored, T.FractionalType):
        return F.when(typed == source, typed)
    return typed


def is_finite(value: Column) -> Column:
    """False for NaN and the infinities (a double the contract cannot use), else true."""
    return ~F.isnan(value) & (F.abs(value) != F.lit(float("inf")))
