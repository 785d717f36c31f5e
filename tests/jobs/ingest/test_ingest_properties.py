"""Property: whatever rows arrive, ingest splits them and never loses or invents one.

For every contract table, hypothesis draws how each column is stored (its contract type, or a
string, integer, float, timestamp, date or boolean, or, for an optional column, not at all) and
rows of values mixing plausible ones with nulls, control characters, 100 KB strings, NaN and
infinities, extreme and far-future timestamps, integers at the limits of their width, and
copies of earlier rows. :func:`validate_table` must not fail, every quarantined row must carry
known reasons, the accepted rows must keep the contract, and raw = accepted + quarantined +
out of window. A Spark job per example is slow, so each table gets a few examples of many rows,
each checked with one aggregate and a single collect, with Spark interpreting (compiling each
new plan would cost more than running it).
"""

from __future__ import annotations

from datetime import date, datetime
from functools import reduce

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.core.contracts import INPUT_TABLES, TableContract
from jobs.ingest.validate import RunWindow, validate_table

WINDOW = RunWindow.for_run(date(2026, 6, 5), 10, "2000-01-01", 24, now=datetime(2026, 6, 6, 12))
ACCOUNTS = ["a1", "a2", "a3", "a4"]  # a few ids, so keys collide and copies are judged
REASON = r"^((null_key|bad_type|bad_value):[a-z_]+|impossible_ts|duplicate)$"
STORED_AS = [
    T.StringType(),
    T.LongType(),
    T.IntegerType(),
    T.ByteType(),
    T.DoubleType(),
    T.TimestampType(),
    T.DateType(),
    T.BooleanType(),
]

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
CONTROL = st.text(st.characters(max_codepoint=0x1F), min_size=1, max_size=5)
HUGE = st.builds(lambda ch: ch * 100_000, st.characters(codec="utf-8"))
MOMENTS = st.datetimes(datetime(2026, 5, 20), datetime(2026, 6, 12))
ANY_MOMENT = st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59))


def _limits(bits: int):
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


HOSTILE = {
    T.StringType: st.one_of(TEXT, CONTROL, HUGE, st.just(""), st.just("2026-13-45")),
    T.LongType: _limits(64),
    T.IntegerType: _limits(32),
    T.ByteType: _limits(8),
    T.DoubleType: st.floats(),
    T.TimestampType: ANY_MOMENT,
    T.DateType: st.dates(),
    T.BooleanType: st.booleans(),
}


def _plausible(contract: TableContract, name: str, dtype: T.DataType):
    """Values the contract accepts (often), so that accepted rows and copies occur."""
    if name == "account_id":
        return st.sampled_from(ACCOUNTS)
    if name in contract.allowed_values:
        return st.sampled_from(contract.allowed_values[name])
    if isinstance(dtype, T.TimestampType):
        return MOMENTS
    if isinstance(dtype, T.DateType):
        return MOMENTS.map(datetime.date)
    if isinstance(dtype, T.IntegralType):
        return st.integers(0, 100)
    if isinstance(dtype, T.DoubleType):
        return st.floats(0, 100)
    return st.sampled_from(["x", "ps_1", "c1", "203.0.113.7"])


def _as_text(value) -> str:
    if isinstance(value, datetime):
        return value.isoformat() + ("Z" if value.microsecond % 2 else "")
    return str(value)


@st.composite
def raw_tables(draw, contract: TableContract) -> tuple[T.StructType, list[tuple]]:
    """A stored schema for ``contract`` and rows for it, copies included."""
    fields, columns = [], []
    for column in contract.columns:
        choices = [column.dtype, column.dtype, *STORED_AS]
        if not column.required:
            choices.append(None)  # the table lacks the column
        stored = draw(st.sampled_from(choices))
        if stored is None:
            continue
        plausible = _plausible(contract, column.name, column.dtype)
        if isinstance(stored, T.StringType) and not isinstance(column.dtype, T.StringType):
            plausible = plausible.map(_as_text)
        elif type(stored) is not type(column.dtype):
            plausible = st.nothing()
        hostile = HOSTILE[type(stored)]
        columns.append(st.one_of(st.none(), plausible, plausible, plausible, hostile))
        fields.append(T.StructField(column.name, stored))
    rows = draw(st.lists(st.tuples(*columns), max_size=60))
    copies = draw(st.lists(st.integers(0, max(len(rows) - 1, 0)), max_size=5)) if rows else []
    return T.StructType(fields), rows + [rows[i] for i in copies]


def _accepted_breaks_contract(contract: TableContract) -> Column:
    broken = [F.col(name).isNull() for name in contract.key_columns]
    for name, allowed in contract.allowed_values.items():
        broken.append(~F.col(name).isin(list(allowed)))
    broken += [F.col(name) < 0 for name in contract.non_negative]
    for column in contract.columns:
        if isinstance(column.dtype, T.DoubleType):
            value = F.col(column.name)
            broken.append(F.isnan(value) | (F.abs(value) == F.lit(float("inf"))))
    if contract.time_column:
        ts = F.col(contract.time_column).cast("timestamp")
        broken += [ts < F.lit(WINDOW.earliest_valid), ts >= F.lit(WINDOW.end)]
        if contract.windowed:
            broken.append(ts < F.lit(WINDOW.start))
    return reduce(lambda a, b: a | b, [F.coalesce(b, F.lit(False)) for b in broken])


def _outcomes(contract: TableContract, raw: DataFrame) -> tuple[DataFrame, T.StructType]:
    """One row per raw row: where ingest put it, and what that row breaks."""
    accepted, quarantined, outside = validate_table(raw, contract, WINDOW)
    reasons = F.split(F.col("reason"), ";")
    kept = accepted.select(
        F.lit("accepted").alias("outcome"),
        F.to_json(F.struct(*contract.natural_key)).alias("key"),
        _accepted_breaks_contract(contract).alias("broken"),
        F.hash(*contract.column_names).alias("touch"),  # computes every typed column
    )
    held = quarantined.select(
        F.lit("quarantined").alias("outcome"),
        F.lit(None).cast("string").alias("key"),
        (
            F.exists(reasons, lambda r: ~r.rlike(REASON))
            | F.col("raw").isNull()
            | (F.col("table") != contract.name)
        ).alias("broken"),
        F.hash("raw").alias("touch"),
    )
    gone = outside.select(
        F.lit("outside").alias("outcome"),
        F.lit(None).cast("string").alias("key"),
        F.lit(False).alias("broken"),
        F.lit(0).alias("touch"),
    )
    return kept.unionByName(held).unionByName(gone), accepted.schema


@pytest.fixture(scope="module")
def interpreted(spark):
    """Each example is a new plan over a few rows: compiling it would cost more than running it."""
    keys = {
        "spark.sql.codegen.wholeStage": "false",
        "spark.sql.codegen.factoryMode": "NO_CODEGEN",
        "spark.sql.shuffle.partitions": "1",
    }
    before = {key: spark.conf.get(key, None) for key in keys}
    for key, value in keys.items():
        spark.conf.set(key, value)
    yield spark
    for key, value in before.items():
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)


@pytest.mark.parametrize("contract", INPUT_TABLES, ids=lambda contract: contract.name)
@settings(
    max_examples=4,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_ingest_splits_any_rows_without_losing_one(interpreted, contract, data):
    schema, rows = data.draw(raw_tables(contract), label=contract.name)
    outcomes, accepted_schema = _outcomes(contract, interpreted.createDataFrame(rows, schema))
    assert [(f.name, f.dataType) for f in accepted_schema] == [
        (c.name, c.dtype) for c in contract.columns
    ]
    accepted = F.col("outcome") == "accepted"
    figures = outcomes.agg(
        F.count_if(accepted).alias("accepted"),
        F.count_if(F.col("outcome") == "quarantined").alias("quarantined"),
        F.count_if(F.col("outcome") == "outside").alias("outside"),
        F.count_distinct(F.when(accepted, F.col("key"))).alias("distinct_keys"),
        F.count_if(F.col("broken")).alias("broken"),
        F.sum("touch").alias("touch"),
    )
    (row,) = figures.collect()
    assert row["accepted"] + row["quarantined"] + row["outside"] == len(rows), row
    assert row["distinct_keys"] == row["accepted"], row  # one row per natural key
    assert row["broken"] == 0, row  # accepted rows keep the contract; reasons are known
