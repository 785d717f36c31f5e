"""Ingest and validate: enforce the data contracts on the input tables for one run.

In: the raw tables of :mod:`jobs.core.contracts` under the lake (Parquet folders or Delta tables,
``lake.format``), a run date and a look-back window. Out, per table: accepted rows (typed to the
contract), quarantined rows (the raw row as JSON plus a ``reason``), and counts where
``read = accepted + quarantined``, naming the optional columns the table lacked. Called by the
ingest stage (:mod:`jobs.ingest.stage`); :func:`validate_table` is the pure transform the tests
use.

A row is *read* when its event time falls in the window ``[run_date - lookback, run_date]`` or
cannot be used at all (null, unparseable or impossible); rows cleanly outside the window are not
part of this run and are counted separately as ``out_of_window``. Which stored forms a column
may take is :mod:`jobs.ingest.encodings`. Reasons: ``null_key:<col>``, ``bad_type:<col>`` (the
stored value is no value of the contract type), ``bad_value:<col>`` (a value the contract
excludes: not allowed, negative, NaN or infinite, or no IP address), ``impossible_ts``,
``duplicate``. IP columns are accepted in one spelling (:mod:`jobs.core.addresses`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from functools import reduce
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.core.addresses import normalise_ip
from jobs.core.contracts import TableContract
from jobs.core.lake import ObjectPath
from jobs.core.tables import TableFormat, UnsupportedTableError
from jobs.core.tables import read_table as read_stored_table
from jobs.ingest.encodings import conform, is_finite, typed_value

REASON = "reason"


class InputTableError(RuntimeError):
    """An input table is missing, unreadable or lacks contract columns."""


@dataclass(frozen=True)
class TableCounts:
    """Row accounting for one table in one run."""

    table: str
    read: int
    accepted: int
    quarantined: int
    out_of_window: int
    missing_columns: tuple[str, ...] = ()

    @property
    def reconciles(self) -> bool:
        """True when every read row is either accepted or quarantined."""
        return self.read == self.accepted + self.quarantined

    def as_dict(self) -> dict[str, Any]:
        """The counts as JSON types (what the summary, the report and a resumed run carry)."""
        return {**asdict(self), "missing_columns": list(self.missing_columns)}


@dataclass(frozen=True)
class RunWindow:
    """The time span one run looks at, plus the sanity bounds for timestamps."""

    start: datetime
    end: datetime
    earliest_valid: datetime
    latest_valid: datetime

    @classmethod
    def for_run(
        cls,
        run_date: date,
        lookback_days: int,
        earliest: str,
        future_skew_hours: int,
        now: datetime | None = None,
    ) -> RunWindow:
        """Window ending at the end of ``run_date`` (exclusive) and starting lookback days back."""
        end = datetime.combine(run_date, datetime.min.time()) + timedelta(days=1)
        now = now or datetime.utcnow()
        return cls(
            start=end - timedelta(days=lookback_days),
            end=end,
            earliest_valid=datetime.fromisoformat(earliest),
            latest_valid=max(now, end) + timedelta(hours=future_skew_hours),
        )


def _typed_columns(contract: TableContract, raw: DataFrame) -> dict[str, Column]:
    """Every contract column of ``raw`` as its contract type (null where unusable)."""
    return {
        c.name: typed_value(c.name, raw.schema[c.name].dataType, c.dtype) for c in contract.columns
    }


def _spelling(name: str) -> str:
    """The column holding IP column ``name`` in its one spelling (null for no address)."""
    return f"_spelled_{name}"


def _with_ip_spellings(
    contract: TableContract, raw: DataFrame, typed: dict[str, Column]
) -> tuple[DataFrame, dict[str, Column]]:
    """``raw`` with each IP column parsed once, and every column's accepted value.

    The accepted value is the typed value, but an IP address in its one spelling; the check
    that quarantines what is no address reads the same parsed column.
    """
    if contract.ip_columns:  # Spark Connect refuses an empty withColumns
        raw = raw.withColumns({_spelling(n): normalise_ip(typed[n]) for n in contract.ip_columns})
    values = {
        c.name: F.col(_spelling(c.name)) if c.name in contract.ip_columns else typed[c.name]
        for c in contract.columns
    }
    return raw, values


def _bad_value(contract: TableContract, name: str, typed: Column, value: Column) -> Column | None:
    """True where a well-typed value is one the contract excludes; None when none can be.

    ``value`` is the accepted value (for an IP column, null when the text is no address).
    """
    conditions = []
    if name in contract.allowed_values:
        conditions.append(~typed.isin(list(contract.allowed_values[name])))
    if name in contract.non_negative:
        conditions.append(typed < 0)
    if isinstance(contract.schema[name].dataType, T.DoubleType):
        conditions.append(~is_finite(typed))
    if name in contract.ip_columns:
        conditions.append(value.isNull())
    if not conditions:
        return None
    return typed.isNotNull() & reduce(lambda a, b: a | b, conditions)


def _reason_checks(
    contract: TableContract,
    raw: DataFrame,
    typed: dict[str, Column],
    values: dict[str, Column],
    window: RunWindow,
) -> list[Column]:
    """One nullable reason string per check; null means the check passed."""
    checks: list[Column] = []
    for column in contract.columns:
        source = F.col(column.name)
        if raw.schema[column.name].dataType != column.dtype:
            checks.append(
                F.when(
                    source.isNotNull() & typed[column.name].isNull(),
                    F.lit(f"bad_type:{column.name}"),
                )
            )
        if column.name in contract.key_columns:
            checks.append(F.when(source.isNull(), F.lit(f"null_key:{column.name}")))
        excluded = _bad_value(contract, column.name, typed[column.name], values[column.name])
        if excluded is not None:
            checks.append(F.when(excluded, F.lit(f"bad_value:{column.name}")))
    if contract.time_column:
        ts = typed[contract.time_column].cast("timestamp")
        checks.append(
            F.when(
                (ts < F.lit(window.earliest_valid)) | (ts > F.lit(window.latest_valid)),
                F.lit("impossible_ts"),
            )
        )
    return checks


JUDGED = "_judged"  # accepted / quarantined / outside / copy, per raw row of judged_rows
_VALUE = "_value_"
_KEY_HASH = "_key_hash"


def validate_table(
    raw: DataFrame, contract: TableContract, window: RunWindow
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Split one raw table into accepted and quarantined rows.

    Args:
        raw: the table as read (any column types; extra columns are ignored; optional contract
            columns may be absent and are then all null).
        contract: the contract to enforce.
        window: the run's time window and timestamp sanity bounds.

    Returns:
        ``(accepted, quarantined, out_of_window)``: accepted rows typed to the contract;
        quarantined rows with ``table``, ``reason`` and ``raw`` (the row as JSON); rows cleanly
        outside the window (only ``account_id``, for counting).

    Raises:
        ValueError: a required column is missing (the message names the table and column).
    """
    return split_judged(judged_rows(raw, contract, window), contract)


def judged_rows(raw: DataFrame, contract: TableContract, window: RunWindow) -> DataFrame:
    """Every raw row once, judged: accepted, quarantined, outside or a copy of a natural key.

    A quarantined row has its reason and JSON; a copy is one of several rows of one key.
    The one pass that parses and checks a table; :func:`split_judged` takes the accepted rows,
    the quarantined rows and the rows outside the window from it. The ingest stage writes it
    once and splits the written copy, so the parsing runs once per output, not once per table.

    Copies are judged on accepted values (two spellings of one instant or one address are one
    key) among the usable rows inside the window. Which keys may have copies comes from a count
    per hash of the key (a shuffle of one number per row, no sort); only the usable rows of
    those hashes are marked ``copy`` and carry their JSON, and :func:`split_judged` ranks them.
    A hash shared by rows of different keys only sends them to the ranking, which keeps each
    alone.

    Returns:
        ``_value_<column>`` (the accepted value of each contract column), ``reason`` (null when
        accepted, outside or a copy), ``raw`` (the row as stored, as JSON; only for quarantined
        rows and copies) and ``_judged``.

    Raises:
        ValueError: a required column is missing (the message names the table and column).
    """
    raw = conform(raw, contract)
    typed = _typed_columns(contract, raw)
    raw, values = _with_ip_spellings(contract, raw, typed)
    checks = _reason_checks(contract, raw, typed, values, window)
    # concat_ws skips the null (passed) checks itself; the reasons are built once, in their own
    # column, and then tested (a lambda over an array of them was most of the parsing's cost)
    checked = raw.withColumn(REASON, F.concat_ws(";", *checks))
    checked = checked.withColumn(REASON, F.when(F.col(REASON) != "", F.col(REASON)))
    usable = F.col(REASON).isNull()
    outside = F.lit(False)
    if contract.time_column:
        ts = typed[contract.time_column].cast("timestamp")
        outside = usable & (
            (ts >= F.lit(window.end))
            | ((ts < F.lit(window.start)) if contract.windowed else F.lit(False))
        )
    eligible = usable & ~outside
    # which keys may have copies: a count per hash of the key's typed values, IP columns left
    # out (their one spelling is the costly parse; equal keys still share the hash), over
    # every row, so this pass needs none of the checks; a row is a copy only if eligible
    coarse = [typed[n] for n in contract.natural_key if n not in contract.ip_columns]
    key_hash = F.xxhash64(*coarse) if coarse else F.lit(0).cast("long")
    copied = (
        raw.select(key_hash.alias(_KEY_HASH))
        .groupBy(_KEY_HASH)
        .count()
        .where(F.col("count") > 1)
        .select(_KEY_HASH, F.lit(True).alias("_copied"))
    )
    checked = checked.withColumn(_KEY_HASH, key_hash)
    judged = checked.join(copied, _KEY_HASH, "left")
    is_copy = eligible & F.col("_copied").isNotNull()
    quarantined = F.col(REASON).isNotNull()
    return judged.select(
        *[values[c.name].alias(_VALUE + c.name) for c in contract.columns],
        REASON,
        F.when(quarantined | is_copy, F.to_json(F.struct(*contract.column_names))).alias("raw"),
        F.when(quarantined, F.lit("quarantined"))
        .when(outside, F.lit("outside"))
        .when(is_copy, F.lit("copy"))
        .otherwise(F.lit("accepted"))
        .alias(JUDGED),
    )


def split_judged(
    judged: DataFrame, contract: TableContract
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """The accepted, quarantined and out-of-window rows of :func:`judged_rows`.

    Of the copies of one natural key, the one whose JSON sorts first is accepted (so a re-run
    keeps the same copy) and the others are quarantined as ``duplicate``. The three frames are
    those :func:`validate_table` returns.
    """
    copies = judged.where(F.col(JUDGED) == "copy")
    by_key = Window.partitionBy(*[F.col(_VALUE + n) for n in contract.natural_key])
    ranked = copies.withColumn("_rank", F.row_number().over(by_key.orderBy("raw")))
    kept = F.col("_rank") == 1
    values = [F.col(_VALUE + c.name).alias(c.name) for c in contract.columns]
    accepted = (
        judged.where(F.col(JUDGED) == "accepted")
        .select(*values)
        .unionByName(ranked.where(kept).select(*values))
    )
    quarantine_columns = [F.lit(contract.name).alias("table"), F.col(REASON).alias("reason"), "raw"]
    quarantined = (
        judged.where(F.col(JUDGED) == "quarantined")
        .select(*quarantine_columns)
        .unionByName(
            ranked.where(~kept).withColumn(REASON, F.lit("duplicate")).select(*quarantine_columns)
        )
    )
    outside = judged.where(F.col(JUDGED) == "outside").select(
        F.col(_VALUE + "account_id").alias("account_id")
    )
    return accepted, quarantined, outside


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), for error reports."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def read_table(
    spark: SparkSession,
    lake: Path | ObjectPath,
    contract: TableContract,
    table_format: TableFormat = "parquet",
) -> DataFrame:
    """Read one input table (a Parquet folder or a Delta table), failing with its name."""
    path = lake / contract.name
    if not path.exists():
        raise InputTableError(f"input table {contract.name!r} not found at {path}")
    try:
        df, _ = read_stored_table(spark, path, table_format)
        df.schema  # noqa: B018 (forces the footer read so corrupt files fail here)
    except (FileNotFoundError, UnsupportedTableError) as exc:
        raise InputTableError(f"input table {contract.name!r}: {exc}") from exc
    except Exception as exc:  # AnalysisException, SparkException, Py4JJavaError...
        hint = ""
        if "S3AFileSystem" in str(exc) or "No FileSystem for scheme" in str(exc):
            hint = (
                " (an s3a:// lake needs the hadoop-aws package on the Spark classpath: "
                'spark.packages = ["s3a"]; see infra/README.md)'
            )
        raise InputTableError(
            f"input table {contract.name!r} at {path} is unreadable: {first_line(exc)}{hint}"
        ) from exc
    return df
