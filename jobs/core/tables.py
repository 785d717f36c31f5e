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

Parquet timestamps in nanoseconds (what ``pandas.DataFrame.to_parquet`` writes by default) are
read as timestamps, kept to the microsecond. Spark 4 refuses them (``PARQUET_TYPE_ILLEGAL``)
unless ``spark.sql.legacy.parquet.nanosAsLong`` makes them plain longs, which then look like any
other integer column; so the data files' footers are read first (pyarrow) to learn which columns
hold nanoseconds, and only those are converted. Files that disagree (one writer's nanoseconds,
another's microseconds in the same table) are read apart and put together.
"""

from __future__ import annotations

import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import reduce
from pathlib import Path, PurePosixPath
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.core.lake import ObjectPath

TableFormat = Literal["parquet", "delta"]
DELTA_LOG = "_delta_log"
# reader features under which the snapshot's Parquet files no longer are the table's rows
_FEATURES_NEEDING_A_DELTA_READER = ("columnMapping", "deletionVectors", "typeWidening")
NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"
_FOOTER_READERS = 8


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


def parquet_files(location: Path | ObjectPath) -> list[str]:
    """The data files Spark reads in a Parquet folder, as Spark URIs.

    Like Hadoop's listing, names starting with ``_`` or ``.`` (``_SUCCESS``, ``.crc`` files,
    ``_delta_log``) are skipped, and so is everything under a folder named so.
    """
    if isinstance(location, ObjectPath):
        selector = pafs.FileSelector(location.key, recursive=True, allow_not_found=True)
        infos = location.filesystem.get_file_info(selector)
        found = [(i.path, f"s3a://{i.path}") for i in infos if i.type == pafs.FileType.File]
        root = location.key
    else:
        found = [(str(p), str(p)) for p in location.rglob("*") if p.is_file()]
        root = str(location)
    return sorted(
        uri
        for path, uri in found
        if not any(part.startswith(("_", ".")) for part in PurePosixPath(path[len(root) :]).parts)
    )


def nanosecond_columns(schema: pq.ParquetSchema) -> frozenset[str]:
    """Top-level columns a Parquet footer stores as ``TIMESTAMP(NANOS, ...)``."""
    found = set()
    for i in range(len(schema)):
        column = schema.column(i)
        logical = column.logical_type
        if "." not in column.path and logical.type == "TIMESTAMP":
            if json.loads(logical.to_json()).get("timeUnit") == "nanoseconds":
                found.add(column.path)
    return frozenset(found)


def _file_nanos(uri: str, location: Path | ObjectPath) -> frozenset[str]:
    filesystem = location.filesystem if isinstance(location, ObjectPath) else None
    path = uri.split("://", 1)[1] if "://" in uri else uri
    if uri.startswith("file:"):
        path = "/" + path.lstrip("/")
    try:
        return nanosecond_columns(pq.read_metadata(path, filesystem=filesystem).schema)
    except (OSError, pa.ArrowException):
        return frozenset()  # Spark names an unreadable file itself, with its hints


def _by_nanos(files: list[str], location: Path | ObjectPath) -> dict[frozenset[str], list[str]]:
    """The files grouped by which columns they store in nanoseconds."""
    with ThreadPoolExecutor(_FOOTER_READERS) as pool:
        found = list(pool.map(lambda uri: _file_nanos(uri, location), files))
    groups: dict[frozenset[str], list[str]] = defaultdict(list)
    for uri, nanos in zip(files, found, strict=True):
        groups[nanos].append(uri)
    return dict(groups)


def _as_timestamps(df: DataFrame, nanos: frozenset[str]) -> DataFrame:
    """Nanoseconds since 1970 (read as longs) -> timestamps, floored to the microsecond."""
    for name in sorted(nanos):
        quoted = "`" + name.replace("`", "``") + "`"
        micros = F.expr(f"timestamp_micros(div({quoted} - pmod({quoted}, 1000), 1000))")
        df = df.withColumn(name, micros)
    return df


def _read_parquet(
    spark: SparkSession, location: Path | ObjectPath, files: list[str], whole_folder: bool
) -> DataFrame:
    """The rows of Parquet ``files`` (the folder itself when it is all of them)."""
    groups = _by_nanos(files, location) if files else {}
    if any(groups):
        # read as longs, converted below; the setting must hold when the rows are read, not
        # only now, so it stays on (it changes nothing for files without nanoseconds)
        spark.conf.set(NANOS_AS_LONG, "true")
    if len(groups) <= 1:
        nanos = next(iter(groups), frozenset())
        paths = [str(location)] if whole_folder else files
        return _as_timestamps(spark.read.parquet(*paths), nanos)
    reader = spark.read.option("basePath", str(location)) if whole_folder else spark.read
    parts = [_as_timestamps(reader.parquet(*uris), nanos) for nanos, uris in groups.items()]
    return reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), parts)


def read_table(
    spark: SparkSession, location: Path | ObjectPath, table_format: TableFormat
) -> tuple[DataFrame, int | None]:
    """Read one table; returns the rows and, for Delta, the version read.

    Parquet nanosecond timestamps come back as timestamps (see the module docstring).

    Raises:
        FileNotFoundError: a ``delta`` location has no transaction log.
        UnsupportedTableError: see :func:`delta_snapshot`.
    """
    if table_format == "parquet":
        return _read_parquet(spark, location, parquet_files(location), whole_folder=True), None
    if not is_delta_table(location):
        raise FileNotFoundError(f"no Delta transaction log ({DELTA_LOG}) at {location}")
    snapshot = delta_snapshot(location)
    if snapshot.files:
        files = list(snapshot.files)
        return _read_parquet(spark, location, files, whole_folder=False), snapshot.version
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
