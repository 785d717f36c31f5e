"""Input tables stored as Parquet folders or as Delta tables, behind one read and one write call.

In: a table location (a folder or an ``s3a://`` prefix, see :mod:`jobs.core.lake`) and the lake's
format (``lake.format``: ``parquet`` or ``delta``). Out: a Spark DataFrame of the table's rows,
and for Delta the version that was read. Called by ingest (reading the input tables) and the
synthetic world generator (writing them).

Delta tables are read and written without Delta's Spark connector, which has no release for the
Spark this project pins (PySpark 4.3): the delta-rs library (``deltalake``) reads the table's
transaction log, and Spark reads exactly the Parquet data files of that snapshot. A table whose
files alone do not say what it holds (column mapping, deletion vectors, type widening,
partition columns kept only in the log) is refused with an error naming the feature. Writing
goes the other way: Spark writes the Parquet files and delta-rs commits them as version 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pyspark.sql import DataFrame, SparkSession

from jobs.core.lake import ObjectPath

TableFormat = Literal["parquet", "delta"]
DELTA_LOG = "_delta_log"
# reader features under which the snapshot's Parquet files no longer are the table's rows
_FEATURES_NEEDING_A_DELTA_READER = ("columnMapping", "deletionVectors", "typeWidening")


class UnsupportedTableError(ValueError):
    """A Delta table uses a feature that only a Delta reader can apply."""


@dataclass(frozen=True)
class DeltaSnapshot:
    """One version of a Delta table: its data files and what identifies it."""

    version: int
    table_id: str
    files: tuple[str, ...]
    arrow_schema: object


def is_delta_table(location: Path | ObjectPath) -> bool:
    """True when ``location`` holds a Delta transaction log."""
    return (location / DELTA_LOG).is_dir()


def storage_options(location: Path | ObjectPath) -> dict[str, str] | None:
    """delta-rs storage options for an object-storage location (credentials from the env)."""
    if not isinstance(location, ObjectPath):
        return None
    options: dict[str, str] = {}
    if location.endpoint_url:
        options["AWS_ENDPOINT_URL"] = location.endpoint_url
        options["AWS_ALLOW_HTTP"] = str(location.endpoint_url.startswith("http://")).lower()
    if location.region:
        options["AWS_REGION"] = location.region
    return options


def _table_uri(location: Path | ObjectPath) -> str:
    return f"s3://{location.key}" if isinstance(location, ObjectPath) else str(location)


def _spark_uri(file_uri: str) -> str:
    return "s3a://" + file_uri.split("://", 1)[1] if file_uri.startswith("s3://") else file_uri


def delta_snapshot(location: Path | ObjectPath) -> DeltaSnapshot:
    """The current snapshot of the Delta table at ``location``.

    Raises:
        UnsupportedTableError: the table needs a Delta reader to be read correctly.
    """
    from deltalake import DeltaTable

    table = DeltaTable(_table_uri(location), storage_options=storage_options(location))
    protocol = table.protocol()
    features = set(protocol.reader_features or [])
    if protocol.min_reader_version == 2:
        features.add("columnMapping")
    refused = sorted(features.intersection(_FEATURES_NEEDING_A_DELTA_READER))
    if refused:
        raise UnsupportedTableError(
            f"Delta table at {location} uses {', '.join(refused)}, which farmwatch's Delta "
            "reader (the snapshot's Parquet files read by Spark) cannot apply"
        )
    metadata = table.metadata()
    if metadata.partition_columns:
        raise UnsupportedTableError(
            f"Delta table at {location} is partitioned by {metadata.partition_columns}; "
            "farmwatch reads unpartitioned input tables"
        )
    return DeltaSnapshot(
        version=table.version(),
        table_id=metadata.id,
        files=tuple(_spark_uri(uri) for uri in table.file_uris()),
        arrow_schema=table.schema().to_arrow(),
    )


def read_table(
    spark: SparkSession, location: Path | ObjectPath, table_format: TableFormat
) -> tuple[DataFrame, int | None]:
    """Read one table; returns the rows and, for Delta, the version read.

    Raises:
        FileNotFoundError: a ``delta`` location has no transaction log.
        UnsupportedTableError: see :func:`delta_snapshot`.
    """
    if table_format == "parquet":
        return spark.read.parquet(str(location)), None
    if not is_delta_table(location):
        raise FileNotFoundError(f"no Delta transaction log ({DELTA_LOG}) at {location}")
    snapshot = delta_snapshot(location)
    if snapshot.files:
        return spark.read.parquet(*snapshot.files), snapshot.version
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    schema = from_arrow_schema(pa.schema(snapshot.arrow_schema))
    return spark.createDataFrame([], schema), snapshot.version


def write_table(
    spark: SparkSession, df: DataFrame, location: Path | ObjectPath, table_format: TableFormat
) -> None:
    """Replace the table at ``location`` with ``df`` (zstd Parquet; Delta version 0 for delta).

    Delta timestamps are written as INT64 microseconds in UTC, so the Delta schema says
    ``timestamp`` (Spark's default INT96 would be committed as ``timestamp_ntz``).
    """
    writer = df.write.mode("overwrite").option("compression", "zstd")
    if table_format == "parquet":
        writer.parquet(str(location))
        return
    from deltalake import convert_to_deltalake

    key = "spark.sql.parquet.outputTimestampType"
    previous = spark.conf.get(key)
    spark.conf.set(key, "TIMESTAMP_MICROS")
    try:
        writer.parquet(str(location))
    finally:
        spark.conf.set(key, previous)
    convert_to_deltalake(_table_uri(location), storage_options=storage_options(location))
